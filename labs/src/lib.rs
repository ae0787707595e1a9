//! The lab runner: containerlab topology files brought up in plain network namespaces
//! (one per node, veth per link) with FRR, BIRD and GoBGP daemons, plus the traffic
//! probe and the scenarios that prove migroute's claims.

//! BGP for migroute: the message codec (with RFC 7606 treatment of malformed UPDATEs),
//! and, to come, the sans-IO session FSM, RIBs, graceful restart and the speaker.

pub mod codec;
pub mod tool;

//! Kernel state migroute owns, over netlink, inside a chosen network namespace:
//! VXLAN/GRE tunnels, host-route overrides in migroute's own table and rule, ownership
//! listing and reconcile after a crash, and per-tunnel counters.

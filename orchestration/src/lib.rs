//! Migration logic as sans-IO state machines: the per-PE machine an agent runs and the
//! whole-migration machine the orchestrator runs, plus the journal and the hypervisor,
//! storage and PE-agent driver traits. It knows nothing of BGP or netlink: it emits
//! actions (`CreateTunnel`, `InstallOverride`, `Announce`, …) that callers carry out.

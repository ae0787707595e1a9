//! The step planner: from the source's `drbdadm status` to the `drbdadm` command lines
//! each [`Storage`](crate::drivers::Storage) call runs, and on which host. Pure: the
//! driver reads the status, asks here, runs what comes back in order.
//!
//! | call | steps (after `drbdadm status <res>` at the source) |
//! |---|---|
//! | `start_async` | source `primary` (only if not Primary), `net-options --protocol=A` at source then destination |
//! | `switch_sync` | `net-options --protocol=C` at source then destination |
//! | `wait_in_sync` | none: poll the status until every replica is Established and UpToDate |
//! | `cutover` | source `secondary` (only if still Primary; refused unless in sync), destination `primary` |
//! | `abort` | destination `secondary` (if it is or may be Primary), source `primary` (if not Primary), `net-options --protocol=A` at source then destination |
//!
//! The protocol is set on both hosts: DRBD passes a protocol change on to a connected
//! peer, but two nodes whose configured protocols differ refuse to reconnect
//! ("incompatible communication protocols") after a connection loss. `net-options`
//! changes the running resource only: `drbdadm adjust` brings back the protocol of the
//! configuration files.

use super::status::{ResourceStatus, Role};

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    /// The host the VM leaves (Primary before the cutover).
    Source,
    /// The host the VM goes to.
    Destination,
}

/// One `drbdadm` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Where it runs.
    pub host: Host,
    /// Its arguments after `drbdadm`.
    pub args: Vec<String>,
}

impl Step {
    fn new(host: Host, args: &[&str], resource: &str) -> Step {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(resource.to_string());
        Step { host, args }
    }

    /// `drbdadm status <resource>`.
    pub fn status(host: Host, resource: &str) -> Step {
        Step::new(host, &["status"], resource)
    }

    /// The full command line: `prefix` (e.g. `ssh root@host-b`, empty for local), then
    /// `drbdadm` and the arguments.
    pub fn argv(&self, prefix: &[String]) -> Vec<String> {
        prefix
            .iter()
            .cloned()
            .chain(std::iter::once(DRBDADM.to_string()))
            .chain(self.args.iter().cloned())
            .collect()
    }
}

/// The program every step runs.
pub const DRBDADM: &str = "drbdadm";

/// Why a call cannot go ahead in the resource's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An earlier step is missing (a caller bug).
    OutOfOrder {
        /// What must come first.
        needs: &'static str,
    },
    /// The resource is not in a state replication can work in.
    Broken(String),
}

fn protocol(p: char, resource: &str) -> [Step; 2] {
    let flag = format!("--protocol={p}");
    [
        Step::new(Host::Source, &["net-options", &flag], resource),
        Step::new(Host::Destination, &["net-options", &flag], resource),
    ]
}

fn connection_of(s: &ResourceStatus) -> String {
    let down: Vec<String> = s
        .replica_peers()
        .filter(|p| !p.connected())
        .map(|p| format!("{} connection:{}", p.name, p.connection))
        .collect();
    if s.peers.is_empty() {
        "no peer".into()
    } else if down.is_empty() {
        "connected".into()
    } else {
        down.join(", ")
    }
}

/// `start_async`: the source Primary, asynchronous replication (protocol A).
pub fn start(resource: &str, s: &ResourceStatus) -> Result<Vec<Step>, Refusal> {
    if s.peer_primary() {
        return Err(Refusal::Broken(
            "the destination is Primary: the resource is in use there".into(),
        ));
    }
    if !s.progress().connected {
        return Err(Refusal::Broken(format!(
            "not replicating to the destination ({})",
            connection_of(s)
        )));
    }
    let mut steps = Vec::new();
    if s.role != Role::Primary {
        steps.push(Step::new(Host::Source, &["primary"], resource));
    }
    steps.extend(protocol('A', resource));
    Ok(steps)
}

/// `switch_sync`: synchronous replication (protocol C).
pub fn switch_sync(resource: &str, s: &ResourceStatus) -> Result<Vec<Step>, Refusal> {
    if s.role != Role::Primary {
        return Err(Refusal::OutOfOrder {
            needs: "start-async",
        });
    }
    if !s.progress().connected {
        return Err(Refusal::Broken(format!(
            "not replicating to the destination ({})",
            connection_of(s)
        )));
    }
    Ok(protocol('C', resource).into())
}

/// `wait_in_sync`: whether the source is Primary and every replica up to date.
pub fn in_sync(s: &ResourceStatus) -> Result<bool, Refusal> {
    if s.role != Role::Primary {
        return Err(Refusal::OutOfOrder {
            needs: "start-async",
        });
    }
    Ok(s.progress().in_sync)
}

/// `cutover`: source Secondary, destination Primary (one after the other: the VM is
/// paused, no dual-primary needed). A repeated cutover only promotes the destination.
pub fn cutover(resource: &str, s: &ResourceStatus) -> Result<Vec<Step>, Refusal> {
    let mut steps = Vec::new();
    match s.role {
        Role::Primary => {
            if !s.progress().in_sync {
                return Err(Refusal::OutOfOrder {
                    needs: "wait-in-sync",
                });
            }
            steps.push(Step::new(Host::Source, &["secondary"], resource));
        }
        Role::Secondary => {}
        Role::Unknown => {
            return Err(Refusal::Broken("the source's role is unknown".into()));
        }
    }
    steps.push(Step::new(Host::Destination, &["primary"], resource));
    Ok(steps)
}

/// `abort`: the destination back to Secondary if it is (or, disconnected after a
/// cutover, may be) Primary, the source Primary, protocol A again.
pub fn abort(resource: &str, s: &ResourceStatus) -> Vec<Step> {
    let peer_unknown = s.peers.is_empty() || s.peers.iter().any(|p| p.role == Role::Unknown);
    let mut steps = Vec::new();
    if s.peer_primary() || (s.role != Role::Primary && peer_unknown) {
        steps.push(Step::new(Host::Destination, &["secondary"], resource));
    }
    if s.role != Role::Primary {
        steps.push(Step::new(Host::Source, &["primary"], resource));
    }
    steps.extend(protocol('A', resource));
    steps
}

#[cfg(test)]
mod tests {
    use super::super::status::parse_status;
    use super::*;

    fn st(text: &str) -> ResourceStatus {
        parse_status(text, "r0").unwrap()
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| format!("{:?}: {}", s.host, s.args.join(" ")))
            .collect()
    }

    const SYNCING: &str = "r0 role:Primary\n  disk:UpToDate\n  host-b role:Secondary\n    replication:SyncSource peer-disk:Inconsistent done:45.10\n";
    const IN_SYNC: &str = "r0 role:Primary\n  disk:UpToDate\n  host-b role:Secondary\n    replication:Established peer-disk:UpToDate\n";
    const CUT_OVER: &str = "r0 role:Secondary\n  disk:UpToDate\n  host-b role:Primary\n    replication:Established peer-disk:UpToDate\n";
    const SECONDARY_DISCONNECTED: &str =
        "r0 role:Secondary\n  disk:UpToDate\n  host-b connection:Connecting\n";
    const BOTH_SECONDARY: &str = "r0 role:Secondary\n  disk:UpToDate\n  host-b role:Secondary\n    replication:Established peer-disk:UpToDate\n";

    #[test]
    fn start_sets_protocol_a_on_both_hosts_and_promotes_only_if_needed() {
        assert_eq!(
            lines(&start("r0", &st(SYNCING)).unwrap()),
            [
                "Source: net-options --protocol=A r0",
                "Destination: net-options --protocol=A r0"
            ]
        );
        assert_eq!(
            lines(&start("r0", &st(BOTH_SECONDARY)).unwrap()),
            [
                "Source: primary r0",
                "Source: net-options --protocol=A r0",
                "Destination: net-options --protocol=A r0"
            ]
        );
        assert!(matches!(
            start("r0", &st(CUT_OVER)),
            Err(Refusal::Broken(_))
        ));
        let Err(Refusal::Broken(why)) = start(
            "r0",
            &st("r0 role:Primary\n  disk:UpToDate\n  host-b connection:StandAlone\n"),
        ) else {
            panic!("a standalone resource replicates nothing")
        };
        assert!(why.contains("host-b connection:StandAlone"), "{why}");
    }

    #[test]
    fn switch_sync_sets_protocol_c() {
        assert_eq!(
            lines(&switch_sync("r0", &st(SYNCING)).unwrap()),
            [
                "Source: net-options --protocol=C r0",
                "Destination: net-options --protocol=C r0"
            ]
        );
        assert_eq!(
            switch_sync("r0", &st(BOTH_SECONDARY)),
            Err(Refusal::OutOfOrder {
                needs: "start-async"
            })
        );
    }

    #[test]
    fn in_sync_needs_every_replica_up_to_date() {
        assert_eq!(in_sync(&st(SYNCING)), Ok(false));
        assert_eq!(in_sync(&st(IN_SYNC)), Ok(true));
        assert!(in_sync(&st(CUT_OVER)).is_err());
    }

    #[test]
    fn cutover_demotes_then_promotes_and_resumes_halfway() {
        assert_eq!(
            lines(&cutover("r0", &st(IN_SYNC)).unwrap()),
            ["Source: secondary r0", "Destination: primary r0"]
        );
        assert_eq!(
            cutover("r0", &st(SYNCING)),
            Err(Refusal::OutOfOrder {
                needs: "wait-in-sync"
            })
        );
        // Crashed between the two: only the promotion is left. Done: promote again
        // (drbdadm primary on a Primary succeeds).
        for text in [BOTH_SECONDARY, CUT_OVER] {
            assert_eq!(
                lines(&cutover("r0", &st(text)).unwrap()),
                ["Destination: primary r0"]
            );
        }
    }

    #[test]
    fn abort_puts_the_source_back_whatever_was_done() {
        let a = |text| lines(&abort("r0", &st(text)));
        // After start/switch: only the protocol.
        assert_eq!(
            a(IN_SYNC),
            [
                "Source: net-options --protocol=A r0",
                "Destination: net-options --protocol=A r0"
            ]
        );
        // After a cutover.
        assert_eq!(
            a(CUT_OVER),
            [
                "Destination: secondary r0",
                "Source: primary r0",
                "Source: net-options --protocol=A r0",
                "Destination: net-options --protocol=A r0"
            ]
        );
        // Halfway through a cutover.
        assert_eq!(a(BOTH_SECONDARY)[0], "Source: primary r0");
        // Disconnected after a cutover: the destination may be Primary.
        assert_eq!(
            a(SECONDARY_DISCONNECTED)[..2],
            ["Destination: secondary r0", "Source: primary r0"]
        );
    }

    #[test]
    fn argv_puts_the_host_prefix_first() {
        let s = Step::status(Host::Destination, "r0");
        assert_eq!(s.argv(&[]), ["drbdadm", "status", "r0"]);
        let ssh = vec!["ssh".to_string(), "root@host-b".to_string()];
        assert_eq!(
            s.argv(&ssh),
            ["ssh", "root@host-b", "drbdadm", "status", "r0"]
        );
    }
}

//! A pure parser of `drbdadm status <resource>` (DRBD 9), in its plain and its
//! `--verbose`/`--statistics` forms:
//!
//! ```text
//! r0 role:Primary
//!   disk:UpToDate
//!   host-b role:Secondary
//!     replication:SyncSource peer-disk:Inconsistent done:45.10
//! ```
//!
//! One line per resource (column 0), then its local volumes, then one line per peer
//! connection with its volumes below. Plain output leaves out what is normal: no
//! `connection:` field means Connected, no `replication:` field means Established.

/// A node's role in the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May be written to (the VM runs on it).
    Primary,
    /// Receives the primary's writes.
    Secondary,
    /// Not known (a disconnected peer).
    Unknown,
}

impl Role {
    fn parse(s: &str) -> Role {
        match s {
            "Primary" => Role::Primary,
            "Secondary" => Role::Secondary,
            _ => Role::Unknown,
        }
    }
}

/// The local side of one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVolume {
    /// Volume number (`None` in plain single-volume output).
    pub volume: Option<u32>,
    /// `disk:` (`UpToDate`, `Inconsistent`, `Diskless`, ...).
    pub disk: String,
}

/// One peer's view of one volume.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerVolume {
    /// Volume number (`None` in plain single-volume output).
    pub volume: Option<u32>,
    /// `replication:` (`Established`, `SyncSource`, `Ahead`, `Off`, ...); `Established`
    /// when plain output leaves it out on a connected peer.
    pub replication: String,
    /// `peer-disk:`, when known.
    pub peer_disk: Option<String>,
    /// `done:` percentage while resyncing.
    pub done: Option<f64>,
    /// `out-of-sync:` (KiB), with `--statistics`.
    pub out_of_sync: Option<u64>,
}

/// One peer connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// The peer's node name.
    pub name: String,
    /// `connection:`; `Connected` when plain output leaves it out.
    pub connection: String,
    /// The peer's role.
    pub role: Role,
    /// Its volumes.
    pub volumes: Vec<PeerVolume>,
}

impl Peer {
    /// Connected to this node.
    pub fn connected(&self) -> bool {
        self.connection == "Connected"
    }

    /// A diskless peer (a tiebreaker or a DRBD client): it holds no replica.
    pub fn diskless(&self) -> bool {
        !self.volumes.is_empty()
            && self
                .volumes
                .iter()
                .all(|v| v.peer_disk.as_deref() == Some("Diskless"))
    }

    /// Connected, and every volume established with an up-to-date peer disk.
    pub fn in_sync(&self) -> bool {
        self.connected()
            && !self.volumes.is_empty()
            && self.volumes.iter().all(|v| {
                v.replication == "Established"
                    && v.peer_disk.as_deref() == Some("UpToDate")
                    && v.out_of_sync.unwrap_or(0) == 0
            })
    }
}

/// One resource as `drbdadm status` shows it from one node.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceStatus {
    /// The resource name.
    pub name: String,
    /// This node's role.
    pub role: Role,
    /// This node's volumes.
    pub volumes: Vec<LocalVolume>,
    /// The other nodes.
    pub peers: Vec<Peer>,
}

/// How far replication to the peers is, from the source's status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicationProgress {
    /// Every replica peer is connected.
    pub connected: bool,
    /// Every replica peer is connected, established and up to date.
    pub in_sync: bool,
    /// The lowest `done:` of a resyncing volume (100 when in sync, `None` otherwise).
    pub done_percent: Option<f64>,
}

impl ResourceStatus {
    /// The peers holding a replica (diskless tiebreakers left out). In the usual
    /// two-node resource: the one peer, the destination.
    pub fn replica_peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter().filter(|p| !p.diskless())
    }

    /// Every local volume is `UpToDate`.
    pub fn local_up_to_date(&self) -> bool {
        !self.volumes.is_empty() && self.volumes.iter().all(|v| v.disk == "UpToDate")
    }

    /// Some peer is Primary.
    pub fn peer_primary(&self) -> bool {
        self.peers.iter().any(|p| p.role == Role::Primary)
    }

    /// Replication progress towards the peers.
    pub fn progress(&self) -> ReplicationProgress {
        let mut replicas = self.replica_peers().peekable();
        let any = replicas.peek().is_some();
        let (mut connected, mut in_sync) = (any, any);
        let mut done: Option<f64> = None;
        for p in replicas {
            connected &= p.connected();
            in_sync &= p.in_sync();
            for v in &p.volumes {
                if let Some(d) = v.done {
                    done = Some(done.map_or(d, |m: f64| m.min(d)));
                }
            }
        }
        in_sync &= self.local_up_to_date();
        ReplicationProgress {
            connected,
            in_sync,
            done_percent: if in_sync { Some(100.0) } else { done },
        }
    }
}

/// Why a status text cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// Nothing about the resource in the output.
    #[error("no status for resource {0:?} in drbdadm's output")]
    Missing(String),
    /// A line that fits nowhere.
    #[error("line {line} of drbdadm status: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Which element the last `key:value` line went to, for continuation lines.
#[derive(Clone, Copy)]
enum Last {
    Resource,
    Local,
    Peer,
    PeerVolume,
}

fn fields<'a>(tokens: &'a [&'a str]) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    tokens.iter().filter_map(|t| t.split_once(':'))
}

/// Parses the status of `resource` out of `drbdadm status` output (which may list
/// other resources too).
pub fn parse_status(text: &str, resource: &str) -> Result<ResourceStatus, StatusError> {
    let mut found: Option<ResourceStatus> = None;
    let mut in_ours = false;
    let mut last = Last::Resource;
    // Indentation of the current peer line: deeper key:value lines belong to it.
    let mut peer_indent: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let named = !tokens[0].contains(':');
        if indent == 0 {
            if !named {
                return Err(StatusError::Malformed {
                    line: i + 1,
                    reason: "a resource line starts with the resource's name",
                });
            }
            in_ours = tokens[0] == resource;
            if in_ours {
                let mut r = ResourceStatus {
                    name: tokens[0].to_string(),
                    role: Role::Unknown,
                    volumes: Vec::new(),
                    peers: Vec::new(),
                };
                for (k, v) in fields(&tokens[1..]) {
                    if k == "role" {
                        r.role = Role::parse(v);
                    }
                }
                found = Some(r);
                last = Last::Resource;
                peer_indent = None;
            }
            continue;
        }
        if !in_ours {
            continue;
        }
        let r = found.as_mut().expect("in our resource");
        if named {
            let mut p = Peer {
                name: tokens[0].to_string(),
                connection: "Connected".into(),
                role: Role::Unknown,
                volumes: Vec::new(),
            };
            for (k, v) in fields(&tokens[1..]) {
                match k {
                    "connection" => p.connection = v.to_string(),
                    "role" => p.role = Role::parse(v),
                    _ => {}
                }
            }
            r.peers.push(p);
            peer_indent = Some(indent);
            last = Last::Peer;
            continue;
        }
        let keys: Vec<(&str, &str)> = fields(&tokens).collect();
        let has = |k: &str| keys.iter().any(|(key, _)| *key == k);
        let in_peer = peer_indent.is_some_and(|pi| indent > pi);
        let volume = keys
            .iter()
            .find(|(k, _)| *k == "volume")
            .and_then(|(_, v)| v.parse().ok());
        if in_peer && (has("volume") || has("replication") || has("peer-disk")) {
            let p = r.peers.last_mut().expect("peer_indent set with a peer");
            p.volumes.push(PeerVolume {
                volume,
                replication: String::new(),
                peer_disk: None,
                done: None,
                out_of_sync: None,
            });
            last = Last::PeerVolume;
        } else if !in_peer && (has("volume") || has("disk")) {
            if peer_indent.is_some() {
                return Err(StatusError::Malformed {
                    line: i + 1,
                    reason: "a local volume after the peers",
                });
            }
            r.volumes.push(LocalVolume {
                volume,
                disk: String::new(),
            });
            last = Last::Local;
        }
        // Fields of this line (and continuation lines) go to the current element.
        for (k, v) in keys {
            match last {
                Last::Local => {
                    if k == "disk" {
                        r.volumes.last_mut().expect("local volume").disk = v.to_string();
                    }
                }
                Last::PeerVolume => {
                    let pv = r
                        .peers
                        .last_mut()
                        .and_then(|p| p.volumes.last_mut())
                        .expect("peer volume");
                    match k {
                        "replication" => pv.replication = v.to_string(),
                        "peer-disk" => pv.peer_disk = Some(v.to_string()),
                        "done" => pv.done = v.parse().ok(),
                        "out-of-sync" => pv.out_of_sync = v.parse().ok(),
                        _ => {}
                    }
                }
                Last::Peer => {
                    let p = r.peers.last_mut().expect("peer");
                    match k {
                        "connection" => p.connection = v.to_string(),
                        "role" => p.role = Role::parse(v),
                        _ => {}
                    }
                }
                Last::Resource => {
                    if k == "role" {
                        r.role = Role::parse(v);
                    }
                }
            }
        }
    }
    let mut r = found.ok_or_else(|| StatusError::Missing(resource.to_string()))?;
    // Plain output: no `replication:` on a connected peer means Established.
    for p in &mut r.peers {
        for v in &mut p.volumes {
            if v.replication.is_empty() {
                v.replication = if p.connection == "Connected" {
                    "Established".into()
                } else {
                    "Off".into()
                };
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real DRBD 9 outputs (drbd-utils 9.x), from public guides and bug reports.

    const SYNCING: &str = "\
r0 role:Primary
  disk:UpToDate
  peer role:Secondary
    replication:SyncSource peer-disk:Inconsistent done:1.58
";

    const SYNC_TARGET: &str = "\
r0 role:Secondary
  disk:Inconsistent
  peer role:Primary
    replication:SyncTarget peer-disk:UpToDate done:6.45
";

    const ESTABLISHED: &str = "\
r0 role:Primary
  disk:UpToDate
  peer role:Secondary
    replication:Established peer-disk:UpToDate
";

    /// Older drbd-utils leave `replication:Established` out.
    const TERSE: &str = "\
testresource01 role:Primary
  disk:UpToDate
  node2 role:Secondary
    peer-disk:UpToDate
";

    const MULTI_VOLUME: &str = "\
webdata role:Primary
  volume:0 disk:UpToDate
  node-b role:Secondary
    volume:0 replication:Established peer-disk:UpToDate
";

    const VERBOSE_STATISTICS: &str = "\
r0 node-id:1 role:Primary suspended:no
    write-ordering:flush
  volume:0 minor:0 disk:UpToDate
      size:390699424 read:390700584 written:12390400 al-writes:2750 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no
  node-2 node-id:0 connection:Connected role:Secondary congested:no
    volume:0 replication:Established peer-disk:UpToDate resync-suspended:no
        received:0 sent:403089824 out-of-sync:0 pending:0 unacked:0
";

    const THREE_NODES: &str = "\
haify-meta node-id:0 role:Primary suspended:no
  volume:0 minor:3 disk:UpToDate quorum:yes blocked:no
  haify-e node-id:1 connection:Connected role:Secondary congested:no
    volume:0 replication:Established peer-disk:UpToDate
  haify-t node-id:2 connection:Connected role:Secondary congested:no
    volume:0 replication:Established peer-disk:Diskless
  haify-d node-id:3 connection:Connecting
";

    const DISCONNECTED: &str = "\
r0 role:Primary
  disk:UpToDate
  host-b connection:Connecting
";

    #[test]
    fn resync_in_progress() {
        let s = parse_status(SYNCING, "r0").unwrap();
        assert_eq!(s.role, Role::Primary);
        assert!(s.local_up_to_date());
        assert_eq!(s.peers.len(), 1);
        let p = &s.peers[0];
        assert_eq!((p.name.as_str(), p.role), ("peer", Role::Secondary));
        assert_eq!(p.volumes[0].replication, "SyncSource");
        assert_eq!(p.volumes[0].peer_disk.as_deref(), Some("Inconsistent"));
        assert_eq!(
            s.progress(),
            ReplicationProgress {
                connected: true,
                in_sync: false,
                done_percent: Some(1.58)
            }
        );
        let t = parse_status(SYNC_TARGET, "r0").unwrap();
        assert_eq!(t.role, Role::Secondary);
        assert!(!t.local_up_to_date());
        assert!(t.peer_primary());
        assert!(
            !t.progress().in_sync,
            "the local disk is still Inconsistent"
        );
    }

    #[test]
    fn established_in_every_form() {
        for (text, name) in [
            (ESTABLISHED, "r0"),
            (TERSE, "testresource01"),
            (MULTI_VOLUME, "webdata"),
            (VERBOSE_STATISTICS, "r0"),
        ] {
            let s = parse_status(text, name).unwrap();
            assert_eq!(s.role, Role::Primary, "{name}");
            assert_eq!(
                s.progress(),
                ReplicationProgress {
                    connected: true,
                    in_sync: true,
                    done_percent: Some(100.0)
                },
                "{text}"
            );
        }
        let v = parse_status(VERBOSE_STATISTICS, "r0").unwrap();
        assert_eq!(v.volumes[0].volume, Some(0));
        assert_eq!(v.peers[0].volumes[0].out_of_sync, Some(0));
    }

    #[test]
    fn out_of_sync_blocks_are_not_in_sync() {
        let text = VERBOSE_STATISTICS.replace("out-of-sync:0", "out-of-sync:4096");
        let s = parse_status(&text, "r0").unwrap();
        assert!(!s.progress().in_sync);
    }

    #[test]
    fn disconnected_peer() {
        let s = parse_status(DISCONNECTED, "r0").unwrap();
        let p = &s.peers[0];
        assert_eq!(
            (p.connection.as_str(), p.role),
            ("Connecting", Role::Unknown)
        );
        assert!(!p.connected());
        let progress = s.progress();
        assert!(!progress.connected && !progress.in_sync);
    }

    #[test]
    fn three_nodes_tiebreaker_left_out_missing_replica_counts() {
        let s = parse_status(THREE_NODES, "haify-meta").unwrap();
        assert_eq!(s.peers.len(), 3);
        let replicas: Vec<&str> = s.replica_peers().map(|p| p.name.as_str()).collect();
        assert_eq!(replicas, ["haify-e", "haify-d"]);
        assert!(!s.progress().connected, "haify-d is connecting");
        let two = THREE_NODES.replace("  haify-d node-id:3 connection:Connecting\n", "");
        assert!(parse_status(&two, "haify-meta").unwrap().progress().in_sync);
    }

    #[test]
    fn picks_the_named_resource() {
        let both = format!("{SYNCING}{}", TERSE);
        let s = parse_status(&both, "testresource01").unwrap();
        assert_eq!(s.peers[0].name, "node2");
        assert_eq!(parse_status(&both, "r0").unwrap().peers[0].name, "peer");
        assert_eq!(
            parse_status(&both, "r1"),
            Err(StatusError::Missing("r1".into()))
        );
        assert!(matches!(
            parse_status("  disk:UpToDate\n", "r0"),
            Err(StatusError::Missing(_))
        ));
        assert!(matches!(
            parse_status("role:Primary\n", "r0"),
            Err(StatusError::Malformed { line: 1, .. })
        ));
    }
}

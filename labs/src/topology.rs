//! The containerlab topology file: parsed with serde, then checked into a [`Topology`]
//! the runner can trust (every link end names a defined node and a unique, valid
//! interface; every daemon's config file is readable). Checking everything before
//! creating anything is what keeps a bad file from leaving a half-built lab behind.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::TopologyError;

/// Label that names a node's daemon explicitly (`frr`, `bird`, `gobgp` or `none`);
/// without it the daemon is inferred from the image name.
pub const DAEMON_LABEL: &str = "migroute.daemon";

#[derive(Debug, Deserialize)]
struct RawFile {
    name: Option<String>,
    #[serde(default)]
    topology: RawTopology,
}

#[derive(Debug, Default, Deserialize)]
struct RawTopology {
    #[serde(default)]
    defaults: RawNode,
    #[serde(default)]
    kinds: BTreeMap<String, RawNode>,
    #[serde(default)]
    nodes: BTreeMap<String, Option<RawNode>>,
    #[serde(default)]
    links: Vec<RawLink>,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct RawNode {
    kind: Option<String>,
    image: Option<String>,
    #[serde(default)]
    binds: Vec<String>,
    #[serde(default)]
    exec: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
struct RawLink {
    #[serde(default)]
    endpoints: Vec<String>,
}

/// A checked topology: what the runner brings up.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The lab's `name:`; namespaces are `<name>-<node>`.
    pub name: String,
    /// The topology file, as given.
    pub path: PathBuf,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Point-to-point links, in file order.
    pub links: Vec<Link>,
}

/// One node of the lab.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub image: Option<String>,
    /// The routing daemon the runner starts in the node, if any.
    pub daemon: Daemon,
    /// Shell commands run inside the node once its links exist (containerlab's `exec:`).
    pub exec: Vec<String>,
}

/// Which daemon a node runs, with the host paths of its config files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Daemon {
    /// A plain host: no daemon.
    None,
    /// FRR: `frr.conf` (pushed with vtysh) and the `daemons` file (which daemons run).
    Frr {
        config: PathBuf,
        daemons: Option<PathBuf>,
    },
    /// BIRD 2 with its `bird.conf`.
    Bird { config: PathBuf },
    /// gobgpd with its config file (TOML, YAML or JSON by extension).
    Gobgp { config: PathBuf },
}

impl Daemon {
    /// Short name used in status output and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Daemon::None => "none",
            Daemon::Frr { .. } => "frr",
            Daemon::Bird { .. } => "bird",
            Daemon::Gobgp { .. } => "gobgp",
        }
    }

    /// Nodes with a routing daemon are routers: they forward and get no rp_filter.
    pub fn is_router(&self) -> bool {
        !matches!(self, Daemon::None)
    }
}

/// One end of a link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub node: String,
    pub interface: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.node, self.interface)
    }
}

/// A veth pair between two nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub a: Endpoint,
    pub b: Endpoint,
}

impl Topology {
    /// Reads and checks a topology file. Bind paths are relative to the file's folder.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TopologyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Reads only the lab's `name:`: enough to tear a lab down even when the rest of
    /// the file (or a bound config) has since become invalid.
    pub fn name_only(path: impl AsRef<Path>) -> Result<Self, TopologyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        #[derive(Deserialize)]
        struct NameOnly {
            name: Option<String>,
        }
        let raw: NameOnly = serde_yaml::from_str(&text).map_err(|source| TopologyError::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
        let name = raw.name.unwrap_or_default();
        check_lab_name(&name).map_err(|reason| TopologyError::BadLabName {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(Topology {
            name,
            path: path.to_path_buf(),
            nodes: BTreeMap::new(),
            links: Vec::new(),
        })
    }

    /// Checks topology text as if it had been read from `path` (binds resolve against
    /// `path`'s folder and must be readable).
    pub fn parse(text: &str, path: &Path) -> Result<Self, TopologyError> {
        let raw: RawFile = serde_yaml::from_str(text).map_err(|source| TopologyError::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
        let name = raw.name.unwrap_or_default();
        check_lab_name(&name).map_err(|reason| TopologyError::BadLabName {
            path: path.to_path_buf(),
            reason,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut nodes = BTreeMap::new();
        for (node_name, raw_node) in &raw.topology.nodes {
            let node = build_node(
                node_name,
                raw_node.clone().unwrap_or_default(),
                &raw.topology,
                &base,
            )?;
            nodes.insert(node_name.clone(), node);
        }
        let links = build_links(&raw.topology.links, &nodes)?;
        Ok(Topology {
            name,
            path: path.to_path_buf(),
            nodes,
            links,
        })
    }

    /// The network namespace of a node: `<lab>-<node>`, so that labs can coexist.
    pub fn netns(&self, node: &str) -> String {
        format!("{}-{}", self.name, node)
    }

    /// The link that has `node:interface` as one of its ends, and the other end.
    pub fn peer_of(&self, node: &str, interface: &str) -> Option<(usize, &Endpoint)> {
        self.links.iter().enumerate().find_map(|(i, l)| {
            if l.a.node == node && l.a.interface == interface {
                Some((i, &l.b))
            } else if l.b.node == node && l.b.interface == interface {
                Some((i, &l.a))
            } else {
                None
            }
        })
    }
}

fn check_lab_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("missing or empty".into());
    }
    check_token(name)
}

fn check_token(s: &str) -> Result<(), String> {
    if s.len() > 64 {
        return Err(format!("`{s}` is longer than 64 bytes"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "`{s}` contains `{c}`; use letters, digits, `-`, `_`, `.`"
        ));
    }
    if s.starts_with('.') {
        return Err(format!("`{s}` starts with `.`"));
    }
    Ok(())
}

fn build_node(
    name: &str,
    raw: RawNode,
    topo: &RawTopology,
    base: &Path,
) -> Result<Node, TopologyError> {
    check_token(name).map_err(|reason| TopologyError::BadNodeName {
        node: name.to_string(),
        reason,
    })?;
    // containerlab's inheritance: node, then its kind's settings, then defaults.
    let kind = raw
        .kind
        .clone()
        .or_else(|| topo.defaults.kind.clone())
        .unwrap_or_else(|| "linux".to_string());
    if kind != "linux" {
        return Err(TopologyError::UnknownKind {
            node: name.to_string(),
            kind,
        });
    }
    let kind_defaults = topo.kinds.get(&kind).cloned().unwrap_or_default();
    let image = raw
        .image
        .clone()
        .or(kind_defaults.image.clone())
        .or(topo.defaults.image.clone());
    let binds = if raw.binds.is_empty() {
        if kind_defaults.binds.is_empty() {
            topo.defaults.binds.clone()
        } else {
            kind_defaults.binds.clone()
        }
    } else {
        raw.binds.clone()
    };
    let mut labels = topo.defaults.labels.clone();
    labels.extend(kind_defaults.labels.clone());
    labels.extend(raw.labels.clone());
    let binds = parse_binds(name, &binds, base)?;
    let daemon = detect_daemon(name, image.as_deref(), &labels, &binds)?;
    Ok(Node {
        name: name.to_string(),
        image,
        daemon,
        exec: raw.exec,
    })
}

/// A bind: host path (resolved) and container path.
struct Bind {
    host: PathBuf,
    container: String,
}

fn parse_binds(node: &str, binds: &[String], base: &Path) -> Result<Vec<Bind>, TopologyError> {
    binds
        .iter()
        .map(|b| {
            let mut parts = b.splitn(3, ':');
            match (parts.next(), parts.next()) {
                (Some(h), Some(c)) if !h.is_empty() && c.starts_with('/') => {
                    let host = Path::new(h);
                    let host = if host.is_absolute() {
                        host.to_path_buf()
                    } else {
                        base.join(host)
                    };
                    Ok(Bind {
                        host,
                        container: c.to_string(),
                    })
                }
                _ => Err(TopologyError::BadBind {
                    node: node.to_string(),
                    bind: b.clone(),
                }),
            }
        })
        .collect()
}

fn label_string(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn detect_daemon(
    node: &str,
    image: Option<&str>,
    labels: &BTreeMap<String, serde_yaml::Value>,
    binds: &[Bind],
) -> Result<Daemon, TopologyError> {
    let which = match labels.get(DAEMON_LABEL).map(label_string) {
        Some(d) => d,
        None => {
            let image = image.unwrap_or("").to_ascii_lowercase();
            if image.contains("frrouting/frr") || image.starts_with("frr:") || image == "frr" {
                "frr".to_string()
            } else if image.contains("gobgp") {
                "gobgp".to_string()
            } else if image.contains("bird") {
                "bird".to_string()
            } else {
                "none".to_string()
            }
        }
    };
    let find = |pred: &dyn Fn(&str) -> bool| {
        binds
            .iter()
            .find(|b| pred(&b.container))
            .map(|b| b.host.clone())
    };
    let readable = |p: PathBuf| -> Result<PathBuf, TopologyError> {
        std::fs::File::open(&p).map_err(|source| TopologyError::BindUnreadable {
            node: node.to_string(),
            path: p.clone(),
            source,
        })?;
        // Absolute, so daemons that chdir or re-read their config still find it.
        Ok(std::fs::canonicalize(&p).unwrap_or(p))
    };
    let missing = |daemon, what| TopologyError::MissingBind {
        node: node.to_string(),
        daemon,
        what,
    };
    match which.as_str() {
        "none" => Ok(Daemon::None),
        "frr" => {
            let config = find(&|c| c == "/etc/frr/frr.conf")
                .ok_or_else(|| missing("FRR", "/etc/frr/frr.conf"))?;
            let daemons = find(&|c| c == "/etc/frr/daemons");
            Ok(Daemon::Frr {
                config: readable(config)?,
                daemons: daemons.map(readable).transpose()?,
            })
        }
        "bird" => {
            let config = find(&|c| c.contains("bird") && c.ends_with(".conf"))
                .ok_or_else(|| missing("BIRD", "bird.conf (e.g. /etc/bird/bird.conf)"))?;
            Ok(Daemon::Bird {
                config: readable(config)?,
            })
        }
        "gobgp" => {
            let config = find(&|c| c.contains("gobgp"))
                .ok_or_else(|| missing("GoBGP", "gobgpd's config (e.g. /etc/gobgp/gobgpd.toml)"))?;
            Ok(Daemon::Gobgp {
                config: readable(config)?,
            })
        }
        _ => Err(TopologyError::UnknownDaemon {
            node: node.to_string(),
            daemon: which,
        }),
    }
}

fn parse_endpoint(link: usize, s: &str) -> Result<Endpoint, TopologyError> {
    match s.split_once(':') {
        Some((n, i)) if !n.is_empty() && !i.is_empty() => Ok(Endpoint {
            node: n.to_string(),
            interface: i.to_string(),
        }),
        _ => Err(TopologyError::BadEndpoint {
            link,
            endpoint: s.to_string(),
        }),
    }
}

fn check_ifname(name: &str) -> Result<(), String> {
    if name.len() > 15 {
        return Err("longer than 15 bytes".into());
    }
    if name == "lo" || name == "." || name == ".." {
        return Err("reserved name".into());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("contains `/`, `:` or whitespace".into());
    }
    Ok(())
}

fn build_links(
    raw: &[RawLink],
    nodes: &BTreeMap<String, Node>,
) -> Result<Vec<Link>, TopologyError> {
    let mut seen: HashMap<Endpoint, usize> = HashMap::new();
    let mut links = Vec::with_capacity(raw.len());
    for (i, l) in raw.iter().enumerate() {
        if l.endpoints.len() != 2 {
            return Err(TopologyError::EndpointCount {
                link: i,
                count: l.endpoints.len(),
            });
        }
        let a = parse_endpoint(i, &l.endpoints[0])?;
        let b = parse_endpoint(i, &l.endpoints[1])?;
        for ep in [&a, &b] {
            if !nodes.contains_key(&ep.node) {
                return Err(TopologyError::LinkToMissingNode {
                    link: i,
                    node: ep.node.clone(),
                });
            }
            check_ifname(&ep.interface).map_err(|reason| TopologyError::BadInterfaceName {
                node: ep.node.clone(),
                interface: ep.interface.clone(),
                link: i,
                reason,
            })?;
            if let Some(first) = seen.insert(ep.clone(), i) {
                return Err(TopologyError::DuplicateInterface {
                    node: ep.node.clone(),
                    interface: ep.interface.clone(),
                    first,
                    second: i,
                });
            }
        }
        links.push(Link { a, b });
    }
    Ok(links)
}

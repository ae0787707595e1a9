//! Errors of the lab runner. Each one names the node (and, for topology errors, the
//! field of the clab file) so that a broken lab says where to look.

use std::path::PathBuf;
use std::time::Duration;

/// A problem in a containerlab topology file, found before anything is created.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read at all.
    #[error("cannot read topology file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The YAML is malformed or a field has the wrong type.
    #[error("topology file {path}: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    /// `name:` is missing or unusable as a namespace prefix.
    #[error("topology file {path}: field `name`: {reason}")]
    BadLabName { path: PathBuf, reason: String },
    /// A node name that cannot become part of a namespace name.
    #[error("node `{node}`: invalid node name: {reason}")]
    BadNodeName { node: String, reason: String },
    /// `kind:` is not one the runner can bring up.
    #[error("node `{node}`: field `kind`: unknown kind `{kind}` (the runner supports `linux`)")]
    UnknownKind { node: String, kind: String },
    /// A link endpoint is not `node:interface`.
    #[error("links[{link}]: field `endpoints`: `{endpoint}` is not `node:interface`")]
    BadEndpoint { link: usize, endpoint: String },
    /// A link does not have exactly two endpoints.
    #[error("links[{link}]: field `endpoints`: expected 2 endpoints, found {count}")]
    EndpointCount { link: usize, count: usize },
    /// A link names a node that the file does not define.
    #[error(
        "links[{link}]: field `endpoints`: node `{node}` is not defined under `topology.nodes`"
    )]
    LinkToMissingNode { link: usize, node: String },
    /// Two links use the same interface of a node.
    #[error(
        "node `{node}`: interface `{interface}` is used by links[{first}] and links[{second}]"
    )]
    DuplicateInterface {
        node: String,
        interface: String,
        first: usize,
        second: usize,
    },
    /// Linux interface names are at most 15 bytes, without `/`, `:` or spaces.
    #[error("node `{node}`: interface name `{interface}` in links[{link}]: {reason}")]
    BadInterfaceName {
        node: String,
        interface: String,
        link: usize,
        reason: String,
    },
    /// A bind entry is not `host:container[:mode]`.
    #[error("node `{node}`: field `binds`: `{bind}` is not `host-path:container-path`")]
    BadBind { node: String, bind: String },
    /// The daemon of a node needs a config file that no bind provides.
    #[error("node `{node}`: field `binds`: {daemon} node needs a bind for {what}")]
    MissingBind {
        node: String,
        daemon: &'static str,
        what: &'static str,
    },
    /// A bound host file does not exist or cannot be read.
    #[error("node `{node}`: field `binds`: cannot read {path}: {source}")]
    BindUnreadable {
        node: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// `labels: migroute.daemon` names a daemon the runner does not know.
    #[error("node `{node}`: field `labels.migroute.daemon`: unknown daemon `{daemon}` (frr, bird, gobgp, none)")]
    UnknownDaemon { node: String, daemon: String },
}

/// A failure while bringing a lab up, tearing it down or operating on it.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The file was refused before anything was created.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// An external command (ip, vtysh, birdc, gobgp, …) could not run or failed.
    #[error("{context}: `{command}` failed: {detail}")]
    Command {
        context: String,
        command: String,
        detail: String,
    },
    /// A command from a node's `exec:` list failed.
    #[error("node `{node}`: field `exec[{index}]`: `{command}` failed: {detail}")]
    Exec {
        node: String,
        index: usize,
        command: String,
        detail: String,
    },
    /// A routing daemon did not start or died right after starting.
    #[error(
        "node `{node}`: daemon {daemon} failed to start (config from field `{field}`): {detail}"
    )]
    DaemonStart {
        node: String,
        daemon: String,
        field: &'static str,
        detail: String,
    },
    /// The lab (or a namespace of it) already exists.
    #[error(
        "lab `{lab}` is already up or was not torn down ({what}); run `migroute lab down` first"
    )]
    AlreadyUp { lab: String, what: String },
    /// The lab is not up, so there is nothing to operate on.
    #[error("lab `{lab}` is not up (no state in {state_dir})")]
    NotUp { lab: String, state_dir: PathBuf },
    /// A node name that the topology does not define.
    #[error("lab `{lab}`: no node named `{node}`")]
    UnknownNode { lab: String, node: String },
    /// A node has no interface by that name.
    #[error("node `{node}`: no interface `{interface}`")]
    UnknownInterface { node: String, interface: String },
    /// A wait helper ran out of time.
    #[error("node `{node}`: still missing after {timeout:?}: {missing}")]
    WaitTimeout {
        node: String,
        timeout: Duration,
        missing: String,
    },
    /// Local file-system trouble in the lab's state directory.
    #[error("state directory {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The traffic probe could not run in a node (bind, send, no packet at all).
    #[error("node `{node}`: probe: {detail}")]
    Probe { node: String, detail: String },
    /// Something was left behind by `down`.
    #[error("lab `{lab}`: teardown incomplete: {detail}")]
    Teardown { lab: String, detail: String },
}

/// Result alias of the lab runner.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

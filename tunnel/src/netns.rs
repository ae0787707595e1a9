//! Which network namespace a handle talks to.
//!
//! A netlink socket stays in the namespace it was opened in, so the namespace is part
//! of the handle's identity and of every error message.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where iproute2 (`ip netns add`) bind-mounts named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A network namespace: the caller's own, or one named under `/run/netns`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Netns {
    /// The namespace of the calling process.
    #[default]
    Current,
    /// A namespace created with `ip netns add NAME`.
    Named(String),
}

impl Netns {
    /// `None` → current namespace, `Some(name)` → named one.
    pub fn from_option(name: Option<&str>) -> Self {
        match name {
            None => Netns::Current,
            Some(n) => Netns::Named(n.to_string()),
        }
    }

    /// The bind-mount file of a named namespace.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            Netns::Current => None,
            Netns::Named(n) => Some(PathBuf::from(NETNS_RUN_DIR).join(n)),
        }
    }

    /// A name that could escape `/run/netns` or is empty is refused before any IO.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        match self {
            Netns::Current => Ok(()),
            Netns::Named(n) if n.is_empty() => Err("empty netns name"),
            Netns::Named(n) if n.contains('/') || n == "." || n == ".." => {
                Err("netns name must not contain '/' or be '.'/'..'")
            }
            Netns::Named(_) => Ok(()),
        }
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netns::Current => f.write_str("(current)"),
            Netns::Named(n) => f.write_str(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_paths_and_checks() {
        let ns = Netns::Named("pe-a".into());
        assert_eq!(ns.path().unwrap(), PathBuf::from("/run/netns/pe-a"));
        assert!(ns.check().is_ok());
        assert!(Netns::Named("../etc".into()).check().is_err());
        assert!(Netns::Named(String::new()).check().is_err());
        assert_eq!(Netns::Current.path(), None);
    }
}

//! [`NbdTarget`]: the plan's NBD URI, turned into the QMP arguments that name it.

use serde_json::{json, Value};

/// Where an NBD server is (or listens).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NbdServer {
    /// TCP; `host` without brackets.
    Inet {
        /// Host name or address.
        host: String,
        /// Port (NBD's default is 10809).
        port: u16,
    },
    /// A unix socket.
    Unix {
        /// Its path.
        path: String,
    },
}

impl NbdServer {
    /// `SocketAddress` (flat), as `blockdev-add` of an `nbd` node takes it.
    pub fn socket_address(&self) -> Value {
        match self {
            NbdServer::Inet { host, port } => {
                json!({"type": "inet", "host": host, "port": port.to_string()})
            }
            NbdServer::Unix { path } => json!({"type": "unix", "path": path}),
        }
    }

    /// `SocketAddressLegacy`, as `nbd-server-start` takes it.
    pub fn socket_address_legacy(&self) -> Value {
        match self {
            NbdServer::Inet { host, port } => {
                json!({"type": "inet", "data": {"host": host, "port": port.to_string()}})
            }
            NbdServer::Unix { path } => json!({"type": "unix", "data": {"path": path}}),
        }
    }
}

/// An NBD export: server plus export name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NbdTarget {
    /// The server.
    pub server: NbdServer,
    /// The export's name.
    pub export: String,
}

const DEFAULT_PORT: u16 = 10809;

fn host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(format!("{s:?}: junk after ']'")),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?}: bad port {p:?}"))?,
        None => DEFAULT_PORT,
    };
    Ok((host.to_string(), port))
}

impl NbdTarget {
    /// Parses `nbd://host[:port]/export` (also `nbd+tcp://`) or
    /// `nbd+unix:///export?socket=/path`, the URIs `qemu-img` accepts.
    pub fn parse(uri: &str) -> Result<NbdTarget, String> {
        let uri = uri.trim();
        if let Some(rest) = uri
            .strip_prefix("nbd://")
            .or_else(|| uri.strip_prefix("nbd+tcp://"))
        {
            let (authority, export) = rest.split_once('/').unwrap_or((rest, ""));
            let (host, port) = host_port(authority)?;
            if export.is_empty() {
                return Err(format!("{uri:?} names no export (…/<export>)"));
            }
            Ok(NbdTarget {
                server: NbdServer::Inet { host, port },
                export: export.to_string(),
            })
        } else if let Some(rest) = uri.strip_prefix("nbd+unix://") {
            let (path_part, query) = rest
                .split_once('?')
                .ok_or_else(|| format!("{uri:?} has no ?socket=/path"))?;
            let export = path_part.strip_prefix('/').unwrap_or(path_part);
            let socket = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("socket="))
                .filter(|p| !p.is_empty())
                .ok_or_else(|| format!("{uri:?} has no ?socket=/path"))?;
            if export.is_empty() {
                return Err(format!("{uri:?} names no export"));
            }
            Ok(NbdTarget {
                server: NbdServer::Unix {
                    path: socket.to_string(),
                },
                export: export.to_string(),
            })
        } else {
            Err(format!(
                "{uri:?} is not nbd://host:port/export or nbd+unix:///export?socket=/path"
            ))
        }
    }

    /// Parses a listen address: `host:port`, `[v6]:port` or `unix:/path`.
    pub fn parse_listen(s: &str) -> Result<NbdServer, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{s:?} has no path"));
            }
            return Ok(NbdServer::Unix {
                path: path.to_string(),
            });
        }
        let (host, port) = host_port(s)?;
        Ok(NbdServer::Inet { host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_qemu_img_accepts() {
        let t = NbdTarget::parse("nbd://192.0.2.2:10810/vda").unwrap();
        assert_eq!(
            t.server.socket_address(),
            json!({"type": "inet", "host": "192.0.2.2", "port": "10810"})
        );
        assert_eq!(t.export, "vda");
        let t = NbdTarget::parse("nbd://[2001:db8::2]/disk0").unwrap();
        assert_eq!(
            t.server,
            NbdServer::Inet {
                host: "2001:db8::2".into(),
                port: 10809
            }
        );
        let t = NbdTarget::parse("nbd+unix:///vda?socket=/run/b.nbd").unwrap();
        assert_eq!(
            t.server.socket_address_legacy(),
            json!({"type": "unix", "data": {"path": "/run/b.nbd"}})
        );
        for bad in [
            "nbd://host-b:10809",
            "nbd://:10809/vda",
            "nbd://host-b:0/vda",
            "nbd+unix:///vda",
            "http://host-b/vda",
        ] {
            assert!(NbdTarget::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            NbdTarget::parse_listen("0.0.0.0:10809"),
            Ok(NbdServer::Inet {
                host: "0.0.0.0".into(),
                port: 10809
            })
        );
        assert!(NbdTarget::parse_listen("unix:").is_err());
    }
}

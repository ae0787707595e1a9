//! A site: a network namespace with a bridge for guests, and the veth that joins two
//! sites (the WAN the migration stream and libvirt's peer connection cross).

use std::process::Command;

use crate::cmd;
use crate::error::Result;
use crate::netns;

/// One site's namespace. Dropping it kills every process left in the namespace and
/// deletes it (the bridge, taps and veth end go with it).
#[derive(Debug)]
pub struct Site {
    /// The namespace's name.
    pub netns: String,
    /// The guest bridge's name.
    pub bridge: String,
}

impl Site {
    /// Creates namespace `netns` with bridge `br0` holding `bridge_addr` (e.g.
    /// `10.10.0.1/24`), so the site can reach its guests.
    pub fn create(netns_name: &str, bridge_addr: &str) -> Result<Site> {
        netns::create(netns_name)?;
        let site = Site {
            netns: netns_name.to_owned(),
            bridge: "br0".into(),
        };
        site.ip(&["link", "add", "br0", "type", "bridge"])?;
        site.ip(&["addr", "add", bridge_addr, "dev", "br0"])?;
        site.ip(&["link", "set", "br0", "up"])?;
        Ok(site)
    }

    /// Runs `ip -n NETNS ARGS…`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        cmd::run(
            format!("namespace {}", self.netns),
            Command::new("ip").arg("-n").arg(&self.netns).args(args),
        )
    }

    /// A command run inside the site's namespace.
    pub fn command(&self, program: &str) -> Command {
        netns::command(&self.netns, program)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for _ in 0..50 {
            let pids = netns::pids(&self.netns);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill has no memory preconditions; the pid lives in our
                // namespace, which this guard owns.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = netns::delete(&self.netns);
    }
}

/// Joins two sites with a veth (`wan0` on each side) carrying `a_addr` and `b_addr`
/// (e.g. `192.168.77.1/24`, `192.168.77.2/24`).
pub fn link_sites(a: &Site, b: &Site, a_addr: &str, b_addr: &str) -> Result<()> {
    a.ip(&[
        "link", "add", "wan0", "type", "veth", "peer", "name", "wan0", "netns", &b.netns,
    ])?;
    a.ip(&["addr", "add", a_addr, "dev", "wan0"])?;
    b.ip(&["addr", "add", b_addr, "dev", "wan0"])?;
    a.ip(&["link", "set", "wan0", "up"])?;
    b.ip(&["link", "set", "wan0", "up"])?;
    Ok(())
}

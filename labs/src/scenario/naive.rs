//! The naive baseline: move the VM (its port, with the pause), *then* make the routing
//! follow with plain FRR — pe-b announces the VM's host route, and on the way back
//! pe-b withdraws it so the /24 that pe-a announces covers the VM again. Nothing
//! forwards traffic between the sites meanwhile: everything the ingress PE sends
//! towards the old site between the end of the pause and the FIB change is lost. That
//! loss, outside the VM's own pause, is what migroute exists to remove.
//!
//! Withdrawing (rather than pe-a announcing its own /32 and pe-b withdrawing) keeps
//! the FIB of the ingress PE identical at the start of every A→B run, and is what an
//! operator without migroute would do: the site that owns the subnet needs no host
//! route.

use std::process::Command;
use std::time::Duration;

use super::fib_watch::{Change, FibWatch, Prefix};
use super::{Direction, Mode, MoveRecord, Mover, Phase, ScenarioError, Site, Window};
use crate::cmd;
use crate::lab::Lab;
use crate::link_move::MoveOptions;
use crate::probe::unix_ns;

/// How long the ingress FIB may take to follow an announce or withdraw.
const FIB_TIMEOUT: Duration = Duration::from_secs(15);

/// The naive [`Mover`].
#[derive(Debug, Clone)]
pub struct NaiveMover {
    site: Site,
    ipv6: bool,
    fib_timeout: Duration,
}

impl NaiveMover {
    /// Announces 10.10.0.5/32 (and, with `ipv6`, 2001:db8:10::5/128 too) and measures
    /// the FIB of the probed family.
    pub fn new(site: Site, ipv6: bool) -> Self {
        NaiveMover {
            site,
            ipv6,
            fib_timeout: FIB_TIMEOUT,
        }
    }

    /// The host routes announced: IPv4 always, IPv6 with `--ipv6`.
    fn prefixes(&self) -> Vec<Prefix> {
        let mut p = vec![Prefix::host(self.site.vm_v4)];
        if self.ipv6 {
            p.push(Prefix::host(self.site.vm_v6));
        }
        p
    }

    /// The vtysh lines that announce (or, with `withdraw`, remove) the host routes on
    /// a PE: a static route to the VM on the DC interface (BGP's import check needs
    /// the exact prefix in the RIB), then a `network` statement.
    pub fn vtysh_lines(&self, withdraw: bool) -> Vec<String> {
        let no = if withdraw { "no " } else { "" };
        let dev = &self.site.pe_dc_interface;
        let statics: Vec<String> = self
            .prefixes()
            .iter()
            .map(|p| {
                let ip = if p.addr.is_ipv4() { "ip" } else { "ipv6" };
                format!("{no}{ip} route {p} {dev}")
            })
            .collect();
        let mut bgp = vec![format!("router bgp {}", self.site.asn)];
        for p in self.prefixes() {
            let af = if p.addr.is_ipv4() { "ipv4" } else { "ipv6" };
            bgp.push(format!("address-family {af} unicast"));
            bgp.push(format!("{no}network {p}"));
            bgp.push("exit-address-family".into());
        }
        bgp.push("exit".into());
        let mut lines = vec!["configure terminal".to_string()];
        if withdraw {
            // BGP first: the route leaves BGP before its RIB entry does.
            lines.extend(bgp);
            lines.extend(statics);
        } else {
            lines.extend(statics);
            lines.extend(bgp);
        }
        lines.push("end".into());
        lines
    }

    fn vtysh(&self, lab: &Lab, node: &str, withdraw: bool) -> Result<(), ScenarioError> {
        let mut c = Command::new("vtysh");
        c.arg("--vty_socket").arg(&lab.ctx(node).dir);
        for l in self.vtysh_lines(withdraw) {
            c.args(["-c", &l]);
        }
        let action = if withdraw { "withdraw" } else { "announce" };
        let out = cmd::output(format!("node `{node}`: {action}"), &mut c)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if text.contains("% ") {
            return Err(ScenarioError::Frr {
                node: node.to_string(),
                action: action.into(),
                detail: text.trim().to_string(),
            });
        }
        Ok(())
    }

    fn watched(&self) -> Prefix {
        Prefix::host(self.site.vm_addr(self.ipv6))
    }
}

/// Whether `prefix` is in `node`'s main table (one `ip route show exact`).
pub fn in_fib(lab: &Lab, node: &str, prefix: Prefix) -> Result<bool, ScenarioError> {
    let family = if prefix.addr.is_ipv4() { "-4" } else { "-6" };
    let out = lab.sh(
        node,
        &format!("ip {family} route show exact {prefix} table main"),
    )?;
    Ok(!out.trim().is_empty())
}

impl Mover for NaiveMover {
    fn mode(&self) -> Mode {
        Mode::Naive
    }

    fn prepare(&mut self, lab: &Lab) -> Result<(), ScenarioError> {
        let s = &self.site;
        if s.vm_at_b(lab) {
            lab.move_link_end(&s.dc_b, &s.port, &s.dc_a)?;
        }
        // Nothing of ours may be left on pe-b (a previous, interrupted scenario on a
        // kept-up lab): remove what is there, ignoring "not configured" refusals.
        let _ = self.vtysh(lab, &s.pe_b, true);
        let deadline = std::time::Instant::now() + self.fib_timeout;
        while in_fib(lab, &s.ingress, self.watched())? {
            if std::time::Instant::now() >= deadline {
                return Err(ScenarioError::Precondition(format!(
                    "node `{}` still routes {} as a host route after withdrawing it from `{}`",
                    s.ingress,
                    self.watched(),
                    s.pe_b
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn run_move(
        &mut self,
        lab: &Lab,
        direction: Direction,
        pause: Duration,
    ) -> Result<MoveRecord, ScenarioError> {
        let s = self.site.clone();
        let (from, to) = s.bridges(direction);
        let watch = FibWatch::open(lab, &s.ingress)?;
        let moved = lab.move_link_end_with(
            from,
            &s.port,
            to,
            MoveOptions {
                pause: (!pause.is_zero()).then_some(pause),
            },
        )?;
        let move_done = unix_ns();
        let withdraw = direction == Direction::BToA;
        let t0 = unix_ns();
        self.vtysh(lab, &s.pe_b, withdraw)?;
        let t1 = unix_ns();
        let change = if withdraw {
            Change::Removed
        } else {
            Change::Added
        };
        let t_fib = watch.wait(self.watched(), change, self.fib_timeout)?;
        let w = |a, b| Window {
            start_unix_ns: a,
            end_unix_ns: b,
        };
        let pause_w = w(moved.outage_start_unix_ns, moved.outage_end_unix_ns);
        let phase = |name: &str, window| Phase {
            name: name.into(),
            window,
        };
        Ok(MoveRecord {
            pause: pause_w,
            phases: vec![
                phase("pause", pause_w),
                phase("move", w(moved.outage_end_unix_ns, move_done)),
                phase(if withdraw { "withdraw" } else { "announce" }, w(t0, t1)),
                phase("convergence", w(t1, t_fib)),
            ],
            announce_to_ingress_fib_ms: Some(super::ns_to_ms(t_fib.saturating_sub(t0))),
            hypervisor: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_adds_static_then_network_and_withdraw_reverses_it() {
        let m = NaiveMover::new(Site::wan_migration(), false);
        assert_eq!(
            m.vtysh_lines(false),
            [
                "configure terminal",
                "ip route 10.10.0.5/32 eth3",
                "router bgp 65000",
                "address-family ipv4 unicast",
                "network 10.10.0.5/32",
                "exit-address-family",
                "exit",
                "end"
            ]
        );
        let w = m.vtysh_lines(true);
        assert_eq!(w[3], "no network 10.10.0.5/32");
        assert_eq!(w[6], "no ip route 10.10.0.5/32 eth3");
    }

    #[test]
    fn ipv6_announces_both_families_and_watches_the_v6_host_route() {
        let m = NaiveMover::new(Site::wan_migration(), true);
        let l = m.vtysh_lines(false);
        assert!(l.contains(&"ipv6 route 2001:db8:10::5/128 eth3".to_string()));
        assert!(l.contains(&"network 2001:db8:10::5/128".to_string()));
        assert!(l.contains(&"network 10.10.0.5/32".to_string()));
        assert_eq!(m.watched().to_string(), "2001:db8:10::5/128");
    }
}

//! The scenario runner: lab up, converge, then for each mode N measured moves with the
//! probe running around each one, the report, lab down. One probe per move (UDP and a
//! TCP connection, both started `lead` before the move) gives each run its own loss
//! and TCP outcome without slicing a long stream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::report::{Report, RunRecord};
use super::timeline::run_record;
use super::{Direction, Mode, Mover, NaiveMover, ScenarioError, ScenarioKind, Site};
use crate::lab::Lab;
use crate::probe::tcp::TcpConfig;
use crate::probe::udp::{RecvOptions, SendConfig};
use crate::probe::unix_ns;

/// What to run and how.
#[derive(Debug, Clone)]
pub struct ScenarioOptions {
    pub kind: ScenarioKind,
    /// Measured moves per mode (alternating A→B, B→A).
    pub runs: usize,
    /// The VM's stop-and-copy pause.
    pub pause: Duration,
    /// Probe over IPv6 (and announce the IPv6 host route too).
    pub ipv6: bool,
    pub rate_pps: u32,
    /// Probe traffic before the move starts (a clean baseline in every run).
    pub lead: Duration,
    /// Length of each run's probe; must cover lead + move + convergence + margin.
    pub probe_duration: Duration,
    /// Quiet time after each run's probe before the next one starts.
    pub settle: Duration,
    /// Leave the lab up at the end (never on error or cancel).
    pub keep_up: bool,
    /// For the lab's BGP sessions and initial routes.
    pub converge_timeout: Duration,
    pub udp_port: u16,
    pub tcp_port: u16,
}

impl ScenarioOptions {
    /// Defaults: 100 ms pause, 1000 pps, 4 s probe per run starting 800 ms before the
    /// move, 500 ms settle.
    pub fn new(kind: ScenarioKind, runs: usize) -> Self {
        ScenarioOptions {
            kind,
            runs,
            pause: Duration::from_millis(100),
            ipv6: false,
            rate_pps: 1000,
            lead: Duration::from_millis(800),
            probe_duration: Duration::from_secs(4),
            settle: Duration::from_millis(500),
            keep_up: false,
            converge_timeout: Duration::from_secs(60),
            udp_port: 7351,
            tcp_port: 7352,
        }
    }
}

/// Builds the mover of a mode this crate cannot build itself: migroute's lives in the
/// `migroute` crate (agents, orchestrator), which depends on this one, not the reverse.
pub type MoverFactory = Box<dyn Fn(&Site, &ScenarioOptions) -> Box<dyn Mover + Send> + Send + Sync>;

/// A scenario on a lab.
pub struct Scenario {
    pub lab: Lab,
    pub site: Site,
    pub opts: ScenarioOptions,
    migroute: Option<MoverFactory>,
}

impl Scenario {
    pub fn new(lab: Lab, site: Site, opts: ScenarioOptions) -> Self {
        Scenario {
            lab,
            site,
            opts,
            migroute: None,
        }
    }

    /// Supplies the migroute mode's mover; without it that mode is unavailable.
    pub fn with_migroute(mut self, factory: MoverFactory) -> Self {
        self.migroute = Some(factory);
        self
    }

    /// The movers of the scenario's modes, in order; fails for a mode that cannot run
    /// yet, before anything is brought up.
    pub fn movers(&self) -> Result<Vec<Box<dyn Mover + Send>>, ScenarioError> {
        self.opts
            .kind
            .modes()
            .iter()
            .map(|m| -> Result<Box<dyn Mover + Send>, ScenarioError> {
                match m {
                    Mode::Naive => Ok(Box::new(NaiveMover::new(self.site.clone(), self.opts.ipv6))),
                    Mode::Migroute if self.migroute.is_some() => {
                        let factory = self.migroute.as_ref().expect("checked");
                        Ok(factory(&self.site, &self.opts))
                    }
                    Mode::Migroute => Err(ScenarioError::ModeUnavailable {
                        mode: Mode::Migroute,
                        why: "the migroute mode needs the agent (on pe-a and pe-b) and the \
                              orchestrator, which only the `migroute` binary supplies \
                              (`migroute lab run`, `Scenario::with_migroute`); run \
                              `--scenario naive` for the baseline alone"
                            .into(),
                    }),
                }
            })
            .collect()
    }

    /// Brings the lab up, runs every mover's moves, and tears the lab down (unless
    /// `keep_up` and everything succeeded). `cancel` is checked between steps;
    /// `on_run` sees each run as soon as it is measured.
    pub fn run(
        &self,
        movers: &mut [Box<dyn Mover + Send>],
        cancel: &AtomicBool,
        on_run: &mut dyn FnMut(&RunRecord),
    ) -> Result<Report, ScenarioError> {
        let mut report = Report {
            scenario: self.opts.kind.name().into(),
            lab: self.lab.name().into(),
            family: if self.opts.ipv6 { "ipv6" } else { "ipv4" }.into(),
            rate_pps: self.opts.rate_pps,
            pause_ms: self.opts.pause.as_millis() as u64,
            runs_per_mode: self.opts.runs,
            started_unix_ns: unix_ns(),
            runs: Vec::new(),
            summary: Default::default(),
            disk: None,
        };
        self.lab.up()?;
        let result = self.converge().and_then(|()| {
            for mover in movers.iter_mut() {
                self.run_mode(mover.as_mut(), cancel, &mut report, on_run)?;
                report.disk = report.disk.take().or_else(|| mover.disk_report());
            }
            Ok(())
        });
        if result.is_err() || !self.opts.keep_up {
            let down = self.lab.down();
            result?;
            down?;
        }
        report.summarize();
        Ok(report)
    }

    fn converge(&self) -> Result<(), ScenarioError> {
        let (lab, s, t) = (&self.lab, &self.site, self.opts.converge_timeout);
        lab.wait_all_established(t)?;
        let (dc, client) = if self.opts.ipv6 {
            ("2001:db8:10::/64", "2001:db8:100::/64")
        } else {
            ("10.10.0.0/24", "10.0.0.0/24")
        };
        lab.wait_route(&s.ingress, dc, t)?;
        lab.wait_route(&s.pe_a, client, t)?;
        lab.wait_route(&s.pe_b, client, t)?;
        Ok(())
    }

    fn targets(&self) -> (SocketAddr, SocketAddr) {
        let a = self.site.vm_addr(self.opts.ipv6);
        (
            SocketAddr::new(a, self.opts.udp_port),
            SocketAddr::new(a, self.opts.tcp_port),
        )
    }

    fn run_mode(
        &self,
        mover: &mut dyn Mover,
        cancel: &AtomicBool,
        report: &mut Report,
        on_run: &mut dyn FnMut(&RunRecord),
    ) -> Result<(), ScenarioError> {
        let lab = &self.lab;
        mover.prepare(lab)?;
        // Warm-up: neighbour discovery along the path must not count as loss.
        let (udp_target, _) = self.targets();
        let warm = SendConfig::new(udp_target, Duration::from_millis(300));
        if self.site.vm_is_guest {
            lab.udp_echo_probe(&self.site.client, &warm, RecvOptions::default())?;
        } else {
            lab.udp_probe(
                &self.site.client,
                &self.site.vm,
                &warm,
                RecvOptions::default(),
            )?;
        }
        // A guest starts at site A (`Mover::prepare`); a lab node's port is wherever
        // the lab has it.
        let mut direction = if !self.site.vm_is_guest && self.site.vm_at_b(lab) {
            Direction::BToA
        } else {
            Direction::AToB
        };
        for _ in 0..self.opts.runs {
            if cancel.load(Ordering::SeqCst) {
                return Err(ScenarioError::Cancelled);
            }
            let record = self.one_run(mover, direction, report.runs.len())?;
            on_run(&record);
            report.runs.push(record);
            direction = direction.reverse();
            std::thread::sleep(self.opts.settle);
        }
        mover.finish(lab)
    }

    fn one_run(
        &self,
        mover: &mut dyn Mover,
        direction: Direction,
        index: usize,
    ) -> Result<RunRecord, ScenarioError> {
        let (udp_target, tcp_target) = self.targets();
        let (client, vm) = (self.site.client.clone(), self.site.vm.clone());
        let udp_cfg = SendConfig {
            target: udp_target,
            rate_pps: self.opts.rate_pps,
            duration: self.opts.probe_duration,
            size: 64,
        };
        let tcp_cfg = TcpConfig::new(tcp_target, self.opts.probe_duration);
        let (lab_u, lab_t) = (self.lab.clone(), self.lab.clone());
        let (c2, v2) = (client.clone(), vm.clone());
        let guest = self.site.vm_is_guest;
        // A guest reflects the stream (loss either way shows at its send time) and
        // runs its own TCP echo; a lab node hosts the receiver and the echo server.
        let udp = std::thread::spawn(move || {
            if guest {
                lab_u.udp_echo_probe(&client, &udp_cfg, RecvOptions::default())
            } else {
                lab_u.udp_probe(&client, &vm, &udp_cfg, RecvOptions::default())
            }
        });
        let tcp = std::thread::spawn(move || {
            if guest {
                lab_t.tcp_probe_remote(&c2, &tcp_cfg)
            } else {
                lab_t.tcp_probe(&c2, &v2, &tcp_cfg).map(|(t, _)| t)
            }
        });
        std::thread::sleep(self.opts.lead);
        let moved = mover.run_move(&self.lab, direction, self.opts.pause);
        // Join both probes even if the move failed: no thread outlives the run.
        let udp = join(udp);
        let tcp = join(tcp);
        let moved = moved?;
        let (_, udp) = udp??;
        let tcp = tcp??;
        Ok(run_record(
            index,
            mover.mode(),
            direction,
            &moved,
            &udp,
            &tcp,
        ))
    }
}

fn join<T>(h: std::thread::JoinHandle<T>) -> Result<T, ScenarioError> {
    h.join()
        .map_err(|_| ScenarioError::Precondition("a probe thread panicked".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    fn scenario(kind: ScenarioKind) -> Scenario {
        let t = Topology::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/wan-migration.clab.yml"
        ))
        .unwrap();
        Scenario::new(
            Lab::new(t),
            Site::wan_migration(),
            ScenarioOptions::new(kind, 2),
        )
    }

    #[test]
    fn planned_migration_without_a_migroute_mover_is_refused_naive_has_one_mover() {
        let err = scenario(ScenarioKind::PlannedMigration)
            .movers()
            .err()
            .expect("migroute mode is not available without its mover");
        assert!(
            matches!(
                err,
                ScenarioError::ModeUnavailable {
                    mode: Mode::Migroute,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("agent") && msg.contains("orchestrator"),
            "{msg}"
        );
        assert!(msg.contains("--scenario naive"), "{msg}");
        let movers = scenario(ScenarioKind::Naive).movers().unwrap();
        assert_eq!(movers.len(), 1);
        assert_eq!(movers[0].mode(), Mode::Naive);
    }

    /// Stands in for migroute's mover (which lives in the `migroute` crate).
    struct Stub;

    impl Mover for Stub {
        fn mode(&self) -> Mode {
            Mode::Migroute
        }
        fn prepare(&mut self, _: &Lab) -> Result<(), ScenarioError> {
            Ok(())
        }
        fn run_move(
            &mut self,
            _: &Lab,
            _: Direction,
            _: Duration,
        ) -> Result<super::super::MoveRecord, ScenarioError> {
            Err(ScenarioError::Precondition("stub".into()))
        }
    }

    #[test]
    fn a_supplied_migroute_mover_runs_before_naive_and_sees_the_options() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let s2 = seen.clone();
        let s =
            scenario(ScenarioKind::PlannedMigration).with_migroute(Box::new(move |site, opts| {
                *s2.lock().unwrap() = Some((site.ingress.clone(), opts.runs));
                Box::new(Stub)
            }));
        let modes: Vec<Mode> = s.movers().unwrap().iter().map(|m| m.mode()).collect();
        assert_eq!(modes, [Mode::Migroute, Mode::Naive]);
        assert_eq!(*seen.lock().unwrap(), Some(("pe-in".to_string(), 2)));
        // The naive scenario never builds it.
        let n = scenario(ScenarioKind::Naive).with_migroute(Box::new(
            |_, _| -> Box<dyn Mover + Send> { panic!("built for the naive scenario") },
        ));
        assert_eq!(n.movers().unwrap().len(), 1);
    }
}

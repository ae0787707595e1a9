//! The follower: turns what libvirt reports about one migration (job statistics,
//! lifecycle events on both hosts, the end of the migrate call) into the driver's
//! [`HypervisorEvent`]s, in contract order and each once. Sans-IO: the driver's thread
//! feeds [`Observation`]s and does what [`Follower::step`] asks.

use super::job::JobStats;
use crate::drivers::{HypervisorEvent, MigrationProgress};

/// Something the driver saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Observation {
    /// Job statistics polled at the source.
    Stats(Box<JobStats>),
    /// Source lifecycle SUSPENDED/MIGRATED: stop-and-copy began.
    SourceSuspended,
    /// Destination lifecycle RESUMED/MIGRATED: the VM runs there.
    DestinationResumed,
    /// The migration ended as far as the source can tell.
    Finished(Finish),
    /// Answer to [`Step::CheckDestination`]: whether the VM runs at the destination and
    /// no longer at the source.
    DestinationState {
        /// It runs at the destination only.
        running: bool,
    },
    /// [`Hypervisor::cancel`](crate::drivers::Hypervisor::cancel) asked to stop.
    CancelRequested,
}

/// How the source saw the migration end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The migrate call returned success.
    Ok,
    /// The migrate call failed with this reason.
    Err(String),
    /// The job we attached to is gone (or the source domain stopped, migrated): the
    /// destination's state tells how it went.
    Ended,
}

/// What the migration came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The VM runs at the destination.
    Completed,
    /// The VM runs at the source after the cancel.
    Cancelled,
    /// The VM runs at the source; libvirt's reason.
    Failed(String),
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Keep polling and listening.
    Wait,
    /// Look at the destination and report [`Observation::DestinationState`].
    CheckDestination,
    /// Done.
    Done(Outcome),
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Follower {
    last_progress: Option<MigrationProgress>,
    suspended: bool,
    resumed: bool,
    cancel_requested: bool,
    finish: Option<Finish>,
    outcome: Option<Outcome>,
}

impl Follower {
    /// Takes one observation, returns the events to report.
    pub(crate) fn handle(&mut self, obs: Observation) -> Vec<HypervisorEvent> {
        let mut out = Vec::new();
        if self.outcome.is_some() {
            return out;
        }
        match obs {
            Observation::Stats(s) => {
                // Progress belongs to pre-copy: nothing after the pause began.
                if !self.suspended && s.migrating_out() {
                    let p = s.progress();
                    if self.last_progress != Some(p) {
                        self.last_progress = Some(p);
                        out.push(HypervisorEvent::Progress(p));
                    }
                }
            }
            Observation::SourceSuspended => self.suspend(&mut out),
            Observation::DestinationResumed => self.resume(&mut out),
            Observation::Finished(f) => {
                if f == Finish::Ok && self.resumed {
                    self.complete(&mut out);
                } else {
                    self.finish = Some(f);
                }
            }
            Observation::DestinationState { running: true } => {
                self.resume(&mut out);
                self.complete(&mut out);
            }
            Observation::DestinationState { running: false } => {
                if self.cancel_requested {
                    self.outcome = Some(Outcome::Cancelled);
                } else {
                    let error = match &self.finish {
                        Some(Finish::Err(e)) => e.clone(),
                        Some(Finish::Ok) => {
                            "libvirt reported success but the domain does not run at the \
                             destination"
                                .into()
                        }
                        _ => "the migration job ended without the domain at the destination".into(),
                    };
                    out.push(HypervisorEvent::Failed {
                        error: error.clone(),
                    });
                    self.outcome = Some(Outcome::Failed(error));
                }
            }
            Observation::CancelRequested => self.cancel_requested = true,
        }
        out
    }

    /// What to do next.
    pub(crate) fn step(&self) -> Step {
        match (&self.outcome, &self.finish) {
            (Some(o), _) => Step::Done(o.clone()),
            (None, Some(_)) => Step::CheckDestination,
            (None, None) => Step::Wait,
        }
    }

    fn suspend(&mut self, out: &mut Vec<HypervisorEvent>) {
        if !self.suspended {
            self.suspended = true;
            out.push(HypervisorEvent::Suspended);
        }
    }

    fn resume(&mut self, out: &mut Vec<HypervisorEvent>) {
        self.suspend(out);
        if !self.resumed {
            self.resumed = true;
            out.push(HypervisorEvent::Resumed);
        }
    }

    fn complete(&mut self, out: &mut Vec<HypervisorEvent>) {
        self.resume(out);
        out.push(HypervisorEvent::Completed);
        self.outcome = Some(Outcome::Completed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HypervisorEvent as H;

    fn stats(processed: u64) -> JobStats {
        let mut s = JobStats {
            job_type: 1,
            ..JobStats::default()
        };
        s.set("operation", 5);
        s.set("data_total", 100);
        s.set("data_processed", processed);
        s.set("data_remaining", 100 - processed);
        s
    }

    fn feed(f: &mut Follower, obs: impl IntoIterator<Item = Observation>) -> Vec<H> {
        obs.into_iter().flat_map(|o| f.handle(o)).collect()
    }

    #[test]
    fn a_migration_reports_progress_suspend_resume_complete_in_order() {
        let mut f = Follower::default();
        let ev = feed(
            &mut f,
            [
                Observation::Stats(Box::new(stats(10))),
                Observation::Stats(Box::new(stats(10))),
                Observation::Stats(Box::new(stats(60))),
                Observation::SourceSuspended,
                Observation::Stats(Box::new(stats(99))),
                Observation::DestinationResumed,
                Observation::Finished(Finish::Ok),
            ],
        );
        let kinds: Vec<_> = ev.iter().map(std::mem::discriminant).collect();
        assert_eq!(ev.len(), 5, "{ev:?}");
        assert!(matches!(ev[0], H::Progress(p) if p.processed_bytes == 10));
        assert!(matches!(ev[1], H::Progress(p) if p.processed_bytes == 60));
        assert_eq!(ev[2..], [H::Suspended, H::Resumed, H::Completed]);
        assert_eq!(kinds.len(), 5);
        assert_eq!(f.step(), Step::Done(Outcome::Completed));
    }

    #[test]
    fn success_before_the_resume_event_checks_the_destination() {
        let mut f = Follower::default();
        assert!(feed(&mut f, [Observation::Finished(Finish::Ok)]).is_empty());
        assert_eq!(f.step(), Step::CheckDestination);
        let ev = feed(
            &mut f,
            [
                Observation::DestinationState { running: true },
                Observation::DestinationResumed,
            ],
        );
        assert_eq!(ev, [H::Suspended, H::Resumed, H::Completed]);
    }

    #[test]
    fn a_failed_call_with_the_vm_at_the_source_is_failed_and_a_cancel_is_not() {
        let mut f = Follower::default();
        let ev = feed(
            &mut f,
            [
                Observation::Finished(Finish::Err("boom".into())),
                Observation::DestinationState { running: false },
            ],
        );
        assert_eq!(
            ev,
            [H::Failed {
                error: "boom".into()
            }]
        );
        assert_eq!(f.step(), Step::Done(Outcome::Failed("boom".into())));

        let mut f = Follower::default();
        let ev = feed(
            &mut f,
            [
                Observation::CancelRequested,
                Observation::Finished(Finish::Err("operation aborted".into())),
                Observation::DestinationState { running: false },
            ],
        );
        assert!(ev.is_empty());
        assert_eq!(f.step(), Step::Done(Outcome::Cancelled));
    }

    #[test]
    fn an_attached_job_that_ended_at_the_destination_completes() {
        let mut f = Follower::default();
        let ev = feed(
            &mut f,
            [
                Observation::Stats(Box::new(stats(50))),
                Observation::Finished(Finish::Ended),
                Observation::DestinationState { running: true },
                Observation::Stats(Box::new(stats(70))),
            ],
        );
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[1..], [H::Suspended, H::Resumed, H::Completed]);
    }
}

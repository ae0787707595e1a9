//! libvirt job statistics (`virDomainGetJobStats`, the JOB_COMPLETED event) as plain
//! data, and what the orchestrator sees of them.

use crate::drivers::MigrationProgress;

/// libvirt's job types (virDomainJobType).
pub(crate) const JOB_NONE: i32 = 0;
/// The job ended well (virDomainJobType COMPLETED).
pub(crate) const JOB_COMPLETED: i32 = 3;
/// virDomainJobOperation MIGRATION_OUT.
pub(crate) const OPERATION_MIGRATION_OUT: u64 = 5;

/// The statistics of one job, as far as the driver uses them. Fields libvirt did not
/// report stay `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct JobStats {
    /// virDomainJobType: 0 none, 1 bounded, 2 unbounded, 3 completed, 4 failed,
    /// 5 cancelled.
    pub job_type: i32,
    /// virDomainJobOperation (5: outgoing migration).
    pub operation: Option<u64>,
    /// Milliseconds since the job started.
    pub time_elapsed_ms: Option<u64>,
    /// Milliseconds the guest was paused (completed migrations).
    pub downtime_ms: Option<u64>,
    /// Bytes to transfer in total (memory and disks).
    pub data_total: Option<u64>,
    /// Bytes transferred.
    pub data_processed: Option<u64>,
    /// Bytes still to transfer.
    pub data_remaining: Option<u64>,
    /// Guest memory to transfer, bytes.
    pub memory_total: Option<u64>,
    /// Memory bytes transferred.
    pub memory_processed: Option<u64>,
    /// Memory bytes still to transfer.
    pub memory_remaining: Option<u64>,
    /// Guest pages dirtied per second.
    pub memory_dirty_rate: Option<u64>,
    /// Pre-copy iteration.
    pub memory_iteration: Option<u64>,
    /// Disk bytes to transfer (copied disks).
    pub disk_total: Option<u64>,
    /// Disk bytes transferred.
    pub disk_processed: Option<u64>,
    /// Disk bytes still to transfer.
    pub disk_remaining: Option<u64>,
}

impl JobStats {
    /// Records one typed parameter by libvirt's name (VIR_DOMAIN_JOB_*); others are
    /// ignored.
    pub(crate) fn set(&mut self, name: &str, v: u64) {
        let slot = match name {
            "operation" => &mut self.operation,
            "time_elapsed" => &mut self.time_elapsed_ms,
            "downtime" => &mut self.downtime_ms,
            "data_total" => &mut self.data_total,
            "data_processed" => &mut self.data_processed,
            "data_remaining" => &mut self.data_remaining,
            "memory_total" => &mut self.memory_total,
            "memory_processed" => &mut self.memory_processed,
            "memory_remaining" => &mut self.memory_remaining,
            "memory_dirty_rate" => &mut self.memory_dirty_rate,
            "memory_iteration" => &mut self.memory_iteration,
            "disk_total" => &mut self.disk_total,
            "disk_processed" => &mut self.disk_processed,
            "disk_remaining" => &mut self.disk_remaining,
            _ => return,
        };
        *slot = Some(v);
    }

    /// Whether a job is running.
    pub fn active(&self) -> bool {
        self.job_type != JOB_NONE && self.job_type < JOB_COMPLETED
    }

    /// Whether the running job is an outgoing migration (libvirt before 3.3 did not
    /// report the operation: any active job then counts).
    pub fn migrating_out(&self) -> bool {
        self.active()
            && self
                .operation
                .is_none_or(|op| op == OPERATION_MIGRATION_OUT)
    }

    /// The orchestrator's view of the job.
    pub fn progress(&self) -> MigrationProgress {
        MigrationProgress {
            total_bytes: self.data_total.unwrap_or(0),
            processed_bytes: self.data_processed.unwrap_or(0),
            remaining_bytes: self.data_remaining.unwrap_or(0),
            iteration: self
                .memory_iteration
                .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
                .unwrap_or(0),
            dirty_rate_pages: self.memory_dirty_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_fields_and_progress() {
        let mut s = JobStats {
            job_type: 1,
            ..JobStats::default()
        };
        for (k, v) in [
            ("operation", 5),
            ("data_total", 1000),
            ("data_processed", 400),
            ("data_remaining", 600),
            ("memory_iteration", 2),
            ("memory_dirty_rate", 33),
            ("unknown_field", 9),
        ] {
            s.set(k, v);
        }
        assert!(s.migrating_out());
        let p = s.progress();
        assert_eq!(
            (p.total_bytes, p.processed_bytes, p.remaining_bytes),
            (1000, 400, 600)
        );
        assert_eq!((p.iteration, p.dirty_rate_pages), (2, Some(33)));
    }

    #[test]
    fn no_job_and_other_operations_are_not_migrations() {
        assert!(!JobStats::default().migrating_out());
        let mut s = JobStats {
            job_type: 2,
            ..JobStats::default()
        };
        s.set("operation", 6);
        assert!(s.active() && !s.migrating_out());
        let done = JobStats {
            job_type: JOB_COMPLETED,
            ..JobStats::default()
        };
        assert!(!done.active());
    }
}

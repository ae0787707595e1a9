//! What `query-block-jobs` says about a job, and the monitor connection the driver
//! keeps to each QEMU.

use crate::drivers::qmp::{Endpoint, QmpClient, QmpError};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// One entry of `query-block-jobs` (`BlockJobInfo`), the fields the driver reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JobInfo {
    /// The job id (QMP calls it `device` for historical reasons).
    #[serde(rename = "device")]
    pub id: String,
    /// `mirror`, `commit`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Bytes to copy, so far (grows as the guest dirties more).
    pub len: u64,
    /// Bytes copied.
    pub offset: u64,
    /// BLOCK_JOB_READY was emitted.
    pub ready: bool,
    /// `running`, `ready`, `concluded`, …
    pub status: String,
    /// Mirror in write-blocking mode with nothing left to copy (QEMU ≥ 8.2; absent on
    /// older QEMU).
    #[serde(rename = "actively-synced", default)]
    pub actively_synced: Option<bool>,
    /// Why the job failed, once it has.
    #[serde(default)]
    pub error: Option<String>,
}

/// Parses the `return` of `query-block-jobs`.
pub fn parse_jobs(v: Value) -> Result<Vec<JobInfo>, String> {
    serde_json::from_value(v).map_err(|e| format!("query-block-jobs answer: {e}"))
}

/// How long a QMP connection may take to greet us: a monitor that already serves
/// another client accepts the connection but stays silent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Every command the driver sends returns at once (jobs run in the background).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A lazily (re)connected QMP monitor.
pub struct Monitor {
    /// `source` or `destination`, for error messages.
    pub side: &'static str,
    endpoint: Endpoint,
    client: tokio::sync::Mutex<Option<QmpClient>>,
}

impl Monitor {
    pub fn new(side: &'static str, endpoint: Endpoint) -> Self {
        Monitor {
            side,
            endpoint,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// The live connection, opening a new one if there is none or it broke.
    pub async fn client(&self) -> Result<QmpClient, QmpError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(CONNECT_TIMEOUT, QmpClient::connect(&self.endpoint))
            .await
            .map_err(|_| QmpError::Connect {
                endpoint: self.endpoint.to_string(),
                reason: format!("no greeting within {CONNECT_TIMEOUT:?} (monitor busy?)"),
            })??;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs one command on the live connection.
    pub async fn execute(&self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let c = self.client().await?;
        tokio::time::timeout(COMMAND_TIMEOUT, c.execute(command, arguments))
            .await
            .map_err(|_| QmpError::Closed {
                endpoint: format!(
                    "{} (no answer to {command} within {COMMAND_TIMEOUT:?})",
                    self.endpoint
                ),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_job_info_of_qemu_10_and_7_2() {
        // qemu-storage-daemon 10.0.2, right after block-job-change to write-blocking.
        let v10 = json!([{"auto-finalize": true, "io-status": "ok", "device": "mj",
            "auto-dismiss": true, "busy": false, "len": 137363456, "offset": 137363456,
            "status": "ready", "paused": false, "speed": 0, "ready": true, "type": "mirror",
            "actively-synced": true}]);
        let jobs = parse_jobs(v10).unwrap();
        assert_eq!(jobs[0].actively_synced, Some(true));
        assert_eq!((jobs[0].offset, jobs[0].len), (137363456, 137363456));
        // QEMU 7.2 has no actively-synced.
        let v72 = json!([{"auto-finalize": true, "io-status": "ok", "device": "mj",
            "auto-dismiss": true, "busy": true, "len": 1048576, "offset": 0,
            "status": "running", "paused": false, "speed": 0, "ready": false, "type": "mirror"}]);
        let jobs = parse_jobs(v72).unwrap();
        assert_eq!(jobs[0].actively_synced, None);
        assert!(!jobs[0].ready);
        assert!(parse_jobs(json!({"device": "x"})).is_err());
    }
}

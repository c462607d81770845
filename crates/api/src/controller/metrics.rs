//! `PUT /metrics` and `FlushMetrics`, as Firecracker takes them: once, before the microVM
//! starts, an existing file or FIFO (opened for appending, non-blocking) that receives one
//! JSON object per line on each flush — on `FlushMetrics` and every
//! [`METRICS_FLUSH_INTERVAL`] from the server. Counters are Firecracker's API groups
//! (`get_api_requests`, `put_api_requests`, `patch_api_requests`) and count since the
//! previous flush, as Firecracker's shared incremental metrics do.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::balloon::BalloonRequest;
use super::output_file::{open_output_file, OutputFileError};
use super::{ApiReply, ApiRequest, ControlError, VmController};

/// How often the server flushes configured metrics on its own (Firecracker's period).
pub const METRICS_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// `PUT /metrics`: where metrics lines go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub metrics_path: String,
}

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("Reinitialization of metrics not allowed.")]
    AlreadyConfigured,
    #[error("metrics_path cannot be empty or contain a NUL byte.")]
    BadPath,
    #[error("Cannot open the metrics file {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("Failed to write metrics: {0}")]
    Write(#[from] std::io::Error),
}

impl From<OutputFileError> for MetricsError {
    fn from(e: OutputFileError) -> Self {
        match e {
            OutputFileError::BadPath => MetricsError::BadPath,
            OutputFileError::Open { path, reason } => MetricsError::Open { path, reason },
        }
    }
}

/// The open metrics file and the counts since the last flush.
#[derive(Debug)]
pub struct MetricsSink {
    file: File,
    counts: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
}

impl MetricsSink {
    /// Opens `path` as Firecracker does: it must exist (a regular file or a FIFO).
    pub fn open(path: &str) -> Result<Self, MetricsError> {
        let file = open_output_file(path)?;
        Ok(MetricsSink {
            file,
            counts: BTreeMap::new(),
        })
    }

    /// Counts a request under its [`metric_name`], failed or not.
    pub fn count(&mut self, metric: Option<Metric>, failed: bool) {
        let Some((group, field)) = metric else {
            return;
        };
        let fields = self.counts.entry(group).or_default();
        *fields.entry(field.0).or_default() += 1;
        if failed {
            if let Some(fails) = field.1 {
                *fields.entry(fails).or_default() += 1;
            }
        }
    }

    /// Writes one JSON line with the counts since the last flush, then starts over.
    pub fn flush(&mut self) -> Result<(), MetricsError> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut line = serde_json::Map::new();
        line.insert("utc_timestamp_ms".into(), serde_json::json!(now_ms));
        for (group, fields) in std::mem::take(&mut self.counts) {
            line.insert(group.into(), serde_json::json!(fields));
        }
        let mut text = serde_json::Value::Object(line).to_string();
        text.push('\n');
        self.file.write_all(text.as_bytes())?;
        Ok(())
    }
}

/// Firecracker's (count, fails) field names.
type Field = (&'static str, Option<&'static str>);
/// A metric group and its fields.
pub type Metric = (&'static str, Field);

/// Firecracker's metric group and (count, fails) fields for a request.
pub(super) fn metric_name(request: &ApiRequest) -> Option<Metric> {
    let put = |count, fails| Some(("put_api_requests", (count, Some(fails))));
    let patch = |count, fails| Some(("patch_api_requests", (count, Some(fails))));
    let get = |count| Some(("get_api_requests", (count, None)));
    match request {
        ApiRequest::GetInstanceInfo => get("instance_info_count"),
        ApiRequest::GetVersion => get("vmm_version_count"),
        ApiRequest::GetMachineConfig | ApiRequest::GetVmConfig => get("machine_cfg_count"),
        ApiRequest::PutMachineConfig(_) => put("machine_cfg_count", "machine_cfg_fails"),
        ApiRequest::PatchMachineConfig(_) => patch("machine_cfg_count", "machine_cfg_fails"),
        ApiRequest::PutBootSource(_) => put("boot_source_count", "boot_source_fails"),
        ApiRequest::PutDrive(_) => put("drive_count", "drive_fails"),
        ApiRequest::PutNetworkInterface(_) => put("network_count", "network_fails"),
        ApiRequest::PutVsock(_) => put("vsock_count", "vsock_fails"),
        ApiRequest::PutMetrics(_) => put("metrics_count", "metrics_fails"),
        ApiRequest::PutLogger(_) => put("logger_count", "logger_fails"),
        ApiRequest::PatchDrive(_) => patch("drive_count", "drive_fails"),
        ApiRequest::PatchNetworkInterface(_) => patch("network_count", "network_fails"),
        ApiRequest::Action(_) => put("actions_count", "actions_fails"),
        ApiRequest::PatchVmState(_) => None,
        ApiRequest::CreateSnapshot(_) => put("snapshot_create_count", "snapshot_create_fails"),
        ApiRequest::LoadSnapshot(_) => put("snapshot_load_count", "snapshot_load_fails"),
        ApiRequest::GetMmds => get("mmds_count"),
        ApiRequest::PutMmds(_) | ApiRequest::PutMmdsConfig(_) => put("mmds_count", "mmds_fails"),
        ApiRequest::PatchMmds(_) => patch("mmds_count", "mmds_fails"),
        ApiRequest::Balloon(request) => balloon_metric(request),
        // vessel's extension: Firecracker has no counter for it.
        ApiRequest::Forward(_) => None,
        ApiRequest::SendMigration(_) | ApiRequest::GetMigration | ApiRequest::CancelMigration => {
            None
        }
    }
}

/// Firecracker's counters of the balloon requests.
fn balloon_metric(request: &BalloonRequest) -> Option<Metric> {
    match request {
        BalloonRequest::Put(_) => {
            Some(("put_api_requests", ("balloon_count", Some("balloon_fails"))))
        }
        BalloonRequest::Patch(_) | BalloonRequest::PatchStatistics(_) => Some((
            "patch_api_requests",
            ("balloon_count", Some("balloon_fails")),
        )),
        BalloonRequest::Get | BalloonRequest::GetStatistics => {
            Some(("get_api_requests", ("balloon_count", None)))
        }
    }
}

impl VmController {
    /// `PUT /metrics`: pre-boot, once.
    pub(super) fn set_metrics(&mut self, config: &MetricsConfig) -> Result<ApiReply, ControlError> {
        self.require_not_started()?;
        if self.metrics.is_some() {
            return Err(MetricsError::AlreadyConfigured.into());
        }
        self.metrics = Some(MetricsSink::open(&config.metrics_path)?);
        Ok(ApiReply::NoContent)
    }

    /// `FlushMetrics`: the configured sink, or the backend's when none is.
    pub(super) fn flush_metrics(&mut self) -> Result<ApiReply, ControlError> {
        match &mut self.metrics {
            Some(sink) => sink.flush()?,
            None => self
                .backend
                .flush_metrics()
                .map_err(ControlError::FlushMetrics)?,
        }
        Ok(ApiReply::NoContent)
    }

    /// The server's periodic flush: writes a line when metrics are configured.
    pub fn flush_metrics_periodically(&mut self) {
        if let Some(sink) = &mut self.metrics {
            if let Err(e) = sink.flush() {
                tracing::warn!("periodic metrics flush: {e}");
            }
        }
    }

    /// Counts a handled request in the configured metrics.
    pub(super) fn count_request(&mut self, metric: Option<Metric>, failed: bool) {
        if let Some(sink) = &mut self.metrics {
            sink.count(metric, failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ActionType;

    #[test]
    fn lines_count_requests_since_the_last_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        assert!(matches!(
            MetricsSink::open(path.to_str().unwrap()),
            Err(MetricsError::Open { .. })
        ));
        std::fs::write(&path, "").unwrap();
        let mut sink = MetricsSink::open(path.to_str().unwrap()).unwrap();
        sink.count(metric_name(&ApiRequest::GetInstanceInfo), false);
        let start = ApiRequest::Action(ActionType::InstanceStart);
        sink.count(metric_name(&start), true);
        sink.flush().unwrap();
        sink.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0]["utc_timestamp_ms"].as_u64().unwrap() > 0);
        assert_eq!(lines[0]["get_api_requests"]["instance_info_count"], 1);
        assert_eq!(lines[0]["put_api_requests"]["actions_count"], 1);
        assert_eq!(lines[0]["put_api_requests"]["actions_fails"], 1);
        assert!(lines[1].get("put_api_requests").is_none());
    }

    #[test]
    fn directories_and_bad_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            MetricsSink::open(dir.path().to_str().unwrap()),
            Err(MetricsError::Open { .. })
        ));
        assert!(matches!(MetricsSink::open(""), Err(MetricsError::BadPath)));
    }
}

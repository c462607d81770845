//! `PUT /logger`, as Firecracker takes it: once, before the microVM starts, the VMM's log
//! goes to `log_path` (an existing file or FIFO, opened for appending without blocking),
//! at `level`, each line with its level (`show_level`) and source location
//! (`show_log_origin`) if asked, and only from `module` (a module path prefix) if given.
//! The API checks and opens the file; the backend points its log (vessel's `tracing`
//! subscriber) at it.

use std::fs::File;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::output_file::{open_output_file, OutputFileError};
use super::{ApiReply, ControlError, VmController};

/// Firecracker's log levels (any capitalisation; `Warn` too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    #[serde(alias = "off", alias = "OFF")]
    Off,
    #[serde(alias = "error", alias = "ERROR")]
    Error,
    #[serde(
        alias = "warning",
        alias = "WARNING",
        alias = "Warn",
        alias = "warn",
        alias = "WARN"
    )]
    Warning,
    #[serde(alias = "info", alias = "INFO")]
    Info,
    #[serde(alias = "debug", alias = "DEBUG")]
    Debug,
    #[serde(alias = "trace", alias = "TRACE")]
    Trace,
}

/// `PUT /logger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    /// Where log lines go; the VMM's standard error when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// Most verbose level written; `Info` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default)]
    pub show_level: bool,
    #[serde(default)]
    pub show_log_origin: bool,
    /// Only events of this module path and below (e.g. `virtio::blk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

impl LoggerConfig {
    /// The level in force.
    pub fn effective_level(&self) -> LogLevel {
        self.level.unwrap_or(LogLevel::Info)
    }
}

#[derive(Debug, Error)]
pub enum LoggerError {
    #[error("Reinitialization of logger not allowed.")]
    AlreadyConfigured,
    #[error("log_path cannot be empty or contain a NUL byte.")]
    BadPath,
    #[error("module cannot be empty or contain whitespace or a NUL byte.")]
    BadModule,
    #[error("Cannot open the log file {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("Failed to configure the logger: {0}")]
    Backend(crate::BackendError),
}

impl From<OutputFileError> for LoggerError {
    fn from(e: OutputFileError) -> Self {
        match e {
            OutputFileError::BadPath => LoggerError::BadPath,
            OutputFileError::Open { path, reason } => LoggerError::Open { path, reason },
        }
    }
}

/// Opens `path` as Firecracker does: it must exist (a regular file or a FIFO).
pub fn open_log_file(path: &str) -> Result<File, LoggerError> {
    Ok(open_output_file(path)?)
}

impl VmController {
    /// `PUT /logger`: pre-boot, once.
    pub(super) fn set_logger(&mut self, config: &LoggerConfig) -> Result<ApiReply, ControlError> {
        self.require_not_started()?;
        if self.logger_configured {
            return Err(LoggerError::AlreadyConfigured.into());
        }
        if let Some(module) = &config.module {
            if module.is_empty() || module.contains(|c: char| c.is_whitespace() || c == '\0') {
                return Err(LoggerError::BadModule.into());
            }
        }
        let file = config.log_path.as_deref().map(open_log_file).transpose()?;
        self.backend
            .configure_logger(file, config)
            .map_err(LoggerError::Backend)?;
        self.logger_configured = true;
        Ok(ApiReply::NoContent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_take_firecracker_spellings() {
        for (text, level) in [
            ("\"Warning\"", LogLevel::Warning),
            ("\"warn\"", LogLevel::Warning),
            ("\"DEBUG\"", LogLevel::Debug),
            ("\"Off\"", LogLevel::Off),
        ] {
            assert_eq!(serde_json::from_str::<LogLevel>(text).unwrap(), level);
        }
        assert!(serde_json::from_str::<LogLevel>("\"Loud\"").is_err());
        let cfg: LoggerConfig = serde_json::from_str(r#"{"log_path": "/x"}"#).unwrap();
        assert_eq!(cfg.effective_level(), LogLevel::Info);
        assert!(!cfg.show_level && !cfg.show_log_origin);
    }

    #[test]
    fn only_existing_files_and_fifos() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        assert!(matches!(
            open_log_file(path.to_str().unwrap()),
            Err(LoggerError::Open { .. })
        ));
        std::fs::write(&path, "").unwrap();
        assert!(open_log_file(path.to_str().unwrap()).is_ok());
        assert!(matches!(
            open_log_file(dir.path().to_str().unwrap()),
            Err(LoggerError::Open { .. })
        ));
        assert!(matches!(open_log_file(""), Err(LoggerError::BadPath)));
    }
}

//! The VMM's log: `tracing` events of the library crates go to stderr (for a VM started with
//! `vessel start`, its vmm.log, which is the VMM process's stderr) as
//! `vessel: [warning: |error: ]MESSAGE`, as vessel wrote them before it had levels;
//! `--log-level` sets the most verbose level written (default info). User-facing messages
//! of the CLI itself are plain `eprintln!`s and are always written.
//!
//! Firecracker's `PUT /logger` ([`configure`]) changes the log of a running process: its
//! file (an existing file or FIFO instead of stderr), level, a module filter, and whether
//! lines show their level (`[LEVEL] `) and source location (`[file:line] `).

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, OnceLock, RwLock};

use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::DynFilterFn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// `--log-level`: the most verbose level written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn level(self) -> Level {
        match self {
            LogLevel::Error => Level::ERROR,
            LogLevel::Warn => Level::WARN,
            LogLevel::Info => Level::INFO,
            LogLevel::Debug => Level::DEBUG,
            LogLevel::Trace => Level::TRACE,
        }
    }

    /// The value of `--log-level` that selects this level.
    pub fn as_arg(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

static LEVEL: OnceLock<LogLevel> = OnceLock::new();

/// What the log writes, where; changed at run time by [`configure`].
#[derive(Clone, Default)]
struct Settings {
    /// Most verbose level written; `None` writes nothing (Firecracker's `Off`).
    level: Option<Level>,
    show_level: bool,
    show_origin: bool,
    /// Only events whose target is this module path or below it.
    module: Option<String>,
    /// Lines go here instead of stderr.
    file: Option<Arc<File>>,
}

type SharedSettings = Arc<RwLock<Settings>>;

static SETTINGS: OnceLock<SharedSettings> = OnceLock::new();

fn read(settings: &SharedSettings) -> std::sync::RwLockReadGuard<'_, Settings> {
    settings.read().unwrap_or_else(|p| p.into_inner())
}

impl Settings {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        let level_ok = self.level.is_some_and(|max| *meta.level() <= max);
        let module_ok = self.module.as_deref().is_none_or(|m| {
            let target = meta.target();
            target == m
                || target
                    .strip_prefix(m)
                    .is_some_and(|rest| rest.starts_with("::"))
        });
        level_ok && module_ok
    }
}

/// Writes a line to the configured file, or stderr. A full FIFO drops the line (the
/// file is non-blocking, as Firecracker opens it) rather than stalling the VMM.
struct LineWriter(Option<Arc<File>>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.0 {
            Some(file) => match (&**file).write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(buf.len()),
                other => other,
            },
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `PUT /logger`: from now on log to `file` (stderr when `None`) as `config` says.
pub fn configure(file: Option<File>, config: &api::LoggerConfig) -> Result<(), String> {
    let Some(settings) = SETTINGS.get() else {
        return Err("the log is not initialised".into());
    };
    let level = match config.effective_level() {
        api::LogLevel::Off => None,
        api::LogLevel::Error => Some(Level::ERROR),
        api::LogLevel::Warning => Some(Level::WARN),
        api::LogLevel::Info => Some(Level::INFO),
        api::LogLevel::Debug => Some(Level::DEBUG),
        api::LogLevel::Trace => Some(Level::TRACE),
    };
    *settings.write().unwrap_or_else(|p| p.into_inner()) = Settings {
        level,
        show_level: config.show_level,
        show_origin: config.show_log_origin,
        module: config.module.clone(),
        file: file.map(Arc::new),
    };
    // Callsites cached as disabled (or enabled) under the old level must ask again.
    tracing::callsite::rebuild_interest_cache();
    Ok(())
}

/// The level [`init`] installed (for the VMM processes vessel starts).
pub fn level() -> LogLevel {
    LEVEL.get().copied().unwrap_or_default()
}

/// Lines as vessel wrote them before it had levels: `vessel: ` and the message; warnings
/// and errors say so, debug and trace events name their module. A logger configured over
/// the API may add `[LEVEL] ` and `[file:line] ` after `vessel: `.
struct VesselFormat(SharedSettings);

impl<S, N> FormatEvent<S, N> for VesselFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let (show_level, show_origin) = {
            let s = read(&self.0);
            (s.show_level, s.show_origin)
        };
        write!(writer, "vessel: ")?;
        if show_level {
            write!(writer, "[{}] ", meta.level())?;
        }
        if show_origin {
            let file = meta.file().unwrap_or("?");
            write!(writer, "[{file}:{}] ", meta.line().unwrap_or(0))?;
        }
        match *meta.level() {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            Level::INFO => {}
            _ => write!(
                writer,
                "{}: {}: ",
                meta.level().as_str().to_lowercase(),
                meta.target()
            )?,
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// A subscriber writing what `settings` enables, as they say, to `writer` (`None`) or
/// their file.
fn subscriber<W>(settings: SharedSettings, writer: W) -> impl Subscriber + Send + Sync
where
    W: Fn() -> Box<dyn Write> + Send + Sync + 'static,
{
    let for_writer = settings.clone();
    let make_writer = move || -> Box<dyn Write> {
        match read(&for_writer).file.clone() {
            Some(file) => Box::new(LineWriter(Some(file))),
            None => writer(),
        }
    };
    let for_events = settings.clone();
    let for_callsites = settings.clone();
    let filter = DynFilterFn::new(move |meta, _| read(&for_events).enabled(meta))
        .with_callsite_filter(move |meta| {
            if read(&for_callsites).enabled(meta) {
                tracing::subscriber::Interest::always()
            } else {
                tracing::subscriber::Interest::never()
            }
        });
    let layer = tracing_subscriber::fmt::layer()
        .event_format(VesselFormat(settings))
        .with_writer(make_writer)
        .with_filter(filter);
    tracing_subscriber::registry().with(layer)
}

fn settings_for(level: LogLevel) -> SharedSettings {
    Arc::new(RwLock::new(Settings {
        level: Some(level.level()),
        ..Settings::default()
    }))
}

/// Install the process's subscriber: events up to `level` to stderr.
pub fn init(level: LogLevel) {
    let _ = LEVEL.set(level);
    let settings = settings_for(level);
    let _ = SETTINGS.set(settings.clone());
    let stderr = || -> Box<dyn Write> { Box::new(LineWriter(None)) };
    // Fails only if a subscriber is installed already, which main does not do twice.
    let _ = tracing::subscriber::set_global_default(subscriber(settings, stderr));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(level: LogLevel, emit: impl FnOnce()) -> String {
        logged_with(settings_for(level), emit)
    }

    fn logged_with(settings: SharedSettings, emit: impl FnOnce()) -> String {
        let buf = Buffer::default();
        let out = buf.clone();
        let writer = move || -> Box<dyn Write> { Box::new(out.clone()) };
        tracing::subscriber::with_default(subscriber(settings, writer), emit);
        let text = buf.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn api_settings_add_level_and_origin_and_filter_modules() {
        let settings = settings_for(LogLevel::Debug);
        {
            let mut s = settings.write().unwrap();
            s.show_level = true;
            s.show_origin = true;
            s.module = Some("vessel::logging".into());
        }
        let text = logged_with(settings.clone(), || {
            tracing::debug!(target: "vessel::logging::x", "kept");
            tracing::warn!(target: "vessel::loggingx", "other module");
            tracing::error!(target: "virtio::blk", "not this module");
        });
        assert!(
            text.starts_with("vessel: [DEBUG] [src/logging.rs:"),
            "{text}"
        );
        assert!(
            text.ends_with("] debug: vessel::logging::x: kept\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
        settings.write().unwrap().level = None;
        assert_eq!(logged_with(settings, || tracing::error!("off")), "");
    }

    #[test]
    fn lines_read_as_before_levels_with_warnings_and_errors_named() {
        let text = logged(LogLevel::Info, || {
            tracing::info!("emulated `int3` for the guest (the host's KVM could not)");
            tracing::warn!("cannot move BAR {} of slot {}", 0, 3);
            tracing::error!("I/O thread: epoll_wait: {}", "EBADF");
            tracing::debug!("not written at info");
        });
        assert_eq!(
            text,
            "vessel: emulated `int3` for the guest (the host's KVM could not)\n\
             vessel: warning: cannot move BAR 0 of slot 3\n\
             vessel: error: I/O thread: epoll_wait: EBADF\n"
        );
    }

    #[test]
    fn the_level_filters_and_debug_lines_name_their_module() {
        let text = logged(LogLevel::Warn, || {
            tracing::info!("hidden");
            tracing::warn!("shown");
        });
        assert_eq!(text, "vessel: warning: shown\n");
        let text = logged(LogLevel::Trace, || tracing::debug!("every exit"));
        assert_eq!(text, "vessel: debug: vessel::logging::tests: every exit\n");
    }

    #[test]
    fn levels_round_trip_through_their_argument() {
        use clap::ValueEnum;
        for level in LogLevel::value_variants() {
            assert_eq!(LogLevel::from_str(level.as_arg(), false), Ok(*level));
        }
    }
}

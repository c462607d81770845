//! The VMM's log: `tracing` events of the library crates go to stderr (for a VM started with
//! `vessel start`, its vmm.log, which is the VMM process's stderr) as
//! `vessel: [warning: |error: ]MESSAGE`, as vessel wrote them before it had levels;
//! `--log-level` sets the most verbose level written (default info). User-facing messages
//! of the CLI itself are plain `eprintln!`s and are always written.

use std::fmt;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

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

/// The level [`init`] installed (for the VMM processes vessel starts).
pub fn level() -> LogLevel {
    LEVEL.get().copied().unwrap_or_default()
}

/// Lines as vessel wrote them before it had levels: `vessel: ` and the message; warnings
/// and errors say so, debug and trace events name their module.
struct VesselFormat;

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
        write!(writer, "vessel: ")?;
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

fn subscriber<W>(level: LogLevel, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_max_level(level.level())
        .event_format(VesselFormat)
        .with_writer(writer)
        .finish()
}

/// Install the process's subscriber: events up to `level` to stderr.
pub fn init(level: LogLevel) {
    let _ = LEVEL.set(level);
    // Fails only if a subscriber is installed already, which main does not do twice.
    let _ = tracing::subscriber::set_global_default(subscriber(level, std::io::stderr));
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
        let buf = Buffer::default();
        let out = buf.clone();
        tracing::subscriber::with_default(subscriber(level, move || out.clone()), emit);
        let text = buf.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
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

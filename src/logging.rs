//! Logging: tracing to non-blocking daily files plus an in-memory ring for the screen's log pane.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Wall-clock time, ms since the epoch.
    pub time_ms: i64,
    /// Severity.
    pub level: Level,
    /// Module path that logged it.
    pub target: String,
    /// The message and its fields.
    pub message: String,
}

/// Bounded ring of recent log lines shared between loggers and the screen.
#[derive(Debug, Clone)]
pub struct LogRing {
    inner: Arc<Mutex<VecDeque<LogLine>>>,
    capacity: usize,
}

impl LogRing {
    /// A ring keeping at most `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(4096)))),
            capacity: capacity.max(1),
        }
    }

    /// Appends a line, evicting the oldest when full.
    pub fn push(&self, line: LogLine) {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == self.capacity {
            q.pop_front();
        }
        q.push_back(line);
    }

    /// Copies out the lines; `None` when a writer holds the lock right now, so the render
    /// path never waits on the data path (it keeps showing its previous copy).
    pub fn try_snapshot(&self) -> Option<Vec<LogLine>> {
        match self.inner.try_lock() {
            Ok(q) => Some(q.iter().cloned().collect()),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                Some(p.into_inner().iter().cloned().collect())
            }
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Number of lines held.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// True when no line is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct RingLayer {
    ring: LogRing,
}

#[derive(Default)]
struct MessageVisitor {
    text: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.push_str(value);
        } else {
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        self.ring.push(LogLine {
            time_ms: now_ms(),
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            message: v.text,
        });
    }
}

/// Wall-clock time in ms since the UNIX epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Keeps the background log writer alive; dropping it flushes the file.
pub struct LogGuard {
    _file: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Where log output goes besides the ring.
pub enum LogOutput<'a> {
    /// Daily rolling files in this directory.
    Files(&'a Path),
    /// Standard error (headless commands).
    Stderr,
}

/// Whether log lines on stderr get colour codes: only on a terminal, and never when
/// `NO_COLOR` is set to anything non-empty (<https://no-color.org>). A file or a pipe gets
/// plain text.
pub fn colour_stderr(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber: the ring always, plus files or stderr.
pub fn init(filter: &str, output: LogOutput<'_>, ring: &LogRing) -> anyhow::Result<LogGuard> {
    let env_filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("logging.level {filter:?} is not a valid filter: {e}"))?;
    let ring_layer = RingLayer { ring: ring.clone() };
    match output {
        LogOutput::Files(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create log directory {}: {e}", dir.display())
            })?;
            let appender = tracing_appender::rolling::daily(dir, "mmtrader.log");
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let file_layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false);
            tracing_subscriber::registry()
                .with(env_filter)
                .with(ring_layer)
                .with(file_layer)
                .try_init()
                .map_err(|e| anyhow::anyhow!("logging already initialised: {e}"))?;
            Ok(LogGuard { _file: Some(guard) })
        }
        LogOutput::Stderr => {
            let ansi = colour_stderr(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR").as_deref(),
            );
            let err_layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi);
            tracing_subscriber::registry()
                .with(env_filter)
                .with(ring_layer)
                .with(err_layer)
                .try_init()
                .map_err(|e| anyhow::anyhow!("logging already initialised: {e}"))?;
            Ok(LogGuard { _file: None })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour_stderr(true, None));
        assert!(colour_stderr(true, Some(OsStr::new(""))));
        assert!(!colour_stderr(true, Some(OsStr::new("1"))));
        assert!(
            !colour_stderr(false, None),
            "a file or a pipe gets plain text"
        );
    }

    #[test]
    fn ring_is_bounded_and_keeps_newest() {
        let ring = LogRing::new(3);
        for i in 0..5 {
            ring.push(LogLine {
                time_ms: i,
                level: Level::INFO,
                target: "t".into(),
                message: format!("m{i}"),
            });
        }
        let lines = ring.try_snapshot().unwrap();
        assert_eq!(
            lines.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
            ["m2", "m3", "m4"]
        );
    }

    #[test]
    fn layer_captures_message_and_fields() {
        let ring = LogRing::new(10);
        let subscriber = tracing_subscriber::registry().with(RingLayer { ring: ring.clone() });
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(symbol = "ETHUSDT", "resync started");
        });
        let lines = ring.try_snapshot().unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].level, Level::WARN);
        assert_eq!(lines[0].message, "resync started symbol=ETHUSDT");
    }
}

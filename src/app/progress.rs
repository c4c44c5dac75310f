//! Progress of long commands (`train`, `evaluate`): a bar on a terminal; off a terminal (piped,
//! redirected, in the background) plain lines on stderr, one at least every
//! [`PROGRESS_EVERY`] even while a single unit (an epoch) runs, from a ticker thread — a bar
//! that is not drawn would leave such a run silent until it ends.

use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Longest silence off a terminal (the issue allows 10 s; half leaves room for a slow write).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Shortest gap between two lines printed by updates (the ticker still keeps the maximum).
const MIN_GAP: Duration = Duration::from_secs(1);

struct State {
    what: String,
    pos: u64,
    total: u64,
    msg: String,
    start: Instant,
    /// The last line of any kind (the ticker's clock).
    last_line: Option<Instant>,
    /// The last line an update printed: ticker lines do not hold back a new unit's line.
    last_update: Option<Instant>,
    sink: Box<dyn Write + Send>,
}

impl State {
    fn line(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.start);
        let eta = if self.pos > 0 && self.total >= self.pos {
            let per = elapsed.as_secs_f64() / self.pos as f64;
            fmt_secs(per * (self.total - self.pos) as f64)
        } else {
            "unknown".to_string()
        };
        let msg = if self.msg.is_empty() {
            String::new()
        } else {
            format!(" {}", self.msg)
        };
        // A failed write to stderr has nowhere better to go.
        let _ = writeln!(
            self.sink,
            "{} {}/{}{msg} (elapsed {}, ETA {eta})",
            self.what,
            self.pos,
            self.total,
            fmt_secs(elapsed.as_secs_f64())
        );
        let _ = self.sink.flush();
        self.last_line = Some(now);
    }
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A progress display; see the module docs.
pub struct Progress {
    bar: Option<ProgressBar>,
    state: Arc<Mutex<State>>,
    stop: Option<mpsc::Sender<()>>,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// Progress of `what` over `total` units: a bar when stderr is a terminal, else lines on
    /// stderr.
    pub fn new(what: &str, total: u64) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, ETA {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(what.to_string());
            Self::build(what, total, Some(bar), None, Box::new(std::io::sink()))
        } else {
            Self::lines(what, total, PROGRESS_EVERY, Box::new(std::io::stderr()))
        }
    }

    /// Line progress into `sink`, at least one line every `every`.
    pub fn lines(what: &str, total: u64, every: Duration, sink: Box<dyn Write + Send>) -> Self {
        Self::build(what, total, None, Some(every), sink)
    }

    fn build(
        what: &str,
        total: u64,
        bar: Option<ProgressBar>,
        every: Option<Duration>,
        sink: Box<dyn Write + Send>,
    ) -> Self {
        let state = Arc::new(Mutex::new(State {
            what: what.to_string(),
            pos: 0,
            total,
            msg: String::new(),
            start: Instant::now(),
            last_line: None,
            last_update: None,
            sink,
        }));
        let (stop, ticker) = match every {
            Some(every) => {
                let (tx, rx) = mpsc::channel::<()>();
                let st = Arc::clone(&state);
                let tick = every / 4;
                let handle = std::thread::Builder::new()
                    .name("mmtrader-progress".into())
                    .spawn(move || {
                        // Wakes a few times per period so the gap never exceeds `every`.
                        while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(tick) {
                            let mut s = lock(&st);
                            let now = Instant::now();
                            let since = s.last_line.unwrap_or(s.start);
                            if now.duration_since(since) + tick >= every {
                                s.line(now);
                            }
                        }
                    })
                    .ok();
                (Some(tx), handle)
            }
            None => (None, None),
        };
        Self {
            bar,
            state,
            stop,
            ticker,
        }
    }

    /// Now at unit `pos` of `total`, with `msg` (metrics); prints a line off a terminal when
    /// the position moved and the last line is at least a second old.
    pub fn update(&self, pos: u64, total: u64, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(pos);
            bar.set_message(msg.to_string());
            return;
        }
        let mut s = lock(&self.state);
        let moved = s.pos != pos;
        s.pos = pos;
        s.total = total;
        s.msg = msg.to_string();
        let now = Instant::now();
        if moved
            && s.last_update
                .is_none_or(|t| now.duration_since(t) >= MIN_GAP)
        {
            s.line(now);
            s.last_update = Some(now);
        }
    }

    /// Ends at unit `done`, which also becomes the total (early stopping ends a run before its
    /// planned units), with a last line or a finished bar.
    pub fn finish(mut self, done: u64, msg: &str) {
        self.halt();
        if let Some(bar) = &self.bar {
            bar.set_length(done);
            bar.set_position(done);
            bar.finish_with_message(msg.to_string());
            return;
        }
        let mut s = lock(&self.state);
        s.pos = done;
        s.total = done;
        s.msg = msg.to_string();
        s.line(Instant::now());
    }

    fn halt(&mut self) {
        self.stop.take();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn off_a_terminal_lines_come_while_a_unit_runs_and_the_total_follows_early_stopping() {
        let buf = Buf::default();
        let p = Progress::lines(
            "cnn epoch",
            20,
            Duration::from_millis(80),
            Box::new(buf.clone()),
        );
        // The ticker speaks while the data are prepared; the first epoch still gets its line.
        std::thread::sleep(Duration::from_millis(150));
        p.update(1, 20, "loss 0.5000 val 0.6000");
        // At once, not at the next tick.
        assert!(buf.text().contains("cnn epoch 1/20 loss"), "{}", buf.text());
        // One long "epoch" without updates: the ticker keeps talking.
        std::thread::sleep(Duration::from_millis(500));
        let text = buf.text();
        let lines: Vec<&str> = text.lines().collect();
        let first = lines
            .iter()
            .position(|l| l.starts_with("cnn epoch 1/20"))
            .unwrap_or_else(|| panic!("no line for epoch 1: {text}"));
        assert!(first >= 1, "the ticker spoke before epoch 1: {text}");
        assert!(
            lines[..first]
                .iter()
                .all(|l| l.starts_with("cnn epoch 0/20 (elapsed")),
            "{text}"
        );
        assert!(
            lines[first].starts_with("cnn epoch 1/20 loss 0.5000 val 0.6000 (elapsed 0s, ETA "),
            "{text}"
        );
        assert!(lines.len() - first >= 4, "{text}");
        assert!(
            lines[first..]
                .iter()
                .all(|l| l.starts_with("cnn epoch 1/20")),
            "{text}"
        );
        p.finish(5, "early stop");
        let text = buf.text();
        let last = text.lines().last().unwrap();
        assert!(last.starts_with("cnn epoch 5/5 early stop"), "{last}");
        assert!(last.contains("ETA 0s"), "{last}");
    }

    #[test]
    fn durations_read_as_seconds_minutes_hours() {
        assert_eq!(fmt_secs(9.4), "9s");
        assert_eq!(fmt_secs(125.0), "2m05s");
        assert_eq!(fmt_secs(3_725.0), "1h02m");
    }
}

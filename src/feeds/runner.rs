//! The generic websocket runner: drives any [`VenueProtocol`] through a [`VenueSession`] with
//! reconnects (exponential backoff with jitter), application keepalive, idle detection,
//! per-symbol resync (resubscribe or REST snapshot) and health counters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::backoff::Backoff;
use super::health::{LinkState, StreamHealth};
use super::normalized::{BookData, ConnectionState, NormEvent};
use super::venue::{Action, Frame, Step, VenueError, VenueSession};
use crate::logging::now_ms;
use crate::market::book::OrderBook;

/// Settings of one runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Websocket URL (full, with path).
    pub ws_url: String,
    /// REST base URL for snapshots.
    pub rest_url: String,
    /// First reconnect delay.
    pub initial_backoff_ms: u64,
    /// Longest reconnect delay.
    pub max_backoff_ms: u64,
    /// ± jitter fraction of each delay.
    pub jitter: f64,
    /// A socket silent this long is dead (also bounded below by 3× the keepalive interval).
    pub idle_timeout: Duration,
    /// A health stream with no message for this long is stale.
    pub stale_after_ms: i64,
    /// Seed of the jitter.
    pub seed: u64,
}

/// What the runner reports.
#[derive(Debug, Clone)]
pub enum RunnerEvent {
    /// A normalized event (trades, verified book messages, integrity failures, connection state).
    Event(NormEvent),
    /// The synced book of an instrument after an update.
    Book {
        /// Canonical instrument id.
        instrument: String,
        /// The book as of this update.
        book: Arc<OrderBook>,
    },
    /// A frame that could not be parsed (counted in the session).
    Malformed {
        /// Error category.
        kind: &'static str,
        /// Detail.
        detail: String,
    },
}

/// A running connector.
pub struct RunnerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    health: Arc<Mutex<StreamHealth>>,
}

impl RunnerHandle {
    /// Health of the connection (state, message age, errors, resyncs).
    pub fn health(&self) -> StreamHealth {
        let mut h = self
            .health
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        h.roll(now_ms());
        h
    }

    /// Stops the runner and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunnerHandle {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn update_health(health: &Arc<Mutex<StreamHealth>>, f: impl FnOnce(&mut StreamHealth)) {
    match health.lock() {
        Ok(mut h) => f(&mut h),
        Err(e) => f(&mut e.into_inner()),
    }
}

/// Starts a runner for a session; events go to `tx`.
pub fn spawn_runner(
    session: VenueSession,
    cfg: RunnerConfig,
    tx: mpsc::Sender<RunnerEvent>,
) -> RunnerHandle {
    let health = Arc::new(Mutex::new(StreamHealth::new(
        format!("{} ws", session.venue()),
        cfg.stale_after_ms,
    )));
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(run(session, cfg, tx, stop_rx, health.clone()));
    RunnerHandle {
        stop: Some(stop_tx),
        task,
        health,
    }
}

enum Exit {
    Stop,
    Lost(String),
}

async fn run(
    mut session: VenueSession,
    cfg: RunnerConfig,
    tx: mpsc::Sender<RunnerEvent>,
    mut stop: oneshot::Receiver<()>,
    health: Arc<Mutex<StreamHealth>>,
) {
    let mut backoff = Backoff::new(
        cfg.initial_backoff_ms,
        cfg.max_backoff_ms,
        cfg.jitter,
        cfg.seed,
    );
    let mut connects = 0u64;
    loop {
        update_health(&health, |h| h.state = LinkState::Connecting);
        let url = match ws_url(&mut session, &cfg).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(venue = %session.venue(), error = %e, "connect token request failed");
                cfg.ws_url.clone()
            }
        };
        let exit = tokio::select! {
            _ = &mut stop => Exit::Stop,
            r = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url.as_str())) => {
                match r {
                    Ok(Ok((ws, _))) => {
                        connects += 1;
                        backoff.reset();
                        update_health(&health, |h| {
                            h.state = LinkState::Connected;
                            h.connects = connects;
                            h.on_message(now_ms());
                        });
                        let _ = tx.send(RunnerEvent::Event(NormEvent::Connection(ConnectionState::Connected { connects }))).await;
                        connected(&mut session, ws, &cfg, &tx, &mut stop, &health).await
                    }
                    Ok(Err(e)) => Exit::Lost(format!("connect failed: {e}")),
                    Err(_) => Exit::Lost("connect timed out".into()),
                }
            }
        };
        session.on_disconnected();
        match exit {
            Exit::Stop => {
                update_health(&health, |h| h.state = LinkState::Stopped);
                return;
            }
            Exit::Lost(reason) => {
                let delay = backoff.next_delay();
                update_health(&health, |h| {
                    h.state = LinkState::Reconnecting;
                    h.errors += 1;
                });
                tracing::warn!(venue = %session.venue(), %reason, retry_ms = delay.as_millis() as u64, "venue websocket lost");
                let ev = NormEvent::Connection(ConnectionState::Disconnected {
                    reason,
                    retry_in_ms: delay.as_millis() as u64,
                });
                if tx.send(RunnerEvent::Event(ev)).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The websocket URL: fixed, or from the venue's connect-token request (KuCoin).
async fn ws_url(session: &mut VenueSession, cfg: &RunnerConfig) -> Result<String, String> {
    let Some(token_url) = session.protocol().connect_token_url(&cfg.rest_url) else {
        return Ok(cfg.ws_url.clone());
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let body = http
        .post(&token_url)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    session
        .protocol()
        .ws_url_from_token(&body)
        .map_err(|e| e.to_string())
}

async fn connected<S>(
    session: &mut VenueSession,
    ws: S,
    cfg: &RunnerConfig,
    tx: &mpsc::Sender<RunnerEvent>,
    stop: &mut oneshot::Receiver<()>,
    health: &Arc<Mutex<StreamHealth>>,
) -> Exit
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    for m in session.on_connected() {
        if let Err(e) = sink.send(Message::text(m)).await {
            return Exit::Lost(format!("subscribe failed: {e}"));
        }
    }
    let keepalive = session.protocol().keepalive();
    let ping_timeout = session.protocol().ping_timeout();
    // Set when a ping goes out, cleared by any frame: a ping left unanswered past the venue's
    // ping timeout means a dead socket, long before the idle rule would notice.
    let mut ping_deadline: Option<tokio::time::Instant> = None;
    let idle = cfg.idle_timeout.max(keepalive.interval * 3);
    let mut ping = tokio::time::interval(keepalive.interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let (snap_tx, mut snap_rx) = mpsc::channel::<(String, Result<BookData, String>)>(64);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut last_frame = tokio::time::Instant::now();
    let mut idle_check = tokio::time::interval(Duration::from_millis(250));
    // Failed snapshots wait here for their retry; a timer arm of the loop (not a sleep inside an
    // arm) so frames keep being read and buffered meanwhile.
    let mut retries = SnapshotRetries::default();
    loop {
        let mut step = Step::default();
        tokio::select! {
            _ = &mut *stop => {
                let _ = sink.send(Message::Close(None)).await;
                return Exit::Stop;
            }
            _ = ping.tick() => {
                if let Some(m) = &keepalive.message {
                    if let Err(e) = sink.send(Message::text(m.clone())).await {
                        return Exit::Lost(format!("keepalive failed: {e}"));
                    }
                    if let Some(t) = ping_timeout {
                        ping_deadline.get_or_insert(tokio::time::Instant::now() + t);
                    }
                }
                continue;
            }
            _ = idle_check.tick() => {
                if last_frame.elapsed() > idle {
                    return Exit::Lost(format!("no frame for {} ms", idle.as_millis()));
                }
                if let (Some(at), Some(t)) = (ping_deadline, ping_timeout)
                    && tokio::time::Instant::now() > at
                {
                    return Exit::Lost(format!("no answer to a ping within {} ms", t.as_millis()));
                }
                update_health(health, |h| h.roll(now_ms()));
                continue;
            }
            snap = snap_rx.recv() => {
                let Some((instrument, res)) = snap else { continue };
                match res {
                    Ok(book) => session.on_rest_snapshot(book, &mut step),
                    Err(detail) => {
                        update_health(health, |h| h.errors += 1);
                        let _ = tx.send(RunnerEvent::Malformed { kind: "snapshot", detail }).await;
                        // Try again after a pause so a failing REST endpoint is not hammered.
                        retries.push(instrument, tokio::time::Instant::now() + SNAPSHOT_RETRY);
                    }
                }
            }
            _ = retries.wait(), if retries.pending() => {
                step.actions.extend(retries.due(tokio::time::Instant::now()).into_iter().map(Action::FetchSnapshot));
            }
            msg = stream.next() => {
                last_frame = tokio::time::Instant::now();
                ping_deadline = None;
                let res = match msg {
                    None => return Exit::Lost("stream ended".into()),
                    Some(Err(e)) => return Exit::Lost(format!("read failed: {e}")),
                    Some(Ok(Message::Text(t))) => session.on_frame(Frame::Text(t.as_str()), &mut step),
                    Some(Ok(Message::Binary(b))) => session.on_frame(Frame::Binary(&b), &mut step),
                    Some(Ok(Message::Close(_))) => return Exit::Lost("closed by server".into()),
                    Some(Ok(_)) => Ok(()),
                };
                update_health(health, |h| h.on_message(now_ms()));
                if let Err(e) = res {
                    update_health(health, |h| h.errors += 1);
                    let _ = tx.send(RunnerEvent::Malformed { kind: e.kind(), detail: e.to_string() }).await;
                }
            }
        }
        if let Some(exit) =
            deliver(session, step, cfg, tx, &mut sink, &snap_tx, &http, health).await
        {
            return exit;
        }
    }
}

/// Pause before a failed REST snapshot is requested again.
const SNAPSHOT_RETRY: Duration = Duration::from_millis(500);

/// Instruments whose REST snapshot failed, each with the time of its next attempt.
#[derive(Default)]
struct SnapshotRetries {
    queue: Vec<(tokio::time::Instant, String)>,
}

impl SnapshotRetries {
    fn push(&mut self, instrument: String, at: tokio::time::Instant) {
        if !self.queue.iter().any(|(_, i)| *i == instrument) {
            self.queue.push((at, instrument));
        }
    }

    fn pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Sleeps until the earliest retry (forever when none: the select arm is disabled then).
    async fn wait(&self) {
        match self.queue.iter().map(|(at, _)| *at).min() {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// Removes and returns the instruments due at `now`.
    fn due(&mut self, now: tokio::time::Instant) -> Vec<String> {
        let (due, later): (Vec<_>, Vec<_>) = self.queue.drain(..).partition(|(at, _)| *at <= now);
        self.queue = later;
        due.into_iter().map(|(_, i)| i).collect()
    }
}

#[allow(clippy::too_many_arguments)]
async fn deliver<K>(
    session: &mut VenueSession,
    step: Step,
    cfg: &RunnerConfig,
    tx: &mpsc::Sender<RunnerEvent>,
    sink: &mut K,
    snap_tx: &mpsc::Sender<(String, Result<BookData, String>)>,
    http: &reqwest::Client,
    health: &Arc<Mutex<StreamHealth>>,
) -> Option<Exit>
where
    K: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    for ev in step.events {
        if matches!(ev, NormEvent::Integrity { .. }) {
            update_health(health, |h| h.resyncs += 1);
        }
        if tx.send(RunnerEvent::Event(ev)).await.is_err() {
            return Some(Exit::Stop);
        }
    }
    for inst in step.books_changed {
        if let Some(book) = session.book(&inst) {
            let ev = RunnerEvent::Book {
                instrument: inst,
                book: Arc::new(book.clone()),
            };
            if tx.send(ev).await.is_err() {
                return Some(Exit::Stop);
            }
        }
    }
    for action in step.actions {
        match action {
            Action::Send(text) => {
                if let Err(e) = sink.send(Message::text(text)).await {
                    return Some(Exit::Lost(format!("send failed: {e}")));
                }
            }
            Action::Reconnect(reason) => return Some(Exit::Lost(reason)),
            Action::FetchSnapshot(instrument) => {
                let Some(url) = session.protocol().snapshot_url(&cfg.rest_url, &instrument) else {
                    continue;
                };
                let http = http.clone();
                let tx = snap_tx.clone();
                let parse_with = session_snapshot_parser(session, &instrument);
                tokio::spawn(async move {
                    let res = match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => match r.text().await {
                            Ok(body) => parse_with(&body).map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        },
                        Ok(r) => Err(format!("{url}: HTTP {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = tx.send((instrument, res)).await;
                });
            }
        }
    }
    None
}

/// A parser for the instrument's REST snapshot that can move into a task (protocols are not
/// `Sync`, so the body is parsed by a fresh default protocol of the same venue).
fn session_snapshot_parser(
    session: &VenueSession,
    instrument: &str,
) -> impl FnOnce(&str) -> Result<BookData, VenueError> + Send + 'static {
    let venue = session.venue();
    let instrument = instrument.to_string();
    move |body: &str| match super::protocol_for(venue) {
        Some(p) => p.parse_snapshot(&instrument, body),
        None => Err(VenueError::UnknownChannel(format!(
            "no protocol for {venue}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_retries_come_due_once_per_instrument() {
        let t0 = tokio::time::Instant::now();
        let mut r = SnapshotRetries::default();
        assert!(!r.pending());
        r.push("ETH/USDT".into(), t0 + SNAPSHOT_RETRY);
        r.push("ETH/USDT".into(), t0 + SNAPSHOT_RETRY * 2);
        r.push("BTC/USDT".into(), t0 + SNAPSHOT_RETRY * 2);
        assert!(r.due(t0).is_empty());
        assert_eq!(r.due(t0 + SNAPSHOT_RETRY), ["ETH/USDT"]);
        assert!(r.pending());
        assert_eq!(r.due(t0 + SNAPSHOT_RETRY * 2), ["BTC/USDT"]);
        assert!(!r.pending());
    }
}

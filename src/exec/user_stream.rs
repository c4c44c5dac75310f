//! The listen-key user-data stream: create the key, keep it alive, reconnect, and turn the
//! frames into typed events.
//!
//! After every (re)connect the task emits [`UserEvent::Connected`]: events may have been missed
//! while the socket was down, so the consumer reconciles over REST at that point.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::binance_spot::BinanceSpot;
use super::rest::ExecError;
use super::wire::{UserStreamEvent, parse_user_event};
use crate::feeds::backoff::Backoff;

/// What the user-data task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEvent {
    /// A (re)connection succeeded; events before it may be missing.
    Connected,
    /// A parsed stream event.
    Event(UserStreamEvent),
    /// The connection dropped or could not be made; the task retries.
    Disconnected(String),
    /// A frame that could not be parsed (counted and skipped).
    Malformed(String),
}

/// Settings of the user-data task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStreamConfig {
    /// Websocket base (`wss://stream.binance.com:9443`); the task connects to `/ws/<key>`.
    pub ws_url: String,
    /// Keepalive (`PUT`) interval.
    pub keepalive: Duration,
    /// Smallest reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
}

/// Handle of a running user-data task.
#[derive(Debug)]
pub struct UserStream {
    /// Events in arrival order.
    pub events: mpsc::UnboundedReceiver<UserEvent>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl UserStream {
    /// Starts the task for `client`'s account.
    pub fn spawn(client: Arc<BinanceSpot>, cfg: UserStreamConfig) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(client, cfg, tx, stop_rx));
        Self { events, stop, task }
    }

    /// Stops the task (closing the listen key is best effort).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(3), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

enum Ended {
    Stop,
    Retry(String),
}

async fn run(
    client: Arc<BinanceSpot>,
    cfg: UserStreamConfig,
    tx: mpsc::UnboundedSender<UserEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(
        cfg.backoff_min.as_millis() as u64,
        cfg.backoff_max.as_millis() as u64,
        0.2,
        crate::exec::rest::local_ms() as u64,
    );
    loop {
        let ended = tokio::select! {
            e = session(&client, &cfg, &tx, &mut backoff) => e,
            _ = stop.changed() => Ended::Stop,
        };
        match ended {
            Ended::Stop => return,
            Ended::Retry(why) => {
                if tx.send(UserEvent::Disconnected(why)).is_err() {
                    return;
                }
                let d = backoff.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

async fn session(
    client: &BinanceSpot,
    cfg: &UserStreamConfig,
    tx: &mpsc::UnboundedSender<UserEvent>,
    backoff: &mut Backoff,
) -> Ended {
    let key = match client.create_listen_key().await {
        Ok(k) => k,
        Err(e) => return Ended::Retry(format!("listenKey: {e}")),
    };
    let url = format!("{}/ws/{}", cfg.ws_url.trim_end_matches('/'), key);
    let ws = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok((ws, _)) => ws,
        // The URL holds the listen key: report the error kind only.
        Err(e) => return Ended::Retry(format!("connect: {}", kind_of(&e))),
    };
    backoff.reset();
    if tx.send(UserEvent::Connected).is_err() {
        return Ended::Stop;
    }
    let (mut wtx, mut rx) = ws.split();
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.keepalive,
        cfg.keepalive.max(Duration::from_millis(10)),
    );
    loop {
        tokio::select! {
            m = rx.next() => match m {
                None => return Ended::Retry("stream closed".into()),
                Some(Err(e)) => return Ended::Retry(format!("read: {}", kind_of(&e))),
                Some(Ok(Message::Text(t))) => {
                    let ev = match parse_user_event(t.as_str()) {
                        Ok(UserStreamEvent::ListenKeyExpired) => {
                            let _ = tx.send(UserEvent::Event(UserStreamEvent::ListenKeyExpired));
                            return Ended::Retry("listenKey expired".into());
                        }
                        Ok(ev) => UserEvent::Event(ev),
                        Err(e) => UserEvent::Malformed(e.to_string()),
                    };
                    if tx.send(ev).is_err() {
                        return Ended::Stop;
                    }
                }
                Some(Ok(Message::Ping(p))) => {
                    if wtx.send(Message::Pong(p)).await.is_err() {
                        return Ended::Retry("pong failed".into());
                    }
                }
                Some(Ok(Message::Close(_))) => return Ended::Retry("closed by server".into()),
                Some(Ok(_)) => {}
            },
            _ = keepalive.tick() => {
                match client.keepalive_listen_key(&key).await {
                    Ok(()) => {}
                    Err(ExecError::Rejected { code: -1125, .. }) => {
                        return Ended::Retry("listenKey no longer exists".into());
                    }
                    Err(e) => tracing::warn!("listenKey keepalive failed: {e}"),
                }
            }
        }
    }
}

fn kind_of(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::ConnectionClosed | E::AlreadyClosed => "closed".into(),
        E::Io(io) => format!("io: {}", io.kind()),
        E::Http(r) => format!("http {}", r.status()),
        E::Protocol(p) => format!("protocol: {p}"),
        _ => "websocket error".into(),
    }
}

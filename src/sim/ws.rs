//! Websocket connections: raw `/ws/<stream>` and combined `/stream?streams=`, live control
//! messages, server pings with a pong deadline, a maximum lifetime and slow-client dropping.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, interval_at, sleep};

use super::control::{self, ControlRequest, MAX_STREAMS};
use super::server::{ConnCommand, Shared, wall_ms};

/// A write that takes longer than this means the client stopped reading: drop it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

fn bad_streams(names: &[String]) -> Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        json!({"code": -1121, "msg": format!("Invalid stream name(s): {}", names.join(","))})
            .to_string(),
    )
        .into_response()
}

fn upgrade(ws: WebSocketUpgrade, s: Arc<Shared>, streams: Vec<String>, combined: bool) -> Response {
    let invalid: Vec<String> = streams
        .iter()
        .filter(|n| !s.valid_stream(n))
        .cloned()
        .collect();
    if !invalid.is_empty() {
        return bad_streams(&invalid);
    }
    if streams.len() > MAX_STREAMS {
        return bad_streams(&["too many streams".to_owned()]);
    }
    ws.on_upgrade(move |socket| connection(socket, s, streams, combined))
}

/// `/ws` with no stream: subscribe later with control messages.
pub async fn raw_root(ws: WebSocketUpgrade, State(s): State<Arc<Shared>>) -> Response {
    upgrade(ws, s, Vec::new(), false)
}

/// `/ws/<stream>[/<stream>...]`.
pub async fn raw(
    ws: WebSocketUpgrade,
    State(s): State<Arc<Shared>>,
    Path(rest): Path<String>,
) -> Response {
    // A listen key opens the account's user-data stream instead of market streams.
    if let Some(events) = s
        .trading
        .listen_key_account(&rest)
        .and_then(|a| s.trading.subscribe(a))
    {
        return ws
            .on_upgrade(move |socket| super::trading::user_connection(socket, s, rest, events));
    }
    let streams = rest
        .split('/')
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect();
    upgrade(ws, s, streams, false)
}

/// `/stream?streams=a/b/c`.
pub async fn combined(
    ws: WebSocketUpgrade,
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let streams = q
        .get("streams")
        .map(|v| {
            v.split('/')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    upgrade(ws, s, streams, true)
}

/// The connection's streams, registered with the market so it encodes only watched streams.
struct Subscriptions {
    shared: Arc<Shared>,
    set: BTreeSet<String>,
}

impl Subscriptions {
    fn add(&mut self, name: String) {
        if self.set.insert(name.clone()) {
            self.shared.watch_stream(&name, 1);
        }
    }

    fn remove(&mut self, name: &str) {
        if self.set.remove(name) {
            self.shared.watch_stream(name, -1);
        }
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for n in &self.set {
            self.shared.watch_stream(n, -1);
        }
    }
}

enum Flow {
    Continue,
    Close(u16, &'static str),
    Gone,
}

async fn send(tx: &mut futures_util::stream::SplitSink<WebSocket, Message>, m: Message) -> Flow {
    match tokio::time::timeout(WRITE_TIMEOUT, tx.send(m)).await {
        Ok(Ok(())) => Flow::Continue,
        Ok(Err(_)) => Flow::Gone,
        Err(_) => Flow::Gone,
    }
}

fn handle_control(
    text: &str,
    subs: &mut Subscriptions,
    combined: &mut bool,
    shared: &Shared,
) -> String {
    let c = match control::parse(text) {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    match c.request {
        ControlRequest::Subscribe(names) => {
            let bad: Vec<&String> = names.iter().filter(|n| !shared.valid_stream(n)).collect();
            if let Some(b) = bad.first() {
                return json!({"code": 2, "msg": format!("Invalid request: unknown stream name '{b}'"), "id": c.id}).to_string();
            }
            if subs.set.len() + names.len() > MAX_STREAMS {
                return json!({"code": 2, "msg": "Invalid request: too many parameters", "id": c.id}).to_string();
            }
            for n in names {
                subs.add(n);
            }
            control::ok_reply(&c.id, Value::Null)
        }
        ControlRequest::Unsubscribe(names) => {
            for n in names {
                subs.remove(&n);
            }
            control::ok_reply(&c.id, Value::Null)
        }
        ControlRequest::List => {
            control::ok_reply(&c.id, json!(subs.set.iter().collect::<Vec<_>>()))
        }
        ControlRequest::SetCombined(b) => {
            *combined = b;
            control::ok_reply(&c.id, Value::Null)
        }
        ControlRequest::GetCombined => control::ok_reply(&c.id, json!(*combined)),
    }
}

async fn connection(
    socket: WebSocket,
    shared: Arc<Shared>,
    streams: Vec<String>,
    mut combined: bool,
) {
    let mut subs = Subscriptions {
        shared: shared.clone(),
        set: BTreeSet::new(),
    };
    for n in streams {
        subs.add(n);
    }
    let mut hub = shared.hub.subscribe();
    let mut commands = shared.commands.subscribe();
    let mut stop = shared.stop.clone();
    let (mut tx, mut rx) = socket.split();
    let cfg = &shared.cfg;
    let ping_every = Duration::from_millis(cfg.ping_interval_ms.max(10));
    let pong_timeout = Duration::from_millis(cfg.pong_timeout_ms.max(10));
    let mut ping = interval_at(Instant::now() + ping_every, ping_every);
    let lifetime = sleep(Duration::from_secs(cfg.max_connection_lifetime_s.max(1)));
    tokio::pin!(lifetime);
    let mut last_pong = Instant::now();
    let flow = loop {
        let flow = tokio::select! {
            m = hub.recv() => match m {
                Ok(msg) => {
                    if !subs.set.contains(&msg.stream) {
                        continue;
                    }
                    let text = if combined {
                        format!("{{\"stream\":\"{}\",\"data\":{}}}", msg.stream, msg.payload)
                    } else {
                        msg.payload.clone()
                    };
                    send(&mut tx, Message::Text(text.into())).await
                }
                // The shared queue overran this connection's cursor: a slow client.
                Err(RecvError::Lagged(_)) => Flow::Close(1008, "slow client: queue overflow"),
                Err(RecvError::Closed) => Flow::Close(1001, "server shutting down"),
            },
            c = commands.recv() => match c {
                Ok(ConnCommand::Disconnect) => Flow::Close(1001, "disconnected by fault injection"),
                Ok(ConnCommand::Garbage) => {
                    let f = send(&mut tx, Message::Text("\u{1}garbage{{not json".into())).await;
                    if matches!(f, Flow::Continue) {
                        let unknown = json!({"e": "simUnknownEvent", "E": wall_ms(), "x": [1, 2, 3]});
                        send(&mut tx, Message::Text(unknown.to_string().into())).await
                    } else {
                        f
                    }
                }
                Err(RecvError::Lagged(_)) => Flow::Continue,
                Err(RecvError::Closed) => Flow::Close(1001, "server shutting down"),
            },
            incoming = rx.next() => match incoming {
                None | Some(Err(_)) => Flow::Gone,
                Some(Ok(Message::Text(t))) => {
                    let reply = handle_control(t.as_str(), &mut subs, &mut combined, &shared);
                    send(&mut tx, Message::Text(reply.into())).await
                }
                Some(Ok(Message::Pong(_))) => {
                    last_pong = Instant::now();
                    Flow::Continue
                }
                Some(Ok(Message::Close(_))) => Flow::Gone,
                Some(Ok(_)) => Flow::Continue,
            },
            _ = ping.tick() => {
                if last_pong.elapsed() > pong_timeout {
                    Flow::Close(1008, "pong timeout")
                } else {
                    let payload = wall_ms().to_string();
                    send(&mut tx, Message::Ping(payload.into_bytes().into())).await
                }
            }
            _ = &mut lifetime => Flow::Close(1000, "connection lifetime reached"),
            _ = stop.changed() => {
                let ev = json!({"e": "serverShutdown", "E": wall_ms()});
                let text = if combined {
                    json!({"stream": "!serverShutdown", "data": ev}).to_string()
                } else {
                    ev.to_string()
                };
                let _ = send(&mut tx, Message::Text(text.into())).await;
                Flow::Close(1001, "server shutting down")
            }
        };
        if !matches!(flow, Flow::Continue) {
            break flow;
        }
    };
    if let Flow::Close(code, reason) = flow {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Message::Close(Some(frame))))
            .await;
    }
    drop(subs);
}

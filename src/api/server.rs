//! The HTTP server: routes, bearer-token check, database queries and the live WebSocket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, broadcast, oneshot, watch};
use tokio::task::JoinHandle;

use super::auth::{ApiToken, AuthError, check_bind};
use super::openapi;
use crate::collector::metrics::Metrics;
use crate::collector::pg::{self, millis};
use crate::collector::service::LiveSender;
use crate::market::snapshot::MarketSnapshot;
use crate::market::types::{Price, Qty, Timeframe};

/// What the API reads from.
#[derive(Clone)]
pub struct ApiState {
    /// The pipeline's latest snapshot.
    pub snapshots: watch::Receiver<Arc<MarketSnapshot>>,
    /// Default exchange name for stored data.
    pub exchange: String,
    /// Database for time-range queries (None: those routes answer 503).
    pub database_url: Option<String>,
    /// Database connect timeout.
    pub connect_timeout: Duration,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Live updates for WebSocket subscribers.
    pub live: LiveSender,
}

struct Shared {
    state: ApiState,
    token: Option<ApiToken>,
    db: Mutex<Option<tokio_postgres::Client>>,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The bind address is not an address.
    #[error("api.bind: expected an address like \"127.0.0.1:8686\", got {0:?}")]
    Bind(String),
    /// Token policy refused the bind.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Listening failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A running API server.
pub struct ApiHandle {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl ApiHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Starts the server on `bind`; a non-loopback address is refused without a token.
pub async fn serve(
    bind: &str,
    token: Option<ApiToken>,
    token_env: &str,
    state: ApiState,
) -> Result<ApiHandle, ApiError> {
    let addr: SocketAddr = bind.parse().map_err(|_| ApiError::Bind(bind.to_string()))?;
    check_bind(addr, token.as_ref(), token_env)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ApiError::Listen { addr, source })?;
    let shared = Arc::new(Shared {
        state,
        token,
        db: Mutex::new(None),
    });
    let app = router(shared);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "api server failed");
        }
    });
    tracing::info!(%addr, "api listening");
    Ok(ApiHandle { addr, stop, task })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_doc))
        .route("/api/v1/status", get(status))
        .route("/api/v1/symbols", get(symbols))
        .route("/api/v1/symbols/{symbol}/cob", get(cob))
        .route("/api/v1/symbols/{symbol}/heatmap", get(heatmap))
        .route("/api/v1/symbols/{symbol}/candles", get(candles))
        .route("/api/v1/symbols/{symbol}/trades", get(trades))
        .route("/api/v1/stream", get(stream))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ))
        .with_state(shared)
}

async fn require_token(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !token.accepts(header) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": "missing or wrong bearer token"})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({"error": msg.into()}))).into_response()
}

/// A failed request: status and message (turned into a JSON error body by [`error`]).
type Fail = (StatusCode, String);

fn fail(f: Fail) -> Response {
    error(f.0, f.1)
}

fn snapshot(s: &Shared) -> Arc<MarketSnapshot> {
    s.state.snapshots.borrow().clone()
}

async fn health(State(s): State<Arc<Shared>>) -> Json<Value> {
    let snap = snapshot(&s);
    let db = s.state.metrics.db_up.get() == 1;
    let redis = s.state.metrics.redis_up.get() == 1;
    let ok = snap.feed_running && db && redis;
    Json(json!({
        "status": if ok { "ok" } else { "degraded" },
        "feed_running": snap.feed_running,
        "database": db,
        "redis": redis,
    }))
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    s.state.metrics.refresh_rss();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.state.metrics.encode(),
    )
        .into_response()
}

async fn openapi_doc() -> Json<Value> {
    Json(openapi::document())
}

async fn status(State(s): State<Arc<Shared>>) -> Json<Value> {
    let snap = snapshot(&s);
    let m = &s.state.metrics;
    Json(json!({
        "time_ms": snap.time_ms,
        "source": snap.source,
        "feed_running": snap.feed_running,
        "links": snap.links,
        "symbols": snap.symbols.iter().map(|v| json!({
            "symbol": v.exchange, "status": v.status, "book": v.book, "trades": v.trades,
        })).collect::<Vec<_>>(),
        "database": {"up": m.db_up.get() == 1, "buffered_rows": m.db_buffered_rows.get(),
                     "spilled_rows": m.db_spilled_rows.get(), "write_lag_seconds": m.db_write_lag.get()},
        "redis": {"up": m.redis_up.get() == 1, "published": m.redis_published.get()},
    }))
}

async fn symbols(State(s): State<Arc<Shared>>) -> Json<Value> {
    let snap = snapshot(&s);
    Json(json!(
        snap.symbols
            .iter()
            .map(|v| v.exchange.clone())
            .collect::<Vec<_>>()
    ))
}

async fn cob(State(s): State<Arc<Shared>>, Path(symbol): Path<String>) -> Response {
    let snap = snapshot(&s);
    let Some(view) = snap.symbols.iter().find(|v| v.exchange == symbol) else {
        return error(StatusCode::NOT_FOUND, format!("unknown symbol {symbol}"));
    };
    match &view.cob {
        Some(c) => Json(c.as_ref()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no COB for {symbol} yet")),
    }
}

#[derive(Deserialize)]
struct HeatmapQuery {
    rows: Option<usize>,
}

async fn heatmap(
    State(s): State<Arc<Shared>>,
    Path(symbol): Path<String>,
    Query(q): Query<HeatmapQuery>,
) -> Response {
    let snap = snapshot(&s);
    let Some(view) = snap.symbols.iter().find(|v| v.exchange == symbol) else {
        return error(StatusCode::NOT_FOUND, format!("unknown symbol {symbol}"));
    };
    let rows = &view.heatmap;
    let n = q.rows.unwrap_or(rows.len()).min(rows.len());
    Json(&rows[rows.len() - n..]).into_response()
}

#[derive(Deserialize)]
struct RangeQuery {
    from: i64,
    to: i64,
    limit: Option<i64>,
    exchange: Option<String>,
    timeframe: Option<String>,
}

const MAX_LIMIT: i64 = 100_000;

impl RangeQuery {
    fn check(&self) -> Result<i64, Fail> {
        if self.to <= self.from {
            return Err((StatusCode::BAD_REQUEST, "expected from < to (ms)".into()));
        }
        let limit = self.limit.unwrap_or(1000);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("expected limit from 1 to {MAX_LIMIT}"),
            ));
        }
        Ok(limit)
    }
}

fn time(ms: i64) -> std::time::SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        std::time::UNIX_EPOCH + d
    } else {
        std::time::UNIX_EPOCH - d
    }
}

/// Runs a query on the shared connection, reconnecting once when it was lost.
async fn query(
    s: &Shared,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, Fail> {
    let Some(url) = &s.state.database_url else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "no database configured".into(),
        ));
    };
    let mut guard = s.db.lock().await;
    for attempt in 0..2 {
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            match pg::connect(url, s.state.connect_timeout).await {
                Ok(c) => *guard = Some(c),
                Err(e) => return Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
            }
        }
        let Some(client) = guard.as_ref() else {
            continue;
        };
        match client.query(sql, params).await {
            Ok(rows) => return Ok(rows),
            // No table yet: the collector has not written anything.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                return Ok(Vec::new());
            }
            // A server-side error, or the second failure after a reconnect.
            Err(e) if e.code().is_some() || attempt == 1 => {
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("database query failed: {e}"),
                ));
            }
            Err(_) => *guard = None,
        }
    }
    Err((
        StatusCode::SERVICE_UNAVAILABLE,
        "database unreachable".into(),
    ))
}

async fn candles(
    State(s): State<Arc<Shared>>,
    Path(symbol): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Response {
    let limit = match q.check() {
        Ok(l) => l,
        Err(f) => return fail(f),
    };
    let Some(tf) = q.timeframe.as_deref().and_then(Timeframe::parse) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected timeframe=1s, 1m, 1h or 1d",
        );
    };
    let exchange = q
        .exchange
        .clone()
        .unwrap_or_else(|| s.state.exchange.clone());
    let (from, to) = (time(q.from), time(q.to));
    let rows = match query(
        &s,
        "SELECT open_time, open_e8, high_e8, low_e8, close_e8, volume_e8, trades FROM candles \
         WHERE exchange = $1 AND symbol = $2 AND timeframe = $3 AND open_time >= $4 AND open_time < $5 \
         ORDER BY open_time LIMIT $6",
        &[&exchange, &symbol, &tf.as_str(), &from, &to, &limit],
    )
    .await
    {
        Ok(r) => r,
        Err(f) => return fail(f),
    };
    let out: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "open_time_ms": millis(r.get(0)),
                "open": Price(r.get(1)).to_string(),
                "high": Price(r.get(2)).to_string(),
                "low": Price(r.get(3)).to_string(),
                "close": Price(r.get(4)).to_string(),
                "volume": Qty(r.get(5)).to_string(),
                "trades": r.get::<_, i64>(6),
            })
        })
        .collect();
    Json(out).into_response()
}

async fn trades(
    State(s): State<Arc<Shared>>,
    Path(symbol): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Response {
    let limit = match q.check() {
        Ok(l) => l,
        Err(f) => return fail(f),
    };
    let exchange = q
        .exchange
        .clone()
        .unwrap_or_else(|| s.state.exchange.clone());
    let (from, to) = (time(q.from), time(q.to));
    let rows = match query(
        &s,
        "SELECT id, time, price_e8, qty_e8, taker_buy FROM trades \
         WHERE exchange = $1 AND symbol = $2 AND time >= $3 AND time < $4 \
         ORDER BY time, id LIMIT $5",
        &[&exchange, &symbol, &from, &to, &limit],
    )
    .await
    {
        Ok(r) => r,
        Err(f) => return fail(f),
    };
    let out: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, i64>(0),
                "time_ms": millis(r.get(1)),
                "price": Price(r.get(2)).to_string(),
                "qty": Qty(r.get(3)).to_string(),
                "side": if r.get::<_, bool>(4) { "buy" } else { "sell" },
            })
        })
        .collect();
    Json(out).into_response()
}

async fn stream(State(s): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    let rx = s.state.live.subscribe();
    ws.on_upgrade(move |socket| push_live(socket, rx))
}

async fn push_live(mut socket: WebSocket, mut rx: broadcast::Receiver<Arc<str>>) {
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(text) => {
                    if socket.send(Message::Text(text.as_ref().into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let note = json!({"type": "lagged", "skipped": n}).to_string();
                    if socket.send(Message::Text(note.into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

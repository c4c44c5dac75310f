//! Every exchange connector, driven by the real websocket runner against a loopback server
//! (axum: websocket, KuCoin's bullet-token endpoint, REST depth snapshots) that replays a
//! recorded capture or synthetic frames: books sync, an injected disconnect makes the runner
//! reconnect and resync, an injected gap is detected where the exchange's protocol allows it
//! (Kraken by checksum, Bitfinex by connection sequence, Coinbase Advanced Trade by
//! `sequence_num`, Bybit v5 by `u`, KuCoin and MEXC by sequence against a REST snapshot that is
//! fetched again), keepalives reach the server and a silent server is detected.

mod venues_common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use mmtrader::feeds::normalized::{BookData, ConnectionState, IntegrityError, NormEvent, Venue};
use mmtrader::feeds::raw_replay::{CaptureLine, Payload, parse_capture_line};
use mmtrader::feeds::runner::{RunnerConfig, RunnerEvent, spawn_runner};
use mmtrader::feeds::venue::{
    BookRules, Frame, Keepalive, VenueError, VenueProtocol, VenueSession,
};
use mmtrader::market::book::OrderBook;
use mmtrader::market::types::{Level, Side};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use venues_common::{capture, lines};

/// What one connection of the loopback server sends.
#[derive(Clone, Default)]
struct Script {
    frames: Vec<Message>,
    /// Close the connection after this many frames.
    close_after: Option<usize>,
    /// Per frame, a tag stored as the server's "last sent" when the frame goes out (synthetic
    /// venues: the book version, so a REST snapshot matches what was streamed).
    tags: Vec<u64>,
    /// `(i, n)`: before frame `i` (or before closing, when `i` is the frame count), wait until
    /// the server has answered `n` REST requests.
    waits: Vec<(usize, usize)>,
}

/// One REST request as the loopback server saw it.
struct RestRequest<'a> {
    path: &'a str,
    symbol: &'a str,
    /// 1-based count of requests for this path and symbol.
    count: usize,
    /// Tag of the last frame sent (see [`Script::tags`]).
    last_tag: u64,
}

type RestFn = Box<dyn Fn(&RestRequest) -> Option<String> + Send + Sync>;

/// The loopback exchange: websocket scripts, KuCoin's bullet token and REST snapshots.
struct Loopback {
    scripts: Vec<Script>,
    connections: AtomicUsize,
    /// Every text the clients sent, in order.
    received: Mutex<Vec<String>>,
    rest: RestFn,
    rest_requests: Mutex<HashMap<String, usize>>,
    rest_served: Notify,
    rest_answered: AtomicUsize,
    /// KuCoin bullet-token requests.
    bullets: AtomicUsize,
    last_tag: AtomicU64,
    /// `pingInterval` and `pingTimeout` announced in the bullet token, ms.
    ping_ms: (u64, u64),
    addr: Mutex<String>,
}

impl Loopback {
    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    fn requests(&self, path: &str, symbol: &str) -> usize {
        let key = format!("{path}?{symbol}");
        self.rest_requests
            .lock()
            .unwrap()
            .get(&key)
            .copied()
            .unwrap_or(0)
    }
}

async fn ws_route(ws: WebSocketUpgrade, State(lb): State<Arc<Loopback>>) -> Response {
    ws.on_upgrade(move |s| ws_session(s, lb))
}

fn to_axum(m: Message) -> WsMessage {
    match m {
        Message::Binary(b) => WsMessage::Binary(b),
        other => WsMessage::text(other.into_text().unwrap().as_str()),
    }
}

/// Serves connection `k` with `scripts[min(k, last)]`; records the client's texts.
async fn ws_session(socket: WebSocket, lb: Arc<Loopback>) {
    let k = lb.connections.fetch_add(1, Ordering::SeqCst);
    let script = lb.scripts[k.min(lb.scripts.len() - 1)].clone();
    let (mut sink, mut stream) = socket.split();
    let rx = lb.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            if let WsMessage::Text(t) = m {
                rx.received.lock().unwrap().push(t.as_str().to_string());
            }
        }
    });
    let n = script.frames.len();
    for i in 0..=n {
        for &(at, needed) in &script.waits {
            while at == i && lb.rest_answered.load(Ordering::SeqCst) < needed {
                let answered = lb.rest_served.notified();
                if lb.rest_answered.load(Ordering::SeqCst) >= needed {
                    break;
                }
                answered.await;
            }
        }
        if script.close_after == Some(i) {
            reader.abort();
            return;
        }
        if i == n {
            break;
        }
        if let Some(&tag) = script.tags.get(i) {
            lb.last_tag.store(tag, Ordering::SeqCst);
        }
        if sink.send(to_axum(script.frames[i].clone())).await.is_err() {
            return;
        }
    }
    let _ = reader.await;
}

async fn bullet(State(lb): State<Arc<Loopback>>) -> String {
    lb.bullets.fetch_add(1, Ordering::SeqCst);
    let addr = lb.addr.lock().unwrap().clone();
    format!(
        r#"{{"code":"200000","data":{{"token":"LOOPBACK","instanceServers":[{{"endpoint":"ws://{addr}/ws","encrypt":false,"protocol":"websocket","pingInterval":{},"pingTimeout":{}}}]}}}}"#,
        lb.ping_ms.0, lb.ping_ms.1
    )
}

async fn rest_route(
    State(lb): State<Arc<Loopback>>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // Read before the request is counted: a script waiting for it cannot move on first.
    let last_tag = lb.last_tag.load(Ordering::SeqCst);
    let symbol = q.get("symbol").cloned().unwrap_or_default();
    let count = {
        let mut r = lb.rest_requests.lock().unwrap();
        let c = r.entry(format!("{}?{symbol}", uri.path())).or_default();
        *c += 1;
        *c
    };
    let req = RestRequest {
        path: uri.path(),
        symbol: &symbol,
        count,
        last_tag,
    };
    let answer = (lb.rest)(&req);
    lb.rest_answered.fetch_add(1, Ordering::SeqCst);
    lb.rest_served.notify_waiters();
    match answer {
        Some(body) => body.into_response(),
        None => (StatusCode::NOT_FOUND, "no snapshot").into_response(),
    }
}

async fn serve(scripts: Vec<Script>, rest: RestFn, ping_ms: (u64, u64)) -> Arc<Loopback> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = Arc::new(Loopback {
        scripts,
        connections: AtomicUsize::new(0),
        received: Mutex::new(Vec::new()),
        rest,
        rest_requests: Mutex::new(HashMap::new()),
        rest_served: Notify::new(),
        rest_answered: AtomicUsize::new(0),
        bullets: AtomicUsize::new(0),
        last_tag: AtomicU64::new(0),
        ping_ms,
        addr: Mutex::new(listener.local_addr().unwrap().to_string()),
    });
    let app = axum::Router::new()
        .route("/ws", get(ws_route))
        .route("/api/v1/bullet-public", post(bullet))
        .fallback(rest_route)
        .with_state(lb.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    lb
}

fn frames_of(lines: &[String]) -> Vec<Message> {
    lines
        .iter()
        .filter_map(|l| match parse_capture_line(l).unwrap() {
            CaptureLine::Received {
                payload: Payload::Text(t),
                ..
            } => Some(Message::text(t)),
            CaptureLine::Received {
                payload: Payload::Binary(b),
                ..
            } => Some(Message::binary(b)),
            _ => None,
        })
        .collect()
}

struct Run {
    events: Vec<RunnerEvent>,
    books: Vec<String>,
    /// The newest synced book of each instrument.
    latest: HashMap<String, Arc<OrderBook>>,
    /// Trades received.
    trades: u64,
}

impl Run {
    fn connects(&self) -> u64 {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunnerEvent::Event(NormEvent::Connection(ConnectionState::Connected {
                    connects,
                })) => Some(*connects),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    fn integrity(&self) -> Vec<&IntegrityError> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunnerEvent::Event(NormEvent::Integrity { error, .. }) => Some(error),
                _ => None,
            })
            .collect()
    }

    fn disconnect_reasons(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunnerEvent::Event(NormEvent::Connection(ConnectionState::Disconnected {
                    reason,
                    ..
                })) => Some(reason.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// A venue's protocol with a short keepalive interval (so a test sees pings without waiting
/// for the exchange's real one); everything else is the venue's own.
struct ShortKeepalive {
    inner: Box<dyn VenueProtocol>,
    interval: Duration,
}

impl VenueProtocol for ShortKeepalive {
    fn venue(&self) -> Venue {
        self.inner.venue()
    }
    fn exchange_symbol(&self, instrument: &str) -> String {
        self.inner.exchange_symbol(instrument)
    }
    fn subscribe(&mut self, instruments: &[String]) -> Vec<String> {
        self.inner.subscribe(instruments)
    }
    fn resubscribe_book(&mut self, instrument: &str) -> Vec<String> {
        self.inner.resubscribe_book(instrument)
    }
    fn parse(&mut self, frame: Frame<'_>, out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        self.inner.parse(frame, out)
    }
    fn keepalive(&self) -> Keepalive {
        Keepalive {
            interval: self.interval,
            ..self.inner.keepalive()
        }
    }
    fn ping_timeout(&self) -> Option<Duration> {
        self.inner.ping_timeout()
    }
    fn book_rules(&self) -> BookRules {
        self.inner.book_rules()
    }
    fn snapshot_url(&self, rest_base: &str, instrument: &str) -> Option<String> {
        self.inner.snapshot_url(rest_base, instrument)
    }
    fn parse_snapshot(&self, instrument: &str, body: &str) -> Result<BookData, VenueError> {
        self.inner.parse_snapshot(instrument, body)
    }
    fn on_disconnect(&mut self) {
        self.inner.on_disconnect()
    }
    fn connect_token_url(&self, rest_base: &str) -> Option<String> {
        self.inner.connect_token_url(rest_base)
    }
    fn ws_url_from_token(&self, body: &str) -> Result<String, VenueError> {
        self.inner.ws_url_from_token(body)
    }
    fn snapshot_instrument(&self, url: &str) -> Option<String> {
        self.inner.snapshot_instrument(url)
    }
}

/// How one loopback run is set up.
struct Setup {
    venue: &'static str,
    scripts: Vec<Script>,
    rest: RestFn,
    /// Subscribed instruments; None: a book for every instrument seen.
    instruments: Option<Vec<String>>,
    /// Override of the venue's keepalive interval.
    keepalive: Option<Duration>,
    idle_timeout: Duration,
    /// KuCoin bullet token's `pingInterval` and `pingTimeout`, ms.
    ping_ms: (u64, u64),
    /// The configured websocket URL; None: the loopback's `/ws`.
    ws_url: Option<String>,
}

impl Setup {
    fn new(venue: &'static str, scripts: Vec<Script>) -> Self {
        Self {
            venue,
            scripts,
            rest: Box::new(|_| None),
            instruments: None,
            keepalive: None,
            idle_timeout: Duration::from_secs(120),
            ping_ms: (18_000, 10_000),
            ws_url: None,
        }
    }
}

/// Runs the venue's runner against the scripts until `done(run, server)` holds or a minute
/// passed (the minute only guards against a hang; every test waits for what it asserts).
async fn run_setup(setup: Setup, done: impl Fn(&Run, &Loopback) -> bool) -> (Run, Arc<Loopback>) {
    let lb = serve(setup.scripts, setup.rest, setup.ping_ms).await;
    let addr = lb.addr.lock().unwrap().clone();
    let mut proto = mmtrader::feeds::protocol_for(Venue::parse(setup.venue).unwrap()).unwrap();
    if let Some(interval) = setup.keepalive {
        proto = Box::new(ShortKeepalive {
            inner: proto,
            interval,
        });
    }
    let session = match setup.instruments {
        Some(list) => VenueSession::new(proto, list),
        None => VenueSession::open(proto),
    };
    let (tx, mut rx) = mpsc::channel(100_000);
    let handle = spawn_runner(
        session,
        RunnerConfig {
            ws_url: setup.ws_url.unwrap_or(format!("ws://{addr}/ws")),
            rest_url: format!("http://{addr}"),
            initial_backoff_ms: 50,
            max_backoff_ms: 200,
            jitter: 0.1,
            idle_timeout: setup.idle_timeout,
            stale_after_ms: 5_000,
            seed: 1,
        },
        tx,
    );
    let mut r = Run {
        events: Vec::new(),
        books: Vec::new(),
        latest: HashMap::new(),
        trades: 0,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(&r, &lb) && tokio::time::Instant::now() < deadline {
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            if let RunnerEvent::Book { instrument, book } = &ev {
                if !r.books.contains(instrument) {
                    r.books.push(instrument.clone());
                }
                r.latest.insert(instrument.clone(), book.clone());
            }
            if let RunnerEvent::Event(NormEvent::Trade(_)) = &ev {
                r.trades += 1;
            }
            r.events.push(ev);
        }
    }
    handle.stop().await;
    (r, lb)
}

/// Runs a venue against websocket scripts only; `done(run, texts the server received)`.
async fn run(
    venue: &'static str,
    scripts: Vec<Script>,
    done: impl Fn(&Run, usize) -> bool,
) -> (Run, usize) {
    let (r, lb) = run_setup(Setup::new(venue, scripts), |r, lb| {
        done(r, lb.received.lock().unwrap().len())
    })
    .await;
    let received = lb.received().len();
    (r, received)
}

fn full(frames: &[Message]) -> Script {
    Script {
        frames: frames.to_vec(),
        ..Script::default()
    }
}

/// A disconnect half-way: the second connection replays the capture from its start (fresh
/// snapshots), and every book syncs again.
async fn reconnect_and_resync(venue: &'static str, file: &str, books: usize) {
    let frames = frames_of(&lines(&capture(file)));
    let half = Script {
        frames: frames.clone(),
        close_after: Some(frames.len() / 2),
        ..Script::default()
    };
    // The second connection's subscription may reach the server after the client has seen
    // enough events, so wait for it too.
    let (r, received) = run(venue, vec![half, full(&frames)], |r, received| {
        r.connects() >= 2
            && r.books.len() >= books
            && r.events.len() > frames.len()
            && received >= 2
    })
    .await;
    assert!(r.connects() >= 2, "{venue}: reconnected");
    assert!(!r.disconnect_reasons().is_empty());
    assert!(
        r.books.len() >= books,
        "{venue}: books synced {:?}",
        r.books
    );
    assert!(
        received >= 2,
        "{venue}: subscriptions sent on both connections"
    );
    assert!(r.integrity().is_empty(), "{venue}: {:?}", r.integrity());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kraken_reconnects_and_detects_a_gap_by_checksum() {
    reconnect_and_resync("kraken", "KRAKEN.ws.50.0", 10).await;
    let mut all = lines(&capture("KRAKEN.ws.50.0"));
    // Delete one update: the pair's next checksum cannot match.
    let i = all.iter().position(|l| l.contains(",\"c\":\"")).unwrap();
    all.remove(i);
    let frames = frames_of(&all);
    let (r, received) = run("kraken", vec![full(&frames)], |r, received| {
        !r.integrity().is_empty() && received >= 4
    })
    .await;
    assert!(
        matches!(r.integrity()[0], IntegrityError::Checksum { .. }),
        "{:?}",
        r.integrity()
    );
    assert!(
        received >= 4,
        "resubscribe sent after the subscriptions: {received}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitfinex_reconnects_and_detects_a_gap_by_sequence() {
    reconnect_and_resync("bitfinex", "BITFINEX.ws.11.0", 7).await;
    let mut all = lines(&capture("BITFINEX.ws.11.0"));
    let i = all
        .iter()
        .rposition(|l| l.contains(": [") && !l.contains("\"hb\""))
        .unwrap();
    all.remove(i - 5);
    let frames = frames_of(&all);
    let (r, _) = run("bitfinex", vec![full(&frames), full(&frames)], |r, _| {
        r.connects() >= 2
    })
    .await;
    assert!(
        r.disconnect_reasons()
            .iter()
            .any(|d| d.contains("sequence gap")),
        "{:?}",
        r.disconnect_reasons()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coinbase_reconnects_and_resyncs() {
    // The recorded (Pro) level2 feed has no sequence numbers: a lost message cannot be seen;
    // reconnects are the integrity mechanism there.
    reconnect_and_resync("coinbase", "COINBASE.ws.28.0", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bybit_reconnects_and_resyncs() {
    // The recorded legacy feed's cross_seq is not contiguous, so gaps are not detectable.
    reconnect_and_resync("bybit", "BYBIT.ws.25.0", 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htx_gzip_frames_reconnect_and_pings_are_answered() {
    // depth.step0 pushes a full image each time; gaps cannot corrupt a book.
    // (trioeth quotes prices below 1e-8 and is skipped as a typed number error: 9 books, not 10.)
    reconnect_and_resync("htx", "HUOBI.ws.44.0", 9).await;
    // Every server ping of the recording (read from its decoded twin) is answered with a pong
    // carrying the same value.
    let pongs: Vec<String> = lines(&capture("HUOBI.ws.44.0.decoded"))
        .iter()
        .filter_map(|l| match parse_capture_line(l).unwrap() {
            CaptureLine::Received {
                payload: Payload::Text(t),
                ..
            } => {
                let v: serde_json::Value = serde_json::from_str(&t).ok()?;
                Some(format!(r#"{{"pong":{}}}"#, v.get("ping")?))
            }
            _ => None,
        })
        .collect();
    assert!(pongs.len() >= 2, "{pongs:?}");
    let frames = frames_of(&lines(&capture("HUOBI.ws.44.0")));
    let (_, lb) = run_setup(Setup::new("htx", vec![full(&frames)]), |_, lb| {
        let got = lb.received();
        pongs.iter().all(|p| got.contains(p))
    })
    .await;
    let got = lb.received();
    for p in &pongs {
        assert!(got.contains(p), "{p} not answered: {got:?}");
    }
}

fn idle_script() -> Script {
    Script::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_pings_reach_the_server() {
    for (venue, ping) in [
        ("kraken", r#"{"method":"ping"}"#),
        ("bybit", r#"{"op":"ping"}"#),
        ("mexc", r#"{"method":"PING"}"#),
    ] {
        let mut setup = Setup::new(venue, vec![idle_script()]);
        setup.keepalive = Some(Duration::from_millis(100));
        let (r, lb) = run_setup(setup, |_, lb| {
            lb.received().iter().filter(|t| t.as_str() == ping).count() >= 2
        })
        .await;
        let got = lb.received();
        assert!(
            got.iter().filter(|t| t.as_str() == ping).count() >= 2,
            "{venue}: {got:?}"
        );
        assert_eq!(r.connects(), 1, "{venue}: pings keep one connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_dropped_and_the_runner_reconnects() {
    let mut setup = Setup::new("kraken", vec![idle_script()]);
    setup.keepalive = Some(Duration::from_millis(100));
    setup.idle_timeout = Duration::from_millis(300);
    let (r, lb) = run_setup(setup, |r, _| r.connects() >= 2).await;
    assert!(r.connects() >= 2, "{:?}", r.disconnect_reasons());
    assert!(lb.connections.load(Ordering::SeqCst) >= 2);
    assert_eq!(r.disconnect_reasons()[0], "no frame for 300 ms");
}

fn levels_json(book: &OrderBook, side: Side) -> String {
    let rows: Vec<String> = book
        .levels(side)
        .map(|l| format!(r#"["{}","{}"]"#, l.price, l.qty))
        .collect();
    format!("[{}]", rows.join(","))
}

fn sides(book: &OrderBook) -> (Vec<Level>, Vec<Level>, u64) {
    (
        book.levels(Side::Buy).collect(),
        book.levels(Side::Sell).collect(),
        book.last_update_id,
    )
}

const KUCOIN_DEPTH: &str = "/api/v1/market/orderbook/level2_100";

/// The recorded KuCoin REST snapshots by exchange symbol, and the books the whole recording
/// leads to (recorded snapshot plus every diff) by instrument.
fn kucoin_truth() -> (HashMap<String, String>, HashMap<String, OrderBook>) {
    let mut recorded = HashMap::new();
    for l in lines(&capture("KUCOIN.http.0.0")) {
        if let Ok(CaptureLine::Rest { url, body, .. }) = parse_capture_line(&l)
            && let Some((_, sym)) = url.split_once("symbol=")
        {
            recorded.insert(sym.to_string(), body);
        }
    }
    let (_, session, _) = venues_common::replay(
        "kucoin",
        &[capture("KUCOIN.ws.1.0"), capture("KUCOIN.http.0.0")],
    );
    let finals: HashMap<String, OrderBook> = session
        .book_instruments()
        .filter_map(|i| Some((i.to_string(), session.book(i)?.clone())))
        .collect();
    assert!(finals.len() >= 6, "{:?}", finals.keys());
    (recorded, finals)
}

/// KuCoin's REST depth: the recorded snapshot first, then (a refetch after a gap or a
/// reconnect) the book as of the end of the recording, numbered with its last sequence.
fn kucoin_rest(recorded: HashMap<String, String>, finals: HashMap<String, OrderBook>) -> RestFn {
    Box::new(move |req| {
        if req.path != KUCOIN_DEPTH {
            return None;
        }
        if req.count == 1 {
            return recorded.get(req.symbol).cloned();
        }
        let book = finals.get(&req.symbol.replace('-', "/"))?;
        Some(format!(
            r#"{{"code":"200000","data":{{"time":0,"sequence":"{}","bids":{},"asks":{}}}}}"#,
            book.last_update_id,
            levels_json(book, Side::Buy),
            levels_json(book, Side::Sell)
        ))
    })
}

fn all_books_final(r: &Run, finals: &HashMap<String, OrderBook>) -> bool {
    finals
        .iter()
        .all(|(i, b)| r.latest.get(i).is_some_and(|l| sides(l) == sides(b)))
}

fn kucoin_setup(scripts: Vec<Script>) -> (Setup, HashMap<String, OrderBook>) {
    let (recorded, finals) = kucoin_truth();
    let mut setup = Setup::new("kucoin", scripts);
    setup.rest = kucoin_rest(recorded, finals.clone());
    // Only the bullet token's endpoint leads to the loopback websocket.
    setup.ws_url = Some("ws://127.0.0.1:9/no-token".into());
    // Short, so the test sees the token's ping interval honoured.
    setup.ping_ms = (200, 10_000);
    (setup, finals)
}

const KUCOIN_PING: &str = r#"{"id":"ping","type":"ping"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kucoin_reconnects_and_refetches_after_a_gap() {
    let mut all = lines(&capture("KUCOIN.ws.1.0"));
    // The last l2update of BCHSV-USDT but one: well after its recorded snapshot.
    venues_common::remove_second_last(&mut all, |l| {
        l.contains("trade.l2update") && l.contains("BCHSV-USDT")
    });
    let (setup, finals) = kucoin_setup(vec![full(&frames_of(&all))]);
    let (r, lb) = run_setup(setup, |r, lb| {
        !r.integrity().is_empty()
            && all_books_final(r, &finals)
            && lb.received().iter().any(|t| t == KUCOIN_PING)
    })
    .await;
    assert!(
        lb.bullets.load(Ordering::SeqCst) >= 1,
        "bullet token requested"
    );
    assert_eq!(r.connects(), 1);
    let gaps: Vec<(&String, &IntegrityError)> = r
        .events
        .iter()
        .filter_map(|e| match e {
            RunnerEvent::Event(NormEvent::Integrity { instrument, error }) => {
                Some((instrument, error))
            }
            _ => None,
        })
        .collect();
    assert!(
        gaps.iter()
            .any(|(i, e)| i.as_str() == "BCHSV/USDT" && matches!(e, IntegrityError::Gap { .. })),
        "{gaps:?}"
    );
    assert!(
        lb.requests(KUCOIN_DEPTH, "BCHSV-USDT") >= 2,
        "snapshot fetched again"
    );
    // The refetched snapshot makes the book what the whole (undamaged) recording leads to.
    for (i, b) in &finals {
        assert_eq!(sides(&r.latest[i]), sides(b), "{i}");
    }
    assert!(
        lb.received().iter().any(|t| t == KUCOIN_PING),
        "ping at the token's 200 ms interval"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kucoin_reconnects_and_resyncs_through_a_new_token() {
    let frames = frames_of(&lines(&capture("KUCOIN.ws.1.0")));
    let half = Script {
        frames: frames.clone(),
        close_after: Some(frames.len() / 2),
        ..Script::default()
    };
    let (setup, finals) = kucoin_setup(vec![half, full(&frames)]);
    let syms: Vec<String> = finals.keys().map(|i| i.replace('/', "-")).collect();
    let (r, lb) = run_setup(setup, |r, lb| {
        r.connects() >= 2
            && all_books_final(r, &finals)
            && syms.iter().all(|s| lb.requests(KUCOIN_DEPTH, s) >= 2)
    })
    .await;
    assert!(r.connects() >= 2, "{:?}", r.disconnect_reasons());
    assert!(
        lb.bullets.load(Ordering::SeqCst) >= 2,
        "a token per connection"
    );
    for s in &syms {
        assert!(lb.requests(KUCOIN_DEPTH, s) >= 2, "{s}: snapshot refetched");
    }
    for (i, b) in &finals {
        assert_eq!(sides(&r.latest[i]), sides(b), "{i}");
    }
    assert!(r.integrity().is_empty(), "{:?}", r.integrity());
}

/// One book row as written in a REST body: `(price, quantity)`.
type Row = (String, String);

/// Synthetic MEXC book (no protobuf recording exists): version `v` sets the bid at
/// `90 + v % 5` to `v`; a bid at 80 and an ask at 100 never change.
fn mexc_truth(version: u64) -> (Vec<Row>, Vec<Row>) {
    let mut bids: std::collections::BTreeMap<u64, u64> = [(80, 1)].into();
    for v in 1..=version {
        bids.insert(90 + v % 5, v);
    }
    (
        bids.iter()
            .map(|(p, q)| (format!("{p}"), format!("{q}")))
            .collect(),
        vec![("100".into(), "2".into())],
    )
}

fn mexc_frame(v: u64) -> Message {
    use mmtrader::feeds::mexc::proto::{Body, DepthItem, PublicAggreDepths};
    let bytes = mmtrader::feeds::mexc::protocol::encode_push(
        "ETHUSDT",
        "spot@public.aggre.depth.v3.api.pb@100ms@ETHUSDT",
        Body::PublicAggreDepths(PublicAggreDepths {
            asks: vec![],
            bids: vec![DepthItem {
                price: format!("{}", 90 + v % 5),
                quantity: format!("{v}"),
            }],
            event_type: String::new(),
            from_version: v.to_string(),
            to_version: v.to_string(),
        }),
        1_700_000_000_000 + v as i64,
    );
    Message::binary(bytes)
}

fn mexc_script(versions: &[u64]) -> Script {
    Script {
        frames: versions.iter().map(|&v| mexc_frame(v)).collect(),
        tags: versions.to_vec(),
        // The first snapshot is answered while the book is still at version 5.
        waits: vec![(5, 1)],
        ..Script::default()
    }
}

/// MEXC's REST depth: the book as of the last version the websocket sent (request 1 of
/// `fail_first` answers 404).
fn mexc_rest(fail_first: bool) -> RestFn {
    Box::new(move |req| {
        if req.path != "/api/v3/depth" || req.symbol != "ETHUSDT" || (fail_first && req.count == 1)
        {
            return None;
        }
        let (bids, asks) = mexc_truth(req.last_tag);
        let row = |l: &[Row]| {
            l.iter()
                .map(|(p, q)| format!(r#"["{p}","{q}"]"#))
                .collect::<Vec<_>>()
                .join(",")
        };
        Some(format!(
            r#"{{"lastUpdateId":{},"bids":[{}],"asks":[{}]}}"#,
            req.last_tag,
            row(&bids),
            row(&asks)
        ))
    })
}

fn mexc_is_at(r: &Run, version: u64) -> bool {
    r.latest.get("ETH/USDT").is_some_and(|b| {
        let (bids, asks) = mexc_truth(version);
        let got = sides(b);
        let fmt = |l: &[Level]| -> Vec<Row> {
            l.iter()
                .map(|x| (x.price.to_string(), x.qty.to_string()))
                .collect()
        };
        let mut want_bids = bids;
        want_bids.reverse();
        got.2 == version && fmt(&got.0) == want_bids && fmt(&got.1) == asks
    })
}

fn mexc_setup(scripts: Vec<Script>, fail_first: bool) -> Setup {
    let mut setup = Setup::new("mexc", scripts);
    setup.rest = mexc_rest(fail_first);
    setup.instruments = Some(vec!["ETH/USDT".into()]);
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mexc_protobuf_gap_refetches_the_snapshot() {
    // Version 15 is never sent: the diff from 16 does not follow 14.
    let versions: Vec<u64> = (1..=30).filter(|v| *v != 15).collect();
    let (r, lb) = run_setup(mexc_setup(vec![mexc_script(&versions)], false), |r, _| {
        mexc_is_at(r, 30)
    })
    .await;
    assert_eq!(
        r.integrity(),
        [&IntegrityError::Gap {
            expected: 15,
            got: 16
        }]
    );
    assert!(lb.requests("/api/v3/depth", "ETHUSDT") >= 2);
    assert!(mexc_is_at(&r, 30), "{:?}", r.latest.get("ETH/USDT"));
    assert_eq!(r.connects(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mexc_protobuf_reconnects_and_retries_a_failed_snapshot() {
    let first: Vec<u64> = (1..=20).collect();
    let mut dropped = mexc_script(&first);
    // The first snapshot answers 404; the connection is dropped only after its retry.
    dropped.waits.push((first.len(), 2));
    dropped.close_after = Some(first.len());
    let second: Vec<u64> = (21..=40).collect();
    let mut again = mexc_script(&second);
    again.waits.clear();
    let (r, lb) = run_setup(mexc_setup(vec![dropped, again], true), |r, _| {
        r.connects() >= 2 && mexc_is_at(r, 40)
    })
    .await;
    assert!(r.connects() >= 2);
    assert!(!r.disconnect_reasons().is_empty());
    assert!(mexc_is_at(&r, 40), "{:?}", r.latest.get("ETH/USDT"));
    assert!(r.integrity().is_empty(), "{:?}", r.integrity());
    // The 404 was reported and retried.
    assert!(r.events.iter().any(|e| matches!(
        e,
        RunnerEvent::Malformed {
            kind: "snapshot",
            ..
        }
    )));
    assert!(lb.requests("/api/v3/depth", "ETHUSDT") >= 3);
}

/// Coinbase Advanced Trade `l2_data` (synthetic, from the documented shape: the recording is
/// the legacy feed without sequence numbers).
fn coinbase_l2(seq: u64, kind: &str, price: &str, qty: &str) -> Message {
    Message::text(format!(
        r#"{{"channel":"l2_data","timestamp":"2026-04-07T14:30:01.5Z","sequence_num":{seq},"events":[{{"type":"{kind}","product_id":"BTC-USD","updates":[{{"side":"bid","event_time":"x","price_level":"{price}","new_quantity":"{qty}"}},{{"side":"offer","event_time":"x","price_level":"69000.00","new_quantity":"1"}}]}}]}}"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coinbase_advanced_trade_sequence_gap_reconnects() {
    let mut gapped = vec![coinbase_l2(0, "snapshot", "68900.00", "2")];
    for s in 1..=5 {
        gapped.push(coinbase_l2(s, "update", &format!("{}.00", 68_800 + s), "1"));
    }
    // sequence_num 6 is lost.
    gapped.push(coinbase_l2(7, "update", "68810.00", "1"));
    let clean = vec![
        coinbase_l2(0, "snapshot", "68950.00", "3"),
        coinbase_l2(1, "update", "68951.00", "4"),
    ];
    let (r, _) = run_setup(
        Setup::new("coinbase", vec![full(&gapped), full(&clean)]),
        |r, _| {
            r.connects() >= 2
                && r.latest
                    .get("BTC/USD")
                    .is_some_and(|b| b.best_bid().is_some_and(|l| l.price.to_string() == "68951"))
        },
    )
    .await;
    assert!(r.connects() >= 2);
    assert!(
        r.disconnect_reasons()[0].contains("connection sequence gap: expected 6, got 7"),
        "{:?}",
        r.disconnect_reasons()
    );
    let best = r.latest["BTC/USD"].best_bid().unwrap();
    assert_eq!(best.price.to_string(), "68951");
}

/// Bybit v5 `orderbook.50` (synthetic, from the documented shape: the recording is the legacy
/// v2 feed whose cross_seq is not contiguous).
fn bybit_v5(kind: &str, u: u64, bid: &str) -> Message {
    Message::text(format!(
        r#"{{"topic":"orderbook.50.BTCUSDT","type":"{kind}","ts":1,"data":{{"s":"BTCUSDT","b":[["{bid}","1.5"]],"a":[["17440.50","2"]],"u":{u},"seq":9}},"cts":1}}"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bybit_v5_update_id_gap_resubscribes() {
    let mut frames = vec![bybit_v5("snapshot", 1, "17430.00")];
    for u in 2..=8 {
        frames.push(bybit_v5("delta", u, &format!("{}.00", 17_420 + u)));
    }
    // u = 9 is lost; the resubscription's fresh snapshot follows.
    frames.push(bybit_v5("delta", 10, "17429.00"));
    frames.push(bybit_v5("snapshot", 20, "17435.00"));
    frames.push(bybit_v5("delta", 21, "17436.00"));
    let mut setup = Setup::new("bybit", vec![full(&frames)]);
    setup.instruments = Some(vec!["BTC/USDT".into()]);
    let subs = |lb: &Loopback| {
        lb.received()
            .iter()
            .filter(|t| t.contains("orderbook.50.BTCUSDT") && t.contains("subscribe"))
            .count()
    };
    let (r, lb) = run_setup(setup, |r, lb| {
        subs(lb) >= 2
            && r.latest
                .get("BTC/USDT")
                .is_some_and(|b| b.last_update_id == 21)
    })
    .await;
    assert_eq!(
        r.integrity(),
        [&IntegrityError::Gap {
            expected: 9,
            got: 10
        }]
    );
    assert!(subs(&lb) >= 2, "book resubscribed: {:?}", lb.received());
    let b = &r.latest["BTC/USDT"];
    assert_eq!(b.last_update_id, 21);
    assert_eq!(b.best_bid().unwrap().price.to_string(), "17436");
    assert_eq!(r.connects(), 1);
}

fn mexc_deal(k: u64) -> Message {
    use mmtrader::feeds::mexc::proto::{Body, DealItem, PublicAggreDeals};
    let time = 1_700_000_000_000 + k as i64;
    Message::binary(mmtrader::feeds::mexc::protocol::encode_push(
        "ETHUSDT",
        "spot@public.aggre.deals.v3.api.pb@100ms@ETHUSDT",
        Body::PublicAggreDeals(PublicAggreDeals {
            deals: vec![DealItem {
                price: "77.77".into(),
                quantity: "0.001".into(),
                trade_type: 1,
                time,
                trade_id: k.to_string(),
            }],
            event_type: String::new(),
        }),
        time,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_keep_flowing_while_a_failing_snapshot_waits_for_its_retry() {
    // The REST depth always fails; right after the first failure the server streams many
    // trades. A retry that paused the reading (a sleep inside the loop) would take a pause per
    // failed attempt to get through them, far past this test's guard; a retry timer in the
    // loop reads them at once.
    const TRADES: u64 = 40_000;
    let mut frames = vec![mexc_frame(1)];
    frames.extend((0..TRADES).map(mexc_deal));
    let script = Script {
        frames,
        waits: vec![(1, 1)],
        ..Script::default()
    };
    let mut setup = Setup::new("mexc", vec![script]);
    setup.instruments = Some(vec!["ETH/USDT".into()]);
    let (r, lb) = run_setup(setup, |r, _| r.trades == TRADES).await;
    assert_eq!(r.trades, TRADES);
    assert!(lb.requests("/api/v3/depth", "ETHUSDT") >= 1);
    assert!(r.events.iter().any(|e| matches!(
        e,
        RunnerEvent::Malformed {
            kind: "snapshot",
            ..
        }
    )));
    assert!(r.latest.is_empty(), "no snapshot, no book");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kucoin_unanswered_ping_past_the_token_timeout_reconnects() {
    // The server never answers: the token's 300 ms ping timeout ends the connection long
    // before the two-minute idle rule would.
    let (mut setup, _) = kucoin_setup(vec![idle_script()]);
    setup.ping_ms = (100, 300);
    let (r, lb) = run_setup(setup, |r, _| r.connects() >= 2).await;
    assert!(r.connects() >= 2, "{:?}", r.disconnect_reasons());
    assert_eq!(
        r.disconnect_reasons()[0],
        "no answer to a ping within 300 ms"
    );
    assert!(lb.received().iter().any(|t| t == KUCOIN_PING));
}

//! The HTTP API through a real HTTP client and a real WebSocket client: bearer-token policy,
//! the OpenAPI document, parameter errors, and routes answering without a database.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mmtrader::api::auth::ApiToken;
use mmtrader::api::openapi;
use mmtrader::api::server::{ApiError, ApiHandle, ApiState, serve};
use mmtrader::app::pipeline::MarketTaskState;
use mmtrader::collector::metrics::Metrics;
use mmtrader::config::Config;
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn state() -> (ApiState, broadcast::Sender<Arc<str>>) {
    let cfg = Config::default();
    let snap = MarketTaskState::new(&cfg, "test").snapshot(1_000, false);
    let (_tx, rx) = watch::channel(Arc::new(snap));
    // The sender must outlive the test for the receiver to keep its value.
    std::mem::forget(_tx);
    let (live, _) = broadcast::channel(16);
    (
        ApiState {
            snapshots: rx,
            exchange: "sim".into(),
            database_url: None,
            connect_timeout: Duration::from_secs(1),
            metrics: Arc::new(Metrics::new()),
            live: live.clone(),
        },
        live,
    )
}

async fn start(token: Option<&str>) -> (ApiHandle, broadcast::Sender<Arc<str>>) {
    let (st, live) = state();
    let api = serve(
        "127.0.0.1:0",
        token.and_then(ApiToken::new),
        "MMTRADER_API_TOKEN",
        st,
    )
    .await
    .unwrap();
    (api, live)
}

#[tokio::test]
async fn a_non_loopback_bind_needs_a_token() {
    let (st, _) = state();
    let err = serve("0.0.0.0:0", None, "MMTRADER_API_TOKEN", st)
        .await
        .err()
        .expect("must refuse");
    assert!(matches!(err, ApiError::Auth(_)), "{err}");
    assert!(err.to_string().contains("MMTRADER_API_TOKEN"), "{err}");
    let (st, _) = state();
    let api = serve("0.0.0.0:0", ApiToken::new("t0ken"), "X", st)
        .await
        .unwrap();
    api.shutdown().await;
}

#[tokio::test]
async fn requests_without_the_bearer_token_get_401() {
    let (api, live) = start(Some("s3cret-token")).await;
    let base = format!("http://{}", api.local_addr());
    let http = reqwest::Client::new();
    for path in ["/health", "/metrics", "/openapi.json", "/api/v1/status"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth("s3cret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // WebSocket: refused without the token, streams with it.
    let url = format!("ws://{}/api/v1/stream", api.local_addr());
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(refused.is_err());
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer s3cret-token".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // The subscriber is registered once the upgrade completes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while live.receiver_count() == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    live.send(Arc::from("{\"type\":\"trade\",\"id\":1}"))
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        msg.into_text().unwrap().as_str(),
        "{\"type\":\"trade\",\"id\":1}"
    );
    api.shutdown().await;
}

#[tokio::test]
async fn openapi_health_and_parameter_errors() {
    let (api, _live) = start(None).await;
    let base = format!("http://{}", api.local_addr());
    let http = reqwest::Client::new();
    let doc: serde_json::Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc, openapi::document());

    let health: serde_json::Value = http
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["feed_running"], false);

    let symbols: Vec<String> = http
        .get(format!("{base}/api/v1/symbols"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(symbols, ["ETHUSDT", "BTCUSDT"]);

    for (path, code) in [
        ("/api/v1/symbols/ETHUSDT/cob", 404),
        ("/api/v1/symbols/NOPE/cob", 404),
        ("/api/v1/symbols/ETHUSDT/heatmap?rows=5", 200),
        ("/api/v1/symbols/ETHUSDT/trades?from=10&to=5", 400),
        ("/api/v1/symbols/ETHUSDT/trades?from=0&to=5&limit=0", 400),
        (
            "/api/v1/symbols/ETHUSDT/candles?from=0&to=5&timeframe=2m",
            400,
        ),
        ("/api/v1/symbols/ETHUSDT/trades?from=0&to=5", 503),
        ("/api/v1/symbols/ETHUSDT/trades?from=x&to=5", 400),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), code, "{path}");
        if code != 200 && code != 400 || path.contains("limit") {
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(body["error"].is_string(), "{path}: {body}");
        }
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("mmtrader_process_resident_memory_bytes"));
    api.shutdown().await;
}

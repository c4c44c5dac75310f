//! REST client for Binance-protocol exchanges that respects request weights and bans.
//!
//! Binance counts request weight per IP per minute and reports it in `X-MBX-USED-WEIGHT-1M`;
//! exceeding it gives HTTP 429 with `Retry-After`, and continuing after that gives 418 (an IP ban
//! escalating from minutes to days). The client therefore stops sending on its own before the
//! limit and refuses locally while a 429/418 back-off is in force.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A REST failure, classified for retry decisions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RestError {
    /// The server answered with an error status (and Binance's `code`/`msg` when present).
    #[error("HTTP {status} from {path}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Request path (never the query: it may carry a signature).
        path: String,
        /// Exchange error text.
        message: String,
    },
    /// HTTP 429: over the request-weight limit; wait `retry_after`.
    #[error("rate limited on {path}; retry after {retry_after:?}")]
    RateLimited {
        /// Request path.
        path: String,
        /// Server-advised wait.
        retry_after: Duration,
    },
    /// HTTP 418 or a local refusal while a back-off is in force.
    #[error("requests suspended for {retry_after:?} after a rate-limit response")]
    Suspended {
        /// Time left before requests may resume.
        retry_after: Duration,
    },
    /// Connection, TLS or timeout failure.
    #[error("request to {path} failed: {message}")]
    Transport {
        /// Request path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl RestError {
    /// How long to wait before trying again, when the error says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RestError::RateLimited { retry_after, .. } | RestError::Suspended { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct RateState {
    used_weight_1m: u32,
    window_started: Option<Instant>,
    suspended_until: Option<Instant>,
}

/// Weight-aware REST client for one exchange base URL.
#[derive(Debug)]
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    weight_limit_1m: u32,
    state: Mutex<RateState>,
}

/// Fraction of the weight limit the client allows itself before pausing until the next minute.
const WEIGHT_HEADROOM: f64 = 0.9;

impl RestClient {
    /// A client for `base` (e.g. `https://api.binance.com`) with a per-minute weight budget.
    pub fn new(base: &str, timeout: Duration, weight_limit_1m: u32) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("mmtrader/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            weight_limit_1m: weight_limit_1m.max(1),
            state: Mutex::new(RateState::default()),
        })
    }

    /// Base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Weight used in the current minute, as last reported by the server.
    pub fn used_weight(&self) -> u32 {
        self.state.lock().map(|s| s.used_weight_1m).unwrap_or(0)
    }

    /// GET `path?query` costing `weight`; returns the body text of a 2xx answer.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        weight: u32,
    ) -> Result<String, RestError> {
        self.wait_for_budget(weight).await?;
        let url = format!("{}{}", self.base, path);
        let resp =
            self.http
                .get(&url)
                .query(query)
                .send()
                .await
                .map_err(|e| RestError::Transport {
                    path: path.to_string(),
                    message: describe(&e),
                })?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let used = header("x-mbx-used-weight-1m").and_then(|v| v.parse::<u32>().ok());
        let retry_after = header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(u) = used {
                s.used_weight_1m = u;
            }
            if status == 429 || status == 418 {
                let wait = retry_after.unwrap_or(Duration::from_secs(60));
                s.suspended_until = Some(Instant::now() + wait);
            }
        }
        let body = resp.text().await.map_err(|e| RestError::Transport {
            path: path.to_string(),
            message: describe(&e),
        })?;
        match status {
            200..=299 => Ok(body),
            429 => Err(RestError::RateLimited {
                path: path.to_string(),
                retry_after: retry_after.unwrap_or(Duration::from_secs(60)),
            }),
            418 => Err(RestError::Suspended {
                retry_after: retry_after.unwrap_or(Duration::from_secs(120)),
            }),
            _ => Err(RestError::Status {
                status,
                path: path.to_string(),
                message: error_message(&body),
            }),
        }
    }

    async fn wait_for_budget(&self, weight: u32) -> Result<(), RestError> {
        let pause = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if let Some(until) = s.suspended_until {
                if until > now {
                    return Err(RestError::Suspended {
                        retry_after: until - now,
                    });
                }
                s.suspended_until = None;
            }
            let started = *s.window_started.get_or_insert(now);
            if now.duration_since(started) >= Duration::from_secs(60) {
                s.window_started = Some(now);
                s.used_weight_1m = 0;
            }
            let budget = (self.weight_limit_1m as f64 * WEIGHT_HEADROOM) as u32;
            if s.used_weight_1m.saturating_add(weight) > budget {
                let next_window = started + Duration::from_secs(60);
                s.window_started = Some(next_window);
                s.used_weight_1m = 0;
                Some(next_window.saturating_duration_since(now))
            } else {
                s.used_weight_1m += weight;
                None
            }
        };
        if let Some(d) = pause {
            tracing::warn!(
                wait_ms = d.as_millis() as u64,
                "REST weight budget nearly spent; pausing"
            );
            tokio::time::sleep(d).await;
        }
        Ok(())
    }
}

fn describe(e: &reqwest::Error) -> String {
    // reqwest's Display includes the full URL; keep only the kind so signed queries never leak.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request error"
    };
    let mut source = std::error::Error::source(e);
    let mut root = String::new();
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    if root.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {root}")
    }
}

fn error_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct BinanceError {
        code: i64,
        msg: String,
    }
    match serde_json::from_str::<BinanceError>(body) {
        Ok(e) => format!("{} (code {})", e.msg, e.code),
        Err(_) => body.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn reads_weight_and_backs_off_after_429() {
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        let app = axum::Router::new()
            .route(
                "/ok",
                get(|| async {
                    let mut hm = HeaderMap::new();
                    hm.insert("X-MBX-USED-WEIGHT-1M", "37".parse().unwrap());
                    (hm, "{}")
                }),
            )
            .route(
                "/limited",
                get(move || {
                    h.fetch_add(1, Ordering::SeqCst);
                    async {
                        let mut hm = HeaderMap::new();
                        hm.insert("Retry-After", "30".parse().unwrap());
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            hm,
                            "{\"code\":-1003,\"msg\":\"Too many\"}",
                        )
                    }
                }),
            )
            .route(
                "/bad",
                get(|| async {
                    (
                        StatusCode::BAD_REQUEST,
                        "{\"code\":-1121,\"msg\":\"Invalid symbol.\"}",
                    )
                }),
            );
        let base = serve(app).await;
        let c = RestClient::new(&base, Duration::from_secs(5), 6000).unwrap();
        assert_eq!(c.get("/ok", &[], 1).await.unwrap(), "{}");
        assert_eq!(c.used_weight(), 37);
        let e = c
            .get("/bad", &[("symbol", "X".into())], 1)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("Invalid symbol. (code -1121)"),
            "{e}"
        );
        let e = c.get("/limited", &[], 1).await.unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
        // While the back-off is in force nothing is sent.
        let e = c.get("/ok", &[], 1).await.unwrap_err();
        assert!(matches!(e, RestError::Suspended { .. }), "{e}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn transport_errors_do_not_leak_the_query() {
        let c = RestClient::new("http://127.0.0.1:9", Duration::from_secs(2), 6000).unwrap();
        let e = c
            .get("/api/v3/order", &[("signature", "SECRET".into())], 1)
            .await
            .unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }
}

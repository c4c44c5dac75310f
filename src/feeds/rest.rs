//! REST client for Binance-protocol exchanges that respects request weights and bans.
//!
//! Binance counts request weight per IP per minute and reports it in `X-MBX-USED-WEIGHT-1M`;
//! exceeding it gives HTTP 429 with `Retry-After`, and continuing after that gives 418 (an IP ban
//! escalating from minutes to days). The client therefore stops sending on its own before the
//! limit and refuses locally while a 429/418 back-off is in force ([`WeightLimiter`], shared
//! with the order transport).

use std::sync::Arc;
use std::time::Duration;

use crate::net::rate_limit::{
    Reply, SendError, Suspended, Throttle, WeightLimiter, http_client, transport_causes,
};

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

/// Weight-aware REST client for one exchange base URL.
#[derive(Debug)]
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    limiter: Arc<WeightLimiter>,
}

impl RestClient {
    /// A client for `base` (e.g. `https://api.binance.com`) with a per-minute weight budget.
    pub fn new(base: &str, timeout: Duration, weight_limit_1m: u32) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        Ok(Self {
            http: http_client(timeout)?,
            limiter: WeightLimiter::shared_for(&base, weight_limit_1m),
            base,
        })
    }

    /// The same client counting against `limiter` (the IP's budget shared with other clients)
    /// instead of its own.
    pub fn with_limiter(mut self, limiter: Arc<WeightLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// The weight budget this client counts against.
    pub fn limiter(&self) -> &Arc<WeightLimiter> {
        &self.limiter
    }

    /// Base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Weight used in the current minute, as last reported by the server.
    pub fn used_weight(&self) -> u32 {
        self.limiter.used_weight()
    }

    /// GET `path?query` costing `weight`; returns the body text of a 2xx answer.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        weight: u32,
    ) -> Result<String, RestError> {
        let req = self.http.get(format!("{}{}", self.base, path)).query(query);
        match self.limiter.send(req, weight).await {
            Ok(Reply::Success(body)) => Ok(body),
            Ok(Reply::Throttled(Throttle::RateLimited(retry_after))) => {
                Err(RestError::RateLimited {
                    path: path.to_string(),
                    retry_after,
                })
            }
            Ok(Reply::Throttled(Throttle::Banned(retry_after)))
            | Err(SendError::Suspended(Suspended(retry_after))) => {
                Err(RestError::Suspended { retry_after })
            }
            Ok(Reply::Failed { status, body }) => Err(RestError::Status {
                status,
                path: path.to_string(),
                message: error_message(&body),
            }),
            Err(SendError::Transport(e)) => Err(RestError::Transport {
                path: path.to_string(),
                message: describe(&e),
            }),
        }
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
    match transport_causes(e).last() {
        Some(root) if !root.is_empty() => format!("{kind}: {root}"),
        _ => kind.to_string(),
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
    async fn clients_sharing_a_limiter_share_the_back_off() {
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/limited",
            get(move || {
                h.fetch_add(1, Ordering::SeqCst);
                async {
                    (
                        StatusCode::IM_A_TEAPOT,
                        "{\"code\":-1003,\"msg\":\"Banned\"}",
                    )
                }
            }),
        );
        let base = serve(app).await;
        let a = RestClient::new(&base, Duration::from_secs(5), 6000).unwrap();
        let b = RestClient::new(&base, Duration::from_secs(5), 6000)
            .unwrap()
            .with_limiter(a.limiter().clone());
        let e = a.get("/limited", &[], 1).await.unwrap_err();
        assert_eq!(
            e.retry_after(),
            Some(crate::net::rate_limit::DEFAULT_BAN_WAIT)
        );
        let e = b.get("/limited", &[], 1).await.unwrap_err();
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

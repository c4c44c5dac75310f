//! Signed REST transport shared by the Binance-style spot clients.
//!
//! It owns what every signed call needs: the server-clock offset (from `GET /api/v3/time`,
//! re-synced and retried once when the exchange says the timestamp is outside recvWindow),
//! the request-weight budget (the [`WeightLimiter`] shared with `feeds::rest`), and errors that
//! never carry the signed query or the secret.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use reqwest::Method;

use crate::net::rate_limit::{
    Reply, SendError, Suspended, Throttle, WeightLimiter, http_client, transport_causes,
};

use super::signing::{Credentials, Query};
use super::wire::{WireError, parse_error};

/// What distinguishes one exchange's signed REST dialect from another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialect {
    /// Exchange name for messages.
    pub name: &'static str,
    /// Header carrying the API key.
    pub key_header: &'static str,
    /// Error codes meaning "timestamp outside recvWindow".
    pub timestamp_codes: &'static [i64],
    /// Error codes meaning "no such order".
    pub unknown_order_codes: &'static [i64],
    /// Error codes meaning "execution status unknown" (a timeout inside the exchange).
    pub unknown_status_codes: &'static [i64],
}

/// Binance spot.
pub const BINANCE: Dialect = Dialect {
    name: "binance",
    key_header: "X-MBX-APIKEY",
    timestamp_codes: &[-1021],
    unknown_order_codes: &[-2013, -2011],
    unknown_status_codes: &[-1007, -1006],
};

/// MEXC spot v3.
pub const MEXC: Dialect = Dialect {
    name: "mexc",
    key_header: "X-MEXC-APIKEY",
    timestamp_codes: &[700003, -1021],
    unknown_order_codes: &[-2011, -2013],
    unknown_status_codes: &[-1007],
};

/// A failed exchange call. Messages name the path, never the query (it carries the signature).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// The exchange refused the request (definitive).
    #[error("{exchange} rejected {path}: {msg} (code {code}, HTTP {status})")]
    Rejected {
        /// Exchange.
        exchange: &'static str,
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// Exchange error code.
        code: i64,
        /// Exchange message.
        msg: String,
    },
    /// The outcome is unknown: timeout, connection lost after sending, 5xx or -1007.
    #[error("{exchange} {path}: outcome unknown ({reason})")]
    Unknown {
        /// Exchange.
        exchange: &'static str,
        /// Request path.
        path: String,
        /// What happened.
        reason: String,
    },
    /// HTTP 429: the weight limit was hit; wait before retrying.
    #[error("{exchange} rate limit on {path}; retry after {retry_after:?}")]
    RateLimited {
        /// Exchange.
        exchange: &'static str,
        /// Request path.
        path: String,
        /// Advised wait.
        retry_after: Duration,
    },
    /// HTTP 418 or a local refusal while a back-off is in force.
    #[error("{exchange} requests suspended for {retry_after:?} after a rate-limit response")]
    Suspended {
        /// Exchange.
        exchange: &'static str,
        /// Time left.
        retry_after: Duration,
    },
    /// An order whose send was in doubt is still unknown to the exchange after the request
    /// can no longer execute (its timestamp + recvWindow + the visibility margin): it never
    /// reached the engine. Definitive; it was not resent.
    #[error("{exchange} {path}: not found {} s after sending; not resent", .waited_ms / 1000)]
    NotReceived {
        /// Exchange.
        exchange: &'static str,
        /// Request path.
        path: String,
        /// Time from the request's timestamp to the verdict, ms.
        waited_ms: i64,
    },
    /// The connection could not be made (nothing was sent).
    #[error("{exchange} {path}: connection failed: {reason}")]
    Connect {
        /// Exchange.
        exchange: &'static str,
        /// Request path.
        path: String,
        /// What happened.
        reason: String,
    },
    /// The reply could not be parsed.
    #[error("{exchange} {path}: {source}")]
    Decode {
        /// Exchange.
        exchange: &'static str,
        /// Request path.
        path: String,
        /// Parse failure.
        source: WireError,
    },
    /// The order breaks the instrument's filters (refused locally, nothing sent).
    #[error("order refused before sending: {0}")]
    Filter(#[from] crate::market::instrument::FilterError),
    /// The instrument is unknown to the client (exchangeInfo not loaded or symbol absent).
    #[error("unknown instrument {0}: load exchangeInfo first")]
    UnknownInstrument(String),
    /// The request cannot be expressed on this exchange (e.g. a stop order on MEXC spot).
    #[error("{exchange} does not support {what}")]
    Unsupported {
        /// Exchange.
        exchange: &'static str,
        /// What was asked.
        what: String,
    },
}

impl ExecError {
    /// The exchange's error code, when it sent one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the request may have taken effect although no success reply arrived.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Unknown { .. })
    }

    /// True when the exchange says it has no such order (`-2013`, or `-2011` on a cancel).
    pub fn is_unknown_order(&self, dialect: &Dialect) -> bool {
        self.code()
            .is_some_and(|c| dialect.unknown_order_codes.contains(&c))
    }
}

/// Signed REST transport for one exchange account.
pub struct SignedRest {
    http: reqwest::Client,
    base: String,
    creds: Credentials,
    dialect: Dialect,
    recv_window_ms: u64,
    offset_ms: AtomicI64,
    limiter: Arc<WeightLimiter>,
}

impl std::fmt::Debug for SignedRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRest")
            .field("exchange", &self.dialect.name)
            .field("base", &self.base)
            .field("creds", &self.creds)
            .field("recv_window_ms", &self.recv_window_ms)
            .field("offset_ms", &self.offset_ms.load(Ordering::Relaxed))
            .finish()
    }
}

/// Milliseconds since the UNIX epoch by the local clock.
pub fn local_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn classify_transport(dialect: &Dialect, path: &str, e: &reqwest::Error) -> ExecError {
    // reqwest's Display includes the URL (and so the signature): keep only the cause chain.
    let mut reason = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connect failed".to_string()
    } else {
        "transport error".to_string()
    };
    for cause in transport_causes(e) {
        reason = format!("{reason}: {cause}");
    }
    if e.is_connect() {
        ExecError::Connect {
            exchange: dialect.name,
            path: path.to_string(),
            reason,
        }
    } else {
        ExecError::Unknown {
            exchange: dialect.name,
            path: path.to_string(),
            reason,
        }
    }
}

impl SignedRest {
    /// A transport for `base` (e.g. `https://api.binance.com`).
    pub fn new(
        base: &str,
        creds: Credentials,
        dialect: Dialect,
        timeout: Duration,
        recv_window_ms: u64,
        weight_limit_1m: u32,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: http_client(timeout)?,
            base: base.trim_end_matches('/').to_string(),
            creds,
            limiter: WeightLimiter::shared_for(base, weight_limit_1m),
            dialect,
            recv_window_ms: recv_window_ms.clamp(1, 60_000),
            offset_ms: AtomicI64::new(0),
        })
    }

    /// The same transport counting against `limiter` (the IP's budget shared with other
    /// clients, e.g. the market-data client of the same host) instead of its own.
    pub fn with_limiter(mut self, limiter: Arc<WeightLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// The weight budget this transport counts against.
    pub fn limiter(&self) -> &Arc<WeightLimiter> {
        &self.limiter
    }

    /// The exchange dialect.
    pub fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    /// Base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Current estimate of `server time − local time`, ms.
    pub fn clock_offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }

    /// The server's clock as estimated here, ms.
    pub fn server_ms(&self) -> i64 {
        local_ms() + self.clock_offset_ms()
    }

    /// recvWindow sent with signed requests, ms.
    pub fn recv_window_ms(&self) -> u64 {
        self.recv_window_ms
    }

    /// Weight used in the current minute, as last reported.
    pub fn used_weight(&self) -> u32 {
        self.limiter.used_weight()
    }

    /// Measures the server clock (`GET /api/v3/time`) and stores the offset (midpoint of the
    /// round trip).
    pub async fn sync_time(&self) -> Result<i64, ExecError> {
        let before = local_ms();
        let body = self.send(Method::GET, "/api/v3/time", "", false, 1).await?;
        let after = local_ms();
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(rename = "serverTime")]
            server_time: i64,
        }
        let t: T = serde_json::from_str(&body).map_err(|e| ExecError::Decode {
            exchange: self.dialect.name,
            path: "/api/v3/time".into(),
            source: WireError::Malformed {
                what: "server time",
                reason: e.to_string(),
            },
        })?;
        let offset = t.server_time - (before + after) / 2;
        self.offset_ms.store(offset, Ordering::SeqCst);
        Ok(offset)
    }

    /// A signed call: `params` plus `recvWindow`, `timestamp` and `signature` in the query.
    /// A timestamp rejection re-syncs the clock and retries once.
    pub async fn signed(
        &self,
        method: Method,
        path: &str,
        params: &Query,
        weight: u32,
    ) -> Result<String, ExecError> {
        self.signed_stamped(method, path, params, weight).await.0
    }

    /// [`SignedRest::signed`], also giving the `timestamp` of the request the result belongs
    /// to (the last one sent): after it plus recvWindow the exchange no longer executes it, so
    /// an order whose outcome is unknown is judged against it.
    pub async fn signed_stamped(
        &self,
        method: Method,
        path: &str,
        params: &Query,
        weight: u32,
    ) -> (Result<String, ExecError>, i64) {
        let mut resynced = false;
        loop {
            let mut q = params.clone();
            let timestamp = self.server_ms();
            q.push("recvWindow", self.recv_window_ms.to_string());
            q.push("timestamp", timestamp.to_string());
            let signed = q.signed(&self.creds.secret);
            match self.send(method.clone(), path, &signed, true, weight).await {
                Err(e)
                    if !resynced
                        && e.code()
                            .is_some_and(|c| self.dialect.timestamp_codes.contains(&c)) =>
                {
                    tracing::warn!(
                        exchange = self.dialect.name,
                        path,
                        "timestamp rejected; re-syncing the clock"
                    );
                    if let Err(e) = self.sync_time().await {
                        return (Err(e), timestamp);
                    }
                    resynced = true;
                }
                r => return (r, timestamp),
            }
        }
    }

    /// A call authenticated by the API key header only (listen keys).
    pub async fn keyed(
        &self,
        method: Method,
        path: &str,
        params: &Query,
        weight: u32,
    ) -> Result<String, ExecError> {
        self.send(method, path, params.as_str(), true, weight).await
    }

    /// Sends one request (with the API key header when `keyed`) within the weight budget.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &str,
        keyed: bool,
        weight: u32,
    ) -> Result<String, ExecError> {
        let exchange = self.dialect.name;
        let url = if query.is_empty() {
            format!("{}{}", self.base, path)
        } else {
            format!("{}{}?{}", self.base, path, query)
        };
        let mut req = self.http.request(method, &url);
        if keyed {
            req = req.header(self.dialect.key_header, &self.creds.api_key);
        }
        match self.limiter.send(req, weight).await {
            Ok(Reply::Success(body)) => Ok(body),
            Ok(Reply::Throttled(Throttle::RateLimited(retry_after))) => {
                Err(ExecError::RateLimited {
                    exchange,
                    path: path.to_string(),
                    retry_after,
                })
            }
            Ok(Reply::Throttled(Throttle::Banned(retry_after)))
            | Err(SendError::Suspended(Suspended(retry_after))) => Err(ExecError::Suspended {
                exchange,
                retry_after,
            }),
            Err(SendError::Transport(e)) => Err(classify_transport(&self.dialect, path, &e)),
            Ok(Reply::Failed { status, body }) => {
                let err = parse_error(&body);
                let unknown_code = err
                    .as_ref()
                    .is_some_and(|e| self.dialect.unknown_status_codes.contains(&e.code));
                if status >= 500 || unknown_code {
                    Err(ExecError::Unknown {
                        exchange,
                        path: path.to_string(),
                        reason: match err {
                            Some(e) => format!("HTTP {status}: {} (code {})", e.msg, e.code),
                            None => format!("HTTP {status}"),
                        },
                    })
                } else {
                    let (code, msg) = err.map_or_else(
                        || (0, body.chars().take(200).collect()),
                        |e| (e.code, e.msg),
                    );
                    Err(ExecError::Rejected {
                        exchange,
                        path: path.to_string(),
                        status,
                        code,
                        msg,
                    })
                }
            }
        }
    }
}

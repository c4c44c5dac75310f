//! Signed REST transport shared by the Binance-style spot clients.
//!
//! It owns what every signed call needs: the server-clock offset (from `GET /api/v3/time`,
//! re-synced and retried once when the exchange says the timestamp is outside recvWindow),
//! the request-weight budget (`X-MBX-USED-WEIGHT-1M`, 429/418 with `Retry-After`, as in
//! `feeds::rest`), and errors that never carry the signed query or the secret.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;

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
}

#[derive(Debug, Default)]
struct Budget {
    used_1m: u32,
    window_started: Option<Instant>,
    suspended_until: Option<Instant>,
}

/// Fraction of the weight limit spent before the client waits for the next window.
const WEIGHT_HEADROOM: f64 = 0.9;

/// Signed REST transport for one exchange account.
pub struct SignedRest {
    http: reqwest::Client,
    base: String,
    creds: Credentials,
    dialect: Dialect,
    recv_window_ms: u64,
    weight_limit_1m: u32,
    offset_ms: AtomicI64,
    budget: Mutex<Budget>,
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
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !t.contains("signature=") {
            reason = format!("{reason}: {t}");
        }
        src = s.source();
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
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("mmtrader/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            creds,
            dialect,
            recv_window_ms: recv_window_ms.clamp(1, 60_000),
            weight_limit_1m: weight_limit_1m.max(1),
            offset_ms: AtomicI64::new(0),
            budget: Mutex::new(Budget::default()),
        })
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

    /// Weight used in the current minute, as last reported.
    pub fn used_weight(&self) -> u32 {
        self.budget.lock().map(|b| b.used_1m).unwrap_or(0)
    }

    /// Measures the server clock (`GET /api/v3/time`) and stores the offset (midpoint of the
    /// round trip).
    pub async fn sync_time(&self) -> Result<i64, ExecError> {
        let before = local_ms();
        let body = self.send(Method::GET, "/api/v3/time", "", None, 1).await?;
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
        let mut resynced = false;
        loop {
            let mut q = params.clone();
            q.push("recvWindow", self.recv_window_ms.to_string());
            q.push(
                "timestamp",
                (local_ms() + self.clock_offset_ms()).to_string(),
            );
            let signed = q.signed(&self.creds.secret);
            match self
                .send(
                    method.clone(),
                    path,
                    &signed,
                    Some(&self.creds.api_key),
                    weight,
                )
                .await
            {
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
                    self.sync_time().await?;
                    resynced = true;
                }
                r => return r,
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
        self.send(
            method,
            path,
            params.as_str(),
            Some(&self.creds.api_key),
            weight,
        )
        .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &str,
        api_key: Option<&str>,
        weight: u32,
    ) -> Result<String, ExecError> {
        self.wait_for_budget(weight).await?;
        let url = if query.is_empty() {
            format!("{}{}", self.base, path)
        } else {
            format!("{}{}?{}", self.base, path, query)
        };
        let mut req = self.http.request(method, &url);
        if let Some(k) = api_key {
            req = req.header(self.dialect.key_header, k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| classify_transport(&self.dialect, path, &e))?;
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
            let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(u) = used {
                b.used_1m = u;
            }
            if status == 429 || status == 418 {
                let wait = retry_after.unwrap_or(Duration::from_secs(if status == 418 {
                    120
                } else {
                    60
                }));
                b.suspended_until = Some(Instant::now() + wait);
            }
        }
        let body = resp
            .text()
            .await
            .map_err(|e| classify_transport(&self.dialect, path, &e))?;
        let exchange = self.dialect.name;
        match status {
            200..=299 => Ok(body),
            429 => Err(ExecError::RateLimited {
                exchange,
                path: path.to_string(),
                retry_after: retry_after.unwrap_or(Duration::from_secs(60)),
            }),
            418 => Err(ExecError::Suspended {
                exchange,
                retry_after: retry_after.unwrap_or(Duration::from_secs(120)),
            }),
            _ => {
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

    async fn wait_for_budget(&self, weight: u32) -> Result<(), ExecError> {
        let pause = {
            let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if let Some(until) = b.suspended_until {
                if until > now {
                    return Err(ExecError::Suspended {
                        exchange: self.dialect.name,
                        retry_after: until - now,
                    });
                }
                b.suspended_until = None;
            }
            let started = *b.window_started.get_or_insert(now);
            if now.duration_since(started) >= Duration::from_secs(60) {
                b.window_started = Some(now);
                b.used_1m = 0;
            }
            let budget = (self.weight_limit_1m as f64 * WEIGHT_HEADROOM) as u32;
            if b.used_1m.saturating_add(weight) > budget {
                let next = started + Duration::from_secs(60);
                b.window_started = Some(next);
                b.used_1m = 0;
                Some(next.saturating_duration_since(now))
            } else {
                b.used_1m += weight;
                None
            }
        };
        if let Some(d) = pause {
            tracing::warn!(
                exchange = self.dialect.name,
                wait_ms = d.as_millis() as u64,
                "weight budget nearly spent; pausing"
            );
            tokio::time::sleep(d).await;
        }
        Ok(())
    }
}

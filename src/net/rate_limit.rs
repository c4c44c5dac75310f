//! Request-weight budget and rate-limit responses of Binance-protocol REST APIs.
//!
//! Binance (and MEXC, which copies its protocol) counts request weight per IP per minute and
//! reports it in `X-MBX-USED-WEIGHT-1M`; exceeding it gives HTTP 429 with `Retry-After`, and
//! continuing after that gives 418 (an IP ban escalating from minutes to days). A client therefore
//! stops on its own before the limit and refuses locally while a 429/418 back-off is in force.
//! The budget belongs to the IP, not to a client: clients of one host may share one
//! [`WeightLimiter`] through an `Arc`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

/// Wait after a 429 that carries no `Retry-After`.
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Wait after a 418 that carries no `Retry-After` (a ban is never shorter than a 429's wait).
pub const DEFAULT_BAN_WAIT: Duration = Duration::from_secs(120);
/// Fraction of the weight limit spent before the client waits for the next window.
const WEIGHT_HEADROOM: f64 = 0.9;
/// Length of the exchange's weight window.
const WINDOW: Duration = Duration::from_secs(60);

/// A rate-limit answer from the exchange, with how long to stay away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// HTTP 429: over the request-weight limit.
    RateLimited(Duration),
    /// HTTP 418: the IP is banned for a while.
    Banned(Duration),
}

impl Throttle {
    /// The throttle an HTTP status means (None for any other status than 429 and 418).
    pub fn from_status(status: u16, retry_after: Option<Duration>) -> Option<Self> {
        match status {
            429 => Some(Self::RateLimited(
                retry_after.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
            )),
            418 => Some(Self::Banned(retry_after.unwrap_or(DEFAULT_BAN_WAIT))),
            _ => None,
        }
    }

    /// How long to wait before sending again.
    pub fn retry_after(self) -> Duration {
        match self {
            Self::RateLimited(d) | Self::Banned(d) => d,
        }
    }
}

/// A local refusal: a 429/418 back-off is in force for this much longer (nothing was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("requests suspended for {0:?} after a rate-limit response")]
pub struct Suspended(pub Duration);

#[derive(Debug, Default)]
struct Window {
    used_1m: u32,
    started: Option<Instant>,
    suspended_until: Option<Instant>,
}

/// The request-weight budget of one IP at one exchange, and its back-off after 429/418.
#[derive(Debug)]
pub struct WeightLimiter {
    label: String,
    limit_1m: u32,
    window: Mutex<Window>,
}

impl WeightLimiter {
    /// A budget of `limit_1m` weight per minute; `label` names the exchange in log lines.
    pub fn new(label: impl Into<String>, limit_1m: u32) -> Self {
        Self {
            label: label.into(),
            limit_1m: limit_1m.max(1),
            window: Mutex::new(Window::default()),
        }
    }

    /// The limiter all clients of `base`'s origin (scheme, host and port) share in this
    /// process: the exchange counts weight per IP, so the market-data client and the order
    /// client of one host must not each believe they have the whole budget. The first
    /// client's `limit_1m` sets the budget; the limiter lives while a client holds it.
    pub fn shared_for(base: &str, limit_1m: u32) -> Arc<Self> {
        static REGISTRY: OnceLock<Mutex<HashMap<String, Weak<WeightLimiter>>>> = OnceLock::new();
        let origin = reqwest::Url::parse(base)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| base.trim_end_matches('/').to_string());
        let mut map = REGISTRY
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(live) = map.get(&origin).and_then(Weak::upgrade) {
            return live;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let limiter = Arc::new(Self::new(origin.clone(), limit_1m));
        map.insert(origin, Arc::downgrade(&limiter));
        limiter
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Weight used in the current minute, as last reported by the exchange.
    pub fn used_weight(&self) -> u32 {
        self.window().used_1m
    }

    /// Takes `weight` from the budget at `now`. `Ok(Some(pause))`: this window's budget is spent;
    /// the count restarts with the next window, which opens after `pause`.
    pub fn reserve(&self, weight: u32, now: Instant) -> Result<Option<Duration>, Suspended> {
        let mut w = self.window();
        if let Some(until) = w.suspended_until {
            if until > now {
                return Err(Suspended(until - now));
            }
            w.suspended_until = None;
        }
        let started = *w.started.get_or_insert(now);
        if now.duration_since(started) >= WINDOW {
            w.started = Some(now);
            w.used_1m = 0;
        }
        let budget = (self.limit_1m as f64 * WEIGHT_HEADROOM) as u32;
        if w.used_1m.saturating_add(weight) > budget {
            let next = started + WINDOW;
            w.started = Some(next);
            w.used_1m = 0;
            Ok(Some(next.saturating_duration_since(now)))
        } else {
            w.used_1m += weight;
            Ok(None)
        }
    }

    /// Takes `weight` from the budget, sleeping until the next window when this one is spent.
    pub async fn acquire(&self, weight: u32) -> Result<(), Suspended> {
        if let Some(d) = self.reserve(weight, Instant::now())? {
            tracing::warn!(
                exchange = %self.label,
                wait_ms = d.as_millis() as u64,
                "REST weight budget nearly spent; pausing"
            );
            tokio::time::sleep(d).await;
        }
        Ok(())
    }

    /// Books what the exchange said at `now`: the weight it counts, and a back-off after 429/418.
    pub fn record(
        &self,
        status: u16,
        used_1m: Option<u32>,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> Option<Throttle> {
        let throttle = Throttle::from_status(status, retry_after);
        let mut w = self.window();
        if let Some(u) = used_1m {
            w.used_1m = u;
        }
        if let Some(t) = throttle {
            w.suspended_until = Some(now + t.retry_after());
        }
        throttle
    }

    /// [`record`](Self::record) of a response's status and headers, now.
    pub fn observe(&self, status: u16, headers: &HeaderMap) -> Option<Throttle> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let used = header("x-mbx-used-weight-1m").and_then(|v| v.parse::<u32>().ok());
        let retry_after = header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        self.record(status, used, retry_after, Instant::now())
    }
}

/// An exchange's answer to a request, sorted for the caller's error type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 2xx: the body text.
    Success(String),
    /// 429 or 418: the back-off now in force.
    Throttled(Throttle),
    /// Any other status, with the body (the exchange's `code`/`msg`, usually).
    Failed {
        /// HTTP status.
        status: u16,
        /// Body text.
        body: String,
    },
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Refused locally: a back-off is in force (nothing was sent).
    #[error(transparent)]
    Suspended(#[from] Suspended),
    /// Connection, TLS, timeout or body failure.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

impl WeightLimiter {
    /// Sends `req` costing `weight` within the budget and books the answer's weight and
    /// back-off.
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
        weight: u32,
    ) -> Result<Reply, SendError> {
        self.acquire(weight).await?;
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let throttle = self.observe(status, resp.headers());
        let body = resp.text().await?;
        Ok(match throttle {
            _ if (200..=299).contains(&status) => Reply::Success(body),
            Some(t) => Reply::Throttled(t),
            None => Reply::Failed { status, body },
        })
    }
}

/// The HTTP client of the exchange REST transports (timeout, and a user agent naming us).
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("mmtrader/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The causes under a transport error, outermost first, leaving out any that quote a signed
/// query: reqwest's own Display names the full URL, so callers describe errors from these.
pub fn transport_causes(e: &reqwest::Error) -> Vec<String> {
    let mut out = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !t.contains("signature=") {
            out.push(t);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_of_one_origin_share_one_budget_and_others_do_not() {
        let a = WeightLimiter::shared_for("http://127.0.0.1:1/api", 1200);
        let b = WeightLimiter::shared_for("http://127.0.0.1:1", 6000);
        let other = WeightLimiter::shared_for("http://127.0.0.1:2", 1200);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other));
        a.record(418, None, None, Instant::now());
        assert!(b.reserve(1, Instant::now()).is_err());
        assert!(other.reserve(1, Instant::now()).is_ok());
        // Once no client holds it, the next client of that origin starts a fresh budget.
        drop((a, b));
        let fresh = WeightLimiter::shared_for("http://127.0.0.1:1", 1200);
        assert!(fresh.reserve(1, Instant::now()).is_ok());
    }

    #[test]
    fn statuses_map_to_throttles_with_defaults() {
        let d = Duration::from_secs(7);
        assert_eq!(
            Throttle::from_status(429, Some(d)),
            Some(Throttle::RateLimited(d))
        );
        assert_eq!(
            Throttle::from_status(429, None),
            Some(Throttle::RateLimited(DEFAULT_RATE_LIMIT_WAIT))
        );
        assert_eq!(
            Throttle::from_status(418, None),
            Some(Throttle::Banned(DEFAULT_BAN_WAIT))
        );
        assert_eq!(Throttle::from_status(400, Some(d)), None);
        assert_eq!(Throttle::from_status(200, None), None);
    }

    #[test]
    fn spends_budget_then_books_on_the_next_window() {
        let l = WeightLimiter::new("x", 100);
        let t0 = Instant::now();
        assert_eq!(l.reserve(50, t0), Ok(None));
        assert_eq!(l.reserve(40, t0 + Duration::from_secs(1)), Ok(None));
        assert_eq!(l.used_weight(), 90);
        // 90 % of 100 is spent: the next call waits for the window that opens at t0 + 60 s.
        assert_eq!(
            l.reserve(1, t0 + Duration::from_secs(10)),
            Ok(Some(Duration::from_secs(50)))
        );
        assert_eq!(l.used_weight(), 0);
        // A window that has run out starts afresh.
        assert_eq!(l.reserve(5, t0 + Duration::from_secs(200)), Ok(None));
        assert_eq!(l.used_weight(), 5);
    }

    #[test]
    fn reported_weight_replaces_the_estimate() {
        let l = WeightLimiter::new("x", 1000);
        let t0 = Instant::now();
        l.reserve(1, t0).unwrap();
        assert_eq!(l.record(200, Some(850), None, t0), None);
        assert_eq!(l.used_weight(), 850);
        assert!(l.reserve(100, t0).unwrap().is_some());
    }

    #[test]
    fn back_off_refuses_until_it_ends() {
        let l = WeightLimiter::new("x", 1000);
        let t0 = Instant::now();
        let t = l.record(429, None, Some(Duration::from_secs(30)), t0);
        assert_eq!(t, Some(Throttle::RateLimited(Duration::from_secs(30))));
        assert_eq!(
            l.reserve(1, t0 + Duration::from_secs(10)),
            Err(Suspended(Duration::from_secs(20)))
        );
        assert_eq!(l.reserve(1, t0 + Duration::from_secs(30)), Ok(None));
        l.record(418, None, None, t0);
        assert_eq!(
            l.reserve(1, t0 + Duration::from_secs(60)),
            Err(Suspended(DEFAULT_BAN_WAIT - Duration::from_secs(60)))
        );
    }

    #[test]
    fn headers_are_read_case_insensitively() {
        let l = WeightLimiter::new("x", 1000);
        let mut h = HeaderMap::new();
        h.insert("X-MBX-USED-WEIGHT-1M", "37".parse().unwrap());
        h.insert("Retry-After", "5".parse().unwrap());
        assert_eq!(
            l.observe(429, &h),
            Some(Throttle::RateLimited(Duration::from_secs(5)))
        );
        assert_eq!(l.used_weight(), 37);
        let mut bad = HeaderMap::new();
        bad.insert("Retry-After", "soon".parse().unwrap());
        assert_eq!(
            l.observe(418, &bad),
            Some(Throttle::Banned(DEFAULT_BAN_WAIT))
        );
    }
}

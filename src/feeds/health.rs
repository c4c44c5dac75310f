//! Per-stream health: connection state, message age and rate, resyncs and errors. Pure logic.

use serde::Serialize;

/// Connection state of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LinkState {
    /// Not started or stopped by the user.
    Stopped,
    /// Trying to connect (after `attempts` failures).
    Connecting,
    /// Connected and receiving.
    Connected,
    /// Lost; waiting before the next attempt.
    Reconnecting,
}

/// Rolling statistics for one stream (a websocket connection or one symbol's book).
#[derive(Debug, Clone, Serialize)]
pub struct StreamHealth {
    /// Stream name, e.g. `binance ws` or `ETHUSDT depth`.
    pub name: String,
    /// Connection state.
    pub state: LinkState,
    /// When the last message arrived (ms since epoch), if any.
    pub last_message_ms: Option<i64>,
    /// Messages in total.
    pub messages: u64,
    /// Messages per second over the last completed second.
    pub rate_per_sec: f64,
    /// Book resyncs.
    pub resyncs: u64,
    /// Malformed frames, failed requests and similar errors.
    pub errors: u64,
    /// Successful connections (the first one included).
    pub connects: u64,
    /// Seconds without a message after which the stream is stale.
    pub stale_after_ms: i64,
    #[serde(skip)]
    window_start_ms: i64,
    #[serde(skip)]
    window_count: u64,
}

impl StreamHealth {
    /// A new, stopped stream.
    pub fn new(name: impl Into<String>, stale_after_ms: i64) -> Self {
        Self {
            name: name.into(),
            state: LinkState::Stopped,
            last_message_ms: None,
            messages: 0,
            rate_per_sec: 0.0,
            resyncs: 0,
            errors: 0,
            connects: 0,
            stale_after_ms,
            window_start_ms: 0,
            window_count: 0,
        }
    }

    /// Records one received message.
    pub fn on_message(&mut self, now_ms: i64) {
        self.messages += 1;
        self.last_message_ms = Some(now_ms);
        self.roll(now_ms);
        self.window_count += 1;
    }

    /// Advances the rate window without a message (so an idle stream shows 0/s).
    pub fn roll(&mut self, now_ms: i64) {
        let elapsed = now_ms - self.window_start_ms;
        if elapsed >= 1_000 {
            // A window older than two seconds means nothing arrived in the last one.
            self.rate_per_sec = if elapsed < 2_000 {
                self.window_count as f64 * 1_000.0 / elapsed as f64
            } else {
                0.0
            };
            self.window_start_ms = now_ms;
            self.window_count = 0;
        }
    }

    /// Milliseconds since the last message (None before the first).
    pub fn age_ms(&self, now_ms: i64) -> Option<i64> {
        self.last_message_ms.map(|t| (now_ms - t).max(0))
    }

    /// True when connected but silent for longer than the stale threshold, or never heard from.
    pub fn is_stale(&self, now_ms: i64) -> bool {
        match self.age_ms(now_ms) {
            Some(age) => age > self.stale_after_ms,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_age_and_staleness() {
        let mut h = StreamHealth::new("x", 5_000);
        assert!(h.is_stale(0));
        for i in 0..10 {
            h.on_message(1_000 + i * 100);
        }
        h.roll(2_000);
        assert!((h.rate_per_sec - 10.0).abs() < 1e-9, "{}", h.rate_per_sec);
        assert_eq!(h.age_ms(2_000), Some(100));
        assert!(!h.is_stale(6_000));
        assert!(h.is_stale(7_000));
        h.roll(10_000);
        assert_eq!(h.rate_per_sec, 0.0);
    }
}

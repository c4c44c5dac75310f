//! Automatic market-data fallback from the primary exchange (Binance) to a secondary one
//! (MEXC) and back, with candles that get neither a hole nor a duplicate. Pure logic.
//!
//! **Switching.** The primary is unhealthy when its websocket is not connected, or connected
//! but silent for longer than `stale_after_ms`; market data then switches to the secondary at
//! once. It switches back when the primary has been connected and fresh for `recover_after_ms`
//! (hysteresis, so a flapping link does not flip sources on every message). A switch to the
//! secondary happens only while the secondary itself is healthy (connected, every book
//! synced); otherwise market data stays on the primary and [`FallbackController::held`] says why.
//!
//! **Trades across a switch (the de-duplication rule).** Both sources' trades arrive all the
//! time; the inactive source's trades are held for `buffer_ms`. Each symbol keeps a *cut*:
//! - at a switch, `cut = time of the last applied trade + 1 ms` (the switch time when nothing
//!   was applied yet). The new source's trades at or after the cut are applied (the held ones
//!   first, in time order), those before it are dropped: the old source already covered that
//!   time, so nothing is counted twice and nothing between the two is left out;
//! - near the cut (within `dedupe_window_ms`), a new-source trade with the same price and
//!   quantity as an applied old-source trade whose time differs by at most the window is
//!   taken for the same print seen twice and dropped;
//! - trades of the old source that arrive after the switch are applied when they fall in its
//!   own period, before the cut: nobody else covers that time, and they can arrive late (a
//!   REST recovery of missed trades still in flight when the old source died). Those from the
//!   cut on (late frames, REST recovery of the gap by id after it came back) are held for a
//!   switch back, at which point they are covered by the other source's period.
//!
//! The candle bucket containing the cut is therefore rebuilt from the old source's trades
//! before the cut and the new source's from the cut on, and later buckets from the new
//! source only.

use std::collections::VecDeque;

use serde::Deserialize;

use crate::market::types::{Price, Qty, Trade};

/// `[exchanges]`: connectors beyond Binance.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExchangesConfig {
    /// `[exchanges.fallback]`: the automatic switch to a second exchange.
    pub fallback: FallbackConfig,
}

impl ExchangesConfig {
    /// Checks values serde cannot: returns the offending key and the expected form.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let f = &self.fallback;
        if f.exchange != "mexc" {
            return Err((
                "exchanges.fallback.exchange".into(),
                format!(
                    "expected \"mexc\" (the only fallback exchange), got {:?}",
                    f.exchange
                ),
            ));
        }
        for (key, url, schemes) in [
            ("ws", &f.ws, ["ws://", "wss://"]),
            ("rest", &f.rest, ["http://", "https://"]),
        ] {
            if !schemes.iter().any(|s| url.starts_with(s)) {
                return Err((
                    format!("exchanges.fallback.{key}"),
                    format!(
                        "expected a URL starting with {} or {}, got {url:?}",
                        schemes[0], schemes[1]
                    ),
                ));
            }
        }
        if f.stale_after_ms == 0 {
            return Err((
                "exchanges.fallback.stale_after_ms".into(),
                "expected a positive number of milliseconds".into(),
            ));
        }
        Ok(())
    }
}

/// `[exchanges.fallback]`: automatic switch of market data to a second exchange.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    /// Switch to the secondary exchange when the primary is unhealthy.
    pub enabled: bool,
    /// The secondary exchange (`mexc`).
    pub exchange: String,
    /// Secondary websocket URL.
    pub ws: String,
    /// Secondary REST base URL (depth snapshots).
    pub rest: String,
    /// The primary is unhealthy after this long without a message, ms.
    pub stale_after_ms: u64,
    /// The primary must be connected and fresh this long before switching back, ms.
    pub recover_after_ms: u64,
    /// Trades of the two sources this close in time with equal price and size are one print, ms.
    pub dedupe_window_ms: u64,
    /// How long the inactive source's trades are held for a switch, ms.
    pub buffer_ms: u64,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            exchange: "mexc".into(),
            ws: "wss://wbs-api.mexc.com/ws".into(),
            rest: "https://api.mexc.com".into(),
            stale_after_ms: 5_000,
            recover_after_ms: 5_000,
            dedupe_window_ms: 1_000,
            buffer_ms: 120_000,
        }
    }
}

/// Which exchange market data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Source {
    /// The primary exchange (Binance).
    Primary,
    /// The secondary exchange (MEXC).
    Secondary,
}

/// A switch decided by the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The source now active.
    pub to: Source,
    /// Why (for the log and the screen).
    pub reason: String,
}

/// Decides the active source from the primary's health.
#[derive(Debug, Clone)]
pub struct FallbackController {
    cfg: FallbackConfig,
    active: Source,
    healthy_since: Option<i64>,
    switches: u64,
    /// First call: the primary gets `stale_after_ms` to connect before a switch at start-up.
    started_ms: Option<i64>,
    /// Last reported health of the secondary.
    secondary: SecondaryHealth,
    /// Why a needed switch to the secondary is not made (None when none is held back).
    held: Option<String>,
}

/// The secondary exchange's health as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecondaryHealth {
    /// Its websocket is connected.
    pub connected: bool,
    /// Every configured symbol's book on it is synced.
    pub books_synced: bool,
}

impl SecondaryHealth {
    /// Why market data cannot move to it, None when it can.
    fn unready_reason(self) -> Option<&'static str> {
        if !self.connected {
            Some("secondary not connected")
        } else if !self.books_synced {
            Some("secondary books not synced")
        } else {
            None
        }
    }
}

impl FallbackController {
    /// Starts on the primary.
    pub fn new(cfg: FallbackConfig) -> Self {
        Self {
            cfg,
            active: Source::Primary,
            healthy_since: None,
            switches: 0,
            started_ms: None,
            secondary: SecondaryHealth::default(),
            held: None,
        }
    }

    /// Feeds the secondary's state (before [`Self::on_primary`]).
    pub fn on_secondary(&mut self, health: SecondaryHealth) {
        self.secondary = health;
    }

    /// Why the primary is unhealthy but market data stays on it (the secondary is not ready).
    pub fn held(&self) -> Option<&str> {
        self.held.as_deref()
    }

    /// The active source.
    pub fn active(&self) -> Source {
        self.active
    }

    /// Switches so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Feeds the primary's state; returns a switch when one happens.
    pub fn on_primary(
        &mut self,
        connected: bool,
        last_message_ms: Option<i64>,
        now_ms: i64,
    ) -> Option<Switch> {
        let fresh = last_message_ms.is_some_and(|t| now_ms - t <= self.cfg.stale_after_ms as i64);
        let started = *self.started_ms.get_or_insert(now_ms);
        let starting = now_ms - started < self.cfg.stale_after_ms as i64 && self.switches == 0;
        let healthy = connected && fresh;
        if !healthy {
            self.healthy_since = None;
        } else if self.healthy_since.is_none() {
            self.healthy_since = Some(now_ms);
        }
        if self.active == Source::Secondary || healthy || starting {
            self.held = None;
        }
        match self.active {
            Source::Primary if !healthy && !starting => {
                if let Some(why) = self.secondary.unready_reason() {
                    let primary = if connected { "silent" } else { "disconnected" };
                    self.held = Some(format!("primary {primary}, staying on it: {why}"));
                    return None;
                }
                self.held = None;
                self.active = Source::Secondary;
                self.switches += 1;
                let reason = if connected {
                    format!(
                        "primary silent for more than {} ms",
                        self.cfg.stale_after_ms
                    )
                } else {
                    "primary disconnected".to_string()
                };
                Some(Switch {
                    to: Source::Secondary,
                    reason,
                })
            }
            Source::Secondary
                if self
                    .healthy_since
                    .is_some_and(|t| now_ms - t >= self.cfg.recover_after_ms as i64) =>
            {
                self.active = Source::Primary;
                self.switches += 1;
                Some(Switch {
                    to: Source::Primary,
                    reason: format!("primary healthy for {} ms", self.cfg.recover_after_ms),
                })
            }
            _ => None,
        }
    }
}

/// Counters of one symbol's merger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MergeCounters {
    /// Trades passed on.
    pub applied: u64,
    /// Trades dropped because the other source covered their time.
    pub covered: u64,
    /// Trades dropped as the same print seen on both sources.
    pub duplicates: u64,
}

/// Merges one symbol's trades of both sources into one stream by the module's rule.
#[derive(Debug, Clone)]
pub struct TradeMerger {
    active: Source,
    cut_ms: i64,
    /// Start of the inactive source's own period, which ended at the cut (None before the
    /// first switch, when it had none).
    previous_from_ms: Option<i64>,
    window_ms: i64,
    buffer_ms: i64,
    last_applied_ms: Option<i64>,
    /// Recently applied trades (source, time, price, qty), for the duplicate window.
    recent: VecDeque<(Source, i64, Price, Qty)>,
    /// The inactive source's trades, held for a switch.
    held: VecDeque<Trade>,
    counters: MergeCounters,
}

impl TradeMerger {
    /// A merger starting on the primary.
    pub fn new(cfg: &FallbackConfig) -> Self {
        Self {
            active: Source::Primary,
            cut_ms: i64::MIN,
            previous_from_ms: None,
            window_ms: cfg.dedupe_window_ms as i64,
            buffer_ms: cfg.buffer_ms as i64,
            last_applied_ms: None,
            recent: VecDeque::new(),
            held: VecDeque::new(),
            counters: MergeCounters::default(),
        }
    }

    /// Counters.
    pub fn counters(&self) -> MergeCounters {
        self.counters
    }

    /// The time from which the active source's trades count.
    pub fn cut_ms(&self) -> i64 {
        self.cut_ms
    }

    fn is_duplicate(&self, source: Source, t: &Trade) -> bool {
        t.time_ms.abs_diff(self.cut_ms) <= self.window_ms as u64
            && self.recent.iter().any(|&(s, time, p, q)| {
                s != source
                    && p == t.price
                    && q == t.qty
                    && time.abs_diff(t.time_ms) <= self.window_ms as u64
            })
    }

    fn accept(&mut self, source: Source, t: Trade, out: &mut Vec<(Source, Trade)>) {
        if t.time_ms < self.cut_ms {
            self.counters.covered += 1;
            return;
        }
        self.apply(source, t, out);
    }

    fn apply(&mut self, source: Source, t: Trade, out: &mut Vec<(Source, Trade)>) {
        if self.is_duplicate(source, &t) {
            self.counters.duplicates += 1;
            return;
        }
        self.last_applied_ms = Some(self.last_applied_ms.map_or(t.time_ms, |l| l.max(t.time_ms)));
        self.recent.push_back((source, t.time_ms, t.price, t.qty));
        while self
            .recent
            .front()
            .is_some_and(|r| r.1 < t.time_ms.saturating_sub(2 * self.window_ms))
        {
            self.recent.pop_front();
        }
        self.counters.applied += 1;
        out.push((source, t));
    }

    /// One trade from a source; the trades to apply, with their source, are appended to `out`.
    pub fn on_trade(&mut self, source: Source, trade: Trade, out: &mut Vec<(Source, Trade)>) {
        if source == self.active {
            self.accept(source, trade, out);
            return;
        }
        if self
            .previous_from_ms
            .is_some_and(|from| (from..self.cut_ms).contains(&trade.time_ms))
        {
            self.apply(source, trade, out);
            return;
        }
        let newest = trade.time_ms;
        self.held.push_back(trade);
        while self
            .held
            .front()
            .is_some_and(|t| t.time_ms < newest.saturating_sub(self.buffer_ms))
        {
            self.held.pop_front();
        }
    }

    /// Switches the source at `now_ms`; the held trades of the new source that fall after the
    /// cut are appended to `out`.
    pub fn switch_to(&mut self, source: Source, now_ms: i64, out: &mut Vec<(Source, Trade)>) {
        if source == self.active {
            return;
        }
        self.active = source;
        self.previous_from_ms = Some(self.cut_ms);
        self.cut_ms = self.last_applied_ms.map_or(now_ms, |t| t.saturating_add(1));
        let mut held: Vec<Trade> = self.held.drain(..).collect();
        held.sort_by_key(|t| (t.time_ms, t.id));
        for t in held {
            self.accept(source, t, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::Side;

    fn t(id: u64, time: i64, p: i64, q: i64) -> Trade {
        Trade {
            symbol: "ETH/USDT".into(),
            id,
            time_ms: time,
            price: Price::from_units(p),
            qty: Qty::from_units(q),
            taker_side: Side::Buy,
        }
    }

    #[test]
    fn config_is_validated_with_key_names() {
        let ok: ExchangesConfig = toml::from_str("[fallback]\nenabled = true\n").unwrap();
        assert!(ok.fallback.enabled && ok.validate().is_ok());
        let bad: ExchangesConfig = toml::from_str("[fallback]\nexchange = \"okx\"\n").unwrap();
        assert_eq!(bad.validate().unwrap_err().0, "exchanges.fallback.exchange");
        let bad: ExchangesConfig = toml::from_str("[fallback]\nws = \"http://x\"\n").unwrap();
        assert_eq!(bad.validate().unwrap_err().0, "exchanges.fallback.ws");
        assert!(toml::from_str::<ExchangesConfig>("[fallback]\nstale_ms = 1\n").is_err());
    }

    /// Stale after 1 s, back after 2 s healthy.
    fn controller_1s_2s() -> FallbackController {
        FallbackController::new(FallbackConfig {
            stale_after_ms: 1_000,
            recover_after_ms: 2_000,
            ..FallbackConfig::default()
        })
    }

    #[test]
    fn controller_switches_on_disconnect_and_staleness_with_hysteresis() {
        let mut c = controller_1s_2s();
        c.on_secondary(READY);
        assert_eq!(c.on_primary(false, None, 0), None, "start-up grace");
        assert_eq!(c.on_primary(true, Some(0), 500), None);
        let s = c.on_primary(true, Some(0), 1_500).unwrap();
        assert_eq!(s.to, Source::Secondary);
        assert!(s.reason.contains("silent"));
        assert_eq!(c.on_primary(true, Some(2_000), 2_000), None);
        assert_eq!(
            c.on_primary(false, Some(2_000), 2_500),
            None,
            "flap resets the clock"
        );
        assert_eq!(c.on_primary(true, Some(3_000), 3_000), None);
        assert_eq!(c.on_primary(true, Some(4_900), 4_900), None);
        assert_eq!(
            c.on_primary(true, Some(5_000), 5_000).unwrap().to,
            Source::Primary
        );
        assert_eq!(
            c.on_primary(false, Some(5_000), 5_100).unwrap().reason,
            "primary disconnected"
        );
        assert_eq!(c.switches(), 3);
    }

    const READY: SecondaryHealth = SecondaryHealth {
        connected: true,
        books_synced: true,
    };

    #[test]
    fn controller_stays_on_the_primary_while_the_secondary_is_unhealthy() {
        let mut c = controller_1s_2s();
        assert_eq!(c.on_primary(true, Some(0), 0), None);
        assert_eq!(c.held(), None);
        // Primary down, secondary not connected: stay, and say why.
        assert_eq!(c.on_primary(false, Some(0), 1_500), None);
        assert_eq!(c.active(), Source::Primary);
        assert_eq!(
            c.held(),
            Some("primary disconnected, staying on it: secondary not connected")
        );
        // Connected but a book still unsynced: still no switch.
        c.on_secondary(SecondaryHealth {
            connected: true,
            books_synced: false,
        });
        assert_eq!(c.on_primary(true, Some(0), 1_600), None);
        assert_eq!(
            c.held(),
            Some("primary silent, staying on it: secondary books not synced")
        );
        // Healthy secondary: the switch happens at once.
        c.on_secondary(READY);
        let s = c.on_primary(true, Some(0), 1_700).unwrap();
        assert_eq!((s.to, c.switches(), c.held()), (Source::Secondary, 1, None));
        // The primary recovering clears nothing held and switches back as before.
        assert_eq!(c.on_primary(true, Some(1_800), 1_800), None);
        assert_eq!(
            c.on_primary(true, Some(3_800), 3_800).unwrap().to,
            Source::Primary
        );
        // A healthy primary clears a held reason.
        c.on_secondary(SecondaryHealth::default());
        assert_eq!(c.on_primary(false, Some(3_800), 3_900), None);
        assert!(c.held().is_some());
        assert_eq!(c.on_primary(true, Some(4_000), 4_000), None);
        assert_eq!(c.held(), None);
    }

    #[test]
    fn no_hole_and_no_duplicate_across_switches() {
        let cfg = FallbackConfig {
            dedupe_window_ms: 100,
            ..FallbackConfig::default()
        };
        let mut m = TradeMerger::new(&cfg);
        let mut out = Vec::new();
        m.on_trade(Source::Primary, t(1, 1_000, 10, 1), &mut out);
        m.on_trade(Source::Secondary, t(101, 990, 10, 1), &mut out);
        m.on_trade(Source::Secondary, t(102, 1_050, 10, 1), &mut out); // same print as id 1
        m.on_trade(Source::Secondary, t(103, 1_500, 11, 2), &mut out); // after the primary died
        assert_eq!(out.len(), 1);
        out.clear();
        m.switch_to(Source::Secondary, 3_000, &mut out);
        assert_eq!(m.cut_ms(), 1_001);
        let ids: Vec<u64> = out.iter().map(|(_, t)| t.id).collect();
        assert_eq!(
            ids,
            [103],
            "covered and duplicate held trades dropped, the gap filled"
        );
        out.clear();
        m.on_trade(Source::Secondary, t(104, 3_100, 12, 1), &mut out);
        // The primary comes back and recovers its gap by REST: all covered by the secondary.
        m.on_trade(Source::Primary, t(2, 1_400, 11, 1), &mut out);
        m.on_trade(Source::Primary, t(3, 3_200, 12, 3), &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        m.switch_to(Source::Primary, 3_300, &mut out);
        assert_eq!(m.cut_ms(), 3_101);
        assert_eq!(out.iter().map(|(_, t)| t.id).collect::<Vec<_>>(), [3]);
        out.clear();
        m.on_trade(Source::Secondary, t(105, 3_400, 12, 1), &mut out);
        m.on_trade(Source::Primary, t(4, 3_500, 12, 1), &mut out);
        assert_eq!(out.iter().map(|(_, t)| t.id).collect::<Vec<_>>(), [4]);
        let c = m.counters();
        assert_eq!((c.applied, c.covered, c.duplicates), (5, 2, 1));
    }

    #[test]
    fn old_source_trades_of_its_own_period_arriving_after_the_switch_are_applied() {
        let mut m = TradeMerger::new(&FallbackConfig::default());
        let mut out = Vec::new();
        // Live primary trades from 5_229 on; the REST recovery of the earlier ones is in flight.
        m.on_trade(Source::Primary, t(40, 5_229, 10, 1), &mut out);
        m.on_trade(Source::Secondary, t(900, 5_250, 20, 1), &mut out);
        m.switch_to(Source::Secondary, 7_000, &mut out);
        assert_eq!(m.cut_ms(), 5_230);
        // The recovery lands after the switch: before the cut it is the primary's own time.
        for (id, time) in [(37, 5_006), (38, 5_093), (39, 5_188)] {
            m.on_trade(Source::Primary, t(id, time, 10, 1), &mut out);
        }
        // From the cut on the secondary covers the time: held, then covered at the switch back.
        m.on_trade(Source::Primary, t(41, 5_300, 10, 1), &mut out);
        m.on_trade(Source::Secondary, t(901, 7_100, 20, 1), &mut out);
        let ids: Vec<(Source, u64)> = out.iter().map(|(s, t)| (*s, t.id)).collect();
        let (p, s) = (Source::Primary, Source::Secondary);
        assert_eq!(
            ids,
            [(p, 40), (s, 900), (p, 37), (p, 38), (p, 39), (s, 901)]
        );
        out.clear();
        m.switch_to(Source::Primary, 8_000, &mut out);
        assert_eq!(m.cut_ms(), 7_101);
        assert!(out.is_empty(), "{out:?}");
        // Back on the primary, the secondary's late trades fill only its own period.
        m.on_trade(Source::Secondary, t(902, 7_050, 20, 1), &mut out);
        m.on_trade(Source::Secondary, t(899, 5_100, 20, 1), &mut out);
        m.on_trade(Source::Secondary, t(903, 7_200, 20, 1), &mut out);
        assert_eq!(out.iter().map(|(_, t)| t.id).collect::<Vec<_>>(), [902]);
        let c = m.counters();
        assert_eq!((c.applied, c.covered, c.duplicates), (7, 1, 0));
    }
}

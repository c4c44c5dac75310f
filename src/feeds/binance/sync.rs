//! Local order-book synchronisation for one Binance symbol: a pure state machine.
//!
//! It implements the documented procedure (exchange-apis.md §1.5 spot, §2 USD-M): buffer diffs
//! from stream start, accept a REST snapshot, drop stale diffs, check the first applied diff and
//! then the continuity of every later one. Any break discards the book and returns
//! [`SyncOutcome::FetchSnapshot`]: the runtime then fetches a snapshot for this symbol only while
//! the machine keeps buffering. No I/O happens here; the caller feeds diffs and snapshots.

use std::collections::VecDeque;
use std::fmt;

use super::wire::{DepthSnapshot, DepthUpdate};
use crate::market::book::OrderBook;
use crate::market::types::Side;

/// Which continuity rules the diff stream follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rules {
    /// Spot: drop `u <= id`; apply when `U <= id + 1`; a later `U > id + 1` is a gap.
    Spot,
    /// USD-M futures: drop `u < id`; first event needs `U <= id <= u`; later `pu == previous u`.
    Futures,
}

impl fmt::Display for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rules::Spot => "spot",
            Rules::Futures => "futures",
        })
    }
}

/// Tunables of the synchroniser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConfig {
    /// Most diffs held while waiting for a snapshot; one more discards them and asks again.
    pub max_buffered: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        // A 0 ms futures stream sends roughly 20 diffs/s; this covers minutes of slow REST.
        Self {
            max_buffered: 10_000,
        }
    }
}

/// Where the synchroniser stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// No valid book: diffs are buffered until a usable snapshot arrives.
    AwaitingSnapshot,
    /// The book is valid and follows the stream.
    Synced,
}

/// Why the book was discarded or a snapshot refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    /// Spot: a diff starts after `book id + 1` (events were missed), or the first diff after a
    /// futures snapshot starts after the snapshot id.
    Gap {
        /// The book's update id when the diff arrived.
        book_id: u64,
        /// The diff's first update id `U`.
        first_update_id: u64,
    },
    /// Futures: a diff's `pu` is not the previous diff's `u`.
    BrokenChain {
        /// The previous applied `u`.
        expected_prev: u64,
        /// The diff's `pu` (absent when the stream does not carry it).
        prev_final_update_id: Option<u64>,
    },
    /// The snapshot is older than the first buffered diff; the buffer is kept.
    SnapshotTooOld {
        /// Snapshot `lastUpdateId`.
        snapshot_id: u64,
        /// `U` of the first buffered diff.
        first_buffered: u64,
    },
    /// More diffs arrived than the buffer holds while waiting for a snapshot.
    BufferOverflow,
    /// After a diff the best bid was at or above the best ask.
    Crossed,
}

/// What the caller should know after feeding one diff or snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Held until a snapshot arrives.
    Buffered,
    /// Applied to the book.
    Applied,
    /// Older than the book; ignored.
    Stale,
    /// The diff belongs to another symbol; ignored.
    ForeignSymbol,
    /// A snapshot was accepted and the buffered diffs replayed on top of it.
    Synced {
        /// Buffered diffs applied.
        applied: usize,
        /// Buffered diffs dropped as stale.
        dropped: usize,
    },
    /// A snapshot arrived while the book was already synced; ignored.
    SnapshotIgnored,
    /// The runtime must fetch a new REST snapshot for this symbol.
    FetchSnapshot(ResyncReason),
}

impl SyncOutcome {
    /// True when the runtime must fetch a new snapshot for this symbol.
    pub fn needs_snapshot(&self) -> bool {
        matches!(self, SyncOutcome::FetchSnapshot(_))
    }
}

/// Counters over the synchroniser's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Diffs applied to the book.
    pub applied: u64,
    /// Diffs dropped as stale.
    pub dropped: u64,
    /// Diffs buffered while awaiting a snapshot.
    pub buffered: u64,
    /// Continuity breaks detected (gap or broken `pu` chain).
    pub gaps: u64,
    /// Times the book was discarded or the buffer restarted (gaps, crossed, overflow).
    pub resyncs: u64,
    /// Crossed books detected after applying a diff.
    pub crossed: u64,
    /// Buffer overflows while awaiting a snapshot.
    pub overflows: u64,
    /// Snapshots accepted.
    pub snapshots: u64,
    /// Snapshots refused as older than the buffered stream.
    pub snapshots_rejected: u64,
    /// Diffs for another symbol that were ignored.
    pub foreign: u64,
}

/// Keeps one symbol's local book in sync with the diff stream.
#[derive(Debug, Clone)]
pub struct BookSync {
    symbol: String,
    rules: Rules,
    cfg: SyncConfig,
    state: SyncState,
    book: OrderBook,
    /// Set between snapshot and first applied diff (the first diff has its own rule).
    awaiting_first: bool,
    buffer: VecDeque<DepthUpdate>,
    stats: SyncStats,
}

/// Verdict on one diff against a synced book.
enum Step {
    Apply,
    Stale,
    Break(ResyncReason),
}

impl BookSync {
    /// A synchroniser that starts by buffering and wants a snapshot.
    pub fn new(symbol: impl Into<String>, rules: Rules, cfg: SyncConfig) -> Self {
        Self {
            symbol: symbol.into(),
            rules,
            cfg,
            state: SyncState::AwaitingSnapshot,
            book: OrderBook::new(),
            awaiting_first: false,
            buffer: VecDeque::new(),
            stats: SyncStats::default(),
        }
    }

    /// The symbol this machine follows.
    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    /// The continuity rules in force.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// The local book (empty while awaiting a snapshot).
    pub fn book(&self) -> &OrderBook {
        &self.book
    }

    /// The book only when it is valid.
    pub fn synced_book(&self) -> Option<&OrderBook> {
        (self.state == SyncState::Synced).then_some(&self.book)
    }

    /// Counters so far.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// Current state.
    pub fn state(&self) -> SyncState {
        self.state
    }

    /// True while a snapshot is needed (at start and after every resync).
    pub fn needs_snapshot(&self) -> bool {
        self.state == SyncState::AwaitingSnapshot
    }

    /// Diffs currently buffered.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// Feeds one diff from the stream.
    pub fn on_diff(&mut self, diff: &DepthUpdate) -> SyncOutcome {
        if diff.symbol != self.symbol {
            self.stats.foreign += 1;
            return SyncOutcome::ForeignSymbol;
        }
        match self.state {
            SyncState::AwaitingSnapshot => self.buffer_diff(diff),
            SyncState::Synced => match self.judge(diff) {
                Step::Stale => {
                    self.stats.dropped += 1;
                    SyncOutcome::Stale
                }
                Step::Apply => match self.apply(diff) {
                    Ok(()) => SyncOutcome::Applied,
                    Err(reason) => SyncOutcome::FetchSnapshot(reason),
                },
                Step::Break(reason) => {
                    self.stats.gaps += 1;
                    self.restart(reason, Some(diff.clone()))
                }
            },
        }
    }

    /// Feeds a REST depth snapshot for this symbol.
    pub fn on_snapshot(&mut self, snapshot: DepthSnapshot) -> SyncOutcome {
        self.on_snapshot_observed(snapshot, |_, _| {})
    }

    /// Like [`Self::on_snapshot`], calling `after_apply(book, diff)` after each buffered diff is
    /// applied, so checks that need the book at every update id (replay checkpoints) can run.
    pub fn on_snapshot_observed(
        &mut self,
        snapshot: DepthSnapshot,
        mut after_apply: impl FnMut(&OrderBook, &DepthUpdate),
    ) -> SyncOutcome {
        if self.state == SyncState::Synced {
            return SyncOutcome::SnapshotIgnored;
        }
        if let Some(first) = self.buffer.front()
            && snapshot.last_update_id < first.first_update_id
        {
            self.stats.snapshots_rejected += 1;
            return SyncOutcome::FetchSnapshot(ResyncReason::SnapshotTooOld {
                snapshot_id: snapshot.last_update_id,
                first_buffered: first.first_update_id,
            });
        }
        self.stats.snapshots += 1;
        self.book
            .apply_snapshot(&snapshot.bids, &snapshot.asks, snapshot.last_update_id);
        self.state = SyncState::Synced;
        self.awaiting_first = true;
        let (mut applied, mut dropped) = (0, 0);
        while let Some(diff) = self.buffer.pop_front() {
            match self.judge(&diff) {
                Step::Stale => {
                    self.stats.dropped += 1;
                    dropped += 1;
                }
                Step::Apply => {
                    if let Err(reason) = self.apply(&diff) {
                        return SyncOutcome::FetchSnapshot(reason);
                    }
                    after_apply(&self.book, &diff);
                    applied += 1;
                }
                Step::Break(reason) => {
                    self.stats.gaps += 1;
                    // The breaking diff and everything after it are newer than the book: they
                    // become the start of the next buffer.
                    self.buffer.push_front(diff);
                    return self.restart(reason, None);
                }
            }
        }
        if self.book.is_crossed() {
            return SyncOutcome::FetchSnapshot(self.crossed());
        }
        SyncOutcome::Synced { applied, dropped }
    }

    fn buffer_diff(&mut self, diff: &DepthUpdate) -> SyncOutcome {
        if self.buffer.len() >= self.cfg.max_buffered {
            self.stats.overflows += 1;
            return self.restart(ResyncReason::BufferOverflow, Some(diff.clone()));
        }
        self.stats.buffered += 1;
        self.buffer.push_back(diff.clone());
        SyncOutcome::Buffered
    }

    fn judge(&self, d: &DepthUpdate) -> Step {
        let id = self.book.last_update_id;
        match self.rules {
            Rules::Spot => {
                if d.final_update_id <= id {
                    Step::Stale
                } else if d.first_update_id > id.saturating_add(1) {
                    Step::Break(ResyncReason::Gap {
                        book_id: id,
                        first_update_id: d.first_update_id,
                    })
                } else {
                    Step::Apply
                }
            }
            Rules::Futures if self.awaiting_first => {
                if d.final_update_id < id {
                    Step::Stale
                } else if d.first_update_id > id {
                    Step::Break(ResyncReason::Gap {
                        book_id: id,
                        first_update_id: d.first_update_id,
                    })
                } else {
                    Step::Apply
                }
            }
            Rules::Futures => {
                if d.prev_final_update_id == Some(id) {
                    Step::Apply
                } else if d.final_update_id <= id {
                    Step::Stale
                } else {
                    Step::Break(ResyncReason::BrokenChain {
                        expected_prev: id,
                        prev_final_update_id: d.prev_final_update_id,
                    })
                }
            }
        }
    }

    /// Applies a diff already judged applicable; a crossed result discards the book.
    fn apply(&mut self, d: &DepthUpdate) -> Result<(), ResyncReason> {
        for l in &d.bids {
            self.book.apply_level(Side::Buy, l.price, l.qty);
        }
        for l in &d.asks {
            self.book.apply_level(Side::Sell, l.price, l.qty);
        }
        self.book.last_update_id = d.final_update_id;
        self.awaiting_first = false;
        self.stats.applied += 1;
        if self.book.is_crossed() {
            return Err(self.crossed());
        }
        Ok(())
    }

    fn crossed(&mut self) -> ResyncReason {
        self.stats.crossed += 1;
        self.buffer.clear();
        match self.restart(ResyncReason::Crossed, None) {
            SyncOutcome::FetchSnapshot(r) => r,
            _ => ResyncReason::Crossed,
        }
    }

    /// Discards the book and goes back to buffering, optionally starting the new buffer with
    /// the diff that revealed the problem (it is newer than anything applied).
    fn restart(&mut self, reason: ResyncReason, first: Option<DepthUpdate>) -> SyncOutcome {
        self.stats.resyncs += 1;
        self.book.clear();
        self.state = SyncState::AwaitingSnapshot;
        self.awaiting_first = false;
        if reason == ResyncReason::BufferOverflow {
            self.buffer.clear();
        }
        if let Some(d) = first {
            self.stats.buffered += 1;
            self.buffer.push_back(d);
        }
        SyncOutcome::FetchSnapshot(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::{Level, Price, Qty};

    fn lv(p: i64, q: i64) -> Level {
        Level {
            price: Price::from_units(p),
            qty: Qty::from_units(q),
        }
    }

    fn diff(first: u64, last: u64, bids: &[(i64, i64)], asks: &[(i64, i64)]) -> DepthUpdate {
        DepthUpdate {
            symbol: "BTCUSDT".into(),
            first_update_id: first,
            final_update_id: last,
            bids: bids.iter().map(|&(p, q)| lv(p, q)).collect(),
            asks: asks.iter().map(|&(p, q)| lv(p, q)).collect(),
            ..Default::default()
        }
    }

    fn fut(first: u64, last: u64, prev: u64) -> DepthUpdate {
        DepthUpdate {
            prev_final_update_id: Some(prev),
            ..diff(first, last, &[(99, 1)], &[])
        }
    }

    fn snap(id: u64) -> DepthSnapshot {
        DepthSnapshot {
            last_update_id: id,
            bids: vec![lv(100, 1), lv(99, 2)],
            asks: vec![lv(101, 1), lv(102, 3)],
            ..Default::default()
        }
    }

    fn spot() -> BookSync {
        BookSync::new("BTCUSDT", Rules::Spot, SyncConfig::default())
    }

    #[test]
    fn spot_buffers_then_syncs_dropping_stale_and_checking_first() {
        let mut s = spot();
        assert!(s.needs_snapshot());
        assert_eq!(s.on_diff(&diff(10, 12, &[], &[])), SyncOutcome::Buffered);
        assert_eq!(
            s.on_diff(&diff(13, 15, &[(100, 0)], &[])),
            SyncOutcome::Buffered
        );
        assert_eq!(
            s.on_diff(&diff(16, 18, &[(100, 5)], &[(101, 0)])),
            SyncOutcome::Buffered
        );
        // Snapshot at 14: 10..12 is stale; 13..15 straddles 15 = id + 1; 16..18 follows.
        assert_eq!(
            s.on_snapshot(snap(14)),
            SyncOutcome::Synced {
                applied: 2,
                dropped: 1
            }
        );
        assert_eq!(s.state(), SyncState::Synced);
        assert_eq!(s.book().last_update_id, 18);
        assert_eq!(s.book().best_bid(), Some(lv(100, 5)));
        assert_eq!(s.book().best_ask(), Some(lv(102, 3)));
        assert_eq!(s.on_diff(&diff(19, 19, &[], &[])), SyncOutcome::Applied);
        assert_eq!(s.on_diff(&diff(15, 17, &[], &[])), SyncOutcome::Stale);
        let st = s.stats();
        assert_eq!((st.applied, st.dropped, st.buffered, st.gaps), (3, 2, 3, 0));
    }

    #[test]
    fn snapshot_older_than_stream_is_refused_and_buffer_kept() {
        let mut s = spot();
        s.on_diff(&diff(10, 12, &[], &[]));
        let out = s.on_snapshot(snap(9));
        assert_eq!(
            out,
            SyncOutcome::FetchSnapshot(ResyncReason::SnapshotTooOld {
                snapshot_id: 9,
                first_buffered: 10
            })
        );
        assert!(out.needs_snapshot() && s.needs_snapshot());
        assert_eq!(s.buffered_len(), 1);
        assert!(matches!(
            s.on_snapshot(snap(11)),
            SyncOutcome::Synced { .. }
        ));
        assert_eq!(s.stats().snapshots_rejected, 1);
    }

    #[test]
    fn spot_gap_discards_book_and_rebuffers_the_offending_diff() {
        let mut s = spot();
        s.on_snapshot(snap(5));
        assert_eq!(s.on_diff(&diff(6, 8, &[], &[])), SyncOutcome::Applied);
        let out = s.on_diff(&diff(10, 11, &[], &[]));
        assert_eq!(
            out,
            SyncOutcome::FetchSnapshot(ResyncReason::Gap {
                book_id: 8,
                first_update_id: 10
            })
        );
        assert!(s.needs_snapshot());
        assert_eq!(s.book().depth(Side::Buy), 0);
        assert_eq!(s.buffered_len(), 1);
        assert_eq!((s.stats().gaps, s.stats().resyncs), (1, 1));
        assert!(matches!(
            s.on_snapshot(snap(10)),
            SyncOutcome::Synced { applied: 1, .. }
        ));
    }

    #[test]
    fn gap_inside_buffer_is_found_while_replaying_it() {
        let mut s = spot();
        s.on_diff(&diff(10, 12, &[], &[]));
        s.on_diff(&diff(20, 22, &[], &[]));
        s.on_diff(&diff(23, 24, &[], &[]));
        let out = s.on_snapshot(snap(11));
        assert!(matches!(
            out,
            SyncOutcome::FetchSnapshot(ResyncReason::Gap { book_id: 12, .. })
        ));
        assert_eq!(s.buffered_len(), 2);
        assert!(matches!(
            s.on_snapshot(snap(21)),
            SyncOutcome::Synced { applied: 2, .. }
        ));
    }

    #[test]
    fn empty_buffer_snapshot_checks_first_live_diff() {
        let mut s = spot();
        assert!(matches!(
            s.on_snapshot(snap(50)),
            SyncOutcome::Synced { applied: 0, .. }
        ));
        assert_eq!(s.on_diff(&diff(40, 50, &[], &[])), SyncOutcome::Stale);
        assert!(s.on_diff(&diff(52, 53, &[], &[])).needs_snapshot());
    }

    #[test]
    fn futures_follow_pu_chain_and_boundary_u_equals_id() {
        let mut s = BookSync::new("BTCUSDT", Rules::Futures, SyncConfig::default());
        s.on_diff(&fut(90, 95, 80));
        s.on_diff(&fut(96, 100, 95)); // u == lastUpdateId: first applied per U <= id <= u
        s.on_diff(&fut(107, 120, 100));
        assert_eq!(
            s.on_snapshot(snap(100)),
            SyncOutcome::Synced {
                applied: 2,
                dropped: 1
            }
        );
        // Futures ids jump: continuity is pu == previous u, not U == u + 1.
        assert_eq!(s.on_diff(&fut(130, 140, 120)), SyncOutcome::Applied);
        assert_eq!(s.on_diff(&fut(130, 140, 120)), SyncOutcome::Stale);
        assert_eq!(
            s.on_diff(&fut(150, 160, 145)),
            SyncOutcome::FetchSnapshot(ResyncReason::BrokenChain {
                expected_prev: 140,
                prev_final_update_id: Some(145)
            })
        );
    }

    #[test]
    fn futures_first_diff_must_contain_snapshot_id() {
        let mut s = BookSync::new("BTCUSDT", Rules::Futures, SyncConfig::default());
        s.on_diff(&fut(90, 95, 80));
        s.on_diff(&fut(102, 110, 95));
        assert!(matches!(
            s.on_snapshot(snap(100)),
            SyncOutcome::FetchSnapshot(ResyncReason::Gap {
                book_id: 100,
                first_update_id: 102
            })
        ));
    }

    #[test]
    fn crossed_book_forces_resync() {
        let mut s = spot();
        s.on_snapshot(snap(1));
        let out = s.on_diff(&diff(2, 2, &[(105, 1)], &[]));
        assert_eq!(out, SyncOutcome::FetchSnapshot(ResyncReason::Crossed));
        assert_eq!((s.stats().crossed, s.stats().resyncs), (1, 1));
        assert!(s.needs_snapshot());
        assert_eq!(s.buffered_len(), 0);
    }

    #[test]
    fn buffer_overflow_restarts_buffer() {
        let mut s = BookSync::new("BTCUSDT", Rules::Spot, SyncConfig { max_buffered: 2 });
        s.on_diff(&diff(1, 1, &[], &[]));
        s.on_diff(&diff(2, 2, &[], &[]));
        assert_eq!(
            s.on_diff(&diff(3, 3, &[], &[])),
            SyncOutcome::FetchSnapshot(ResyncReason::BufferOverflow)
        );
        assert_eq!(s.buffered_len(), 1);
        assert_eq!((s.stats().overflows, s.stats().resyncs), (1, 1));
    }

    #[test]
    fn foreign_symbol_and_redundant_snapshot_are_ignored() {
        let mut s = spot();
        let mut d = diff(1, 1, &[], &[]);
        d.symbol = "ETHUSDT".into();
        assert_eq!(s.on_diff(&d), SyncOutcome::ForeignSymbol);
        s.on_snapshot(snap(1));
        assert_eq!(s.on_snapshot(snap(2)), SyncOutcome::SnapshotIgnored);
        assert_eq!(s.book().last_update_id, 1);
    }
}

//! L2 order book with exact prices and quantities.
//!
//! Bids are keyed by price and asks by negated price, so both sides share one ascending
//! "ladder" whose last element is the best level. A ladder is a list of small sorted chunks (at
//! most [`CHUNK`] levels each) plus an index of each chunk's lowest key. An insert or removal
//! shifts at most one chunk wherever it lands: recorded Binance diffs touch levels a median of
//! ~100 ranks deep, where the flat sorted `Vec` this replaced spent most of its apply time moving
//! the tail (see `benches/depth.rs`; `benches/book.rs` also compares a BTreeMap book). Searches
//! try the best chunk first because most updates land near the touch.
//!
//! In front of the chunks sits a direct-indexed window of [`WINDOW`] slots on the tick grid
//! (inferred from the snapshot's prices) around the best: a level there is found by arithmetic,
//! not search, and inserting or removing it shifts nothing, which roughly halved the apply time
//! of the recorded session. Levels outside it (deep, off-grid, no snapshot yet) stay in the
//! chunks; the window moves when the best leaves its upper half and drops itself when a price
//! falls between its grid points, so the book's contents never depend on the guess.

use std::fmt;
use std::iter::Peekable;

use super::types::{Level, Price, Qty, SCALE, Side};

/// Most levels one chunk holds; a full chunk splits in halves.
const CHUNK: usize = 64;
/// Levels per chunk when a snapshot is loaded, leaving room for inserts before any split.
const FILL: usize = CHUNK * 3 / 4;
/// A chunk that shrinks below this merges with a neighbour when the two fit in [`FILL`].
const SPARSE: usize = CHUNK / 4;
/// Keys per group of [`Chunk::lower_bound`]'s two-round count (one 64-byte cache line).
const GROUP: usize = 8;

/// A sorted run of at most [`CHUNK`] levels; only `..len` is meaningful.
#[derive(Clone)]
#[repr(C)] // `len` first, in the cache line of the first keys
struct Chunk {
    len: usize,
    keys: [i64; CHUNK],
    qtys: [i64; CHUNK],
}

impl Chunk {
    fn empty() -> Box<Self> {
        Box::new(Chunk {
            len: 0,
            keys: [0; CHUNK],
            qtys: [0; CHUNK],
        })
    }

    #[inline]
    fn keys(&self) -> &[i64] {
        &self.keys[..self.len]
    }

    /// Index of the first key `>= key`.
    ///
    /// A chunk is usually not in L1 when a diff touches it, so a binary search pays six
    /// dependent cache misses; counting instead (every [`GROUP`]-th key, then the keys of one
    /// group) issues its loads independently and costs two round trips. Slots past `len` hold
    /// stale keys and are masked out.
    #[inline]
    fn lower_bound(&self, key: i64) -> usize {
        let n = self.len;
        let mut groups = 0;
        for j in 1..CHUNK / GROUP {
            groups += usize::from((j * GROUP < n) & (self.keys[j * GROUP] < key));
        }
        let base = groups * GROUP;
        let mut i = base;
        for (at, k) in (base..).zip(&self.keys[base..base + GROUP]) {
            i += usize::from((at < n) & (*k < key));
        }
        i
    }

    #[inline]
    fn insert(&mut self, i: usize, key: i64, qty: i64) {
        let n = self.len;
        self.keys.copy_within(i..n, i + 1);
        self.qtys.copy_within(i..n, i + 1);
        self.keys[i] = key;
        self.qtys[i] = qty;
        self.len = n + 1;
    }

    #[inline]
    fn remove(&mut self, i: usize) {
        let n = self.len;
        self.keys.copy_within(i + 1..n, i);
        self.qtys.copy_within(i + 1..n, i);
        self.len = n - 1;
    }

    /// Appends sorted levels that all lie above this chunk's keys (and fit).
    fn extend(&mut self, keys: &[i64], qtys: &[i64]) {
        let (a, b) = (self.len, self.len + keys.len());
        self.keys[a..b].copy_from_slice(keys);
        self.qtys[a..b].copy_from_slice(qtys);
        self.len = b;
    }
}

/// Sorted levels as a list of chunks: keys ascending (best last).
///
/// Invariants: no chunk is empty, keys ascend across and within chunks, `heads[c]` is the first
/// key of chunk `c`, and `len` counts all levels.
#[derive(Default)]
// Boxed chunks: a split or merge then shifts pointers in `chunks`, not 1 KiB chunk bodies.
#[allow(clippy::vec_box)]
struct Chunked {
    chunks: Vec<Box<Chunk>>,
    heads: Vec<i64>,
    len: usize,
    /// Chunks freed by merges or snapshots, reused by splits so steady-state diffs do not
    /// allocate.
    spare: Vec<Box<Chunk>>,
}

impl Chunked {
    /// Chunk that holds or should receive `key`: the last one whose first key is `<= key`
    /// (chunk 0 for keys below every chunk). Gallops down from the best chunk (distance 1, 2,
    /// 4, ...) before a binary search, since most keys land a few chunks from the touch.
    #[inline]
    fn chunk_for(&self, key: i64) -> usize {
        let h = &self.heads;
        let n = h.len();
        let mut hi = n; // heads[hi..] are all > key
        let mut step = 1;
        while step <= n {
            let i = n - step;
            if h[i] <= key {
                return i + h[i + 1..hi].partition_point(|&x| x <= key);
            }
            hi = i;
            step *= 2;
        }
        h[..hi].partition_point(|&x| x <= key).saturating_sub(1)
    }

    fn new_chunk(&mut self) -> Box<Chunk> {
        match self.spare.pop() {
            Some(mut c) => {
                c.len = 0;
                c
            }
            None => Chunk::empty(),
        }
    }

    #[inline]
    fn set(&mut self, key: i64, qty: i64) {
        if self.chunks.is_empty() {
            if qty > 0 {
                let mut c = self.new_chunk();
                c.insert(0, key, qty);
                self.chunks.push(c);
                self.heads.push(key);
                self.len = 1;
            }
            return;
        }
        let c = self.chunk_for(key);
        let chunk = &mut self.chunks[c];
        let i = chunk.lower_bound(key);
        if i < chunk.len && chunk.keys[i] == key {
            if qty > 0 {
                chunk.qtys[i] = qty;
            } else {
                chunk.remove(i);
                self.len -= 1;
                self.after_remove(c, i);
            }
        } else if qty > 0 {
            self.insert_at(c, i, key, qty);
        }
    }

    fn insert_at(&mut self, mut c: usize, mut i: usize, key: i64, qty: i64) {
        if self.chunks[c].len == CHUNK {
            let half = CHUNK / 2;
            let mut right = self.new_chunk();
            let left = &mut self.chunks[c];
            right.extend(&left.keys[half..], &left.qtys[half..]);
            left.len = half;
            self.heads.insert(c + 1, right.keys[0]);
            self.chunks.insert(c + 1, right);
            if i > half {
                c += 1;
                i -= half;
            }
        }
        self.chunks[c].insert(i, key, qty);
        if i == 0 {
            self.heads[c] = key;
        }
        self.len += 1;
    }

    fn after_remove(&mut self, c: usize, i: usize) {
        let n = self.chunks[c].len;
        if n == 0 {
            self.heads.remove(c);
            let freed = self.chunks.remove(c);
            self.spare.push(freed);
            return;
        }
        if i == 0 {
            self.heads[c] = self.chunks[c].keys[0];
        }
        if n < SPARSE {
            self.merge_sparse(c);
        }
    }

    /// Merges a sparse chunk into a neighbour when both fit in [`FILL`], which bounds the chunk
    /// count (and so the index search) by the number of levels.
    fn merge_sparse(&mut self, c: usize) {
        let n = self.chunks[c].len;
        let fits = |j: usize| self.chunks[j].len + n <= FILL;
        let (dst, src) = if c > 0 && fits(c - 1) {
            (c - 1, c)
        } else if c + 1 < self.chunks.len() && fits(c + 1) {
            (c, c + 1)
        } else {
            return;
        };
        self.heads.remove(src);
        let moved = self.chunks.remove(src);
        self.chunks[dst].extend(moved.keys(), &moved.qtys[..moved.len]);
        self.spare.push(moved);
    }

    fn clear(&mut self) {
        self.spare.append(&mut self.chunks);
        self.heads.clear();
        self.len = 0;
    }

    /// Rebuilds from unsorted levels; a later duplicate price wins, as if applied in order.
    fn rebuild(&mut self, levels: &[Level], key_of: impl Fn(Price) -> i64) {
        self.clear();
        let mut pairs: Vec<(i64, i64)> = levels
            .iter()
            .map(|l| (key_of(l.price), l.qty.raw()))
            .collect();
        // Exchanges send each side best-first, which for our key order is strictly descending.
        if pairs.windows(2).all(|w| w[0].0 > w[1].0) {
            pairs.reverse();
        } else if !pairs.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable sort keeps input order among equal keys, so "last wins" survives dedup.
            pairs.sort_by_key(|p| p.0);
        }
        let mut i = 0;
        while i < pairs.len() {
            let mut j = i;
            while j + 1 < pairs.len() && pairs[j + 1].0 == pairs[i].0 {
                j += 1;
            }
            let (key, qty) = pairs[j];
            if qty > 0 {
                if self.chunks.last().is_none_or(|c| c.len == FILL) {
                    let c = self.new_chunk();
                    self.chunks.push(c);
                    self.heads.push(key);
                }
                if let Some(c) = self.chunks.last_mut() {
                    let n = c.len;
                    c.insert(n, key, qty);
                }
                self.len += 1;
            }
            i = j + 1;
        }
    }

    /// The best (highest-key) level.
    #[inline]
    fn last(&self) -> Option<(i64, i64)> {
        let c = self.chunks.last()?;
        let i = c.len - 1;
        Some((c.keys[i], c.qtys[i]))
    }

    /// Every level, best first.
    #[inline]
    fn down_all(&self) -> ChunkDown<'_> {
        ChunkDown {
            chunks: &self.chunks,
            c: self.chunks.len().saturating_sub(1),
            i: self.chunks.last().map_or(0, |c| c.len),
        }
    }

    /// Levels with key `< bound`, best first (`i128` so negated price bounds cannot overflow).
    fn down_below(&self, bound: i128) -> ChunkDown<'_> {
        let c = self.heads.partition_point(|&h| i128::from(h) < bound);
        let Some(c) = c.checked_sub(1) else {
            return ChunkDown {
                chunks: &self.chunks,
                c: 0,
                i: 0,
            };
        };
        let i = self.chunks[c]
            .keys()
            .partition_point(|&k| i128::from(k) < bound);
        ChunkDown {
            chunks: &self.chunks,
            c,
            i,
        }
    }

    /// Checks the structural invariants (tests only).
    #[cfg(test)]
    fn check(&self) {
        assert_eq!(self.chunks.len(), self.heads.len());
        let mut prev = None;
        let mut n = 0;
        for (c, h) in self.chunks.iter().zip(&self.heads) {
            assert!(c.len > 0 && c.len <= CHUNK);
            assert_eq!(c.keys[0], *h);
            for &k in c.keys() {
                assert!(prev.is_none_or(|p| p < k));
                prev = Some(k);
            }
            assert!(c.qtys[..c.len].iter().all(|&q| q > 0));
            n += c.len;
        }
        assert_eq!(n, self.len);
    }
}

impl Clone for Chunked {
    /// Copies the levels only; the spare chunks stay with the original.
    fn clone(&self) -> Self {
        Self {
            chunks: self.chunks.clone(),
            heads: self.heads.clone(),
            len: self.len,
            spare: Vec::new(),
        }
    }
}

/// Walks a ladder towards lower keys, yielding `(key, qty)` from the best level outwards.
#[derive(Clone)]
struct ChunkDown<'a> {
    chunks: &'a [Box<Chunk>],
    /// Chunk being read.
    c: usize,
    /// Levels of chunk `c` still to yield: those at indexes `..i`.
    i: usize,
}

impl Iterator for ChunkDown<'_> {
    type Item = (i64, i64);

    #[inline]
    fn next(&mut self) -> Option<(i64, i64)> {
        while self.i == 0 {
            if self.c == 0 {
                return None;
            }
            self.c -= 1;
            self.i = self.chunks[self.c].len;
        }
        self.i -= 1;
        let chunk = &self.chunks[self.c];
        Some((chunk.keys[self.i], chunk.qtys[self.i]))
    }
}

/// Slots of the direct-indexed window near the touch (a multiple of 64; 128 KiB of quantities
/// per side): recorded BTCUSDT diffs touch levels a median ~7,800 ticks from the touch.
const WINDOW: usize = 16_384;
/// The window is placed with `1 / HEADROOM` of its slots above the best key, room for a best
/// that improves before the window must move.
const HEADROOM: usize = 8;

/// Where a key falls relative to a [`Window`].
enum Spot {
    /// On the grid inside the window, at this slot.
    Slot(usize),
    /// Outside the window's span (or no window is placed).
    Outside,
    /// Inside the span but between grid points: the inferred tick was wrong for this key.
    OffGrid,
}

/// Levels on one tick grid near the best, at slot `(key - base) / tick`: updating one is an
/// index computation and a store, with no search and no shifting (the chunked ladder's cost on
/// deep levels).
///
/// Invariants: `tick == 0` means no window and no levels; a slot's quantity is positive exactly
/// when its bit in `occupied` is set (zero otherwise); `len` counts those slots and `hi` is one
/// past the highest of them (0 when none); `base + (slots - 1) * tick` fits in `i64`.
#[derive(Clone, Default)]
struct Window {
    tick: i64,
    base: i64,
    qtys: Vec<i64>,
    occupied: Vec<u64>,
    len: usize,
    hi: usize,
    /// Slots to allocate when placed (0: [`WINDOW`]); tests use small windows.
    slots: usize,
}

impl Window {
    #[inline]
    fn locate(&self, key: i64) -> Spot {
        if self.tick == 0 {
            return Spot::Outside;
        }
        let Some(off) = key.checked_sub(self.base) else {
            return Spot::Outside;
        };
        if off < 0 {
            return Spot::Outside;
        }
        let (off, tick) = (off as u64, self.tick as u64);
        let slot = off / tick;
        if slot >= self.qtys.len() as u64 {
            Spot::Outside
        } else if off % tick != 0 {
            Spot::OffGrid
        } else {
            Spot::Slot(slot as usize)
        }
    }

    #[inline]
    fn key_at(&self, slot: usize) -> i64 {
        self.base + slot as i64 * self.tick
    }

    /// Sets a slot's quantity; zero or negative empties it.
    #[inline]
    fn put(&mut self, slot: usize, qty: i64) {
        let (w, bit) = (slot / 64, 1u64 << (slot % 64));
        let was = self.occupied[w] & bit != 0;
        if qty > 0 {
            self.qtys[slot] = qty;
            if !was {
                self.occupied[w] |= bit;
                self.len += 1;
                self.hi = self.hi.max(slot + 1);
            }
        } else if was {
            self.occupied[w] &= !bit;
            self.qtys[slot] = 0;
            self.len -= 1;
            if slot + 1 == self.hi {
                self.hi = self.highest_below(slot).map_or(0, |s| s + 1);
            }
        }
    }

    /// Highest occupied slot below `limit`.
    #[inline]
    fn highest_below(&self, limit: usize) -> Option<usize> {
        if limit == 0 {
            return None;
        }
        let mut w = (limit - 1) / 64;
        let mut word = self.occupied[w] & (u64::MAX >> (63 - (limit - 1) % 64));
        loop {
            if word != 0 {
                return Some(w * 64 + 63 - word.leading_zeros() as usize);
            }
            w = w.checked_sub(1)?;
            word = self.occupied[w];
        }
    }

    #[inline]
    fn best(&self) -> Option<(i64, i64)> {
        let s = self.hi.checked_sub(1)?;
        Some((self.key_at(s), self.qtys[s]))
    }

    /// Empties every slot, keeping the placement.
    fn drain(&mut self, mut each: impl FnMut(i64, i64)) {
        for w in 0..self.occupied.len() {
            let mut word = self.occupied[w];
            while word != 0 {
                let slot = w * 64 + word.trailing_zeros() as usize;
                each(self.key_at(slot), self.qtys[slot]);
                self.qtys[slot] = 0;
                word &= word - 1;
            }
            self.occupied[w] = 0;
        }
        self.len = 0;
        self.hi = 0;
    }

    /// Places an empty window on the grid of `tick` through `anchor` with `best` near its
    /// top; false (and no window) when the span would not fit in `i64`.
    fn place(&mut self, tick: i64, anchor: i64, best: i64) -> bool {
        debug_assert_eq!(self.len, 0);
        let slots = if self.slots == 0 { WINDOW } else { self.slots };
        let (t, a) = (i128::from(tick), i128::from(anchor));
        let below = (slots - slots / HEADROOM) as i128;
        let target = i128::from(best) - below * t;
        let base = a + (target - a).div_euclid(t) * t;
        let top = base + (slots as i128 - 1) * t;
        if tick <= 0 || base < i128::from(i64::MIN) || top > i128::from(i64::MAX) {
            self.tick = 0;
            return false;
        }
        if self.qtys.len() != slots {
            self.qtys = vec![0; slots];
            self.occupied = vec![0; slots.div_ceil(64)];
        }
        self.tick = tick;
        self.base = base as i64;
        true
    }

    /// Number of slots whose key is below `bound`.
    fn slots_below(&self, bound: i128) -> usize {
        if self.tick == 0 {
            return 0;
        }
        let span = bound - i128::from(self.base);
        if span <= 0 {
            return 0;
        }
        let t = i128::from(self.tick);
        usize::try_from((span + t - 1) / t).map_or(self.qtys.len(), |n| n.min(self.qtys.len()))
    }

    /// Walks occupied slots below `limit`, best first.
    fn down_from(&self, limit: usize) -> WindowDown<'_> {
        WindowDown {
            window: self,
            limit,
        }
    }
}

/// Occupied window slots below `limit`, highest first, as `(key, qty)`.
#[derive(Clone)]
struct WindowDown<'a> {
    window: &'a Window,
    limit: usize,
}

impl Iterator for WindowDown<'_> {
    type Item = (i64, i64);

    #[inline]
    fn next(&mut self) -> Option<(i64, i64)> {
        let s = self.window.highest_below(self.limit)?;
        self.limit = s;
        Some((self.window.key_at(s), self.window.qtys[s]))
    }
}

/// Greatest common divisor of the gaps between keys (0 when fewer than two distinct keys).
fn grid_tick(keys: impl Iterator<Item = i64>) -> i64 {
    let mut keys = keys.peekable();
    let Some(&first) = keys.peek() else {
        return 0;
    };
    let mut g: u64 = 0;
    for k in keys {
        let mut d = (i128::from(k) - i128::from(first)).unsigned_abs();
        let mut a = u128::from(g);
        while d != 0 {
            (a, d) = (d, a % d);
        }
        g = u64::try_from(a).unwrap_or(0);
    }
    i64::try_from(g).unwrap_or(0)
}

/// One side of the book: keys ascending (best last); asks store `-price` as the key.
///
/// Levels on the tick grid within the window around the best live in `near`; the rest (deep
/// levels, off-grid prices, books without a known tick) in the chunked `far` ladder. Invariant:
/// while a window is placed, `far` holds no key inside its span.
#[derive(Clone, Default)]
struct Ladder {
    /// Boxed so an `OrderBook` stays small to move (it travels inside events and enums).
    near: Box<Window>,
    far: Chunked,
}

impl Ladder {
    fn len(&self) -> usize {
        self.near.len + self.far.len
    }

    #[inline]
    fn set(&mut self, key: i64, qty: i64) {
        match self.near.locate(key) {
            Spot::Slot(s) => self.near.put(s, qty),
            Spot::Outside => {
                self.far.set(key, qty);
                if qty > 0 && self.near.tick != 0 {
                    self.follow_best();
                }
            }
            // Off-grid keys inside the span cannot be resting there: removing one is a no-op.
            Spot::OffGrid if qty > 0 => {
                self.drop_window();
                self.far.set(key, qty);
            }
            Spot::OffGrid => {}
        }
    }

    /// Moves the window when the best level left its upper half (the market drifted), so the
    /// levels that trade stay in the direct-indexed part.
    fn follow_best(&mut self) {
        let Some((best, _)) = self.last() else {
            return;
        };
        let slots = self.near.qtys.len();
        let lower = self.near.key_at(slots / 2);
        let top = self.near.key_at(slots - 1);
        if best < lower || best > top {
            let (tick, anchor) = (self.near.tick, self.near.base);
            let far = &mut self.far;
            self.near.drain(|k, q| far.set(k, q));
            if self.near.place(tick, anchor, best) {
                self.pull_into_window();
            }
        }
    }

    /// Moves every far level inside the window's span into it; an off-grid one drops the
    /// window instead (the tick is not what the snapshot suggested).
    fn pull_into_window(&mut self) {
        let slots = self.near.qtys.len();
        let (lo, hi) = (self.near.base, self.near.key_at(slots - 1));
        let inside: Vec<(i64, i64)> = self
            .far
            .down_below(i128::from(hi) + 1)
            .take_while(|&(k, _)| k >= lo)
            .collect();
        for (k, q) in inside {
            match self.near.locate(k) {
                Spot::Slot(s) => {
                    self.far.set(k, 0);
                    self.near.put(s, q);
                }
                _ => {
                    self.drop_window();
                    return;
                }
            }
        }
    }

    /// Moves every window level to the far ladder and forgets the tick.
    fn drop_window(&mut self) {
        let far = &mut self.far;
        self.near.drain(|k, q| far.set(k, q));
        self.near.tick = 0;
    }

    fn clear(&mut self) {
        self.near.drain(|_, _| {});
        self.far.clear();
    }

    /// Rebuilds from unsorted levels (a later duplicate price wins) and places the window on
    /// the tick the levels imply, around their best.
    fn rebuild(&mut self, levels: &[Level], key_of: impl Fn(Price) -> i64) {
        self.near.drain(|_, _| {});
        self.far.rebuild(levels, key_of);
        let tick = grid_tick(self.far.down_all().map(|(k, _)| k));
        match self.far.last() {
            Some((best, _)) if tick > 0 && self.near.place(tick, best, best) => {
                self.pull_into_window();
            }
            _ => self.near.tick = 0,
        }
    }

    /// The best (highest-key) level.
    #[inline]
    fn last(&self) -> Option<(i64, i64)> {
        match (self.near.best(), self.far.last()) {
            (Some(n), Some(f)) => Some(if f.0 > n.0 { f } else { n }),
            (n, f) => n.or(f),
        }
    }

    /// Every level, best first.
    fn down_all(&self) -> Down<'_> {
        Down {
            near: self.near.down_from(self.near.hi).peekable(),
            far: self.far.down_all().peekable(),
        }
    }

    /// Levels with key `< bound`, best first (`i128` so negated price bounds cannot overflow).
    fn down_below(&self, bound: i128) -> Down<'_> {
        Down {
            near: self.near.down_from(self.near.slots_below(bound)).peekable(),
            far: self.far.down_below(bound).peekable(),
        }
    }

    /// Checks the structural invariants (tests only).
    #[cfg(test)]
    fn check(&self) {
        self.far.check();
        let w = &self.near;
        if w.tick == 0 {
            assert_eq!(w.len, 0);
            return;
        }
        let mut n = 0;
        let mut hi = 0;
        for (s, &q) in w.qtys.iter().enumerate() {
            let bit = w.occupied[s / 64] >> (s % 64) & 1 == 1;
            assert_eq!(bit, q > 0, "slot {s}");
            if bit {
                n += 1;
                hi = s + 1;
            }
        }
        assert_eq!((n, hi), (w.len, w.hi));
        let top = w.key_at(w.qtys.len() - 1);
        assert!(self.far.down_all().all(|(k, _)| k < w.base || k > top));
    }
}

impl PartialEq for Ladder {
    /// Same levels, whatever the layout.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.down_all().eq(other.down_all())
    }
}

impl Eq for Ladder {}

impl fmt::Debug for Ladder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.down_all()).finish()
    }
}

/// Walks a ladder towards lower keys: the window's and the far ladder's levels merged.
#[derive(Clone)]
struct Down<'a> {
    near: Peekable<WindowDown<'a>>,
    far: Peekable<ChunkDown<'a>>,
}

impl Iterator for Down<'_> {
    type Item = (i64, i64);

    #[inline]
    fn next(&mut self) -> Option<(i64, i64)> {
        match (self.near.peek(), self.far.peek()) {
            (Some(n), Some(f)) if f.0 > n.0 => self.far.next(),
            (Some(_), _) => self.near.next(),
            (None, _) => self.far.next(),
        }
    }
}

/// All levels of one side, best first, with an exact length.
struct SideLevels<'a> {
    down: Down<'a>,
    side: Side,
    left: usize,
}

impl Iterator for SideLevels<'_> {
    type Item = Level;

    #[inline]
    fn next(&mut self) -> Option<Level> {
        let (k, q) = self.down.next()?;
        self.left -= 1;
        Some(Level {
            price: price_of(self.side, k),
            qty: Qty(q),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for SideLevels<'_> {}

/// Why a level from the wire cannot go into a book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    /// Price zero or negative.
    #[error("{side:?} level price {price} is not positive")]
    Price {
        /// Book side.
        side: Side,
        /// Offending price.
        price: Price,
    },
    /// Negative quantity (zero is a valid removal).
    #[error("{side:?} level at {price} has negative quantity {qty}")]
    NegativeQty {
        /// Book side.
        side: Side,
        /// Level price.
        price: Price,
        /// Offending quantity.
        qty: Qty,
    },
}

/// Checks one wire level: positive price, non-negative quantity.
pub fn validate_level(side: Side, level: &Level) -> Result<(), BookError> {
    if level.price.raw() <= 0 {
        return Err(BookError::Price {
            side,
            price: level.price,
        });
    }
    if level.qty.raw() < 0 {
        return Err(BookError::NegativeQty {
            side,
            price: level.price,
            qty: level.qty,
        });
    }
    Ok(())
}

/// Result of walking one side of the book for a given size (a market order estimate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Quantity the book could fill (less than requested when the side runs out).
    pub filled: Qty,
    /// Exact Σ price_raw × qty_raw over the consumed levels (scale 10^16); numerator of the
    /// average price with `filled.raw()` as denominator.
    pub notional_raw: i128,
    /// Worst (last) price touched.
    pub worst_price: Price,
}

impl Fill {
    /// True when the whole requested size was available.
    pub fn is_complete(&self, requested: Qty) -> bool {
        self.filled >= requested
    }

    /// Volume-weighted average fill price, floored to the fixed-point grid.
    pub fn avg_price(&self) -> Price {
        Price(self.notional_raw.div_euclid(self.filled.raw() as i128) as i64)
    }

    /// Exact quote notional, scaled by [`SCALE`] like [`super::types::notional`].
    pub fn quote_notional(&self) -> i128 {
        self.notional_raw / SCALE as i128
    }
}

/// A local L2 order book: absolute quantity per price level on each side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderBook {
    bids: Ladder,
    asks: Ladder,
    /// Exchange update id the book reflects (the last applied diff's final id).
    pub last_update_id: u64,
}

fn check_levels(bids: &[Level], asks: &[Level]) -> Result<(), BookError> {
    bids.iter().try_for_each(|l| validate_level(Side::Buy, l))?;
    asks.iter().try_for_each(|l| validate_level(Side::Sell, l))
}

#[inline]
fn key_of(side: Side, price: Price) -> i64 {
    match side {
        Side::Buy => price.raw(),
        Side::Sell => -price.raw(),
    }
}

#[inline]
fn price_of(side: Side, key: i64) -> Price {
    match side {
        Side::Buy => Price(key),
        Side::Sell => Price(-key),
    }
}

impl OrderBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty book whose direct-indexed windows hold `slots` levels (tests use tiny ones so
    /// that window moves and far levels happen on small inputs).
    #[cfg(test)]
    fn with_window_slots(slots: usize) -> Self {
        let mut b = Self::default();
        b.bids.near.slots = slots;
        b.asks.near.slots = slots;
        b
    }

    /// Replaces the whole book with a snapshot (levels in any order; zero quantities skipped).
    pub fn apply_snapshot(&mut self, bids: &[Level], asks: &[Level], last_update_id: u64) {
        self.bids.rebuild(bids, |p| key_of(Side::Buy, p));
        self.asks.rebuild(asks, |p| key_of(Side::Sell, p));
        self.last_update_id = last_update_id;
    }

    /// Sets the absolute quantity at a price; zero (or a negative qty, which parsers reject
    /// anyway) removes the level, and removing an absent level is a no-op.
    #[inline]
    pub fn apply_level(&mut self, side: Side, price: Price, qty: Qty) {
        self.ladder_mut(side).set(key_of(side, price), qty.raw());
    }

    /// Applies one diff batch (both sides) and records its final update id.
    pub fn apply_diff(&mut self, bids: &[Level], asks: &[Level], last_update_id: u64) {
        for l in bids {
            self.apply_level(Side::Buy, l.price, l.qty);
        }
        for l in asks {
            self.apply_level(Side::Sell, l.price, l.qty);
        }
        self.last_update_id = last_update_id;
    }

    /// Validates a whole diff first and applies it only when every level is valid, so a bad
    /// message leaves the book untouched (the caller counts it and resyncs).
    pub fn try_apply_diff(
        &mut self,
        bids: &[Level],
        asks: &[Level],
        last_update_id: u64,
    ) -> Result<(), BookError> {
        check_levels(bids, asks)?;
        self.apply_diff(bids, asks, last_update_id);
        Ok(())
    }

    /// Validates a whole snapshot first and applies it only when every level is valid.
    pub fn try_apply_snapshot(
        &mut self,
        bids: &[Level],
        asks: &[Level],
        last_update_id: u64,
    ) -> Result<(), BookError> {
        check_levels(bids, asks)?;
        self.apply_snapshot(bids, asks, last_update_id);
        Ok(())
    }

    /// Empties both sides.
    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.last_update_id = 0;
    }

    #[inline]
    fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    #[inline]
    fn ladder_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Best level of a side.
    #[inline]
    pub fn best(&self, side: Side) -> Option<Level> {
        let (k, q) = self.ladder(side).last()?;
        Some(Level {
            price: price_of(side, k),
            qty: Qty(q),
        })
    }

    /// Highest bid.
    #[inline]
    pub fn best_bid(&self) -> Option<Level> {
        self.best(Side::Buy)
    }

    /// Lowest ask.
    #[inline]
    pub fn best_ask(&self) -> Option<Level> {
        self.best(Side::Sell)
    }

    /// Best ask minus best bid (negative when crossed).
    pub fn spread(&self) -> Option<Price> {
        Some(self.best_ask()?.price - self.best_bid()?.price)
    }

    /// Exact mid: the raw average of best bid and ask, floored to the fixed-point grid.
    pub fn mid(&self) -> Option<Price> {
        let b = self.best_bid()?.price.raw() as i128;
        let a = self.best_ask()?.price.raw() as i128;
        Some(Price((a + b).div_euclid(2) as i64))
    }

    /// Number of levels on one side.
    pub fn depth(&self, side: Side) -> usize {
        self.ladder(side).len()
    }

    /// All levels of a side, best first.
    pub fn levels(&self, side: Side) -> impl ExactSizeIterator<Item = Level> + '_ {
        let l = self.ladder(side);
        SideLevels {
            down: l.down_all(),
            side,
            left: l.len(),
        }
    }

    /// Best `n` levels of a side, best first.
    pub fn top(&self, side: Side, n: usize) -> Vec<Level> {
        self.levels(side).take(n).collect()
    }

    /// Levels of a side with price in `[lo, hi)`, best first.
    pub fn levels_in_range(
        &self,
        side: Side,
        lo: Price,
        hi: Price,
    ) -> impl Iterator<Item = Level> + '_ {
        let (key_lo, key_hi) = key_range(side, lo, hi);
        self.ladder(side)
            .down_below(key_hi)
            .take_while(move |&(k, _)| i128::from(k) >= key_lo)
            .map(move |(k, q)| Level {
                price: price_of(side, k),
                qty: Qty(q),
            })
    }

    /// Total quantity resting on a side at prices in `[lo, hi)`.
    pub fn volume_in_range(&self, side: Side, lo: Price, hi: Price) -> Qty {
        let (key_lo, key_hi) = key_range(side, lo, hi);
        Qty(self
            .ladder(side)
            .down_below(key_hi)
            .take_while(|&(k, _)| i128::from(k) >= key_lo)
            .map(|(_, q)| q)
            .sum())
    }

    /// Cumulative quantity at levels as good as `price` or better (bids ≥ price, asks ≤ price).
    pub fn cumulative_depth(&self, side: Side, price: Price) -> Qty {
        let bound = match side {
            Side::Buy => i128::from(price.raw()),
            Side::Sell => -i128::from(price.raw()),
        };
        Qty(self
            .ladder(side)
            .down_all()
            .take_while(|&(k, _)| i128::from(k) >= bound)
            .map(|(_, q)| q)
            .sum())
    }

    /// Walks the side a taker of `taker_side` consumes (a buy eats asks) for `qty`; `None` when
    /// that side is empty or `qty` is not positive.
    pub fn walk(&self, taker_side: Side, qty: Qty) -> Option<Fill> {
        if qty.raw() <= 0 {
            return None;
        }
        let side = match taker_side {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        };
        let mut left = qty.raw();
        let mut notional_raw: i128 = 0;
        let mut worst = None;
        for (k, q) in self.ladder(side).down_all() {
            let take = q.min(left);
            let price = price_of(side, k);
            notional_raw += price.raw() as i128 * take as i128;
            worst = Some(price);
            left -= take;
            if left == 0 {
                break;
            }
        }
        Some(Fill {
            filled: Qty(qty.raw() - left),
            notional_raw,
            worst_price: worst?,
        })
    }

    /// True when the best bid is at or above the best ask (an invalid book).
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(b), Some(a)) if b.price >= a.price)
    }
}

/// Key span `[lo, hi)` (as `i128`) of the prices in `[lo, hi)` on one side: asks key by
/// `-price`, so their span is `(-hi, -lo]`, i.e. `[1 - hi, 1 - lo)`.
fn key_range(side: Side, lo: Price, hi: Price) -> (i128, i128) {
    let (lo, hi) = (i128::from(lo.raw()), i128::from(hi.raw()));
    match side {
        Side::Buy => (lo, hi),
        Side::Sell => (1 - hi, 1 - lo),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn lv(p: i64, q: i64) -> Level {
        Level {
            price: Price::from_units(p),
            qty: Qty::from_units(q),
        }
    }

    fn book() -> OrderBook {
        let mut b = OrderBook::new();
        b.apply_snapshot(
            &[lv(99, 1), lv(100, 2), lv(98, 3)],
            &[lv(102, 4), lv(101, 5), lv(103, 6)],
            7,
        );
        b
    }

    #[test]
    fn snapshot_sorts_and_reports_best() {
        let b = book();
        assert_eq!(b.best_bid(), Some(lv(100, 2)));
        assert_eq!(b.best_ask(), Some(lv(101, 5)));
        assert_eq!(b.top(Side::Buy, 2), vec![lv(100, 2), lv(99, 1)]);
        assert_eq!(
            b.top(Side::Sell, 5),
            vec![lv(101, 5), lv(102, 4), lv(103, 6)]
        );
        assert_eq!(b.depth(Side::Buy), 3);
        assert_eq!(b.last_update_id, 7);
        assert_eq!(b.spread(), Some(Price::from_units(1)));
        assert!(!b.is_crossed());
    }

    #[test]
    fn snapshot_duplicate_price_last_wins_and_zero_skipped() {
        let mut b = OrderBook::new();
        b.apply_snapshot(&[lv(5, 1), lv(5, 2), lv(4, 0)], &[], 1);
        assert_eq!(b.top(Side::Buy, 10), vec![lv(5, 2)]);
    }

    #[test]
    fn diffs_insert_update_remove_and_absent_delete() {
        let mut b = book();
        b.apply_level(Side::Buy, Price::from_units(100), Qty::ZERO);
        b.apply_level(Side::Buy, Price::from_units(50), Qty::ZERO);
        b.apply_level(Side::Sell, Price::from_units(101), Qty::from_units(9));
        b.apply_level(Side::Sell, Price::from_units(100), Qty::from_units(1));
        assert_eq!(b.best_bid(), Some(lv(99, 1)));
        assert_eq!(b.best_ask(), Some(lv(100, 1)));
        assert_eq!(b.depth(Side::Sell), 4);
        b.apply_level(Side::Buy, Price::from_units(100), Qty::from_units(1));
        assert!(b.is_crossed());
    }

    #[test]
    fn checked_apply_rejects_bad_levels_atomically() {
        let mut b = book();
        let before = b.clone();
        let bad_qty = Level {
            price: Price::from_units(100),
            qty: Qty(-1),
        };
        assert_eq!(
            b.try_apply_diff(&[lv(97, 1)], &[bad_qty], 9),
            Err(BookError::NegativeQty {
                side: Side::Sell,
                price: Price::from_units(100),
                qty: Qty(-1)
            })
        );
        assert_eq!(b, before);
        let bad_price = Level {
            price: Price::ZERO,
            qty: Qty(1),
        };
        assert!(matches!(
            b.try_apply_snapshot(&[bad_price], &[], 9),
            Err(BookError::Price { .. })
        ));
        assert_eq!(b, before);
        b.try_apply_diff(&[lv(97, 1)], &[lv(101, 0)], 9).unwrap();
        assert_eq!(b.best_ask(), Some(lv(102, 4)));
        assert_eq!(b.last_update_id, 9);
        b.try_apply_snapshot(&[lv(1, 1)], &[lv(2, 1)], 10).unwrap();
        assert_eq!(b.depth(Side::Buy), 1);
    }

    #[test]
    fn mid_is_floored_raw_average() {
        let mut b = OrderBook::new();
        b.apply_snapshot(
            &[Level {
                price: Price(10),
                qty: Qty(1),
            }],
            &[Level {
                price: Price(13),
                qty: Qty(1),
            }],
            0,
        );
        assert_eq!(b.mid(), Some(Price(11)));
        assert_eq!(OrderBook::new().mid(), None);
    }

    #[test]
    fn volume_queries() {
        let b = book();
        let p = Price::from_units;
        assert_eq!(
            b.volume_in_range(Side::Buy, p(99), p(101)),
            Qty::from_units(3)
        );
        assert_eq!(
            b.volume_in_range(Side::Sell, p(101), p(103)),
            Qty::from_units(9)
        );
        assert_eq!(b.volume_in_range(Side::Sell, p(103), p(101)), Qty::ZERO);
        assert_eq!(b.cumulative_depth(Side::Buy, p(99)), Qty::from_units(3));
        assert_eq!(b.cumulative_depth(Side::Sell, p(102)), Qty::from_units(9));
        assert_eq!(b.cumulative_depth(Side::Sell, p(100)), Qty::ZERO);
        let in_range: Vec<_> = b.levels_in_range(Side::Sell, p(102), p(104)).collect();
        assert_eq!(in_range, vec![lv(102, 4), lv(103, 6)]);
    }

    #[test]
    fn walk_gives_exact_average() {
        let b = book();
        // 5 @ 101 + 1 @ 102 = 607 / 6
        let f = b.walk(Side::Buy, Qty::from_units(6)).unwrap();
        assert_eq!(f.filled, Qty::from_units(6));
        assert_eq!(f.worst_price, Price::from_units(102));
        assert_eq!(f.avg_price(), Price(60_700_000_000 / 6));
        assert_eq!(f.quote_notional(), 607 * SCALE as i128);
        assert!(f.is_complete(Qty::from_units(6)));
        let f = b.walk(Side::Sell, Qty::from_units(100)).unwrap();
        assert_eq!(f.filled, Qty::from_units(6));
        assert!(!f.is_complete(Qty::from_units(100)));
        assert_eq!(b.walk(Side::Sell, Qty::ZERO), None);
        assert_eq!(OrderBook::new().walk(Side::Buy, Qty(1)), None);
    }

    /// Compares one side of a book with a reference map and checks the chunk invariants.
    fn assert_side(b: &OrderBook, side: Side, want: &BTreeMap<i64, i64>) {
        b.ladder(side).check();
        let got: Vec<(i64, i64)> = b
            .levels(side)
            .map(|l| (l.price.raw(), l.qty.raw()))
            .collect();
        let mut exp: Vec<(i64, i64)> = want.iter().map(|(&p, &q)| (p, q)).collect();
        if side == Side::Buy {
            exp.reverse();
        }
        assert_eq!(got, exp);
    }

    #[test]
    fn chunks_split_and_merge_under_heavy_churn() {
        // Deterministic LCG: enough levels for many chunks, then a removal wave that empties
        // and thins chunks (merges), then refills (splits), both sides, any depth.
        let mut s: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |n: u64| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (s >> 33) % n
        };
        let mut b = OrderBook::new();
        let mut want = [BTreeMap::new(), BTreeMap::new()];
        let snap: Vec<Level> = (0..3000).map(|i| lv(10_000 - 2 * i, 1 + i % 7)).collect();
        b.apply_snapshot(&snap, &[], 1);
        for l in &snap {
            want[0].insert(l.price.raw(), l.qty.raw());
        }
        assert_side(&b, Side::Buy, &want[0]);
        for phase in 0..3 {
            let remove_pct = [20, 95, 5][phase];
            for step in 0..20_000 {
                let side = if next(2) == 0 { Side::Buy } else { Side::Sell };
                let price = Price::from_units(4_000 + next(6_001) as i64);
                let qty = if next(100) < remove_pct {
                    0
                } else {
                    1 + next(9) as i64
                };
                b.apply_level(side, price, Qty::from_units(qty));
                let m = &mut want[(side == Side::Sell) as usize];
                if qty == 0 {
                    m.remove(&price.raw());
                } else {
                    m.insert(price.raw(), Qty::from_units(qty).raw());
                }
                if step % 997 == 0 {
                    assert_side(&b, Side::Buy, &want[0]);
                    assert_side(&b, Side::Sell, &want[1]);
                }
            }
            assert_side(&b, Side::Buy, &want[0]);
            assert_side(&b, Side::Sell, &want[1]);
            assert_eq!(b.depth(Side::Sell), want[1].len());
        }
        let copy = b.clone();
        assert_eq!(copy, b);
        b.apply_level(Side::Sell, Price::from_units(1), Qty::from_units(1));
        assert_ne!(copy, b);
    }

    #[test]
    fn window_follows_the_market_and_survives_extreme_prices() {
        let mut b = OrderBook::with_window_slots(64);
        let tick = 1_000_000; // 0.01
        let bids: Vec<Level> = (0..50)
            .map(|i| Level {
                price: Price(6_000_000_000_000 - i * tick),
                qty: Qty(1),
            })
            .collect();
        b.apply_snapshot(&bids, &[], 1);
        b.bids.check();
        assert_eq!(b.bids.near.len, 50);
        // The market falls 1,000 ticks, level by level: the window moves along.
        for i in 1..=1000 {
            b.apply_level(
                Side::Buy,
                Price(6_000_000_000_000 - (i + 49) * tick),
                Qty(2),
            );
            b.apply_level(
                Side::Buy,
                Price(6_000_000_000_000 - (i - 1) * tick),
                Qty::ZERO,
            );
        }
        b.bids.check();
        assert_eq!(b.depth(Side::Buy), 50);
        assert_eq!(
            b.best_bid().map(|l| l.price),
            Some(Price(6_000_000_000_000 - 1000 * tick))
        );
        // The window moves once the best leaves its upper half, so the 50 contiguous levels
        // from the best down fill at least that half.
        assert!(
            b.bids.near.len >= 32,
            "levels near the touch are in the window"
        );
        // A price between grid points drops the window; the book stays exact.
        b.apply_level(Side::Buy, Price(5_999_000_000_000 - tick / 2), Qty(3));
        b.bids.check();
        assert_eq!(b.bids.near.tick, 0);
        assert_eq!(b.depth(Side::Buy), 51);
        // Keys at the ends of i64: no window fits, the far ladder holds them.
        let top = [
            Level {
                price: Price(i64::MAX),
                qty: Qty(1),
            },
            Level {
                price: Price(i64::MAX - 3),
                qty: Qty(2),
            },
        ];
        b.apply_snapshot(&top, &top, 2);
        b.bids.check();
        b.asks.check();
        assert_eq!(b.best_bid(), Some(top[0]));
        assert_eq!(b.best_ask(), Some(top[1]));
        assert_eq!(
            b.levels(Side::Sell).collect::<Vec<_>>(),
            vec![top[1], top[0]]
        );
    }

    /// The naive reference the property test compares against.
    #[derive(Default)]
    struct RefBook {
        bids: BTreeMap<i64, i64>,
        asks: BTreeMap<i64, i64>,
    }

    impl RefBook {
        fn side(&mut self, s: Side) -> &mut BTreeMap<i64, i64> {
            match s {
                Side::Buy => &mut self.bids,
                Side::Sell => &mut self.asks,
            }
        }
        fn set(&mut self, s: Side, p: i64, q: i64) {
            if q <= 0 {
                self.side(s).remove(&p);
            } else {
                self.side(s).insert(p, q);
            }
        }
        fn levels(&self, s: Side) -> Vec<Level> {
            let mk = |(&p, &q): (&i64, &i64)| Level {
                price: Price(p),
                qty: Qty(q),
            };
            match s {
                Side::Buy => self.bids.iter().rev().map(mk).collect(),
                Side::Sell => self.asks.iter().map(mk).collect(),
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Snapshot(Vec<(i64, i64)>, Vec<(i64, i64)>),
        Diff(bool, i64, i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let lvls = prop::collection::vec((0i64..200, 0i64..5), 0..60);
        // Prices on a grid of 5 give the window a tick above 1; off-grid diffs then drop it.
        let on_grid = || (0i64..40).prop_map(|p| p * 5);
        let grid = prop::collection::vec((on_grid(), 0i64..5), 0..60);
        prop_oneof![
            1 => (lvls.clone(), lvls).prop_map(|(b, a)| Op::Snapshot(b, a)),
            1 => (grid.clone(), grid).prop_map(|(b, a)| Op::Snapshot(b, a)),
            20 => (any::<bool>(), 0i64..200, 0i64..5).prop_map(|(s, p, q)| Op::Diff(s, p, q)),
            10 => (any::<bool>(), on_grid(), 0i64..5).prop_map(|(s, p, q)| Op::Diff(s, p, q)),
        ]
    }

    proptest! {
        #[test]
        fn matches_btreemap_reference(ops in prop::collection::vec(op(), 1..300),
                                      lo in 0i64..200, hi in 0i64..200, walk in 1i64..40,
                                      slots in prop_oneof![Just(0usize), Just(64), Just(128)]) {
            let mut b = OrderBook::with_window_slots(slots);
            let mut r = RefBook::default();
            for op in &ops {
                match op {
                    Op::Snapshot(bs, as_) => {
                        let conv = |v: &Vec<(i64, i64)>| v.iter()
                            .map(|&(p, q)| Level { price: Price(p), qty: Qty(q) })
                            .collect::<Vec<_>>();
                        b.apply_snapshot(&conv(bs), &conv(as_), 1);
                        r = RefBook::default();
                        for &(p, q) in bs { r.set(Side::Buy, p, q); }
                        for &(p, q) in as_ { r.set(Side::Sell, p, q); }
                    }
                    Op::Diff(s, p, q) => {
                        let side = if *s { Side::Buy } else { Side::Sell };
                        b.apply_level(side, Price(*p), Qty(*q));
                        r.set(side, *p, *q);
                    }
                }
                for side in [Side::Buy, Side::Sell] {
                    prop_assert_eq!(b.best(side), r.levels(side).first().copied());
                    b.ladder(side).check();
                }
            }
            for side in [Side::Buy, Side::Sell] {
                b.ladder(side).check();
                let all = r.levels(side);
                prop_assert_eq!(b.levels(side).collect::<Vec<_>>(), all.clone());
                prop_assert_eq!(b.depth(side), all.len());
                prop_assert_eq!(b.top(side, 3), all.iter().take(3).copied().collect::<Vec<_>>());
                let in_range: i64 = all.iter()
                    .filter(|l| l.price.raw() >= lo && l.price.raw() < hi)
                    .map(|l| l.qty.raw()).sum();
                prop_assert_eq!(b.volume_in_range(side, Price(lo), Price(hi)), Qty(in_range));
                let better: i64 = all.iter()
                    .filter(|l| match side { Side::Buy => l.price.raw() >= lo,
                                             Side::Sell => l.price.raw() <= lo })
                    .map(|l| l.qty.raw()).sum();
                prop_assert_eq!(b.cumulative_depth(side, Price(lo)), Qty(better));
                // Walking: the taker of the opposite side consumes this side best-first.
                let taker = match side { Side::Buy => Side::Sell, Side::Sell => Side::Buy };
                let mut left = walk;
                let mut num: i128 = 0;
                for l in &all {
                    let t = l.qty.raw().min(left);
                    num += l.price.raw() as i128 * t as i128;
                    left -= t;
                    if left == 0 { break; }
                }
                match b.walk(taker, Qty(walk)) {
                    None => prop_assert!(all.is_empty()),
                    Some(f) => {
                        prop_assert_eq!(f.filled, Qty(walk - left));
                        prop_assert_eq!(f.notional_raw, num);
                    }
                }
            }
            let crossed = match (r.levels(Side::Buy).first(), r.levels(Side::Sell).first()) {
                (Some(b), Some(a)) => b.price >= a.price,
                _ => false,
            };
            prop_assert_eq!(b.is_crossed(), crossed);
        }
    }
}

//! Depth-frame throughput: parse + apply on one core, and whole recorded-session replay.
//!
//! Frames come from the recorded hftbacktest Binance spot session when the shared test data is
//! present (its frames are large: ~36 levels on average); a deterministic generator always adds
//! "typical" spot frames of 5–30 levels. Because the bench machine may be shared, each frame set
//! is also timed in CPU time of the bench thread (Linux `/proc/thread-self/schedstat`), which is
//! the "frames/s on one core" figure independent of other load.

use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flate2::read::MultiGzDecoder;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use mmtrader::feeds::binance::sync::{BookSync, Rules, SyncConfig};
use mmtrader::feeds::binance::wire::{
    DepthSnapshot, DepthUpdate, Parsed, parse_depth_snapshot, parse_frame_reusing,
};
use mmtrader::feeds::replay::Replayer;
use mmtrader::market::book::OrderBook;
use mmtrader::market::types::Side;

const RECORDING: &str = "exchange_raw/hftbacktest_binance/spot_btcusdt_20240808.gz";

/// Recorded lines (`<ns> <payload>`), or `None` when the shared data is absent.
fn recorded_lines() -> Option<Vec<String>> {
    let path = mmtrader::testdata::dir().join(RECORDING);
    let file = std::fs::File::open(path).ok()?;
    let reader = BufReader::new(MultiGzDecoder::new(file));
    reader.lines().collect::<Result<Vec<_>, _>>().ok()
}

fn level(price_cents: i64, qty: u32) -> String {
    format!(
        "[\"{}.{:02}000000\",\"{}.{:05}000\"]",
        price_cents / 100,
        price_cents % 100,
        qty / 100_000,
        qty % 100_000
    )
}

/// Deterministic synthetic spot session: one snapshot line then 5,000 diffs of 5–30 levels.
fn generated_lines() -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut lines = Vec::new();
    let bids: Vec<String> = (0..1000).map(|i| level(6_000_000 - i, 100_000)).collect();
    let asks: Vec<String> = (0..1000).map(|i| level(6_000_001 + i, 100_000)).collect();
    lines.push(format!(
        "0 {{\"lastUpdateId\":1000,\"bids\":[{}],\"asks\":[{}]}}",
        bids.join(","),
        asks.join(",")
    ));
    let mut id = 1001u64;
    for n in 1..=5000 {
        let count = rng.random_range(5..=30);
        let (mut b, mut a) = (Vec::new(), Vec::new());
        for _ in 0..count {
            let off = rng.random_range(0..2000);
            let qty = if rng.random_bool(0.3) {
                0
            } else {
                rng.random_range(1..10_000_000)
            };
            if rng.random_bool(0.5) {
                b.push(level(6_000_000 - off, qty));
            } else {
                a.push(level(6_000_001 + off, qty));
            }
        }
        let last = id + rng.random_range(0..20);
        lines.push(format!(
            "{n} {{\"stream\":\"btcusdt@depth@100ms\",\"data\":{{\"e\":\"depthUpdate\",\"E\":{n},\
             \"s\":\"BTCUSDT\",\"U\":{id},\"u\":{last},\"b\":[{}],\"a\":[{}]}}}}",
            b.join(","),
            a.join(",")
        ));
        id = last + 1;
    }
    lines
}

fn payload(line: &str) -> &str {
    line.split_once(' ').map_or(line, |(_, p)| p)
}

struct FrameSet<'a> {
    name: &'static str,
    frames: Vec<&'a str>,
    snapshot: DepthSnapshot,
}

fn frame_set<'a>(name: &'static str, lines: &'a [String]) -> FrameSet<'a> {
    let frames: Vec<&str> = lines
        .iter()
        .map(|l| payload(l))
        .filter(|p| p.contains("\"e\":\"depthUpdate\""))
        .collect();
    let snapshot_text = lines
        .iter()
        .map(|l| payload(l))
        .find(|p| p.starts_with("{\"lastUpdateId\""))
        .expect("session has a snapshot line");
    let snapshot = parse_depth_snapshot(snapshot_text).expect("snapshot parses");
    FrameSet {
        name,
        frames,
        snapshot,
    }
}

fn parse_apply(frames: &[&str], book: &mut OrderBook, buf: &mut DepthUpdate) {
    for f in frames {
        if let Ok(Parsed::Depth) = parse_frame_reusing(f, buf) {
            for l in &buf.bids {
                book.apply_level(Side::Buy, l.price, l.qty);
            }
            for l in &buf.asks {
                book.apply_level(Side::Sell, l.price, l.qty);
            }
            book.last_update_id = buf.final_update_id;
        }
    }
}

/// CPU time consumed by this thread, in ns (Linux schedstat), when available.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Frames per second of thread CPU time for parse + apply, over about one wall second.
fn cpu_rate(set: &FrameSet, parse_only: bool) -> Option<f64> {
    let mut book = OrderBook::new();
    book.apply_snapshot(
        &set.snapshot.bids,
        &set.snapshot.asks,
        set.snapshot.last_update_id,
    );
    let mut buf = DepthUpdate::default();
    let start_cpu = thread_cpu_ns()?;
    let start = Instant::now();
    let mut frames = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        if parse_only {
            for f in &set.frames {
                black_box(parse_frame_reusing(f, &mut buf).is_ok());
            }
        } else {
            parse_apply(&set.frames, &mut book, &mut buf);
        }
        frames += set.frames.len() as u64;
    }
    let cpu = thread_cpu_ns()?.saturating_sub(start_cpu).max(1);
    Some(frames as f64 / (cpu as f64 / 1e9))
}

fn bench_set(c: &mut Criterion, set: &FrameSet) {
    let mut buf = DepthUpdate::default();
    let levels: usize = set
        .frames
        .iter()
        .map(|f| {
            parse_frame_reusing(f, &mut buf).expect("frame parses");
            buf.bids.len() + buf.asks.len()
        })
        .sum();
    eprintln!(
        "depth/{}: {} frames, {:.1} levels/frame; CPU-time rate: parse {:.0} frames/s, \
         parse+apply {:.0} frames/s",
        set.name,
        set.frames.len(),
        levels as f64 / set.frames.len() as f64,
        cpu_rate(set, true).unwrap_or(f64::NAN),
        cpu_rate(set, false).unwrap_or(f64::NAN),
    );

    let mut g = c.benchmark_group(format!("depth_{}", set.name));
    g.throughput(Throughput::Elements(set.frames.len() as u64));
    g.sample_size(20);
    g.bench_function("parse_only", |b| {
        let mut buf = DepthUpdate::default();
        b.iter(|| {
            for f in &set.frames {
                black_box(parse_frame_reusing(black_box(f), &mut buf).is_ok());
            }
        })
    });
    g.bench_function("parse_apply_book", |b| {
        let mut book = OrderBook::new();
        book.apply_snapshot(
            &set.snapshot.bids,
            &set.snapshot.asks,
            set.snapshot.last_update_id,
        );
        let mut buf = DepthUpdate::default();
        b.iter(|| {
            parse_apply(&set.frames, &mut book, &mut buf);
            black_box(book.best_bid())
        })
    });
    g.bench_function("parse_sync_session", |b| {
        // Full sync path per frame (stale drops, continuity and crossed checks); each iteration
        // restarts from the snapshot so the id chain stays valid.
        let mut buf = DepthUpdate::default();
        b.iter(|| {
            let mut sync = BookSync::new("BTCUSDT", Rules::Spot, SyncConfig::default());
            sync.on_snapshot(set.snapshot.clone());
            for f in &set.frames {
                if let Ok(Parsed::Depth) = parse_frame_reusing(f, &mut buf) {
                    black_box(sync.on_diff(&buf));
                }
            }
            black_box(sync.stats())
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let generated = generated_lines();
    bench_set(c, &frame_set("generated", &generated));
    let Some(recorded) = recorded_lines() else {
        eprintln!("shared test data absent: recorded-frame and replay benches skipped");
        return;
    };
    bench_set(c, &frame_set("recorded", &recorded));

    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(recorded.len() as u64));
    g.sample_size(10);
    g.bench_function("recorded_session_all_frames", |b| {
        b.iter(|| {
            let mut r = Replayer::new(None, SyncConfig::default());
            r.add_input_name(RECORDING);
            for l in &recorded {
                r.push_line(l);
            }
            black_box(r.finish())
        })
    });
    g.finish();
}

criterion_group!(depth, benches);
criterion_main!(depth);

//! Depth-frame throughput: parse + apply on one core, and whole recorded-session replay.
//!
//! Frames come from the recorded hftbacktest Binance spot session when the shared test data is
//! present; otherwise a deterministic generator produces spot frames of 5–30 levels.

use std::hint::black_box;
use std::io::{BufRead, BufReader};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flate2::read::MultiGzDecoder;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use mmtrader::feeds::binance::sync::{BookSync, Rules, SyncConfig};
use mmtrader::feeds::binance::wire::{
    DepthUpdate, Parsed, parse_depth_snapshot, parse_frame_reusing,
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

/// Deterministic synthetic spot session: one snapshot line then depth diffs.
fn generated_lines() -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut lines = Vec::new();
    let level = |p: i64, q: u32| {
        format!(
            "[\"{}.{:02}\",\"{}.{:05}\"]",
            p / 100,
            p % 100,
            q / 100_000,
            q % 100_000
        )
    };
    let bids: Vec<String> = (0..1000).map(|i| level(6_000_000 - i, 100_000)).collect();
    let asks: Vec<String> = (0..1000).map(|i| level(6_000_001 + i, 100_000)).collect();
    lines.push(format!(
        "0 {{\"lastUpdateId\":1000,\"bids\":[{}],\"asks\":[{}]}}",
        bids.join(","),
        asks.join(",")
    ));
    let mut id = 1001u64;
    for n in 0..5000 {
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
            "{n} {{\"stream\":\"btcusdt@depth@100ms\",\"data\":{{\"e\":\"depthUpdate\",\"E\":{n},\"s\":\"BTCUSDT\",\"U\":{id},\"u\":{last},\"b\":[{}],\"a\":[{}]}}}}",
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

fn benches(c: &mut Criterion) {
    let (lines, source) = match recorded_lines() {
        Some(l) => (l, "recorded"),
        None => (generated_lines(), "generated"),
    };
    let depth_frames: Vec<&str> = lines
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
    let mut buf = DepthUpdate::default();
    let levels: usize = depth_frames
        .iter()
        .map(|f| {
            parse_frame_reusing(f, &mut buf).expect("frame parses");
            buf.bids.len() + buf.asks.len()
        })
        .sum();
    eprintln!(
        "depth bench: {} {source} depth frames, {:.1} levels/frame on average",
        depth_frames.len(),
        levels as f64 / depth_frames.len() as f64
    );

    let mut g = c.benchmark_group("depth");
    g.throughput(Throughput::Elements(depth_frames.len() as u64));
    g.sample_size(20);

    g.bench_function("parse_only", |b| {
        let mut buf = DepthUpdate::default();
        b.iter(|| {
            for f in &depth_frames {
                black_box(parse_frame_reusing(black_box(f), &mut buf).is_ok());
            }
        })
    });

    g.bench_function("parse_apply_book", |b| {
        let mut book = OrderBook::new();
        book.apply_snapshot(&snapshot.bids, &snapshot.asks, snapshot.last_update_id);
        let mut buf = DepthUpdate::default();
        b.iter(|| {
            for f in &depth_frames {
                if let Ok(Parsed::Depth) = parse_frame_reusing(f, &mut buf) {
                    for l in &buf.bids {
                        book.apply_level(Side::Buy, l.price, l.qty);
                    }
                    for l in &buf.asks {
                        book.apply_level(Side::Sell, l.price, l.qty);
                    }
                    book.last_update_id = buf.final_update_id;
                }
            }
            black_box(book.best_bid())
        })
    });

    g.bench_function("parse_sync_session", |b| {
        // Full sync path per frame (buffering, stale drops, continuity checks, crossed check);
        // each iteration restarts from the snapshot so the id chain stays valid.
        let mut buf = DepthUpdate::default();
        b.iter(|| {
            let mut sync = BookSync::new("BTCUSDT", Rules::Spot, SyncConfig::default());
            sync.on_snapshot(snapshot.clone());
            for f in &depth_frames {
                if let Ok(Parsed::Depth) = parse_frame_reusing(f, &mut buf) {
                    black_box(sync.on_diff(&buf));
                }
            }
            black_box(sync.stats())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.sample_size(10);
    g.bench_function("recorded_session_all_frames", |b| {
        b.iter(|| {
            let mut r = Replayer::new(None, SyncConfig::default());
            r.add_input_name(RECORDING);
            for l in &lines {
                r.push_line(l);
            }
            black_box(r.finish())
        })
    });
    g.finish();
}

criterion_group!(depth, benches);
criterion_main!(depth);

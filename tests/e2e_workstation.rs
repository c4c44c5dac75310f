//! End-to-end: the real binary, started as a user starts it (default source: the built-in
//! simulated exchange), in a pseudo-terminal read back through a terminal emulator.

mod common;

use std::time::Duration;

use common::PtyApp;

const LONG: Duration = Duration::from_secs(60);

fn live_rows(screen: &str) -> usize {
    screen
        .lines()
        .filter(|l| l.contains("/USDT") && l.trim_end().ends_with("live    │"))
        .count()
}

#[test]
fn workstation_shows_live_data_and_obeys_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[paths]\nlog_dir = \"logs\"\ndata_dir = \"data\"\n[reconnect]\ninitial_backoff_ms = 100\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let mut app = PtyApp::spawn(&["--config", &cfg], dir.path(), &[], 100, 32);

    // Live prices for both symbols from the simulated exchange.
    let s = app.wait_for("both books live", LONG, |s| live_rows(s) == 2);
    assert!(s.contains("ETH/USDT") && s.contains("BTC/USDT"), "{s}");
    assert!(s.contains("feed RUNNING"), "{s}");
    assert!(s.contains("source sim 127.0.0.1:"), "{s}");
    app.wait_for("candles backfilled", LONG, |s| {
        s.contains("Candles ETH/USDT 1m · 300 kept")
    });

    // Stop and start the feed process.
    app.send(b"f");
    app.wait_for("feed stopped", LONG, |s| {
        s.contains("feed STOPPED") && s.contains("stopped")
    });
    app.send(b"f");
    app.wait_for("feed running and live again", LONG, |s| {
        s.contains("feed RUNNING") && live_rows(s) == 2
    });

    // Switch symbol and timeframe.
    app.send(b"\t");
    app.wait_for("BTC focused", LONG, |s| s.contains("Book BTC/USDT"));
    app.send(b"3");
    app.wait_for("1h candles", LONG, |s| s.contains("Candles BTC/USDT 1h"));

    // Help overlay lists the key map, and closes again.
    app.send(b"?");
    app.wait_for("help open", LONG, |s| {
        s.contains("Keys (? closes)") && s.contains("stop / start the market-data feed")
    });
    app.send(b"?");
    app.wait_for("help closed", LONG, |s| !s.contains("Keys (? closes)"));

    // Quit: clean exit, and the log file was written.
    app.send(b"q");
    assert_eq!(app.wait_exit(Duration::from_secs(20)), Some(0), "exit code");
    let logs: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .collect();
    assert!(!logs.is_empty(), "no log file written");
}

#[test]
fn invalid_config_names_file_key_and_form() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[data]\nsource = \"nowhere\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmtrader"))
        .args(["--config", cfg.to_str().unwrap(), "feed", "--duration", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("data.source") && err.contains("binance"),
        "{err}"
    );
}

#[test]
fn headless_feed_prints_events_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmtrader"))
        .args(["feed", "--duration", "4", "--events"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "connected (connection #1)",
        "depth ETHUSDT U=",
        "trade BTCUSDT id=",
        "snapshot ETHUSDT lastUpdateId=",
        "book ETHUSDT Live",
        "health exchange ws Connected",
    ] {
        assert!(
            text.contains(needle),
            "missing {needle:?} in:\n{}",
            &text[..text.len().min(3000)]
        );
    }
}

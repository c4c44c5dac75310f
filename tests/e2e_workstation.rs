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

fn idle_rows(screen: &str) -> usize {
    screen
        .lines()
        .filter(|l| l.contains("/USDT") && l.trim_end().ends_with("no data │"))
        .count()
}

#[test]
fn workstation_shows_live_data_and_obeys_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    // A key override from [ui.keys] must drive both the keys and the hints.
    std::fs::write(
        &cfg,
        "[paths]\nlog_dir = \"logs\"\ndata_dir = \"data\"\n[reconnect]\ninitial_backoff_ms = 100\n\
         [ui]\ntheme = \"high-contrast\"\n[ui.keys]\ntoggle_feed = [\"s\"]\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let mut app = PtyApp::spawn(&["--config", &cfg], dir.path(), &[], 100, 32);

    // Live prices for both symbols from the simulated exchange; the chart is focused.
    let s = app.wait_for("both books live", LONG, |s| live_rows(s) == 2);
    assert!(s.contains("ETH/USDT") && s.contains("BTC/USDT"), "{s}");
    assert!(s.contains("feed RUNNING"), "{s}");
    assert!(s.contains("source sim 127.0.0.1:"), "{s}");
    assert!(s.contains("s feed") && !s.contains("f feed"), "{s}");
    let s = app.wait_for("candles backfilled", LONG, |s| {
        s.contains("Candles ETH/USDT 1m · 300 kept")
    });
    // The CNN runs from the start (fresh weights or the best checkpoint).
    assert!(!s.contains("CNN predictions: not running"), "{s}");
    assert!(
        s.chars().any(|c| "█▀▄╽╿".contains(c)),
        "no candles drawn:\n{s}"
    );

    // Stop and start the feed process (with the overridden key).
    app.send(b"s");
    app.wait_for("feed stopped", LONG, |s| {
        s.contains("feed STOPPED") && idle_rows(s) == 2
    });
    app.send(b"s");
    app.wait_for("feed running and live again", LONG, |s| {
        s.contains("feed RUNNING") && live_rows(s) == 2
    });

    // Switch symbol and timeframe.
    app.send(b"\t");
    app.wait_for("BTC focused", LONG, |s| {
        s.contains("▶BTC/USDT") && s.contains("Candles BTC/USDT 1m")
    });
    app.send(b"3");
    app.wait_for("1h candles", LONG, |s| s.contains("Candles BTC/USDT 1h"));

    // Pane focus: heatmap (filled once the COB runs), book, system, models, positions, logs.
    app.send(b"p");
    app.wait_for("heatmap with imbalance averages", LONG, |s| {
        s.contains("COB heatmap BTC/USDT") && s.contains("mid ") && s.contains("60s ")
    });
    app.send(b"p");
    app.wait_for("book", LONG, |s| s.contains("Book BTC/USDT"));
    app.send(b"p");
    app.wait_for("system", LONG, |s| {
        s.contains("exchange ws")
            && s.contains("feed running")
            && s.contains("inference running")
            && s.contains("trading not running")
            && s.contains("memory RSS")
    });
    app.send(b"p");
    app.wait_for("models with thresholds", LONG, |s| {
        s.contains("inference running") && s.contains("[buy ≥ 0.55]") && s.contains("sell ≥ 0.55")
    });
    // Thresholds change at once and show the value in force.
    app.send(b"+");
    app.wait_for("buy threshold raised", LONG, |s| s.contains("[buy ≥ 0.60]"));
    app.send(b"]");
    app.send(b"-");
    app.wait_for("sell threshold lowered", LONG, |s| {
        s.contains("[sell ≥ 0.50]") && s.contains("buy ≥ 0.60")
    });
    // Inference stops and starts by hotkey.
    app.send(b"i");
    app.wait_for("inference stopped", LONG, |s| {
        s.contains("inference stopped")
    });
    app.send(b"i");
    app.wait_for("inference running again", LONG, |s| {
        s.contains("inference running")
    });
    app.send(b"p");
    app.wait_for("positions", LONG, |s| s.contains("PAPER stopped"));
    // Trading starts by hotkey; flatten asks first, and "n" leaves it.
    app.send(b"e");
    app.wait_for("trading started", LONG, |s| s.contains("PAPER running"));
    app.send(b"X");
    app.wait_for("flatten asks", LONG, |s| {
        s.contains("Flatten every position at market?")
    });
    app.send(b"n");
    app.wait_for("flatten declined", LONG, |s| {
        !s.contains("Flatten every position") && s.contains("PAPER running")
    });
    app.send(b"e");
    app.wait_for("trading stopped", LONG, |s| s.contains("PAPER stopped"));
    app.send(b"p");
    app.wait_for("logs", LONG, |s| {
        s.contains("Log ≥INFO") && s.contains("feed started")
    });
    app.send(b"l");
    app.wait_for("log filter cycled", LONG, |s| s.contains("Log ≥DEBUG"));
    app.send(b"P");
    app.wait_for("focus back", LONG, |s| s.contains("PAPER stopped"));

    // Help overlay lists the key map, and closes again.
    app.send(b"?");
    app.wait_for("help open", LONG, |s| {
        s.contains("Keys (? closes)") && s.contains("start/stop data feed")
    });
    app.send(b"?");
    app.wait_for("help closed", LONG, |s| !s.contains("Keys (? closes)"));

    // A large terminal shows the whole desk at once; a small one the focused pane again.
    app.resize(200, 60);
    app.wait_for("full desk", LONG, |s| {
        [
            "Candles BTC/USDT 1h",
            "COB heatmap BTC/USDT",
            "Book BTC/USDT",
            "System",
            "Models",
            "Positions",
            "Log ≥DEBUG",
        ]
        .iter()
        .all(|t| s.contains(t))
    });
    // The CNN's predicted pivots on the 1 m chart, and both models in the models pane with
    // their checkpoints (fresh weights in a new data directory).
    app.send(b"2");
    app.wait_for("CNN predictions and model rows", LONG, |s| {
        s.contains("CNN next L") && s.contains("checkpoints: ") && s.contains("fresh weights")
    });
    app.resize(80, 24);
    app.wait_for("80x24 again", LONG, |s| {
        s.contains("PAPER stopped") && !s.contains("COB heatmap")
    });

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

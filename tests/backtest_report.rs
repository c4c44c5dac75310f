//! `mmtrader backtest` as a trader meets it, on the shared Binance BTC/USDT 1h candles with
//! the rule experts (no checkpoint needed): the summary puts buy-and-hold and flat beside the
//! strategy, progress lines reach a piped stderr, `report.html` is self-contained with ISO
//! dates and the chart inline as SVG, `equity.png` is a readable chart, `trades.csv` has UTC
//! times and round trips; walk-forward reports only its chained folds.

use std::path::Path;
use std::process::Command;

const DATA: &str = "candles/binance_spot_nfi/BTC_USDT-1h.json";

fn mmtrader(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mmtrader"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The numbers of a summary row (`Return   +1.00%   +2.00%   +0.00%`).
fn row<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let line = out
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name:?} row in\n{out}"));
    line[name.len()..].split_whitespace().collect()
}

/// Whether `s` holds a run of 13 digits (an epoch time in ms).
fn has_epoch_ms(s: &str) -> bool {
    s.as_bytes()
        .split(|b| !b.is_ascii_digit())
        .any(|run| run.len() == 13 && run[0] == b'1')
}

/// Counts of pixels of the chart's colours in a PNG, after checking its size.
fn png_colours(path: &Path, colours: &[(u8, u8, u8)]) -> Vec<usize> {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 720));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    colours
        .iter()
        .map(|c| {
            buf[..info.buffer_size()]
                .chunks(3)
                .filter(|p| (p[0], p[1], p[2]) == *c)
                .count()
        })
        .collect()
}

#[test]
fn backtest_prints_baselines_and_progress_and_writes_readable_reports() {
    let data = mmtrader::testdata::require(DATA);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let (code, out, err) = mmtrader(&[
        "backtest",
        "--data",
        data.to_str().unwrap(),
        "--experts",
        "rules",
        "--to",
        "2021-03-01T00:00:00Z",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    // Buy-and-hold and flat beside the strategy's return, Sharpe and max drawdown.
    assert!(
        out.contains(
            "BTCUSDT 1h candles, 2155 steps from 2020-12-01T01:00:00Z to 2021-03-01T00:00:00Z"
        ),
        "{out}"
    );
    let header = out.lines().find(|l| l.contains("strategy")).unwrap();
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(cols, ["strategy", "buy-and-hold", "flat"]);
    for name in ["Return", "Sharpe (annualized)", "Max drawdown"] {
        let v = row(&out, name);
        assert_eq!(v.len(), 3, "{name}: {v:?}");
        assert!(
            v[2] == "0.00" || v[2] == "0.00%" || v[2] == "+0.00%",
            "{name}: {v:?}"
        );
    }
    assert_eq!(row(&out, "  95% CI").len(), 6, "{out}");
    assert!(out.contains("costs per fill: taker fee 10 bps, slippage 2 bps, impact 1 bps"));
    assert!(out.contains("halts: ") && out.contains("policy: entries are refused while halted"));
    // Off a terminal: progress lines with the step, the percentage and an estimate.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("backtest: step "))
        .collect();
    assert!(lines.len() >= 2, "{err}");
    assert!(
        lines[0].starts_with("backtest: step 0/2155 (0.0%), elapsed "),
        "{err}"
    );
    assert!(lines[0].ends_with("ETA unknown"), "{err}");
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("backtest: step 2155/2155 (100.0%)") && last.ends_with("done"),
        "{err}"
    );

    // The HTML: self-contained, ISO dates, the chart inline as SVG, baselines, halts.
    let html = read(&out_dir.join("report.html"));
    for needle in [
        "<svg",
        "</svg>",
        "<th>Buy and hold</th><th>Flat</th>",
        "95% CI",
        "Max drawdown",
        "2020-12-01T01:00:00Z",
        "2021-03-01T00:00:00Z",
        "<h2>Risk halts</h2>",
        "<h2>Round trips",
        "time (UTC)",
    ] {
        assert!(html.contains(needle), "report.html lacks {needle:?}");
    }
    for external in ["<img", "<script", "<link", " src=", "href=", "url("] {
        assert!(!html.contains(external), "report.html has {external:?}");
    }
    // The only URL is the SVG namespace (a name, never fetched).
    assert_eq!(
        html.matches("http").count(),
        html.matches("http://www.w3.org/2000/svg").count()
    );
    assert!(!has_epoch_ms(&html), "an epoch-ms time in report.html");

    // The PNG: the strategy and buy-and-hold lines, text and the drawdown fill are there.
    let counts = png_colours(
        &out_dir.join("equity.png"),
        &[(30, 90, 200), (120, 120, 120), (30, 30, 30)],
    );
    assert!(counts[0] > 1_000 && counts[1] > 1_000, "{counts:?}");
    assert!(counts[2] > 3_000, "too little text: {counts:?}");

    // trades.csv: UTC times, the position after each fill and its round trip.
    let csv = read(&out_dir.join("trades.csv"));
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("time_ms,time_utc,side,price,qty,fee,position,trip,reason")
    );
    let first: Vec<&str> = rows.next().expect("no fills").split(',').collect();
    assert!(
        first[1].starts_with("202") && first[1].ends_with('Z'),
        "{first:?}"
    );
    assert_eq!(first[7], "1");
}

#[test]
fn walk_forward_reports_only_its_chained_folds() {
    let data = mmtrader::testdata::require(DATA);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("wf");
    let (code, out, err) = mmtrader(&[
        "backtest",
        "--data",
        data.to_str().unwrap(),
        "--experts",
        "rules",
        "--to",
        "2021-03-01T00:00:00Z",
        "--walk-forward",
        "20d:10d",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(
            "fold 0: train 2020-12-01T00:00:00Z..2020-12-21T00:00:00Z, test \
             2020-12-21T00:00:00Z..2020-12-31T00:00:00Z"
        ),
        "{out}"
    );
    let folds = out.lines().filter(|l| l.starts_with("fold ")).count();
    assert_eq!(folds, 7, "{out}");
    assert!(out.contains("walk-forward out of sample: the 7 test windows (10d each) compounded"));
    // The headline covers the test windows only: from the first test close on.
    assert!(
        out.contains("steps from 2020-12-21T01:00:00Z to 2021-03-01T00:00:00Z"),
        "{out}"
    );
    assert!(!out.contains("models: CNN"));
    assert!(
        err.lines()
            .any(|l| l.starts_with("walk-forward: fold 7/7 (100.0%)")),
        "{err}"
    );
    let html = read(&out_dir.join("report.html"));
    assert!(html.contains("<title>Walk-forward BTCUSDT (out of sample, 7 folds)</title>"));
    assert!(html.contains("<h2>Walk-forward folds</h2>"));
    assert!(html.contains("<td>2021-02-09T00:00:00Z</td><td>2021-02-19T00:00:00Z</td>"));
    assert!(!has_epoch_ms(&html));
    // Every fill lies in a test window.
    let csv = read(&out_dir.join("trades.csv"));
    for line in csv.lines().skip(1) {
        let t: i64 = line.split(',').next().unwrap().parse().unwrap();
        assert!(t > 1_608_508_800_000, "{line}");
    }
    let used: serde_json::Value =
        serde_json::from_str(&read(&out_dir.join("models.json"))).unwrap();
    assert_eq!(used["cnn"], "none");
}

#[test]
fn impact_and_resume_after_reach_the_run_and_bad_values_are_refused() {
    let data = mmtrader::testdata::require(DATA);
    let data = data.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("costly");
    let (code, out, err) = mmtrader(&[
        "backtest",
        "--data",
        data,
        "--experts",
        "rules",
        "--to",
        "2021-02-01",
        "--impact-bps",
        "25",
        "--resume-after",
        "2d",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("impact 25 bps"), "{out}");
    assert!(
        out.contains("a drawdown halt is lifted 2d after it starts"),
        "{out}"
    );
    assert!(read(&out_dir.join("report.html")).contains("impact 25 bps"));
    for (flag, value, says) in [
        ("--resume-after", "3x", "12h or 2d"),
        ("--walk-forward", "5d", "TRAIN:TEST"),
    ] {
        let (code, out, err) = mmtrader(&[
            "backtest",
            "--data",
            data,
            "--experts",
            "rules",
            flag,
            value,
            "--out",
            dir.path().join("bad").to_str().unwrap(),
        ]);
        assert_eq!(code, 4, "{flag} {value}: {out}\n{err}");
        assert!(err.contains(flag) && err.contains(says), "{err}");
    }
}

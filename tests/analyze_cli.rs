//! `mmtrader analyze` as a user runs it: the built binary on candle files, bad rows reported by
//! line number on stderr, one output row per good candle, LEAN day files dated.

use std::path::Path;
use std::process::{Command, Output};

fn analyze(input: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmtrader"))
        .arg("analyze")
        .arg("--candles")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("the mmtrader binary runs")
}

fn data_rows(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out).expect("analysis written");
    text.lines().skip(1).map(str::to_string).collect()
}

#[test]
fn bad_rows_are_named_by_line_and_good_candles_each_get_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("candles.csv");
    let mut text = String::from("time,open,high,low,close,volume\n");
    for i in 0..40 {
        let t = 1_700_000_000_000i64 + i * 60_000;
        let p = 100 + (i % 7);
        match i {
            // Line 12: a price that is not a number; line 25: low above high.
            10 => text.push_str(&format!("{t},{p},abc,{p},{p},1\n")),
            23 => text.push_str(&format!("{t},{p},{p},{},{p},1\n", p + 5)),
            _ => text.push_str(&format!("{t},{p},{},{},{p},2.5\n", p + 1, p - 1)),
        }
    }
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("analysis.csv");
    let run = analyze(&input, &out, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("line 12: high:")
            && stderr.contains("line 25: low ")
            && stderr.contains("is above high"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("(skipped)").count(), 2, "{stderr}");
    let rows = data_rows(&out);
    assert_eq!(rows.len(), 38);
    let times: Vec<i64> = rows
        .iter()
        .map(|r| r.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(!times.contains(&(1_700_000_000_000 + 10 * 60_000)));
    assert!(!times.contains(&(1_700_000_000_000 + 23 * 60_000)));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("analyzed 38 candles") && stdout.contains("2 bad rows"),
        "{stdout}"
    );
}

#[test]
fn lean_minute_file_is_dated_from_its_name_or_the_date_flag() {
    let lean =
        mmtrader::testdata::require("candles/lean/binance_minute_btcbusd_20221213_trade.csv");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lean.csv");
    let run = analyze(&lean, &out, &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rows = data_rows(&out);
    assert_eq!(rows.len(), 1_440);
    assert!(
        rows[0].starts_with("1670889600000,17212.12,"),
        "{}",
        rows[0]
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("interval 60000 ms"));

    let undated = dir.path().join("minute_trade.csv");
    std::fs::copy(&lean, &undated).unwrap();
    let run = analyze(&undated, &out, &[]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("--date YYYY-MM-DD"), "{stderr}");
    let run = analyze(&undated, &out, &["--date", "2022-12-13"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(data_rows(&out)[0].starts_with("1670889600000,"));
    let run = analyze(&undated, &out, &["--date", "13.12.2022"]);
    assert_eq!(run.status.code(), Some(2));
}

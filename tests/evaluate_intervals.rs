//! Any candle interval, any reference (issue 14, item 4): `train` and `evaluate` take 5 m and
//! 4 h candles (the shared real Binance BTC/USDT 5 m candles, generated 4 h ones) and a
//! reference file at the data's own interval; the checkpoint records which interval each
//! input series holds and refuses data of another layout, naming both.

mod evaluate_data;

use std::path::Path;
use std::process::Command;

use evaluate_data::{HOUR_MS, Row, START_MS, series, write_csv};
use mmtrader::analysis::analyze::read_candles;

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

fn ok(args: &[&str]) -> String {
    let (code, out, err) = mmtrader(args);
    assert_eq!(code, 0, "{args:?}\nstdout:\n{out}\nstderr:\n{err}");
    out
}

fn saved_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("checkpoint "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no checkpoint line in {stdout}"))
        .to_string()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The stored config's layout of checkpoint `id` of `model` under `ck`.
fn layout(ck: &Path, model: &str, id: &str) -> serde_json::Value {
    json(&ck.join(model).join(format!("{id}.json")))["model_config"]["layout"]["intervals_ms"]
        .clone()
}

#[test]
fn real_five_minute_candles_train_and_evaluate_in_their_own_layout() {
    let path = mmtrader::testdata::require("candles/binance_spot_nfi/BTC_USDT-5m.json.gz");
    let dir = tempfile::tempdir().unwrap();
    // Six weeks of the real candles (evaluating replays every candle before --to; the whole
    // file would take the test most of its time).
    let all = read_candles(&path).unwrap().candles;
    let (may, jun15) = (1_619_827_200_000i64, 1_623_715_200_000i64);
    let rows: Vec<Row> = all
        .iter()
        .filter(|c| (may..jun15).contains(&c.open_time_ms))
        .map(|c| {
            let f = |p: mmtrader::market::types::Price| p.to_f64();
            (
                c.open_time_ms,
                f(c.open),
                f(c.high),
                f(c.low),
                f(c.close),
                c.volume.to_f64(),
            )
        })
        .collect();
    assert!(rows.len() > 12_000, "{}", rows.len());
    let data = dir.path().join("BTC_USDT-5m.csv");
    write_csv(&data, &rows);
    let data = data.to_str().unwrap();
    let ck = dir.path().join("ck");
    let cks = ck.to_str().unwrap();
    let out = ok(&[
        "train",
        "cnn",
        "--data",
        data,
        "--until",
        "2021-06-01",
        "--max-candles",
        "2000",
        "--window",
        "16",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--checkpoints",
        cks,
    ]);
    let id = saved_id(&out);
    // The 1 m slot holds the 5 m candles, the 1 h and 1 d slots their 5 h and 5 d aggregates.
    assert_eq!(
        layout(&ck, "pivot_cnn", &id),
        serde_json::json!([0, 300_000, 18_000_000, 432_000_000, 0])
    );
    assert!(
        out.contains("training range [2021-05-25T01:20:00Z, 2021-06-01T00:00:00Z)"),
        "{out}"
    );
    let j = dir.path().join("ev.json");
    let j = j.to_str().unwrap();
    let (code, out, err) = mmtrader(&[
        "evaluate",
        "--data",
        data,
        "--from",
        "2021-06-01",
        "--to",
        "2021-06-08",
        "--checkpoints",
        cks,
        "--json",
        j,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v = json(Path::new(j));
    let l1 = &v["cnn"]["levels"][0];
    assert_eq!(l1["timeframe"], "5m");
    // One row per 5 m close in the week.
    assert_eq!(v["cnn"]["rows"], 7 * 288);
    assert!(l1["n"].as_u64().unwrap() > 1_500 && l1["model"]["direction_accuracy"].is_f64());
    // The backtest engine replays 1s/1m/1h/1d candles only: the desk is left out, saying so.
    assert!(v["desk"].is_null());
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("desk is not evaluated: the backtest engine replays 1s, 1m, 1h or 1d"),
        "{v}"
    );
    // The same checkpoint on hourly candles: another layout, refused naming both.
    let hourly = mmtrader::testdata::require("candles/binance_spot_nfi/BTC_USDT-1h.json");
    let (code, _, err) = mmtrader(&[
        "evaluate",
        "--data",
        hourly.to_str().unwrap(),
        "--from",
        "2021-06-01",
        "--checkpoints",
        cks,
        "--cnn",
        &id,
        "--experts",
        "rules",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!(
            "CNN checkpoint pivot_cnn/{id} was trained on 5m candles (input layout 1s: absent, \
             1m: 5m, 1h: 5h, 1d: 5d, reference: absent), but --data give 1h candles (input \
             layout 1s: absent, 1m: absent, 1h: 1h, 1d: 1d, reference: absent)"
        )),
        "{err}"
    );
}

/// Hourly rows merged into 4 h candles (epoch-aligned).
fn four_hours(rows: &[Row]) -> Vec<Row> {
    rows.chunks(4)
        .filter(|c| c.len() == 4 && c[0].0 % (4 * HOUR_MS) == 0)
        .map(|c| {
            let high = c.iter().map(|r| r.2).fold(f64::MIN, f64::max);
            let low = c.iter().map(|r| r.3).fold(f64::MAX, f64::min);
            (
                c[0].0,
                c[0].1,
                high,
                low,
                c[3].4,
                c.iter().map(|r| r.5).sum(),
            )
        })
        .collect()
}

#[test]
fn four_hour_candles_and_a_reference_at_the_datas_interval() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let cks = ck.to_str().unwrap();
    let four = four_hours(&series(4 * 1200, 11, Some((0.3, 48.0))));
    assert_eq!(four.len(), 1200);
    let data = dir.path().join("GEN-4h.csv");
    write_csv(&data, &four);
    let data = data.to_str().unwrap();
    let t = (START_MS + 900 * 4 * HOUR_MS).to_string();
    let common = [
        "--data",
        data,
        "--until",
        &t,
        "--window",
        "16",
        "--device",
        "cpu",
        "--checkpoints",
        cks,
    ];
    let mut args = vec!["train", "cnn", "--epochs", "1"];
    args.extend_from_slice(&common);
    let id = saved_id(&ok(&args));
    assert_eq!(
        layout(&ck, "pivot_cnn", &id),
        serde_json::json!([0, 0, 14_400_000, 345_600_000, 0])
    );
    // The DQN learns on the same 4 h candles from that CNN's features (later candles, so its
    // held-out part follows the CNN's range).
    let t_rl = (START_MS + 1100 * 4 * HOUR_MS).to_string();
    let rl = ok(&[
        "train",
        "rl",
        "--cnn",
        "pivot_cnn",
        "--episodes",
        "1",
        "--episode-len",
        "100",
        "--data",
        data,
        "--until",
        &t_rl,
        "--max-candles",
        "700",
        "--device",
        "cpu",
        "--checkpoints",
        cks,
    ]);
    assert!(
        rl.contains(&format!("state features from CNN pivot_cnn/{id}")),
        "{rl}"
    );
    let j = dir.path().join("ev.json");
    let j = j.to_str().unwrap();
    let out = ok(&[
        "evaluate",
        "--data",
        data,
        "--from",
        &t,
        "--checkpoints",
        cks,
        "--json",
        j,
    ]);
    let v = json(Path::new(j));
    assert_eq!(v["cnn"]["levels"][0]["timeframe"], "4h");
    // Rows at the closes of candles 899 (closing at T) to 1199.
    assert_eq!(v["cnn"]["rows"], 301);
    assert!(out.contains("  4h      1 "), "{out}");

    // A reference symbol at the data's own interval (another generated series).
    let reference = dir.path().join("REF-4h.csv");
    write_csv(&reference, &four_hours(&series(4 * 1200, 12, None)));
    let reference = reference.to_str().unwrap();
    let mut args = vec![
        "train",
        "cnn",
        "--epochs",
        "1",
        "--model",
        "ref_cnn",
        "--reference",
    ];
    args.push(reference);
    args.extend_from_slice(&common);
    let rid = saved_id(&ok(&args));
    assert_eq!(
        layout(&ck, "ref_cnn", &rid),
        serde_json::json!([0, 0, 14_400_000, 345_600_000, 14_400_000])
    );
    let cnn = format!("ref_cnn/{rid}");
    let eval = |extra: &[&str]| {
        let mut v = vec![
            "evaluate",
            "--data",
            data,
            "--from",
            &t,
            "--checkpoints",
            cks,
            "--experts",
            "rules",
            "--cnn",
            &cnn,
        ];
        v.extend_from_slice(extra);
        mmtrader(&v)
    };
    let (code, out, err) = eval(&["--reference", reference]);
    assert_eq!(code, 0, "{out}{err}");
    // Without the reference the layout differs: refused, naming both.
    let (code, _, err) = eval(&[]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(
            "reference: 4h), but --data give 4h candles (input layout 1s: absent, 1m: \
                      absent, 1h: 4h, 1d: 4d, reference: absent)"
        ),
        "{err}"
    );
    // A reference of another interval fits neither way.
    let hourly = dir.path().join("REF-1h.csv");
    write_csv(&hourly, &series(600, 13, None));
    let (code, _, err) = eval(&["--reference", hourly.to_str().unwrap()]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("--reference: reference candles of 3600000 ms beside data of 14400000 ms"),
        "{err}"
    );
}

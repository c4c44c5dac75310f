//! `mmtrader evaluate` end to end, on generated candles and on the shared real Binance
//! BTC/USDT hourly candles, with a date split: tiny models are trained with `train --until`,
//! then scored on the later range beside their baselines; a tested range the checkpoints
//! learned from is refused (exit 4, both ranges named) unless `--allow-in-sample`, which marks
//! every number; a DQN beside a CNN it was not trained with is refused; the report and the
//! JSON list each checkpoint's training range and lineage.

mod evaluate_data;

use std::path::Path;
use std::process::Command;

use evaluate_data::{HOUR_MS, START_MS, series, write_csv};

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

/// Runs a command that must succeed; returns its stdout and stderr.
fn ok(args: &[&str]) -> (String, String) {
    let (code, out, err) = mmtrader(args);
    assert_eq!(code, 0, "{args:?}\nstdout:\n{out}\nstderr:\n{err}");
    (out, err)
}

/// The checkpoint id `train` printed (`checkpoint <id> (kept ...)`).
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

/// Checks the JSON document's shape (as the README documents it).
fn check_shape(v: &serde_json::Value) {
    let levels = v["cnn"]["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 5);
    for (i, l) in levels.iter().enumerate() {
        assert_eq!(l["level"], i + 1);
        assert!(l["timeframe"].is_string() && l["n"].is_u64(), "{l}");
        for k in ["model", "naive", "no_move", "prior"] {
            assert!(l[k].is_object(), "{k} in {l}");
        }
        if l["n"] == 0 {
            assert!(l["model"]["direction_accuracy"].is_null(), "{l}");
        } else {
            assert!(l["model"]["direction_accuracy"].is_f64(), "{l}");
            assert!(l["no_move"]["price_error_bp"].is_f64(), "{l}");
        }
    }
    let d = &v["desk"];
    for k in ["return", "sharpe", "max_drawdown", "exposure", "edge"] {
        assert!(d[k].is_f64(), "{k} in {d}");
    }
    assert!(d["trades"].is_u64() && d["round_trips"].is_u64());
    for k in ["return", "sharpe", "edge"] {
        let ci = d["ci95"][k].as_array().unwrap();
        assert!(
            ci[0].as_f64().unwrap() <= ci[1].as_f64().unwrap(),
            "{k}: {ci:?}"
        );
    }
    let b = &d["baselines"];
    assert_eq!(b["flat"]["return"], 0.0);
    assert!(b["buy_and_hold"]["return"].is_f64());
    assert!(b["random"]["seeds"].as_u64().unwrap() >= 100);
    for k in ["mean", "p95"] {
        assert!(b["random"][k]["return"].is_f64(), "{k}");
    }
}

#[test]
fn generated_candles_date_split_in_sample_refusal_and_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("GEN-1h.csv");
    write_csv(&data, &series(1500, 5, Some((0.3, 48.0))));
    let data = data.to_str().unwrap();
    let ck = dir.path().join("ck");
    let ck = ck.to_str().unwrap();
    // The CNN learns from candles closing by candle 900's open (the close of candle 899), the
    // DQN by candle 1100's: the DQN's held-out part (its last quarter) starts after the
    // CNN's range ends.
    let t_cnn = (START_MS + 900 * HOUR_MS).to_string();
    let t = (START_MS + 1100 * HOUR_MS).to_string();
    let common = |until: &str, n: &str| {
        vec![
            "--data".to_string(),
            data.into(),
            "--until".into(),
            until.into(),
            "--max-candles".into(),
            n.into(),
            "--window".into(),
            "16".into(),
            "--device".into(),
            "cpu".into(),
            "--checkpoints".into(),
            ck.into(),
            "--seed".into(),
            "1".into(),
        ]
    };
    let args = |head: &[&str], tail: Vec<String>| {
        let mut v: Vec<String> = head.iter().map(|s| s.to_string()).collect();
        v.extend(tail);
        v
    };
    let run = |v: &[String]| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let (out, err) = run(&args(
        &["train", "cnn", "--epochs", "2"],
        common(&t_cnn, "600"),
    ));
    let cnn1 = saved_id(&out);
    // Off a terminal, progress comes as lines on stderr; the total is the epochs run.
    assert!(err.lines().any(|l| l.starts_with("cnn epoch 1/")), "{err}");
    assert!(out.contains("training range [2021-03-"), "{out}");
    let (out, _) = run(&args(
        &[
            "train",
            "rl",
            "--cnn",
            "pivot_cnn",
            "--episodes",
            "2",
            "--episode-len",
            "100",
        ],
        common(&t, "700"),
    ));
    let dqn = saved_id(&out);
    assert!(
        out.contains(&format!("state features from CNN pivot_cnn/{cnn1}")),
        "{out}"
    );

    // Out of sample: the tested range starts where the DQN's training range ends.
    let j = dir.path().join("eval.json");
    let j = j.to_str().unwrap();
    let eval = |from: &str, extra: &[&str]| {
        let mut v = vec![
            "evaluate",
            "--data",
            data,
            "--from",
            from,
            "--checkpoints",
            ck,
            "--experts",
            "models",
            "--seeds",
            "100",
            "--resamples",
            "300",
            "--json",
            j,
        ];
        v.extend_from_slice(extra);
        mmtrader(&v)
    };
    let (code, out, err) = eval(&t, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("evaluate: desk step"), "{err}");
    let v = json(Path::new(j));
    check_shape(&v);
    assert_eq!(v["in_sample"], false);
    assert!(v["cnn"]["rows"].as_u64().unwrap() > 300);
    assert_eq!(
        v["desk"]["steps"], 401,
        "decisions at the closes of candles 1099..1500"
    );
    let cks = v["checkpoints"].as_array().unwrap();
    assert_eq!(cks.len(), 2);
    assert_eq!(cks[0]["id"], cnn1.as_str());
    assert_eq!(cks[1]["id"], dqn.as_str());
    assert_eq!(cks[1]["lineage"]["cnn"]["id"], cnn1.as_str());
    assert_eq!(
        cks[1]["training_ranges"][0][1], "2021-04-15T20:00:00Z",
        "the DQN's last candle closes at candle 1100's open"
    );
    assert_eq!(cks[0]["lineage"]["data"]["file"], "GEN-1h.csv");
    for c in cks {
        assert!(out.contains(c["summary"].as_str().unwrap()), "{out}");
    }
    assert!(out.contains("edge over random timing"), "{out}");
    assert!(!out.contains("IN-SAMPLE"), "{out}");

    // From the CNN's end: the DQN learned from that range. Refused, both ranges named.
    let (code, out, err) = eval(&t_cnn, &[]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        err.contains(&format!(
            "checkpoint dqn_agent/{dqn} was trained on [2021-03-"
        )) && err.contains(
            ", 2021-04-15T20:00:00Z), which overlaps the tested range [2021-04-07T12:00:00Z, +inf)"
        ) && err.contains("--allow-in-sample"),
        "{err}"
    );
    // Allowed: every line and every section is marked in-sample.
    let (code, out, err) = eval(&t_cnn, &["--allow-in-sample"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().all(|l| l.starts_with("IN-SAMPLE ")), "{out}");
    assert!(
        out.contains(&format!("dqn_agent/{dqn}")) && out.contains("[IN-SAMPLE]"),
        "{out}"
    );
    let v = json(Path::new(j));
    assert_eq!(v["in_sample"], true);
    assert_eq!(v["desk"]["in_sample"], true);
    assert_eq!(v["checkpoints"][0]["in_sample"], false);
    assert_eq!(v["checkpoints"][1]["in_sample"], true);

    // `backtest` holds the same line: refused on the DQN's training range, marked when
    // allowed, quiet out of sample; every run lists each checkpoint's range and lineage.
    let out_dir = dir.path().join("bt");
    let bt = |from: &str, extra: &[&str]| {
        let mut v = vec![
            "backtest",
            "--data",
            data,
            "--from",
            from,
            "--checkpoints",
            ck,
            "--experts",
            "models",
            "--out",
            out_dir.to_str().unwrap(),
        ];
        v.extend_from_slice(extra);
        mmtrader(&v)
    };
    let (code, out, err) = bt(&t_cnn, &[]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        err.contains("overlaps the tested range") && err.contains("--allow-in-sample"),
        "{err}"
    );
    let (code, out, err) = bt(&t_cnn, &["--allow-in-sample"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("IN-SAMPLE:") && out.contains("(in-sample)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("checkpoint dqn_agent/{dqn}: trained on")),
        "{out}"
    );
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(html.contains("IN-SAMPLE"), "the report is marked too");
    let (code, out, err) = bt(&t, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("IN-SAMPLE"), "{out}");
    assert!(
        out.contains(&format!("checkpoint pivot_cnn/{cnn1}: trained on")),
        "{out}"
    );

    // A second CNN: the DQN learned from the first one's features and is refused beside it.
    let (out, _) = run(&args(
        &["train", "cnn", "--epochs", "1", "--model", "other_cnn"],
        common(&t_cnn, "500"),
    ));
    let cnn2 = saved_id(&out);
    let (code, _, err) = eval(&t, &["--cnn", &format!("other_cnn/{cnn2}"), "--dqn", &dqn]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!(
            "DQN checkpoint dqn_agent/{dqn} learned its state from CNN checkpoint \
             pivot_cnn/{cnn1}, not from CNN checkpoint other_cnn/{cnn2}"
        )),
        "{err}"
    );
    let (code, _, err) = eval(&t, &["--cnn", &format!("other_cnn/{cnn2}")]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!("was trained with CNN checkpoint other_cnn/{cnn2}"))
            && err.contains(&format!("{dqn} (CNN pivot_cnn/{cnn1})")),
        "{err}"
    );
    // A named DQN brings the CNN it was trained with.
    let (code, out, err) = eval(&t, &["--dqn", &format!("dqn_agent/{dqn}")]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(Path::new(j))["checkpoints"][0]["id"], cnn1.as_str());

    // Bad flags name the flag and the expected form (exit 2).
    let (code, _, err) = eval("yesterday", &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--from \"yesterday\": expected an ISO-8601 date"),
        "{err}"
    );
    let (code, _, err) = mmtrader(&["evaluate", "--data", data, "--from", &t, "--seeds", "50"]);
    assert_eq!(code, 2);
    assert!(err.contains("--seeds 50: expected at least 100"), "{err}");
    let (code, _, err) = mmtrader(&[
        "train",
        "cnn",
        "--data",
        data,
        "--until",
        "soon",
        "--checkpoints",
        ck,
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--until \"soon\": expected an ISO-8601 date"),
        "{err}"
    );
}

#[test]
fn real_binance_hourly_candles_with_a_date_split() {
    let path = mmtrader::testdata::require("candles/binance_spot_nfi/BTC_USDT-1h.json");
    let data = path.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let ck = ck.to_str().unwrap();
    let train = |kind: &[&str], until: &str, n: &str| {
        let mut v = vec!["train"];
        v.extend_from_slice(kind);
        v.extend_from_slice(&[
            "--data",
            data,
            "--until",
            until,
            "--max-candles",
            n,
            "--window",
            "16",
            "--device",
            "cpu",
            "--checkpoints",
            ck,
            "--seed",
            "3",
        ]);
        saved_id(&ok(&v).0)
    };
    let cnn = train(&["cnn", "--epochs", "2"], "2021-04-01", "700");
    let dqn = train(
        &[
            "rl",
            "--cnn",
            "pivot_cnn",
            "--episodes",
            "2",
            "--episode-len",
            "100",
        ],
        "2021-05-01",
        "900",
    );
    let j = dir.path().join("may.json");
    let j = j.to_str().unwrap();
    let (out, _) = ok(&[
        "evaluate",
        "--data",
        data,
        "--from",
        "2021-05-01",
        "--to",
        "2021-06-01",
        "--checkpoints",
        ck,
        "--experts",
        "all",
        "--seeds",
        "100",
        "--resamples",
        "300",
        "--json",
        j,
    ]);
    let v = json(Path::new(j));
    check_shape(&v);
    assert_eq!(v["tested"]["from"], "2021-05-01T00:00:00Z");
    assert_eq!(v["tested"]["to"], "2021-06-01T00:00:00Z");
    // May 2021 has no outage: a decision at every hourly close inside the month.
    assert_eq!(v["desk"]["steps"], 31 * 24);
    assert_eq!(v["cnn"]["levels"][0]["timeframe"], "1h");
    assert!(v["cnn"]["levels"][0]["n"].as_u64().unwrap() > 600);
    assert_eq!(
        v["checkpoints"][0]["training_ranges"][0][1], "2021-04-01T00:00:00Z",
        "the CNN's last candle closes at --until"
    );
    let data_sha = &v["checkpoints"][0]["lineage"]["data"]["sha256"];
    // SOURCES.md lists the file's SHA-256.
    assert_eq!(
        data_sha,
        "f63d50ed459349473d3713de1f098a3e1216b4a6b46047a8ab69cf5fd761d350"
    );
    assert!(
        out.contains(&format!("pivot_cnn/{cnn}: trained on [")),
        "{out}"
    );
    assert!(
        out.contains(&format!("dqn_agent/{dqn}: trained on [")),
        "{out}"
    );
    assert!(
        out.contains("data BTC_USDT-1h.json (700 candles of 3600000 ms"),
        "{out}"
    );
    // A month the CNN learned from: refused, naming both ranges.
    let (code, _, err) = mmtrader(&[
        "evaluate",
        "--data",
        data,
        "--from",
        "2021-03-15",
        "--to",
        "2021-04-15",
        "--checkpoints",
        ck,
        "--seeds",
        "100",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!("checkpoint pivot_cnn/{cnn} was trained on ["))
            && err.contains(
                ", 2021-04-01T00:00:00Z), which overlaps the tested range \
                 [2021-03-15T00:00:00Z, 2021-04-15T00:00:00Z)"
            ),
        "{err}"
    );
}

//! `mmtrader backtest` with trained models, end to end: tiny models are trained by
//! `mmtrader train` on recorded candles into a temporary checkpoint folder, then backtested:
//! the report names the checkpoints, two runs trade identically, missing checkpoints are
//! refused unless `--allow-fresh`, and walk-forward trains models per fold.

use std::path::Path;
use std::process::Command;

use mmtrader::analysis::analyze::read_candles;

const DATA: &str = "candles/nautilus/btc-perp-20211231-20220201_1m.csv.gz";

fn mmtrader(args: &[&str]) -> (i32, String, String) {
    // Thresholds any non-HOLD vote clears, so tiny models trade whatever their seed and the
    // machine's float kernels make of them: the runs must trade for "identical trades" to mean
    // something.
    let out = Command::new(env!("CARGO_BIN_EXE_mmtrader"))
        .args(args)
        .env("MMTRADER_ORCHESTRATOR__BUY_THRESHOLD", "0.34")
        .env("MMTRADER_ORCHESTRATOR__SELL_THRESHOLD", "0.34")
        .env("MMTRADER_ORCHESTRATOR__GATING__MIN_CONFIDENCE", "0.0")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn trains_tiny_models_then_backtests_with_their_checkpoints() {
    let data = mmtrader::testdata::require(DATA);
    let data = data.to_str().unwrap();
    let candles = read_candles(Path::new(data)).unwrap().candles;
    let last = candles.last().unwrap().open_time_ms;
    let from = (last - 150 * 60_000).to_string();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("checkpoints");
    let ck = ck.to_str().unwrap();
    let common = [
        "--data",
        data,
        "--max-candles",
        "800",
        "--window",
        "16",
        "--device",
        "cpu",
        "--checkpoints",
        ck,
        "--seed",
        "1",
    ];
    // A date split: the DQN learns from the 800 candles before the backtest's `--from`
    // (`train rl --until`), and the CNN from candles before the DQN's held-out period (`train
    // rl --cnn` refuses a CNN that has seen it): the first 500 of the DQN's 800. A backtest
    // of checkpoints on candles they learned from is refused as in-sample.
    let early = dir.path().join("early.csv");
    let mut text = String::from("time,open,high,low,close,volume\n");
    for c in &candles[candles.len() - 950..candles.len() - 450] {
        text.push_str(&format!(
            "{},{},{},{},{},{}\n",
            c.open_time_ms, c.open, c.high, c.low, c.close, c.volume
        ));
    }
    std::fs::write(&early, text).unwrap();
    let mut args = vec![
        "train",
        "cnn",
        "--epochs",
        "1",
        "--data",
        early.to_str().unwrap(),
    ];
    // The shared options after `--data FILE --max-candles N`.
    args.extend(&common[4..]);
    let (code, out, err) = mmtrader(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    let cnn = format!("pivot_cnn/{}", saved_id(&out));
    let mut args = vec![
        "train",
        "rl",
        "--episodes",
        "2",
        "--episode-len",
        "100",
        "--cnn",
        "pivot_cnn",
        "--until",
        &from,
    ];
    args.extend(common);
    let (code, out, err) = mmtrader(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    let dqn = format!("dqn_agent/{}", saved_id(&out));

    let backtest = |checkpoints: &str, out_dir: &Path, extra: &[&str]| {
        let mut args = vec![
            "backtest",
            "--data",
            data,
            "--from",
            &from,
            "--checkpoints",
            checkpoints,
            "--out",
            out_dir.to_str().unwrap(),
        ];
        args.extend(extra);
        mmtrader(&args)
    };
    let first = dir.path().join("first");
    let (code, out, err) = backtest(ck, &first, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("models: CNN {cnn}, DQN {dqn}")),
        "{out}"
    );
    for f in ["equity.png", "report.html", "trades.csv", "models.json"] {
        assert!(first.join(f).is_file(), "{f} missing");
    }
    let html = read(&first.join("report.html"));
    assert!(
        html.contains(&cnn) && html.contains(&dqn),
        "checkpoints not named"
    );
    let used: serde_json::Value = serde_json::from_str(&read(&first.join("models.json"))).unwrap();
    assert_eq!(used["cnn"], cnn.as_str());
    assert_eq!(used["dqn"], dqn.as_str());
    assert_eq!(used["experts"], "all");
    let trades = read(&first.join("trades.csv"));
    assert!(trades.lines().count() > 1, "no trades:\n{out}");

    let second = dir.path().join("second");
    let (code, _, err) = backtest(ck, &second, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(trades, read(&second.join("trades.csv")), "runs differ");

    // Without checkpoints the models are refused, and run fresh only when asked to.
    let empty = dir.path().join("empty");
    let none = dir.path().join("none");
    let empty = empty.to_str().unwrap();
    let (code, out, err) = backtest(empty, &none, &[]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("--allow-fresh") && err.contains("noise"),
        "{err}"
    );
    assert!(!none.join("report.html").exists());
    let (code, out, err) = backtest(empty, &none, &["--allow-fresh"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("FRESH RANDOM WEIGHTS"), "{err}");
    let used: serde_json::Value = serde_json::from_str(&read(&none.join("models.json"))).unwrap();
    assert_eq!(used["cnn"], "fresh");

    // Walk-forward trains each fold's own models and reports them.
    let wf_from = (last - 450 * 60_000).to_string();
    let wf = dir.path().join("wf");
    let (code, out, err) = mmtrader(&[
        "backtest",
        "--data",
        data,
        "--from",
        &wf_from,
        "--checkpoints",
        ck,
        "--out",
        wf.to_str().unwrap(),
        "--experts",
        "models",
        "--walk-forward",
        "300m:100m",
        "--window",
        "16",
        "--train-epochs",
        "1",
        "--train-episodes",
        "2",
        "--episode-len",
        "50",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.matches("  models trained on 300 candles").count(),
        2,
        "{out}"
    );
    let used: serde_json::Value = serde_json::from_str(&read(&wf.join("models.json"))).unwrap();
    assert_eq!(used["folds"].as_array().map(Vec::len), Some(2));
    assert!(read(&wf.join("report.html")).contains("fold 1: trained on 300 candles"));
}

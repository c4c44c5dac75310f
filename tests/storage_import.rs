//! Import of Binance historical-data files (plain and zipped, ms and µs timestamps) into the
//! store, read back through the backtest/training reader API; crash leftovers stay invisible.

use std::io::Write;
use std::path::Path;

use mmtrader::app::import::import_files;
use mmtrader::market::types::{Price, Qty, Side, Timeframe};
use mmtrader::storage::StorageConfig;
use mmtrader::storage::columns::Dataset;
use mmtrader::storage::import::ImportKind;
use mmtrader::storage::market::{dataset_files, read_candles, read_trades};
use mmtrader::testdata::require;

fn zip_one(path: &Path, member: &str, text: &str) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    z.start_file(
        member,
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored),
    )
    .unwrap();
    z.write_all(text.as_bytes()).unwrap();
    z.finish().unwrap();
}

/// Rewrites every 13-digit ms timestamp field of a CSV row as µs (the 2025+ spot layout).
fn to_micros(line: &str) -> String {
    line.split(',')
        .map(|f| {
            if f.len() == 13 && f.bytes().all(|b| b.is_ascii_digit()) {
                format!("{f}000")
            } else {
                f.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn klines_plain_and_zipped_in_both_units_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let day1 = require("candles/nautilus/ADABTC-1m-2021-11-27.csv");
    let day2_text =
        std::fs::read_to_string(require("candles/nautilus/ADABTC-1m-2021-11-28.csv")).unwrap();
    // Day 2 as a zip in microseconds, with a header and one broken row appended.
    let mut micro: Vec<String> = day2_text.lines().map(to_micros).collect();
    micro.insert(
        0,
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,\
         taker_buy_volume,taker_buy_quote_volume,ignore"
            .into(),
    );
    micro.push(
        "1638058260000000,0.00002820,oops,0.00002817,0.00002818,1,1638058319999999,1,1,1,1,0"
            .into(),
    );
    let zipped = dir.path().join("ADABTC-1m-2021-11-28.zip");
    zip_one(
        &zipped,
        "ADABTC-1m-2021-11-28.csv",
        &(micro.join("\n") + "\n"),
    );

    let mut done = 0;
    let report = import_files(
        &store,
        &StorageConfig::default(),
        ImportKind::Klines,
        "adabtc",
        Timeframe::M1,
        &[day1, zipped],
        |n| done += n,
    )
    .unwrap();
    assert!(done > 0);
    assert_eq!(report.files, 2);
    assert_eq!(report.rows, 21);
    assert_eq!(report.bad.len(), 1);
    let (file, err) = &report.bad[0];
    assert!(
        file.ends_with("ADABTC-1m-2021-11-28.zip:ADABTC-1m-2021-11-28.csv"),
        "{file}"
    );
    assert_eq!(err.line, 13, "{err}");
    assert!(err.message.contains("high"), "{err}");

    // One partition per day, named by the candles' own day.
    let files = dataset_files(&store, Dataset::Candles, Some("ADABTC"), None, None).unwrap();
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    assert_eq!(files.len(), 2, "{names:?}");
    assert!(names[0].contains("date=2021-11-27") && names[1].contains("date=2021-11-28"));

    let all = read_candles(&store, "ADABTC", Timeframe::M1, 0, i64::MAX).unwrap();
    assert_eq!(all.len(), 21);
    assert_eq!(all[0].open_time_ms, 1_637_971_200_000);
    assert_eq!(all[0].open, Price::parse("0.00002853").unwrap());
    assert_eq!(all[0].volume, Qty::parse("36304.2").unwrap());
    assert_eq!(all[0].trades, 79);
    // The µs file lands on the same ms grid as the ms file.
    assert_eq!(all[10].open_time_ms, 1_638_057_600_000);
    assert_eq!(all[10].close, Price::parse("0.00002818").unwrap());
    // Range query: [from, to) on open time.
    let some = read_candles(
        &store,
        "ADABTC",
        Timeframe::M1,
        1_637_971_260_000,
        1_637_971_380_000,
    )
    .unwrap();
    assert_eq!(some.len(), 2);
    assert!(
        read_candles(&store, "ADABTC", Timeframe::H1, 0, i64::MAX)
            .unwrap()
            .is_empty()
    );

    // Importing the same day again does not duplicate candles.
    import_files(
        &store,
        &StorageConfig::default(),
        ImportKind::Klines,
        "ADABTC",
        Timeframe::M1,
        &[require("candles/nautilus/ADABTC-1m-2021-11-27.csv")],
        |_| {},
    )
    .unwrap();
    assert_eq!(
        read_candles(&store, "ADABTC", Timeframe::M1, 0, i64::MAX)
            .unwrap()
            .len(),
        21
    );

    // A torn part file (as a crash leaves it) is invisible to readers and set aside on open.
    let good = &files[0];
    let bytes = std::fs::read(good).unwrap();
    let torn = good.with_file_name("part-0042.parquet.tmp");
    std::fs::write(&torn, &bytes[..bytes.len() / 2]).unwrap();
    assert_eq!(
        read_candles(&store, "ADABTC", Timeframe::M1, 0, i64::MAX)
            .unwrap()
            .len(),
        21
    );
    let (_w, recovery) =
        mmtrader::storage::market::MarketWriter::open(&store, &StorageConfig::default(), 9)
            .unwrap();
    assert_eq!(
        recovery.broken,
        vec![good.with_file_name("part-0042.parquet.broken")]
    );
}

#[test]
fn agg_trades_from_real_rows_in_ms_and_us() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Real Binance aggTrades (REST JSON) written out in the data.binance.vision CSV layout.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(require(
            "exchange_raw/nautilus_rest/binance/http_spot_market_agg_trades.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let rows: Vec<String> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{},{},{},{},{},{},{},{}",
                r["a"],
                r["p"].as_str().unwrap(),
                r["q"].as_str().unwrap(),
                r["f"],
                r["l"],
                r["T"],
                if r["m"].as_bool().unwrap() {
                    "True"
                } else {
                    "False"
                },
                if r["M"].as_bool().unwrap() {
                    "True"
                } else {
                    "False"
                },
            )
        })
        .collect();
    assert_eq!(rows.len(), 10);
    let ms = dir.path().join("BTCUSDT-aggTrades-a.csv");
    std::fs::write(&ms, rows[..5].join("\n")).unwrap();
    let us = dir.path().join("BTCUSDT-aggTrades-b.zip");
    let micro: Vec<String> = rows[5..].iter().map(|l| to_micros(l)).collect();
    zip_one(&us, "BTCUSDT-aggTrades-b.csv", &micro.join("\n"));
    let report = import_files(
        &store,
        &StorageConfig::default(),
        ImportKind::AggTrades,
        "BTCUSDT",
        Timeframe::M1,
        &[ms, us],
        |_| {},
    )
    .unwrap();
    assert_eq!((report.rows, report.bad.len()), (10, 0));
    let trades = read_trades(&store, "BTCUSDT", 0, i64::MAX).unwrap();
    assert_eq!(trades.len(), 10);
    let first = &json[0];
    assert_eq!(trades[0].id, first["a"].as_u64().unwrap());
    assert_eq!(trades[0].time_ms, first["T"].as_i64().unwrap());
    assert_eq!(trades[0].price, Price::parse("60759.6").unwrap());
    assert_eq!(trades[0].qty, Qty::parse("0.00841").unwrap());
    // m=false: the buyer took liquidity.
    assert_eq!(trades[0].taker_side, Side::Buy);
    let last = &json[9];
    assert_eq!(trades[9].time_ms, last["T"].as_i64().unwrap());
    assert_eq!(trades[9].id, last["a"].as_u64().unwrap());
    for w in trades.windows(2) {
        assert!(w[0].id < w[1].id && w[0].time_ms <= w[1].time_ms);
    }
}

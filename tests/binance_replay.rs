//! Whole-capability tests: recorded Binance sessions replayed through parser + BookSync.

use mmtrader::feeds::replay::replay_file;
use mmtrader::testdata::require;

#[test]
fn explore() {
    let base = "exchange_raw/hftbacktest_binance/";
    for set in [
        vec![format!("{base}spot_btcusdt_20240808.gz"), format!("{base}spot_btcusdt_20240809.gz")],
        vec![format!("{base}usdm_btcusdt_20240808.gz")],
        vec!["exchange_raw/cryptofeed_sample_data/BINANCE.ws.1.0".into(), "exchange_raw/cryptofeed_sample_data/BINANCE.http.0.0".into()],
        vec!["exchange_raw/cryptofeed_sample_data/BINANCE_FUTURES.ws.1.0".into(), "exchange_raw/cryptofeed_sample_data/BINANCE_FUTURES.http.0.0".into()],
    ] {
        let paths: Vec<_> = set.iter().map(|p| require(p)).collect();
        let rep = replay_file(&paths, None).unwrap();
        println!("{rep}");
    }
}

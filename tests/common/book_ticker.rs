//! The simulator's best bid and ask, read from its public REST book ticker as a client would.

use mmtrader::market::types::Price;
use mmtrader::sim::SimHandle;

/// Best bid and ask of `symbol` from `GET /api/v3/ticker/bookTicker`.
pub async fn book_ticker(sim: &SimHandle, symbol: &str) -> (Price, Price) {
    let v: serde_json::Value = reqwest::get(format!(
        "{}/api/v3/ticker/bookTicker?symbol={symbol}",
        sim.rest_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let p = |k: &str| Price::parse(v[k].as_str().unwrap()).unwrap();
    (p("bidPrice"), p("askPrice"))
}

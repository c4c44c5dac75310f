//! The 318 single captured messages of crypto-msg-parser (2021-2022; spot, swaps, futures and
//! REST bodies, each out of its connection's context): every message of the exchanges here is
//! parsed or rejected with a typed error, never a panic; spot trade messages yield trades.
//!
//! Some messages are not exchange wire format (crypto-msg-parser replaced Bitfinex's channel
//! id by the subscription object) and Kraken's are partly Kraken Futures feeds and REST bodies:
//! those are typed `field`/`json` errors. Outcomes are printed per exchange.

use std::collections::BTreeMap;

use mmtrader::feeds::normalized::{NormEvent, Venue};
use mmtrader::feeds::venue::{Frame, Step, VenueSession};

#[test]
fn every_message_is_parsed_or_typed() {
    let text = std::fs::read_to_string(mmtrader::testdata::require(
        "exchange_raw/crypto_msg_parser/raw_messages.jsonl",
    ))
    .unwrap();
    let mut outcomes: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut spot_trades_without_trade = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let exchange = v["exchange"].as_str().unwrap();
        let venue = match exchange {
            "coinbase_pro" => Venue::Coinbase,
            "huobi" => Venue::Htx,
            other => match Venue::parse(other) {
                Some(v) if v != Venue::Binance => v,
                _ => continue,
            },
        };
        let raw = v["raw_msg"].as_str().unwrap();
        let mut s = VenueSession::open(mmtrader::feeds::protocol_for(venue).unwrap());
        let mut step = Step::default();
        let outcome = match s.on_frame(Frame::Text(raw), &mut step) {
            Ok(()) => "ok".to_string(),
            Err(e) => e.kind().to_string(),
        };
        *outcomes.entry((exchange.to_string(), outcome)).or_default() += 1;
        let module = v["test_module"].as_str().unwrap_or_default();
        let function = v["test_fn"].as_str().unwrap_or_default();
        let spot_trade = function == "trade" || (module == "trade" && function.starts_with("spot"));
        if spot_trade
            && !matches!(venue, Venue::Bitfinex | Venue::Mexc)
            && !step.events.iter().any(|e| matches!(e, NormEvent::Trade(_)))
        {
            spot_trades_without_trade.push(format!(
                "{exchange} {function}: {}",
                &raw[..raw.len().min(120)]
            ));
        }
    }
    eprintln!("{outcomes:?}");
    assert!(
        spot_trades_without_trade.is_empty(),
        "{spot_trades_without_trade:#?}"
    );
    assert!(outcomes.values().sum::<u64>() > 150);
}

//! MEXC spot v3: the Binance-style signed REST API with MEXC's differences.
//!
//! Differences handled here (per the API digest): the key header is `X-MEXC-APIKEY`; order
//! types are `LIMIT`, `MARKET`, `LIMIT_MAKER`, `IMMEDIATE_OR_CANCEL`, `FILL_OR_KILL` with no
//! `timeInForce` parameter (IOC/FOK are types); there are no stop or take-profit types on spot;
//! order ids are strings; "timestamp outside recvWindow" is code 700003. Orders, queries,
//! cancels, open orders, trades and balances otherwise use the same paths and the shared
//! client ([`BinanceSpot`] with the MEXC flavor).

use super::binance_spot::{BinanceSpot, BinanceSpotConfig, Flavor, OrderKind, OrderSpec, Tif};
use super::rest::{ExecError, MEXC};
use super::signing::{Credentials, Query};
use crate::market::types::Side;

/// Environment prefix of MEXC credentials (`MMTRADER_MEXC_API_KEY`/`_API_SECRET`).
pub const MEXC_ENV: &str = "MMTRADER_MEXC";

/// MEXC's production REST base.
pub const MEXC_REST: &str = "https://api.mexc.com";

/// Default settings for MEXC spot (500 requests per 10 s per endpoint; a minute budget of
/// 6000 weight units keeps well inside it).
pub fn default_config() -> BinanceSpotConfig {
    BinanceSpotConfig {
        rest_url: MEXC_REST.into(),
        ws_url: "wss://wbs-api.mexc.com/ws".into(),
        ..BinanceSpotConfig::default()
    }
}

/// A MEXC spot account client.
pub fn client(cfg: BinanceSpotConfig, creds: Credentials) -> anyhow::Result<BinanceSpot> {
    BinanceSpot::with_flavor(cfg, creds, Flavor::Mexc, MEXC)
}

/// A MEXC client with credentials from `MMTRADER_MEXC_API_KEY`/`_API_SECRET` or the file.
pub fn from_env(cfg: BinanceSpotConfig) -> anyhow::Result<BinanceSpot> {
    let creds = Credentials::load(MEXC_ENV, cfg.credentials_file.as_deref())?;
    client(cfg, creds)
}

/// `POST /api/v3/order` parameters in MEXC's dialect.
pub fn order_params(spec: &OrderSpec) -> Result<Query, ExecError> {
    let side = match spec.side {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    };
    let (kind, price) = match spec.kind {
        OrderKind::Market => ("MARKET", None),
        OrderKind::Limit { price, tif } => (
            match tif {
                Tif::Gtc => "LIMIT",
                Tif::Ioc => "IMMEDIATE_OR_CANCEL",
                Tif::Fok => "FILL_OR_KILL",
            },
            Some(price),
        ),
        OrderKind::LimitMaker { price } => ("LIMIT_MAKER", Some(price)),
        other => {
            return Err(ExecError::Unsupported {
                exchange: MEXC.name,
                what: format!("{} orders on spot", other.as_str()),
            });
        }
    };
    let mut q = Query::new()
        .with("symbol", &spec.symbol)
        .with("side", side)
        .with("type", kind)
        .with("quantity", spec.qty.to_string());
    if let Some(p) = price {
        q.push("price", p.to_string());
    }
    q.push("newClientOrderId", &spec.client_id);
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::signing::{Secret, sign};
    use crate::market::types::{Price, Qty};

    fn spec(kind: OrderKind) -> OrderSpec {
        OrderSpec {
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            qty: Qty::parse("1").unwrap(),
            kind,
            client_id: "mm-7".into(),
        }
    }

    #[test]
    fn limit_request_matches_the_documented_signature() {
        // The documented example payload, built by the client (client id omitted there).
        let q = order_params(&spec(OrderKind::Limit {
            price: Price::parse("11").unwrap(),
            tif: Tif::Gtc,
        }))
        .unwrap();
        assert_eq!(
            q.as_str(),
            "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=11&newClientOrderId=mm-7"
        );
        let doc = "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=11&recvWindow=5000&timestamp=1644489390087";
        assert_eq!(
            sign(&Secret::new("45d0b3c26f2644f19bfb98b07741b2f5"), doc),
            "fd3e4e8543c5188531eb7279d68ae7d26a573d0fc5ab0d18eb692451654d837a"
        );
    }

    #[test]
    fn time_in_force_becomes_the_order_type_and_stops_are_refused() {
        let ioc = order_params(&spec(OrderKind::Limit {
            price: Price::parse("11").unwrap(),
            tif: Tif::Ioc,
        }))
        .unwrap();
        assert!(ioc.as_str().contains("type=IMMEDIATE_OR_CANCEL"));
        assert!(!ioc.as_str().contains("timeInForce"));
        let e = order_params(&spec(OrderKind::StopLoss {
            stop: Price::parse("10").unwrap(),
        }))
        .unwrap_err();
        assert!(matches!(e, ExecError::Unsupported { .. }));
        let m = order_params(&spec(OrderKind::Market)).unwrap();
        assert_eq!(
            m.as_str(),
            "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1&newClientOrderId=mm-7"
        );
    }

    #[test]
    fn client_uses_the_mexc_key_header() {
        let c = client(
            default_config(),
            Credentials {
                api_key: "k".into(),
                secret: Secret::new("s"),
            },
        )
        .unwrap();
        assert_eq!(c.rest().dialect().key_header, "X-MEXC-APIKEY");
        assert!(c.rest().dialect().timestamp_codes.contains(&700003));
        assert_eq!(c.flavor(), Flavor::Mexc);
    }
}

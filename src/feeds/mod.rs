//! Exchange connectors: wire protocols, local-book synchronisation, recorded-session replay.

pub mod aggregate;
pub mod backoff;
pub mod binance;
pub mod bitfinex;
pub mod bybit;
pub mod coinbase;
pub mod fallback;
pub mod health;
pub mod htx;
pub mod jsonutil;
pub mod kraken;
pub mod kucoin;
pub mod mexc;
pub mod normalized;
pub mod parser_surface;
pub mod raw_replay;
pub mod replay;
pub mod rest;
pub mod runner;
pub mod venue;

use normalized::Venue;
use venue::VenueProtocol;

/// The protocol of a venue with default settings. Binance's is the normalized adapter (replay,
/// normalized consumers); the desk's live Binance feed keeps its own connector in [`binance`].
pub fn protocol_for(venue: Venue) -> Option<Box<dyn VenueProtocol>> {
    match venue {
        Venue::Mexc => Some(Box::new(mexc::MexcProtocol::default())),
        Venue::Kraken => Some(Box::new(kraken::KrakenProtocol::default())),
        Venue::Coinbase => Some(Box::new(coinbase::CoinbaseProtocol::default())),
        Venue::Htx => Some(Box::new(htx::HtxProtocol::default())),
        Venue::Bitfinex => Some(Box::new(bitfinex::BitfinexProtocol::default())),
        Venue::Kucoin => Some(Box::new(kucoin::KucoinProtocol::default())),
        Venue::Bybit => Some(Box::new(bybit::BybitProtocol::default())),
        Venue::Binance => Some(Box::new(binance::protocol::BinanceProtocol::default())),
    }
}

//! Instrument definitions and the exchange's order filters, applied exactly.
//!
//! A zero `tick_size`, `step_size` or `max_qty` means "filter disabled", as in Binance's
//! exchangeInfo; the wire parser fills the struct and this module owns the rules.

use serde::{Deserialize, Serialize};

use super::types::{Price, Qty, Side, Symbol, notional};

/// Whether an instrument accepts orders (Binance's symbol `status`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstrumentStatus {
    /// Normal continuous trading.
    Trading,
    /// Trading halted.
    Halt,
    /// Delisted or paused ("BREAK").
    Break,
    /// Any other exchange status, kept verbatim.
    Other(String),
}

impl InstrumentStatus {
    /// Maps the exchange's status text (`TRADING`, `HALT`, `BREAK`, anything else verbatim).
    pub fn from_exchange(s: &str) -> Self {
        match s {
            "TRADING" => Self::Trading,
            "HALT" => Self::Halt,
            "BREAK" => Self::Break,
            other => Self::Other(other.to_string()),
        }
    }
}

/// Which exchange filter an order violates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The instrument is not in `Trading` status.
    #[error("instrument {symbol} is not trading (status {status:?})")]
    NotTrading {
        /// Instrument symbol.
        symbol: Symbol,
        /// Its current status.
        status: InstrumentStatus,
    },
    /// Price zero or negative.
    #[error("PRICE_FILTER: price {0} must be positive")]
    PriceNotPositive(Price),
    /// Price is not a multiple of the tick size.
    #[error("PRICE_FILTER: price {price} is not a multiple of tick size {tick}")]
    PriceTick {
        /// Offending price.
        price: Price,
        /// Tick size.
        tick: Price,
    },
    /// Quantity below the minimum.
    #[error("LOT_SIZE: quantity {qty} is below min_qty {min}")]
    QtyBelowMin {
        /// Offending quantity.
        qty: Qty,
        /// Minimum.
        min: Qty,
    },
    /// Quantity above the maximum.
    #[error("LOT_SIZE: quantity {qty} is above max_qty {max}")]
    QtyAboveMax {
        /// Offending quantity.
        qty: Qty,
        /// Maximum.
        max: Qty,
    },
    /// Quantity zero or negative.
    #[error("LOT_SIZE: quantity {0} must be positive")]
    QtyNotPositive(Qty),
    /// Quantity is not a multiple of the step size.
    #[error("LOT_SIZE: quantity {qty} is not a multiple of step size {step}")]
    QtyStep {
        /// Offending quantity.
        qty: Qty,
        /// Step size.
        step: Qty,
    },
    /// Price × quantity below the minimum notional.
    #[error("MIN_NOTIONAL: notional {notional} is below min_notional {min}")]
    NotionalBelowMin {
        /// Order notional in quote units (truncated to 8 decimals).
        notional: Price,
        /// Minimum notional in quote units.
        min: Price,
    },
}

/// A tradable instrument and its exchange filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instrument {
    /// Canonical symbol, e.g. `ETHUSDT`.
    pub symbol: Symbol,
    /// Base asset, e.g. `ETH`.
    pub base_asset: String,
    /// Quote asset, e.g. `USDT`.
    pub quote_asset: String,
    /// Price increment (zero: no tick rule).
    pub tick_size: Price,
    /// Quantity increment (zero: no step rule).
    pub step_size: Qty,
    /// Smallest order quantity.
    pub min_qty: Qty,
    /// Largest order quantity (zero: no maximum).
    pub max_qty: Qty,
    /// Smallest price × quantity, in quote units.
    pub min_notional: Price,
    /// Trading status.
    pub status: InstrumentStatus,
}

impl Instrument {
    /// Rounds a price onto the tick grid toward the passive side: down for a buy, up for a
    /// sell, so a rounded limit order never becomes more aggressive than requested.
    pub fn round_price(&self, side: Side, price: Price) -> Price {
        let tick = self.tick_size.raw();
        if tick <= 0 {
            return price;
        }
        let floor = price.raw().div_euclid(tick) * tick;
        match side {
            Side::Buy => Price(floor),
            Side::Sell if floor == price.raw() => price,
            Side::Sell => Price(floor + tick),
        }
    }

    /// Floors a quantity to the step size (never rounds an order up).
    pub fn floor_qty(&self, qty: Qty) -> Qty {
        let step = self.step_size.raw();
        if step <= 0 {
            return qty;
        }
        Qty(qty.raw().div_euclid(step) * step)
    }

    /// True when the instrument is in `Trading` status.
    pub fn is_trading(&self) -> bool {
        self.status == InstrumentStatus::Trading
    }

    /// Checks a limit order against every filter; the error names the first one violated.
    pub fn check_order(&self, price: Price, qty: Qty) -> Result<(), FilterError> {
        if !self.is_trading() {
            return Err(FilterError::NotTrading {
                symbol: self.symbol.clone(),
                status: self.status.clone(),
            });
        }
        self.check_price(price)?;
        self.check_qty(qty)?;
        let n = notional(price, qty);
        if n < self.min_notional.raw() as i128 {
            return Err(FilterError::NotionalBelowMin {
                notional: Price(n.min(i64::MAX as i128) as i64),
                min: self.min_notional,
            });
        }
        Ok(())
    }

    /// Price filter alone: positive and on the tick grid.
    pub fn check_price(&self, price: Price) -> Result<(), FilterError> {
        if price.raw() <= 0 {
            return Err(FilterError::PriceNotPositive(price));
        }
        let tick = self.tick_size.raw();
        if tick > 0 && price.raw() % tick != 0 {
            return Err(FilterError::PriceTick {
                price,
                tick: self.tick_size,
            });
        }
        Ok(())
    }

    /// Lot-size filter alone: positive, within [min_qty, max_qty], on the step grid.
    pub fn check_qty(&self, qty: Qty) -> Result<(), FilterError> {
        if qty.raw() <= 0 {
            return Err(FilterError::QtyNotPositive(qty));
        }
        if qty < self.min_qty {
            return Err(FilterError::QtyBelowMin {
                qty,
                min: self.min_qty,
            });
        }
        if self.max_qty.raw() > 0 && qty > self.max_qty {
            return Err(FilterError::QtyAboveMax {
                qty,
                max: self.max_qty,
            });
        }
        let step = self.step_size.raw();
        if step > 0 && qty.raw() % step != 0 {
            return Err(FilterError::QtyStep {
                qty,
                step: self.step_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth() -> Instrument {
        Instrument {
            symbol: "ETHUSDT".into(),
            base_asset: "ETH".into(),
            quote_asset: "USDT".into(),
            tick_size: Price::parse("0.01").unwrap(),
            step_size: Qty::parse("0.0001").unwrap(),
            min_qty: Qty::parse("0.0001").unwrap(),
            max_qty: Qty::parse("9000").unwrap(),
            min_notional: Price::parse("5").unwrap(),
            status: InstrumentStatus::Trading,
        }
    }

    fn p(s: &str) -> Price {
        Price::parse(s).unwrap()
    }
    fn q(s: &str) -> Qty {
        Qty::parse(s).unwrap()
    }

    #[test]
    fn price_rounds_toward_passive_side() {
        let i = eth();
        assert_eq!(i.round_price(Side::Buy, p("2000.019")), p("2000.01"));
        assert_eq!(i.round_price(Side::Sell, p("2000.011")), p("2000.02"));
        assert_eq!(i.round_price(Side::Sell, p("2000.01")), p("2000.01"));
        assert_eq!(i.round_price(Side::Buy, p("2000.01")), p("2000.01"));
        let mut free = eth();
        free.tick_size = Price::ZERO;
        assert_eq!(
            free.round_price(Side::Sell, p("1.23456789")),
            p("1.23456789")
        );
    }

    #[test]
    fn qty_floors_to_step() {
        let i = eth();
        assert_eq!(i.floor_qty(q("1.23456")), q("1.2345"));
        assert_eq!(i.floor_qty(q("0.00009")), Qty::ZERO);
    }

    #[test]
    fn filters_name_the_violation() {
        let i = eth();
        assert_eq!(i.check_order(p("2000.01"), q("0.01")), Ok(()));
        assert!(matches!(
            i.check_order(p("2000.015"), q("0.01")),
            Err(FilterError::PriceTick { .. })
        ));
        assert!(matches!(
            i.check_order(p("0"), q("0.01")),
            Err(FilterError::PriceNotPositive(_))
        ));
        assert!(matches!(
            i.check_order(p("2000"), q("0.00015")),
            Err(FilterError::QtyStep { .. })
        ));
        assert!(matches!(
            i.check_order(p("2000"), q("9000.1")),
            Err(FilterError::QtyAboveMax { .. })
        ));
        assert!(matches!(
            i.check_order(p("2000"), q("0.00001")),
            Err(FilterError::QtyBelowMin { .. })
        ));
        assert!(matches!(
            i.check_order(p("2000"), Qty::ZERO),
            Err(FilterError::QtyNotPositive(_))
        ));
        // 2000 × 0.0024 = 4.8 < 5
        let e = i.check_order(p("2000"), q("0.0024")).unwrap_err();
        assert_eq!(
            e,
            FilterError::NotionalBelowMin {
                notional: p("4.8"),
                min: p("5")
            }
        );
        assert!(e.to_string().contains("MIN_NOTIONAL"));
        // Exactly at the minimum passes.
        assert_eq!(i.check_order(p("2000"), q("0.0025")), Ok(()));
        let mut halted = eth();
        halted.status = InstrumentStatus::from_exchange("HALT");
        assert!(matches!(
            halted.check_order(p("2000"), q("1")),
            Err(FilterError::NotTrading { .. })
        ));
        assert_eq!(
            InstrumentStatus::from_exchange("PRE_TRADING"),
            InstrumentStatus::Other("PRE_TRADING".into())
        );
    }
}

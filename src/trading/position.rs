//! Position and PnL accounting, exact.
//!
//! A position keeps its signed quantity (long > 0) and the exact quote cost of the open
//! quantity. Rounding: when part of a position closes, the cost released is
//! `cost × closed / open`, truncated toward zero; the truncated remainder stays in the cost of
//! what is still open, so once the position is flat every unit of cost has been released and
//! the realized PnL of a round trip is exact to the last 1e-8. Products of price and quantity
//! are computed in i128 (see [`Money`]) and cannot overflow.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::market::types::{Price, Qty, SCALE, Side, Symbol};
use crate::trading::money::Money;
use crate::trading::order::Fill;

/// One symbol's position.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Position {
    /// Canonical symbol.
    pub symbol: Symbol,
    /// Signed base quantity: positive long, negative short.
    pub qty: Qty,
    /// Exact quote cost of the open quantity (always ≥ 0).
    pub cost: Money,
    /// Realized PnL before fees.
    pub realized: Money,
    /// Fees paid, in quote.
    pub fees: Money,
}

impl Position {
    /// A flat position.
    pub fn flat(symbol: &str) -> Self {
        Self {
            symbol: symbol.to_string(),
            ..Self::default()
        }
    }

    /// True with no open quantity.
    pub fn is_flat(&self) -> bool {
        self.qty.is_zero()
    }

    /// Average entry price of the open quantity, floored to the 8th decimal.
    pub fn avg_entry(&self) -> Option<Price> {
        if self.qty.is_zero() {
            return None;
        }
        let q = self.qty.raw().unsigned_abs() as i128;
        Some(Price((self.cost.raw() * SCALE as i128 / q) as i64))
    }

    /// Unrealized PnL at `mark`.
    pub fn unrealized(&self, mark: Price) -> Money {
        let value = Money::notional(mark, Qty(self.qty.raw().abs()));
        if self.qty.raw() >= 0 {
            value - self.cost
        } else {
            self.cost - value
        }
    }

    /// Absolute quote exposure at `mark`.
    pub fn exposure(&self, mark: Price) -> Money {
        Money::notional(mark, Qty(self.qty.raw().abs()))
    }

    /// Realized PnL net of fees.
    pub fn realized_net(&self) -> Money {
        self.realized - self.fees
    }

    /// Books one execution; returns the PnL it realized (before fees).
    pub fn apply(&mut self, side: Side, price: Price, qty: Qty, fee_quote: Money) -> Money {
        self.fees += fee_quote;
        let signed = match side {
            Side::Buy => qty.raw(),
            Side::Sell => -qty.raw(),
        };
        let open = self.qty.raw();
        if open == 0 || open.signum() == signed.signum() {
            self.cost += Money::notional(price, qty);
            self.qty = Qty(open + signed);
            return Money::ZERO;
        }
        let open_abs = open.unsigned_abs() as i128;
        let closed = (signed.unsigned_abs() as i128).min(open_abs);
        let released = if closed == open_abs {
            self.cost
        } else {
            Money(self.cost.raw() * closed / open_abs)
        };
        let value = Money::notional(price, Qty(closed as i64));
        let pnl = if open > 0 {
            value - released
        } else {
            released - value
        };
        self.cost -= released;
        self.realized += pnl;
        let left = open + signed;
        // A fill larger than the position flips it: the rest opens at the fill price.
        if left != 0 && left.signum() != open.signum() {
            self.cost = Money::notional(price, Qty(left.abs()));
        }
        self.qty = Qty(left);
        pnl
    }
}

/// Every position, the latest marks and the equity curve of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Portfolio {
    /// Cash at the start, in quote.
    pub starting_equity: Money,
    positions: BTreeMap<Symbol, Position>,
    marks: BTreeMap<Symbol, Price>,
    curve: Vec<(i64, Money)>,
    curve_cap: usize,
}

impl Portfolio {
    /// An empty portfolio holding `starting_equity` of quote cash; the equity curve keeps at
    /// most `curve_cap` points (older halves are thinned, not dropped, to keep the shape).
    pub fn new(starting_equity: Money, curve_cap: usize) -> Self {
        Self {
            starting_equity,
            positions: BTreeMap::new(),
            marks: BTreeMap::new(),
            curve: Vec::new(),
            curve_cap: curve_cap.max(2),
        }
    }

    /// Books a fill; returns the realized PnL (before fees).
    pub fn apply_fill(&mut self, fill: &Fill) -> Money {
        self.marks.entry(fill.symbol.clone()).or_insert(fill.price);
        self.positions
            .entry(fill.symbol.clone())
            .or_insert_with(|| Position::flat(&fill.symbol))
            .apply(fill.side, fill.price, fill.position_qty(), fill.fee_quote)
    }

    /// Puts back a position as it was (journal replay), replacing any held for its symbol.
    pub fn restore(&mut self, position: Position) {
        self.positions.insert(position.symbol.clone(), position);
    }

    /// Sets the mark price of a symbol (last trade or mid).
    pub fn mark(&mut self, symbol: &str, price: Price) {
        if let Some(p) = self.marks.get_mut(symbol) {
            *p = price;
        } else {
            self.marks.insert(symbol.to_string(), price);
        }
    }

    /// The mark of a symbol.
    pub fn mark_of(&self, symbol: &str) -> Option<Price> {
        self.marks.get(symbol).copied()
    }

    /// One symbol's position (flat when never traded).
    pub fn position(&self, symbol: &str) -> Position {
        self.positions
            .get(symbol)
            .cloned()
            .unwrap_or_else(|| Position::flat(symbol))
    }

    /// Signed quantity of a symbol.
    pub fn qty(&self, symbol: &str) -> Qty {
        self.positions.get(symbol).map_or(Qty::ZERO, |p| p.qty)
    }

    /// All positions ever opened, flat ones included (they carry realized PnL).
    pub fn positions(&self) -> impl Iterator<Item = &Position> {
        self.positions.values()
    }

    /// Mark of a position: the last mark, or its average entry before any mark.
    fn mark_for(&self, p: &Position) -> Price {
        self.marks
            .get(&p.symbol)
            .copied()
            .or_else(|| p.avg_entry())
            .unwrap_or(Price::ZERO)
    }

    /// Σ unrealized PnL at the marks.
    pub fn unrealized(&self) -> Money {
        self.positions
            .values()
            .map(|p| p.unrealized(self.mark_for(p)))
            .sum()
    }

    /// Σ realized PnL net of fees.
    pub fn realized_net(&self) -> Money {
        self.positions.values().map(Position::realized_net).sum()
    }

    /// Σ fees paid.
    pub fn fees(&self) -> Money {
        self.positions.values().map(|p| p.fees).sum()
    }

    /// Starting equity + realized (net of fees) + unrealized.
    pub fn equity(&self) -> Money {
        self.starting_equity + self.realized_net() + self.unrealized()
    }

    /// Σ |exposure| over symbols at the marks.
    pub fn gross_exposure(&self) -> Money {
        self.positions
            .values()
            .map(|p| p.exposure(self.mark_for(p)))
            .sum()
    }

    /// Appends the current equity to the curve.
    pub fn record_equity(&mut self, time_ms: i64) -> Money {
        let e = self.equity();
        if self.curve.len() >= self.curve_cap {
            // Keep every other point: the curve's shape survives at half the resolution.
            let mut i = 0;
            self.curve.retain(|_| {
                i += 1;
                i % 2 == 0
            });
        }
        self.curve.push((time_ms, e));
        e
    }

    /// The recorded equity curve, oldest first.
    pub fn equity_curve(&self) -> &[(i64, Money)] {
        &self.curve
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Price {
        Price::parse(s).unwrap()
    }
    fn q(s: &str) -> Qty {
        Qty::parse(s).unwrap()
    }

    #[test]
    fn a_buy_charged_in_the_base_asset_holds_its_quantity_less_the_fee() {
        let fill = |side, fee_asset: &str, fee: &str| crate::trading::order::Fill {
            client_id: crate::trading::order::ClientOrderId::parse("mm-1").unwrap(),
            symbol: "ETHUSDT".into(),
            side,
            price: p("2000"),
            qty: q("1"),
            fee: q(fee),
            fee_asset: fee_asset.into(),
            fee_quote: Money::notional(p("2000"), q(fee)),
            is_maker: false,
            time_ms: 1,
            trade_id: "1".into(),
        };
        let mut book = Portfolio::new(Money::from_units(10_000), 16);
        book.apply_fill(&fill(Side::Buy, "ETH", "0.001"));
        assert_eq!(
            book.qty("ETHUSDT"),
            q("0.999"),
            "the fee came out of the ETH"
        );
        // Quote-asset and third-asset fees leave the quantity whole.
        let mut other = Portfolio::new(Money::from_units(10_000), 16);
        other.apply_fill(&fill(Side::Buy, "USDT", "2"));
        other.apply_fill(&fill(Side::Buy, "BNB", "0.01"));
        assert_eq!(other.qty("ETHUSDT"), q("2"));
        // Selling what is held at the same price closes it and loses exactly the fee.
        let sell = crate::trading::order::Fill {
            qty: q("0.999"),
            ..fill(Side::Sell, "USDT", "0")
        };
        book.apply_fill(&sell);
        let pos = book.position("ETHUSDT");
        assert!(pos.is_flat());
        assert_eq!(pos.realized_net(), Money::from_units(-2));
    }

    #[test]
    fn long_round_trip_realizes_exactly() {
        let mut pos = Position::flat("ETHUSDT");
        pos.apply(Side::Buy, p("100"), q("1"), Money::parse("0.1").unwrap());
        pos.apply(Side::Buy, p("110"), q("1"), Money::parse("0.11").unwrap());
        assert_eq!(pos.avg_entry(), Some(p("105")));
        assert_eq!(pos.unrealized(p("120")), Money::from_units(30));
        let r = pos.apply(Side::Sell, p("120"), q("0.5"), Money::ZERO);
        assert_eq!(r, Money::parse("7.5").unwrap());
        let r2 = pos.apply(Side::Sell, p("100"), q("1.5"), Money::ZERO);
        assert_eq!(r2, Money::parse("-7.5").unwrap());
        assert!(pos.is_flat());
        assert_eq!(pos.cost, Money::ZERO);
        assert_eq!(pos.realized, Money::ZERO);
        assert_eq!(pos.realized_net(), Money::parse("-0.21").unwrap());
    }

    #[test]
    fn short_and_flip() {
        let mut pos = Position::flat("X");
        pos.apply(Side::Sell, p("50"), q("2"), Money::ZERO);
        assert_eq!(pos.qty, q("-2"));
        assert_eq!(pos.unrealized(p("40")), Money::from_units(20));
        let r = pos.apply(Side::Buy, p("40"), q("3"), Money::ZERO);
        assert_eq!(r, Money::from_units(20));
        assert_eq!(pos.qty, q("1"));
        assert_eq!(pos.avg_entry(), Some(p("40")));
    }

    #[test]
    fn portfolio_equity_and_curve() {
        let mut pf = Portfolio::new(Money::from_units(1000), 4);
        let fill = Fill {
            client_id: crate::trading::order::ClientOrderId::new("t", 1).unwrap(),
            symbol: "ETHUSDT".into(),
            side: Side::Buy,
            price: p("100"),
            qty: q("2"),
            fee: q("0.2"),
            fee_asset: "USDT".into(),
            fee_quote: Money::parse("0.2").unwrap(),
            is_maker: false,
            time_ms: 0,
            trade_id: "1".into(),
        };
        pf.apply_fill(&fill);
        pf.mark("ETHUSDT", p("105"));
        assert_eq!(pf.equity(), Money::parse("1009.8").unwrap());
        assert_eq!(pf.gross_exposure(), Money::from_units(210));
        for t in 0..10 {
            pf.record_equity(t);
        }
        assert!(pf.equity_curve().len() <= 4);
        assert_eq!(pf.equity_curve().last().unwrap().0, 9);
    }

    proptest! {
        /// Any sequence of fills that ends flat realizes exactly Σ sells − Σ buys.
        #[test]
        fn flat_round_trip_pnl_is_exact(fills in proptest::collection::vec((1i64..1_000_000_000_000, 1i64..10_000_000_000, any::<bool>()), 1..30)) {
            let mut pos = Position::flat("X");
            let mut cash: i128 = 0;
            for &(price, qty, buy) in &fills {
                let side = if buy { Side::Buy } else { Side::Sell };
                pos.apply(side, Price(price), Qty(qty), Money::ZERO);
                let n = Money::notional(Price(price), Qty(qty)).raw();
                cash += if buy { -n } else { n };
            }
            let last = fills[0].0;
            let q = pos.qty.raw();
            if q != 0 {
                let side = if q > 0 { Side::Sell } else { Side::Buy };
                pos.apply(side, Price(last), Qty(q.abs()), Money::ZERO);
                let n = Money::notional(Price(last), Qty(q.abs())).raw();
                cash += if q > 0 { n } else { -n };
            }
            prop_assert!(pos.is_flat());
            prop_assert_eq!(pos.cost, Money::ZERO);
            // Each flip re-prices the new leg from its own notional, so per-fill truncation
            // dust (≤ 1e-8 per fill) is the only possible difference.
            prop_assert!((pos.realized.raw() - cash).abs() <= fills.len() as i128 + 1);
        }
    }
}

//! COB heatmap: time (one column per COB computation, newest on the right) × price, cell
//! brightness by resting volume, bid or ask colour by the larger side, the current mid as a
//! line, and the imbalance moving averages beside it.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};

use super::{block, put_str};
use crate::feeds::aggregate::AggregatedCob;
use crate::market::cob::{CobSnapshot, HeatmapRow};
use crate::market::snapshot::SymbolView;
use crate::market::types::Price;
use crate::tui::theme::Theme;

/// Width of the side column with prices and imbalance averages.
const SIDE: u16 = 24;

/// Resting bid and ask volume per cell, column-major (`cols` × `rows`, top row first).
#[derive(Debug, Clone, PartialEq)]
pub struct HeatGrid {
    /// Columns (time).
    pub cols: usize,
    /// Rows (price, highest first).
    pub rows: usize,
    /// Bid volume per cell.
    pub bid: Vec<f64>,
    /// Ask volume per cell.
    pub ask: Vec<f64>,
    /// Price at the top edge of the grid.
    pub top: Price,
    /// Price span of one cell row (exact).
    pub step: Price,
}

impl HeatGrid {
    /// Bins the newest `cols` rows into `rows` price rows spanning the newest row's range;
    /// buckets outside that range (older rows around another mid) are left out.
    pub fn build(heat: &[HeatmapRow], cols: usize, rows: usize) -> Option<Self> {
        let latest = heat.last()?;
        if rows == 0 || cols == 0 || latest.bid.is_empty() || latest.bucket_size.raw() <= 0 {
            return None;
        }
        let span = latest.bucket_size.raw() * latest.bid.len() as i64;
        // Exact integer step, rounded up so the newest row's whole range fits.
        let step = (span + rows as i64 - 1) / rows as i64;
        let bottom = latest.first_price.raw();
        let top = bottom + step * rows as i64;
        let mut grid = Self {
            cols,
            rows,
            bid: vec![0.0; cols * rows],
            ask: vec![0.0; cols * rows],
            top: Price(top),
            step: Price(step),
        };
        let shown = &heat[heat.len().saturating_sub(cols)..];
        let offset = cols - shown.len();
        for (i, row) in shown.iter().enumerate() {
            let col = offset + i;
            for j in 0..row.bid.len().min(row.ask.len()) {
                let p = row.bucket_price(j).raw();
                if p < bottom || p >= top {
                    continue;
                }
                let r = ((top - 1 - p) / step) as usize;
                let k = col * rows + r.min(rows - 1);
                grid.bid[k] += row.bid[j].to_f64();
                grid.ask[k] += row.ask[j].to_f64();
            }
        }
        Some(grid)
    }

    /// Largest bid or ask volume of any cell.
    pub fn max(&self) -> f64 {
        self.bid
            .iter()
            .chain(self.ask.iter())
            .copied()
            .fold(0.0, f64::max)
    }

    /// Cell row holding `p`, if inside the grid.
    pub fn row_of(&self, p: Price) -> Option<usize> {
        let (top, step) = (self.top.raw(), self.step.raw());
        let bottom = top - step * self.rows as i64;
        (bottom..top)
            .contains(&p.raw())
            .then(|| ((top - 1 - p.raw()) / step) as usize)
    }
}

/// Mean of one imbalance MA vector (0 when empty).
fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Draws the heatmap pane.
pub fn render(frame: &mut Frame, area: Rect, sym: &SymbolView, theme: &Theme, focused: bool) {
    let heat = sym.heatmap.as_slice();
    let agg = sym.agg_cob.as_deref();
    let title = match agg {
        Some(a) => format!(
            "COB heatmap {} · {} s · {} venues",
            sym.display,
            heat.len(),
            a.quotes.len()
        ),
        None => format!("COB heatmap {} · {} s", sym.display, heat.len()),
    };
    let b = block(title, theme, focused);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    if inner.width < SIDE + 8 || inner.height < 3 {
        return;
    }
    let plot_w = inner.width - SIDE;
    let buf = frame.buffer_mut();
    let Some(grid) = HeatGrid::build(heat, plot_w as usize, inner.height as usize) else {
        put_str(
            buf,
            inner.x,
            inner.y,
            inner.right(),
            "no COB yet (starts once the book is live)",
            Style::default().fg(theme.muted),
        );
        return;
    };
    let max = grid.max();
    for c in 0..grid.cols {
        for r in 0..grid.rows {
            let k = c * grid.rows + r;
            let (b, a) = (grid.bid[k], grid.ask[k]);
            if b <= 0.0 && a <= 0.0 {
                continue;
            }
            let (v, color) = if b >= a {
                (b, theme.bid)
            } else {
                (a, theme.ask)
            };
            // Square root so thin levels stay visible next to a wall.
            let bg = theme.blend(theme.background, color, (v / max).sqrt());
            if let Some(cell) = buf.cell_mut((inner.x + c as u16, inner.y + r as u16)) {
                cell.set_char(' ').set_bg(bg);
            }
        }
    }
    let cob = sym.cob.as_deref();
    if let Some(row) = cob.and_then(|c| grid.row_of(c.mid)) {
        for c in 0..grid.cols as u16 {
            if let Some(cell) = buf.cell_mut((inner.x + c, inner.y + row as u16)) {
                cell.set_char('─').set_fg(theme.accent);
            }
        }
    }
    render_side(buf, inner, plot_w, &grid, (cob, agg), theme);
}

/// The aggregated COB's lines: its mid, each included venue's share of the bucketed depth,
/// and each venue left out with the reason.
pub fn venue_lines(agg: &AggregatedCob) -> Vec<(String, VenueLine)> {
    let mut out = vec![(format!("agg mid {:.2}", agg.mid), VenueLine::Header)];
    for (venue, share) in agg.depth_shares() {
        let bars = (share * 8.0).round().clamp(0.0, 8.0) as usize;
        out.push((
            format!(
                "{:<9}{:>4.0}% {}",
                venue.name(),
                share * 100.0,
                "■".repeat(bars)
            ),
            VenueLine::Included,
        ));
    }
    for (venue, why) in &agg.skipped {
        out.push((
            format!("{:<9}{}", venue.name(), why.label()),
            VenueLine::Skipped,
        ));
    }
    out
}

/// How a line of [`venue_lines`] is styled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VenueLine {
    /// The aggregate's heading.
    Header,
    /// A venue in the aggregate.
    Included,
    /// A venue left out.
    Skipped,
}

fn render_side(
    buf: &mut ratatui::buffer::Buffer,
    inner: Rect,
    plot_w: u16,
    grid: &HeatGrid,
    (cob, agg): (Option<&CobSnapshot>, Option<&AggregatedCob>),
    theme: &Theme,
) {
    let x = inner.x + plot_w + 1;
    let right = inner.right();
    let muted = Style::default().fg(theme.muted);
    let mut y = inner.y;
    let mut line = |text: &str, style: Style, y: &mut u16| {
        if *y < inner.bottom() {
            put_str(buf, x, *y, right, text, style);
            *y += 1;
        }
    };
    line(&format!("top {:.2}", grid.top), muted, &mut y);
    if let Some(c) = cob {
        line(
            &format!("mid {:.2}", c.mid),
            Style::default()
                .fg(theme.accent)
                .add_modifier(Modifier::BOLD),
            &mut y,
        );
        let ma = &c.imbalance_ma;
        let (lo, hi) = (
            ma.offsets.first().copied().unwrap_or(0),
            ma.offsets.last().copied().unwrap_or(0),
        );
        line(&format!("imbalance {lo:+}..{hi:+}"), muted, &mut y);
        for (name, v) in [
            ("1s", mean(&ma.ma_1s)),
            ("5s", mean(&ma.ma_5s)),
            ("15s", mean(&ma.ma_15s)),
            ("60s", mean(&ma.ma_60s)),
        ] {
            let bars = (v.abs() * 8.0).round().clamp(0.0, 8.0) as usize;
            let color = if v >= 0.0 { theme.bid } else { theme.ask };
            line(
                &format!("{name:>3} {v:+.3} {}", "■".repeat(bars)),
                Style::default().fg(color),
                &mut y,
            );
        }
        let ratio = c
            .order_flow
            .buy_sell_ratio
            .map(|r| format!("{r:.2}"))
            .unwrap_or_else(|| "—".into());
        line(&format!("buy/sell {ratio}"), muted, &mut y);
    } else {
        line("no COB computed", muted, &mut y);
    }
    if let Some(a) = agg {
        for (text, kind) in venue_lines(a) {
            let style = match kind {
                VenueLine::Header => Style::default()
                    .fg(theme.accent)
                    .add_modifier(Modifier::BOLD),
                VenueLine::Included => Style::default().fg(theme.ok),
                VenueLine::Skipped => Style::default().fg(theme.warning),
            };
            line(&text, style, &mut y);
        }
    }
    let bottom = Price(grid.top.raw() - grid.step.raw() * grid.rows as i64);
    if inner.bottom() > y {
        put_str(
            buf,
            x,
            inner.bottom() - 1,
            right,
            &format!("bot {bottom:.2}"),
            muted,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::Qty;

    fn row(t: i64, first: i64, bid: &[i64], ask: &[i64]) -> HeatmapRow {
        HeatmapRow {
            time_ms: t,
            first_price: Price::from_units(first),
            bucket_size: Price::from_units(1),
            bid: bid.iter().map(|&q| Qty::from_units(q)).collect(),
            ask: ask.iter().map(|&q| Qty::from_units(q)).collect(),
        }
    }

    #[test]
    fn grid_bins_rows_by_price_with_newest_on_the_right() {
        // The newest row spans 101..105: two cell rows, [103,105) on top and [101,103) below.
        let heat = vec![
            row(0, 100, &[1, 2, 0, 0], &[0, 0, 3, 4]),
            row(1, 101, &[5, 0, 0, 0], &[0, 0, 0, 9]),
        ];
        let g = HeatGrid::build(&heat, 3, 2).unwrap();
        assert_eq!(g.top, Price::from_units(105));
        assert_eq!(g.step, Price::from_units(2));
        // Column 0 is empty (two rows of history for three columns).
        assert_eq!(g.bid[0] + g.ask[0] + g.bid[1] + g.ask[1], 0.0);
        // Column 1, the older row: its bucket at 100 lies below the grid.
        assert_eq!((g.bid[2], g.ask[2]), (0.0, 4.0));
        assert_eq!((g.bid[3], g.ask[3]), (2.0, 3.0));
        // Column 2, the newest row.
        assert_eq!((g.bid[4], g.ask[4]), (0.0, 9.0));
        assert_eq!((g.bid[5], g.ask[5]), (5.0, 0.0));
        assert_eq!(g.max(), 9.0);
        assert_eq!(g.row_of(Price::from_units(103)), Some(0));
        assert_eq!(g.row_of(Price::from_units(101)), Some(1));
        assert_eq!(g.row_of(Price::from_units(100)), None);
        assert_eq!(g.row_of(Price::from_units(105)), None);
    }

    /// The fixture's ETH view with an aggregate over its book, a second venue quoting the same
    /// book at half size, and two venues left out.
    fn with_aggregate() -> SymbolView {
        use crate::feeds::aggregate::{Skipped, aggregate_cob};
        use crate::feeds::normalized::Venue;
        use crate::market::book::OrderBook;
        let mut sym = crate::tui::fixture::market().symbols[0].clone();
        let mut desk = OrderBook::new();
        desk.apply_snapshot(&sym.bids, &sym.asks, 1);
        let half = |v: &[crate::market::types::Level]| {
            v.iter()
                .map(|l| crate::market::types::Level {
                    qty: Qty(l.qty.raw() / 2),
                    ..*l
                })
                .collect::<Vec<_>>()
        };
        let mut kraken = OrderBook::new();
        kraken.apply_snapshot(&half(&sym.bids), &half(&sym.asks), 1);
        let mut agg = aggregate_cob(
            "ETH/USDT",
            &[(Venue::Binance, &desk), (Venue::Kraken, &kraken)],
            Price::from_units(1),
            20,
        )
        .unwrap();
        agg.skipped = vec![
            (Venue::Bybit, Skipped::Stale),
            (Venue::Coinbase, Skipped::Down),
        ];
        sym.agg_cob = Some(std::sync::Arc::new(agg));
        sym
    }

    fn draw(sym: &SymbolView, w: u16, h: u16) -> String {
        let theme = Theme::load("dark", None, true).unwrap();
        crate::tui::fixture::render_text(w, h, |f| render(f, f.area(), sym, &theme, true))
    }

    #[test]
    fn venue_lines_give_shares_and_reasons() {
        let sym = with_aggregate();
        let lines = venue_lines(sym.agg_cob.as_deref().unwrap());
        let text: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
        assert!(text[0].starts_with("agg mid "), "{text:?}");
        // Kraken quotes half of every level: a third of the depth.
        assert_eq!(text[1], "binance    67% ■■■■■");
        assert_eq!(text[2], "kraken     33% ■■■");
        assert_eq!(text[3], "bybit    stale");
        assert_eq!(text[4], "coinbase down");
        assert_eq!(lines[4].1, VenueLine::Skipped);
    }

    #[test]
    fn heatmap_pane_with_venues_80x24() {
        let s = draw(&with_aggregate(), 80, 24);
        assert!(s.contains("2 venues") && s.contains("coinbase down"), "{s}");
        insta::assert_snapshot!(s);
    }

    #[test]
    fn grid_rejects_empty_input() {
        assert!(HeatGrid::build(&[], 10, 10).is_none());
        assert!(HeatGrid::build(&[row(0, 1, &[], &[])], 10, 10).is_none());
        assert!(HeatGrid::build(&[row(0, 1, &[1], &[1])], 10, 0).is_none());
    }
}

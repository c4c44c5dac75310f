//! The market strip (every symbol's quote) and the focused symbol's order book.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table};

use super::block;
use crate::market::snapshot::{BookStatus, MarketSnapshot, SymbolView};
use crate::market::types::Level;
use crate::tui::theme::Theme;

fn level_text(l: Option<Level>, with_qty: bool) -> String {
    match l {
        Some(l) if with_qty => format!("{:.2} ({:.4})", l.price, l.qty),
        Some(l) => format!("{:.2}", l.price),
        None => "—".into(),
    }
}

/// `live` / `syncing` / `no data`, coloured.
pub fn status_span(sym: &SymbolView, theme: &Theme) -> Span<'static> {
    match sym.status {
        BookStatus::Live => Span::styled("live", Style::default().fg(theme.ok)),
        BookStatus::Syncing => Span::styled("syncing", Style::default().fg(theme.warning)),
        BookStatus::Idle => Span::styled("no data", Style::default().fg(theme.muted)),
    }
}

/// Rows the market strip needs for `symbols` symbols.
pub fn strip_height(symbols: usize) -> u16 {
    symbols as u16 + 3
}

/// Every symbol's best bid/ask, spread, last trade and book status; the focused one marked.
pub fn render_strip(
    frame: &mut Frame,
    area: Rect,
    snap: &MarketSnapshot,
    focus: usize,
    theme: &Theme,
) {
    // Narrow strips (the full desk's right column) drop the quantities before anything else.
    let with_qty = area.width >= 80;
    let rows = snap.symbols.iter().enumerate().map(|(i, s)| {
        let mark = if i == focus { "▶" } else { " " };
        let last = s
            .last_trade
            .as_ref()
            .map(|t| format!("{:.2}", t.price))
            .unwrap_or_else(|| "—".into());
        let spread = s
            .spread()
            .map(|p| format!("{p:.2}"))
            .unwrap_or_else(|| "—".into());
        let row = Row::new(vec![
            Cell::from(format!("{mark}{}", s.display)),
            Cell::from(Span::styled(
                level_text(s.best_bid, with_qty),
                Style::default().fg(theme.bid),
            )),
            Cell::from(Span::styled(
                level_text(s.best_ask, with_qty),
                Style::default().fg(theme.ask),
            )),
            Cell::from(spread),
            Cell::from(last),
            Cell::from(status_span(s, theme)),
        ]);
        if i == focus {
            row.style(Style::default().bg(theme.highlight_bg))
        } else {
            row
        }
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Min(if with_qty { 18 } else { 9 }),
            Constraint::Min(if with_qty { 18 } else { 9 }),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(8),
        ],
    )
    .header(
        Row::new(vec![
            "symbol",
            if with_qty { "bid (qty)" } else { "bid" },
            if with_qty { "ask (qty)" } else { "ask" },
            "spread",
            "last",
            "book",
        ])
        .style(Style::default().fg(theme.muted)),
    )
    .block(block("Market", theme, false));
    frame.render_widget(table, area);
}

/// The focused symbol's best levels, bids and asks side by side.
pub fn render_book(frame: &mut Frame, area: Rect, sym: &SymbolView, theme: &Theme, focused: bool) {
    let depth = area.height.saturating_sub(3) as usize;
    let rows = (0..depth).map(|i| {
        let bid = sym.bids.get(i);
        let ask = sym.asks.get(i);
        Row::new(vec![
            Cell::from(bid.map(|l| format!("{:.4}", l.qty)).unwrap_or_default()),
            Cell::from(Span::styled(
                bid.map(|l| format!("{:.2}", l.price)).unwrap_or_default(),
                Style::default().fg(theme.bid),
            )),
            Cell::from(Span::styled(
                ask.map(|l| format!("{:.2}", l.price)).unwrap_or_default(),
                Style::default().fg(theme.ask),
            )),
            Cell::from(ask.map(|l| format!("{:.4}", l.qty)).unwrap_or_default()),
        ])
    });
    let title = format!(
        "Book {} · {}×{} levels",
        sym.display, sym.bid_levels, sym.ask_levels
    );
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Fill(1),
    ];
    let table = Table::new(rows, widths)
        .header(
            Row::new(vec!["bid qty", "bid", "ask", "ask qty"])
                .style(Style::default().fg(theme.muted)),
        )
        .block(block(title, theme, focused));
    frame.render_widget(table, area);
}

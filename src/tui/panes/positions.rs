//! Positions pane: positions, working orders, realized and unrealized PnL, each risk limit's
//! usage and the circuit-breaker state — or that trading is not running.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::block;
use super::models::bar;
use crate::market::types::{Price, Side};
use crate::tui::desk::TradingView;
use crate::tui::theme::Theme;

/// `+12.34` / `-1.20`: PnL with its sign, two decimals, from the exact amount.
fn signed(p: Price) -> String {
    let cents = (i128::from(p.raw()) + if p.raw() >= 0 { 500_000 } else { -500_000 }) / 1_000_000;
    let sign = if cents < 0 { "-" } else { "+" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

/// Draws the positions pane; `None` means no trading process publishes.
pub fn render(
    frame: &mut Frame,
    area: Rect,
    trading: Option<&TradingView>,
    resume_key: &str,
    theme: &Theme,
    focused: bool,
) {
    let muted = Style::default().fg(theme.muted);
    let pnl_style =
        |p: Price| Style::default().fg(if p.raw() >= 0 { theme.up } else { theme.down });
    let mut lines: Vec<Line> = Vec::new();
    match trading {
        None => {
            lines.push(Line::from("trading not running"));
            lines.push(Line::from(Span::styled("positions: none", muted)));
        }
        Some(t) => {
            lines.push(Line::from(vec![
                Span::styled(
                    format!("{} ", t.mode.to_uppercase()),
                    Style::default()
                        .fg(if t.mode.starts_with("live") {
                            theme.warning
                        } else {
                            theme.accent
                        })
                        .add_modifier(Modifier::BOLD),
                ),
                Span::raw(if t.running { "running" } else { "stopped" }),
                Span::styled(format!(" · equity {:.2}", t.equity.to_f64()), muted),
                Span::raw(" · rPnL "),
                Span::styled(signed(t.realized), pnl_style(t.realized)),
                Span::raw(" uPnL "),
                Span::styled(signed(t.unrealized), pnl_style(t.unrealized)),
                Span::styled(format!(" · {} fills", t.fills), muted),
            ]));
            if let Some(why) = &t.halted {
                lines.push(Line::from(Span::styled(
                    format!("HALTED: {why} · {resume_key} resumes (asks y/n)"),
                    Style::default().fg(theme.down).add_modifier(Modifier::BOLD),
                )));
            }
            if let Some(f) = &t.flatten {
                lines.push(Line::from(Span::styled(
                    f.to_uppercase(),
                    Style::default()
                        .fg(theme.warning)
                        .add_modifier(Modifier::BOLD),
                )));
            }
            if t.positions.is_empty() {
                lines.push(Line::from(Span::styled("no open position", muted)));
            }
            for p in &t.positions {
                let (side, color) = match p.side {
                    Side::Buy => ("long ", theme.up),
                    Side::Sell => ("short", theme.down),
                };
                let d = p.price_decimals;
                let mut spans = vec![
                    Span::raw(format!("{:<9}", p.symbol)),
                    Span::styled(side, Style::default().fg(color)),
                    Span::raw(format!(" {} @ {:.d$}", p.qty, p.entry)),
                ];
                if let Some(u) = p.unrealized {
                    spans.push(Span::raw(" u "));
                    spans.push(Span::styled(signed(u), pnl_style(u)));
                }
                match p.stop {
                    Some(s) => {
                        let dist = p
                            .mark
                            .filter(|m| m.raw() > 0)
                            .map(|m| {
                                let bps =
                                    (m.raw() - s.raw()).abs() as i128 * 10_000 / m.raw() as i128;
                                format!(" ({bps} bp)")
                            })
                            .unwrap_or_default();
                        spans.push(Span::styled(format!(" stop {s:.d$}{dist}"), muted));
                    }
                    None => spans.push(Span::styled(
                        " NO STOP",
                        Style::default().fg(theme.down).add_modifier(Modifier::BOLD),
                    )),
                }
                if let Some(tp) = p.take_profit {
                    spans.push(Span::styled(format!(" tp {tp:.d$}"), muted));
                }
                if p.exits_by_desk && (p.stop.is_some() || p.take_profit.is_some()) {
                    spans.push(Span::styled(
                        " (desk-watched)",
                        Style::default().fg(theme.warning),
                    ));
                }
                lines.push(Line::from(spans));
            }
            for o in &t.orders {
                let side = match o.side {
                    Side::Buy => "buy",
                    Side::Sell => "sell",
                };
                let d = o.price_decimals;
                let price = o.price.map(|p| format!(" @ {p:.d$}")).unwrap_or_default();
                lines.push(Line::from(Span::styled(
                    format!(
                        "order {} {side} {} {}/{}{price}",
                        o.symbol, o.kind, o.filled, o.qty
                    ),
                    muted,
                )));
            }
            for l in &t.limits {
                let color = if l.used >= 1.0 {
                    theme.down
                } else if l.used >= 0.8 {
                    theme.warning
                } else {
                    theme.ok
                };
                lines.push(Line::from(vec![
                    Span::raw(format!("{:<17}", l.name)),
                    Span::styled(bar(l.used, 8), Style::default().fg(color)),
                    Span::styled(format!(" {}", l.text), muted),
                ]));
            }
        }
    }
    frame.render_widget(
        Paragraph::new(lines).block(block("Positions", theme, focused)),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pnl_is_rounded_from_the_exact_amount() {
        let p = |s: &str| Price::parse(s).unwrap();
        assert_eq!(signed(p("12.345")), "+12.35");
        assert_eq!(signed(p("-1.2")), "-1.20");
        assert_eq!(signed(p("-0.004")), "+0.00");
        assert_eq!(signed(p("0")), "+0.00");
    }
}

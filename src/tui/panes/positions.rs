//! Positions pane: open positions and risk limits from the trading process, or that it is
//! not running.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::block;
use crate::market::types::Side;
use crate::tui::desk::TradingView;
use crate::tui::theme::Theme;

/// Draws the positions pane; `None` means no trading process publishes.
pub fn render(
    frame: &mut Frame,
    area: Rect,
    trading: Option<&TradingView>,
    theme: &Theme,
    focused: bool,
) {
    let muted = Style::default().fg(theme.muted);
    let mut lines: Vec<Line> = Vec::new();
    let limits = match trading {
        None => {
            lines.push(Line::from("paper trading not running"));
            lines.push(Line::from(Span::styled("positions: none", muted)));
            None
        }
        Some(t) => {
            lines.push(Line::from(format!(
                "{} trading · {} open",
                t.mode,
                t.positions.len()
            )));
            for p in &t.positions {
                let (side, color) = match p.side {
                    Side::Buy => ("long ", theme.up),
                    Side::Sell => ("short", theme.down),
                };
                lines.push(Line::from(vec![
                    Span::raw(format!("{:<10}", p.symbol)),
                    Span::styled(side, Style::default().fg(color)),
                    Span::raw(format!(" {} @ {:.2}", p.qty, p.entry)),
                ]));
            }
            t.limits
        }
    };
    let (max_pos, max_loss) = match limits {
        Some(l) => (
            l.max_position.to_string(),
            format!("{:.2}", l.max_daily_loss),
        ),
        None => ("—".to_string(), "—".to_string()),
    };
    lines.push(Line::from(Span::styled(
        format!("limits: position {max_pos} · daily loss {max_loss}"),
        muted,
    )));
    frame.render_widget(
        Paragraph::new(lines).block(block("Positions", theme, focused)),
        area,
    );
}

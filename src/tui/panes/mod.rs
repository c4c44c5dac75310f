//! One module per pane; each draws from immutable inputs into a given area.

pub mod chart;
pub mod heatmap;
pub mod logs;
pub mod market;
pub mod models;
pub mod positions;
pub mod system;

use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders};

use super::theme::Theme;

/// A bordered pane; the focused one gets the accent border so it stands out in the full desk.
pub fn block<'a>(title: impl Into<String>, theme: &Theme, focused: bool) -> Block<'a> {
    let border = if focused { theme.accent } else { theme.border };
    Block::default()
        .borders(Borders::ALL)
        .border_style(Style::default().fg(border))
        .title(Span::styled(
            format!(" {} ", title.into()),
            Style::default()
                .fg(theme.title)
                .add_modifier(Modifier::BOLD),
        ))
}

/// `HH:MM:SS` (UTC) of a ms timestamp.
pub fn utc_hms(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Counts in at most 5 characters: exact below 10,000, then k and M.
pub fn compact(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// Writes one character with a foreground colour, ignoring cells outside the buffer.
pub fn put(buf: &mut Buffer, x: u16, y: u16, c: char, fg: Color) {
    if let Some(cell) = buf.cell_mut((x, y)) {
        cell.set_char(c).set_fg(fg);
    }
}

/// Writes text from `(x, y)`, clipped at `max_x` (exclusive).
pub fn put_str(buf: &mut Buffer, x: u16, y: u16, max_x: u16, text: &str, style: Style) {
    for (cx, c) in (x..max_x).zip(text.chars()) {
        if let Some(cell) = buf.cell_mut((cx, y)) {
            cell.set_char(c).set_style(style);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_format() {
        assert_eq!(utc_hms(1_700_000_000_000), "22:13:20");
        assert_eq!(utc_hms(-1000), "23:59:59");
        assert_eq!(compact(9_999), "9999");
        assert_eq!(compact(12_345), "12.3k");
        assert_eq!(compact(2_500_000), "2.5M");
    }
}

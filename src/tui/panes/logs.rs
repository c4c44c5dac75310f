//! Logs pane: the tail of the tracing output, filtered by minimum level, scrollable.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use tracing::Level;

use super::{block, utc_hms};
use crate::logging::LogLine;
use crate::tui::theme::Theme;

/// The next filter in the cycle ERROR → WARN → INFO → DEBUG → ERROR.
pub fn next_level(l: Level) -> Level {
    match l {
        Level::ERROR => Level::WARN,
        Level::WARN => Level::INFO,
        Level::INFO => Level::DEBUG,
        _ => Level::ERROR,
    }
}

/// True for lines at `min` or more severe.
pub fn passes(line: &LogLine, min: Level) -> bool {
    // tracing's `Level` orders by verbosity: TRACE > DEBUG > INFO > WARN > ERROR.
    line.level <= min
}

/// Draws the logs pane: the newest lines passing `min`, `scroll` lines back from the end.
pub fn render(
    frame: &mut Frame,
    area: Rect,
    logs: &[LogLine],
    min: Level,
    scroll: usize,
    theme: &Theme,
    focused: bool,
) {
    let height = area.height.saturating_sub(2) as usize;
    let kept: Vec<&LogLine> = logs.iter().filter(|l| passes(l, min)).collect();
    let end = kept.len().saturating_sub(scroll.min(kept.len()));
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = kept[start..end]
        .iter()
        .map(|l| {
            let color = match l.level {
                Level::ERROR => theme.error,
                Level::WARN => theme.warning,
                Level::INFO => theme.foreground,
                _ => theme.muted,
            };
            Line::from(vec![
                Span::styled(
                    format!("{} ", utc_hms(l.time_ms)),
                    Style::default().fg(theme.muted),
                ),
                Span::styled(format!("{:<5} ", l.level), Style::default().fg(color)),
                Span::raw(l.message.clone()),
            ])
        })
        .collect();
    let mut title = format!("Log ≥{min} · {} lines", kept.len());
    if scroll > 0 {
        title.push_str(&format!(" · scrolled back {scroll}"));
    }
    frame.render_widget(
        Paragraph::new(lines).block(block(title, theme, focused)),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: Level) -> LogLine {
        LogLine {
            time_ms: 0,
            level,
            target: "t".into(),
            message: "m".into(),
        }
    }

    #[test]
    fn level_filter_cycles_and_filters() {
        assert_eq!(next_level(Level::ERROR), Level::WARN);
        assert_eq!(next_level(Level::DEBUG), Level::ERROR);
        assert!(passes(&line(Level::ERROR), Level::WARN));
        assert!(passes(&line(Level::WARN), Level::WARN));
        assert!(!passes(&line(Level::INFO), Level::WARN));
        assert!(passes(&line(Level::DEBUG), Level::DEBUG));
        assert!(!passes(&line(Level::TRACE), Level::DEBUG));
    }
}

//! Models pane: what the inference process has loaded, or that it is not running.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{block, utc_hms};
use crate::tui::desk::ModelsView;
use crate::tui::theme::Theme;

/// Draws the models pane; `None` means no inference process publishes.
pub fn render(
    frame: &mut Frame,
    area: Rect,
    models: Option<&ModelsView>,
    theme: &Theme,
    focused: bool,
) {
    let muted = Style::default().fg(theme.muted);
    let lines: Vec<Line> = match models {
        None => vec![
            Line::from("no model loaded"),
            Line::from(Span::styled("inference: not running", muted)),
            Line::from(Span::styled("training: not running", muted)),
        ],
        Some(v) if v.models.is_empty() => vec![
            Line::from("no model loaded"),
            Line::from(Span::styled("inference: running, idle", muted)),
        ],
        Some(v) => v
            .models
            .iter()
            .map(|m| {
                let last = m
                    .last_inference_ms
                    .map(utc_hms)
                    .unwrap_or_else(|| "—".into());
                Line::from(vec![
                    Span::raw(format!("{:<16} ", m.name)),
                    Span::styled(format!("{} ", m.checkpoint), muted),
                    Span::raw(format!("last {last}")),
                ])
            })
            .collect(),
    };
    frame.render_widget(
        Paragraph::new(lines).block(block("Models", theme, focused)),
        area,
    );
}

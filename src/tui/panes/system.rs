//! System pane: every feed link, every symbol's book sync, the processes and memory.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::market::status_span;
use super::{block, compact};
use crate::feeds::health::{LinkState, StreamHealth};
use crate::market::snapshot::MarketSnapshot;
use crate::tui::desk::{DeskStatus, human_bytes};
use crate::tui::theme::Theme;

/// Rows the pane needs to show everything.
pub fn wanted_height(snap: &MarketSnapshot) -> u16 {
    (snap.links.len() + snap.symbols.len()) as u16 + 2 + 3 + 2
}

fn link_line(h: &StreamHealth, now_ms: i64, theme: &Theme) -> Line<'static> {
    let (state, color) = match h.state {
        LinkState::Connected if h.is_stale(now_ms) => ("stale", theme.warning),
        LinkState::Connected => ("connected", theme.ok),
        LinkState::Connecting => ("connecting", theme.warning),
        LinkState::Reconnecting => ("retrying", theme.warning),
        LinkState::Stopped => ("stopped", theme.muted),
    };
    let age = h
        .age_ms(now_ms)
        .map(|a| format!("{a} ms"))
        .unwrap_or_else(|| "—".into());
    Line::from(vec![
        Span::raw(format!("{:<14}", h.name)),
        Span::styled(format!("{state:<11}"), Style::default().fg(color)),
        Span::raw(format!(
            "{age:>9} {:>8} conn {:<5} resync {:<5} err {}",
            format!("{:.1}/s", h.rate_per_sec),
            compact(h.connects),
            compact(h.resyncs),
            compact(h.errors)
        )),
    ])
}

fn process(name: &str, running: bool, theme: &Theme) -> Vec<Span<'static>> {
    let (text, color): (&str, Color) = if running {
        ("running", theme.ok)
    } else {
        ("not running", theme.muted)
    };
    vec![
        Span::raw(format!("{name} ")),
        Span::styled(text.to_string(), Style::default().fg(color)),
        Span::raw("  "),
    ]
}

/// Draws the system pane.
pub fn render(
    frame: &mut Frame,
    area: Rect,
    snap: &MarketSnapshot,
    desk: &DeskStatus,
    theme: &Theme,
    focused: bool,
) {
    let mut lines: Vec<Line> = snap
        .links
        .iter()
        .map(|h| link_line(h, snap.time_ms, theme))
        .collect();
    for s in &snap.symbols {
        lines.push(Line::from(vec![
            Span::raw(format!("{:<14}", format!("{} book", s.exchange))),
            Span::styled(
                format!("{:<11}", status_span(s, theme).content),
                status_span(s, theme).style,
            ),
            Span::raw(format!(
                "trades {:<5} diffs {:<5} stale {:<5} resync {:<5} gaps {}",
                compact(s.trades),
                compact(s.book.applied),
                compact(s.book.dropped),
                compact(s.book.resyncs),
                compact(s.book.gaps)
            )),
        ]));
    }
    lines.push(Line::default());
    let feed = if snap.feed_running {
        vec![
            Span::raw("feed "),
            Span::styled("running", Style::default().fg(theme.ok)),
            Span::raw("  "),
        ]
    } else {
        vec![
            Span::raw("feed "),
            Span::styled("stopped", Style::default().fg(theme.warning)),
            Span::raw("  "),
        ]
    };
    // Two processes per line, so the pane stays readable in the full desk's narrow column.
    let mut procs = feed;
    procs.extend(process(
        "inference",
        desk.models.as_ref().is_some_and(|m| m.inference),
        theme,
    ));
    lines.push(Line::from(procs));
    let mut procs = process(
        "training",
        desk.models.as_ref().is_some_and(|m| m.training),
        theme,
    );
    procs.extend(process(
        "trading",
        desk.trading.as_ref().is_some_and(|t| t.running),
        theme,
    ));
    lines.push(Line::from(procs));
    if let Some(t) = &desk.trading {
        let live = t.mode.starts_with("live");
        lines.push(Line::from(vec![
            Span::styled("executor ", Style::default().fg(theme.muted)),
            Span::styled(
                t.mode.clone(),
                Style::default().fg(if live { theme.warning } else { theme.ok }),
            ),
        ]));
    }
    let mem = desk
        .rss_bytes
        .map(human_bytes)
        .unwrap_or_else(|| "unavailable".into());
    lines.push(Line::from(vec![
        Span::styled("memory RSS ", Style::default().fg(theme.muted)),
        Span::raw(mem),
    ]));
    frame.render_widget(
        Paragraph::new(lines).block(block("System", theme, focused)),
        area,
    );
}

//! System pane: every feed link, every symbol's book sync, the processes and memory.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::market::status_span;
use super::{block, compact};
use crate::feeds::health::{LinkState, StreamHealth};
use crate::market::snapshot::{MarketSnapshot, VenueLinkView};
use crate::tui::desk::{DeskStatus, human_bytes};
use crate::tui::theme::Theme;

/// Rows the pane needs to show everything.
pub fn wanted_height(snap: &MarketSnapshot) -> u16 {
    (snap.links.len() + snap.venues.len() + snap.symbols.len()) as u16 + 2 + 3 + 2
}

/// The name, state and message-age columns every link row starts with.
fn link_head(h: &StreamHealth, now_ms: i64, theme: &Theme) -> Vec<Span<'static>> {
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
    vec![
        Span::raw(format!("{:<14}", h.name)),
        Span::styled(format!("{state:<11}"), Style::default().fg(color)),
        Span::raw(format!("{age:>9} ")),
    ]
}

fn link_line(h: &StreamHealth, now_ms: i64, theme: &Theme) -> Line<'static> {
    let mut spans = link_head(h, now_ms, theme);
    spans.push(Span::raw(format!(
        "{:>8} conn {:<5} resync {:<5} err {}",
        format!("{:.1}/s", h.rate_per_sec),
        compact(h.connects),
        compact(h.resyncs),
        compact(h.errors)
    )));
    Line::from(spans)
}

/// A followed venue's link: books synced, integrity failures, reconnects and errors.
fn venue_line(v: &VenueLinkView, now_ms: i64, theme: &Theme) -> Line<'static> {
    let mut spans = link_head(&v.health, now_ms, theme);
    let integrity = if v.integrity_failures > 0 {
        theme.warning
    } else {
        theme.muted
    };
    spans.push(Span::raw(format!("books {}/{} ", v.books, v.instruments)));
    spans.push(Span::styled(
        format!("integrity {:<4}", compact(v.integrity_failures)),
        Style::default().fg(integrity),
    ));
    spans.push(Span::raw(format!(
        " conn {:<4} err {}",
        compact(v.health.connects),
        compact(v.health.errors)
    )));
    Line::from(spans)
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
    lines.extend(
        snap.venues
            .iter()
            .map(|v| venue_line(v, snap.time_ms, theme)),
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::normalized::Venue;

    #[test]
    fn system_pane_with_venues_80x24() {
        let mut snap = crate::tui::fixture::market();
        let venue = |venue: Venue, state: LinkState, age: i64, integrity: u64, books: usize| {
            let mut health = StreamHealth::new(format!("{venue} ws"), 10_000);
            health.state = state;
            health.connects = 2;
            health.errors = 1;
            health.on_message(snap.time_ms - age);
            VenueLinkView {
                venue,
                health,
                integrity_failures: integrity,
                books,
                instruments: 2,
                trades: 40,
            }
        };
        snap.venues = vec![
            venue(Venue::Kraken, LinkState::Connected, 120, 3, 2),
            venue(Venue::Bybit, LinkState::Reconnecting, 4_000, 0, 0),
        ];
        let theme = Theme::load("dark", None, true).unwrap();
        let desk = DeskStatus::default();
        let s = crate::tui::fixture::render_text(80, 24, |f| {
            render(f, f.area(), &snap, &desk, &theme, true)
        });
        assert!(s.contains("kraken ws") && s.contains("integrity 3"), "{s}");
        assert!(s.contains("bybit ws") && s.contains("retrying"), "{s}");
        assert_eq!(wanted_height(&snap), (snap.links.len() + 2 + 2) as u16 + 7);
        insta::assert_snapshot!(s);
    }
}

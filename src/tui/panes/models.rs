//! Models pane: each expert's latest output, the orchestrator's decision with the expert
//! weights, accuracy over time, and the live-tunable parameters — or that inference is not
//! running.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{block, utc_hms};
use crate::analysis::model_output::Action as TradeAction;
use crate::tui::desk::{ExpertRow, ModelsView, Tunable};
use crate::tui::theme::Theme;

const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A sparkline of the last `width` values, scaled to their range (at least 0.1 wide, so that
/// noise on a flat series does not look like a trend); non-finite values draw as the floor.
pub fn sparkline(values: &[f64], width: usize) -> String {
    let window = &values[values.len().saturating_sub(width)..];
    let finite = window.iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f64::INFINITY, f64::min);
    let hi = finite.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return SPARK[0].to_string().repeat(window.len());
    }
    let span = (hi - lo).max(0.1);
    window
        .iter()
        .map(|v| {
            let f = if v.is_finite() { (v - lo) / span } else { 0.0 };
            SPARK[((f * 7.0).round() as usize).min(7)]
        })
        .collect()
}

/// A horizontal bar of `width` cells for a fraction in 0..1.
pub fn bar(fraction: f64, width: usize) -> String {
    let f = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let full = (f * width as f64).round() as usize;
    let mut s = "█".repeat(full);
    s.push_str(&"░".repeat(width - full));
    s
}

fn action_style(action: TradeAction, theme: &Theme) -> Style {
    let color = match action {
        TradeAction::Buy => theme.up,
        TradeAction::Sell => theme.down,
        TradeAction::Hold => theme.muted,
    };
    Style::default().fg(color).add_modifier(Modifier::BOLD)
}

fn action_text(action: TradeAction) -> &'static str {
    match action {
        TradeAction::Buy => "BUY ",
        TradeAction::Sell => "SELL",
        TradeAction::Hold => "HOLD",
    }
}

fn expert_line(e: &ExpertRow, name_w: usize, theme: &Theme) -> Line<'static> {
    let muted = Style::default().fg(theme.muted);
    let mut spans = vec![
        Span::raw(format!("{:<name_w$} ", truncate(&e.name, name_w))),
        Span::styled(action_text(e.action), action_style(e.action, theme)),
        Span::raw(format!(" {:.2} ", e.confidence)),
    ];
    if let Some([b, s, h]) = e.probabilities {
        spans.push(Span::styled("B", Style::default().fg(theme.up)));
        spans.push(Span::raw(bar(b, 3)));
        spans.push(Span::styled(" S", Style::default().fg(theme.down)));
        spans.push(Span::raw(bar(s, 3)));
        spans.push(Span::styled(" H", muted));
        spans.push(Span::raw(bar(h, 3)));
    } else if let Some([b, s, h]) = e.q_values {
        spans.push(Span::styled(format!("q {b:+.2} {s:+.2} {h:+.2}"), muted));
    }
    if let Some(w) = e.weight {
        spans.push(Span::styled(format!("  w{w:.2}"), muted));
    }
    if let Some(ms) = e.latency_ms {
        spans.push(Span::styled(format!(" {ms:.1}ms"), muted));
    }
    if let Some(why) = &e.flagged {
        spans.push(Span::styled(
            format!(" ⚠ {why}"),
            Style::default().fg(theme.warning),
        ));
    }
    Line::from(spans)
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The live parameters on one line; the selected one is highlighted.
pub fn params_line(tunables: &[Tunable], selected: usize, theme: &Theme) -> Line<'static> {
    let mut spans = Vec::with_capacity(tunables.len() * 2);
    for (i, t) in tunables.iter().enumerate() {
        let text = format!("{} {}", t.label, t.display());
        if i == selected.min(tunables.len().saturating_sub(1)) {
            spans.push(Span::styled(
                format!("[{text}]"),
                Style::default()
                    .fg(theme.background)
                    .bg(theme.accent)
                    .add_modifier(Modifier::BOLD),
            ));
        } else {
            spans.push(Span::raw(format!(" {text} ")));
        }
        spans.push(Span::raw(" "));
    }
    Line::from(spans)
}

/// Draws the models pane; `None` means no inference process publishes.
pub fn render(
    frame: &mut Frame,
    area: Rect,
    models: Option<&ModelsView>,
    tunables: &[Tunable],
    selected: usize,
    theme: &Theme,
    focused: bool,
) {
    let muted = Style::default().fg(theme.muted);
    let mut lines: Vec<Line> = Vec::new();
    match models {
        None => {
            lines.push(Line::from("no model loaded"));
            lines.push(Line::from(Span::styled("inference: not running", muted)));
            lines.push(Line::from(Span::styled("training: not running", muted)));
        }
        Some(v) => {
            let state = |on: bool| if on { "running" } else { "stopped" };
            let mut head = format!(
                "inference {} · training {} · {}",
                state(v.inference),
                state(v.training),
                v.device
            );
            if v.training_steps > 0 {
                head.push_str(&format!(" · {} steps", v.training_steps));
            }
            if let Some(loss) = v.last_loss {
                head.push_str(&format!(" · loss {loss:.4}"));
            }
            if v.dqn_training_steps > 0 {
                head.push_str(&format!(" · dqn {} steps", v.dqn_training_steps));
                if let Some(loss) = v.dqn_last_loss {
                    head.push_str(&format!(" loss {loss:.4}"));
                }
            }
            lines.push(Line::from(Span::styled(head, muted)));
            if v.experts.is_empty() {
                lines.push(Line::from("no model output yet"));
            }
            let name_w = v
                .experts
                .iter()
                .map(|e| e.name.chars().count())
                .max()
                .unwrap_or(0)
                .min(14);
            lines.extend(v.experts.iter().map(|e| expert_line(e, name_w, theme)));
            let checkpoints: Vec<String> = v
                .experts
                .iter()
                .filter_map(|e| Some(format!("{} {}", e.name, e.checkpoint.as_ref()?)))
                .collect();
            if !checkpoints.is_empty() {
                lines.push(Line::from(Span::styled(
                    format!("checkpoints: {}", checkpoints.join(" · ")),
                    muted,
                )));
            }
            if let Some(d) = &v.decision {
                lines.push(Line::from(vec![
                    Span::raw(format!("▶ {} ", d.symbol)),
                    Span::styled(action_text(d.action), action_style(d.action, theme)),
                    Span::raw(format!(" {:.2} ", d.confidence)),
                    Span::styled(format!("{} · {}", d.reason, utc_hms(d.time_ms)), muted),
                ]));
            }
            if !v.accuracy.is_empty() {
                let mut spans = vec![Span::styled("acc ", muted)];
                for (name, hist) in &v.accuracy {
                    let last = hist.last().copied().unwrap_or(0.0);
                    spans.push(Span::raw(format!(
                        "{} {} {:.0}%  ",
                        truncate(name, 6),
                        sparkline(hist, 10),
                        last * 100.0
                    )));
                }
                lines.push(Line::from(spans));
            }
        }
    }
    if !tunables.is_empty() {
        lines.push(params_line(tunables, selected, theme));
    }
    frame.render_widget(
        Paragraph::new(lines).block(block("Models", theme, focused)),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_and_bar_scale_and_clip() {
        assert_eq!(sparkline(&[0.0, 0.5, 1.0, f64::NAN], 10), "▁▅█▁");
        assert_eq!(sparkline(&[0.5, 0.55, 0.6], 10), "▁▅█");
        assert_eq!(sparkline(&[0.5, 0.5], 10), "▁▁");
        assert_eq!(sparkline(&[0.0, 1.0, 1.0], 2), "▁▁");
        assert_eq!(sparkline(&[f64::NAN], 3), "▁");
        assert_eq!(bar(0.5, 4), "██░░");
        assert_eq!(bar(-1.0, 3), "░░░");
        assert_eq!(bar(7.0, 3), "███");
    }

    #[test]
    fn online_dqn_training_shows_on_the_head_line_once_it_learned() {
        let theme = Theme::load("dark", None, true).unwrap();
        let head = |v: &ModelsView| {
            let mut term =
                ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 12)).unwrap();
            term.draw(|f| render(f, f.area(), Some(v), &[], 0, &theme, false))
                .unwrap();
            let buf = term.backend().buffer().clone();
            (0..120).map(|x| buf[(x, 1)].symbol()).collect::<String>()
        };
        let mut v = crate::tui::fixture::models();
        assert!(!head(&v).contains("dqn"));
        v.dqn_training_steps = 37;
        v.dqn_last_loss = Some(0.125);
        assert!(
            head(&v).contains("dqn 37 steps loss 0.1250"),
            "{}",
            head(&v)
        );
    }
}

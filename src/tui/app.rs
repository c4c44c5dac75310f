//! The desk: screen state, layout and the frame that composes every pane.
//!
//! Everything drawn comes from immutable inputs ([`MarketSnapshot`], log lines, [`DeskStatus`]);
//! nothing here touches live state, waits on a lock or does I/O. The layout is recomputed on
//! every frame, so resizes need no special handling.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::desk::DeskStatus;
use super::keys::{Action, KeyMap};
use super::panes::{self, block, utc_hms};
use super::theme::Theme;
use crate::logging::LogLine;
use crate::market::snapshot::MarketSnapshot;
use crate::market::types::Timeframe;

/// A focusable pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// Candlestick chart.
    Chart,
    /// COB heatmap.
    Heatmap,
    /// Order book.
    Book,
    /// Links, processes, memory.
    System,
    /// Models.
    Models,
    /// Positions and risk.
    Positions,
    /// Log tail.
    Logs,
}

impl Pane {
    /// Every pane, in focus order.
    pub const ALL: [Pane; 7] = [
        Pane::Chart,
        Pane::Heatmap,
        Pane::Book,
        Pane::System,
        Pane::Models,
        Pane::Positions,
        Pane::Logs,
    ];

    /// Tab label.
    pub const fn name(self) -> &'static str {
        match self {
            Pane::Chart => "Chart",
            Pane::Heatmap => "Heatmap",
            Pane::Book => "Book",
            Pane::System => "System",
            Pane::Models => "Models",
            Pane::Positions => "Positions",
            Pane::Logs => "Logs",
        }
    }

    fn step(self, by: isize) -> Self {
        let n = Self::ALL.len() as isize;
        let i = Self::ALL.iter().position(|p| *p == self).unwrap_or(0) as isize;
        Self::ALL[(i + by).rem_euclid(n) as usize]
    }
}

/// What the user has selected on the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiState {
    /// Index of the focused symbol.
    pub symbol: usize,
    /// Candle timeframe shown.
    pub timeframe: Timeframe,
    /// Focused pane (the one shown on small terminals).
    pub focus: Pane,
    /// Help overlay open.
    pub help: bool,
    /// Log lines scrolled back from the newest.
    pub log_scroll: usize,
    /// Minimum level shown in the log pane.
    pub log_level: tracing::Level,
}

impl Default for UiState {
    fn default() -> Self {
        Self {
            symbol: 0,
            timeframe: Timeframe::M1,
            focus: Pane::Chart,
            help: false,
            log_scroll: 0,
            log_level: tracing::Level::INFO,
        }
    }
}

impl UiState {
    /// Applies a screen-local action (feed control and quit are handled by the caller).
    pub fn apply(&mut self, action: Action, symbols: usize) {
        let n = symbols.max(1);
        match action {
            Action::NextSymbol => self.symbol = (self.symbol + 1) % n,
            Action::PrevSymbol => self.symbol = (self.symbol + n - 1) % n,
            Action::Timeframe1s => self.timeframe = Timeframe::S1,
            Action::Timeframe1m => self.timeframe = Timeframe::M1,
            Action::Timeframe1h => self.timeframe = Timeframe::H1,
            Action::Timeframe1d => self.timeframe = Timeframe::D1,
            Action::NextPane => self.focus = self.focus.step(1),
            Action::PrevPane => self.focus = self.focus.step(-1),
            Action::CycleLogLevel => {
                self.log_level = panes::logs::next_level(self.log_level);
                self.log_scroll = 0;
            }
            Action::ToggleHelp => self.help = !self.help,
            Action::LogUp => self.log_scroll = self.log_scroll.saturating_add(1),
            Action::LogDown => self.log_scroll = self.log_scroll.saturating_sub(1),
            Action::Quit | Action::ToggleFeed => {}
        }
    }
}

/// Everything one frame draws from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Market data.
    pub snap: &'a MarketSnapshot,
    /// Log tail, oldest first.
    pub logs: &'a [LogLine],
    /// Processes and memory.
    pub desk: &'a DeskStatus,
    /// Key map (footer hints and help).
    pub keys: &'a KeyMap,
}

/// True when the terminal is large enough to show every pane at once.
pub fn is_full_desk(area: Rect) -> bool {
    area.width >= 140 && area.height >= 40
}

/// Draws the whole desk.
pub fn render(frame: &mut Frame, input: Inputs<'_>, ui: &UiState, theme: &Theme) {
    let area = frame.area();
    frame.render_widget(
        Block::default().style(Style::default().bg(theme.background).fg(theme.foreground)),
        area,
    );
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(frame, header, input.snap, theme);
    if is_full_desk(area) {
        render_full(frame, body, input, ui, theme);
    } else {
        render_focused(frame, body, input, ui, theme);
    }
    render_footer(frame, footer, input.keys, theme);
    if ui.help {
        render_help(frame, area, input.keys, theme);
    }
}

fn render_pane(
    frame: &mut Frame,
    area: Rect,
    pane: Pane,
    input: Inputs<'_>,
    ui: &UiState,
    theme: &Theme,
) {
    let focused = ui.focus == pane;
    let snap = input.snap;
    let sym = snap
        .symbols
        .get(ui.symbol.min(snap.symbols.len().saturating_sub(1)));
    match (pane, sym) {
        (Pane::Chart, Some(s)) => {
            panes::chart::render(frame, area, s, ui.timeframe, theme, focused)
        }
        (Pane::Heatmap, Some(s)) => panes::heatmap::render(frame, area, s, theme, focused),
        (Pane::Book, Some(s)) => panes::market::render_book(frame, area, s, theme, focused),
        (Pane::Chart | Pane::Heatmap | Pane::Book, None) => {
            frame.render_widget(
                Paragraph::new("no symbols configured").block(block(pane.name(), theme, focused)),
                area,
            );
        }
        (Pane::System, _) => panes::system::render(frame, area, snap, input.desk, theme, focused),
        (Pane::Models, _) => {
            panes::models::render(frame, area, input.desk.models.as_ref(), theme, focused)
        }
        (Pane::Positions, _) => {
            panes::positions::render(frame, area, input.desk.trading.as_ref(), theme, focused)
        }
        (Pane::Logs, _) => panes::logs::render(
            frame,
            area,
            input.logs,
            ui.log_level,
            ui.log_scroll,
            theme,
            focused,
        ),
    }
}

/// Large terminals: chart and heatmap on the left, everything else on the right.
fn render_full(frame: &mut Frame, body: Rect, input: Inputs<'_>, ui: &UiState, theme: &Theme) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(body);
    let [chart, heat] =
        Layout::vertical([Constraint::Percentage(58), Constraint::Percentage(42)]).areas(left);
    render_pane(frame, chart, Pane::Chart, input, ui, theme);
    render_pane(frame, heat, Pane::Heatmap, input, ui, theme);
    let snap = input.snap;
    let [strip, book, system, procs, logs] = Layout::vertical([
        Constraint::Length(panes::market::strip_height(snap.symbols.len())),
        Constraint::Length(12),
        Constraint::Length(panes::system::wanted_height(snap)),
        Constraint::Length(5),
        Constraint::Min(4),
    ])
    .areas(right);
    panes::market::render_strip(frame, strip, snap, ui.symbol, theme);
    render_pane(frame, book, Pane::Book, input, ui, theme);
    render_pane(frame, system, Pane::System, input, ui, theme);
    let [models, positions] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(procs);
    render_pane(frame, models, Pane::Models, input, ui, theme);
    render_pane(frame, positions, Pane::Positions, input, ui, theme);
    render_pane(frame, logs, Pane::Logs, input, ui, theme);
}

/// Small terminals: the market strip, a tab bar, and the focused pane filling the rest.
fn render_focused(frame: &mut Frame, body: Rect, input: Inputs<'_>, ui: &UiState, theme: &Theme) {
    let snap = input.snap;
    let [strip, tabs, pane] = Layout::vertical([
        Constraint::Length(panes::market::strip_height(snap.symbols.len())),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(body);
    panes::market::render_strip(frame, strip, snap, ui.symbol, theme);
    let mut spans = Vec::with_capacity(Pane::ALL.len() * 2);
    for p in Pane::ALL {
        let style = if p == ui.focus {
            Style::default()
                .fg(theme.background)
                .bg(theme.accent)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default().fg(theme.muted)
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!(" {} ", p.name()), style));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), tabs);
    render_pane(frame, pane, ui.focus, input, ui, theme);
}

fn render_header(frame: &mut Frame, area: Rect, snap: &MarketSnapshot, theme: &Theme) {
    let (feed, color) = if snap.feed_running {
        ("RUNNING", theme.ok)
    } else {
        ("STOPPED", theme.warning)
    };
    let line = Line::from(vec![
        Span::styled(
            " mmtrader ",
            Style::default()
                .fg(theme.accent)
                .add_modifier(Modifier::BOLD),
        ),
        Span::styled(
            format!("│ source {} ", snap.source),
            Style::default().fg(theme.muted),
        ),
        Span::styled("│ feed ", Style::default().fg(theme.muted)),
        Span::styled(
            feed,
            Style::default().fg(color).add_modifier(Modifier::BOLD),
        ),
        Span::styled(
            format!(" │ {} UTC", utc_hms(snap.time_ms)),
            Style::default().fg(theme.muted),
        ),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn render_footer(frame: &mut Frame, area: Rect, keys: &KeyMap, theme: &Theme) {
    let tf: Vec<&str> = [
        Action::Timeframe1s,
        Action::Timeframe1m,
        Action::Timeframe1h,
        Action::Timeframe1d,
    ]
    .iter()
    .map(|a| keys.short_label(*a))
    .collect();
    let tf_keys = if tf == ["1", "2", "3", "4"] {
        "1-4".to_string()
    } else {
        tf.join("/")
    };
    let mut parts: Vec<String> = [
        (Action::Quit, "quit"),
        (Action::ToggleFeed, "feed"),
        (Action::NextSymbol, "symbol"),
    ]
    .iter()
    .map(|(a, what)| format!("{} {what}", keys.short_label(*a)))
    .collect();
    parts.push(format!("{tf_keys} timeframe"));
    parts.extend(
        [
            (Action::NextPane, "pane"),
            (Action::CycleLogLevel, "log level"),
            (Action::ToggleHelp, "help"),
        ]
        .iter()
        .map(|(a, what)| format!("{} {what}", keys.short_label(*a))),
    );
    frame.render_widget(
        Paragraph::new(Span::styled(
            format!(" {}", parts.join(" · ")),
            Style::default().fg(theme.muted),
        )),
        area,
    );
}

fn render_help(frame: &mut Frame, area: Rect, keys: &KeyMap, theme: &Theme) {
    let width = 64.min(area.width);
    let height = (keys.bindings().len() as u16 + 4).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = keys
        .bindings()
        .iter()
        .map(|b| {
            Line::from(vec![
                Span::styled(
                    format!(" {:<16}", b.label),
                    Style::default()
                        .fg(theme.accent)
                        .add_modifier(Modifier::BOLD),
                ),
                Span::raw(b.help),
            ])
        })
        .collect();
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(
                format!("Keys ({} closes)", keys.short_label(Action::ToggleHelp)),
                theme,
                false,
            ))
            .style(Style::default().bg(theme.background).fg(theme.foreground)),
        rect,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::snapshot::{BookStatus, SymbolView};
    use crate::tui::fixture;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    fn draw_with(snap: &MarketSnapshot, desk: &DeskStatus, ui: &UiState, w: u16, h: u16) -> Buffer {
        let theme = Theme::load("dark", None, true).unwrap();
        let logs = fixture::logs(40);
        let keys = KeyMap::default();
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        let input = Inputs {
            snap,
            logs: &logs,
            desk,
            keys: &keys,
        };
        term.draw(|f| render(f, input, ui, &theme)).unwrap();
        term.backend().buffer().clone()
    }

    fn text(buf: &Buffer) -> String {
        let a = buf.area;
        (0..a.height)
            .map(|y| {
                let mut line: String = (0..a.width).map(|x| buf[(x, y)].symbol()).collect();
                line.truncate(line.trim_end().len());
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn desk() -> DeskStatus {
        DeskStatus {
            rss_bytes: Some(48 * 1024 * 1024),
            ..DeskStatus::default()
        }
    }

    fn focused(pane: Pane, w: u16, h: u16) -> String {
        let ui = UiState {
            focus: pane,
            ..UiState::default()
        };
        text(&draw_with(&fixture::market(), &desk(), &ui, w, h))
    }

    #[test]
    fn chart_pane_80x24() {
        let s = focused(Pane::Chart, 80, 24);
        assert!(s.contains("Candles ETH/USDT 1m · 300 kept"), "{s}");
        assert!(s.contains("CNN predictions: not running"), "{s}");
        assert!(
            s.chars().any(|c| "█▀▄╽╿".contains(c)),
            "no candle bodies:\n{s}"
        );
        insta::assert_snapshot!(s);
    }

    #[test]
    fn chart_pane_shows_pivots_and_support_resistance() {
        let s = focused(Pane::Chart, 120, 40);
        assert!(s.contains(" S") && s.contains(" R"), "{s}");
        assert!(s.contains('┄'), "no support/resistance line:\n{s}");
        assert!(s.chars().any(|c| ('1'..='5').contains(&c)), "{s}");
        insta::assert_snapshot!(s);
    }

    #[test]
    fn heatmap_pane_100x30() {
        let s = focused(Pane::Heatmap, 100, 30);
        assert!(s.contains("COB heatmap ETH/USDT · 240 s"), "{s}");
        for needle in ["mid ", " 1s ", " 5s ", "15s ", "60s ", "buy/sell"] {
            assert!(s.contains(needle), "missing {needle:?}:\n{s}");
        }
        assert!(s.contains('─'), "no price line:\n{s}");
        insta::assert_snapshot!(s);
    }

    #[test]
    fn heatmap_cells_use_bid_and_ask_colours() {
        let ui = UiState {
            focus: Pane::Heatmap,
            ..UiState::default()
        };
        let buf = draw_with(&fixture::market(), &desk(), &ui, 100, 30);
        let theme = Theme::load("dark", None, true).unwrap();
        let (mut green, mut red) = (0, 0);
        for cell in buf.content() {
            if let ratatui::style::Color::Rgb(r, g, _) = cell.bg
                && cell.bg != theme.background
                && cell.bg != theme.highlight_bg
            {
                if g > r {
                    green += 1;
                } else if r > g {
                    red += 1;
                }
            }
        }
        assert!(green > 20 && red > 20, "bid cells {green}, ask cells {red}");
    }

    #[test]
    fn book_pane_100x30() {
        let s = focused(Pane::Book, 100, 30);
        assert!(s.contains("Book ETH/USDT · 60×60 levels"), "{s}");
        insta::assert_snapshot!(s);
    }

    #[test]
    fn system_pane_100x30() {
        let s = focused(Pane::System, 100, 30);
        for needle in [
            "exchange ws",
            "connected",
            "ETHUSDT book",
            "feed running",
            "inference not running",
            "training not running",
            "trading not running",
            "memory RSS 48.0 MiB",
        ] {
            assert!(s.contains(needle), "missing {needle:?}:\n{s}");
        }
        insta::assert_snapshot!(s);
    }

    #[test]
    fn models_and_positions_are_honest_when_nothing_runs() {
        let m = focused(Pane::Models, 80, 24);
        assert!(
            m.contains("no model loaded") && m.contains("inference: not running"),
            "{m}"
        );
        insta::assert_snapshot!("models_pane_80x24", m);
        let p = focused(Pane::Positions, 80, 24);
        assert!(p.contains("paper trading not running"), "{p}");
        assert!(p.contains("limits: position — · daily loss —"), "{p}");
        insta::assert_snapshot!("positions_pane_80x24", p);
    }

    #[test]
    fn positions_and_models_show_published_state() {
        use crate::market::types::{Price, Qty, Side};
        use crate::tui::desk::{ModelRow, ModelsView, PositionRow, RiskLimits, TradingView};
        let desk = DeskStatus {
            rss_bytes: None,
            models: Some(ModelsView {
                models: vec![ModelRow {
                    name: "cnn-pivots".into(),
                    checkpoint: "ckpt-0042".into(),
                    last_inference_ms: Some(fixture::NOW_MS),
                }],
                training: true,
            }),
            trading: Some(TradingView {
                mode: "paper".into(),
                positions: vec![PositionRow {
                    symbol: "ETHUSDT".into(),
                    side: Side::Sell,
                    qty: Qty::parse("0.5").unwrap(),
                    entry: Price::from_units(3001),
                }],
                limits: Some(RiskLimits {
                    max_position: Qty::from_units(2),
                    max_daily_loss: Price::from_units(150),
                }),
            }),
        };
        let snap = fixture::market();
        let ui = |focus| UiState {
            focus,
            ..UiState::default()
        };
        let m = text(&draw_with(&snap, &desk, &ui(Pane::Models), 80, 24));
        assert!(
            m.contains("cnn-pivots") && m.contains("last 22:13:20"),
            "{m}"
        );
        let p = text(&draw_with(&snap, &desk, &ui(Pane::Positions), 80, 24));
        assert!(p.contains("paper trading · 1 open"), "{p}");
        assert!(p.contains("short 0.5 @ 3001.00"), "{p}");
        assert!(p.contains("limits: position 2 · daily loss 150.00"), "{p}");
        let s = text(&draw_with(&snap, &desk, &ui(Pane::System), 100, 30));
        assert!(
            s.contains("inference running") && s.contains("training running"),
            "{s}"
        );
        assert!(s.contains("memory RSS unavailable"), "{s}");
    }

    #[test]
    fn logs_pane_filters_and_scrolls() {
        let mut ui = UiState {
            focus: Pane::Logs,
            ..UiState::default()
        };
        let snap = fixture::market();
        let s = text(&draw_with(&snap, &desk(), &ui, 80, 24));
        assert!(s.contains("Log ≥INFO · 32 lines"), "{s}");
        assert!(s.contains("event 39") && !s.contains("DEBUG"), "{s}");
        insta::assert_snapshot!("logs_pane_80x24", s);
        ui.apply(Action::CycleLogLevel, 2);
        assert_eq!(ui.log_level, tracing::Level::DEBUG);
        let s = text(&draw_with(&snap, &desk(), &ui, 80, 24));
        assert!(
            s.contains("Log ≥DEBUG · 40 lines") && s.contains("DEBUG"),
            "{s}"
        );
        ui.apply(Action::CycleLogLevel, 2);
        let s = text(&draw_with(&snap, &desk(), &ui, 80, 24));
        assert!(
            s.contains("Log ≥ERROR · 8 lines") && !s.contains("WARN "),
            "{s}"
        );
        ui.apply(Action::LogUp, 2);
        ui.apply(Action::LogUp, 2);
        let s = text(&draw_with(&snap, &desk(), &ui, 80, 24));
        assert!(
            s.contains("scrolled back 2") && !s.contains("event 39"),
            "{s}"
        );
    }

    #[test]
    fn full_desk_200x60_shows_every_pane() {
        let s = text(&draw_with(
            &fixture::market(),
            &desk(),
            &UiState::default(),
            200,
            60,
        ));
        for title in [
            "Candles ETH/USDT 1m",
            "COB heatmap ETH/USDT",
            "Market",
            "Book ETH/USDT",
            "System",
            "Models",
            "Positions",
            "Log ≥INFO",
        ] {
            assert!(s.contains(title), "missing {title:?}:\n{s}");
        }
        insta::assert_snapshot!(s);
    }

    #[test]
    fn help_overlay_lists_the_key_map() {
        let ui = UiState {
            help: true,
            ..UiState::default()
        };
        let s = text(&draw_with(&fixture::market(), &desk(), &ui, 80, 24));
        for b in KeyMap::default().bindings() {
            assert!(s.contains(b.help), "help lacks {:?}:\n{s}", b.help);
        }
        insta::assert_snapshot!(s);
    }

    #[test]
    fn empty_market_says_what_is_missing() {
        let mut snap = fixture::market();
        snap.feed_running = false;
        for s in &mut snap.symbols {
            *s = SymbolView {
                status: BookStatus::Idle,
                best_bid: None,
                best_ask: None,
                bids: vec![],
                asks: vec![],
                last_trade: None,
                candles: vec![],
                pivots: vec![],
                cob: None,
                heatmap: Default::default(),
                ..s.clone()
            };
        }
        let ui = |focus| UiState {
            focus,
            ..UiState::default()
        };
        let c = text(&draw_with(&snap, &desk(), &ui(Pane::Chart), 80, 24));
        assert!(
            c.contains("feed STOPPED") && c.contains("no candles yet"),
            "{c}"
        );
        assert!(c.contains("no data"), "{c}");
        let h = text(&draw_with(&snap, &desk(), &ui(Pane::Heatmap), 80, 24));
        assert!(h.contains("no COB yet"), "{h}");
        // Tiny terminals must not panic.
        for (w, h) in [(1, 1), (10, 5), (30, 8), (80, 3)] {
            draw_with(&snap, &desk(), &ui(Pane::Chart), w, h);
            draw_with(&fixture::market(), &desk(), &ui(Pane::Heatmap), w, h);
        }
    }

    #[test]
    fn actions_switch_symbol_timeframe_and_focus() {
        let mut ui = UiState::default();
        ui.apply(Action::NextSymbol, 2);
        assert_eq!(ui.symbol, 1);
        ui.apply(Action::NextSymbol, 2);
        assert_eq!(ui.symbol, 0);
        ui.apply(Action::PrevSymbol, 2);
        assert_eq!(ui.symbol, 1);
        ui.apply(Action::Timeframe1h, 2);
        assert_eq!(ui.timeframe, Timeframe::H1);
        ui.apply(Action::PrevPane, 2);
        assert_eq!(ui.focus, Pane::Logs);
        ui.apply(Action::NextPane, 2);
        ui.apply(Action::NextPane, 2);
        assert_eq!(ui.focus, Pane::Heatmap);
        ui.focus = Pane::Chart;
        let s = text(&draw_with(&fixture::market(), &desk(), &ui, 120, 36));
        assert!(s.contains("Candles BTC/USDT 1h"), "{s}");
        assert!(s.contains("▶BTC/USDT"), "{s}");
    }
}

//! The desk: screen state, layout and the frame that composes every pane.
//!
//! Everything drawn comes from immutable inputs ([`MarketSnapshot`], log lines, [`DeskStatus`]);
//! nothing here touches live state, waits on a lock or does I/O. The layout is recomputed on
//! every frame, so resizes need no special handling.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::desk::{DeskCommand, DeskStatus, Process, Tunable};
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
    /// Index of the selected live-tunable parameter.
    pub param: usize,
    /// A question waiting for y/n.
    pub confirm: Option<Confirmation>,
}

/// An action that must be confirmed before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// Paper → live.
    GoLive,
    /// Close every position.
    Flatten,
    /// Halt, cancel all, flatten.
    KillSwitch,
    /// Lift the halt in force.
    Resume,
}

impl Confirmation {
    /// The question shown.
    pub const fn question(self) -> &'static str {
        match self {
            Confirmation::GoLive => "Switch to LIVE trading with real orders?",
            Confirmation::Flatten => "Flatten every position at market?",
            Confirmation::KillSwitch => "Kill switch: halt, cancel working entries, flatten all?",
            Confirmation::Resume => "Lift the halt? Trading stays stopped until you start it.",
        }
    }

    fn command(self) -> DeskCommand {
        match self {
            Confirmation::GoLive => DeskCommand::GoLive,
            Confirmation::Flatten => DeskCommand::Flatten,
            Confirmation::KillSwitch => DeskCommand::KillSwitch,
            Confirmation::Resume => DeskCommand::Resume,
        }
    }
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
            param: 0,
            confirm: None,
        }
    }
}

impl UiState {
    /// Applies an action: screen-local ones change the state; the rest come back as the command
    /// for the processes behind the screen (quit is handled by the caller). A pending
    /// confirmation takes only yes or no; any other key cancels it, so a stray key can never
    /// confirm.
    pub fn apply(
        &mut self,
        action: Action,
        symbols: usize,
        tunables: &[Tunable],
    ) -> Option<DeskCommand> {
        if let Some(pending) = self.confirm.take() {
            return (action == Action::Confirm).then(|| pending.command());
        }
        // Esc (the cancel key) closes an open overlay instead of acting.
        if self.help && action == Action::Cancel {
            self.help = false;
            return None;
        }
        let n = symbols.max(1);
        let params = tunables.len();
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
            Action::ToggleFeed => return Some(DeskCommand::Toggle(Process::Feed)),
            Action::ToggleInference => return Some(DeskCommand::Toggle(Process::Inference)),
            Action::ToggleTraining => return Some(DeskCommand::Toggle(Process::Training)),
            Action::ToggleTrading => return Some(DeskCommand::Toggle(Process::Trading)),
            Action::NextParam if params > 0 => self.param = (self.param + 1) % params,
            Action::PrevParam if params > 0 => self.param = (self.param + params - 1) % params,
            Action::RaiseParam | Action::LowerParam if params > 0 => {
                let t = &tunables[self.param.min(params - 1)];
                let steps = if action == Action::RaiseParam { 1 } else { -1 };
                return Some(DeskCommand::SetParam {
                    key: t.key.clone(),
                    value: t.stepped(steps),
                });
            }
            Action::GoLive => self.confirm = Some(Confirmation::GoLive),
            Action::Flatten => self.confirm = Some(Confirmation::Flatten),
            Action::KillSwitch => self.confirm = Some(Confirmation::KillSwitch),
            Action::Resume => self.confirm = Some(Confirmation::Resume),
            Action::NextParam
            | Action::PrevParam
            | Action::RaiseParam
            | Action::LowerParam
            | Action::Confirm
            | Action::Cancel
            | Action::Quit => {}
        }
        None
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
    if let Some(c) = ui.confirm {
        render_confirm(frame, area, c, input.keys, theme);
    }
}

fn render_confirm(frame: &mut Frame, area: Rect, c: Confirmation, keys: &KeyMap, theme: &Theme) {
    let question = c.question();
    let answer = format!(
        "{} yes · {} no",
        keys.short_label(Action::Confirm),
        keys.short_label(Action::Cancel)
    );
    let width = (question.chars().count().max(answer.len()) as u16 + 4).min(area.width);
    let height = 4.min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(Span::styled(
                question,
                Style::default()
                    .fg(theme.warning)
                    .add_modifier(Modifier::BOLD),
            )),
            Line::from(answer),
        ])
        .block(block("Confirm", theme, true))
        .style(Style::default().bg(theme.background).fg(theme.foreground)),
        rect,
    );
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
            let overlay = match &input.desk.predictions {
                None => panes::chart::CnnOverlay::NotRunning,
                Some(all) => panes::chart::CnnOverlay::Pivots(
                    all.iter()
                        .find(|(sym, _)| *sym == s.exchange)
                        .map(|(_, p)| p.as_slice())
                        .unwrap_or(&[]),
                ),
            };
            panes::chart::render(frame, area, s, ui.timeframe, overlay, theme, focused)
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
        (Pane::Models, _) => panes::models::render(
            frame,
            area,
            input.desk.models.as_ref(),
            &input.desk.tunables,
            ui.param,
            theme,
            focused,
        ),
        (Pane::Positions, _) => panes::positions::render(
            frame,
            area,
            input.desk.trading.as_ref(),
            input.keys.short_label(Action::Resume),
            theme,
            focused,
        ),
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
    let [chart, lower] =
        Layout::vertical([Constraint::Percentage(58), Constraint::Percentage(42)]).areas(left);
    let [heat, book] =
        Layout::horizontal([Constraint::Percentage(66), Constraint::Percentage(34)]).areas(lower);
    render_pane(frame, chart, Pane::Chart, input, ui, theme);
    render_pane(frame, heat, Pane::Heatmap, input, ui, theme);
    render_pane(frame, book, Pane::Book, input, ui, theme);
    let snap = input.snap;
    let [strip, system, models, positions, logs] = Layout::vertical([
        Constraint::Length(panes::market::strip_height(snap.symbols.len())),
        Constraint::Length(panes::system::wanted_height(snap)),
        Constraint::Length(11),
        Constraint::Length(8),
        Constraint::Min(4),
    ])
    .areas(right);
    panes::market::render_strip(frame, strip, snap, ui.symbol, theme);
    render_pane(frame, system, Pane::System, input, ui, theme);
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
    let bindings = keys.bindings();
    let label_w = bindings
        .iter()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    // Two columns when one does not fit the height, so every key stays visible at 80×24.
    let columns: usize = if bindings.len() as u16 + 2 > area.height.saturating_sub(2) {
        2
    } else {
        1
    };
    let rows = bindings.len().div_ceil(columns);
    let width = if columns == 1 { 64 } else { 120 }.min(area.width);
    let height = (rows as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let col_w = usize::from(width.saturating_sub(2)) / columns;
    let key_style = Style::default()
        .fg(theme.accent)
        .add_modifier(Modifier::BOLD);
    let lines: Vec<Line> = (0..rows)
        .map(|r| {
            let mut spans = Vec::with_capacity(columns * 2);
            for c in 0..columns {
                let Some(b) = bindings.get(c * rows + r) else {
                    continue;
                };
                let text_w = col_w.saturating_sub(label_w + 1);
                let help: String = b.help.chars().take(text_w).collect();
                spans.push(Span::styled(format!(" {:<label_w$}", b.label), key_style));
                spans.push(Span::raw(format!("{help:<text_w$}")));
            }
            Line::from(spans)
        })
        .collect();
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
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
    fn header_shows_a_market_data_fallback() {
        // The text the feed publishes while on the secondary (app::pipeline).
        let mut snap = fixture::market();
        snap.source = "sim (down) → mexc fallback, 1 switches".into();
        let s = text(&draw_with(&snap, &desk(), &UiState::default(), 80, 24));
        let header = s.lines().next().unwrap_or_default();
        assert!(
            header.contains("source sim (down) → mexc fallback, 1 switches"),
            "{header}"
        );
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
        assert!(p.contains("trading not running"), "{p}");
        insta::assert_snapshot!("positions_pane_80x24", p);
    }

    #[test]
    fn positions_and_models_show_published_state() {
        let desk = DeskStatus {
            rss_bytes: None,
            models: Some(fixture::models()),
            trading: Some(fixture::trading()),
            tunables: fixture::tunables(),
            predictions: None,
        };
        let snap = fixture::market();
        let ui = |focus| UiState {
            focus,
            param: 1,
            ..UiState::default()
        };
        let m = text(&draw_with(&snap, &desk, &ui(Pane::Models), 80, 24));
        assert!(m.contains("cnn   BUY  0.72"), "{m}");
        assert!(m.contains("q +0.12 -0.03 +0.20"), "{m}");
        assert!(m.contains("late 1.4 s"), "{m}");
        assert!(m.contains("▶ ETHUSDT BUY  0.66"), "{m}");
        assert!(m.contains("[sell ≥ 0.65]"), "{m}");
        insta::assert_snapshot!("models_pane_running_80x24", m);
        let p = text(&draw_with(&snap, &desk, &ui(Pane::Positions), 80, 24));
        assert!(p.contains("PAPER running"), "{p}");
        assert!(p.contains("rPnL +12.34 uPnL +3.10"), "{p}");
        assert!(p.contains("long  0.5 @ 3012.40 u +3.10"), "{p}");
        assert!(p.contains("stop 2980.00 (127 bp) tp 3100.00"), "{p}");
        assert!(p.contains("position ETHUSDT"), "{p}");
        insta::assert_snapshot!("positions_pane_running_80x24", p);
        // A halt says why and how to lift it; a flatten says it is still working; a position
        // without a stop says so loudly.
        let mut halted = desk.clone();
        let t = halted.trading.as_mut().unwrap();
        t.halted = Some("kill switch".into());
        t.flatten = Some("flattening: 1 position(s) still open".into());
        t.positions[0].stop = None;
        let h = text(&draw_with(&snap, &halted, &ui(Pane::Positions), 80, 24));
        assert!(
            h.contains("HALTED: kill switch · R resumes (asks y/n)"),
            "{h}"
        );
        assert!(h.contains("FLATTENING: 1 POSITION(S) STILL OPEN"), "{h}");
        assert!(h.contains("NO STOP"), "{h}");
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
        ui.apply(Action::CycleLogLevel, 2, &[]);
        assert_eq!(ui.log_level, tracing::Level::DEBUG);
        let s = text(&draw_with(&snap, &desk(), &ui, 80, 24));
        assert!(
            s.contains("Log ≥DEBUG · 40 lines") && s.contains("DEBUG"),
            "{s}"
        );
        ui.apply(Action::CycleLogLevel, 2, &[]);
        let s = text(&draw_with(&snap, &desk(), &ui, 80, 24));
        assert!(
            s.contains("Log ≥ERROR · 8 lines") && !s.contains("WARN "),
            "{s}"
        );
        ui.apply(Action::LogUp, 2, &[]);
        ui.apply(Action::LogUp, 2, &[]);
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
        // Esc closes it again.
        let mut ui = ui;
        assert_eq!(ui.apply(Action::Cancel, 2, &[]), None);
        assert!(!ui.help);
        assert_eq!(
            KeyMap::default().action_for(crossterm::event::KeyEvent::from(
                crossterm::event::KeyCode::Esc
            )),
            Some(Action::Cancel)
        );
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
                instrument: None,
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
        ui.apply(Action::NextSymbol, 2, &[]);
        assert_eq!(ui.symbol, 1);
        ui.apply(Action::NextSymbol, 2, &[]);
        assert_eq!(ui.symbol, 0);
        ui.apply(Action::PrevSymbol, 2, &[]);
        assert_eq!(ui.symbol, 1);
        ui.apply(Action::Timeframe1h, 2, &[]);
        assert_eq!(ui.timeframe, Timeframe::H1);
        ui.apply(Action::PrevPane, 2, &[]);
        assert_eq!(ui.focus, Pane::Logs);
        ui.apply(Action::NextPane, 2, &[]);
        ui.apply(Action::NextPane, 2, &[]);
        assert_eq!(ui.focus, Pane::Heatmap);
        ui.focus = Pane::Chart;
        let s = text(&draw_with(&fixture::market(), &desk(), &ui, 120, 36));
        assert!(s.contains("Candles BTC/USDT 1h"), "{s}");
        assert!(s.contains("▶BTC/USDT"), "{s}");
    }

    #[test]
    fn cnn_predictions_draw_as_lines_from_the_last_pivot() {
        let snap = fixture::market();
        let ui = UiState::default();
        let plain = text(&draw_with(&snap, &desk(), &ui, 120, 36));
        assert!(plain.contains("CNN predictions: not running"), "{plain}");
        assert!(!plain.contains('◆'));
        let desk = DeskStatus {
            predictions: Some(fixture::predictions(&snap)),
            ..desk()
        };
        let s = text(&draw_with(&snap, &desk, &ui, 120, 36));
        assert!(s.contains("CNN next L1 high"), "{s}");
        assert_eq!(s.matches('◆').count(), 2, "{s}");
        assert!(s.contains('·'), "{s}");
        assert!(s.contains("P2 "), "{s}");
        insta::assert_snapshot!("chart_with_cnn_predictions_120x36", s);
        // Another timeframe has no prediction: said so, nothing drawn.
        let ui = UiState {
            timeframe: Timeframe::H1,
            ..UiState::default()
        };
        let s = text(&draw_with(&snap, &desk, &ui, 120, 36));
        assert!(s.contains("CNN: no 1h prediction yet"), "{s}");
        assert!(!s.contains('◆'));
    }

    #[test]
    fn processes_params_and_confirmations_become_commands() {
        let tunables = fixture::tunables();
        let mut ui = UiState::default();
        assert_eq!(
            ui.apply(Action::ToggleInference, 2, &tunables),
            Some(DeskCommand::Toggle(Process::Inference))
        );
        assert_eq!(
            ui.apply(Action::RaiseParam, 2, &tunables),
            Some(DeskCommand::SetParam {
                key: tunables[0].key.clone(),
                value: tunables[0].stepped(1)
            })
        );
        assert_eq!(ui.apply(Action::NextParam, 2, &tunables), None);
        assert_eq!(ui.param, 1);
        assert_eq!(
            ui.apply(Action::LowerParam, 2, &tunables),
            Some(DeskCommand::SetParam {
                key: tunables[1].key.clone(),
                value: tunables[1].stepped(-1)
            })
        );
        // Without parameters the keys do nothing.
        assert_eq!(ui.apply(Action::RaiseParam, 2, &[]), None);

        // Flatten needs a yes; a stray key cancels instead of confirming.
        assert_eq!(ui.apply(Action::Flatten, 2, &tunables), None);
        assert_eq!(ui.confirm, Some(Confirmation::Flatten));
        let s = text(&draw_with(&fixture::market(), &desk(), &ui, 80, 24));
        assert!(s.contains("Flatten every position at market?"), "{s}");
        assert_eq!(ui.apply(Action::NextSymbol, 2, &tunables), None);
        assert_eq!(ui.confirm, None);
        assert_eq!(ui.symbol, 0, "the cancelling key must not act");
        ui.apply(Action::GoLive, 2, &tunables);
        assert_eq!(ui.apply(Action::Cancel, 2, &tunables), None);
        assert_eq!(ui.confirm, None);
        ui.apply(Action::KillSwitch, 2, &tunables);
        assert_eq!(
            ui.apply(Action::Confirm, 2, &tunables),
            Some(DeskCommand::KillSwitch)
        );
        assert_eq!(ui.apply(Action::Confirm, 2, &tunables), None);
        // Lifting a halt asks first too.
        assert_eq!(ui.apply(Action::Resume, 2, &tunables), None);
        let s = text(&draw_with(&fixture::market(), &desk(), &ui, 80, 24));
        assert!(s.contains("Lift the halt?"), "{s}");
        assert_eq!(
            ui.apply(Action::Confirm, 2, &tunables),
            Some(DeskCommand::Resume)
        );
    }
}

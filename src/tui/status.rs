//! The status screen: prices and books per symbol, recent candles, feed health and the log.
//!
//! Everything drawn comes from one immutable [`MarketSnapshot`]; nothing here touches live state.

use chrono_free::utc_hms;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};

use super::keys::{Action, KEYMAP};
use super::theme::Theme;
use crate::feeds::health::{LinkState, StreamHealth};
use crate::logging::LogLine;
use crate::market::snapshot::{BookStatus, MarketSnapshot, SymbolView};
use crate::market::types::{Level, Timeframe};

/// What the user has selected on the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiState {
    /// Index of the focused symbol.
    pub symbol: usize,
    /// Candle timeframe shown.
    pub timeframe: Timeframe,
    /// Help overlay open.
    pub help: bool,
    /// Log lines scrolled back from the newest.
    pub log_scroll: usize,
}

impl Default for UiState {
    fn default() -> Self {
        Self {
            symbol: 0,
            timeframe: Timeframe::M1,
            help: false,
            log_scroll: 0,
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
            Action::ToggleHelp => self.help = !self.help,
            Action::LogUp => self.log_scroll = self.log_scroll.saturating_add(1),
            Action::LogDown => self.log_scroll = self.log_scroll.saturating_sub(1),
            Action::Quit | Action::ToggleFeed => {}
        }
    }
}

/// Wall-clock formatting without a date-time dependency.
mod chrono_free {
    /// `HH:MM:SS` (UTC) of a ms timestamp.
    pub fn utc_hms(ms: i64) -> String {
        let s = ms.div_euclid(1000).rem_euclid(86_400);
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }
}

/// Draws the whole status screen.
pub fn render(
    frame: &mut Frame,
    snap: &MarketSnapshot,
    logs: &[LogLine],
    ui: &UiState,
    theme: &Theme,
) {
    let area = frame.area();
    frame.render_widget(
        Block::default().style(Style::default().bg(theme.background).fg(theme.foreground)),
        area,
    );
    let log_height = match area.height {
        h if h >= 50 => 12,
        h if h >= 32 => 8,
        _ => 5,
    };
    let rows = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(snap.symbols.len() as u16 + 3),
        Constraint::Min(6),
        Constraint::Length(snap.links.len() as u16 + snap.symbols.len() as u16 + 2),
        Constraint::Length(log_height),
        Constraint::Length(1),
    ])
    .split(area);
    render_header(frame, rows[0], snap, theme);
    render_prices(frame, rows[1], snap, ui, theme);
    let middle =
        Layout::horizontal([Constraint::Percentage(44), Constraint::Percentage(56)]).split(rows[2]);
    if let Some(sym) = snap.symbols.get(ui.symbol) {
        render_book(frame, middle[0], sym, theme);
        render_candles(frame, middle[1], sym, ui.timeframe, theme);
    }
    render_health(frame, rows[3], snap, theme);
    render_logs(frame, rows[4], logs, ui.log_scroll, theme);
    render_footer(frame, rows[5], theme);
    if ui.help {
        render_help(frame, area, theme);
    }
}

fn pane<'a>(title: impl Into<String>, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(Style::default().fg(theme.border))
        .title(Span::styled(
            format!(" {} ", title.into()),
            Style::default()
                .fg(theme.title)
                .add_modifier(Modifier::BOLD),
        ))
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

fn level_text(l: Option<Level>) -> String {
    match l {
        Some(l) => format!("{:.2} ({:.4})", l.price, l.qty),
        None => "—".into(),
    }
}

fn status_span(sym: &SymbolView, theme: &Theme) -> Span<'static> {
    match sym.status {
        BookStatus::Live => Span::styled("live", Style::default().fg(theme.ok)),
        BookStatus::Syncing => Span::styled("syncing", Style::default().fg(theme.warning)),
        BookStatus::Idle => Span::styled("no data", Style::default().fg(theme.muted)),
    }
}

fn render_prices(
    frame: &mut Frame,
    area: Rect,
    snap: &MarketSnapshot,
    ui: &UiState,
    theme: &Theme,
) {
    let rows = snap.symbols.iter().enumerate().map(|(i, s)| {
        let focus = if i == ui.symbol { "▶" } else { " " };
        let last = s
            .last_trade
            .as_ref()
            .map(|t| format!("{:.2}", t.price))
            .unwrap_or_else(|| "—".into());
        let spread = s
            .spread()
            .map(|p| format!("{p:.2}"))
            .unwrap_or_else(|| "—".into());
        let row = Row::new(vec![
            Cell::from(format!("{focus}{}", s.display)),
            Cell::from(Span::styled(
                level_text(s.best_bid),
                Style::default().fg(theme.bid),
            )),
            Cell::from(Span::styled(
                level_text(s.best_ask),
                Style::default().fg(theme.ask),
            )),
            Cell::from(spread),
            Cell::from(last),
            Cell::from(status_span(s, theme)),
        ]);
        if i == ui.symbol {
            row.style(Style::default().bg(theme.highlight_bg))
        } else {
            row
        }
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Min(18),
            Constraint::Min(18),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(8),
        ],
    )
    .header(
        Row::new(vec![
            "symbol",
            "bid (qty)",
            "ask (qty)",
            "spread",
            "last",
            "book",
        ])
        .style(Style::default().fg(theme.muted)),
    )
    .block(pane("Market", theme));
    frame.render_widget(table, area);
}

fn render_book(frame: &mut Frame, area: Rect, sym: &SymbolView, theme: &Theme) {
    let depth = area.height.saturating_sub(3) as usize;
    let rows = (0..depth).map(|i| {
        let bid = sym.bids.get(i);
        let ask = sym.asks.get(i);
        Row::new(vec![
            Cell::from(bid.map(|l| format!("{:.4}", l.qty)).unwrap_or_default()),
            Cell::from(Span::styled(
                bid.map(|l| format!("{:.2}", l.price)).unwrap_or_default(),
                Style::default().fg(theme.bid),
            )),
            Cell::from(Span::styled(
                ask.map(|l| format!("{:.2}", l.price)).unwrap_or_default(),
                Style::default().fg(theme.ask),
            )),
            Cell::from(ask.map(|l| format!("{:.4}", l.qty)).unwrap_or_default()),
        ])
    });
    let title = format!(
        "Book {} · {}×{} levels",
        sym.display, sym.bid_levels, sym.ask_levels
    );
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Fill(1),
    ];
    let table = Table::new(rows, widths)
        .header(
            Row::new(vec!["bid qty", "bid", "ask", "ask qty"])
                .style(Style::default().fg(theme.muted)),
        )
        .block(pane(title, theme));
    frame.render_widget(table, area);
}

fn render_candles(frame: &mut Frame, area: Rect, sym: &SymbolView, tf: Timeframe, theme: &Theme) {
    let candles = sym.candles(tf);
    let depth = area.height.saturating_sub(3) as usize;
    let start = candles.len().saturating_sub(depth);
    // Narrow terminals drop the open column first: close, high and low matter more.
    let with_open = area.width >= 56;
    let rows = candles[start..].iter().rev().map(|c| {
        let color = if c.close >= c.open {
            theme.up
        } else {
            theme.down
        };
        let mut cells = vec![Cell::from(utc_hms(c.open_time_ms))];
        if with_open {
            cells.push(Cell::from(format!("{:.2}", c.open)));
        }
        cells.extend([
            Cell::from(format!("{:.2}", c.high)),
            Cell::from(format!("{:.2}", c.low)),
            Cell::from(Span::styled(
                format!("{:.2}", c.close),
                Style::default().fg(color),
            )),
            Cell::from(format!("{:.3}", c.volume)),
        ]);
        Row::new(cells)
    });
    let title = format!("Candles {} {} · {} kept", sym.display, tf, candles.len());
    let mut header = vec!["time"];
    let mut widths = vec![Constraint::Length(8)];
    if with_open {
        header.push("open");
        widths.push(Constraint::Length(8));
    }
    header.extend(["high", "low", "close", "volume"]);
    widths.extend([
        Constraint::Min(8),
        Constraint::Min(8),
        Constraint::Min(8),
        Constraint::Min(7),
    ]);
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().fg(theme.muted)))
        .block(pane(title, theme));
    frame.render_widget(table, area);
}

/// Counts in at most 5 characters: exact below 10,000, then k and M.
fn compact(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

fn link_row(h: &StreamHealth, now_ms: i64, theme: &Theme) -> Row<'static> {
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
    Row::new(vec![
        Cell::from(h.name.clone()),
        Cell::from(Span::styled(state, Style::default().fg(color))),
        Cell::from(age),
        Cell::from(format!("{:.1}/s", h.rate_per_sec)),
        Cell::from(format!("conn {}", compact(h.connects))),
        Cell::from(format!("resync {}", compact(h.resyncs))),
        Cell::from(format!("err {}", compact(h.errors))),
    ])
}

fn render_health(frame: &mut Frame, area: Rect, snap: &MarketSnapshot, theme: &Theme) {
    let mut rows: Vec<Row> = snap
        .links
        .iter()
        .map(|h| link_row(h, snap.time_ms, theme))
        .collect();
    for s in &snap.symbols {
        rows.push(Row::new(vec![
            Cell::from(format!("{} book", s.exchange)),
            Cell::from(status_span(s, theme)),
            Cell::from(format!("trades {}", compact(s.trades))),
            Cell::from(format!("diffs {}", compact(s.book.applied))),
            Cell::from(format!("stale {}", compact(s.book.dropped))),
            Cell::from(format!("resync {}", compact(s.book.resyncs))),
            Cell::from(format!("gaps {}", compact(s.book.gaps))),
        ]));
    }
    let table = Table::new(
        rows,
        [
            Constraint::Length(13),
            Constraint::Length(10),
            Constraint::Length(11),
            Constraint::Length(11),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(7),
        ],
    )
    .block(pane("Feeds", theme));
    frame.render_widget(table, area);
}

fn render_logs(frame: &mut Frame, area: Rect, logs: &[LogLine], scroll: usize, theme: &Theme) {
    let height = area.height.saturating_sub(2) as usize;
    let end = logs.len().saturating_sub(scroll.min(logs.len()));
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = logs[start..end]
        .iter()
        .map(|l| {
            let color = match l.level {
                tracing::Level::ERROR => theme.error,
                tracing::Level::WARN => theme.warning,
                _ => theme.foreground,
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
    let title = if scroll > 0 {
        format!("Log (scrolled back {scroll})")
    } else {
        "Log".to_string()
    };
    frame.render_widget(Paragraph::new(lines).block(pane(title, theme)), area);
}

fn render_footer(frame: &mut Frame, area: Rect, theme: &Theme) {
    let hint = " q quit · f feed on/off · tab symbol · 1-4 timeframe · ↑↓ log · ? help";
    frame.render_widget(
        Paragraph::new(Span::styled(hint, Style::default().fg(theme.muted))),
        area,
    );
}

fn render_help(frame: &mut Frame, area: Rect, theme: &Theme) {
    let width = 52.min(area.width);
    let height = (KEYMAP.len() as u16 + 4).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = KEYMAP
        .iter()
        .map(|b| {
            Line::from(vec![
                Span::styled(
                    format!(" {:<10}", b.label),
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
            .block(pane("Keys (? closes)", theme))
            .style(Style::default().bg(theme.background).fg(theme.foreground)),
        rect,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::snapshot::BookCounters;
    use crate::market::types::{Candle, Price, Qty, Side, Trade};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn lvl(p: &str, q: &str) -> Level {
        Level {
            price: Price::parse(p).unwrap(),
            qty: Qty::parse(q).unwrap(),
        }
    }

    pub(crate) fn sample_snapshot() -> MarketSnapshot {
        let t0 = 1_700_000_000_000;
        let candles: Vec<Candle> = (0..5)
            .map(|i| Candle {
                open_time_ms: t0 + i * 60_000,
                open: Price::from_units(3000 + i),
                high: Price::from_units(3002 + i),
                low: Price::from_units(2999 + i),
                close: Price::from_units(3001 + i - 2 * (i % 2)),
                volume: Qty::parse("12.5").unwrap(),
                trades: 40,
            })
            .collect();
        let mut ws = StreamHealth::new("binance ws", 5_000);
        ws.state = LinkState::Connected;
        ws.connects = 1;
        ws.on_message(t0 + 300_000);
        let eth = SymbolView {
            display: "ETH/USDT".into(),
            exchange: "ETHUSDT".into(),
            status: BookStatus::Live,
            best_bid: Some(lvl("3004.99", "1.25")),
            best_ask: Some(lvl("3005.01", "0.5")),
            bids: vec![lvl("3004.99", "1.25"), lvl("3004.98", "2")],
            asks: vec![lvl("3005.01", "0.5"), lvl("3005.02", "3.1")],
            bid_levels: 812,
            ask_levels: 790,
            last_trade: Some(Trade {
                symbol: "ETHUSDT".into(),
                id: 7,
                time_ms: t0 + 299_000,
                price: Price::parse("3005.01").unwrap(),
                qty: Qty::parse("0.1").unwrap(),
                taker_side: Side::Buy,
            }),
            trades: 1234,
            book: BookCounters {
                applied: 5000,
                dropped: 2,
                gaps: 0,
                resyncs: 0,
            },
            candles: vec![(Timeframe::M1, candles)],
            cob: None,
        };
        let btc = SymbolView {
            display: "BTC/USDT".into(),
            exchange: "BTCUSDT".into(),
            status: BookStatus::Syncing,
            best_bid: None,
            best_ask: None,
            bids: vec![],
            asks: vec![],
            bid_levels: 0,
            ask_levels: 0,
            last_trade: None,
            trades: 0,
            book: BookCounters {
                resyncs: 1,
                gaps: 1,
                ..Default::default()
            },
            candles: vec![],
            cob: None,
        };
        MarketSnapshot {
            time_ms: t0 + 300_100,
            source: "sim 127.0.0.1:9443".into(),
            feed_running: true,
            links: vec![ws],
            symbols: vec![eth, btc],
        }
    }

    fn draw(ui: &UiState, w: u16, h: u16) -> String {
        let theme = Theme::load("dark", None, true).unwrap();
        let logs = vec![LogLine {
            time_ms: 1_700_000_300_000,
            level: tracing::Level::WARN,
            target: "mmtrader".into(),
            message: "BTCUSDT gap detected; resyncing".into(),
        }];
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| render(f, &sample_snapshot(), &logs, ui, &theme))
            .unwrap();
        format!("{}", term.backend())
    }

    #[test]
    fn status_screen_80x24() {
        insta::assert_snapshot!(draw(&UiState::default(), 80, 24));
    }

    #[test]
    fn status_screen_with_help_overlay() {
        let ui = UiState {
            help: true,
            ..Default::default()
        };
        let s = draw(&ui, 100, 30);
        for b in KEYMAP {
            assert!(s.contains(b.help), "help lacks {:?}", b.help);
        }
        insta::assert_snapshot!(s);
    }

    #[test]
    fn switching_symbol_and_timeframe() {
        let mut ui = UiState::default();
        ui.apply(Action::NextSymbol, 2);
        assert_eq!(ui.symbol, 1);
        ui.apply(Action::NextSymbol, 2);
        assert_eq!(ui.symbol, 0);
        ui.apply(Action::PrevSymbol, 2);
        assert_eq!(ui.symbol, 1);
        ui.apply(Action::Timeframe1h, 2);
        assert_eq!(ui.timeframe, Timeframe::H1);
        let s = draw(&ui, 120, 40);
        assert!(s.contains("Book BTC/USDT"));
        assert!(s.contains("Candles BTC/USDT 1h"));
    }
}

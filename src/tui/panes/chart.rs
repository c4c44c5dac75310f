//! Candlestick chart: one candle per column drawn with half-block characters (two price rows
//! per cell), volume bars below, Williams pivot markers, the newest support and resistance of
//! the highest pivot level that has both, and a price axis on the right.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};

use super::{block, put, put_str};
use crate::analysis::model_output::{PredictedPivot, SwingKind};
use crate::analysis::pivots::{LEVELS, PivotKind};
use crate::market::snapshot::{SeriesPivots, SymbolView};
use crate::market::types::{Candle, Price, Timeframe};
use crate::tui::theme::Theme;

/// Columns reserved for the price axis.
const AXIS: u16 = 11;

/// What covers one half of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// Nothing.
    Empty,
    /// The thin wick (high/low range outside the body).
    Wick,
    /// The candle body (open to close).
    Body,
}

/// The character for a cell whose upper and lower halves are covered as given.
pub fn half_glyph(upper: Half, lower: Half) -> Option<char> {
    use Half::*;
    Some(match (upper, lower) {
        (Empty, Empty) => return None,
        (Body, Body) => '█',
        (Body, Empty) => '▀',
        (Empty, Body) => '▄',
        (Wick, Wick) => '│',
        (Wick, Empty) => '╵',
        (Empty, Wick) => '╷',
        (Wick, Body) => '╽',
        (Body, Wick) => '╿',
    })
}

/// Maps prices to half-row indices (0 at the top) over `rows` cell rows.
#[derive(Debug, Clone, Copy)]
pub struct PriceScale {
    lo: f64,
    hi: f64,
    halves: i64,
}

impl PriceScale {
    /// A scale from `lo` to `hi` over `rows` cell rows; a flat range is widened by one tick
    /// so a constant price still draws (in the middle).
    pub fn new(lo: Price, hi: Price, rows: u16) -> Self {
        let (mut lo, mut hi) = (lo.to_f64(), hi.to_f64());
        if hi <= lo {
            lo -= 0.5;
            hi += 0.5;
        }
        Self {
            lo,
            hi,
            halves: i64::from(rows) * 2,
        }
    }

    /// Half-row of `p`, clamped to the scale.
    pub fn half(&self, p: Price) -> i64 {
        let f = (self.hi - p.to_f64()) / (self.hi - self.lo);
        ((f * (self.halves - 1) as f64).round() as i64).clamp(0, self.halves - 1)
    }

    /// True when `p` lies inside the scale's range.
    pub fn contains(&self, p: Price) -> bool {
        (self.lo..=self.hi).contains(&p.to_f64())
    }

    /// The price at the middle of cell row `row`.
    pub fn price_at_row(&self, row: u16) -> f64 {
        let h = f64::from(row) * 2.0 + 0.5;
        self.hi - h / (self.halves - 1).max(1) as f64 * (self.hi - self.lo)
    }
}

/// Coverage of half-row `h` by a candle.
fn coverage(c: &Candle, s: &PriceScale, h: i64) -> Half {
    let (top, bottom) = if c.close >= c.open {
        (c.close, c.open)
    } else {
        (c.open, c.close)
    };
    if (s.half(top)..=s.half(bottom)).contains(&h) {
        Half::Body
    } else if (s.half(c.high)..=s.half(c.low)).contains(&h) {
        Half::Wick
    } else {
        Half::Empty
    }
}

/// Eighth blocks for volume bars, 0 to 8 eighths.
const EIGHTHS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The level whose newest support and resistance are drawn: the highest with both kinds.
pub fn sr_level(p: &SeriesPivots) -> Option<u8> {
    (1..=LEVELS as u8)
        .rev()
        .find(|&l| p.latest(l, PivotKind::High).is_some() && p.latest(l, PivotKind::Low).is_some())
}

/// What the CNN contributes to the chart.
#[derive(Debug, Clone, Copy)]
pub enum CnnOverlay<'a> {
    /// The model runtime is not running.
    NotRunning,
    /// Its newest predicted pivots for the shown symbol (all timeframes; the chart picks its).
    Pivots(&'a [PredictedPivot]),
}

/// Draws the chart pane for `sym` at timeframe `tf`.
pub fn render(
    frame: &mut Frame,
    area: Rect,
    sym: &SymbolView,
    tf: Timeframe,
    cnn: CnnOverlay<'_>,
    theme: &Theme,
    focused: bool,
) {
    let candles = sym.candles(tf);
    let title = format!("Candles {} {} · {} kept", sym.display, tf, candles.len());
    let b = block(title, theme, focused);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    if inner.width < AXIS + 4 || inner.height < 4 {
        return;
    }
    let buf = frame.buffer_mut();
    let note_y = inner.bottom() - 1;
    let pivots = sym.pivots(tf);
    let sr = pivots.and_then(sr_level);
    let mut note = String::from("pivots L1-5");
    if let (Some(p), Some(l)) = (pivots, sr) {
        let s = p.latest(l, PivotKind::Low).map(|x| x.price);
        let r = p.latest(l, PivotKind::High).map(|x| x.price);
        if let (Some(s), Some(r)) = (s, r) {
            note.push_str(&format!(" · L{l} S {s:.2} R {r:.2}"));
        }
    }
    let predicted: Vec<&PredictedPivot> = match cnn {
        CnnOverlay::NotRunning => {
            note.push_str(" · CNN predictions: not running");
            Vec::new()
        }
        CnnOverlay::Pivots(all) => {
            let mut ps: Vec<&PredictedPivot> = all.iter().filter(|p| p.timeframe == tf).collect();
            ps.sort_by_key(|p| p.level);
            match ps.first() {
                None => note.push_str(&format!(" · CNN: no {tf} prediction yet")),
                Some(p) => note.push_str(&format!(
                    " · CNN next L{} {} {:.2}",
                    p.level,
                    match p.kind {
                        SwingKind::High => "high",
                        SwingKind::Low => "low",
                    },
                    p.price
                )),
            }
            ps
        }
    };
    put_str(
        buf,
        inner.x,
        note_y,
        inner.right(),
        &note,
        Style::default().fg(theme.muted),
    );
    if candles.is_empty() {
        put_str(
            buf,
            inner.x,
            inner.y,
            inner.right(),
            "no candles yet (waiting for history and trades)",
            Style::default().fg(theme.muted),
        );
        return;
    }
    let body_h = inner.height - 1;
    let vol_h: u16 = match body_h {
        h if h >= 20 => 4,
        h if h >= 12 => 2,
        h if h >= 6 => 1,
        _ => 0,
    };
    let price_h = body_h - vol_h;
    let plot_w = inner.width - AXIS;
    // Room on the right for predicted pivots ahead of the newest candle (at most a quarter).
    let newest_t = candles[candles.len() - 1].open_time_ms;
    let ahead = predicted
        .iter()
        .map(|p| (p.time_ms - newest_t).div_euclid(tf.millis()))
        .max()
        .unwrap_or(0)
        .clamp(0, i64::from(plot_w / 4)) as usize;
    let visible = &candles[candles.len().saturating_sub(plot_w as usize - ahead)..];
    let lo = visible.iter().map(|c| c.low).min().unwrap_or(Price::ZERO);
    let hi = visible.iter().map(|c| c.high).max().unwrap_or(Price::ZERO);
    let scale = PriceScale::new(lo, hi, price_h);
    let (top, left) = (inner.y, inner.x);

    // Support and resistance behind the candles.
    let mut axis_marks: Vec<(u16, String, ratatui::style::Color)> = Vec::new();
    if let (Some(p), Some(l)) = (pivots, sr) {
        for (kind, tag, color) in [
            (PivotKind::Low, 'S', theme.up),
            (PivotKind::High, 'R', theme.down),
        ] {
            if let Some(pv) = p.latest(l, kind).filter(|pv| scale.contains(pv.price)) {
                let row = (scale.half(pv.price) / 2) as u16;
                for x in left..left + plot_w {
                    put(buf, x, top + row, '┄', color);
                }
                axis_marks.push((row, format!("{tag}{l} {:.2}", pv.price), color));
            }
        }
    }

    for (i, c) in visible.iter().enumerate() {
        let x = left + i as u16;
        let color = if c.close >= c.open {
            theme.up
        } else {
            theme.down
        };
        let first = scale.half(c.high) / 2;
        let last = scale.half(c.low) / 2;
        for row in first..=last {
            let (u, d) = (
                coverage(c, &scale, row * 2),
                coverage(c, &scale, row * 2 + 1),
            );
            if let Some(g) = half_glyph(u, d) {
                put(buf, x, top + row as u16, g, color);
            }
        }
    }

    // Pivot markers: the level digit above a high and below a low; higher levels win.
    if let Some(p) = pivots {
        let first_t = visible[0].open_time_ms;
        for level in 1..=LEVELS as u8 {
            for pv in p.level(level).iter().filter(|pv| pv.time_ms >= first_t) {
                let Ok(i) = visible.binary_search_by_key(&pv.time_ms, |c| c.open_time_ms) else {
                    continue;
                };
                let edge = scale.half(pv.price) / 2;
                let row = match pv.kind {
                    PivotKind::High => edge - 1,
                    PivotKind::Low => edge + 1,
                };
                if (0..i64::from(price_h)).contains(&row) {
                    let color = match pv.kind {
                        PivotKind::High => theme.down,
                        PivotKind::Low => theme.up,
                    };
                    let digit = char::from(b'0' + level);
                    if let Some(cell) = buf.cell_mut((left + i as u16, top + row as u16)) {
                        cell.set_char(digit)
                            .set_style(Style::default().fg(color).add_modifier(Modifier::BOLD));
                    }
                }
            }
        }
    }

    // CNN predictions: a dotted line from the level's last confirmed pivot to the predicted
    // one, which may lie beyond the newest candle (clipped at the plot's right edge).
    if let Some(p) = pivots {
        let ms = tf.millis();
        let first_t = visible[0].open_time_ms;
        let col = |t: i64| (t - first_t).div_euclid(ms);
        for pred in &predicted {
            let Some(anchor) = p.level(pred.level).last() else {
                continue;
            };
            let (x0, y0) = (col(anchor.time_ms), scale.half(anchor.price) / 2);
            let (x1, y1) = (col(pred.time_ms), scale.half(pred.price) / 2);
            if x1 <= x0 {
                continue;
            }
            let color = match pred.kind {
                SwingKind::High => theme.down,
                SwingKind::Low => theme.up,
            };
            for x in x0.max(0)..=x1.min(i64::from(plot_w) - 1) {
                let y = y0 + (y1 - y0) * (x - x0) / (x1 - x0);
                let Some(cell) = buf.cell_mut((left + x as u16, top + y as u16)) else {
                    continue;
                };
                if x == x1 {
                    cell.set_char('◆')
                        .set_style(Style::default().fg(color).add_modifier(Modifier::BOLD));
                } else if cell.symbol() == " " || cell.symbol() == "┄" {
                    cell.set_char('·').set_style(Style::default().fg(color));
                }
            }
            if scale.contains(pred.price) {
                axis_marks.push((
                    (scale.half(pred.price) / 2) as u16,
                    format!("P{} {:.2}", pred.level, pred.price),
                    color,
                ));
            }
        }
    }

    // Volume bars in eighths of a cell.
    if vol_h > 0 {
        let max_v = visible.iter().map(|c| c.volume).max().unwrap_or_default();
        let base = top + price_h;
        if max_v.raw() > 0 {
            for (i, c) in visible.iter().enumerate() {
                let eighths = (c.volume.raw() as f64 / max_v.raw() as f64 * f64::from(vol_h) * 8.0)
                    .round() as i64;
                let color = if c.close >= c.open {
                    theme.up
                } else {
                    theme.down
                };
                for r in 0..vol_h {
                    let fill = (eighths - i64::from(vol_h - 1 - r) * 8).clamp(0, 8) as usize;
                    if fill > 0 {
                        put(buf, left + i as u16, base + r, EIGHTHS[fill], color);
                    }
                }
            }
        }
        put_str(
            buf,
            left + plot_w + 1,
            base + vol_h - 1,
            inner.right(),
            &format!("vol {:.0}", max_v),
            Style::default().fg(theme.muted),
        );
    }

    // Axis: range ends, the last close, then support/resistance labels on free rows.
    let ax = left + plot_w + 1;
    let muted = Style::default().fg(theme.muted);
    let last = &visible[visible.len() - 1];
    let last_row = (scale.half(last.close) / 2) as u16;
    let mut used = vec![false; price_h as usize];
    let mut label = |buf: &mut ratatui::buffer::Buffer, row: u16, text: &str, style: Style| {
        if let Some(u) = used.get_mut(row as usize).filter(|u| !**u) {
            *u = true;
            put_str(buf, ax, top + row, inner.right(), text, style);
        }
    };
    label(
        buf,
        last_row,
        &format!("{:.2}", last.close),
        Style::default()
            .fg(theme.accent)
            .add_modifier(Modifier::BOLD),
    );
    for (row, text, color) in &axis_marks {
        label(buf, *row, text, Style::default().fg(*color));
    }
    label(buf, 0, &format!("{hi:.2}"), muted);
    label(buf, price_h - 1, &format!("{lo:.2}"), muted);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_glyphs_compose_body_and_wick() {
        use Half::*;
        assert_eq!(half_glyph(Empty, Empty), None);
        assert_eq!(half_glyph(Body, Body), Some('█'));
        assert_eq!(half_glyph(Body, Empty), Some('▀'));
        assert_eq!(half_glyph(Empty, Body), Some('▄'));
        assert_eq!(half_glyph(Wick, Body), Some('╽'));
        assert_eq!(half_glyph(Body, Wick), Some('╿'));
        assert_eq!(half_glyph(Wick, Wick), Some('│'));
    }

    #[test]
    fn scale_maps_extremes_to_first_and_last_half_rows() {
        let s = PriceScale::new(Price::from_units(100), Price::from_units(200), 10);
        assert_eq!(s.half(Price::from_units(200)), 0);
        assert_eq!(s.half(Price::from_units(100)), 19);
        assert_eq!(s.half(Price::from_units(1000)), 0);
        assert_eq!(s.half(Price::from_units(-5)), 19);
        assert!(s.contains(Price::from_units(150)) && !s.contains(Price::from_units(201)));
        let flat = PriceScale::new(Price::from_units(7), Price::from_units(7), 4);
        assert_eq!(flat.half(Price::from_units(7)), 4);
    }

    #[test]
    fn a_candle_covers_body_then_wick() {
        let c = Candle {
            open_time_ms: 0,
            open: Price::from_units(140),
            close: Price::from_units(160),
            high: Price::from_units(200),
            low: Price::from_units(100),
            volume: Default::default(),
            trades: 1,
        };
        let s = PriceScale::new(Price::from_units(100), Price::from_units(200), 10);
        assert_eq!(coverage(&c, &s, 0), Half::Wick);
        assert_eq!(coverage(&c, &s, s.half(Price::from_units(150))), Half::Body);
        assert_eq!(coverage(&c, &s, 19), Half::Wick);
    }
}

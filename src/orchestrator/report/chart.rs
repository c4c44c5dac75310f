//! The equity chart of a backtest (or any strategy curve beside its buy-and-hold): a title,
//! a legend, the equity panel with a value scale and trade markers, the drawdown panel, and a
//! UTC date axis. Laid out once in pixels, then drawn as PNG (with a built-in bitmap font, so
//! no font library is needed) or as SVG (for inlining into HTML): both show the same chart.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::font::{CAP, GLYPH, glyph};
use crate::market::types::Side;
use crate::orchestrator::backtest::{BacktestResult, Fold};
use crate::orchestrator::metrics::drawdowns;

/// Chart size, pixels.
pub const CHART_SIZE: (u32, u32) = (1200, 720);

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("chart: {0}")]
pub struct ChartError(String);

/// A fill shown on the chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marker {
    /// Fill time, ms.
    pub time_ms: i64,
    /// Buy (▲) or sell (▼).
    pub side: Side,
}

/// What the chart shows.
#[derive(Debug, Clone, PartialEq)]
pub struct EquityChart {
    /// Title line.
    pub title: String,
    /// Equity before the first point (the drawdown starts from it).
    pub start_equity: f64,
    /// Strategy equity after each step, `(ms, quote)`.
    pub strategy: Vec<(i64, f64)>,
    /// Buy-and-hold equity at the same steps.
    pub benchmark: Vec<(i64, f64)>,
    /// Fills to mark on the strategy curve.
    pub markers: Vec<Marker>,
    /// Times of dashed vertical dividers (the start of each walk-forward test window).
    pub dividers: Vec<i64>,
}

/// The chart of a backtest result (a walk-forward's chained result with its folds marked).
pub fn equity_chart(title: &str, r: &BacktestResult, folds: &[Fold]) -> EquityChart {
    EquityChart {
        title: title.to_string(),
        start_equity: r.start_equity,
        strategy: r.equity.clone(),
        benchmark: r.benchmark.clone(),
        markers: r
            .trades
            .iter()
            .map(|t| Marker {
                time_ms: t.time_ms,
                side: t.side,
            })
            .collect(),
        dividers: folds.iter().skip(1).map(|f| f.test.0).collect(),
    }
}

type Rgb = (u8, u8, u8);

const STRATEGY: Rgb = (30, 90, 200);
const BENCHMARK: Rgb = (120, 120, 120);
const DRAWDOWN: Rgb = (210, 50, 50);
const BUY: Rgb = (20, 150, 60);
const SELL: Rgb = (200, 40, 40);
const GRID: Rgb = (225, 225, 225);
const AXIS: Rgb = (90, 90, 90);
const TEXT: Rgb = (30, 30, 30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Start,
    Middle,
    End,
}

/// One drawing instruction, in pixels.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Line {
        pts: Vec<(f64, f64)>,
        color: Rgb,
        width: u32,
        dashed: bool,
    },
    Area {
        pts: Vec<(f64, f64)>,
        color: Rgb,
        opacity: f64,
    },
    Rect {
        x0: f64,
        y0: f64,
        x1: f64,
        y1: f64,
        fill: Option<Rgb>,
        stroke: Option<Rgb>,
    },
    Text {
        x: f64,
        y: f64,
        text: String,
        /// Pixel scale of the bitmap font (a capital is `CAP × scale` tall).
        scale: u32,
        color: Rgb,
        anchor: Anchor,
    },
    Triangle {
        x: f64,
        y: f64,
        up: bool,
        size: f64,
        color: Rgb,
    },
}

/// Width of `text` in pixels at `scale` in the bitmap font.
fn text_width(text: &str, scale: u32) -> f64 {
    (text.chars().count() as u32 * (GLYPH.0 + 1) * scale) as f64
}

/// Round tick values covering `[lo, hi]`, at most about `max` of them.
fn nice_ticks(lo: f64, hi: f64, max: usize) -> (Vec<f64>, f64) {
    let span = (hi - lo).abs().max(f64::EPSILON);
    let raw = span / max.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    (out, step)
}

/// `v` with thousands separators and as many decimals as `step` needs.
fn value_label(v: f64, step: f64) -> String {
    // As many decimals as the step has: 0.05 → 2, 2.5 → 1, 200 → 0.
    let decimals = (0..8)
        .find(|d| {
            let scaled = step * 10f64.powi(*d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(8) as usize;
    let text = format!("{:.*}", decimals, v.abs());
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), ""), |(a, b)| (a, b));
    let mut grouped = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    let sign = if v < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// Days since the epoch → (year, month, day), proleptic Gregorian (Hinnant).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since the epoch.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a time in ms since the epoch (seconds shown; the sub-second
/// part only when there is one).
pub fn iso_utc(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil(days);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1_000 % 60,
        rem % 1_000,
    );
    if milli == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
    }
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// A step of the time axis: fixed milliseconds, or whole calendar months.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TimeStep {
    Ms(i64),
    Months(u32),
}

/// Date-axis ticks over `[t0, t1]` with at most `max` labels, and their labels (UTC): dates
/// for steps of a day or more, `MM-DD HH:MM` for shorter ones, `HH:MM:SS` under a minute.
fn time_ticks(t0: i64, t1: i64, max: usize) -> Vec<(i64, String)> {
    let steps = [
        TimeStep::Ms(1_000),
        TimeStep::Ms(5_000),
        TimeStep::Ms(15_000),
        TimeStep::Ms(30_000),
        TimeStep::Ms(MINUTE),
        TimeStep::Ms(5 * MINUTE),
        TimeStep::Ms(15 * MINUTE),
        TimeStep::Ms(30 * MINUTE),
        TimeStep::Ms(HOUR),
        TimeStep::Ms(3 * HOUR),
        TimeStep::Ms(6 * HOUR),
        TimeStep::Ms(12 * HOUR),
        TimeStep::Ms(DAY),
        TimeStep::Ms(2 * DAY),
        TimeStep::Ms(7 * DAY),
        TimeStep::Ms(14 * DAY),
        TimeStep::Months(1),
        TimeStep::Months(2),
        TimeStep::Months(3),
        TimeStep::Months(6),
        TimeStep::Months(12),
        TimeStep::Months(24),
        TimeStep::Months(60),
    ];
    let span = (t1 - t0).max(1);
    let fits = |s: &TimeStep| match s {
        TimeStep::Ms(ms) => (span / ms) as usize <= max.saturating_sub(1).max(1),
        TimeStep::Months(k) => {
            (span / (30 * DAY * i64::from(*k))) as usize <= max.saturating_sub(1).max(1)
        }
    };
    let step = steps
        .iter()
        .copied()
        .find(fits)
        .unwrap_or(TimeStep::Months(120));
    let mut out = Vec::new();
    match step {
        TimeStep::Ms(ms) => {
            let mut t = t0.div_euclid(ms) * ms;
            if t < t0 {
                t += ms;
            }
            while t <= t1 {
                let iso = iso_utc(t);
                let label = if ms >= DAY {
                    iso[..10].to_string()
                } else if ms >= MINUTE {
                    format!("{} {}", &iso[5..10], &iso[11..16])
                } else {
                    iso[11..19].to_string()
                };
                out.push((t, label));
                t += ms;
            }
        }
        TimeStep::Months(k) => {
            let (mut y, mut m, _) = civil(t0.div_euclid(DAY));
            loop {
                let t = days_from_civil(y, m, 1) * DAY;
                if t > t1 {
                    break;
                }
                if t >= t0 && (m - 1) % k.min(12) == 0 && (k <= 12 || y % i64::from(k / 12) == 0) {
                    out.push((t, format!("{y:04}-{m:02}-01")));
                }
                m += 1;
                if m > 12 {
                    (y, m) = (y + 1, 1);
                }
            }
        }
    }
    out
}

/// `pts` (ascending in x) reduced to at most four points per pixel column: the first, the
/// lowest, the highest and the last, in their order, so the drawn shape is unchanged while
/// a long run (a week of seconds) stays a small SVG.
fn thin(pts: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(pts.len().min(8_192));
    let mut k = 0;
    while k < pts.len() {
        let col = pts[k].0.floor();
        let mut end = k;
        while end < pts.len() && pts[end].0.floor() == col {
            end += 1;
        }
        let group = &pts[k..end];
        let lo = (0..group.len()).min_by(|&a, &b| group[a].1.total_cmp(&group[b].1));
        let hi = (0..group.len()).max_by(|&a, &b| group[a].1.total_cmp(&group[b].1));
        let mut keep: Vec<usize> = [Some(0), lo, hi, Some(group.len() - 1)]
            .into_iter()
            .flatten()
            .collect();
        keep.sort_unstable();
        keep.dedup();
        out.extend(keep.into_iter().map(|i| group[i]));
        k = end;
    }
    out
}

/// The equity value at `t`: the last point at or before it (the first before any).
fn value_at(curve: &[(i64, f64)], t: i64) -> Option<f64> {
    let k = curve.partition_point(|p| p.0 <= t);
    curve.get(k.saturating_sub(1)).map(|p| p.1)
}

/// Lays the chart out in pixels.
fn layout(c: &EquityChart) -> Vec<Item> {
    let (w, h) = (CHART_SIZE.0 as f64, CHART_SIZE.1 as f64);
    let (left, right) = (110.0, w - 30.0);
    let (eq_top, eq_bottom) = (106.0, 470.0);
    let (dd_top, dd_bottom) = (512.0, 650.0);
    let mut items = vec![Item::Rect {
        x0: 0.0,
        y0: 0.0,
        x1: w,
        y1: h,
        fill: Some((255, 255, 255)),
        stroke: None,
    }];
    let text = |x: f64, y: f64, t: &str, scale: u32, anchor: Anchor| Item::Text {
        x,
        y,
        text: t.to_string(),
        scale,
        color: TEXT,
        anchor,
    };
    items.push(text(20.0, 14.0, &c.title, 3, Anchor::Start));
    // The legend under the title: a sample of each mark and its meaning.
    let mut lx = 20.0;
    let ly = 50.0;
    let mut legend_line =
        |items: &mut Vec<Item>, color: Rgb, width: u32, dashed: bool, label: &str| {
            items.push(Item::Line {
                pts: vec![(lx, ly + 7.0), (lx + 28.0, ly + 7.0)],
                color,
                width,
                dashed,
            });
            items.push(text(lx + 36.0, ly, label, 2, Anchor::Start));
            lx += 36.0 + text_width(label, 2) + 28.0;
        };
    legend_line(&mut items, STRATEGY, 3, false, "Strategy");
    legend_line(&mut items, BENCHMARK, 2, false, "Buy and hold");
    items.push(Item::Rect {
        x0: lx,
        y0: ly,
        x1: lx + 28.0,
        y1: ly + 14.0,
        fill: Some(DRAWDOWN),
        stroke: None,
    });
    items.push(text(lx + 36.0, ly, "Drawdown", 2, Anchor::Start));
    lx += 36.0 + text_width("Drawdown", 2) + 28.0;
    for (up, color, label) in [(true, BUY, "Buy fill"), (false, SELL, "Sell fill")] {
        items.push(Item::Triangle {
            x: lx + 8.0,
            y: ly + 7.0,
            up,
            size: 7.0,
            color,
        });
        items.push(text(lx + 22.0, ly, label, 2, Anchor::Start));
        lx += 22.0 + text_width(label, 2) + 28.0;
    }
    if !c.dividers.is_empty() {
        let mut l = lx;
        items.push(Item::Line {
            pts: vec![(l + 10.0, ly - 2.0), (l + 10.0, ly + 16.0)],
            color: AXIS,
            width: 1,
            dashed: true,
        });
        l += 24.0;
        items.push(text(l, ly, "Fold start", 2, Anchor::Start));
    }
    let frame = |y0: f64, y1: f64| Item::Rect {
        x0: left,
        y0,
        x1: right,
        y1,
        fill: None,
        stroke: Some(AXIS),
    };
    if c.strategy.is_empty() {
        items.push(frame(eq_top, eq_bottom));
        items.push(frame(dd_top, dd_bottom));
        items.push(text(
            (left + right) / 2.0,
            (eq_top + eq_bottom) / 2.0,
            "no steps",
            2,
            Anchor::Middle,
        ));
        return items;
    }
    let t0 = c.strategy[0].0;
    let t1 = c.strategy[c.strategy.len() - 1].0.max(t0 + 1);
    let x_of = |t: i64| left + (t - t0) as f64 / (t1 - t0) as f64 * (right - left);
    // Value scale over both curves and the start.
    let values = c
        .strategy
        .iter()
        .chain(&c.benchmark)
        .map(|p| p.1)
        .chain([c.start_equity])
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if hi - lo > hi.abs() * 1e-9 {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    } else {
        (lo - 1.0, hi + 1.0)
    };
    let y_eq = |v: f64| eq_bottom - (v - lo) / (hi - lo) * (eq_bottom - eq_top);
    // Drawdowns of both curves, from the start equity.
    let with_start = |curve: &[(i64, f64)]| -> Vec<f64> {
        std::iter::once(c.start_equity)
            .chain(curve.iter().map(|p| p.1))
            .collect()
    };
    let dd = drawdowns(&with_start(&c.strategy));
    let dd_bh = drawdowns(&with_start(&c.benchmark));
    let worst = dd
        .iter()
        .chain(&dd_bh)
        .copied()
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.1;
    let y_dd = |d: f64| dd_top + d / worst * (dd_bottom - dd_top);
    // Grid and scales.
    let ticks = time_ticks(t0, t1, ((right - left) / 150.0) as usize);
    for (t, _) in &ticks {
        let x = x_of(*t);
        for (a, b) in [(eq_top, eq_bottom), (dd_top, dd_bottom)] {
            items.push(Item::Line {
                pts: vec![(x, a), (x, b)],
                color: GRID,
                width: 1,
                dashed: false,
            });
        }
    }
    let (vt, vstep) = nice_ticks(lo, hi, 7);
    for v in &vt {
        let y = y_eq(*v);
        items.push(Item::Line {
            pts: vec![(left, y), (right, y)],
            color: GRID,
            width: 1,
            dashed: false,
        });
        items.push(Item::Line {
            pts: vec![(left - 5.0, y), (left, y)],
            color: AXIS,
            width: 1,
            dashed: false,
        });
        items.push(text(
            left - 9.0,
            y - 7.0,
            &value_label(*v, vstep),
            2,
            Anchor::End,
        ));
    }
    let (dt, dstep) = nice_ticks(0.0, worst * 100.0, 4);
    for d in &dt {
        let y = y_dd(d / 100.0);
        items.push(Item::Line {
            pts: vec![(left, y), (right, y)],
            color: GRID,
            width: 1,
            dashed: false,
        });
        let label = if *d == 0.0 {
            "0%".to_string()
        } else {
            format!("-{}%", value_label(*d, dstep))
        };
        items.push(text(left - 9.0, y - 7.0, &label, 2, Anchor::End));
    }
    items.push(text(
        left,
        eq_top - 22.0,
        "Equity (quote)",
        2,
        Anchor::Start,
    ));
    items.push(text(
        left,
        dd_top - 22.0,
        "Drawdown from peak",
        2,
        Anchor::Start,
    ));
    for (t, label) in &ticks {
        let x = x_of(*t);
        items.push(Item::Line {
            pts: vec![(x, dd_bottom), (x, dd_bottom + 5.0)],
            color: AXIS,
            width: 1,
            dashed: false,
        });
        // Centred under its tick, but kept inside the picture.
        let half = text_width(label, 2) / 2.0;
        let (lx, anchor) = if x + half > w - 4.0 {
            (w - 4.0, Anchor::End)
        } else if x - half < 4.0 {
            (4.0, Anchor::Start)
        } else {
            (x, Anchor::Middle)
        };
        items.push(text(lx, dd_bottom + 10.0, label, 2, anchor));
    }
    let (d0, d1) = (iso_utc(t0), iso_utc(t1));
    let span = if d0[..10] == d1[..10] {
        d0[..10].to_string()
    } else {
        format!("{} to {}", &d0[..10], &d1[..10])
    };
    items.push(text(
        right,
        dd_bottom + 36.0,
        &format!("time (UTC), {span}"),
        2,
        Anchor::End,
    ));
    // The start equity as a reference line, then the dividers.
    items.push(Item::Line {
        pts: vec![(left, y_eq(c.start_equity)), (right, y_eq(c.start_equity))],
        color: (170, 170, 170),
        width: 1,
        dashed: true,
    });
    for &t in &c.dividers {
        let x = x_of(t);
        for (a, b) in [(eq_top, eq_bottom), (dd_top, dd_bottom)] {
            items.push(Item::Line {
                pts: vec![(x, a), (x, b)],
                color: AXIS,
                width: 1,
                dashed: true,
            });
        }
    }
    // Drawdown panel: the strategy's as an area, buy-and-hold's as a line.
    let mut area: Vec<(f64, f64)> = vec![(x_of(t0), y_dd(0.0))];
    area.extend(thin(
        c.strategy
            .iter()
            .zip(&dd[1..])
            .map(|(p, d)| (x_of(p.0), y_dd(*d)))
            .collect(),
    ));
    area.push((x_of(t1), y_dd(0.0)));
    items.push(Item::Area {
        pts: area,
        color: DRAWDOWN,
        opacity: 0.45,
    });
    items.push(Item::Line {
        pts: thin(
            c.benchmark
                .iter()
                .zip(&dd_bh[1..])
                .map(|(p, d)| (x_of(p.0), y_dd(*d)))
                .collect(),
        ),
        color: BENCHMARK,
        width: 1,
        dashed: false,
    });
    // Equity panel: buy-and-hold under the strategy, then the fills on the strategy curve.
    items.push(Item::Line {
        pts: thin(c.benchmark.iter().map(|p| (x_of(p.0), y_eq(p.1))).collect()),
        color: BENCHMARK,
        width: 2,
        dashed: false,
    });
    items.push(Item::Line {
        pts: thin(c.strategy.iter().map(|p| (x_of(p.0), y_eq(p.1))).collect()),
        color: STRATEGY,
        width: 2,
        dashed: false,
    });
    let size = if c.markers.len() > 300 { 4.0 } else { 6.0 };
    for m in &c.markers {
        let Some(v) = value_at(&c.strategy, m.time_ms) else {
            continue;
        };
        let x = x_of(m.time_ms.clamp(t0, t1));
        let up = m.side == Side::Buy;
        // Buys sit under the curve pointing up at it, sells above pointing down.
        let y = y_eq(v) + if up { size + 2.0 } else { -size - 2.0 };
        items.push(Item::Triangle {
            x,
            y,
            up,
            size,
            color: if up { BUY } else { SELL },
        });
    }
    items.push(frame(eq_top, eq_bottom));
    items.push(frame(dd_top, dd_bottom));
    items
}

fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn triangle(x: f64, y: f64, up: bool, size: f64) -> [(f64, f64); 3] {
    if up {
        [
            (x, y - size),
            (x - size, y + size * 0.8),
            (x + size, y + size * 0.8),
        ]
    } else {
        [
            (x, y + size),
            (x - size, y - size * 0.8),
            (x + size, y - size * 0.8),
        ]
    }
}

/// The chart as a standalone SVG document (inline it into HTML as is: no external assets).
pub fn equity_svg(c: &EquityChart) -> String {
    let (w, h) = CHART_SIZE;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" role=\"img\">\
         <title>{}</title>",
        xml(&c.title)
    );
    let pts = |p: &[(f64, f64)]| {
        p.iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for item in layout(c) {
        let _ = match item {
            Item::Line {
                pts: p,
                color,
                width,
                dashed,
            } => write!(
                out,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"{width}\"{} points=\"{}\"/>",
                hex(color),
                if dashed {
                    " stroke-dasharray=\"6,4\""
                } else {
                    ""
                },
                pts(&p)
            ),
            Item::Area {
                pts: p,
                color,
                opacity,
            } => write!(
                out,
                "<polygon fill=\"{}\" fill-opacity=\"{opacity}\" stroke=\"none\" points=\"{}\"/>",
                hex(color),
                pts(&p)
            ),
            Item::Rect {
                x0,
                y0,
                x1,
                y1,
                fill,
                stroke,
            } => write!(
                out,
                "<rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" \
                 stroke=\"{}\"/>",
                x1 - x0,
                y1 - y0,
                fill.map_or("none".into(), hex),
                stroke.map_or("none".into(), hex)
            ),
            Item::Text {
                x,
                y,
                text,
                scale,
                color,
                anchor,
            } => write!(
                out,
                "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"{:.1}\" fill=\"{}\" \
                 text-anchor=\"{}\">{}</text>",
                // The bitmap text is placed by its top; SVG text by its baseline.
                y + (CAP * scale) as f64,
                (CAP * scale) as f64 * 1.35,
                hex(color),
                match anchor {
                    Anchor::Start => "start",
                    Anchor::Middle => "middle",
                    Anchor::End => "end",
                },
                xml(&text)
            ),
            Item::Triangle {
                x,
                y,
                up,
                size,
                color,
            } => write!(
                out,
                "<polygon fill=\"{}\" points=\"{}\"/>",
                hex(color),
                pts(&triangle(x, y, up, size))
            ),
        };
    }
    out.push_str("</svg>");
    out
}

fn style(c: Rgb, alpha: f64, width: u32, filled: bool) -> ShapeStyle {
    ShapeStyle {
        color: RGBAColor(c.0, c.1, c.2, alpha),
        filled,
        stroke_width: width,
    }
}

fn px(p: (f64, f64)) -> (i32, i32) {
    (p.0.round() as i32, p.1.round() as i32)
}

/// A drawing error as text (the backend's error type is not nameable here).
fn e(err: impl std::fmt::Display) -> String {
    err.to_string()
}

/// Draws the items onto a bitmap.
fn raster<DB: DrawingBackend>(db: &mut DB, items: &[Item]) -> Result<(), String> {
    for item in items {
        match item {
            Item::Line {
                pts,
                color,
                width,
                dashed,
            } => {
                let s = style(*color, 1.0, *width, false);
                if *dashed {
                    for seg in pts.windows(2) {
                        let (a, b) = (seg[0], seg[1]);
                        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
                        let mut d = 0.0;
                        while d < len {
                            let f0 = d / len;
                            let f1 = ((d + 6.0) / len).min(1.0);
                            let p = |f: f64| (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f);
                            db.draw_line(px(p(f0)), px(p(f1)), &s).map_err(e)?;
                            d += 10.0;
                        }
                    }
                } else {
                    // A thick line as 1-pixel lines side by side: the backend's own thick
                    // path drops segments shorter than its width, and a long curve is made
                    // of such segments.
                    let thin_style = style(*color, 1.0, 1, false);
                    let w = *width as i32;
                    for seg in pts.windows(2) {
                        let (a, b) = (px(seg[0]), px(seg[1]));
                        for dx in -(w - 1) / 2..=w / 2 {
                            for dy in -(w - 1) / 2..=w / 2 {
                                db.draw_line(
                                    (a.0 + dx, a.1 + dy),
                                    (b.0 + dx, b.1 + dy),
                                    &thin_style,
                                )
                                .map_err(e)?;
                            }
                        }
                    }
                }
            }
            Item::Area {
                pts,
                color,
                opacity,
            } => {
                db.fill_polygon(
                    pts.iter().map(|p| px(*p)),
                    &style(*color, *opacity, 1, true),
                )
                .map_err(e)?;
            }
            Item::Rect {
                x0,
                y0,
                x1,
                y1,
                fill,
                stroke,
            } => {
                if let Some(f) = fill {
                    db.draw_rect(
                        px((*x0, *y0)),
                        px((*x1, *y1)),
                        &style(*f, 1.0, 1, true),
                        true,
                    )
                    .map_err(e)?;
                }
                if let Some(s) = stroke {
                    db.draw_rect(
                        px((*x0, *y0)),
                        px((*x1, *y1)),
                        &style(*s, 1.0, 1, false),
                        false,
                    )
                    .map_err(e)?;
                }
            }
            Item::Text {
                x,
                y,
                text,
                scale,
                color,
                anchor,
            } => {
                let width = text_width(text, *scale);
                let x0 = match anchor {
                    Anchor::Start => *x,
                    Anchor::Middle => x - width / 2.0,
                    Anchor::End => x - width,
                };
                let s = style(*color, 1.0, 1, true);
                let step = ((GLYPH.0 + 1) * scale) as f64;
                for (k, ch) in text.chars().enumerate() {
                    let gx = x0 + k as f64 * step;
                    for (row, bits) in glyph(ch).iter().enumerate() {
                        for col in 0..GLYPH.0 {
                            if bits >> (GLYPH.0 - 1 - col) & 1 == 1 {
                                let px0 = gx + (col * scale) as f64;
                                let py0 = y + (row as u32 * scale) as f64;
                                // The fill excludes its bottom-right corner.
                                let sc = *scale as f64;
                                db.draw_rect(px((px0, py0)), px((px0 + sc, py0 + sc)), &s, true)
                                    .map_err(e)?;
                            }
                        }
                    }
                }
            }
            Item::Triangle {
                x,
                y,
                up,
                size,
                color,
            } => {
                db.fill_polygon(
                    triangle(*x, *y, *up, *size).iter().map(|p| px(*p)),
                    &style(*color, 1.0, 1, true),
                )
                .map_err(e)?;
            }
        }
    }
    Ok(())
}

/// PNG bytes of the chart.
pub fn equity_png(c: &EquityChart) -> Result<Vec<u8>, ChartError> {
    let (w, h) = CHART_SIZE;
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let mut db = BitMapBackend::with_buffer(&mut rgb, (w, h));
        raster(&mut db, &layout(c)).map_err(ChartError)?;
        db.present().map_err(|e| ChartError(e.to_string()))?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| ChartError(e.to_string()))?;
        writer
            .write_image_data(&rgb)
            .map_err(|e| ChartError(e.to_string()))?;
    }
    Ok(png_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_are_utc() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(1_606_780_800_000), "2020-12-01T00:00:00Z");
        assert_eq!(iso_utc(1_614_556_799_500), "2021-02-28T23:59:59.500Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59.999Z");
        for days in [-1_000, 0, 11_016, 18_628, 20_000] {
            let (y, m, d) = civil(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn value_ticks_are_round_and_labelled() {
        let (t, step) = nice_ticks(9_430.0, 10_620.0, 7);
        assert_eq!(step, 200.0);
        assert_eq!(t.first(), Some(&9_600.0));
        assert_eq!(t.last(), Some(&10_600.0));
        assert_eq!(value_label(10_600.0, step), "10,600");
        assert_eq!(value_label(1_234_567.0, 1.0), "1,234,567");
        assert_eq!(value_label(0.25, 0.05), "0.25");
        assert_eq!(value_label(2.5, 2.5), "2.5");
        assert_eq!(value_label(-1_500.0, 500.0), "-1,500");
    }

    fn sample() -> EquityChart {
        let t0 = 1_609_459_200_000;
        let strategy: Vec<(i64, f64)> = (1..=500)
            .map(|k| (t0 + k * HOUR, 10_000.0 + 300.0 * ((k as f64) / 40.0).sin()))
            .collect();
        let benchmark = strategy
            .iter()
            .map(|&(t, v)| (t, v * 1.1 - 900.0))
            .collect();
        EquityChart {
            title: "Backtest X".into(),
            start_equity: 10_000.0,
            strategy,
            benchmark,
            markers: vec![
                Marker {
                    time_ms: t0 + 50 * HOUR + 50,
                    side: Side::Buy,
                },
                Marker {
                    time_ms: t0 + 90 * HOUR + 7,
                    side: Side::Sell,
                },
            ],
            dividers: vec![t0 + 250 * HOUR],
        }
    }

    #[test]
    fn the_svg_has_legend_scales_dates_markers_and_panels() {
        let svg = equity_svg(&sample());
        for label in [
            ">Backtest X<",
            ">Strategy<",
            ">Buy and hold<",
            ">Drawdown<",
            ">Buy fill<",
            ">Sell fill<",
            ">Fold start<",
            ">Equity (quote)<",
            ">Drawdown from peak<",
            ">10,000<",
            ">2021-01-07<",
            ">time (UTC), 2021-01-01 to 2021-01-21<",
        ] {
            assert!(svg.contains(label), "no {label} in the SVG");
        }
        // Two fill markers and the two legend triangles; one dashed divider per panel.
        assert_eq!(svg.matches("<polygon fill=\"#14963c\"").count(), 2);
        assert_eq!(svg.matches("<polygon fill=\"#c82828\"").count(), 2);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>"));
        let png = equity_png(&sample()).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        // An empty run still draws its frame.
        let empty = EquityChart {
            strategy: Vec::new(),
            benchmark: Vec::new(),
            markers: Vec::new(),
            ..sample()
        };
        assert!(equity_svg(&empty).contains(">no steps<"));
        equity_png(&empty).unwrap();
    }

    #[test]
    fn thinning_keeps_each_columns_first_extremes_and_last() {
        let pts = vec![
            (0.1, 5.0),
            (0.2, 1.0),
            (0.3, 9.0),
            (0.4, 4.0),
            (0.9, 3.0),
            (1.5, 2.0),
        ];
        assert_eq!(
            thin(pts),
            vec![(0.1, 5.0), (0.2, 1.0), (0.3, 9.0), (0.9, 3.0), (1.5, 2.0)]
        );
        let many: Vec<(f64, f64)> = (0..100_000)
            .map(|k| (k as f64 / 100.0, (k % 7) as f64))
            .collect();
        assert!(thin(many).len() <= 4 * 1_000);
    }

    #[test]
    fn date_ticks_fit_the_span() {
        // 5,482 hours from 2020-12-01: monthly dates.
        let t0 = 1_606_780_800_000;
        let ticks = time_ticks(t0, t0 + 5_482 * HOUR, 7);
        assert!(ticks.len() >= 3 && ticks.len() <= 7, "{ticks:?}");
        assert_eq!(ticks[0].1, "2021-01-01");
        assert!(
            ticks
                .iter()
                .all(|(t, l)| iso_utc(*t).starts_with(l.as_str()))
        );
        // Twenty hours of minutes: times of day with their dates.
        let short = time_ticks(t0 + 90 * MINUTE, t0 + 20 * HOUR, 7);
        assert_eq!(short[0], (t0 + 3 * HOUR, "12-01 03:00".to_string()));
        assert!(short.len() <= 7);
    }
}

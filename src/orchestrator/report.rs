//! Backtest reports: an equity-and-drawdown chart as PNG (drawn without fonts, so no system
//! font library is needed; the HTML carries the labels) and a self-contained HTML page with the
//! statistics against buy-and-hold, the chart inlined, and the trades.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::backtest::{BacktestResult, Fold};
use super::metrics::{Metrics, drawdowns};

/// Chart size, pixels.
pub const CHART_SIZE: (u32, u32) = (1200, 600);

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("chart: {0}")]
pub struct ChartError(String);

/// PNG bytes of the equity (top: strategy blue, buy-and-hold grey) and drawdown (bottom, red)
/// curves.
pub fn equity_png(r: &BacktestResult) -> Result<Vec<u8>, ChartError> {
    let (w, h) = CHART_SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw(&root, r).map_err(|e| ChartError(e.to_string()))?;
        root.present().map_err(|e| ChartError(e.to_string()))?;
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

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    r: &BacktestResult,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(CHART_SIZE.1 * 2 / 3);
    let n = r.equity.len().max(2);
    let x_max = (n - 1) as f64;
    let eq: Vec<f64> = r.equity.iter().map(|e| e.1).collect();
    let bh: Vec<f64> = r.benchmark.iter().map(|e| e.1).collect();
    let lo = eq.iter().chain(&bh).copied().fold(f64::MAX, f64::min);
    let hi = eq.iter().chain(&bh).copied().fold(f64::MIN, f64::max);
    let (lo, hi) = if lo < hi {
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let pad = (hi - lo) * 0.05;
    let mut chart = ChartBuilder::on(&top.margin(10, 10, 10, 10))
        .build_cartesian_2d(0f64..x_max, (lo - pad)..(hi + pad))?;
    chart.draw_series(LineSeries::new(
        bh.iter().enumerate().map(|(i, v)| (i as f64, *v)),
        RGBColor(150, 150, 150).stroke_width(1),
    ))?;
    chart.draw_series(LineSeries::new(
        eq.iter().enumerate().map(|(i, v)| (i as f64, *v)),
        RGBColor(30, 90, 200).stroke_width(2),
    ))?;
    let start = r.equity.first().map_or(0.0, |_| eq[0]);
    chart.draw_series(LineSeries::new(
        [(0.0, start), (x_max, start)],
        RGBColor(210, 210, 210),
    ))?;
    let dd = drawdowns(&eq);
    let worst = dd.iter().copied().fold(0.0, f64::max).max(1e-6);
    let mut chart = ChartBuilder::on(&bottom.margin(10, 10, 10, 10))
        .build_cartesian_2d(0f64..x_max, -worst * 1.05..0.0)?;
    chart.draw_series(AreaSeries::new(
        dd.iter().enumerate().map(|(i, v)| (i as f64, -v)),
        0.0,
        RGBColor(220, 60, 60).mix(0.4),
    ))?;
    Ok(())
}

/// Standard base64 of `bytes` (for inlining the PNG).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= c.len() {
                out.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn metrics_rows(out: &mut String, s: &Metrics, b: &Metrics) {
    let rows: [(&str, String, String); 9] = [
        ("PnL", format!("{:.2}", s.pnl), format!("{:.2}", b.pnl)),
        ("Return", pct(s.total_return), pct(b.total_return)),
        (
            "Sharpe (annualized)",
            format!("{:.3}", s.sharpe),
            format!("{:.3}", b.sharpe),
        ),
        (
            "Sortino (annualized)",
            format!("{:.3}", s.sortino),
            format!("{:.3}", b.sortino),
        ),
        ("Maximum drawdown", pct(s.max_drawdown), pct(b.max_drawdown)),
        (
            "Win rate",
            s.win_rate.map_or("–".into(), pct),
            b.win_rate.map_or("–".into(), pct),
        ),
        ("Exposure", pct(s.exposure), pct(b.exposure)),
        ("Fills", s.trades.to_string(), b.trades.to_string()),
        (
            "Round trips",
            s.round_trips.to_string(),
            b.round_trips.to_string(),
        ),
    ];
    for (name, a, c) in rows {
        let _ = writeln!(out, "<tr><th>{name}</th><td>{a}</td><td>{c}</td></tr>");
    }
}

/// Plain-text summary (the command prints it).
pub fn summary(r: &BacktestResult) -> String {
    let (s, b) = (&r.metrics, &r.benchmark_metrics);
    format!(
        "{} {} steps: PnL {:.2} ({}) vs buy-and-hold {:.2} ({}); Sharpe {:.2} vs {:.2}; \
         Sortino {:.2}; max drawdown {} vs {}; win rate {}; exposure {}; {} fills, {} round trips",
        r.symbol,
        r.decisions.len(),
        s.pnl,
        pct(s.total_return),
        b.pnl,
        pct(b.total_return),
        s.sharpe,
        b.sharpe,
        s.sortino,
        pct(s.max_drawdown),
        pct(b.max_drawdown),
        s.win_rate.map_or("–".into(), pct),
        pct(s.exposure),
        s.trades,
        s.round_trips
    )
}

/// The self-contained HTML report of one run (and its walk-forward folds, if any).
pub fn html(title: &str, r: &BacktestResult, png: &[u8], folds: &[Fold]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:right}}th{{background:#f4f4f4}}\
         .k{{display:inline-block;width:1em;height:.6em;margin:0 .3em}}</style></head><body>\
         <h1>{t}</h1>",
        t = esc(title)
    );
    let _ = writeln!(
        out,
        "<p>{sym}, {n} decisions every {iv} s, from {a} to {b} (ms since epoch); thresholds buy \
         {tb:.2} / sell {ts:.2}; final equity {fe}; expert outputs missing: {sk}.</p>",
        sym = esc(&r.symbol),
        n = r.decisions.len(),
        iv = r.interval_ms / 1000,
        a = r.first_ms,
        b = r.last_ms,
        tb = r.thresholds.buy,
        ts = r.thresholds.sell,
        fe = r.final_equity,
        sk = r.skipped_outputs,
    );
    if r.refusals > 0 {
        let _ = writeln!(
            out,
            "<p>The risk manager refused {} intents; first reasons:</p><ul>{}</ul>",
            r.refusals,
            r.refusal_reasons
                .iter()
                .map(|x| format!("<li>{}</li>", esc(x)))
                .collect::<String>()
        );
    }
    out.push_str("<table><tr><th></th><th>Strategy</th><th>Buy and hold</th></tr>");
    metrics_rows(&mut out, &r.metrics, &r.benchmark_metrics);
    out.push_str("</table>");
    let _ = writeln!(
        out,
        "<p><span class=\"k\" style=\"background:#1e5ac8\"></span>strategy equity \
         <span class=\"k\" style=\"background:#969696\"></span>buy and hold \
         <span class=\"k\" style=\"background:#dc3c3c\"></span>drawdown (bottom)</p>\
         <img alt=\"equity and drawdown\" src=\"data:image/png;base64,{}\">",
        base64(png)
    );
    if !r.accuracy.is_empty() {
        out.push_str("<h2>Expert accuracy (end)</h2><table>");
        for (m, a) in &r.accuracy {
            let _ = writeln!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(m), pct(*a));
        }
        out.push_str("</table>");
    }
    if !folds.is_empty() {
        out.push_str(
            "<h2>Walk-forward folds</h2><table><tr><th>train from</th><th>test from</th>\
             <th>test to</th><th>thresholds</th><th>train Sharpe</th><th>test return</th>\
             <th>test Sharpe</th><th>buy-and-hold return</th></tr>",
        );
        for f in folds {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.3}</td><td>{}</td>\
                 <td>{:.3}</td><td>{}</td></tr>",
                f.train.0,
                f.test.0,
                f.test.1,
                f.chosen.buy,
                f.train_metrics.sharpe,
                pct(f.test_result.metrics.total_return),
                f.test_result.metrics.sharpe,
                pct(f.test_result.benchmark_metrics.total_return)
            );
        }
        out.push_str("</table>");
    }
    let shown = r.trades.len().min(1_000);
    let _ = writeln!(
        out,
        "<h2>Fills ({} of {})</h2><table><tr><th>time</th><th>side</th><th>price</th>\
         <th>qty</th><th>fee</th><th>position</th><th>reason</th></tr>",
        shown,
        r.trades.len()
    );
    for t in &r.trades[..shown] {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{}</td>\
             <td style=\"text-align:left\">{}</td></tr>",
            t.time_ms,
            t.side,
            t.price,
            t.qty,
            t.fee,
            t.position,
            esc(&t.reason)
        );
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (i, o) in cases {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}

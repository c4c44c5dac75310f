//! Backtest reports a trader reads: the equity chart (PNG and SVG, see [`chart`]), a plain-text
//! summary and a self-contained HTML page (no network, no external assets) with every number
//! of the strategy beside buy-and-hold and staying flat, confidence intervals, halts, the
//! walk-forward folds with their dates, round trips and fills, all times in ISO-8601 UTC; and
//! `trades.csv`. Library functions, so every command that produces a [`BacktestResult`] can
//! write the same reports.

pub mod chart;
mod font;

use std::fmt::Write as _;

pub use chart::{
    CHART_SIZE, ChartError, EquityChart, Marker, equity_chart, equity_png, equity_svg, iso_utc,
};

use super::backtest::{BacktestResult, Fold, duration_text};
use super::metrics::{Ci95, Metrics};

/// Round trips under which a report warns that its statistics say little.
pub const FEW_ROUND_TRIPS: usize = 30;

/// Standard base64 of `bytes` (for inlining binary assets).
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

/// `s` escaped for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A fraction as a percentage with two decimals.
pub fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn signed_pct(x: f64) -> String {
    format!("{:+.2}%", x * 100.0)
}

fn ci_pct(ci: Option<&Ci95>) -> String {
    ci.map_or("n/a".into(), |c| {
        format!(
            "[{}, {}]",
            signed_pct(c.total_return.0),
            signed_pct(c.total_return.1)
        )
    })
}

fn ci_sharpe(ci: Option<&Ci95>) -> String {
    ci.map_or("n/a".into(), |c| {
        format!("[{:.2}, {:.2}]", c.sharpe.0, c.sharpe.1)
    })
}

/// The rows of the strategy-versus-baselines table: name, strategy, buy-and-hold, flat.
pub fn comparison_rows(r: &BacktestResult) -> Vec<(&'static str, [String; 3])> {
    let (s, b, f) = (&r.metrics, &r.benchmark_metrics, &r.flat_metrics);
    let each = |g: &dyn Fn(&Metrics) -> String| [g(s), g(b), g(f)];
    let flat_ci = "[+0.00%, +0.00%]".to_string();
    vec![
        ("Return", each(&|m| signed_pct(m.total_return))),
        (
            "  95% CI",
            [
                ci_pct(r.ci95.as_ref()),
                ci_pct(r.benchmark_ci95.as_ref()),
                flat_ci,
            ],
        ),
        ("Sharpe (annualized)", each(&|m| format!("{:.2}", m.sharpe))),
        (
            "  95% CI",
            [
                ci_sharpe(r.ci95.as_ref()),
                ci_sharpe(r.benchmark_ci95.as_ref()),
                "[0.00, 0.00]".into(),
            ],
        ),
        (
            "Sortino (annualized)",
            each(&|m| format!("{:.2}", m.sortino)),
        ),
        ("Max drawdown", each(&|m| pct(m.max_drawdown))),
        ("PnL (quote)", each(&|m| format!("{:.2}", m.pnl))),
        ("Exposure", each(&|m| pct(m.exposure))),
        ("Fills", each(&|m| m.trades.to_string())),
        (
            "Round trips",
            [s.round_trips.to_string(), "–".into(), "–".into()],
        ),
        (
            "Win rate",
            [s.win_rate.map_or("n/a".into(), pct), "–".into(), "–".into()],
        ),
    ]
}

/// The halts in one line: `2 (drawdown 1, daily loss 1), 14 entries refused while halted`.
pub fn halts_line(r: &BacktestResult) -> String {
    if r.halts.is_empty() {
        return "none".into();
    }
    let kinds: Vec<String> = r
        .halt_counts()
        .into_iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!(
        "{} ({}), {} entry intents refused while halted",
        r.halts.len(),
        kinds.join(", "),
        r.halted_intents()
    )
}

/// The warning a report gives when its round trips are too few to judge by, if they are.
pub fn few_trips_warning(r: &BacktestResult) -> Option<String> {
    (r.metrics.round_trips < FEW_ROUND_TRIPS).then(|| {
        format!(
            "warning: only {} round trips (fewer than {FEW_ROUND_TRIPS}): the win rate and the \
             Sharpe ratio say little; judge by the confidence intervals",
            r.metrics.round_trips
        )
    })
}

/// Plain-text summary: the period, the strategy beside buy-and-hold and flat (return, Sharpe,
/// max drawdown, with 95 % intervals), trades, costs and halts.
pub fn summary(r: &BacktestResult) -> String {
    let mut out = format!(
        "{} {} candles, {} steps from {} to {}\n",
        r.symbol,
        duration_text(r.interval_ms),
        r.decisions.len(),
        iso_utc(r.first_ms),
        iso_utc(r.last_ms)
    );
    let _ = writeln!(
        out,
        "{:<22}{:>22}{:>22}{:>18}",
        "", "strategy", "buy-and-hold", "flat"
    );
    for (name, [a, b, c]) in comparison_rows(r) {
        if matches!(
            name,
            "Sortino (annualized)" | "Exposure" | "Fills" | "Round trips" | "Win rate"
        ) {
            continue;
        }
        let _ = writeln!(out, "{name:<22}{a:>22}{b:>22}{c:>18}");
    }
    let m = &r.metrics;
    let _ = writeln!(
        out,
        "win rate {} of {} round trips; exposure {}; {} fills; costs per fill: taker fee {} \
         bps, slippage {} bps, impact {} bps",
        m.win_rate.map_or("n/a".into(), pct),
        m.round_trips,
        pct(m.exposure),
        m.trades,
        r.costs.taker_fee_bps,
        r.costs.slippage_bps,
        r.costs.impact_bps
    );
    let _ = writeln!(out, "halts: {}; policy: {}", halts_line(r), r.halt_policy);
    if let Some(w) = few_trips_warning(r) {
        let _ = writeln!(out, "{w}");
    }
    out.trim_end().to_string()
}

/// `trades.csv`: every fill with its UTC time, the position right after it and its round
/// trip.
pub fn trades_csv(r: &BacktestResult) -> String {
    let mut csv = String::from("time_ms,time_utc,side,price,qty,fee,position,trip,reason\n");
    for t in &r.trades {
        let _ = writeln!(
            csv,
            "{},{},{:?},{},{},{},{},{},\"{}\"",
            t.time_ms,
            iso_utc(t.time_ms),
            t.side,
            t.price,
            t.qty,
            t.fee,
            t.position,
            t.trip,
            t.reason.replace('"', "'")
        );
    }
    csv
}

/// What [`html`] puts on the page.
#[derive(Debug, Clone, Copy)]
pub struct HtmlReport<'a> {
    /// Page title.
    pub title: &'a str,
    /// The result shown: a backtest, or a walk-forward's chained out-of-sample result.
    pub result: &'a BacktestResult,
    /// The walk-forward folds behind `result` (empty for one run).
    pub folds: &'a [Fold],
    /// HTML sections placed right under the title (the caller escapes their text).
    pub sections: &'a [String],
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
    table{border-collapse:collapse;margin:1em 0}\
    td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}th{background:#f4f4f4}\
    td.l,th.l{text-align:left}.warn{color:#a00;font-weight:bold}svg{max-width:100%;height:auto}";

/// The self-contained HTML report.
pub fn html(rep: &HtmlReport<'_>) -> String {
    let r = rep.result;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>{STYLE}</style></head><body><h1>{t}</h1>",
        t = escape(rep.title)
    );
    for s in rep.sections {
        out.push_str(s);
    }
    let thresholds = if rep.folds.is_empty() {
        format!(
            "thresholds buy {:.2} / sell {:.2}",
            r.thresholds.buy, r.thresholds.sell
        )
    } else {
        format!(
            "out of sample: the {} walk-forward test windows compounded into one curve \
             (thresholds chosen per fold on its train window, see below)",
            rep.folds.len()
        )
    };
    let _ = write!(
        out,
        "<p>{sym}, {n} decisions on {iv} candles from {a} to {b} (UTC); {thresholds}; \
         starting equity {se:.2}, final equity {fe}; costs per fill: taker fee {fee} bps, \
         slippage {sl} bps, impact {im} bps; stops and take-profits trigger inside each \
         candle on its high and low, the adverse extreme first; expert outputs missing: \
         {sk}.</p>",
        sym = escape(&r.symbol),
        n = r.decisions.len(),
        iv = duration_text(r.interval_ms),
        a = iso_utc(r.first_ms),
        b = iso_utc(r.last_ms),
        se = r.start_equity,
        fe = r.final_equity,
        fee = r.costs.taker_fee_bps,
        sl = r.costs.slippage_bps,
        im = r.costs.impact_bps,
        sk = r.skipped_outputs,
    );
    out.push_str(
        "<table><tr><th class=\"l\"></th><th>Strategy</th><th>Buy and hold</th><th>Flat</th></tr>",
    );
    for (name, [a, b, c]) in comparison_rows(r) {
        let _ = write!(
            out,
            "<tr><th class=\"l\">{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name.trim()),
            escape(&a),
            escape(&b),
            escape(&c)
        );
    }
    out.push_str("</table>");
    if let Some(ci) = &r.ci95 {
        let _ = write!(
            out,
            "<p>95% confidence intervals: circular block bootstrap of the per-step returns, \
             {} resamples of blocks of {} steps.</p>",
            ci.resamples, ci.block_steps
        );
    }
    if let Some(w) = few_trips_warning(r) {
        let _ = write!(out, "<p class=\"warn\">{}</p>", escape(&w));
    }
    let _ = write!(
        out,
        "<h2>Risk halts</h2><p>{}. Policy: {}.</p>",
        escape(&halts_line(r)),
        escape(&r.halt_policy)
    );
    if !r.halts.is_empty() {
        out.push_str(
            "<table><tr><th class=\"l\">kind</th><th class=\"l\">reason</th><th>from</th>\
             <th>to</th><th class=\"l\">ended by</th><th>entries refused</th></tr>",
        );
        for h in &r.halts {
            let _ = write!(
                out,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td>\
                 <td class=\"l\">{}</td><td>{}</td></tr>",
                h.kind(),
                escape(&h.reason.to_string()),
                iso_utc(h.since_ms),
                h.ended_ms.map_or("–".into(), iso_utc),
                escape(&h.ended_by),
                h.refused_intents
            );
        }
        out.push_str("</table>");
    }
    if r.refusals > 0 {
        let _ = write!(
            out,
            "<p>The risk manager refused {} intents for a limit; first reasons:</p><ul>{}</ul>",
            r.refusals,
            r.refusal_reasons
                .iter()
                .map(|x| format!("<li>{}</li>", escape(x)))
                .collect::<String>()
        );
    }
    out.push_str("<h2>Equity and drawdown</h2>");
    out.push_str(&equity_svg(&equity_chart(rep.title, r, rep.folds)));
    if !r.accuracy.is_empty() {
        out.push_str("<h2>Expert accuracy (end)</h2><table>");
        for (m, a) in &r.accuracy {
            let _ = write!(
                out,
                "<tr><th class=\"l\">{}</th><td>{}</td></tr>",
                escape(m),
                pct(*a)
            );
        }
        out.push_str("</table>");
    }
    if !rep.folds.is_empty() {
        out.push_str(
            "<h2>Walk-forward folds</h2><table><tr><th>fold</th><th>train from</th>\
             <th>train to</th><th>test from</th><th>test to</th><th>thresholds</th>\
             <th>train Sharpe</th><th>test return</th><th>test Sharpe</th>\
             <th>buy-and-hold return</th><th>round trips</th><th class=\"l\">trained</th></tr>",
        );
        for (k, f) in rep.folds.iter().enumerate() {
            let _ = write!(
                out,
                "<tr><td>{k}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td>\
                 <td>{:.2}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td>\
                 <td class=\"l\">{}</td></tr>",
                iso_utc(f.train.0),
                iso_utc(f.train.1),
                iso_utc(f.test.0),
                iso_utc(f.test.1),
                f.chosen.buy,
                f.train_metrics.sharpe,
                signed_pct(f.test_result.metrics.total_return),
                f.test_result.metrics.sharpe,
                signed_pct(f.test_result.benchmark_metrics.total_return),
                f.test_result.metrics.round_trips,
                escape(f.trained.as_deref().unwrap_or("–"))
            );
        }
        out.push_str("</table>");
    }
    let shown = r.round_trips.len().min(1_000);
    let _ = write!(
        out,
        "<h2>Round trips ({shown} of {})</h2><table><tr><th>#</th><th>side</th><th>entry</th>\
         <th>exit</th><th>entry price</th><th>exit price</th><th>qty</th><th>PnL net</th>\
         <th class=\"l\">exit</th></tr>",
        r.round_trips.len()
    );
    for t in &r.round_trips[..shown] {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{:.2}</td><td class=\"l\">{}</td></tr>",
            t.number,
            if t.side == crate::market::types::Side::Buy {
                "long"
            } else {
                "short"
            },
            iso_utc(t.entry_ms),
            iso_utc(t.exit_ms),
            t.entry_price,
            t.exit_price,
            t.qty,
            t.pnl,
            escape(&t.exit_reason)
        );
    }
    out.push_str("</table>");
    let shown = r.trades.len().min(1_000);
    let _ = write!(
        out,
        "<h2>Fills ({shown} of {})</h2><table><tr><th>time (UTC)</th><th>side</th>\
         <th>price</th><th>qty</th><th>fee</th><th>position after</th><th>trip</th>\
         <th class=\"l\">reason</th></tr>",
        r.trades.len()
    );
    for t in &r.trades[..shown] {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{}</td>\
             <td>{}</td><td class=\"l\">{}</td></tr>",
            iso_utc(t.time_ms),
            t.side,
            t.price,
            t.qty,
            t.fee,
            t.position,
            t.trip,
            escape(&t.reason)
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

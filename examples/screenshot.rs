//! Renders the running desk against the built-in simulated exchange and writes it as SVG.
//!
//! `cargo run --example screenshot -- [OUT.svg] [HEATMAP_SECONDS]` connects to a fresh
//! simulator, waits until both books are live, the 1 m candles are backfilled and the COB
//! heatmap holds HEATMAP_SECONDS rows (default 90), then draws one 160×48 frame of the real
//! screen into a buffer and exports it (default `assets/screenshot.svg`).

use std::time::{Duration, Instant};

use anyhow::Context;
use mmtrader::app::desk::{DeskProcesses, baseline_experts};
use mmtrader::app::pipeline::FeedProcess;
use mmtrader::app::workstation::start_models;
use mmtrader::config::Config;
use mmtrader::logging::{LogOutput, LogRing};
use mmtrader::market::snapshot::{BookStatus, MarketSnapshot};
use mmtrader::market::types::Timeframe;
use mmtrader::tui::app::{Inputs, UiState, render};
use mmtrader::tui::desk::{DeskCommand, Process};
use mmtrader::tui::desk::{DeskStatus, parse_vm_rss};
use mmtrader::tui::keys::KeyMap;
use mmtrader::tui::svg::buffer_to_svg;
use mmtrader::tui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const WIDTH: u16 = 160;
const HEIGHT: u16 = 48;

fn ready(s: &MarketSnapshot, heat_rows: usize) -> bool {
    s.symbols.iter().all(|v| {
        v.status == BookStatus::Live
            && v.candles(Timeframe::M1).len() >= 100
            && v.cob.is_some()
            && v.heatmap.len() >= heat_rows
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "assets/screenshot.svg".into());
    let heat_rows: usize = match args.get(2) {
        Some(a) => a
            .parse()
            .context("HEATMAP_SECONDS must be a whole number")?,
        None => 90,
    };
    let ring = LogRing::new(500);
    let _guard = mmtrader::logging::init("info", LogOutput::Stderr, &ring)?;
    let mut config = Config::default();
    // A scratch data directory: fresh model weights and an empty order journal.
    let scratch = std::env::temp_dir().join(format!("mmtrader-screenshot-{}", std::process::id()));
    config.paths.data_dir = scratch.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (snap, logs, desk_state) = rt.block_on(async {
        let (endpoints, sim) = mmtrader::app::endpoints(&config)
            .await
            .map_err(|f| f.error)?;
        let (mut feed, mut rx) = FeedProcess::new(config.clone(), endpoints);
        let journal = config.paths.data_dir.join(&config.execution.journal_dir);
        let models = start_models(&config);
        let (processes, tap) =
            DeskProcesses::start(&config, baseline_experts(), models, rx.clone(), &journal)?;
        feed.set_input_tap(tap);
        processes.command(&DeskCommand::Toggle(Process::Trading));
        feed.start()?;
        let deadline = Instant::now() + Duration::from_secs(heat_rows as u64 + 120);
        let snap = loop {
            let s = rx.borrow_and_update().clone();
            let symbol = s
                .symbols
                .first()
                .map(|v| v.exchange.clone())
                .unwrap_or_default();
            let models = processes.models_view(&symbol);
            if ready(&s, heat_rows) && models.experts.len() >= 4 && models.decision.is_some() {
                let desk = DeskStatus {
                    rss_bytes: std::fs::read_to_string("/proc/self/status")
                        .ok()
                        .and_then(|t| parse_vm_rss(&t)),
                    models: Some(models),
                    trading: processes.trading_view(),
                    tunables: processes.tunables(),
                    predictions: processes.predictions(),
                };
                // The log as it stood at that frame, before the shutdown below adds to it.
                break Ok((s, ring.try_snapshot().unwrap_or_default(), desk));
            }
            if Instant::now() > deadline {
                break Err(anyhow::anyhow!("the desk did not fill in time"));
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
        };
        feed.stop().await;
        processes.shutdown();
        if let Some(sim) = sim {
            sim.shutdown().await;
        }
        snap
    })?;
    let desk = desk_state;
    std::fs::remove_dir_all(&scratch).ok();
    let keys = KeyMap::default();
    let theme = Theme::load("dark", None, true)?;
    let mut term = Terminal::new(TestBackend::new(WIDTH, HEIGHT))?;
    let input = Inputs {
        snap: &snap,
        logs: &logs,
        desk: &desk,
        keys: &keys,
    };
    term.draw(|f| render(f, input, &UiState::default(), &theme))?;
    let svg = buffer_to_svg(term.backend().buffer(), theme.background, theme.foreground);
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&out, svg).with_context(|| format!("writing {out}"))?;
    println!("wrote {out}");
    Ok(())
}

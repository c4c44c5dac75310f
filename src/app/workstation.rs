//! The workstation: the data path in the background and the screen in the foreground.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyEventKind};

use super::desk::{DeskProcesses, baseline_experts};
use super::desk_models::LiveModels;
use super::pipeline::FeedProcess;
use crate::analysis::input::InputConfig;
use crate::cli::{EXIT_OK, Failure};
use crate::config::Config;
use crate::logging::{LogLine, LogOutput, LogRing};
use crate::models::runtime::{ModelRuntime, RuntimeConfig};
use crate::tui::app::{Inputs, UiState, render};
use crate::tui::desk::{DeskCommand, DeskStatus, Process, parse_vm_rss};
use crate::tui::keys::{Action, KeyMap};
use crate::tui::terminal::TerminalGuard;
use crate::tui::theme::{Theme, terminal_has_truecolor};

/// Shortest time between two frames: input and data changes redraw, but never faster.
const FRAME_INTERVAL: Duration = Duration::from_millis(50);
/// How often the models, trading and parameter views are refreshed from their processes.
const DESK_EVERY: Duration = Duration::from_millis(200);
/// How often process memory is re-read for the system pane.
const MEMORY_EVERY: Duration = Duration::from_secs(2);

/// This process's resident memory, where `/proc` exists.
fn read_rss() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// Runs the workstation until the user quits or a SIGTERM/SIGHUP arrives.
pub fn run(config: Config) -> Result<i32, Failure> {
    let ring = LogRing::new(config.logging.ring_lines);
    let _log_guard = crate::logging::init(
        &config.logging.level,
        LogOutput::Files(&config.paths.log_dir),
        &ring,
    )
    .map_err(Failure::runtime)?;
    let theme_dir = config
        .file
        .as_deref()
        .and_then(|f| f.parent())
        .map(|d| d.join("themes"));
    let theme = Theme::load(
        &config.ui.theme,
        theme_dir.as_deref(),
        terminal_has_truecolor(),
    )
    .map_err(Failure::runtime)?;
    // Validated when the configuration was loaded; checked again because `Config` is public.
    let keys = KeyMap::with_overrides(&config.ui.keys).map_err(Failure::runtime)?;

    let rt = super::runtime()?;
    let quit = Arc::new(AtomicBool::new(false));
    let (mut feed, snapshots, sim, desk) = rt.block_on(async {
        let (endpoints, sim) = super::endpoints(&config).await?;
        tracing::info!(source = %endpoints.name, "workstation starting");
        let (mut feed, rx) = FeedProcess::new(config.clone(), endpoints);
        let journal_dir = config.paths.data_dir.join(&config.execution.journal_dir);
        let models = start_models(&config);
        let (mut desk, tap) = DeskProcesses::start(
            &config,
            baseline_experts(),
            models,
            rx.clone(),
            &journal_dir,
        )
        .map_err(Failure::runtime)?;
        if let Some(sim) = &sim {
            desk.set_sim_endpoints(sim.rest_url(), sim.ws_url());
        }
        // Orders and positions a live journal still holds are real: reconcile them with their
        // venue now and let the live executor manage them.
        desk.resume_live_if_journaled();
        feed.set_input_tap(tap);
        feed.start().map_err(Failure::runtime)?;
        watch_signals(quit.clone());
        Ok::<_, Failure>((feed, rx, sim, desk))
    })?;

    let result = ui_loop(
        &rt, &mut feed, &desk, snapshots, &ring, &theme, &keys, &quit,
    );
    desk.shutdown();
    rt.block_on(async {
        feed.stop().await;
        if let Some(sim) = sim {
            sim.shutdown().await;
        }
    });
    result.map(|()| EXIT_OK)
}

/// Starts the model runtime (best checkpoints, or fresh weights that learn online); the desk
/// runs without the models, and says so, when it cannot start.
pub fn start_models(config: &Config) -> Option<Arc<LiveModels>> {
    let m = &config.models;
    let device = match crate::models::device::device_from_config(&m.device) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "models not started");
            return None;
        }
    };
    let input = InputConfig {
        reference_symbol: config.reference_symbol.exchange.clone(),
        ..InputConfig::default()
    };
    let runtime_cfg = RuntimeConfig {
        models: m.clone(),
        input,
    };
    match ModelRuntime::spawn(
        runtime_cfg,
        device,
        m.checkpoint_path(&config.paths.data_dir),
    ) {
        Ok(rt) => Some(LiveModels::new(
            rt,
            (m.cnn_model.clone(), m.dqn_model.clone()),
            true,
        )),
        Err(e) => {
            tracing::error!(error = %e, "models not started");
            None
        }
    }
}

fn watch_signals(quit: Arc<AtomicBool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        for kind in [
            SignalKind::terminate(),
            SignalKind::hangup(),
            SignalKind::interrupt(),
        ] {
            let quit = quit.clone();
            if let Ok(mut s) = signal(kind) {
                tokio::spawn(async move {
                    if s.recv().await.is_some() {
                        quit.store(true, Ordering::SeqCst);
                    }
                });
            }
        }
    }
    #[cfg(not(unix))]
    {
        let quit = quit.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                quit.store(true, Ordering::SeqCst);
            }
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn ui_loop(
    rt: &tokio::runtime::Runtime,
    feed: &mut FeedProcess,
    processes: &DeskProcesses,
    mut snapshots: tokio::sync::watch::Receiver<Arc<crate::market::snapshot::MarketSnapshot>>,
    ring: &LogRing,
    theme: &Theme,
    keys: &KeyMap,
    quit: &AtomicBool,
) -> Result<(), Failure> {
    let mut term = TerminalGuard::enter().map_err(Failure::runtime)?;
    let mut ui = UiState::default();
    let mut logs: Vec<LogLine> = Vec::new();
    let mut desk = DeskStatus {
        rss_bytes: read_rss(),
        ..DeskStatus::default()
    };
    let mut last_memory = Instant::now();
    let mut last_desk = Instant::now() - DESK_EVERY;
    let mut dirty = true;
    let mut last_frame = Instant::now() - FRAME_INTERVAL;
    while !quit.load(Ordering::SeqCst) {
        if snapshots.has_changed().unwrap_or(false) {
            dirty = true;
        }
        if last_memory.elapsed() >= MEMORY_EVERY {
            desk.rss_bytes = read_rss();
            last_memory = Instant::now();
            dirty = true;
        }
        if last_desk.elapsed() >= DESK_EVERY {
            let symbol = {
                let snap = snapshots.borrow();
                snap.symbols
                    .get(ui.symbol.min(snap.symbols.len().saturating_sub(1)))
                    .map(|s| s.exchange.clone())
                    .unwrap_or_default()
            };
            let fresh = DeskStatus {
                rss_bytes: desk.rss_bytes,
                models: Some(processes.models_view(&symbol)),
                trading: processes.trading_view(),
                tunables: processes.tunables(),
                predictions: processes.predictions(),
            };
            if fresh != desk {
                desk = fresh;
                dirty = true;
            }
            last_desk = Instant::now();
        }
        if dirty && last_frame.elapsed() >= FRAME_INTERVAL {
            let snap = snapshots.borrow_and_update().clone();
            if let Some(l) = ring.try_snapshot() {
                logs = l;
            }
            let inputs = Inputs {
                snap: &snap,
                logs: &logs,
                desk: &desk,
                keys,
            };
            term.terminal
                .draw(|f| render(f, inputs, &ui, theme))
                .map_err(Failure::runtime)?;
            dirty = false;
            last_frame = Instant::now();
        }
        if event::poll(FRAME_INTERVAL).map_err(Failure::runtime)? {
            match event::read().map_err(Failure::runtime)? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    let Some(action) = keys.action_for(k) else {
                        continue;
                    };
                    if action == Action::Quit && ui.confirm.is_none() {
                        break;
                    }
                    let n = snapshots.borrow().symbols.len();
                    match ui.apply(action, n, &desk.tunables) {
                        Some(DeskCommand::Toggle(Process::Feed)) => {
                            if feed.is_running() {
                                rt.block_on(feed.stop());
                            } else {
                                let _guard = rt.enter();
                                if let Err(e) = feed.start() {
                                    tracing::error!(error = %e, "feed failed to start");
                                }
                            }
                        }
                        Some(other) => {
                            processes.command(&other);
                            // Show the effect (a new threshold, a stopped process) at once.
                            last_desk = Instant::now() - DESK_EVERY;
                        }
                        None => {}
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    }
    Ok(())
}

//! A full frame of the desk at 200×60 with every pane populated (budget: 2 ms).

use criterion::{Criterion, criterion_group, criterion_main};
use mmtrader::tui::app::{Inputs, UiState, render};
use mmtrader::tui::desk::DeskStatus;
use mmtrader::tui::fixture;
use mmtrader::tui::keys::KeyMap;
use mmtrader::tui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::time::{Duration, Instant};

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::thread_cpu_ns;

fn frame(c: &mut Criterion) {
    let snap = fixture::market();
    let logs = fixture::logs(2000);
    // Every pane populated: models, decision, positions, tunables and the CNN's predictions.
    let desk = DeskStatus {
        rss_bytes: Some(64 << 20),
        models: Some(fixture::models()),
        trading: Some(fixture::trading()),
        tunables: fixture::tunables(),
        predictions: Some(fixture::predictions(&snap)),
    };
    let keys = KeyMap::default();
    let ui = UiState::default();
    for (name, truecolor) in [
        ("full_desk_200x60_truecolor", true),
        ("full_desk_200x60_256", false),
    ] {
        let theme = Theme::load("dark", None, truecolor).expect("built-in theme");
        let mut term = Terminal::new(TestBackend::new(200, 60)).expect("test backend");
        let mut draw = || {
            let input = Inputs {
                snap: &snap,
                logs: &logs,
                desk: &desk,
                keys: &keys,
            };
            term.draw(|f| render(f, input, &ui, &theme)).expect("draw");
        };
        c.bench_function(name, |b| b.iter(&mut draw));
        // The bench machine may be shared: CPU time of this thread is the figure that other
        // load does not inflate.
        let start = (thread_cpu_ns(), Instant::now());
        let mut frames = 0u32;
        while start.1.elapsed() < Duration::from_secs(2) {
            draw();
            frames += 1;
        }
        if let (Some(a), Some(b)) = (start.0, thread_cpu_ns()) {
            let per_frame_us = (b - a) as f64 / 1e3 / f64::from(frames);
            println!("{name}: {per_frame_us:.0} µs CPU per frame ({frames} frames)");
        }
    }
}

criterion_group!(benches, frame);
criterion_main!(benches);

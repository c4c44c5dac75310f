//! A full frame of the desk at 200×60 with every pane populated (budget: 2 ms).

use criterion::{Criterion, criterion_group, criterion_main};
use mmtrader::tui::app::{Inputs, UiState, render};
use mmtrader::tui::desk::DeskStatus;
use mmtrader::tui::fixture;
use mmtrader::tui::keys::KeyMap;
use mmtrader::tui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn frame(c: &mut Criterion) {
    let snap = fixture::market();
    let logs = fixture::logs(2000);
    let desk = DeskStatus {
        rss_bytes: Some(64 << 20),
        ..DeskStatus::default()
    };
    let keys = KeyMap::default();
    let ui = UiState::default();
    for (name, truecolor) in [
        ("full_desk_200x60_truecolor", true),
        ("full_desk_200x60_256", false),
    ] {
        let theme = Theme::load("dark", None, truecolor).expect("built-in theme");
        let mut term = Terminal::new(TestBackend::new(200, 60)).expect("test backend");
        c.bench_function(name, |b| {
            b.iter(|| {
                let input = Inputs {
                    snap: &snap,
                    logs: &logs,
                    desk: &desk,
                    keys: &keys,
                };
                term.draw(|f| render(f, input, &ui, &theme)).expect("draw");
            })
        });
    }
}

criterion_group!(benches, frame);
criterion_main!(benches);

//! Shared helpers of the venue tests: replaying recorded captures through a venue session.
#![allow(dead_code)]

use std::path::PathBuf;

use mmtrader::feeds::normalized::NormEvent;
use mmtrader::feeds::raw_replay::{ReplayItem, ReplayStats, replay_files, session_for};
use mmtrader::feeds::venue::VenueSession;

/// A recorded capture file of the cryptofeed sample data.
pub fn capture(name: &str) -> PathBuf {
    mmtrader::testdata::require(&format!("exchange_raw/cryptofeed_sample_data/{name}"))
}

/// Replays files through a fresh session of the venue; returns the stats, the session and
/// every normalized event.
pub fn replay(venue: &str, files: &[PathBuf]) -> (ReplayStats, VenueSession, Vec<NormEvent>) {
    let mut session = session_for(venue).unwrap();
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let stats = replay_files(&mut session, files, |item| match item {
        ReplayItem::Event(e) => events.push(e.clone()),
        ReplayItem::Error { at, error } => errors.push(format!("{at}: {error}")),
        ReplayItem::Top { .. } => {}
    })
    .unwrap();
    assert_eq!(
        errors.len() as u64,
        stats.errors.values().sum::<u64>(),
        "{errors:?}"
    );
    (stats, session, events)
}

/// Writes `lines` to a temporary file (for altered copies of a recording).
pub fn temp_capture(dir: &tempfile::TempDir, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

/// The lines of a capture.
pub fn lines(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Deletes the last line matching `pred` but one (an update well after the start of the
/// recording, with one more after it to reveal the gap).
pub fn remove_second_last(lines: &mut Vec<String>, pred: impl Fn(&str) -> bool) {
    let idx: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| pred(l))
        .map(|(i, _)| i)
        .collect();
    assert!(idx.len() >= 2, "fewer than two matching lines");
    lines.remove(idx[idx.len() - 2]);
}

//! Shared helpers of the venue tests: replaying recorded captures through a venue session.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use mmtrader::feeds::normalized::NormEvent;
use mmtrader::feeds::raw_replay::{
    CaptureLine, Payload, ReplayItem, ReplayStats, parse_capture_line, replay_files, session_for,
};
use mmtrader::feeds::venue::VenueSession;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

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

/// A loopback venue: replays the recorded frames to every connection, then stays open (the
/// client's messages are read and ignored) until killed.
pub struct VenueServer {
    /// Its websocket URL.
    pub url: String,
    kill: watch::Sender<bool>,
}

impl VenueServer {
    /// Serves the recorded capture `file` (a cryptofeed sample name).
    pub async fn start(file: &str) -> Self {
        let frames: Arc<Vec<Message>> = Arc::new(
            lines(&capture(file))
                .iter()
                .filter_map(|l| match parse_capture_line(l).ok()? {
                    CaptureLine::Received { payload, .. } => Some(match payload {
                        Payload::Text(t) => Message::text(t),
                        Payload::Binary(b) => Message::binary(b),
                    }),
                    _ => None,
                })
                .collect(),
        );
        assert!(!frames.is_empty(), "{file}: no received frames");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let (kill, killed) = watch::channel(false);
        let mut accept_killed = killed.clone();
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    r = listener.accept() => match r { Ok((tcp, _)) => tcp, Err(_) => return },
                    _ = accept_killed.changed() => return,
                };
                let (frames, mut conn_killed) = (frames.clone(), killed.clone());
                tokio::spawn(async move {
                    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    let (mut tx, mut rx) = ws.split();
                    let serve = async {
                        for f in frames.iter() {
                            if tx.send(f.clone()).await.is_err() {
                                return;
                            }
                        }
                        while let Some(Ok(_)) = rx.next().await {}
                    };
                    // Dropping the socket on a kill is an abrupt loss, as when a server dies.
                    tokio::select! {
                        _ = serve => {}
                        _ = conn_killed.changed() => {}
                    }
                });
            }
        });
        Self { url, kill }
    }

    /// Drops every connection and stops accepting, as when a server dies.
    pub fn kill(&self) {
        let _ = self.kill.send(true);
    }
}

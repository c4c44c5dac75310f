//! Replay of recorded raw exchange messages through a venue's connector code (parser, book,
//! integrity checks) without a network: one message per line as received, or cryptofeed's
//! capture line format (`<time>: <payload>`, `URL <- …` sent, `URL -> …` REST, gzip frames as
//! Python bytes literals). Several files (a websocket capture and its REST log) are merged by
//! time, each file's own order kept.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::normalized::{IntegrityError, NormEvent, Venue};
use super::venue::{Action, Frame, Step, VenueError, VenueSession};

/// One line of a capture.
#[derive(Debug, Clone, PartialEq)]
pub enum CaptureLine {
    /// A websocket connection was opened.
    Connect {
        /// The URL.
        url: String,
    },
    /// A message the client sent.
    Sent {
        /// The text.
        text: String,
    },
    /// A received frame.
    Received {
        /// Local receive time, seconds, when recorded.
        time: Option<f64>,
        /// The frame.
        payload: Payload,
    },
    /// A REST response.
    Rest {
        /// Request URL.
        url: String,
        /// Local time, seconds.
        time: f64,
        /// Response body.
        body: String,
    },
    /// Recorder configuration or an empty line: not exchange data.
    Skip,
}

/// A received frame's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Text frame.
    Text(String),
    /// Binary frame (e.g. HTX gzip).
    Binary(Vec<u8>),
}

/// Why a capture line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// A `b'…'` literal with an invalid escape.
    #[error("bad bytes literal: {0}")]
    BytesLiteral(String),
}

fn split_time(s: &str) -> Option<(f64, &str)> {
    let (t, rest) = s.split_once(':')?;
    let t = t.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    Some((t.parse().ok()?, rest.strip_prefix(' ').unwrap_or(rest)))
}

/// Decodes a Python bytes literal `b'\x1f\x8b…'`.
pub fn python_bytes(lit: &str) -> Result<Vec<u8>, CaptureError> {
    let bad = || CaptureError::BytesLiteral(lit.chars().take(40).collect());
    let inner = lit
        .strip_prefix("b'")
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| lit.strip_prefix("b\"").and_then(|s| s.strip_suffix('"')))
        .ok_or_else(bad)?;
    let b = inner.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = *b.get(i + 1).ok_or_else(bad)?;
        i += 2;
        match c {
            b'x' => {
                let hex = inner.get(i..i + 2).ok_or_else(bad)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b'\\' | b'\'' | b'"' => out.push(c),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

fn payload(text: &str) -> Result<Payload, CaptureError> {
    if text.starts_with("b'") || text.starts_with("b\"") {
        python_bytes(text).map(Payload::Binary)
    } else {
        Ok(Payload::Text(text.to_string()))
    }
}

/// Reads one line (cryptofeed capture format, or a raw message as received).
pub fn parse_capture_line(line: &str) -> Result<CaptureLine, CaptureError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || line.starts_with("configuration: ") {
        return Ok(CaptureLine::Skip);
    }
    if let Some((time, rest)) = split_time(line) {
        return Ok(CaptureLine::Received {
            time: Some(time),
            payload: payload(rest)?,
        });
    }
    if let Some((url, rest)) = line.split_once(" <-> ")
        && !url.contains(' ')
        && split_time(&format!("{rest}:")).is_some()
    {
        return Ok(CaptureLine::Connect { url: url.into() });
    }
    for (arrow, rest_line) in [(" <- ", false), (" -> ", true)] {
        if let Some((url, rest)) = line.split_once(arrow)
            && !url.contains(' ')
            && let Some((time, body)) = split_time(rest)
        {
            return Ok(if rest_line {
                CaptureLine::Rest {
                    url: url.into(),
                    time,
                    body: body.into(),
                }
            } else {
                CaptureLine::Sent { text: body.into() }
            });
        }
    }
    Ok(CaptureLine::Received {
        time: None,
        payload: payload(line)?,
    })
}

/// Something that happened during a replay, in order.
#[derive(Debug)]
pub enum ReplayItem<'a> {
    /// A normalized event.
    Event(&'a NormEvent),
    /// The synced book of an instrument after an update: best bid and ask.
    Top {
        /// Canonical id.
        instrument: &'a str,
        /// Best bid.
        bid: Option<crate::market::types::Level>,
        /// Best ask.
        ask: Option<crate::market::types::Level>,
    },
    /// A line that could not be used.
    Error {
        /// File and line.
        at: &'a str,
        /// Why.
        error: String,
    },
}

/// Totals of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayStats {
    /// Lines read.
    pub lines: u64,
    /// Received frames fed to the parser.
    pub frames: u64,
    /// Frames parsed without error.
    pub parsed: u64,
    /// Parse errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Messages of a known kind the connector does not use, by kind.
    pub unsupported: BTreeMap<String, u64>,
    /// Trades.
    pub trades: u64,
    /// Book snapshots applied.
    pub snapshots: u64,
    /// Book deltas applied.
    pub deltas: u64,
    /// REST snapshots fed.
    pub rest_snapshots: u64,
    /// Integrity failures (instrument, error).
    pub integrity: Vec<(String, IntegrityError)>,
    /// Checksums verified across all books.
    pub checksums_ok: u64,
    /// Checksums sent but not verifiable (e.g. Kraken without the instrument's precision):
    /// integrity warnings across all books.
    pub checksums_unverified: u64,
    /// Messages the session wanted to send back (pongs, resubscriptions).
    pub replies: u64,
    /// Connection-level gaps after which a live connector reconnects (all books dropped).
    pub reconnects: u64,
}

struct Source {
    name: String,
    lines: std::vec::IntoIter<(usize, String)>,
    peeked: Option<(usize, String, CaptureLine)>,
}

fn line_time(l: &CaptureLine) -> Option<f64> {
    match l {
        CaptureLine::Received { time, .. } => *time,
        CaptureLine::Rest { time, .. } => Some(*time),
        _ => None,
    }
}

/// Replays `files` (merged by capture time, each file in its own order) through the session.
pub fn replay_files(
    session: &mut VenueSession,
    files: &[PathBuf],
    mut sink: impl FnMut(ReplayItem<'_>),
) -> std::io::Result<ReplayStats> {
    let mut sources = Vec::new();
    for f in files {
        let lines = read_lines(f)?;
        sources.push(Source {
            name: f.display().to_string(),
            lines: lines.into_iter(),
            peeked: None,
        });
    }
    let mut stats = ReplayStats::default();
    loop {
        // Fill each source's next usable line.
        for s in &mut sources {
            while s.peeked.is_none() {
                let Some((n, text)) = s.lines.next() else {
                    break;
                };
                stats.lines += 1;
                match parse_capture_line(&text) {
                    Ok(CaptureLine::Skip) | Ok(CaptureLine::Connect { .. }) => {}
                    Ok(CaptureLine::Sent { .. }) => {}
                    Ok(l) => s.peeked = Some((n, text, l)),
                    Err(e) => {
                        *stats.errors.entry("capture".into()).or_default() += 1;
                        sink(ReplayItem::Error {
                            at: &format!("{}:{n}", s.name),
                            error: e.to_string(),
                        });
                    }
                }
            }
        }
        // The earliest next line; lines without a time go first in file order.
        let next = sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.peeked.as_ref().map(|p| (i, line_time(&p.2))))
            .min_by(|a, b| {
                a.1.unwrap_or(f64::MIN)
                    .partial_cmp(&b.1.unwrap_or(f64::MIN))
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.0.cmp(&b.0))
            });
        let Some((i, _)) = next else { break };
        let Some((n, _text, line)) = sources[i].peeked.take() else {
            break;
        };
        let at = format!("{}:{n}", sources[i].name);
        feed_line(session, line, &at, &mut stats, &mut sink);
    }
    Ok(stats)
}

/// Feeds one parsed capture line to the session.
pub fn feed_line(
    session: &mut VenueSession,
    line: CaptureLine,
    at: &str,
    stats: &mut ReplayStats,
    sink: &mut impl FnMut(ReplayItem<'_>),
) {
    let mut step = Step::default();
    match line {
        CaptureLine::Received { payload, .. } => {
            stats.frames += 1;
            let res = match &payload {
                Payload::Text(t) => session.on_frame(Frame::Text(t), &mut step),
                Payload::Binary(b) => session.on_frame(Frame::Binary(b), &mut step),
            };
            match res {
                Ok(()) => stats.parsed += 1,
                Err(e) => {
                    *stats.errors.entry(e.kind().into()).or_default() += 1;
                    sink(ReplayItem::Error {
                        at,
                        error: e.to_string(),
                    });
                }
            }
        }
        CaptureLine::Rest { url, body, .. } => {
            let Some(instrument) = session.protocol().snapshot_instrument(&url) else {
                *stats.unsupported.entry("rest_other".into()).or_default() += 1;
                return;
            };
            match session.protocol().parse_snapshot(&instrument, &body) {
                Ok(snap) => {
                    stats.rest_snapshots += 1;
                    session.on_rest_snapshot(snap, &mut step);
                }
                Err(e) => {
                    *stats
                        .errors
                        .entry(format!("rest_{}", e.kind()))
                        .or_default() += 1;
                    sink(ReplayItem::Error {
                        at,
                        error: e.to_string(),
                    });
                }
            }
        }
        _ => return,
    }
    for ev in &step.events {
        match ev {
            NormEvent::Trade(_) => stats.trades += 1,
            NormEvent::BookSnapshot(_) => stats.snapshots += 1,
            NormEvent::BookDelta(_) => stats.deltas += 1,
            NormEvent::Integrity { instrument, error } => {
                stats.integrity.push((instrument.clone(), error.clone()))
            }
            NormEvent::Unsupported(k) => *stats.unsupported.entry((*k).into()).or_default() += 1,
            _ => {}
        }
        sink(ReplayItem::Event(ev));
    }
    for inst in &step.books_changed {
        if let Some(b) = session.book(inst) {
            sink(ReplayItem::Top {
                instrument: inst,
                bid: b.best_bid(),
                ask: b.best_ask(),
            });
        }
    }
    if step
        .actions
        .iter()
        .any(|a| matches!(a, Action::Reconnect(_)))
    {
        stats.reconnects += 1;
        session.on_disconnected();
    }
    stats.replies += step
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Send(_)))
        .count() as u64;
    let books = || {
        session
            .book_instruments()
            .filter_map(|i| session.venue_book(i))
            .map(|b| b.stats())
    };
    stats.checksums_ok = books().map(|s| s.checksums_ok).sum();
    stats.checksums_unverified = books().map(|s| s.checksums_unverified).sum();
}

fn read_lines(path: &Path) -> std::io::Result<Vec<(usize, String)>> {
    let file = std::fs::File::open(path)?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut out = Vec::new();
    for (i, line) in reader.split(b'\n').enumerate() {
        // Lossy: a stray invalid byte must not stop a replay; the parser reports the frame.
        out.push((i + 1, String::from_utf8_lossy(&line?).into_owned()));
    }
    Ok(out)
}

/// A session for a venue name with every book opened on first sight.
pub fn session_for(name: &str) -> Result<VenueSession, VenueError> {
    let venue = Venue::parse(name).ok_or_else(|| VenueError::UnknownChannel(name.into()))?;
    let proto = super::protocol_for(venue)
        .ok_or_else(|| VenueError::UnknownChannel(format!("no raw connector for {venue}")))?;
    Ok(VenueSession::open(proto))
}

/// `mmtrader replay --exchange NAME --raw FILE…` (parsed as part of the replay command's
/// arguments).
#[derive(Debug)]
pub struct ReplayRawArgs {
    /// Exchange whose connector reads the messages: binance, mexc, coinbase, kraken, htx
    /// (huobi), bitfinex, kucoin, bybit.
    pub exchange: String,
    /// Recorded raw messages, one per line as received, or cryptofeed capture files (a
    /// websocket capture and its REST log may be given together; `.gz` is read as gzip).
    pub raw: Vec<PathBuf>,
    /// Print only integrity failures, errors and the summary.
    pub quiet: bool,
}

fn side_word(s: crate::market::types::Side) -> &'static str {
    match s {
        crate::market::types::Side::Buy => "buy",
        crate::market::types::Side::Sell => "sell",
    }
}

fn level_text(l: Option<crate::market::types::Level>) -> String {
    l.map_or("-".to_string(), |l| format!("{} x {}", l.price, l.qty))
}

/// Formats one replay item as a line of output (None for items not printed).
pub fn describe(item: &ReplayItem<'_>, quiet: bool) -> Option<String> {
    match item {
        ReplayItem::Event(NormEvent::Integrity { instrument, error }) => {
            Some(format!("INTEGRITY {instrument} {error} (resync)"))
        }
        ReplayItem::Error { at, error } => Some(format!("ERROR {at}: {error}")),
        _ if quiet => None,
        ReplayItem::Event(NormEvent::Trade(t)) => Some(format!(
            "TRADE {} {} {} @ {} id={} t={}",
            t.symbol,
            side_word(t.taker_side),
            t.qty,
            t.price,
            t.id,
            t.time_ms
        )),
        ReplayItem::Event(NormEvent::BookSnapshot(d)) => Some(format!(
            "SNAPSHOT {} bids={} asks={} seq={:?}",
            d.instrument,
            d.bids.len(),
            d.asks.len(),
            d.seq
        )),
        ReplayItem::Event(NormEvent::BookDelta(d)) => Some(format!(
            "DELTA {} bids={} asks={} seq={:?}{}",
            d.instrument,
            d.bids.len(),
            d.asks.len(),
            d.seq,
            d.checksum
                .map(|c| format!(" checksum={c}"))
                .unwrap_or_default()
        )),
        ReplayItem::Top {
            instrument,
            bid,
            ask,
        } => Some(format!(
            "TOP {instrument} bid {} | ask {}",
            level_text(*bid),
            level_text(*ask)
        )),
        ReplayItem::Event(_) => None,
    }
}

/// Runs the `replay` command.
pub fn run(
    _config: crate::config::Config,
    args: ReplayRawArgs,
) -> Result<i32, crate::cli::Failure> {
    use std::io::Write;
    let mut session = session_for(&args.exchange).map_err(|e| {
        crate::cli::Failure::input(anyhow::anyhow!(
            "--exchange {}: {e} (expected one of binance, mexc, coinbase, kraken, htx, bitfinex, kucoin, bybit)",
            args.exchange
        ))
    })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_failed = false;
    let stats = replay_files(&mut session, &args.raw, |item| {
        if let Some(line) = describe(&item, args.quiet)
            && !write_failed
            && writeln!(out, "{line}").is_err()
        {
            // A closed pipe (e.g. `| head`) ends the output, not the replay's summary.
            write_failed = true;
        }
    })
    .map_err(|e| crate::cli::Failure::input(anyhow::anyhow!("reading {:?}: {e}", args.raw)))?;
    let _ = out.flush();
    drop(out);
    eprintln!(
        "replayed {} lines: {} frames, {} parsed, {} trades, {} snapshots ({} REST), {} deltas, {} checksums verified, {} integrity failures, {} replies",
        stats.lines,
        stats.frames,
        stats.parsed,
        stats.trades,
        stats.snapshots,
        stats.rest_snapshots,
        stats.deltas,
        stats.checksums_ok,
        stats.integrity.len(),
        stats.replies
    );
    if stats.checksums_unverified > 0 {
        eprintln!(
            "WARNING {} checksums could not be verified (instrument precision unknown): those books are unverified",
            stats.checksums_unverified
        );
    }
    if !stats.errors.is_empty() {
        eprintln!("errors by kind: {:?}", stats.errors);
    }
    if !stats.unsupported.is_empty() {
        eprintln!("known unsupported kinds: {:?}", stats.unsupported);
    }
    for inst in session.book_instruments() {
        if let Some(b) = session.book(inst) {
            eprintln!(
                "final {inst}: bid {} | ask {} ({} bids, {} asks)",
                level_text(b.best_bid()),
                level_text(b.best_ask()),
                b.depth(crate::market::types::Side::Buy),
                b.depth(crate::market::types::Side::Sell)
            );
        }
    }
    Ok(crate::cli::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_lines() {
        assert_eq!(
            parse_capture_line("wss://x <-> 1618677816.8434298").unwrap(),
            CaptureLine::Connect {
                url: "wss://x".into()
            }
        );
        assert_eq!(
            parse_capture_line("wss://x <- 1.5: {\"a\":1}").unwrap(),
            CaptureLine::Sent {
                text: "{\"a\":1}".into()
            }
        );
        assert_eq!(
            parse_capture_line("https://h/p?q=1 -> 2.5: {}").unwrap(),
            CaptureLine::Rest {
                url: "https://h/p?q=1".into(),
                time: 2.5,
                body: "{}".into()
            }
        );
        assert_eq!(
            parse_capture_line("1618677817.1: [1,\"hb\"]").unwrap(),
            CaptureLine::Received {
                time: Some(1618677817.1),
                payload: Payload::Text("[1,\"hb\"]".into())
            }
        );
        assert_eq!(
            parse_capture_line("{\"raw\":true}").unwrap(),
            CaptureLine::Received {
                time: None,
                payload: Payload::Text("{\"raw\":true}".into())
            }
        );
        assert_eq!(
            parse_capture_line(r"3.0: b'\x1f\x8b\\a\'\n'").unwrap(),
            CaptureLine::Received {
                time: Some(3.0),
                payload: Payload::Binary(vec![0x1f, 0x8b, b'\\', b'a', b'\'', b'\n'])
            }
        );
        assert!(parse_capture_line(r"3.0: b'\xZZ'").is_err());
        assert_eq!(
            parse_capture_line("configuration: {}").unwrap(),
            CaptureLine::Skip
        );
    }
}

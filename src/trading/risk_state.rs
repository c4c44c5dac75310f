//! The risk manager's state that must survive a restart ([`RiskState`]: the halt and its
//! reason, the equity peak, the UTC-day baseline, the order-rate window) and the file that
//! keeps it ([`RiskStore`]).
//!
//! The file is JSON with every amount as an exact decimal string (`"10000.5"`), written to a
//! temporary file in the same directory, fsynced, renamed over the old one and the directory
//! fsynced: a crash leaves the old state or the new one, never a mix. A file that exists but
//! cannot be read is an error naming it, never an empty state: starting without a halt the
//! file may hold would trade when it must not.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::market::types::{SCALE, SCALE_DECIMALS};
use crate::trading::money::Money;
use crate::trading::risk::{Halt, HaltReason};

/// File name of the risk state inside its directory.
pub const RISK_STATE_FILE: &str = "risk_state.json";

/// Format version written to the file; other versions are refused.
const VERSION: u32 = 1;

/// The equity a UTC day started with (the daily-loss reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayBaseline {
    /// UTC day: whole days since the UNIX epoch.
    pub day: i64,
    /// Equity at that day's first update.
    pub start_equity: Money,
}

/// Everything of [`crate::trading::risk::RiskManager`] that a restart must not forget
/// (see `RiskManager::state` and `RiskManager::restore`). Serializes with exact decimal
/// strings for amounts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "StateRepr", try_from = "StateRepr")]
pub struct RiskState {
    /// The halt in force, with its reason and since/until.
    pub halt: Option<Halt>,
    /// Highest equity seen (the drawdown reference).
    pub equity_peak: Option<Money>,
    /// The current UTC day's baseline.
    pub day: Option<DayBaseline>,
    /// Times of recent approvals (the order-rate window), oldest first, ms.
    pub approvals_ms: Vec<i64>,
}

impl RiskState {
    /// Whether the halt in force is the kill switch.
    pub fn kill_switch(&self) -> bool {
        self.halt
            .as_ref()
            .is_some_and(|h| h.reason == HaltReason::KillSwitch)
    }
}

/// Parses exact decimal text (`"-12.5"`, at most 8 decimals, no exponent) into the full
/// `i128` range of [`Money`].
fn parse_money(text: &str) -> Result<Money, String> {
    let bad = || format!("expected an exact decimal amount such as \"1000.5\", got {text:?}");
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty()
        || !all_digits(int)
        || !all_digits(frac)
        || (digits.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    if frac.len() > SCALE_DECIMALS as usize {
        return Err(format!("{text:?} has more than {SCALE_DECIMALS} decimals"));
    }
    let overflow = || format!("{text:?} is out of range");
    let mut v: i128 = 0;
    for b in int.bytes() {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add((b - b'0') as i128))
            .ok_or_else(overflow)?;
    }
    let mut f: i128 = 0;
    for k in 0..SCALE_DECIMALS as usize {
        f = f * 10 + frac.as_bytes().get(k).map_or(0, |&b| (b - b'0') as i128);
    }
    let raw = v
        .checked_mul(SCALE as i128)
        .and_then(|v| v.checked_add(f))
        .ok_or_else(overflow)?;
    Ok(Money(if neg { -raw } else { raw }))
}

/// A [`Money`] written as its exact decimal text.
#[derive(Debug, Clone, Copy)]
struct MoneyText(Money);

impl Serialize for MoneyText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for MoneyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_money(&text)
            .map(MoneyText)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ReasonRepr {
    Drawdown {
        peak: MoneyText,
        drawdown: MoneyText,
        limit_bps: u32,
    },
    DailyLoss {
        day_start: MoneyText,
        loss: MoneyText,
        limit_bps: u32,
    },
    StaleData {
        symbol: String,
        silent_ms: i64,
        limit_ms: i64,
    },
    ExtremeMove {
        symbol: String,
        move_bps: u64,
        limit_bps: u32,
        window_ms: i64,
    },
    KillSwitch,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HaltRepr {
    reason: ReasonRepr,
    /// Redundant with the reason, for whoever reads the file; checked on load.
    kill_switch: bool,
    since_ms: i64,
    until_ms: Option<i64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DayRepr {
    day: i64,
    start_equity: MoneyText,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateRepr {
    version: u32,
    halt: Option<HaltRepr>,
    equity_peak: Option<MoneyText>,
    day: Option<DayRepr>,
    approvals_ms: Vec<i64>,
}

impl From<HaltReason> for ReasonRepr {
    fn from(r: HaltReason) -> Self {
        match r {
            HaltReason::Drawdown {
                peak,
                drawdown,
                limit_bps,
            } => Self::Drawdown {
                peak: MoneyText(peak),
                drawdown: MoneyText(drawdown),
                limit_bps,
            },
            HaltReason::DailyLoss {
                day_start,
                loss,
                limit_bps,
            } => Self::DailyLoss {
                day_start: MoneyText(day_start),
                loss: MoneyText(loss),
                limit_bps,
            },
            HaltReason::StaleData {
                symbol,
                silent_ms,
                limit_ms,
            } => Self::StaleData {
                symbol,
                silent_ms,
                limit_ms,
            },
            HaltReason::ExtremeMove {
                symbol,
                move_bps,
                limit_bps,
                window_ms,
            } => Self::ExtremeMove {
                symbol,
                move_bps,
                limit_bps,
                window_ms,
            },
            HaltReason::KillSwitch => Self::KillSwitch,
        }
    }
}

impl From<ReasonRepr> for HaltReason {
    fn from(r: ReasonRepr) -> Self {
        match r {
            ReasonRepr::Drawdown {
                peak,
                drawdown,
                limit_bps,
            } => Self::Drawdown {
                peak: peak.0,
                drawdown: drawdown.0,
                limit_bps,
            },
            ReasonRepr::DailyLoss {
                day_start,
                loss,
                limit_bps,
            } => Self::DailyLoss {
                day_start: day_start.0,
                loss: loss.0,
                limit_bps,
            },
            ReasonRepr::StaleData {
                symbol,
                silent_ms,
                limit_ms,
            } => Self::StaleData {
                symbol,
                silent_ms,
                limit_ms,
            },
            ReasonRepr::ExtremeMove {
                symbol,
                move_bps,
                limit_bps,
                window_ms,
            } => Self::ExtremeMove {
                symbol,
                move_bps,
                limit_bps,
                window_ms,
            },
            ReasonRepr::KillSwitch => Self::KillSwitch,
        }
    }
}

impl From<RiskState> for StateRepr {
    fn from(s: RiskState) -> Self {
        Self {
            version: VERSION,
            halt: s.halt.map(|h| HaltRepr {
                kill_switch: h.reason == HaltReason::KillSwitch,
                reason: h.reason.into(),
                since_ms: h.since_ms,
                until_ms: h.until_ms,
            }),
            equity_peak: s.equity_peak.map(MoneyText),
            day: s.day.map(|d| DayRepr {
                day: d.day,
                start_equity: MoneyText(d.start_equity),
            }),
            approvals_ms: s.approvals_ms,
        }
    }
}

impl TryFrom<StateRepr> for RiskState {
    type Error = String;

    fn try_from(r: StateRepr) -> Result<Self, String> {
        if r.version != VERSION {
            return Err(format!(
                "format version {} is not the supported {VERSION}",
                r.version
            ));
        }
        let halt = match r.halt {
            None => None,
            Some(h) => {
                let reason = HaltReason::from(h.reason);
                if h.kill_switch != (reason == HaltReason::KillSwitch) {
                    return Err(format!(
                        "halt says kill_switch = {} but its reason is {reason:?}",
                        h.kill_switch
                    ));
                }
                Some(Halt {
                    reason,
                    since_ms: h.since_ms,
                    until_ms: h.until_ms,
                })
            }
        };
        Ok(Self {
            halt,
            equity_peak: r.equity_peak.map(|m| m.0),
            day: r.day.map(|d| DayBaseline {
                day: d.day,
                start_equity: d.start_equity.0,
            }),
            approvals_ms: r.approvals_ms,
        })
    }
}

/// Why the risk state could not be loaded or saved; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum RiskStoreError {
    /// Reading, writing, syncing or renaming failed.
    #[error("risk state {path}: {source}")]
    Io {
        /// The file (or its directory, or the temporary file).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file exists but does not hold a risk state.
    #[error("risk state {path} cannot be read: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// The file that keeps a [`RiskState`] across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskStore {
    path: PathBuf,
}

impl RiskStore {
    /// A store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// A store at `dir/`[`RISK_STATE_FILE`].
    pub fn in_dir(dir: &Path) -> Self {
        Self::new(dir.join(RISK_STATE_FILE))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    }

    /// The saved state: `Ok(None)` only when the file does not exist; a file that exists but
    /// cannot be read or parsed is an error.
    pub fn load(&self) -> Result<Option<RiskState>, RiskStoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(RiskStoreError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let malformed = |why: String| RiskStoreError::Malformed {
            path: self.path.clone(),
            why,
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(malformed("the file is empty".into()));
        }
        serde_json::from_slice::<RiskState>(&bytes)
            .map(Some)
            .map_err(|e| malformed(e.to_string()))
    }

    /// Replaces the saved state atomically and durably: when this returns `Ok` the new
    /// state is on disk; after a crash at any point the file holds the old state or the new.
    pub fn save(&self, state: &RiskState) -> Result<(), RiskStoreError> {
        let dir = self.dir();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RiskStoreError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| RISK_STATE_FILE.to_string());
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut json = serde_json::to_vec_pretty(state).map_err(|e| RiskStoreError::Malformed {
            path: self.path.clone(),
            why: format!("could not encode: {e}"),
        })?;
        json.push(b'\n');
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(RiskStoreError::Io { path: tmp, source });
        }
        if let Err(source) = std::fs::rename(&tmp, &self.path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(RiskStoreError::Io {
                path: self.path.clone(),
                source,
            });
        }
        // The rename is durable only once the directory is.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_state() -> RiskState {
        RiskState {
            halt: Some(Halt {
                reason: HaltReason::Drawdown {
                    peak: Money::parse("10000.12345678").unwrap(),
                    drawdown: Money::parse("1000.00000001").unwrap(),
                    limit_bps: 1000,
                },
                since_ms: 1_700_000_000_123,
                until_ms: None,
            }),
            // Beyond i64 raw: the text form keeps every digit.
            equity_peak: Some(Money(123_456_789_012_345_678_901_234_567_i128)),
            day: Some(DayBaseline {
                day: 19_675,
                start_equity: Money::parse("-0.5").unwrap(),
            }),
            approvals_ms: vec![1, 2, 1_700_000_000_000],
        }
    }

    #[test]
    fn money_text_is_exact_and_strict() {
        for (text, raw) in [
            ("0", 0i128),
            ("1", 100_000_000),
            ("-12.5", -1_250_000_000),
            ("0.00000001", 1),
            (
                "1234567890123456789012.00000001",
                123_456_789_012_345_678_901_200_000_001,
            ),
        ] {
            assert_eq!(parse_money(text), Ok(Money(raw)), "{text}");
            assert_eq!(parse_money(&Money(raw).to_string()), Ok(Money(raw)));
        }
        for bad in [
            "",
            "-",
            ".5",
            "5.",
            "1e5",
            "+1",
            " 1",
            "1.000000001",
            "0x10",
            "1,5",
            "--1",
        ] {
            assert!(parse_money(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_money(&"9".repeat(40)).is_err());
    }

    #[test]
    fn round_trip_through_the_file_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let store = RiskStore::in_dir(dir.path());
        assert_eq!(store.load().unwrap(), None);
        let state = full_state();
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), Some(state.clone()));
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(text.contains("\"10000.12345678\""), "{text}");
        assert!(text.contains("\"1234567890123456789.01234567\""), "{text}");
        assert!(text.contains("\"kill_switch\": false"), "{text}");
        // Overwriting replaces it and leaves no temporary file behind.
        let killed = RiskState {
            halt: Some(Halt {
                reason: HaltReason::KillSwitch,
                since_ms: 5,
                until_ms: None,
            }),
            ..RiskState::default()
        };
        store.save(&killed).unwrap();
        let back = store.load().unwrap().unwrap();
        assert!(back.kill_switch());
        assert_eq!(back, killed);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![RISK_STATE_FILE.to_string()]);
    }

    #[test]
    fn every_halt_reason_round_trips() {
        let reasons = [
            HaltReason::DailyLoss {
                day_start: Money::from_units(10_000),
                loss: Money::parse("300.5").unwrap(),
                limit_bps: 300,
            },
            HaltReason::StaleData {
                symbol: "ETHUSDT".into(),
                silent_ms: 10_001,
                limit_ms: 10_000,
            },
            HaltReason::ExtremeMove {
                symbol: "BTCUSDT".into(),
                move_bps: 502,
                limit_bps: 500,
                window_ms: 60_000,
            },
            HaltReason::KillSwitch,
        ];
        for reason in reasons {
            let s = RiskState {
                halt: Some(Halt {
                    reason,
                    since_ms: 7,
                    until_ms: Some(9),
                }),
                ..full_state()
            };
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(
                serde_json::from_str::<RiskState>(&json).unwrap(),
                s,
                "{json}"
            );
        }
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = RiskStore::in_dir(dir.path());
        store.save(&full_state()).unwrap();
        let good = std::fs::read_to_string(store.path()).unwrap();
        let bad = [
            String::new(),
            "\n".into(),
            good[..good.len() / 2].to_string(),
            good.replace("\"10000.12345678\"", "10000.12345678"),
            good.replace("\"10000.12345678\"", "\"1e4\""),
            good.replace("\"version\": 1", "\"version\": 2"),
            good.replace("\"kill_switch\": false", "\"kill_switch\": true"),
            good.replace("\"approvals_ms\"", "\"approvals\""),
            "{}".into(),
        ];
        for text in bad {
            std::fs::write(store.path(), &text).unwrap();
            let err = store.load().unwrap_err();
            assert!(
                matches!(err, RiskStoreError::Malformed { .. }),
                "{text}: {err}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&store.path().display().to_string()), "{msg}");
        }
        // A path that is not a readable file is an I/O error, not "no state".
        let not_a_file = RiskStore::new(dir.path());
        assert!(matches!(not_a_file.load(), Err(RiskStoreError::Io { .. })));
    }
}

//! Date splits and the in-sample refusal: the time arguments of `train --until` and
//! `evaluate`/`backtest --from/--to`, the training range and lineage a checkpoint records, and
//! the checks that keep a model from being scored on data it learned from.
//!
//! **Ranges.** Times are ms since the epoch, UTC. A tested range is half-open `[from, to)`:
//! decisions at candle closes in it, scored on what follows inside it. A training range runs
//! from the first candle's open to the last candle's close (validation and held-out parts
//! included: they chose the kept weights). `train --until T` keeps the candles that close at or
//! before `T`, so a model trained with `--until T` and tested `--from T` never saw a scored
//! candle.
//!
//! **Lineage.** A checkpoint's training ranges are those of its own run and of every
//! checkpoint it was warm-started from; a checkpoint whose ancestry is not fully recorded
//! (online learning, older builds) has an unknown range, which counts as overlapping.

use crate::models::checkpoint::{CheckpointMeta, DataRange};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The time forms every time flag accepts, as error messages quote them.
pub const TIME_FORMS: &str = "an ISO-8601 date or datetime in UTC (2021-03-01, \
     2021-03-01T12:00, 2021-03-01T12:00:00Z, offsets like +02:00 allowed) or epoch milliseconds";

/// A time flag that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {text:?}: expected {TIME_FORMS}")]
pub struct TimeArgError {
    /// The flag, with its dashes (`--until`).
    pub flag: String,
    /// What was given.
    pub text: String,
}

/// Parses the value of time flag `flag` (e.g. `--until`): an ISO-8601 date (midnight UTC) or
/// datetime (UTC unless an offset is given), or epoch milliseconds (integers below 10^11 are
/// read as epoch seconds, as every other time flag reads them).
pub fn parse_instant(flag: &str, text: &str) -> Result<i64, TimeArgError> {
    crate::analysis::analyze::parse_time(text).map_err(|_| TimeArgError {
        flag: flag.to_string(),
        text: text.to_string(),
    })
}

/// A half-open time range `[from_ms, to_ms)`, ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    /// Start, inclusive.
    pub from_ms: i64,
    /// End, exclusive (`i64::MAX`: open-ended).
    pub to_ms: i64,
}

/// Why a `--from/--to` pair is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// One of the times could not be read.
    #[error(transparent)]
    Time(#[from] TimeArgError),
    /// `--to` is not after `--from`.
    #[error("--to {to} is not after --from {from}: expected --from T1 --to T2 with T1 < T2")]
    Empty {
        /// `--from` as ISO.
        from: String,
        /// `--to` as ISO.
        to: String,
    },
}

impl TimeRange {
    /// Everything.
    pub const ALL: Self = Self {
        from_ms: i64::MIN,
        to_ms: i64::MAX,
    };

    /// The range of `--from`/`--to` (either may be absent: open on that side); `to` must be
    /// after `from`.
    pub fn from_flags(from: Option<&str>, to: Option<&str>) -> Result<Self, RangeError> {
        let from_ms = from
            .map(|t| parse_instant("--from", t))
            .transpose()?
            .unwrap_or(i64::MIN);
        let to_ms = to
            .map(|t| parse_instant("--to", t))
            .transpose()?
            .unwrap_or(i64::MAX);
        if to_ms <= from_ms {
            return Err(RangeError::Empty {
                from: iso(from_ms),
                to: iso(to_ms),
            });
        }
        Ok(Self { from_ms, to_ms })
    }

    /// True when the two ranges share an instant.
    pub fn overlaps(&self, other: &TimeRange) -> bool {
        self.from_ms < other.to_ms && other.from_ms < self.to_ms
    }

    /// True when `t_ms` lies inside.
    pub fn contains(&self, t_ms: i64) -> bool {
        self.from_ms <= t_ms && t_ms < self.to_ms
    }

    /// The training span of a checkpoint's [`DataRange`]: first open to last close.
    pub fn of_data(r: &DataRange) -> Self {
        Self {
            from_ms: r.start_ms,
            // Older checkpoints did not record the interval: their last candle counts as
            // reaching up to one ms past its open, the least it can have covered.
            to_ms: r.end_ms.saturating_add(r.interval_ms.max(1)),
        }
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", iso(self.from_ms), iso(self.to_ms))
    }
}

/// `t_ms` as ISO-8601 UTC (`2021-03-01T12:00:00Z`; `-inf`/`+inf` for open ends).
pub fn iso(t_ms: i64) -> String {
    if t_ms == i64::MIN {
        return "-inf".into();
    }
    if t_ms == i64::MAX {
        return "+inf".into();
    }
    let day = t_ms.div_euclid(86_400_000);
    let ms = t_ms.rem_euclid(86_400_000);
    let (y, m, d) = crate::collector::schema::civil_from_days(day);
    let (h, mi, s, milli) = (
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1_000 % 60,
        ms % 1_000,
    );
    if milli == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
    }
}

/// Where a checkpoint's training data came from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataSource {
    /// File name (no folder: the same data moved elsewhere keeps its lineage).
    pub file: String,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// Candles of it used.
    pub candles: usize,
    /// Their interval, ms.
    pub interval_ms: i64,
}

/// A checkpoint named by model and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// Model name (folder).
    pub model: String,
    /// Checkpoint id.
    pub id: String,
}

impl fmt::Display for CheckpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.model, self.id)
    }
}

/// What a checkpoint learned from: data, ancestors, and (for a DQN) the CNN whose features
/// its state holds. `Default` is "not recorded" (online learning, older builds).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Lineage {
    /// The candle file of the training run (None: not recorded).
    pub data: Option<DataSource>,
    /// The reference symbol's candle file, if one was given.
    pub reference: Option<DataSource>,
    /// The checkpoint this one was warm-started from.
    pub parent: Option<CheckpointRef>,
    /// For a DQN: the CNN checkpoint whose features it learned (None: none, or not recorded).
    pub cnn: Option<CheckpointRef>,
    /// `train --until` of the run, ms.
    pub until_ms: Option<i64>,
    /// Every span the weights learned from, this run's and every ancestor's.
    pub training_ranges: Vec<DataRange>,
    /// True when `training_ranges` covers the whole ancestry (false: unknown range).
    pub complete: bool,
}

impl Lineage {
    /// The spans the weights learned from, or None when the ancestry is not fully recorded.
    pub fn known_ranges(&self) -> Option<Vec<TimeRange>> {
        self.complete.then(|| {
            self.training_ranges
                .iter()
                .map(TimeRange::of_data)
                .collect()
        })
    }

    /// The smallest range holding every training span (None: unknown).
    pub fn hull(&self) -> Option<TimeRange> {
        let r = self.known_ranges()?;
        Some(TimeRange {
            from_ms: r.iter().map(|r| r.from_ms).min()?,
            to_ms: r.iter().map(|r| r.to_ms).max()?,
        })
    }
}

/// One line on a checkpoint's training range and lineage, for every report.
pub fn lineage_line(meta: &CheckpointMeta) -> String {
    let l = &meta.lineage;
    let mut out = format!("{}/{}: trained on ", meta.model_name, meta.id);
    match l.known_ranges() {
        Some(r) if !r.is_empty() => {
            let spans: Vec<String> = r.iter().map(ToString::to_string).collect();
            out.push_str(&spans.join(" + "));
        }
        _ => out.push_str("an unrecorded range"),
    }
    if let Some(d) = &l.data {
        out.push_str(&format!(
            "; data {} ({} candles of {} ms, sha256 {})",
            d.file,
            d.candles,
            d.interval_ms,
            &d.sha256[..d.sha256.len().min(16)]
        ));
    }
    if let Some(r) = &l.reference {
        out.push_str(&format!(
            "; reference {} (sha256 {})",
            r.file,
            &r.sha256[..r.sha256.len().min(16)]
        ));
    }
    if let Some(u) = l.until_ms {
        out.push_str(&format!("; --until {}", iso(u)));
    }
    match &l.parent {
        Some(p) => out.push_str(&format!("; warm-started from {p}")),
        None if l.data.is_some() => out.push_str("; fresh start"),
        None => {}
    }
    if let Some(c) = &l.cnn {
        out.push_str(&format!("; CNN features from {c}"));
    }
    out
}

/// Why a checkpoint may not be scored on a tested range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InSampleError {
    /// Its training range overlaps the tested range.
    #[error(
        "checkpoint {checkpoint} was trained on {trained}, which overlaps the tested range \
         {tested}: its numbers would be in-sample. Test from {next} on (--from), train on \
         earlier candles (train --until {tested_from}), or pass --allow-in-sample to see the \
         numbers marked in-sample"
    )]
    Overlap {
        /// `model/id`.
        checkpoint: String,
        /// Training spans, joined.
        trained: String,
        /// The tested range.
        tested: TimeRange,
        /// The tested range's start, ISO.
        tested_from: String,
        /// The end of the training range, ISO.
        next: String,
    },
    /// Its training range is not recorded.
    #[error(
        "checkpoint {checkpoint} does not record its whole training range (saved by online \
         learning, or by an older build), so it may have learned from the tested range \
         {tested}; retrain it with `mmtrader train ... --until`, or pass --allow-in-sample to \
         see the numbers marked in-sample"
    )]
    Unknown {
        /// `model/id`.
        checkpoint: String,
        /// The tested range.
        tested: TimeRange,
    },
}

/// Checks one checkpoint against a tested range.
pub fn check_out_of_sample(meta: &CheckpointMeta, tested: TimeRange) -> Result<(), InSampleError> {
    let checkpoint = format!("{}/{}", meta.model_name, meta.id);
    let Some(ranges) = meta.lineage.known_ranges().filter(|r| !r.is_empty()) else {
        return Err(InSampleError::Unknown { checkpoint, tested });
    };
    if ranges.iter().any(|r| r.overlaps(&tested)) {
        let trained: Vec<String> = ranges.iter().map(ToString::to_string).collect();
        let end = ranges
            .iter()
            .map(|r| r.to_ms)
            .max()
            .unwrap_or(tested.from_ms);
        return Err(InSampleError::Overlap {
            checkpoint,
            trained: trained.join(" + "),
            tested,
            tested_from: iso(tested.from_ms),
            next: iso(end),
        });
    }
    Ok(())
}

/// The in-sample refusal every scoring command makes: `Ok(false)` when no checkpoint learned
/// from `tested`; with `allow_in_sample`, `Ok(true)` instead of the refusal (the caller then
/// marks every number in-sample); otherwise the first checkpoint's refusal.
pub fn refuse_in_sample(
    checkpoints: &[&CheckpointMeta],
    tested: TimeRange,
    allow_in_sample: bool,
) -> Result<bool, InSampleError> {
    let mut in_sample = false;
    for m in checkpoints {
        if let Err(e) = check_out_of_sample(m, tested) {
            if !allow_in_sample {
                return Err(e);
            }
            in_sample = true;
        }
    }
    Ok(in_sample)
}

/// A DQN checkpoint beside a CNN checkpoint it was not trained with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "DQN checkpoint {dqn} learned its state from {trained_with}, not from CNN checkpoint {cnn}: \
     its decisions would read features it never saw. Pick the DQN trained with {cnn} (--dqn), \
     the CNN it was trained with (--cnn), or train one with `mmtrader train rl --cnn`"
)]
pub struct LineageMismatch {
    /// `model/id` of the DQN.
    pub dqn: String,
    /// The CNN it records (or "no recorded CNN").
    pub trained_with: String,
    /// `model/id` of the CNN beside it.
    pub cnn: String,
}

/// Refuses a DQN checkpoint whose recorded CNN is not `cnn` (or that records none).
pub fn check_dqn_lineage(
    dqn: &CheckpointMeta,
    cnn: &CheckpointMeta,
) -> Result<(), LineageMismatch> {
    let want = CheckpointRef {
        model: cnn.model_name.clone(),
        id: cnn.id.clone(),
    };
    match &dqn.lineage.cnn {
        Some(c) if *c == want => Ok(()),
        other => Err(LineageMismatch {
            dqn: format!("{}/{}", dqn.model_name, dqn.id),
            trained_with: other.as_ref().map_or_else(
                || "no recorded CNN".to_string(),
                |c| format!("CNN checkpoint {c}"),
            ),
            cnn: want.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const DAY: i64 = 86_400_000;
    /// 2021-03-01T00:00:00Z.
    const MAR1: i64 = 1_614_556_800_000;

    fn meta(id: &str, ranges: &[(i64, i64)], complete: bool) -> CheckpointMeta {
        CheckpointMeta {
            id: id.into(),
            model_name: "pivot_cnn".into(),
            input_layout_version: 0,
            metric_name: "loss".into(),
            metrics: BTreeMap::new(),
            data_range: DataRange::default(),
            created_ms: 0,
            weights_file: String::new(),
            weights_sha256: String::new(),
            model_config: serde_json::Value::Null,
            lineage: Lineage {
                training_ranges: ranges
                    .iter()
                    .map(|&(s, e)| DataRange {
                        start_ms: s,
                        end_ms: e,
                        interval_ms: 3_600_000,
                    })
                    .collect(),
                complete,
                ..Lineage::default()
            },
        }
    }

    #[test]
    fn time_flags_take_iso_dates_datetimes_and_epoch_ms() {
        assert_eq!(parse_instant("--until", "2021-03-01"), Ok(MAR1));
        assert_eq!(
            parse_instant("--until", "2021-03-01T12:30"),
            Ok(MAR1 + 45_000_000)
        );
        assert_eq!(
            parse_instant("--until", "2021-03-01T12:30:00Z"),
            Ok(MAR1 + 45_000_000)
        );
        assert_eq!(
            parse_instant("--until", "2021-03-01T14:30:00+02:00"),
            Ok(MAR1 + 45_000_000)
        );
        assert_eq!(parse_instant("--until", &MAR1.to_string()), Ok(MAR1));
        let e = parse_instant("--until", "March 1st").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("--until \"March 1st\": expected an ISO-8601 date"),
            "{msg}"
        );
        assert!(msg.contains("epoch milliseconds"), "{msg}");
        assert!(parse_instant("--from", "2021-13-01").is_err());
    }

    #[test]
    fn ranges_from_flags_are_half_open_and_must_be_ordered() {
        let r = TimeRange::from_flags(Some("2021-03-01"), Some("2021-03-02")).unwrap();
        assert_eq!(
            r,
            TimeRange {
                from_ms: MAR1,
                to_ms: MAR1 + DAY
            }
        );
        assert!(r.contains(MAR1) && !r.contains(MAR1 + DAY));
        assert_eq!(
            r.to_string(),
            "[2021-03-01T00:00:00Z, 2021-03-02T00:00:00Z)"
        );
        let open = TimeRange::from_flags(Some("2021-03-01"), None).unwrap();
        assert_eq!(open.to_ms, i64::MAX);
        assert_eq!(TimeRange::from_flags(None, None).unwrap(), TimeRange::ALL);
        let e = TimeRange::from_flags(Some("2021-03-02"), Some("2021-03-01")).unwrap_err();
        assert!(
            e.to_string()
                .contains("--to 2021-03-01T00:00:00Z is not after --from")
        );
        let e = TimeRange::from_flags(Some("x"), None).unwrap_err();
        assert!(e.to_string().starts_with("--from \"x\""), "{e}");
        // Touching ranges do not overlap: training up to T, testing from T.
        let train = TimeRange {
            from_ms: 0,
            to_ms: MAR1,
        };
        assert!(!train.overlaps(&open));
        assert!(train.overlaps(&TimeRange {
            from_ms: MAR1 - 1,
            to_ms: i64::MAX
        }));
        assert_eq!(iso(MAR1 + 1), "2021-03-01T00:00:00.001Z");
    }

    #[test]
    fn overlapping_or_unknown_training_ranges_are_refused_unless_allowed() {
        let tested = TimeRange {
            from_ms: MAR1,
            to_ms: MAR1 + 30 * DAY,
        };
        // Last candle opens an hour before March 1st and closes at it: out of sample.
        let before = meta("a", &[(MAR1 - 60 * DAY, MAR1 - 3_600_000)], true);
        assert_eq!(check_out_of_sample(&before, tested), Ok(()));
        // One more candle reaches into the tested range.
        let into = meta("b", &[(MAR1 - 60 * DAY, MAR1)], true);
        let e = check_out_of_sample(&into, tested).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("pivot_cnn/b was trained on [2020-12-31T00:00:00Z, 2021-03-01T01:00:00Z)")
                && msg.contains(
                    "overlaps the tested range [2021-03-01T00:00:00Z, 2021-03-31T00:00:00Z)"
                )
                && msg.contains("--allow-in-sample"),
            "{msg}"
        );
        // An ancestor trained after the tested range counts too.
        let parent_after = meta(
            "c",
            &[
                (MAR1 - 60 * DAY, MAR1 - DAY),
                (MAR1 + 10 * DAY, MAR1 + 11 * DAY),
            ],
            true,
        );
        assert!(check_out_of_sample(&parent_after, tested).is_err());
        let unknown = meta("d", &[(0, DAY)], false);
        assert!(matches!(
            check_out_of_sample(&unknown, tested),
            Err(InSampleError::Unknown { .. })
        ));
        assert_eq!(refuse_in_sample(&[&before], tested, false), Ok(false));
        assert!(refuse_in_sample(&[&before, &into], tested, false).is_err());
        assert_eq!(refuse_in_sample(&[&before, &into], tested, true), Ok(true));
        assert_eq!(refuse_in_sample(&[&unknown], tested, true), Ok(true));
    }

    #[test]
    fn a_dqn_is_bound_to_the_cnn_it_learned_from() {
        let cnn = meta("cnn1", &[], true);
        let other = meta("cnn2", &[], true);
        let mut dqn = meta("dqn1", &[], true);
        dqn.model_name = "dqn_agent".into();
        let e = check_dqn_lineage(&dqn, &cnn).unwrap_err();
        assert!(
            e.to_string()
                .contains("learned its state from no recorded CNN"),
            "{e}"
        );
        dqn.lineage.cnn = Some(CheckpointRef {
            model: "pivot_cnn".into(),
            id: "cnn1".into(),
        });
        assert_eq!(check_dqn_lineage(&dqn, &cnn), Ok(()));
        let e = check_dqn_lineage(&dqn, &other).unwrap_err();
        assert_eq!(e.cnn, "pivot_cnn/cnn2");
        assert!(
            e.to_string()
                .starts_with("DQN checkpoint dqn_agent/dqn1 learned its state from CNN checkpoint pivot_cnn/cnn1, not from CNN checkpoint pivot_cnn/cnn2"),
            "{e}"
        );
    }
}

//! Retention by age and total size: of market data (whole day partitions go, oldest first)
//! and of the inference history in the state database (oldest steps first).

use std::fs;
use std::path::{Path, PathBuf};

use super::StorageError;
use super::columns::Dataset;
use super::parse_date;
use super::partition::{MARKET_DIR, hive_children};
use super::state::StateDb;

/// One day partition on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayPartition {
    /// Days since the UNIX epoch.
    pub day: i64,
    /// Folder `.../date=YYYY-MM-DD`.
    pub path: PathBuf,
    /// Bytes of the files inside.
    pub bytes: u64,
}

/// What retention removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Partition folders deleted, oldest first.
    pub removed: Vec<PathBuf>,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Bytes of market data left.
    pub bytes_left: u64,
}

fn dir_bytes(dir: &Path) -> Result<u64, StorageError> {
    let mut total = 0;
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| StorageError::io("listing", dir, e))?;
        let meta = entry
            .metadata()
            .map_err(|e| StorageError::io("reading size of", &entry.path(), e))?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Every day partition of every dataset, oldest day first.
pub fn day_partitions(root: &Path) -> Result<Vec<DayPartition>, StorageError> {
    let mut out = Vec::new();
    for ds in Dataset::ALL {
        let base = root.join(MARKET_DIR).join(ds.name());
        let parents = if ds.by_symbol() {
            hive_children(&base, "symbol")?
                .into_iter()
                .map(|(_, p)| p)
                .collect()
        } else {
            vec![base]
        };
        for parent in parents {
            for (date, path) in hive_children(&parent, "date")? {
                let Some(day) = parse_date(&date) else {
                    continue;
                };
                let bytes = dir_bytes(&path)?;
                out.push(DayPartition { day, path, bytes });
            }
        }
    }
    out.sort_by(|a, b| (a.day, &a.path).cmp(&(b.day, &b.path)));
    Ok(out)
}

/// Deletes partitions older than `max_age_days` and then the oldest ones while the total
/// exceeds `max_bytes`. Today's partitions (`day >= today`) are never deleted: a recorder may
/// be writing into them.
pub fn apply(
    root: &Path,
    max_age_days: Option<u32>,
    max_bytes: Option<u64>,
    today: i64,
) -> Result<RetentionReport, StorageError> {
    let parts = day_partitions(root)?;
    let mut total: u64 = parts.iter().map(|p| p.bytes).sum();
    let mut report = RetentionReport::default();
    for p in parts {
        if p.day >= today {
            break;
        }
        let too_old = max_age_days.is_some_and(|age| p.day < today - i64::from(age));
        let too_big = max_bytes.is_some_and(|max| total > max);
        if !(too_old || too_big) {
            // Sorted by day: nothing later is older, and the size is within the limit.
            break;
        }
        fs::remove_dir_all(&p.path).map_err(|e| StorageError::io("deleting", &p.path, e))?;
        total -= p.bytes;
        report.bytes_freed += p.bytes;
        report.removed.push(p.path.clone());
        // A symbol folder left empty goes too, so listings stay short.
        if let Some(parent) = p.path.parent()
            && parent
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("symbol="))
            && fs::read_dir(parent).is_ok_and(|mut d| d.next().is_none())
        {
            let _ = fs::remove_dir(parent);
        }
    }
    report.bytes_left = total;
    Ok(report)
}

/// What retention of the inference history did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryRetention {
    /// Rows deleted from the history tables.
    pub rows_deleted: u64,
    /// Live bytes of the state database before.
    pub bytes_before: u64,
    /// Live bytes after (the file's size once reclaimed).
    pub bytes_after: u64,
}

/// Deletes history rows older than `max_age_ms` before `now_ms`, then the oldest steps while
/// the state database exceeds `max_bytes` (down to 90% of it, so the next batches do not
/// trip the limit again at once), and gives the freed pages back to the filesystem.
pub fn apply_history(
    db: &StateDb,
    max_age_ms: Option<i64>,
    max_bytes: Option<u64>,
    now_ms: i64,
) -> Result<HistoryRetention, StorageError> {
    let bytes_before = db.used_bytes()?;
    let mut rows_deleted = 0;
    if let Some(age) = max_age_ms {
        rows_deleted += db.delete_history_before(now_ms.saturating_sub(age))?;
    }
    let mut used = db.used_bytes()?;
    if let Some(max) = max_bytes
        && used > max
    {
        let target = max - max / 10;
        while used > target {
            let (steps, _, _) = db.history_counts()?;
            if steps == 0 {
                break;
            }
            // Delete the share of steps that the excess is of the whole, at least one.
            let excess = u128::from(used - target);
            let n = (u128::from(steps) * excess).div_ceil(u128::from(used)) as u64;
            let deleted = db.delete_oldest_steps(n.clamp(1, steps))?;
            if deleted == 0 {
                break;
            }
            rows_deleted += deleted;
            used = db.used_bytes()?;
        }
    }
    if rows_deleted > 0 {
        db.reclaim()?;
    }
    Ok(HistoryRetention {
        rows_deleted,
        bytes_before,
        bytes_after: db.used_bytes()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::partition::partition_dir;

    fn make(root: &Path, ds: &str, sym: Option<&str>, date: &str, bytes: usize) -> PathBuf {
        let d = partition_dir(root, ds, sym, date);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("part-0000.parquet"), vec![0u8; bytes]).unwrap();
        d
    }

    #[test]
    fn age_removes_only_old_days() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let old = make(r, "trades", Some("ETHUSDT"), "2026-11-01", 10);
        let keep = make(r, "trades", Some("ETHUSDT"), "2026-11-20", 10);
        let ctl = make(r, "control", None, "2026-11-02", 10);
        let today = parse_date("2026-11-23").unwrap();
        let rep = apply(r, Some(7), None, today).unwrap();
        assert_eq!(rep.removed, vec![old.clone(), ctl.clone()]);
        assert!(!old.exists() && !ctl.exists() && keep.exists());
        assert_eq!(rep.bytes_left, 10);
    }

    #[test]
    fn size_removes_oldest_days_first_and_spares_today() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let d1 = make(r, "book", Some("BTCUSDT"), "2026-11-20", 100);
        let d1b = make(r, "candles", Some("ETHUSDT"), "2026-11-20", 100);
        let d2 = make(r, "book", Some("BTCUSDT"), "2026-11-21", 100);
        let d3 = make(r, "book", Some("BTCUSDT"), "2026-11-22", 100);
        let today = make(r, "book", Some("BTCUSDT"), "2026-11-23", 1000);
        let day = parse_date("2026-11-23").unwrap();
        let rep = apply(r, None, Some(1150), day).unwrap();
        assert_eq!(rep.removed, vec![d1.clone(), d1b.clone(), d2.clone()]);
        assert!(d3.exists());
        assert_eq!(rep.bytes_freed, 300);
        // Today's data alone is over a tiny limit, and still kept.
        let rep = apply(r, None, Some(1), day).unwrap();
        assert_eq!(rep.removed, vec![d3]);
        assert!(today.exists());
        // The empty ETHUSDT symbol folder went with its last day.
        assert!(!r.join("market/candles/symbol=ETHUSDT").exists());
    }

    #[test]
    fn no_limits_remove_nothing() {
        let dir = tempfile::tempdir().unwrap();
        make(dir.path(), "trades", Some("X"), "2020-01-01", 5);
        let rep = apply(dir.path(), None, None, 30_000).unwrap();
        assert!(rep.removed.is_empty());
        assert_eq!(rep.bytes_left, 5);
    }
}

//! The write buffer between the feed and the database: batches wait in memory up to a row
//! bound; beyond it they are spilled to files (one per batch) and read back, oldest first,
//! once memory has room again. A batch leaves the buffer only after the database took it, and
//! a spilled batch's file is deleted only then, so a crash or an outage loses nothing. Batches
//! may be written out of arrival order: rows are keyed and writes idempotent.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::pg::Row;

/// Spill-file problems.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// Creating, writing or reading a spill file failed.
    #[error("spill file {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A spill file line is not a row (a torn write from a crash).
    #[error("spill file {path} line {line}: not a stored row: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parser's message.
        message: String,
    },
}

/// One batch waiting for the database.
#[derive(Debug)]
pub struct Pending {
    /// Rows of the batch.
    pub rows: Vec<Row>,
    /// The spill file it was read from (deleted once written).
    pub spill_file: Option<PathBuf>,
}

/// Batches waiting for the database, in memory and on disk.
pub struct WriteBuffer {
    memory: VecDeque<Pending>,
    memory_rows: usize,
    max_memory_rows: usize,
    spill_dir: PathBuf,
    spilled: VecDeque<(PathBuf, usize)>,
    next_seq: u64,
}

const SPILL_PREFIX: &str = "spill-";
const SPILL_SUFFIX: &str = ".jsonl";

impl WriteBuffer {
    /// A buffer holding at most `max_memory_rows` rows in memory; spill files go to
    /// `spill_dir`, and files left there by an earlier run are picked up for writing.
    pub fn open(spill_dir: &Path, max_memory_rows: usize) -> Result<Self, SpillError> {
        let io = |source| SpillError::Io {
            path: spill_dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(spill_dir).map_err(io)?;
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(spill_dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(seq) = name
                .strip_prefix(SPILL_PREFIX)
                .and_then(|s| s.strip_suffix(SPILL_SUFFIX))
                .and_then(|s| s.parse::<u64>().ok())
            {
                found.push((seq, path));
            }
        }
        found.sort();
        let next_seq = found.last().map(|(s, _)| s + 1).unwrap_or(0);
        let mut spilled = VecDeque::new();
        for (_, path) in found {
            let rows = count_lines(&path)?;
            spilled.push_back((path, rows));
        }
        Ok(Self {
            memory: VecDeque::new(),
            memory_rows: 0,
            max_memory_rows: max_memory_rows.max(1),
            spill_dir: spill_dir.to_path_buf(),
            spilled,
            next_seq,
        })
    }

    /// Queues a batch: in memory when it fits, else in a new spill file.
    pub fn push(&mut self, rows: Vec<Row>) -> Result<(), SpillError> {
        if rows.is_empty() {
            return Ok(());
        }
        if self.memory_rows + rows.len() <= self.max_memory_rows {
            self.memory_rows += rows.len();
            self.memory.push_back(Pending {
                rows,
                spill_file: None,
            });
            return Ok(());
        }
        self.spill(&rows)
    }

    fn spill(&mut self, rows: &[Row]) -> Result<(), SpillError> {
        let path = self
            .spill_dir
            .join(format!("{SPILL_PREFIX}{:012}{SPILL_SUFFIX}", self.next_seq));
        let tmp = path.with_extension("tmp");
        let io = |source| SpillError::Io {
            path: tmp.clone(),
            source,
        };
        let file = fs::File::create(&tmp).map_err(io)?;
        let mut w = BufWriter::new(file);
        for row in rows {
            serde_json::to_writer(&mut w, row).map_err(|e| io(e.into()))?;
            w.write_all(b"\n").map_err(io)?;
        }
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        // The rename makes a spill file appear whole or not at all.
        fs::rename(&tmp, &path).map_err(io)?;
        self.next_seq += 1;
        self.spilled.push_back((path, rows.len()));
        Ok(())
    }

    /// The oldest batch to write next, reading spilled batches back while memory has room.
    pub fn front(&mut self) -> Result<Option<&Pending>, SpillError> {
        while let Some((path, n)) = self.spilled.front()
            && (self.memory.is_empty() || self.memory_rows + n <= self.max_memory_rows)
        {
            let path = path.clone();
            let rows = match read_spill(&path) {
                Ok(rows) => rows,
                Err(e @ SpillError::Corrupt { .. }) => {
                    // Set aside so one torn file cannot block everything behind it.
                    self.spilled.pop_front();
                    let _ = fs::rename(&path, path.with_extension("corrupt"));
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            self.spilled.pop_front();
            self.memory_rows += rows.len();
            self.memory.push_back(Pending {
                rows,
                spill_file: Some(path),
            });
        }
        Ok(self.memory.front())
    }

    /// Drops the front batch after the database took it (and its spill file).
    pub fn complete_front(&mut self) -> Result<(), SpillError> {
        if let Some(p) = self.memory.pop_front() {
            self.memory_rows -= p.rows.len();
            if let Some(path) = p.spill_file {
                fs::remove_file(&path).map_err(|source| SpillError::Io { path, source })?;
            }
        }
        Ok(())
    }

    /// Moves every in-memory batch to disk (at shutdown with the database unreachable).
    pub fn spill_all(&mut self) -> Result<(), SpillError> {
        while let Some(p) = self.memory.pop_front() {
            self.memory_rows -= p.rows.len();
            if p.spill_file.is_none() {
                self.spill(&p.rows)?;
            } else if let Some(path) = p.spill_file {
                // Still on disk: keep it at the front of the spill queue.
                self.spilled.push_front((path, p.rows.len()));
            }
        }
        Ok(())
    }

    /// Rows held in memory.
    pub fn memory_rows(&self) -> usize {
        self.memory_rows
    }

    /// Rows held in spill files.
    pub fn spilled_rows(&self) -> usize {
        self.spilled.iter().map(|(_, n)| n).sum()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.spilled.is_empty()
    }
}

fn count_lines(path: &Path) -> Result<usize, SpillError> {
    let file = fs::File::open(path).map_err(|source| SpillError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(BufReader::new(file).lines().count())
}

fn read_spill(path: &Path) -> Result<Vec<Row>, SpillError> {
    let io = |source| SpillError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(io)?;
    let mut rows = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        rows.push(
            serde_json::from_str(&line).map_err(|e| SpillError::Corrupt {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?,
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(from: i64, n: i64) -> Vec<Row> {
        (from..from + n)
            .map(|id| Row::Trade {
                exchange: "sim".into(),
                symbol: "ETHUSDT".into(),
                id,
                time_ms: id,
                price_e8: 1,
                qty_e8: 2,
                taker_buy: true,
            })
            .collect()
    }

    fn drain(b: &mut WriteBuffer) -> Vec<Row> {
        let mut out = Vec::new();
        while let Some(p) = b.front().unwrap() {
            out.extend(p.rows.iter().cloned());
            b.complete_front().unwrap();
        }
        out
    }

    #[test]
    fn overflow_spills_and_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = WriteBuffer::open(dir.path(), 10).unwrap();
        b.push(rows(0, 6)).unwrap();
        b.push(rows(6, 6)).unwrap(); // does not fit: spilled
        b.push(rows(12, 3)).unwrap();
        assert_eq!((b.memory_rows(), b.spilled_rows()), (9, 6));
        let all = drain(&mut b);
        let ids: Vec<i64> = all.iter().map(|r| r.time_ms()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, (0..15).collect::<Vec<_>>());
        assert!(b.is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn spilled_batches_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut b = WriteBuffer::open(dir.path(), 4).unwrap();
            b.push(rows(0, 3)).unwrap();
            b.push(rows(3, 3)).unwrap();
            b.spill_all().unwrap();
            assert_eq!(b.memory_rows(), 0);
        }
        let mut b = WriteBuffer::open(dir.path(), 4).unwrap();
        assert_eq!(b.spilled_rows(), 6);
        // Order across batches does not matter: rows are keyed, writes idempotent.
        let mut ids: Vec<i64> = drain(&mut b).iter().map(|r| r.time_ms()).collect();
        ids.sort();
        assert_eq!(ids, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn a_front_batch_not_completed_stays() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = WriteBuffer::open(dir.path(), 100).unwrap();
        b.push(rows(0, 2)).unwrap();
        assert_eq!(b.front().unwrap().unwrap().rows.len(), 2);
        assert_eq!(b.front().unwrap().unwrap().rows.len(), 2);
        b.complete_front().unwrap();
        assert!(b.front().unwrap().is_none());
    }

    #[test]
    fn a_torn_spill_file_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("spill-000000000001.jsonl"), "{not json\n").unwrap();
        let mut b = WriteBuffer::open(dir.path(), 10).unwrap();
        let err = b.front().unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(b.front().unwrap().is_none());
        assert!(dir.path().join("spill-000000000001.corrupt").exists());
    }
}

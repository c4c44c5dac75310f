//! Hive-style partitions and atomic Parquet part files.
//!
//! A part file is written as `part-NNNN.parquet.tmp` and renamed to `part-NNNN.parquet` only
//! after its footer is written and synced, so readers (which only open `*.parquet`) never see
//! a half-written file. A `.tmp` left by a crash is recovered when its footer is complete (the
//! crash hit between close and rename) and otherwise renamed to `.broken` with a warning.
//!
//! [`PartWriter`] does all of that on a dedicated thread fed by a bounded queue, so a recorder
//! running on an async runtime never encodes, compresses or `fsync`s on the reactor.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::{Compression, StorageError};

/// Subfolder of the root that holds market data.
pub const MARKET_DIR: &str = "market";
/// Suffix of a part file being written.
pub const TMP_SUFFIX: &str = ".tmp";
/// Suffix given to an unrecoverable part file left by a crash.
pub const BROKEN_SUFFIX: &str = ".broken";

/// Folder of one partition: `<root>/market/<kind>[/symbol=<S>]/date=<D>`.
pub fn partition_dir(root: &Path, kind: &str, symbol: Option<&str>, date: &str) -> PathBuf {
    let mut p = root.join(MARKET_DIR).join(kind);
    if let Some(s) = symbol {
        p.push(format!("symbol={s}"));
    }
    p.push(format!("date={date}"));
    p
}

/// Part number of a file name `part-NNNN.parquet[.tmp|.broken]`.
fn part_number(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("part-")?;
    let digits = rest.split('.').next()?;
    digits.parse().ok()
}

/// The next unused part number in a partition folder (0 for a new folder).
pub fn next_part_number(dir: &Path) -> Result<u32, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StorageError::io("listing", dir, e)),
    };
    let mut next = 0;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing", dir, e))?;
        if let Some(n) = entry.file_name().to_str().and_then(part_number) {
            next = next.max(n + 1);
        }
    }
    Ok(next)
}

/// Completed `*.parquet` files of a partition folder in part order.
pub fn part_files(dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io("listing", dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".parquet")
            && let Some(n) = part_number(name)
        {
            files.push((n, entry.path()));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Sub-folders named `<key>=<value>`, as `(value, path)` sorted by value.
pub fn hive_children(dir: &Path, key: &str) -> Result<Vec<(String, PathBuf)>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io("listing", dir, e)),
    };
    let prefix = format!("{key}=");
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing", dir, e))?;
        let name = entry.file_name();
        if let Some(value) = name.to_str().and_then(|n| n.strip_prefix(&prefix))
            && entry.path().is_dir()
        {
            out.push((value.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Writer properties shared by every dataset: compression plus the fixed-point scale.
pub fn writer_properties(compression: Compression, dataset: &str) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(compression.to_parquet())
        .set_key_value_metadata(Some(vec![
            KeyValue::new(
                "mmtrader.price_scale".to_string(),
                crate::market::types::SCALE.to_string(),
            ),
            KeyValue::new("mmtrader.dataset".to_string(), dataset.to_string()),
        ]))
        .build()
}

/// A part file being written; invisible to readers until [`PartFile::close`].
pub struct PartFile {
    tmp: PathBuf,
    path: PathBuf,
    writer: ArrowWriter<BufWriter<File>>,
    rows: usize,
}

impl PartFile {
    /// Creates the next part file of a partition folder (creating the folder).
    pub fn create(
        dir: &Path,
        schema: SchemaRef,
        props: WriterProperties,
    ) -> Result<Self, StorageError> {
        fs::create_dir_all(dir).map_err(|e| StorageError::io("creating", dir, e))?;
        let n = next_part_number(dir)?;
        let path = dir.join(format!("part-{n:04}.parquet"));
        let tmp = dir.join(format!("part-{n:04}.parquet{TMP_SUFFIX}"));
        let file = File::create_new(&tmp).map_err(|e| StorageError::io("creating", &tmp, e))?;
        let writer =
            ArrowWriter::try_new(BufWriter::new(file), schema, Some(props)).map_err(|source| {
                StorageError::Parquet {
                    path: tmp.display().to_string(),
                    source,
                }
            })?;
        Ok(Self {
            tmp,
            path,
            writer,
            rows: 0,
        })
    }

    /// Appends a batch (buffered into row groups by the writer).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StorageError> {
        self.rows += batch.num_rows();
        self.writer
            .write(batch)
            .map_err(|source| StorageError::Parquet {
                path: self.tmp.display().to_string(),
                source,
            })
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes the footer, syncs, and renames the file into place; returns its path and size.
    pub fn close(self) -> Result<(PathBuf, u64), StorageError> {
        let Self {
            tmp, path, writer, ..
        } = self;
        writer.close().map_err(|source| StorageError::Parquet {
            path: tmp.display().to_string(),
            source,
        })?;
        publish(&tmp, &path)?;
        let bytes = fs::metadata(&path)
            .map_err(|e| StorageError::io("reading size of", &path, e))?
            .len();
        Ok((path, bytes))
    }
}

/// Syncs a finished temporary file, renames it, and syncs the folder so the rename survives.
fn publish(tmp: &Path, path: &Path) -> Result<(), StorageError> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| StorageError::io("syncing", tmp, e))?;
    fs::rename(tmp, path).map_err(|e| StorageError::io("renaming", tmp, e))?;
    if let Some(dir) = path.parent() {
        // Directory fsync is not supported everywhere; the rename is already done.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Jobs queued to the part-file thread at most; beyond that the caller waits for the disk
/// (backpressure instead of unbounded memory).
pub const PART_QUEUE: usize = 16;

/// Identifies one part file handed to a [`PartWriter`].
pub type PartId = u64;

enum Job {
    Open {
        id: PartId,
        dir: PathBuf,
        schema: SchemaRef,
        // Boxed: the properties are large and only one job in many opens a file.
        props: Box<WriterProperties>,
    },
    Write {
        id: PartId,
        batch: RecordBatch,
    },
    Close {
        id: PartId,
    },
    Barrier(mpsc::SyncSender<()>),
}

/// Files closed by a [`PartWriter`] and their bytes.
#[derive(Debug, Default)]
struct Closed {
    files: AtomicU64,
    bytes: AtomicU64,
}

/// Creates, writes, syncs and publishes part files on a dedicated thread, so Parquet
/// encoding, compression, `fsync` and renames never run on the caller's (async) thread.
///
/// Jobs run in the order queued. The first failure is kept and returned by the next call;
/// after it the writer refuses further work (the caller stops recording rather than leaving
/// holes it does not know about).
pub struct PartWriter {
    jobs: Option<mpsc::SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    error: Arc<Mutex<Option<StorageError>>>,
    failed: bool,
    closed: Arc<Closed>,
    next_id: PartId,
}

impl PartWriter {
    /// Starts the thread.
    pub fn spawn() -> Result<Self, StorageError> {
        let (tx, rx) = mpsc::sync_channel(PART_QUEUE);
        let error = Arc::new(Mutex::new(None));
        let closed = Arc::new(Closed::default());
        let thread = std::thread::Builder::new()
            .name("mmtrader-parts".into())
            .spawn({
                let (error, closed) = (error.clone(), closed.clone());
                move || run_parts(rx, &error, &closed)
            })
            .map_err(|e| {
                StorageError::io("starting the part-file writer for", Path::new("."), e)
            })?;
        Ok(Self {
            jobs: Some(tx),
            thread: Some(thread),
            error,
            failed: false,
            closed,
            next_id: 0,
        })
    }

    /// Queues a new part file in `dir`; returns its id for [`PartWriter::write`].
    pub fn open(
        &mut self,
        dir: PathBuf,
        schema: SchemaRef,
        props: WriterProperties,
    ) -> Result<PartId, StorageError> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(Job::Open {
            id,
            dir,
            schema,
            props: Box::new(props),
        })?;
        Ok(id)
    }

    /// Queues a batch for a part file.
    pub fn write(&mut self, id: PartId, batch: RecordBatch) -> Result<(), StorageError> {
        self.send(Job::Write { id, batch })
    }

    /// Queues closing a part file: footer, `fsync`, rename into place, `fsync` of the folder.
    pub fn close(&mut self, id: PartId) -> Result<(), StorageError> {
        self.send(Job::Close { id })
    }

    /// Waits until every queued job ran; returns the first failure.
    pub fn wait(&mut self) -> Result<(), StorageError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Job::Barrier(tx))?;
        // A dropped reply means the thread is gone; the error check below says why.
        let _ = rx.recv();
        self.check()
    }

    /// Files closed and their total size so far.
    pub fn closed(&self) -> (u64, u64) {
        (
            self.closed.files.load(Ordering::Relaxed),
            self.closed.bytes.load(Ordering::Relaxed),
        )
    }

    /// Waits for every queued job and stops the thread; returns the first failure.
    pub fn finish(mut self) -> Result<(), StorageError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), StorageError> {
        self.jobs = None;
        let panicked = self.thread.take().is_some_and(|t| t.join().is_err());
        self.check()?;
        if panicked {
            return Err(gone());
        }
        Ok(())
    }

    fn send(&mut self, job: Job) -> Result<(), StorageError> {
        self.check()?;
        let Some(jobs) = self.jobs.as_ref() else {
            return Err(gone());
        };
        jobs.send(job).map_err(|_| {
            self.failed = true;
            gone()
        })
    }

    fn check(&mut self) -> Result<(), StorageError> {
        let first = self
            .error
            .lock()
            .map(|mut e| e.take())
            .unwrap_or_else(|p| p.into_inner().take());
        if let Some(e) = first {
            self.failed = true;
            return Err(e);
        }
        if self.failed {
            return Err(StorageError::io(
                "writing part files (an earlier write failed)",
                Path::new("."),
                std::io::Error::other("part-file writer stopped"),
            ));
        }
        Ok(())
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if self.thread.is_some()
            && let Err(e) = self.shutdown()
        {
            tracing::warn!(error = %e, "part-file writer stopped with an error");
        }
    }
}

fn gone() -> StorageError {
    StorageError::io(
        "writing part files",
        Path::new("."),
        std::io::Error::other("the part-file writer thread stopped"),
    )
}

fn run_parts(rx: mpsc::Receiver<Job>, error: &Mutex<Option<StorageError>>, closed: &Closed) {
    let mut files: HashMap<PartId, PartFile> = HashMap::new();
    let mut failed = false;
    for job in rx {
        let result = match job {
            Job::Barrier(reply) => {
                let _ = reply.send(());
                continue;
            }
            // After a failure nothing more is written: the caller learns of it and stops.
            _ if failed => continue,
            Job::Open {
                id,
                dir,
                schema,
                props,
            } => PartFile::create(&dir, schema, *props).map(|f| {
                files.insert(id, f);
            }),
            Job::Write { id, batch } => match files.get_mut(&id) {
                Some(f) => f.write(&batch),
                None => Err(unknown(id)),
            },
            Job::Close { id } => match files.remove(&id) {
                Some(f) => f.close().map(|(_, bytes)| {
                    closed.files.fetch_add(1, Ordering::Relaxed);
                    closed.bytes.fetch_add(bytes, Ordering::Relaxed);
                }),
                None => Err(unknown(id)),
            },
        };
        if let Err(e) = result {
            failed = true;
            if let Ok(mut slot) = error.lock() {
                slot.get_or_insert(e);
            }
        }
    }
    // Files still open when the queue closed stay `.tmp` and are recovered on the next open.
}

fn unknown(id: PartId) -> StorageError {
    StorageError::io(
        "writing part file",
        Path::new("."),
        std::io::Error::other(format!("part {id} was never opened")),
    )
}

/// What [`recover`] did with the part files a crash left behind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Complete files renamed into place.
    pub recovered: Vec<PathBuf>,
    /// Incomplete files renamed to `.broken` (never read).
    pub broken: Vec<PathBuf>,
}

/// Finds `*.parquet.tmp` files under `<root>/market` and recovers or sets them aside.
///
/// Must only run while no writer is active on the root (the recorder holds the store lock).
pub fn recover(root: &Path) -> Result<Recovery, StorageError> {
    let mut out = Recovery::default();
    let mut stack = vec![root.join(MARKET_DIR)];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StorageError::io("listing", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("listing", &dir, e))?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(final_name) = name.strip_suffix(TMP_SUFFIX) else {
                continue;
            };
            let complete = File::open(&path)
                .ok()
                .and_then(|f| parquet::file::reader::SerializedFileReader::new(f).ok())
                .is_some();
            let final_path = path.with_file_name(final_name);
            if complete && !final_path.exists() {
                publish(&path, &final_path)?;
                tracing::warn!(file = %final_path.display(), "recovered a part file closed before a crash");
                out.recovered.push(final_path);
            } else {
                let broken = path.with_file_name(format!("{final_name}{BROKEN_SUFFIX}"));
                fs::rename(&path, &broken).map_err(|e| StorageError::io("renaming", &path, e))?;
                tracing::warn!(file = %broken.display(), "ignoring an incomplete part file left by a crash");
                out.broken.push(broken);
            }
        }
    }
    out.recovered.sort();
    out.broken.sort();
    Ok(out)
}

/// An exclusive lock on a store root held by its writer; released on drop.
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the writer lock of `root`, failing if another process (or writer) holds it.
    pub fn acquire(root: &Path) -> Result<Self, StorageError> {
        fs::create_dir_all(root).map_err(|e| StorageError::io("creating", root, e))?;
        let path = root.join(".writer.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io("opening", &path, e))?;
        file.try_lock().map_err(|e| {
            StorageError::io(
                "locking (is another recorder or import writing this store?)",
                &path,
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok(Self { _file: file })
    }
}

/// Shared schema pointer helper.
pub fn schema_ref(schema: arrow_schema::Schema) -> SchemaRef {
    Arc::new(schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use arrow_schema::{DataType, Field, Schema};

    fn batch(schema: &SchemaRef, values: Vec<i64>) -> RecordBatch {
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    #[test]
    fn part_files_appear_only_when_closed() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = partition_dir(dir.path(), "trades", Some("ETHUSDT"), "2026-11-23");
        let schema = schema_ref(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let props = writer_properties(Compression::Zstd, "test");
        let mut a = PartFile::create(&pdir, schema.clone(), props.clone()).unwrap();
        a.write(&batch(&schema, vec![1, 2, 3])).unwrap();
        assert!(part_files(&pdir).unwrap().is_empty());
        let b = PartFile::create(&pdir, schema.clone(), props).unwrap();
        assert_eq!(b.path.file_name().unwrap(), "part-0001.parquet");
        let (path, bytes) = a.close().unwrap();
        assert!(bytes > 0);
        assert_eq!(part_files(&pdir).unwrap(), vec![path]);
        assert!(
            pdir.ends_with("market/trades/symbol=ETHUSDT/date=2026-11-23"),
            "{}",
            pdir.display()
        );
        drop(b);
    }

    #[test]
    fn recovery_renames_complete_and_sets_aside_torn_files() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = partition_dir(dir.path(), "book", Some("BTCUSDT"), "2026-11-23");
        let schema = schema_ref(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let props = writer_properties(Compression::Snappy, "test");
        // A complete file whose rename was lost.
        let (done, _) = {
            let mut f = PartFile::create(&pdir, schema.clone(), props.clone()).unwrap();
            f.write(&batch(&schema, vec![7])).unwrap();
            f.close().unwrap()
        };
        fs::rename(&done, pdir.join("part-0000.parquet.tmp")).unwrap();
        // A torn file: the start of a parquet file with no footer.
        fs::write(pdir.join("part-0001.parquet.tmp"), b"PAR1\x00\x01\x02").unwrap();
        let r = recover(dir.path()).unwrap();
        assert_eq!(r.recovered, vec![done.clone()]);
        assert_eq!(r.broken, vec![pdir.join("part-0001.parquet.broken")]);
        assert_eq!(part_files(&pdir).unwrap(), vec![done]);
        // Numbering continues after the broken file so nothing is overwritten.
        assert_eq!(next_part_number(&pdir).unwrap(), 2);
        // Nothing left to do the second time.
        assert_eq!(recover(dir.path()).unwrap(), Recovery::default());
    }

    #[test]
    fn the_writer_thread_publishes_parts_in_queue_order() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = partition_dir(dir.path(), "trades", Some("ETHUSDT"), "2026-11-23");
        let schema = schema_ref(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let props = writer_properties(Compression::Zstd, "test");
        let mut w = PartWriter::spawn().unwrap();
        let a = w.open(pdir.clone(), schema.clone(), props.clone()).unwrap();
        w.write(a, batch(&schema, vec![1, 2])).unwrap();
        w.write(a, batch(&schema, vec![3])).unwrap();
        let b = w.open(pdir.clone(), schema.clone(), props).unwrap();
        w.write(b, batch(&schema, vec![4])).unwrap();
        w.close(a).unwrap();
        w.wait().unwrap();
        // Only the closed part is visible; the other is still a temporary file.
        let files = part_files(&pdir).unwrap();
        assert_eq!(files, vec![pdir.join("part-0000.parquet")]);
        assert!(pdir.join("part-0001.parquet.tmp").exists());
        let (count, bytes) = w.closed();
        assert_eq!(count, 1);
        assert_eq!(bytes, fs::metadata(&files[0]).unwrap().len());
        let rows: usize = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(&files[0]).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
        assert_eq!(rows, 3);
        w.close(b).unwrap();
        w.finish().unwrap();
        assert_eq!(part_files(&pdir).unwrap().len(), 2);
        assert!(!pdir.join("part-0001.parquet.tmp").exists());
    }

    #[test]
    fn a_failed_write_is_reported_and_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        // A partition folder that cannot be created: a plain file is in the way.
        let blocker = dir.path().join("market");
        fs::write(&blocker, b"not a folder").unwrap();
        let schema = schema_ref(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let props = writer_properties(Compression::Zstd, "test");
        let mut w = PartWriter::spawn().unwrap();
        let id = w
            .open(blocker.join("trades"), schema.clone(), props.clone())
            .unwrap();
        let _ = w.write(id, batch(&schema, vec![1]));
        let err = w.wait().unwrap_err().to_string();
        assert!(err.contains("market"), "{err}");
        // Nothing more is accepted once a write failed.
        let good = dir.path().join("elsewhere");
        assert!(w.open(good.clone(), schema, props).is_err());
        assert!(w.wait().is_err());
        assert!(!good.exists());
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let a = StoreLock::acquire(dir.path()).unwrap();
        assert!(StoreLock::acquire(dir.path()).is_err());
        drop(a);
        assert!(StoreLock::acquire(dir.path()).is_ok());
    }
}

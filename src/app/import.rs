//! `mmtrader import`: Binance public historical data files (kline or aggTrade CSV, plain or
//! zipped) into the store, for training and backtests.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::cli::{EXIT_OK, Failure};
use crate::config::Config;
use crate::logging::now_ms;
use crate::market::types::Timeframe;
use crate::storage::StorageError;
use crate::storage::import::{
    ImportKind, RowError, parse_agg_trade_row, parse_kline_row, parse_text,
};
use crate::storage::market::MarketWriter;

/// Bad rows printed before only counting the rest.
const BAD_ROWS_SHOWN: usize = 20;

/// `mmtrader import` options.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// File layout: `klines` or `aggtrades`.
    #[arg(long, value_parser = parse_kind)]
    pub kind: ImportKind,
    /// Exchange symbol the files are for (`ETHUSDT`).
    #[arg(long)]
    pub symbol: String,
    /// Kline interval of the files (`1s`, `1m`, `1h`, `1d`).
    #[arg(long, default_value = "1m", value_parser = parse_timeframe)]
    pub timeframe: Timeframe,
    /// Store root (default: `[storage] root` inside the data directory).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Files: `.csv` or `.zip` (every `.csv` member is read).
    #[arg(required = true, value_name = "FILES")]
    pub files: Vec<PathBuf>,
}

fn parse_kind(s: &str) -> Result<ImportKind, String> {
    ImportKind::parse(s).ok_or_else(|| format!("expected `klines` or `aggtrades`, got {s:?}"))
}

fn parse_timeframe(s: &str) -> Result<Timeframe, String> {
    Timeframe::parse(s).ok_or_else(|| format!("expected one of 1s, 1m, 1h, 1d, got {s:?}"))
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file could not be read.
    #[error("{path}: {message}")]
    Unreadable {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Totals of an import.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Files (or zip members) read.
    pub files: usize,
    /// Rows written.
    pub rows: u64,
    /// Rejected rows: `(file, error)`.
    pub bad: Vec<(String, RowError)>,
}

/// The CSV texts of a file: the file itself, or each `.csv` member of a zip, with names.
pub fn read_texts(path: &Path) -> Result<Vec<(String, String)>, ImportError> {
    let unreadable = |message: String| ImportError::Unreadable {
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    if !bytes.starts_with(b"PK\x03\x04") {
        let text = String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8 text".into()))?;
        return Ok(vec![(path.display().to_string(), text)]);
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| unreadable(format!("not a readable zip: {e}")))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut member = zip
            .by_index(i)
            .map_err(|e| unreadable(format!("zip member {i}: {e}")))?;
        let name = member
            .name()
            .map_err(|e| unreadable(format!("zip member {i}: {e}")))?
            .to_string();
        if !name.to_ascii_lowercase().ends_with(".csv") {
            continue;
        }
        let mut text = String::new();
        member
            .read_to_string(&mut text)
            .map_err(|e| unreadable(format!("zip member {name}: {e}")))?;
        out.push((format!("{}:{name}", path.display()), text));
    }
    if out.is_empty() {
        return Err(unreadable("zip holds no .csv file".into()));
    }
    Ok(out)
}

/// Imports files into the store at `root`; `progress` gets each file's size once it is done.
pub fn import_files(
    root: &Path,
    config: &crate::storage::StorageConfig,
    kind: ImportKind,
    symbol: &str,
    timeframe: Timeframe,
    files: &[PathBuf],
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, ImportError> {
    let symbol = symbol.to_ascii_uppercase();
    let (mut writer, _) = MarketWriter::open(root, config, now_ms().max(0) as u64)?;
    let mut report = ImportReport::default();
    for path in files {
        for (name, text) in read_texts(path)? {
            report.files += 1;
            let bad = match kind {
                ImportKind::Klines => {
                    let p = parse_text(&text, |l| parse_kline_row(l, timeframe));
                    writer.import_candles(&symbol, timeframe, &p.rows)?;
                    report.rows += p.rows.len() as u64;
                    p.errors
                }
                ImportKind::AggTrades => {
                    let p = parse_text(&text, |l| parse_agg_trade_row(&symbol, l));
                    writer.import_trades(&symbol, &p.rows)?;
                    report.rows += p.rows.len() as u64;
                    p.errors
                }
            };
            report
                .bad
                .extend(bad.into_iter().map(|e| (name.clone(), e)));
        }
        progress(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0));
    }
    writer.close()?;
    Ok(report)
}

/// Imports files, with a progress bar and the bad rows listed by line.
pub fn run(config: Config, args: ImportArgs) -> Result<i32, Failure> {
    let root = super::record::store_root(&config, args.store.as_ref());
    let total: u64 = args
        .files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "import [{bar:30}] {bytes}/{total_bytes} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let result = import_files(
        &root,
        &config.storage,
        args.kind,
        &args.symbol,
        args.timeframe,
        &args.files,
        |n| bar.inc(n),
    );
    bar.finish_and_clear();
    let report = result.map_err(|e| match e {
        ImportError::Unreadable { .. } => Failure::input(e),
        ImportError::Storage(_) => Failure::runtime(e),
    })?;
    for (file, e) in report.bad.iter().take(BAD_ROWS_SHOWN) {
        eprintln!("import: {file}: {e}");
    }
    if report.bad.len() > BAD_ROWS_SHOWN {
        eprintln!(
            "import: … and {} more bad rows",
            report.bad.len() - BAD_ROWS_SHOWN
        );
    }
    println!(
        "import: {} rows from {} files into {} ({} bad rows skipped)",
        report.rows,
        report.files,
        root.display(),
        report.bad.len()
    );
    if report.rows == 0 && !report.bad.is_empty() {
        return Err(Failure::input(anyhow::anyhow!(
            "no usable rows: is --kind right for these files?"
        )));
    }
    Ok(EXIT_OK)
}

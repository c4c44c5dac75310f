//! Where the shared third-party recordings live (never copied into the repository).

use std::path::PathBuf;

/// The shared test-data folder: `$MMTRADER_TESTDATA`, else `../shared/testdata` beside the repo.
pub fn dir() -> PathBuf {
    if let Some(p) = std::env::var_os("MMTRADER_TESTDATA") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata")
}

/// A file inside the shared test data; panics with a clear message when the folder is missing,
/// so a test on recorded data can never pass vacuously.
pub fn require(relative: &str) -> PathBuf {
    let base = dir();
    assert!(
        base.is_dir(),
        "shared test data folder is missing: expected {} (clone with shared/ beside the repo, \
         or set MMTRADER_TESTDATA)",
        base.display()
    );
    let path = base.join(relative);
    assert!(
        path.exists(),
        "shared test data file is missing: {}",
        path.display()
    );
    path
}

//! `mmtrader replay --exchange NAME --raw FILE`: events, top of book and integrity failures
//! printed for a recorded capture.

mod venues_common;

use std::process::Command;

use venues_common::{capture, lines, temp_capture};

fn replay(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mmtrader"))
        .arg("replay")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prints_events_tops_and_integrity_failures() {
    let trades = capture("KRAKEN.ws.48.0");
    let (code, out, err) = replay(&["--exchange", "kraken", "--raw", trades.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("TRADE ") && l.contains('@')),
        "{out}"
    );

    let book = capture("KRAKEN.ws.50.0");
    let mut all = lines(&book);
    let i = all.iter().position(|l| l.contains(",\"c\":\"")).unwrap();
    all.remove(i);
    let dir = tempfile::tempdir().unwrap();
    let altered = temp_capture(&dir, "kraken.txt", &all);
    let (code, out, err) = replay(&["--exchange", "kraken", "--raw", altered.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("TOP ") && l.contains(" | ask "))
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("INTEGRITY ") && l.contains("checksum")),
        "{err}"
    );
    assert!(err.contains("1 integrity failures"), "{err}");

    let (code, _, err) = replay(&["--exchange", "nope", "--raw", altered.to_str().unwrap()]);
    assert_eq!(code, 4, "{err}");
}

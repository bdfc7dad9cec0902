//! Hash chain: rotation, verify, edits and truncation reported at the exact record, recovery.

use crate::common;

use std::{fs, sync::Arc};

use common::TempDir;
use mcp_audit::{
    AuditEvent, AuditSink, Leg, MessageKind,
    chain::{Problem, VerifyError, verify_dir},
    sink::{FileSinkConfig, Fsync, JsonlFileSink},
};
use mcp_gateway_core::Direction;

fn event(i: u64) -> Arc<AuditEvent> {
    let mut e = AuditEvent::new(
        "tools/call",
        Direction::Request,
        MessageKind::Request,
        Leg::ClientToGateway,
    );
    e.feature = Some(format!("tool-{i}"));
    e.arguments = Some(serde_json::json!({"i": i, "pad": "x".repeat(100)}));
    Arc::new(e)
}

fn write(dir: &std::path::Path, range: std::ops::Range<u64>, max_bytes: u64) {
    let sink = JsonlFileSink::open(
        FileSinkConfig::new(dir)
            .max_bytes(max_bytes)
            .fsync(Fsync::Always),
    )
    .unwrap();
    let batch: Vec<_> = range.map(event).collect();
    sink.write(&batch).unwrap();
    sink.flush().unwrap();
}

fn bad(dir: &std::path::Path) -> mcp_audit::chain::VerifyFailure {
    match verify_dir(dir, "audit") {
        Err(VerifyError::Bad(f)) => f,
        other => panic!("expected a bad record, got {other:?}"),
    }
}

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    mcp_audit::chain::log_files(dir, "audit")
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

#[test]
fn rotation_keeps_one_chain_across_files() {
    let d = TempDir::new("rot");
    write(&d.0, 0..50, 4096);
    write(&d.0, 50..60, 4096); // reopen continues the chain
    let fs_ = files(&d.0);
    assert!(fs_.len() >= 3, "size rotation made {} files", fs_.len());
    for f in &fs_ {
        assert!(fs::metadata(f).unwrap().len() <= 4096);
    }
    let r = verify_dir(&d.0, "audit").unwrap();
    assert_eq!((r.records, r.last_seq), (60, 60));
}

#[test]
fn edited_record_is_reported_at_that_record() {
    let d = TempDir::new("edit");
    write(&d.0, 0..10, 0);
    let f = &files(&d.0)[0];
    let text = fs::read_to_string(f).unwrap();
    let edited = text.replacen("\"tool-6\"", "\"tool-X\"", 1);
    assert_ne!(text, edited);
    fs::write(f, edited).unwrap();
    let b = bad(&d.0);
    assert_eq!((b.line, b.seq), (7, 7), "{b}");
    assert!(matches!(b.problem, Problem::HashMismatch { .. }), "{b}");
    assert!(b.to_string().contains("edited"), "{b}");
}

#[test]
fn rehashed_edit_breaks_the_chain_at_the_next_record() {
    let d = TempDir::new("rehash");
    write(&d.0, 0..10, 0);
    let f = &files(&d.0)[0];
    let text = fs::read_to_string(f).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Forge record 4 with a valid own hash: the next record's prev_hash no longer matches.
    let body = lines[3]
        .rsplit_once(",\"hash\":")
        .unwrap()
        .0
        .replace("tool-3", "tool-Y")
        + "}";
    let hash = mcp_audit::chain::sha256_hex(body.as_bytes());
    lines[3] = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
    fs::write(f, lines.join("\n") + "\n").unwrap();
    let b = bad(&d.0);
    assert_eq!((b.line, b.seq), (5, 5), "{b}");
    assert!(matches!(b.problem, Problem::ChainBroken { .. }), "{b}");
}

#[test]
fn truncated_mid_record_is_reported_at_that_record() {
    let d = TempDir::new("trunc");
    write(&d.0, 0..10, 0);
    let f = &files(&d.0)[0];
    let text = fs::read_to_string(f).unwrap();
    let cut = text.lines().take(8).map(|l| l.len() + 1).sum::<usize>() + 30;
    fs::write(f, &text[..cut]).unwrap();
    let b = bad(&d.0);
    assert_eq!((b.line, b.seq), (9, 9), "{b}");
    assert_eq!(b.problem, Problem::Truncated);
}

#[test]
fn records_cut_off_the_end_are_reported_by_the_head() {
    let d = TempDir::new("tail");
    write(&d.0, 0..10, 0);
    let f = &files(&d.0)[0];
    let text = fs::read_to_string(f).unwrap();
    let keep: String = text.lines().take(7).map(|l| format!("{l}\n")).collect();
    fs::write(f, keep).unwrap();
    let b = bad(&d.0);
    assert_eq!(b.seq, 8, "{b}");
    assert_eq!(b.problem, Problem::MissingTail { last: 7, head: 10 });
}

#[test]
fn removed_line_and_removed_file_are_reported() {
    let d = TempDir::new("gap");
    write(&d.0, 0..10, 0);
    let f = &files(&d.0)[0];
    let text = fs::read_to_string(f).unwrap();
    let without: String = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    fs::write(f, without).unwrap();
    let b = bad(&d.0);
    assert_eq!((b.line, b.seq), (5, 5), "{b}");
    assert_eq!(
        b.problem,
        Problem::SeqGap {
            expected: 5,
            found: 6
        }
    );

    let d = TempDir::new("gapfile");
    write(&d.0, 0..60, 4096);
    let fs_ = files(&d.0);
    fs::remove_file(&fs_[1]).unwrap();
    let b = bad(&d.0);
    assert_eq!(b.file, fs_[2]);
    assert!(matches!(b.problem, Problem::SeqGap { .. }), "{b}");
}

#[test]
fn restart_after_a_partial_write_drops_it_and_verifies() {
    let d = TempDir::new("recover");
    write(&d.0, 0..10, 0);
    let f = files(&d.0)[0].clone();
    // A write cut by kill -9: half a record at the end.
    let mut text = fs::read_to_string(&f).unwrap();
    text.push_str("{\"seq\":11,\"prev_hash\":\"abc");
    fs::write(&f, text).unwrap();
    assert_eq!(bad(&d.0).problem, Problem::Truncated);
    write(&d.0, 10..15, 0);
    let r = verify_dir(&d.0, "audit").unwrap();
    assert_eq!(r.records, 15);
}

#[test]
fn age_rotation_opens_a_new_file() {
    let d = TempDir::new("age");
    let sink =
        JsonlFileSink::open(FileSinkConfig::new(&d.0).max_age(std::time::Duration::from_secs(1)))
            .unwrap();
    sink.write(&(0..3).map(event).collect::<Vec<_>>()).unwrap();
    // Time is the signal here: the file must be a second old.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    sink.tick().unwrap();
    sink.write(&(3..6).map(event).collect::<Vec<_>>()).unwrap();
    sink.flush().unwrap();
    assert_eq!(files(&d.0).len(), 2);
    assert_eq!(verify_dir(&d.0, "audit").unwrap().records, 6);
}

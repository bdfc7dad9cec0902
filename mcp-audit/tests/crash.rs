//! Faults in a child process: `kill -9` under load, and a full disk (RLIMIT_FSIZE).

use crate::common;

use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use common::{TempDir, echo, records, tool_call};
use mcp_audit::{
    AuditLayer, Auditor, Durability, LaneConfig,
    sink::{FileSinkConfig, Fsync, JsonlFileSink},
};
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt, service_fn};

fn child(name: &str, dir: &std::path::Path, wrap: Option<&str>) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match wrap {
        Some(shell) => {
            let mut c = Command::new("bash");
            c.arg("-c")
                .arg(format!("{shell}; exec \"$0\" \"$@\""))
                .arg(exe);
            c
        }
        None => Command::new(exe),
    };
    // The test binary holds every integration test; children are addressed by their full path.
    let name = format!(
        "{}::{name}",
        module_path!().split_once("::").map_or("", |(_, m)| m)
    );
    cmd.args([
        "--exact",
        &name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("MCP_AUDIT_CHILD_DIR", dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    cmd
}

/// Child: calls through the audit layer from 4 tasks, printing `answered <id>` after each answer.
#[test]
#[ignore = "run as a child process by kill9_under_load_loses_no_answered_call"]
fn child_kill9_writer() {
    let Ok(dir) = std::env::var("MCP_AUDIT_CHILD_DIR") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sink = JsonlFileSink::open(
            FileSinkConfig::new(&dir)
                .max_bytes(64 << 10)
                .fsync(Fsync::Never),
        )
        .unwrap();
        let auditor = Auditor::builder()
            .sink(LaneConfig::new("file").durable(true).capacity(256), sink)
            .build()
            .unwrap();
        let svc = ServiceBuilder::new()
            .layer(AuditLayer::new(auditor).durability(Durability::Written))
            .service(service_fn(echo));
        let mut tasks = Vec::new();
        for t in 0..4i64 {
            let svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let id = t * 1_000_000 + i;
                    let resp = svc
                        .clone()
                        .oneshot(tool_call(id, "echo", json!({"i": id})))
                        .await
                        .unwrap();
                    assert!(!resp.is_error());
                    println!("answered {id}");
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn kill9_under_load_loses_no_answered_call() {
    let d = TempDir::new("kill9");
    let mut proc_ = child("child_kill9_writer", &d.0, None).spawn().unwrap();
    let mut out = BufReader::new(proc_.stdout.take().unwrap());
    let mut answered = HashSet::new();
    let mut line = String::new();
    while answered.len() < 2000 {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child died early");
        if let Some(id) = line.trim().strip_prefix("answered ") {
            answered.insert(id.parse::<i64>().unwrap());
        }
    }
    proc_.kill().unwrap(); // SIGKILL
    proc_.wait().unwrap();
    // Whatever the child printed before it died was answered too.
    for l in out.lines().map_while(Result::ok) {
        if let Some(id) = l.strip_prefix("answered ") {
            answered.insert(id.parse::<i64>().unwrap());
        }
    }
    // Restart: opening the sink recovers the tail (drops a partial record, if any); then the
    // whole chain verifies and every answered call has its answer's record.
    drop(JsonlFileSink::open(FileSinkConfig::new(&d.0)).unwrap());
    let report = mcp_audit::chain::verify_dir(&d.0, "audit").unwrap();
    assert!(report.files > 1, "rotated under load");
    let recorded: HashSet<i64> = records(&d.0)
        .iter()
        .filter(|r| r["kind"] == "response")
        .filter_map(|r| r["request_id"].as_i64())
        .collect();
    let missing: Vec<_> = answered.difference(&recorded).collect();
    assert!(
        missing.is_empty(),
        "{} answered calls without a record, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Child: writes through a file sink under a 64 KiB file-size limit, then prints the lane stats.
#[test]
#[ignore = "run as a child process by full_disk_fails_cleanly_and_counts"]
fn child_full_disk_writer() {
    let Ok(dir) = std::env::var("MCP_AUDIT_CHILD_DIR") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // No rotation: the one file hits the limit.
        let sink = JsonlFileSink::open(FileSinkConfig::new(&dir).max_bytes(0)).unwrap();
        let auditor = Auditor::builder()
            .sink(
                LaneConfig::new("file").durable(true).max_retries(Some(2)),
                sink,
            )
            .build()
            .unwrap();
        let svc = ServiceBuilder::new()
            .layer(AuditLayer::new(auditor.clone()))
            .service(service_fn(echo));
        for i in 0..150 {
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                svc.clone()
                    .oneshot(tool_call(i, "echo", json!({"pad": "y".repeat(400)}))),
            )
            .await
            .expect("a full disk must not hang the caller when retries are bounded");
            assert!(!r.unwrap().is_error());
        }
        auditor.flush(Duration::from_secs(10)).await;
        println!(
            "STATS {}",
            serde_json::to_string(&auditor.stats()[0]).unwrap()
        );
    });
}

#[test]
fn full_disk_fails_cleanly_and_counts() {
    let d = TempDir::new("fsize");
    let out = child(
        "child_full_disk_writer",
        &d.0,
        Some("ulimit -f 64; trap '' XFSZ"),
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let stats: mcp_audit::LaneStats = serde_json::from_str(
        stdout
            .lines()
            .find_map(|l| l.split_once("STATS ").map(|(_, s)| s))
            .expect("stats line"),
    )
    .unwrap();
    // 300 events of ~1.3 KiB cannot fit in 64 KiB: writes failed, were retried, and the events that
    // never fit are counted as dropped, not lost silently.
    assert!(stats.errors > 0 && stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.written + stats.dropped, 300, "{stats:?}");
    let files = mcp_audit::chain::log_files(&d.0, "audit").unwrap();
    let len = std::fs::metadata(&files[0].1).unwrap().len();
    assert!(len <= 64 * 1024, "{len}");
    // A failed write never leaves half a record: the chain verifies, and holds what was written.
    let report = mcp_audit::chain::verify_dir(&d.0, "audit").unwrap();
    assert_eq!(report.records, stats.written);
}

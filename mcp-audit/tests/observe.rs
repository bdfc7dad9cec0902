//! Metrics parsed by the real Prometheus parser, export with filters, the CLI, and alerts.

use crate::common;

use std::{io::Write, process::Stdio, sync::Arc, time::Duration};

use common::{TempDir, echo, tool_call};
use mcp_audit::{
    AuditLayer, Auditor, LaneConfig, Metrics,
    alerts::{AlertConfig, AlertNotifier},
    cli::{self, AuditCommand, ExportArgs, LogArgs, VerifyArgs},
    export::Format,
    sink::{FileSinkConfig, JsonlFileSink},
};
use mcp_gateway_core::{
    Annotation, BoxError, Direction, EventBus, GatewayEvent, Identity, McpRequest, McpResponse,
    codes, error, identity::AuthMethod,
};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt, service_fn};

fn as_user(mut req: McpRequest, who: &str) -> McpRequest {
    req.ctx.identity = Some(Arc::new(Identity::new(who, AuthMethod::ApiKey)));
    req
}

/// Answers `echo` from server "a", `fail` as an upstream error from server "b".
async fn routed(req: McpRequest) -> Result<McpResponse, BoxError> {
    let name = req.name().unwrap_or_default().to_owned();
    let server = if name == "fail" { "b" } else { "a" };
    req.ctx.annotations.push(Annotation::Upstream {
        server: server.into(),
        instance: None,
        latency: Duration::from_millis(1),
    });
    if name == "fail" {
        return Ok(req.error(error(
            codes::UPSTREAM_UNAVAILABLE,
            "upstream b is down",
            None,
        )));
    }
    echo(req).await
}

async fn traffic(dir: &std::path::Path) -> (Auditor, Metrics) {
    let metrics = Metrics::new();
    let auditor = Auditor::builder()
        .sink(
            LaneConfig::new("file").durable(true),
            JsonlFileSink::open(FileSinkConfig::new(dir)).unwrap(),
        )
        .sink(LaneConfig::new("metrics"), metrics.clone())
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()))
        .service(service_fn(routed));
    for i in 0..7 {
        svc.clone()
            .oneshot(as_user(tool_call(i, "echo", json!({"n": i})), "alice"))
            .await
            .unwrap();
    }
    for i in 0..3 {
        svc.clone()
            .oneshot(as_user(tool_call(100 + i, "echo", json!({})), "bob"))
            .await
            .unwrap();
    }
    for i in 0..2 {
        svc.clone()
            .oneshot(as_user(tool_call(200 + i, "fail", json!({})), "alice"))
            .await
            .unwrap();
    }
    assert!(auditor.flush(Duration::from_secs(5)).await);
    (auditor, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_text_parses_and_counts_match() {
    let d = TempDir::new("prom");
    let (auditor, metrics) = traffic(&d.0).await;
    let text = metrics.render_prometheus_with(&auditor.stats());
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([fam.name, fam.type, s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (pip install prometheus_client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "parser rejected the text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<(String, String, String, Value, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .filter(|s| s.2 == name && labels.iter().all(|(k, v)| s.3[k] == *v))
            .map(|s| s.4)
            .sum()
    };
    assert_eq!(
        value("mcp_calls_total", &[("server", "a"), ("identity", "alice")]),
        7.0
    );
    assert_eq!(
        value("mcp_calls_total", &[("server", "a"), ("identity", "bob")]),
        3.0
    );
    assert_eq!(value("mcp_calls_total", &[]), 12.0);
    assert_eq!(
        value("mcp_errors_total", &[("server", "b"), ("code", "-32010")]),
        2.0
    );
    assert_eq!(value("mcp_call_duration_seconds_count", &[]), 12.0);
    assert!(samples.iter().any(|s| s.0 == "mcp_call_duration_seconds"
        && s.1 == "summary"
        && s.3["quantile"] == "0.99"));
    assert!(
        value(
            "mcp_tokens_total",
            &[("direction", "out"), ("identity", "alice")]
        ) > 0.0
    );
    assert_eq!(
        value("mcp_audit_sink_written_total", &[("sink", "file")]),
        24.0
    );
    assert_eq!(value("mcp_audit_sink_dropped_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_filters_and_verify_through_the_cli() {
    let d = TempDir::new("export");
    let _ = traffic(&d.0).await;
    let log = LogArgs {
        dir: Some(d.0.clone()),
        prefix: "audit".into(),
    };
    let export = |format: Format, f: &dyn Fn(&mut ExportArgs)| {
        let mut a = ExportArgs {
            log: log.clone(),
            format,
            since: None,
            until: None,
            server: None,
            identity: None,
            method: None,
            no_verify: false,
        };
        f(&mut a);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = cli::run(&AuditCommand::Export(a), None, &mut out, &mut err);
        assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
        String::from_utf8(out).unwrap()
    };
    let all: Vec<Value> = serde_json::from_str(&export(Format::Json, &|_| {})).unwrap();
    assert_eq!(all.len(), 24);
    let bob: Vec<Value> =
        serde_json::from_str(&export(Format::Json, &|a| a.identity = Some("bob".into()))).unwrap();
    assert_eq!(bob.len(), 6);
    assert!(bob.iter().all(|r| r["identity"]["subject"] == "bob"));
    let b_csv = export(Format::Csv, &|a| a.server = Some("b".into()));
    let rows: Vec<&str> = b_csv.lines().collect();
    assert_eq!(rows.len(), 3, "header + 2 answers from server b:\n{b_csv}");
    assert!(rows[0].starts_with("timestamp,event_id,"));
    assert!(rows[1].contains(",-32010,"), "{}", rows[1]);
    let cols = rows[0].split(',').count();
    assert_eq!(cols, mcp_audit::export::CSV_COLUMNS.len());
    // Time range: everything was just written, so the future excludes all and the past includes all.
    let none: Vec<Value> = serde_json::from_str(&export(Format::Json, &|a| {
        a.since = Some("2999-01-01".into())
    }))
    .unwrap();
    assert!(none.is_empty());
    let mid = all[10]["ts_ms"].as_u64().unwrap();
    let since: Vec<Value> =
        serde_json::from_str(&export(Format::Json, &|a| a.since = Some(mid.to_string()))).unwrap();
    assert!(since.iter().all(|r| r["ts_ms"].as_u64().unwrap() >= mid) && since.len() >= 14);
    let calls = export(Format::Jsonl, &|a| {
        a.method = Some("tools/call".into());
        a.until = Some("2999-01-01T00:00:00Z".into());
    });
    assert_eq!(calls.lines().count(), 24);

    // verify: clean, then an edited record is named.
    let verify = |json: bool| {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = cli::run(
            &AuditCommand::Verify(VerifyArgs {
                log: log.clone(),
                json,
            }),
            None,
            &mut out,
            &mut err,
        );
        (code, String::from_utf8(out).unwrap())
    };
    let (code, out) = verify(false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("24 records"), "{out}");
    let file = mcp_audit::chain::log_files(&d.0, "audit").unwrap()[0]
        .1
        .clone();
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[16] = lines[16].replace("\"bob\"", "\"mallory\"");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (code, out) = verify(true);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["line"].as_u64(), v["record"].as_u64()),
        (Some(false), Some(17), Some(17)),
        "{v}"
    );
    // Export refuses a broken log unless told otherwise.
    let mut a = ExportArgs {
        log: log.clone(),
        format: Format::Json,
        since: None,
        until: None,
        server: None,
        identity: None,
        method: None,
        no_verify: false,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(
        cli::run(&AuditCommand::Export(a.clone()), None, &mut out, &mut err),
        1
    );
    a.no_verify = true;
    assert_eq!(
        cli::run(&AuditCommand::Export(a), None, &mut out, &mut err),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_deduplicated_and_rate_limited() {
    let (addr, _received, mut rx) = common::http_receiver().await;
    let mut cfg = AlertConfig::new(format!("http://{addr}/hook"));
    cfg.max_per_minute = 3;
    let notifier = AlertNotifier::spawn(cfg).unwrap();
    let auditor = Auditor::builder()
        .sink(LaneConfig::new("alerts"), notifier.clone())
        .build()
        .unwrap();
    let blocked = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()))
        .service(service_fn(|req: McpRequest| async move {
            req.ctx.annotations.push(Annotation::Dlp {
                detector: "aws_access_key".into(),
                direction: Direction::Request,
                count: 1,
                action: "block",
            });
            req.ctx.annotations.push(Annotation::Upstream {
                server: "s3".into(),
                instance: None,
                latency: Duration::ZERO,
            });
            Ok::<_, BoxError>(req.error(error(
                codes::DLP_BLOCKED,
                "blocked by DLP",
                Some(json!({"rule": "aws_access_key"})),
            )))
        }));
    // The same DLP block three times: one alert.
    for i in 0..3 {
        blocked
            .clone()
            .oneshot(tool_call(i, "upload", json!({"key": "AKIA..."})))
            .await
            .unwrap();
    }
    assert!(auditor.flush(Duration::from_secs(5)).await);
    let (path, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, "/hook");
    let alert: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(alert["kind"], "dlp_block");
    assert!(
        !body.windows(4).any(|w| w == b"AKIA"),
        "alerts never carry the data"
    );
    assert_eq!(notifier.stats().deduplicated, 2);

    // Upstream outage and recovery from the event bus; recovery only after an outage.
    let bus = EventBus::default();
    let watch = notifier.watch(&bus);
    bus.publish(GatewayEvent::UpstreamUp {
        server: "never-down".into(),
    });
    bus.publish(GatewayEvent::UpstreamDown {
        server: "git".into(),
        reason: "exited with 1".into(),
    });
    bus.publish(GatewayEvent::UpstreamUp {
        server: "git".into(),
    });
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let (_, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        kinds.push(
            serde_json::from_slice::<Value>(&body).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(kinds, ["upstream_down", "upstream_recovered"]);
    // The fourth distinct alert within the minute is held back and counted.
    bus.publish(GatewayEvent::UpstreamDown {
        server: "time".into(),
        reason: "timeout".into(),
    });
    drop(bus);
    watch.await.unwrap();
    assert_eq!(notifier.stats().rate_limited, 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "no fourth alert"
    );
    assert_eq!(notifier.stats().sent, 3);
}

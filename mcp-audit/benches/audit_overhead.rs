//! Audit on versus off. Run with `cargo bench -p mcp-audit --bench audit_overhead`.
//!
//! Two measurements:
//! - `paced`: an open-loop load of 10,000 `tools/call`s per second (20,000 audit events per
//!   second: each call is a request and an answer record) through an echo service, with the full
//!   audit stack (JSON-lines file with hash chain, `Durability::Written`, metrics lane, token
//!   counts) versus none. Achieved throughput of both is printed with the loss in percent.
//! - `closed_loop`: criterion timing of calls driven as fast as 32 concurrent callers can go, to
//!   show the per-call cost of audit.
#![allow(missing_docs)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mcp_audit::{
    AuditLayer, Auditor, Durability, LaneConfig, Metrics,
    sink::{FileSinkConfig, JsonlFileSink},
};
use mcp_gateway_core::{BoxError, McpRequest, McpResponse, Method, RequestId};
use serde_json::json;
use tower::{ServiceExt, service_fn, util::BoxCloneSyncService};

type Svc = BoxCloneSyncService<McpRequest, McpResponse, BoxError>;

fn request(i: i64) -> McpRequest {
    let mut params = serde_json::Map::new();
    params.insert("name".into(), "everything__echo".into());
    params.insert(
        "arguments".into(),
        json!({"message": format!("hello number {i} from the bench client")}),
    );
    McpRequest::new(Some(RequestId::Number(i)), Method::ToolsCall, params)
}

async fn echo(req: McpRequest) -> Result<McpResponse, BoxError> {
    let msg = req
        .arguments()
        .and_then(|a| a.get("message"))
        .cloned()
        .unwrap_or_default();
    Ok(req.reply(
        json!({"content": [{"type": "text", "text": format!("Echo: {msg}")}], "isError": false}),
    ))
}

/// Audit variants for the cost breakdown: (durability, token counts on).
fn variant(auditor: &Auditor, durability: Durability, tokens: bool) -> Svc {
    let mut layer = AuditLayer::new(auditor.clone()).durability(durability);
    if !tokens {
        layer = layer.tokens(None);
    }
    BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(echo)),
    )
}

fn services(dir: &std::path::Path) -> (Svc, Svc, Auditor) {
    let off: Svc = BoxCloneSyncService::new(service_fn(echo));
    let auditor = Auditor::builder()
        .sink(
            LaneConfig::new("file").durable(true),
            JsonlFileSink::open(FileSinkConfig::new(dir)).expect("audit dir"),
        )
        .sink(LaneConfig::new("metrics"), Metrics::new())
        .build()
        .expect("auditor");
    let on: Svc = BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .layer(AuditLayer::new(auditor.clone()).durability(Durability::Written))
            .service(service_fn(echo)),
    );
    (off, on, auditor)
}

/// Offers `rate` calls per second for `duration`; returns achieved calls per second.
async fn paced(svc: &Svc, rate: u32, duration: Duration) -> f64 {
    let total = (rate as f64 * duration.as_secs_f64()) as i64;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move { svc.oneshot(request(i)).await }));
    }
    for t in tasks {
        let _ = t.await;
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn closed_loop(svc: &Svc, per_task: u64) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..32u64 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                let _ = svc
                    .clone()
                    .oneshot(request((c * per_task + i) as i64))
                    .await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("mcp-audit-bench-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (off, on, auditor) = rt.block_on(async { services(&dir) });
    let auditor = Arc::new(auditor);

    // The headline: 20,000 events/s offered, achieved throughput with audit off and on.
    let window = Duration::from_secs(3);
    let (r_off, r_on) = rt.block_on(async {
        let _ = paced(&on, 10_000, Duration::from_millis(500)).await; // warm up (tokenizer, files)
        let r_off = paced(&off, 10_000, window).await;
        let r_on = paced(&on, 10_000, window).await;
        (r_off, r_on)
    });
    let loss = (1.0 - r_on / r_off) * 100.0;
    println!(
        "paced 10000 calls/s (20000 audit events/s) for {window:?}: audit off {r_off:.0} calls/s, audit on {r_on:.0} calls/s, loss {loss:.2}%"
    );
    rt.block_on(auditor.flush(Duration::from_secs(30)));
    println!("audit lanes after the paced run: {:?}", auditor.stats());

    let mut g = c.benchmark_group("audit_overhead");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    let queued = variant(&auditor, Durability::Queued, true);
    let queued_no_tokens = variant(&auditor, Durability::Queued, false);
    for (name, svc) in [
        ("closed_loop/off", &off),
        ("closed_loop/on", &on),
        ("closed_loop/on_queued", &queued),
        ("closed_loop/on_queued_no_tokens", &queued_no_tokens),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let per_task = iters.div_ceil(32).max(2);
                let took = rt.block_on(closed_loop(svc, per_task));
                took.mul_f64(iters as f64 / (per_task * 32) as f64)
            })
        });
    }
    g.finish();
    rt.block_on(auditor.flush(Duration::from_secs(30)));
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The bounded queue: block and spill policies, a stalled sink, a failing sink.

use crate::common;

use std::{
    collections::HashSet,
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use common::{TempDir, echo, tool_call};
use mcp_audit::{
    AuditEvent, AuditLayer, AuditSink, Auditor, Durability, LaneConfig, Overflow, sink::SinkError,
};
use serde_json::json;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// A sink that stalls while the gate is closed, and records what it got.
#[derive(Clone, Default)]
struct Gated {
    open: Arc<(Mutex<bool>, Condvar)>,
    got: Arc<Mutex<Vec<String>>>,
}

impl Gated {
    fn open(&self) {
        let (m, c) = &*self.open;
        *m.lock().unwrap() = true;
        c.notify_all();
    }
}

impl AuditSink for Gated {
    fn write(&self, events: &[Arc<AuditEvent>]) -> Result<(), SinkError> {
        let (m, c) = &*self.open;
        let mut open = m.lock().unwrap();
        while !*open {
            open = c.wait(open).unwrap();
        }
        self.got
            .lock()
            .unwrap()
            .extend(events.iter().map(|e| e.event_id.clone()));
        Ok(())
    }
}

async fn call(
    svc: &mut (
             impl Service<
        mcp_gateway_core::McpRequest,
        Response = mcp_gateway_core::McpResponse,
        Error = mcp_gateway_core::BoxError,
    > + Clone
         ),
    i: i64,
) {
    svc.clone()
        .oneshot(tool_call(i, "echo", json!({"i": i})))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_waits_for_a_stalled_sink_and_loses_nothing() {
    let sink = Gated::default();
    let auditor = Auditor::builder()
        .sink(
            LaneConfig::new("gated")
                .capacity(4)
                .overflow(Overflow::Block),
            sink.clone(),
        )
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()).durability(Durability::Queued))
        .service(service_fn(echo));
    // The worker holds one batch in the stalled sink; the queue holds 4 more. Each call makes 2
    // events, so some call must block.
    let calls = tokio::spawn({
        let mut svc = svc.clone();
        async move {
            for i in 0..10 {
                call(&mut svc, i).await;
            }
        }
    });
    // The calls cannot all finish while the sink is stalled.
    let stalled = tokio::time::timeout(Duration::from_millis(500), async {
        while auditor.stats()[0].blocked == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        stalled.is_ok(),
        "a caller should be waiting for room: {:?}",
        auditor.stats()
    );
    assert!(!calls.is_finished());
    sink.open();
    calls.await.unwrap();
    call(&mut svc, 99).await;
    assert!(auditor.flush(Duration::from_secs(10)).await);
    let s = &auditor.stats()[0];
    assert_eq!(
        (s.submitted, s.written, s.dropped, s.spilled),
        (22, 22, 0, 0),
        "{s:?}"
    );
    let got = sink.got.lock().unwrap();
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spill_policy_keeps_serving_and_replays_everything() {
    let d = TempDir::new("spill");
    let sink = Gated::default();
    let auditor = Auditor::builder()
        .sink(
            LaneConfig::new("gated")
                .capacity(4)
                .overflow(Overflow::Spill(d.0.clone())),
            sink.clone(),
        )
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()).durability(Durability::Queued))
        .service(service_fn(echo));
    // All calls finish although the sink is stalled.
    tokio::time::timeout(Duration::from_secs(10), async {
        for i in 0..50 {
            svc.clone()
                .oneshot(tool_call(i, "echo", json!({"i": i})))
                .await
                .unwrap();
        }
    })
    .await
    .expect("calls must not wait on a stalled sink with spill");
    let s = auditor.stats()[0].clone();
    assert!(s.spilled >= 80, "{s:?}");
    assert_eq!(s.blocked, 0);
    assert!(
        std::fs::metadata(d.0.join("gated.spill.jsonl"))
            .unwrap()
            .len()
            > 0
    );
    sink.open();
    assert!(
        auditor.flush(Duration::from_secs(10)).await,
        "{:?}",
        auditor.stats()
    );
    let s = &auditor.stats()[0];
    assert_eq!((s.written, s.dropped), (100, 0), "{s:?}");
    let got = sink.got.lock().unwrap();
    assert_eq!(
        got.iter().collect::<HashSet<_>>().len(),
        100,
        "every event exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sink_is_retried_and_counted_and_other_sinks_go_on() {
    let fails = Arc::new(Mutex::new(3));
    let got = Arc::new(Mutex::new(0usize));
    let flaky = {
        let fails = fails.clone();
        let got = got.clone();
        move |events: &[Arc<AuditEvent>]| {
            let mut f = fails.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(SinkError::new(0, "disk on fire", None));
            }
            *got.lock().unwrap() += events.len();
            Ok(())
        }
    };
    let broken = |_: &[Arc<AuditEvent>]| -> Result<(), SinkError> {
        Err(SinkError::new(0, "always down", None))
    };
    let healthy = Arc::new(Mutex::new(0usize));
    let h = healthy.clone();
    let auditor = Auditor::builder()
        .sink(LaneConfig::new("flaky").durable(true), flaky)
        .sink(LaneConfig::new("broken").max_retries(Some(1)), broken)
        .sink(
            LaneConfig::new("healthy"),
            move |e: &[Arc<AuditEvent>]| {
                *h.lock().unwrap() += e.len();
                Ok(())
            },
        )
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()))
        .service(service_fn(echo));
    for i in 0..5 {
        // Durability::Written: answers wait for the flaky (durable) sink, which recovers.
        tokio::time::timeout(
            Duration::from_secs(10),
            svc.clone().oneshot(tool_call(i, "echo", json!({}))),
        )
        .await
        .expect("a recovering durable sink releases the answer")
        .unwrap();
    }
    assert!(auditor.flush(Duration::from_secs(10)).await);
    let stats = auditor.stats();
    assert_eq!(*got.lock().unwrap(), 10);
    assert_eq!(stats[0].errors, 3, "{stats:?}");
    assert_eq!(stats[0].dropped, 0);
    // The broken sink gave up: every event is counted as dropped, none silently.
    assert_eq!(stats[1].dropped, 10, "{stats:?}");
    assert!(stats[1].errors >= 2);
    assert_eq!(*healthy.lock().unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spill_left_by_a_crash_is_replayed_on_start() {
    let d = TempDir::new("spill-crash");
    let mut text = String::new();
    for i in 0..5 {
        let mut e = AuditEvent::new(
            "tools/call",
            mcp_gateway_core::Direction::Request,
            mcp_audit::MessageKind::Request,
            mcp_audit::Leg::ClientToGateway,
        );
        e.event_id = format!("spilled-{i}");
        text.push_str(&serde_json::to_string(&e).unwrap());
        text.push('\n');
    }
    text.push_str("{\"timestamp\":\"2026-"); // cut by the crash: counted, not silent
    std::fs::write(d.0.join("gated.spill.jsonl"), text).unwrap();
    let sink = Gated::default();
    sink.open();
    let auditor = Auditor::builder()
        .sink(
            LaneConfig::new("gated").overflow(Overflow::Spill(d.0.clone())),
            sink.clone(),
        )
        .build()
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if auditor.stats()[0].dropped == 1 && sink.got.lock().unwrap().len() == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(got.is_ok(), "{:?}", auditor.stats());
    assert_eq!(sink.got.lock().unwrap()[0], "spilled-0");
    assert!(!d.0.join("gated.spill.jsonl").exists());
}

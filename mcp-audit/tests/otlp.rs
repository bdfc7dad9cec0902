//! OTLP export: a receiver built on the `opentelemetry-proto` types over HTTP, started by the
//! test on 127.0.0.1, gets the trace, the logs and the metrics.
#![cfg(feature = "otlp")]

use crate::common;

use std::{collections::HashSet, time::Duration};

use common::tool_call;
use mcp_gateway_core::{Annotation, TraceContext};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt, service_fn};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_logs_and_metrics_arrive_at_the_receiver() {
    let (addr, _, mut rx) = common::http_receiver().await;
    let d = common::TempDir::new("otlp");
    // Built from the `[audit]` TOML, on the async runtime, as the gateway does.
    let config = mcp_audit::Config::from_toml(&format!(
        r#"
        gateway = "gw-test"
        [file]
        dir = "{}"
        [otlp]
        endpoint = "http://{addr}"
        service_name = "gw-test"
        metrics_interval_ms = 60000
        "#,
        d.0.display()
    ))
    .unwrap();
    let stack = config.build(None).unwrap();
    let auditor = stack.auditor.clone();
    let layer = stack.layer.clone();
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(
        |req: mcp_gateway_core::McpRequest| async move {
            // Stands in for an upstream that takes 3 ms to answer.
            let started = std::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(3)).await;
            req.ctx.annotations.push(Annotation::Upstream {
                server: "everything".into(),
                instance: None,
                latency: started.elapsed(),
            });
            common::echo(req).await
        },
    ));
    let mut req = tool_call(1, "everything__echo", json!({"message": "hi"}));
    let root =
        TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap();
    req.ctx.trace = root;
    svc.oneshot(req).await.unwrap();
    assert!(auditor.flush(Duration::from_secs(20)).await);

    let (mut spans, mut logs, mut metrics) = (Vec::new(), 0, HashSet::new());
    while spans.len() < 4 || logs < 2 || !metrics.contains("mcp.calls") {
        let (path, body) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("OTLP data")
            .unwrap();
        match path.as_str() {
            "/v1/traces" => {
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                for rs in req.resource_spans {
                    let res = rs.resource.unwrap();
                    assert!(
                        res.attributes.iter().any(|a| a.key == "service.name"
                            && format!("{:?}", a.value).contains("gw-test"))
                    );
                    for ss in rs.scope_spans {
                        spans.extend(ss.spans);
                    }
                }
            }
            "/v1/logs" => {
                let req = ExportLogsServiceRequest::decode(body).unwrap();
                for rl in req.resource_logs {
                    for sl in rl.scope_logs {
                        for l in sl.log_records {
                            assert_eq!(hex(&l.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
                            logs += 1;
                        }
                    }
                }
            }
            "/v1/metrics" => {
                let req = ExportMetricsServiceRequest::decode(body).unwrap();
                for rm in req.resource_metrics {
                    for sm in rm.scope_metrics {
                        metrics.extend(sm.metrics.into_iter().map(|m| m.name));
                    }
                }
            }
            other => panic!("unexpected path {other}"),
        }
    }
    // One trace: the caller's trace id on all four legs, parented to the caller's span.
    assert_eq!(spans.len(), 4);
    assert!(
        spans
            .iter()
            .all(|s| hex(&s.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let server = spans
        .iter()
        .find(|s| s.name == "mcp tools/call")
        .expect("server span");
    assert_eq!(hex(&server.span_id), root.span_id_hex());
    let upstream = spans
        .iter()
        .find(|s| s.name == "upstream everything")
        .expect("upstream span");
    assert_eq!(upstream.parent_span_id, server.span_id);
    assert!(upstream.end_time_unix_nano - upstream.start_time_unix_nano >= 2_900_000);
    assert!(
        metrics.contains("mcp.call.duration") && metrics.contains("mcp.tokens"),
        "{metrics:?}"
    );
    // The same trace id and span ids are in the audit log.
    let recs = common::records(&d.0);
    assert_eq!(recs.len(), 2);
    assert!(
        recs.iter()
            .all(|r| r["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
                && r["gateway"] == "gw-test")
    );
    assert_eq!(
        recs[1]["spans"]["gateway_to_upstream"].as_str().unwrap(),
        hex(&upstream.span_id)
    );
}

//! The layer records every field, propagates trace context and records the reverse path.

use crate::common;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use common::{TempDir, records, tool_call};
use mcp_audit::{
    AuditLayer, Auditor, LaneConfig,
    sink::{FileSinkConfig, JsonlFileSink},
};
use mcp_gateway_core::{
    Annotation, BoxError, Direction, Downstream, ErrorData, Identity, McpRequest, McpResponse,
    Origin, ServerMessage, SessionInfo, TraceContext, codes, error,
    identity::{AuthMethod, PrincipalKind},
};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt, service_fn};

struct Client;

#[async_trait]
impl Downstream for Client {
    async fn notify(&self, _: ServerMessage) -> Result<(), BoxError> {
        Ok(())
    }
    async fn request(&self, _: ServerMessage) -> Result<Result<Value, ErrorData>, BoxError> {
        Ok(Ok(
            json!({"role": "assistant", "content": {"type": "text", "text": "sampled answer"}}),
        ))
    }
}

fn request(id: i64, args: Value) -> McpRequest {
    let mut req = tool_call(id, "github__create_issue", args);
    let mut ident = Identity::new("alice", AuthMethod::Jwt);
    ident.teams = vec!["eng".into()];
    ident.kind = PrincipalKind::Agent;
    req.ctx.identity = Some(Arc::new(ident));
    req.ctx.session = Arc::new(SessionInfo {
        id: Some("sess-1".into()),
        protocol_version: Some("2025-11-25".into()),
        client_info: Some(Arc::new(json!({"name": "mcp-python", "version": "2.3.0"}))),
        client_capabilities: None,
    });
    req.ctx.origin = Arc::new(Origin {
        remote_addr: Some("127.0.0.1:5555".parse().unwrap()),
        user_agent: Some("python-httpx/0.28".into()),
        origin: Some("http://localhost".into()),
        gateway: Some("gw-test".into()),
    });
    req.ctx.trace =
        TraceContext::from_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .unwrap();
    req.ctx.downstream = Some(Arc::new(Client));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_every_field_joined_by_one_trace() {
    let d = TempDir::new("layer");
    let auditor = Auditor::builder()
        .sink(
            LaneConfig::new("file").durable(true),
            JsonlFileSink::open(FileSinkConfig::new(&d.0)).unwrap(),
        )
        .build()
        .unwrap();
    let scrub = |v: &mut Value| {
        fn walk(v: &mut Value) {
            match v {
                Value::String(s) if s.starts_with("ghp_") => *s = "[REDACTED:github_token]".into(),
                Value::Array(a) => a.iter_mut().for_each(walk),
                Value::Object(o) => o.values_mut().for_each(walk),
                _ => {}
            }
        }
        walk(v)
    };
    let seen_meta = Arc::new(std::sync::Mutex::new(None::<(Value, TraceContext)>));
    let seen = seen_meta.clone();
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()).scrubber(Arc::new(scrub)))
        .service(service_fn(move |req: McpRequest| {
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap() = Some((Value::Object(req.params.clone()), req.ctx.trace));
                let a = &req.ctx.annotations;
                a.push(Annotation::Policy { rule: "scope:eng".into(), effect: "allow", reason: "team eng".into() });
                a.push(Annotation::Dlp { detector: "email".into(), direction: Direction::Response, count: 2, action: "redact" });
                a.push(Annotation::Other { key: "target", value: json!({"server": "github", "name": "create_issue"}) });
                a.push(Annotation::Upstream { server: "github".into(), instance: Some("github-alice".into()), latency: Duration::from_millis(7) });
                let ds = req.ctx.downstream.clone().unwrap();
                ds.notify(ServerMessage { server: Some("github".into()), method: "notifications/progress".into(), params: json!({"progress": 1}).as_object().unwrap().clone() }).await?;
                let answer = ds.request(ServerMessage { server: Some("github".into()), method: "sampling/createMessage".into(), params: json!({"messages": []}).as_object().unwrap().clone() }).await?;
                assert!(answer.is_ok());
                Ok::<_, BoxError>(req.reply(json!({"content": [{"type": "text", "text": "Created issue #42 in the repository"}]})))
            }
        }));
    let resp = svc
        .clone()
        .oneshot(request(
            1,
            json!({"title": "bug", "token": "ghp_secret123"}),
        ))
        .await
        .unwrap();
    assert!(!resp.is_error());
    // An error answer too.
    let denied = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()))
        .service(service_fn(|req: McpRequest| async move {
            req.ctx.annotations.push(Annotation::Policy {
                rule: "kill_switch:tool".into(),
                effect: "deny",
                reason: "incident 7".into(),
            });
            Ok::<McpResponse, BoxError>(req.error(error(
                codes::KILL_SWITCH,
                "kill switch active",
                None,
            )))
        }));
    let r = denied.oneshot(request(2, json!({}))).await.unwrap();
    assert!(r.is_error());
    assert!(auditor.flush(Duration::from_secs(5)).await);

    // Trace context went inward: `_meta.traceparent` and ctx.trace name the upstream leg.
    let (params, inner_trace) = seen_meta.lock().unwrap().clone().unwrap();
    let tp = params["_meta"]["traceparent"].as_str().unwrap().to_owned();
    assert_eq!(tp, inner_trace.traceparent());
    assert!(tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));

    let recs = records(&d.0);
    let methods: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| (r["method"].as_str().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        methods,
        [
            ("tools/call", "request"),
            ("notifications/progress", "notification"),
            ("sampling/createMessage", "request"),
            ("sampling/createMessage", "response"),
            ("tools/call", "response"),
            ("tools/call", "request"),
            ("tools/call", "response"),
        ]
    );
    for r in &recs[..5] {
        assert_eq!(r["trace_id"], "0af7651916cd43dd8448eb211c80319c", "{r}");
    }
    let (req, resp) = (&recs[0], &recs[4]);
    assert_eq!(req["leg"], "client_to_gateway");
    assert_eq!(req["parent_span_id"], "b7ad6b7169203331");
    assert_eq!(resp["leg"], "gateway_to_client");
    assert_eq!(req["spans"], resp["spans"]);
    assert_eq!(
        resp["spans"]["gateway_to_upstream"].as_str().unwrap(),
        &tp[36..52]
    );
    // Every field of the issue, on the pair.
    assert_eq!(req["gateway"], "gw-test");
    assert_eq!(req["session_id"], "sess-1");
    assert_eq!(req["request_id"], 1);
    assert_eq!(req["identity"]["subject"], "alice");
    assert_eq!(req["identity"]["teams"], json!(["eng"]));
    assert_eq!(req["identity"]["kind"], "agent");
    assert_eq!(req["identity"]["auth_method"], "jwt");
    assert_eq!(req["client_name"], "mcp-python");
    assert_eq!(req["client_version"], "2.3.0");
    assert_eq!(req["user_agent"], "python-httpx/0.28");
    assert_eq!(req["remote_addr"], "127.0.0.1:5555");
    assert_eq!(req["origin"], "http://localhost");
    assert_eq!(req["protocol_version"], "2025-11-25");
    assert_eq!(req["feature_kind"], "tool");
    assert_eq!(req["feature"], "github__create_issue");
    assert_eq!(
        req["arguments"],
        json!({"title": "bug", "token": "[REDACTED:github_token]"})
    );
    assert!(
        !std::fs::read_to_string(
            mcp_audit::chain::log_files(&d.0, "audit").unwrap()[0]
                .1
                .clone()
        )
        .unwrap()
        .contains("ghp_secret123")
    );
    assert!(req["bytes_in"].as_u64().unwrap() > 50);
    assert!(req["tokens_in"].as_u64().unwrap() > 3);
    assert_eq!(resp["server"], "github");
    assert_eq!(resp["instance"], "github-alice");
    assert_eq!(resp["status"], "ok");
    assert_eq!(
        resp["policy"],
        json!([{"rule": "scope:eng", "effect": "allow", "reason": "team eng"}])
    );
    assert_eq!(
        resp["dlp"],
        json!([{"detector": "email", "direction": "response", "count": 2, "action": "redact"}])
    );
    assert_eq!(resp["upstream_latency_ms"], 7.0);
    assert!(resp["total_latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(resp["bytes_out"].as_u64().unwrap() > 40);
    let tokens_out = resp["tokens_out"].as_u64().unwrap();
    assert!((6..=20).contains(&tokens_out), "{tokens_out}");
    // Reverse path.
    assert_eq!(recs[1]["direction"], "response");
    assert_eq!(recs[1]["server"], "github");
    assert_eq!(recs[3]["status"], "ok");
    assert!(recs[3]["tokens_in"].as_u64().unwrap() > 0);
    // The refusal.
    assert_eq!(recs[6]["status"], "error");
    assert_eq!(recs[6]["error_code"], codes::KILL_SWITCH);
    assert_eq!(recs[6]["policy"][0]["rule"], "kill_switch:tool");
    mcp_audit::chain::verify_dir(&d.0, "audit").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_traceparent_is_adopted_and_notifications_get_one_record() {
    let d = TempDir::new("meta-tp");
    let auditor = Auditor::builder()
        .sink(
            LaneConfig::new("file").durable(true),
            JsonlFileSink::open(FileSinkConfig::new(&d.0)).unwrap(),
        )
        .build()
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()))
        .service(service_fn(move |req: McpRequest| {
            let s = s.clone();
            async move {
                let tp = req
                    .meta()
                    .and_then(|m| m.get("traceparent"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                s.lock().unwrap().push(tp);
                Ok::<_, BoxError>(if req.is_notification() {
                    McpResponse::accepted()
                } else {
                    req.reply(json!({}))
                })
            }
        }));
    let mut req = tool_call(5, "x", json!({}));
    req.params.insert(
        "_meta".into(),
        json!({"traceparent": "00-11111111111111111111111111111111-2222222222222222-01", "progressToken": 9}),
    );
    svc.clone().oneshot(req).await.unwrap();
    let note = McpRequest::new(
        None,
        mcp_gateway_core::Method::Cancelled,
        json!({"requestId": 5}).as_object().unwrap().clone(),
    );
    svc.clone().oneshot(note).await.unwrap();
    assert!(auditor.flush(Duration::from_secs(5)).await);
    let recs = records(&d.0);
    assert_eq!(recs.len(), 3, "request + answer + one notification record");
    assert_eq!(recs[0]["trace_id"], "11111111111111111111111111111111");
    assert_eq!(recs[0]["parent_span_id"], "2222222222222222");
    assert_eq!(recs[2]["kind"], "notification");
    assert_eq!(recs[2]["method"], "notifications/cancelled");
    let inner_tp = seen.lock().unwrap()[0].clone();
    assert!(inner_tp.starts_with("00-11111111111111111111111111111111-"));
    assert!(
        !inner_tp.contains("2222222222222222"),
        "the upstream gets the gateway's span"
    );
    assert_eq!(
        &inner_tp[36..52],
        recs[0]["spans"]["gateway_to_upstream"].as_str().unwrap()
    );
}

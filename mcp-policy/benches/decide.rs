//! Policy decision costs: one `tools/call` decision through the layer with 1,000 rules and 1,000
//! tools (budget 2 µs), and filtering a 1,000-tool merged list for one caller (budget 200 µs).
//!
//! Run with `cargo bench -p mcp-policy --bench decide`.

// `criterion_group!` generates an undocumented function.
#![allow(missing_docs)]

use std::{
    hint::black_box,
    sync::{Arc, Mutex},
};

use cpu_time::ThreadTime;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use mcp_gateway_core::{
    BoxError, EventBus, FeatureKind, Identity, ListOrigins, McpRequest, McpResponse, Method,
    RequestId, Target,
    catalog::{Catalog, Naming, ServerLists},
    dispatch::{Dispatch, DispatchConfig},
    identity::AuthMethod,
};
use mcp_policy::{
    PolicyHandle, PolicyLayer,
    config::{compile_document, parse_document},
    engine::Caller,
};
use serde_json::{Value, json};
use tower::{Layer, Service, service_fn};

const SERVERS: usize = 100;
const TOOLS: usize = 1000;
const RULES: usize = 1000;

fn policy() -> String {
    let mut t = String::from("[defaults]\ntools = \"allow-all\"\n\n");
    // 980 server-scoped rules, 20 gateway-wide ones.
    for i in 0..RULES - 20 {
        let cond = if i % 3 == 0 {
            "when = \"time.hour >= 0 && identity.authenticated\"\n"
        } else {
            ""
        };
        t.push_str(&format!(
            "[[rules]]\nname = \"r{i}\"\nserver = \"s{}\"\nteams = [\"team{}\"]\nfeatures = [\"tool_{}_*\"]\n{cond}\n",
            i % SERVERS,
            i % 50,
            i % 10
        ));
    }
    for i in 0..20 {
        t.push_str(&format!(
            "[[rules]]\nname = \"deny{i}\"\neffect = \"deny\"\nteams = [\"blocked{i}\"]\n\n"
        ));
    }
    t.push_str("[[rate_limits]]\nname = \"per-user\"\nkey = \"identity\"\nrate = 1000000000\nmethods = [\"tools/call\"]\n");
    t
}

fn tool(i: usize) -> (String, String, Value) {
    let server = format!("s{}", i % SERVERS);
    let name = format!("tool_{}_{}", i % 10, i / 10);
    let def = json!({
        "name": format!("{server}__{name}"),
        "description": format!("Does thing number {i} with a reasonably long description of about a hundred characters."),
        "inputSchema": {"type": "object", "properties": {"path": {"type": "string", "description": "A path"}, "n": {"type": "integer"}}, "required": ["path"]}
    });
    (server, name, def)
}

fn caller() -> Arc<Identity> {
    let mut id = Identity::new("alice", AuthMethod::Jwt);
    id.teams = vec!["team3".into(), "team7".into(), "team13".into()];
    id.roles = vec!["dev".into()];
    Arc::new(id)
}

fn bench(c: &mut Criterion) {
    let text = policy();
    let doc = parse_document(&text, None).unwrap_or_else(|e| panic!("{e}"));
    let engine = compile_document(&doc, Some(&text), None).unwrap_or_else(|e| panic!("{e}"));
    let handle = PolicyHandle::new(engine);
    let id = caller();

    let tools: Vec<(String, String, Value)> = (0..TOOLS).map(tool).collect();
    let list_body = json!({"tools": tools.iter().map(|t| t.2.clone()).collect::<Vec<_>>()});
    let origins = ListOrigins(Arc::new(
        tools
            .iter()
            .map(|(s, n, d)| Target {
                server: s.as_str().into(),
                name: Some(n.clone()),
                exposed_name: d["name"].as_str().map(str::to_string),
                instance: None,
            })
            .collect(),
    ));

    // The inner service hands back a prepared answer (prepared outside the timing).
    let slot: Arc<Mutex<Option<McpResponse>>> = Arc::default();
    let inner_slot = slot.clone();
    let inner = service_fn(move |req: McpRequest| {
        let r = inner_slot.lock().ok().and_then(|mut s| s.take());
        async move { Ok::<_, BoxError>(r.unwrap_or_else(|| req.reply(json!({})))) }
    });
    let mut svc = PolicyLayer::new(handle.clone()).layer(inner);

    let list_req = |id: &Arc<Identity>| {
        let mut r = McpRequest::new(
            Some(RequestId::Number(1)),
            Method::ToolsList,
            Default::default(),
        );
        r.ctx.identity = Some(id.clone());
        r
    };
    let prep_list = || {
        let mut resp = McpResponse::result(Some(RequestId::Number(1)), list_body.clone());
        resp.extensions.insert(origins.clone());
        if let Ok(mut s) = slot.lock() {
            *s = Some(resp);
        }
        list_req(&id)
    };
    // Warm up: the first list pins and threat-checks every tool.
    let first = svc.call(prep_list()).now_or_never();
    let visible = first
        .and_then(|r| r.ok())
        .and_then(|r| r.body.ok())
        .and_then(|b| b["tools"].as_array().map(Vec::len))
        .unwrap_or(0);
    eprintln!("caller sees {visible} of {TOOLS} tools");

    // A visible tool: s3 / tool_3_*, allowed for team3 by rule r3 (with a condition).
    let (server, name, def) = tools[3].clone();
    let exposed = def["name"].as_str().unwrap_or_default().to_string();
    let call_req = || {
        let mut p = serde_json::Map::new();
        p.insert("name".into(), Value::String(exposed.clone()));
        p.insert("arguments".into(), json!({"path": "/tmp/x"}));
        let mut r = McpRequest::new(Some(RequestId::Number(2)), Method::ToolsCall, p);
        r.ctx.identity = Some(id.clone());
        r.ctx.target = Some(Target {
            server: server.as_str().into(),
            name: Some(name.clone()),
            exposed_name: Some(exposed.clone()),
            instance: None,
        });
        r
    };
    let ok = svc
        .call(call_req())
        .now_or_never()
        .and_then(|r| r.ok())
        .is_some_and(|r| !r.is_error());
    assert!(ok, "the benchmark call must be allowed");

    // Thread CPU time as well as wall time: this machine is shared, and wall time under load
    // measures the scheduler more than the code.
    c.bench_function("[cpu] engine.decide tools/call (1000 rules)", |b| {
        let engine = handle.engine();
        let mut args = serde_json::Map::new();
        args.insert("path".into(), json!("/tmp/x"));
        let who = Caller {
            identity: Some(&id),
            now_unix: 1_700_000_000,
            ..Default::default()
        };
        b.iter_custom(|iters| {
            let start = ThreadTime::now();
            for _ in 0..iters {
                black_box(engine.decide(
                    &who,
                    &Method::ToolsCall,
                    FeatureKind::Tool,
                    black_box(&server),
                    black_box(&name),
                    Some(&args),
                ));
            }
            start.elapsed()
        })
    });

    c.bench_function(
        "[cpu] layer tools/call decision (1000 rules, 1000 tools)",
        |b| {
            b.iter_custom(|iters| {
                let reqs: Vec<McpRequest> = (0..iters).map(|_| call_req()).collect();
                let start = ThreadTime::now();
                for r in reqs {
                    black_box(svc.call(r).now_or_never());
                }
                start.elapsed()
            })
        },
    );

    c.bench_function(
        "[cpu] layer tools/list filter (1000 tools, one caller)",
        |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let r = prep_list();
                    let start = ThreadTime::now();
                    black_box(svc.call(r).now_or_never());
                    total += start.elapsed();
                }
                total
            })
        },
    );

    // The list as the gateway answers it: the core dispatch copies the entries out of the merged
    // catalog (grouped by server, one shared `Arc<str>` per server), the policy filters them.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let _rt = runtime.enter();
    let order: Vec<Arc<str>> = (0..SERVERS).map(|s| Arc::from(format!("s{s}"))).collect();
    let catalog = Catalog::new(Naming::default(), order.clone(), EventBus::default());
    for (s, server) in order.iter().enumerate() {
        let raw: Vec<Value> = tools
            .iter()
            .enumerate()
            .filter(|(i, _)| i % SERVERS == s)
            .map(|(_, (_, name, def))| {
                let mut d = def.clone();
                d["name"] = Value::String(name.clone());
                d
            })
            .collect();
        catalog.update(
            server,
            ServerLists {
                tools: raw,
                ..ServerLists::default()
            },
        );
    }
    let config = DispatchConfig {
        page_size: 2 * TOOLS,
        ..DispatchConfig::default()
    };
    let mut gateway_svc =
        PolicyLayer::new(handle.clone()).layer(Dispatch::new(catalog, Vec::new(), config));
    let seen = gateway_svc
        .call(list_req(&id))
        .now_or_never()
        .and_then(|r| r.ok())
        .and_then(|r| r.body.ok())
        .and_then(|b| b["tools"].as_array().map(Vec::len))
        .unwrap_or(0);
    assert_eq!(seen, visible, "dispatch + policy must show the same tools");
    c.bench_function(
        "[cpu] dispatch + layer tools/list (1000 tools in the catalog, one caller)",
        |b| {
            b.iter_custom(|iters| {
                let start = ThreadTime::now();
                for _ in 0..iters {
                    black_box(gateway_svc.call(list_req(&id)).now_or_never());
                }
                start.elapsed()
            })
        },
    );

    c.bench_function("engine.decide tools/call (1000 rules)", |b| {
        let engine = handle.engine();
        let mut args = serde_json::Map::new();
        args.insert("path".into(), json!("/tmp/x"));
        let who = Caller {
            identity: Some(&id),
            now_unix: 1_700_000_000,
            ..Default::default()
        };
        b.iter(|| {
            black_box(engine.decide(
                &who,
                &Method::ToolsCall,
                FeatureKind::Tool,
                black_box(&server),
                black_box(&name),
                Some(&args),
            ))
        })
    });

    c.bench_function("layer tools/call decision (1000 rules, 1000 tools)", |b| {
        b.iter_batched(
            call_req,
            |r| black_box(svc.call(r).now_or_never()),
            BatchSize::SmallInput,
        )
    });

    c.bench_function("layer tools/list filter (1000 tools, one caller)", |b| {
        b.iter_batched(
            prep_list,
            |r| black_box(svc.call(r).now_or_never()),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

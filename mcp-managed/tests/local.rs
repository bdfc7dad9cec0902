//! The local-process runtime end to end, with `mcp-server-time` (PyPI) behind the real
//! `mcp-bridge` binary: secrets, selection and access lists through the `ManagedLayer`, outage ->
//! restart -> recovery, reaping and caps, drain, rolling update, and faults. Every test asserts
//! that no process it started is left.

use crate::common;

use std::{sync::Arc, time::Duration};

use common::*;
use mcp_gateway_core::{EventBus, GatewayEvent, codes};
use mcp_managed::{
    AccessList, LocalProcess, ManagedLayer, Manager, ServerSettings, Sharing, Timing,
};
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt, service_fn};

fn local() -> Arc<LocalProcess> {
    Arc::new(LocalProcess::new(bridge_bin()))
}

fn fast_timing() -> Timing {
    Timing {
        restart_backoff: Duration::from_millis(100),
        restart_backoff_max: Duration::from_secs(1),
        reap_interval: Duration::from_secs(3600),
        ready_poll: Duration::from_millis(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_checks_the_secret_before_the_child_and_serves_rmcp_clients() {
    let m = marker("secret");
    let manager = Manager::builder()
        .server(ServerSettings::new(time_spec("time", &m), local()))
        .build()
        .unwrap();
    let ep = manager.ensure("time", "shared").await.unwrap();
    let base = ep.url.trim_end_matches("/mcp").to_string();

    // Health needs no secret; MCP does.
    let (s, _) = raw(http::Method::GET, &format!("{base}/healthz"), &[], None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    let (s, _) = raw(http::Method::GET, &format!("{base}/readyz"), &[], None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let (s, body) = raw(http::Method::POST, &ep.url, &[], Some(list.clone()))
        .await
        .unwrap();
    assert_eq!(s, 401, "{body}");
    let (s, _) = raw(
        http::Method::POST,
        &ep.url,
        &[("x-mcp-bridge-secret", "wrong")],
        Some(list.clone()),
    )
    .await
    .unwrap();
    assert_eq!(s, 401);
    let secret = ep.secret_header.1.to_str().unwrap().to_string();
    let (s, _) = raw(
        http::Method::POST,
        &ep.url,
        &[("x-mcp-bridge-secret", &secret[..secret.len() - 1])],
        Some(list),
    )
    .await
    .unwrap();
    assert_eq!(s, 401);

    // rmcp's own Streamable HTTP client (what dispatch uses) works with the secret header.
    let client = rmcp_client(&ep).await.unwrap();
    let tools = client.list_tools(None).await.unwrap();
    let names: Vec<&str> = tools.tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"get_current_time"), "{names:?}");
    let r = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("get_current_time")
                .with_arguments(json!({"timezone": "UTC"}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true));
    drop(client);

    // The child never sees the secret.
    let pids = processes_with(&m);
    assert!(pids.len() >= 2, "bridge and server: {pids:?}");
    for pid in &pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&secret),
            "secret in argv"
        );
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let is_bridge = String::from_utf8_lossy(&cmdline).contains("mcp-bridge");
        if !is_bridge {
            assert!(
                !String::from_utf8_lossy(&env).contains("MCP_BRIDGE_SECRET"),
                "secret in child env"
            );
        }
    }
    manager.shutdown().await;
    assert_no_orphans(&m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_allowlist_refuses_other_addresses() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge = mcp_managed::bridge::Bridge::start(
        mcp_managed::bridge::BridgeConfig {
            command: vec!["python3".into(), "-m".into(), "mcp_server_time".into()],
            secret: Some("s".into()),
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            scrub_env: vec![],
        },
        listener,
    )
    .unwrap();
    let url = format!("http://{}/mcp", bridge.local_addr());
    let (s, _) = raw(
        http::Method::POST,
        &url,
        &[("x-mcp-bridge-secret", "s")],
        Some(json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
    )
    .await
    .unwrap();
    assert_eq!(s, 403);
    bridge.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_per_identity_named_shared_instance_and_access_lists_through_the_layer() {
    let m = marker("dedicated");
    let manager = Manager::builder()
        .server(
            ServerSettings::new(time_spec("time", &m), local())
                .sharing(Sharing::PerIdentity)
                .named(
                    "team",
                    AccessList {
                        teams: vec!["ops".into()],
                        ..Default::default()
                    },
                ),
        )
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(ManagedLayer::new(manager.clone()))
        .service(service_fn(dispatch));
    let args = json!({"timezone": "UTC"});
    let answer = |r: mcp_gateway_core::McpResponse| -> String {
        let v = r.body.expect("a result");
        assert_ne!(v["isError"], true, "{v}");
        v["_instance"].as_str().unwrap().to_string()
    };
    let alice = answer(
        svc.clone()
            .oneshot(tool_call(
                "time",
                "get_current_time",
                args.clone(),
                Some(identity("alice", &[])),
            ))
            .await
            .unwrap(),
    );
    let bob = answer(
        svc.clone()
            .oneshot(tool_call(
                "time",
                "get_current_time",
                args.clone(),
                Some(identity("bob", &[])),
            ))
            .await
            .unwrap(),
    );
    let alice2 = answer(
        svc.clone()
            .oneshot(tool_call(
                "time",
                "get_current_time",
                args.clone(),
                Some(identity("alice", &[])),
            ))
            .await
            .unwrap(),
    );
    assert_ne!(alice, bob, "two identities, two instances");
    assert_eq!(alice, alice2, "the same identity keeps its instance");
    assert!(alice.starts_with("u-alice-"));

    // Carol picks the team's shared instance by URL path.
    let mut req = tool_call(
        "time",
        "get_current_time",
        args.clone(),
        Some(identity("carol", &["ops"])),
    );
    req.ctx
        .extensions
        .insert(http::Uri::from_static("/mcp/time/team"));
    let carol = answer(svc.clone().oneshot(req).await.unwrap());
    assert!(carol.starts_with("team|"), "{carol}");
    assert_ne!(carol, alice);

    // Carol may not pick Alice's instance; Dave (no team) may not pick the team's.
    let mut req = tool_call(
        "time",
        "get_current_time",
        args.clone(),
        Some(identity("carol", &["ops"])),
    );
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "mcp-instance",
        alice.split('|').next().unwrap().parse().unwrap(),
    );
    req.ctx.extensions.insert(headers);
    let e = svc.clone().oneshot(req).await.unwrap().body.unwrap_err();
    assert_eq!(e.code.0, codes::POLICY_DENIED);
    let mut req = tool_call(
        "time",
        "get_current_time",
        args.clone(),
        Some(identity("dave", &[])),
    );
    req.ctx
        .extensions
        .insert(http::Uri::from_static("/mcp/time/team"));
    let e = svc.clone().oneshot(req).await.unwrap().body.unwrap_err();
    assert_eq!(e.code.0, codes::POLICY_DENIED);
    assert!(e.message.contains("not available"), "{}", e.message);
    // Nobody signed in: no dedicated instance.
    let e = svc
        .clone()
        .oneshot(tool_call("time", "get_current_time", args, None))
        .await
        .unwrap()
        .body
        .unwrap_err();
    assert_eq!(e.code.0, codes::UNAUTHORIZED);

    assert_eq!(manager.list().len(), 3);
    manager.shutdown().await;
    assert_no_orphans(&m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_instance_publishes_outage_restarts_and_calls_succeed_again() {
    let m = marker("kill");
    let events = EventBus::default();
    let mut rx = events.subscribe();
    let mut spec = time_spec("time", &m);
    spec.health.interval_ms = Some(100);
    spec.health.failure_threshold = Some(2);
    let manager = Manager::builder()
        .server(ServerSettings::new(spec, local()))
        .events(events)
        .timing(fast_timing())
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(ManagedLayer::new(manager.clone()))
        .service(service_fn(dispatch));
    let args = json!({"timezone": "UTC"});
    let r = svc
        .clone()
        .oneshot(tool_call("time", "get_current_time", args.clone(), None))
        .await
        .unwrap();
    assert!(r.body.is_ok());
    let before = manager.list().remove(0);
    let pid: i32 = before.runtime_id.clone().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let down = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rx.recv().await {
                Ok(GatewayEvent::UpstreamDown { server, reason }) => return (server, reason),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("an outage event");
    assert_eq!(&*down.0, "time/shared");
    assert!(down.1.contains("health probes"), "{}", down.1);
    let up = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(GatewayEvent::UpstreamUp { server }) = rx.recv().await {
                return server;
            }
        }
    })
    .await
    .expect("a recovery event");
    assert_eq!(&*up, "time/shared");
    let r = svc
        .clone()
        .oneshot(tool_call("time", "get_current_time", args, None))
        .await
        .unwrap();
    assert!(r.body.is_ok(), "{:?}", r.body);
    let after = manager.list().remove(0);
    assert!(after.generation > before.generation);
    assert_ne!(after.runtime_id, before.runtime_id);
    manager.shutdown().await;
    assert_no_orphans(&m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_dedicated_instances_are_reaped_and_the_cap_holds() {
    let m = marker("reap");
    let manager = Manager::builder()
        .server(
            ServerSettings::new(time_spec("time", &m), local())
                .sharing(Sharing::PerIdentity)
                .max_instances(2)
                .idle_timeout(Duration::from_millis(300)),
        )
        .timing(fast_timing())
        .build()
        .unwrap();
    let a = manager
        .acquire("time", Some(&identity("a", &[])), None, None)
        .await
        .unwrap();
    let b = manager
        .acquire("time", Some(&identity("b", &[])), None, None)
        .await
        .unwrap();
    let e = manager
        .acquire("time", Some(&identity("c", &[])), None, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), codes::UPSTREAM_UNAVAILABLE);
    assert!(e.to_string().contains("cap of 2"), "{e}");
    // Busy instances are never reaped.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(manager.reap_idle().await, 0);
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(manager.reap_idle().await, 2);
    assert!(manager.list().is_empty());
    assert_no_orphans(&m).await;
    let c = manager
        .acquire("time", Some(&identity("c", &[])), None, None)
        .await
        .unwrap();
    assert!(
        call(c.endpoint(), "tools/list", json!({})).await.unwrap()["result"]["tools"].is_array()
    );
    drop(c);
    manager.shutdown().await;
    assert_no_orphans(&m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_takes_no_new_sessions_finishes_open_ones_then_tears_down() {
    let m = marker("drain");
    let manager = Manager::builder()
        .server(ServerSettings::new(time_spec("time", &m), local()))
        .build()
        .unwrap();
    let s1 = manager
        .acquire("time", None, None, Some("session-1"))
        .await
        .unwrap();
    drop(s1);
    assert!(manager.drain(
        "time",
        "shared",
        Duration::from_millis(500),
        Duration::from_secs(10)
    ));
    let e = manager
        .acquire("time", None, None, Some("session-2"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("draining"), "{e}");
    let again = manager
        .acquire("time", None, None, Some("session-1"))
        .await
        .unwrap();
    assert!(
        call(again.endpoint(), "tools/list", json!({}))
            .await
            .is_ok()
    );
    assert_eq!(
        manager.list()[0].state,
        mcp_managed::InstanceState::Draining
    );
    drop(again);
    for _ in 0..100 {
        if manager.list().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        manager.list().is_empty(),
        "torn down after the grace period"
    );
    assert_no_orphans(&m).await;
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_and_recreate_switch_generations_without_failed_calls() {
    let m = marker("rolling");
    let manager = Manager::builder()
        .server(ServerSettings::new(time_spec("time", &m), local()))
        .build()
        .unwrap();
    let first = manager.ensure("time", "shared").await.unwrap();
    let caller = {
        let manager = manager.clone();
        tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..40 {
                let lease = manager.acquire("time", None, None, None).await.unwrap();
                call(lease.endpoint(), "tools/list", json!({}))
                    .await
                    .unwrap();
                ok += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ok
        })
    };
    let mut spec = time_spec("time", &m);
    spec.env.insert("VERSION".into(), "2".into());
    assert_eq!(manager.rolling_update(spec).await.unwrap(), 1);
    let after = manager.list().remove(0);
    assert_eq!(after.generation, first.generation + 1);
    assert_eq!(
        caller.await.unwrap(),
        40,
        "no call failed during the update"
    );
    let re = manager.recreate("time", "shared").await.unwrap();
    assert_eq!(re.generation, first.generation + 2);
    // Exactly one generation is running: bridge + server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(processes_with(&m).len(), 2, "{:?}", processes_with(&m));
    manager.shutdown().await;
    assert_no_orphans(&m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_give_clear_errors_and_leave_nothing_behind() {
    let m = marker("faults");
    // A child that never answers initialize.
    let mut never = mcp_managed::InstanceSpec::new("never", "command");
    never.command = Some("sleep".into());
    never.args = vec!["1000".into()];
    never.env.insert("MCP_TEST_MARKER".into(), m.clone());
    never.health.ready_timeout_ms = Some(1500);
    // A port already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut busy = time_spec("busy", &m);
    busy.address = Some(taken.local_addr().unwrap());
    let manager = Manager::builder()
        .server(ServerSettings::new(never, local()))
        .server(ServerSettings::new(busy, local()))
        .server(ServerSettings::new(
            time_spec("nobridge", &m),
            Arc::new(LocalProcess::new("/nonexistent/mcp-bridge")),
        ))
        .build()
        .unwrap();
    let e = manager.ensure("never", "shared").await.unwrap_err();
    assert_eq!(e.code(), codes::UPSTREAM_UNAVAILABLE);
    assert!(e.to_string().contains("not ready within"), "{e}");
    let e = manager.ensure("busy", "shared").await.unwrap_err();
    assert!(e.to_string().contains("did not start listening"), "{e}");
    let e = manager.ensure("nobridge", "shared").await.unwrap_err();
    assert!(
        e.to_string().contains("cannot run /nonexistent/mcp-bridge"),
        "{e}"
    );
    assert_no_orphans(&m).await;
    // A bad spec never builds a manager.
    let mut bad = time_spec("bad", &m);
    bad.env.insert("A\nB".into(), "x".into());
    let e = Manager::builder()
        .server(ServerSettings::new(bad, local()))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "env.A\nB");
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_relay_needs_its_secret_and_reaches_the_restarted_instance() {
    let m = marker("relay");
    let mut spec = time_spec("time", &m);
    spec.health.interval_ms = Some(100);
    spec.health.failure_threshold = Some(1);
    let manager = Manager::builder()
        .server(ServerSettings::new(spec, local()).sharing(Sharing::PerIdentity))
        .timing(fast_timing())
        .build()
        .unwrap();
    assert_eq!(manager.catalog_instance("time").unwrap(), "catalog");
    let e = mcp_managed::relay::CatalogRelay::start(manager.clone(), "nope")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a managed server"), "{e}");
    let relay = mcp_managed::relay::CatalogRelay::start(manager.clone(), "time")
        .await
        .unwrap();
    let url = relay.url();
    let (header, secret) = relay.secret_header();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});

    // Without the relay's secret (or with an instance-looking wrong one): refused, nothing starts.
    for headers in [vec![], vec![(header, "wrong")]] {
        let (s, body) = raw(http::Method::POST, &url, &headers, Some(list.clone()))
            .await
            .unwrap();
        assert_eq!(s, 401, "{body}");
    }
    assert!(manager.list().is_empty());

    let tools = |body: String| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (s, body) = raw(
        http::Method::POST,
        &url,
        &[(header, secret)],
        Some(list.clone()),
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{body}");
    assert!(tools(body).contains(&"get_current_time".to_owned()));
    let before = manager.list().remove(0);
    assert_eq!(before.instance, "catalog");

    // The catalog instance dies; the relay's address and secret stay, and reach its successor.
    let pid: i32 = before.runtime_id.clone().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let now = manager.list().remove(0);
            if now.runtime_id.is_some() && now.runtime_id != before.runtime_id {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a restarted catalog instance");
    let (s, body) = raw(http::Method::POST, &url, &[(header, secret)], Some(list))
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    assert!(tools(body).contains(&"get_current_time".to_owned()));

    drop(relay);
    manager.shutdown().await;
    assert_no_orphans(&m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_streams_progress_over_sse_when_the_caller_asks() {
    let m = marker("sse");
    // The workspace's demo server (the stdio-demo example): slow_count reports progress.
    let demo = std::path::Path::new(bridge_bin())
        .parent()
        .unwrap()
        .join("examples/stdio-demo");
    assert!(
        demo.is_file(),
        "{} is built by `cargo test`",
        demo.display()
    );
    let mut spec = mcp_managed::InstanceSpec::new("demo", "command");
    spec.command = Some(demo.to_string_lossy().into_owned());
    spec.env.insert("MCP_TEST_MARKER".into(), m.clone());
    let manager = Manager::builder()
        .server(ServerSettings::new(spec, local()))
        .build()
        .unwrap();
    let ep = manager.ensure("demo", "shared").await.unwrap();
    let secret = ep.secret_header.1.to_str().unwrap().to_string();
    let headers = [("x-mcp-bridge-secret", secret.as_str())];
    let call = |meta: serde_json::Value| {
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "slow_count", "arguments": {"n": 3, "delay_ms": 10}, "_meta": meta}})
    };

    // A progress token and `Accept: text/event-stream`: the progress, then the answer.
    let (s, body) = raw(
        http::Method::POST,
        &ep.url,
        &headers,
        Some(call(json!({"progressToken": "tok-1"}))),
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{body}");
    let events: Vec<serde_json::Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.len(), 4, "{body}");
    for (i, e) in events[..3].iter().enumerate() {
        assert_eq!(e["method"], "notifications/progress", "{e}");
        assert_eq!(e["params"]["progressToken"], "tok-1", "{e}");
        assert_eq!(e["params"]["progress"], json!(i as f64 + 1.0), "{e}");
    }
    assert_eq!(events[3]["id"], 7);
    assert_eq!(
        events[3]["result"]["content"][0]["text"], "counted to 3",
        "{body}"
    );

    // Without a progress token the answer is plain JSON.
    let (s, body) = raw(http::Method::POST, &ep.url, &headers, Some(call(json!({}))))
        .await
        .unwrap();
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "counted to 3", "{v}");

    manager.shutdown().await;
    assert_no_orphans(&m).await;
}

//! Run with `cargo bench -p mcp-managed`: cold start and churn of managed instances.
//!
//! 1. Cold start of a dedicated local instance: from the request that causes it to start to the
//!    answer of its first `tools/list`, next to the server's own start time (spawn, initialize,
//!    tools/list over stdio without the bridge). Budget: at most 300 ms beyond the server's own.
//! 2. The same cold start through Docker, when a daemon and the test image are there.
//! 3. Churn of 100 dedicated instances (start, call, reap), with time and memory.
//!
//! The server is the workspace's demo server (the `stdio-demo` example, built by `cargo test`);
//! set `MCP_BENCH_SERVER` to use another command.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use mcp_gateway_core::{Identity, identity::AuthMethod};
use mcp_managed::{InstanceSpec, LocalProcess, Manager, ServerSettings, Sharing, Timing};
use rmcp::{ServiceExt, transport::TokioChildProcess};

fn server_command() -> Vec<String> {
    if let Ok(c) = std::env::var("MCP_BENCH_SERVER") {
        return c.split_whitespace().map(str::to_owned).collect();
    }
    let bridge = std::path::PathBuf::from(env!("CARGO_BIN_EXE_mcp-bridge"));
    if let Some(dir) = bridge.parent() {
        for c in [
            dir.join("examples/stdio-demo"),
            dir.join("../debug/examples/stdio-demo"),
        ] {
            if c.is_file() {
                return vec![c.display().to_string()];
            }
        }
    }
    vec!["python3".into(), "-m".into(), "mcp_server_time".into()]
}

fn spec(cmd: &[String]) -> InstanceSpec {
    let mut s = InstanceSpec::new("bench", "command");
    s.command = Some(cmd[0].clone());
    s.args = cmd[1..].to_vec();
    s
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn children_rss_kib() -> u64 {
    // Every process whose parent chain leads to us (bridges and servers).
    let me = std::process::id();
    let mut total = 0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let mut p = pid;
            for _ in 0..4 {
                let ppid = std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit(')')
                            .next()
                            .and_then(|r| r.split_whitespace().nth(1))
                            .and_then(|v| v.parse::<u32>().ok())
                    });
                match ppid {
                    Some(pp) if pp == me => {
                        total += rss_kib(pid);
                        break;
                    }
                    Some(pp) if pp > 1 => p = pp,
                    _ => break,
                }
            }
        }
    }
    total
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn own_start(cmd: &[String]) -> Duration {
    let t = Instant::now();
    let mut c = tokio::process::Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    let running = ().serve(TokioChildProcess::new(c).expect("spawn")).await.expect("initialize");
    running.peer().list_tools(None).await.expect("tools/list");
    let d = t.elapsed();
    let _ = running.cancel().await;
    d
}

fn who(n: usize) -> Identity {
    Identity::new(format!("user{n}"), AuthMethod::Jwt)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cmd = server_command();
    println!("server: {}", cmd.join(" "));
    let runtime = Arc::new(LocalProcess::new(env!("CARGO_BIN_EXE_mcp-bridge")));
    let timing = Timing {
        reap_interval: Duration::from_secs(3600),
        ready_poll: Duration::from_millis(2),
        ..Timing::default()
    };

    // 1. cold start, dedicated local
    let mut own = Vec::new();
    for _ in 0..10 {
        own.push(own_start(&cmd).await);
    }
    let manager = Manager::builder()
        .server(
            ServerSettings::new(spec(&cmd), runtime.clone())
                .sharing(Sharing::PerIdentity)
                .max_instances(200),
        )
        .timing(timing)
        .build()
        .expect("manager");
    let mut cold = Vec::new();
    for n in 0..10 {
        let t = Instant::now();
        let lease = manager
            .acquire("bench", Some(&who(n)), None, None)
            .await
            .expect("start");
        let ep = lease.endpoint().clone();
        let client = {
            let headers = std::collections::HashMap::from([(
                ep.secret_header.0.clone(),
                ep.secret_header.1.clone(),
            )]);
            let cfg = rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(ep.url.to_string()).custom_headers(headers);
            ().serve(rmcp::transport::StreamableHttpClientTransport::from_config(
                cfg,
            ))
            .await
            .expect("client")
        };
        client.list_tools(None).await.expect("tools/list");
        cold.push(t.elapsed());
        drop(client);
        drop(lease);
    }
    let (own50, cold50) = (pct(&mut own, 0.5), pct(&mut cold, 0.5));
    println!(
        "cold start, dedicated local instance, to first tools/list: p50 {:.1} ms, max {:.1} ms; server's own start p50 {:.1} ms; added p50 {:.1} ms (budget 300 ms)",
        cold50.as_secs_f64() * 1e3,
        pct(&mut cold, 1.0).as_secs_f64() * 1e3,
        own50.as_secs_f64() * 1e3,
        (cold50.saturating_sub(own50)).as_secs_f64() * 1e3,
    );
    manager.shutdown().await;

    // 2. Docker (printed when available)
    match std::env::var("MCP_BENCH_DOCKER_IMAGE") {
        Ok(image) => match mcp_managed::DockerRuntime::connect() {
            Ok(d) => {
                let mut s = InstanceSpec::new("benchd", "image");
                s.image = Some(image);
                s.command = Some("/stdio-demo".into());
                let m = Manager::builder()
                    .server(ServerSettings::new(s, Arc::new(d)).sharing(Sharing::PerIdentity))
                    .timing(timing)
                    .build()
                    .expect("manager");
                let mut v = Vec::new();
                for n in 0..3 {
                    let t = Instant::now();
                    let lease = m
                        .acquire("benchd", Some(&who(n)), None, None)
                        .await
                        .expect("docker start");
                    drop(lease);
                    v.push(t.elapsed());
                }
                println!(
                    "cold start, dedicated docker instance, to ready: p50 {:.1} ms",
                    pct(&mut v, 0.5).as_secs_f64() * 1e3
                );
                m.shutdown().await;
            }
            Err(e) => println!("docker: {e}"),
        },
        Err(_) => println!(
            "docker cold start: set MCP_BENCH_DOCKER_IMAGE (see tests/containers.rs) to measure"
        ),
    }

    // 3. churn of 100 dedicated instances: start, call, reap
    let manager = Manager::builder()
        .server(
            ServerSettings::new(spec(&cmd), runtime)
                .sharing(Sharing::PerIdentity)
                .max_instances(200)
                .idle_timeout(Duration::from_millis(1)),
        )
        .timing(timing)
        .build()
        .expect("manager");
    let base_rss = rss_kib(std::process::id());
    let t = Instant::now();
    let mut peak_children = 0;
    for wave in 0..10 {
        let ids: Vec<Identity> = (0..10).map(|i| who(1000 + wave * 10 + i)).collect();
        let leases = futures::future::join_all(
            ids.iter()
                .map(|id| manager.acquire("bench", Some(id), None, None)),
        )
        .await;
        for l in &leases {
            let l = l.as_ref().expect("start");
            let answer = l
                .endpoint()
                .call("tools/list", serde_json::json!({}))
                .await
                .expect("call");
            assert!(answer["result"]["tools"].is_array(), "{answer}");
        }
        peak_children = peak_children.max(children_rss_kib());
        drop(leases);
        tokio::time::sleep(Duration::from_millis(2)).await;
        manager.reap_idle().await;
    }
    let elapsed = t.elapsed();
    println!(
        "churn: 100 dedicated instances (start, tools/list, reap) in {:.2} s ({:.1} ms each); peak RSS of 10 live instances {} MiB; gateway RSS growth {} KiB; left running: {}",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 10.0,
        peak_children / 1024,
        rss_kib(std::process::id()).saturating_sub(base_rss),
        manager.list().len(),
    );
    manager.shutdown().await;
}

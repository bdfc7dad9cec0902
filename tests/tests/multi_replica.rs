//! Three `mcp-gateway` replicas behind a real nginx (Debian's `nginx-light`) on loopback, sharing
//! one session key: a 2025-11-25 session is served by every replica in turn, 2026-07-28 stateless
//! calls spread, and killing a replica under load fails at most the calls it had in flight.
//!
//! Each replica fronts its own `demo-server` whose `whoami` tool answers with the replica's name
//! (`DEMO_USER`), so an answer tells which replica served it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use mcp_gateway_tests::toml_str;
use mcp_gateway_tests::{
    ChildGuard, HttpPeer, free_port, jsonrpc_message, python, scratch_dir, spawn_gateway,
    wait_for_http, workspace_bin,
};
use serde_json::json;

const SESSION_KEY: &str = "5e8b6f2a4d7c9e018f2c6a1e4b7d9035c1e8a6f2b4d7093e5a1c8f6b2d4e7a90";

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("nginx is installed (scripts/install-test-deps.sh installs nginx-light)")
}

struct Cluster {
    replicas: Vec<(String, HttpPeer)>,
    _nginx: ChildGuard,
    url: String,
    dir: PathBuf,
}

impl Cluster {
    fn start(label: &str, n: usize) -> Self {
        let dir = scratch_dir(label).expect("scratch dir");
        let gateway = workspace_bin("mcp-gateway").expect("mcp-gateway is built");
        let replicas: Vec<(String, HttpPeer)> = (1..=n)
            .map(|i| {
                let name = format!("replica-{i}");
                let config = dir.join(format!("{name}.toml"));
                std::fs::write(
                    &config,
                    format!(
                        "listen = \"127.0.0.1:0\"\nsession_key = {key}\n\n[[server]]\nname = \"demo\"\ncommand = {gw}\nargs = [\"demo-server\"]\nenv = {{ DEMO_USER = {name_str} }}\n",
                        key = toml_str(SESSION_KEY),
                        gw = toml_str(&gateway.to_string_lossy()),
                        name_str = toml_str(&name),
                    ),
                )
                .expect("config written");
                let peer = spawn_gateway(&name, &config, &[]).expect("replica starts");
                (name, peer)
            })
            .collect();
        let port = free_port().expect("free port");
        let servers: String = replicas
            .iter()
            .map(|(_, p)| format!("    server {} max_fails=1 fail_timeout=30s;\n", p.addr))
            .collect();
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        });
        let run_as_root = if root { "user root;\n" } else { "" };
        let d = dir.display();
        // No upstream keep-alive: a request to a killed replica then fails at connect, before
        // anything was sent, and nginx passes it to the next replica (`proxy_next_upstream
        // error`); only requests already sent to the dead replica fail.
        let conf = format!(
            r#"{run_as_root}daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  log_format replica '$upstream_addr $status $request_method';
  access_log {d}/access.log replica;
  client_body_temp_path {d}/nginx-body;
  proxy_temp_path {d}/nginx-proxy;
  fastcgi_temp_path {d}/nginx-fastcgi;
  uwsgi_temp_path {d}/nginx-uwsgi;
  scgi_temp_path {d}/nginx-scgi;
  upstream gateways {{
{servers}  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
      proxy_next_upstream error timeout;
    }}
  }}
}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf written");
        let nginx = ChildGuard::spawn(
            "nginx",
            std::process::Command::new(nginx_binary())
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf_path)
                .stdin(std::process::Stdio::null()),
        )
        .expect("nginx starts");
        let url = format!("http://127.0.0.1:{port}/mcp");
        wait_for_http(&url, Duration::from_secs(20)).unwrap_or_else(|e| {
            panic!(
                "nginx did not answer: {e}\n{}",
                std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
            )
        });
        Self {
            replicas,
            _nginx: nginx,
            url,
            dir,
        }
    }

    /// Which replica (by name) each logged request with `method` went to.
    fn served_by(&self, method: &str) -> BTreeMap<String, usize> {
        let by_addr: BTreeMap<String, String> = self
            .replicas
            .iter()
            .map(|(name, p)| (p.addr.to_string(), name.clone()))
            .collect();
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in log.lines() {
            let mut parts = line.split_whitespace();
            let (Some(addr), Some(_status), Some(m)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if m != method {
                continue;
            }
            // After a failover nginx logs every address it tried: `a:1, b:2`.
            let last = addr.rsplit(", ").next().unwrap_or(addr);
            if let Some(name) = by_addr.get(last) {
                *out.entry(name.clone()).or_insert(0) += 1;
            }
        }
        out
    }
}

fn agent() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Opens a 2025-11-25 session through `url`; returns its id.
fn open_session(client: &reqwest::blocking::Client, url: &str) -> String {
    let res = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "multi-replica-test", "version": "1"}}})
            .to_string(),
        )
        .send()
        .expect("initialize");
    assert_eq!(res.status(), 200);
    let sid = res.headers()["mcp-session-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let res = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .body(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
        .send()
        .expect("initialized");
    assert_eq!(res.status(), 202);
    sid
}

/// Calls `demo__whoami` in the session: `Ok(replica name)` or `Err(what went wrong)`.
fn whoami(
    client: &reqwest::blocking::Client,
    url: &str,
    sid: &str,
    id: u64,
) -> Result<String, String> {
    let res = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-11-25")
        .body(
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "demo__whoami", "arguments": {}}})
            .to_string(),
        )
        .send()
        .map_err(|e| format!("transport: {e}"))?;
    let status = res.status();
    let body = res.text().map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {body}"));
    }
    let msg = jsonrpc_message(&body);
    msg["result"]["content"][0]["text"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("unexpected answer: {body}"))
}

#[test]
fn a_session_is_served_by_every_replica_and_stateless_calls_spread() {
    let cluster = Cluster::start("multi-replica", 3);
    let names: BTreeSet<String> = cluster.replicas.iter().map(|(n, _)| n.clone()).collect();

    // Raw HTTP: one session, nine calls, round robin: every replica answers within the session
    // that another replica opened (the sealed session id carries it).
    let client = agent();
    let sid = open_session(&client, &cluster.url);
    let served: BTreeSet<String> = (1..=9)
        .map(|id| whoami(&client, &cluster.url, &sid, id).expect("call succeeds"))
        .collect();
    assert_eq!(served, names, "every replica served the one session");

    // The Python SDK, a 2025-11-25 session: every step succeeds although its requests land on
    // different replicas.
    let plan = json!({
        "calls": [
            {"name": "demo__echo", "arguments": {"message": "across replicas"}},
            {"name": "demo__add", "arguments": {"a": 2, "b": 3}},
            {"name": "demo__whoami", "arguments": {}},
        ],
        "progress": {"name": "demo__slow_count", "arguments": {"n": 3, "delay_ms": 20}},
        "prompt": {"name": "demo__greeting", "arguments": {"name": "Ada"}},
    });
    let before = cluster.served_by("POST");
    let report = python::run_script(
        "gateway_client.py",
        &["legacy", &cluster.url, &plan.to_string()],
    )
    .expect("python client runs");
    assert_eq!(report["errors"], json!([]), "{report}");
    assert_eq!(
        report["calls"]["demo__echo"]["text"], "across replicas",
        "{report}"
    );
    assert_eq!(report["calls"]["demo__add"]["text"], "5", "{report}");
    assert_eq!(
        report["progress"]["values"],
        json!([1.0, 2.0, 3.0]),
        "{report}"
    );
    assert!(report["prompt"]["messages"].is_array(), "{report}");
    let after = cluster.served_by("POST");
    let touched = after
        .iter()
        .filter(|(name, n)| before.get(*name).copied().unwrap_or(0) < **n)
        .count();
    assert_eq!(
        touched, 3,
        "the SDK session's requests reached every replica: {after:?}"
    );

    // The Python SDK as a 2026-07-28 client: no session at all; its calls spread too.
    let before = cluster.served_by("POST");
    let report = python::run_script(
        "gateway_client.py",
        &["modern", &cluster.url, &plan.to_string()],
    )
    .expect("python client runs");
    assert_eq!(report["protocol"], "2026-07-28", "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    assert_eq!(report["calls"]["demo__add"]["text"], "5", "{report}");
    let after = cluster.served_by("POST");
    let touched = after
        .iter()
        .filter(|(name, n)| before.get(*name).copied().unwrap_or(0) < **n)
        .count();
    assert!(
        touched >= 2,
        "stateless calls spread over replicas: {after:?}"
    );
}

#[test]
fn killing_a_replica_under_load_fails_only_calls_in_flight() {
    const CLIENTS: usize = 8;
    let mut cluster = Cluster::start("multi-replica-kill", 3);
    let url = cluster.url.clone();
    let sid = open_session(&agent(), &url);
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (url, sid, stop, killed_at) =
                (url.clone(), sid.clone(), stop.clone(), killed_at.clone());
            std::thread::spawn(move || {
                let client = agent();
                let mut results = Vec::new();
                let mut id = (w as u64) * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    let sent = Instant::now();
                    let answer = whoami(&client, &url, &sid, id);
                    let after_kill = killed_at
                        .lock()
                        .unwrap()
                        .is_some_and(|k| sent > k + Duration::from_millis(500));
                    results.push((after_kill, answer));
                }
                results
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let (victim, peer) = &mut cluster.replicas[1];
    let victim = victim.clone();
    peer.child
        .signal(nix::sys::signal::Signal::SIGKILL)
        .expect("kill the replica");
    *killed_at.lock().unwrap() = Some(Instant::now());
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(bool, Result<String, String>)> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();

    let failures: Vec<&String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    let ok = results.iter().filter(|(_, r)| r.is_ok()).count();
    println!(
        "{ok} calls answered, {} failed (in flight on {victim} when it was killed), {} sent after the kill",
        failures.len(),
        results.iter().filter(|(after, _)| *after).count()
    );
    assert!(ok > 50, "the load ran ({ok} calls)");
    assert!(
        failures.len() <= CLIENTS,
        "only calls in flight on the killed replica may fail (at most one per client): {failures:?}"
    );
    let late: Vec<&Result<String, String>> = results
        .iter()
        .filter(|(after, _)| *after)
        .map(|(_, r)| r)
        .collect();
    assert!(!late.is_empty(), "calls were made after the kill");
    for r in &late {
        match r {
            Ok(name) => assert_ne!(name, &victim, "a dead replica cannot answer"),
            Err(e) => panic!("a call sent after the kill failed: {e}"),
        }
    }
}

//! Faults around the reference gateway binary: slow clients (slowloris headers and bodies), a
//! client that disconnects mid-SSE, an upstream that answers garbage, an upstream on another
//! test host (a network namespace) behind a slow shaped link, an upstream slowed behind a
//! delaying TCP proxy, and an upstream killed mid-call. Each gets a clear error, the gateway keeps
//! serving, and its open connections and tokio tasks (the `/metrics` gauges) return to their
//! baseline.
//!
//! `tc netem` is not available on this kernel (no `sch_netem`; of the queueing disciplines only
//! `htb` and `pfifo` are), so network slowness comes two ways: the kernel's `htb` shaper on the
//! veth link between the gateway's host and the upstream's namespace (a slow link: delay grows
//! with size), and a userspace proxy that delays every chunk of an answer (latency).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use mcp_gateway_tests::{
    ChildGuard, HttpPeer, free_port, node, node_module, peers_dir, scratch_dir, spawn_gateway,
    spawn_server_everything, wait_for_http, wait_for_stderr, workspace_bin,
};
use serde_json::{Value, json};

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string encodes")
}

fn demo_server() -> String {
    let exe = workspace_bin("mcp-gateway").expect("mcp-gateway is built");
    format!(
        "[[server]]\nname = \"demo\"\ncommand = {}\nargs = [\"demo-server\"]\n",
        q(&exe.to_string_lossy())
    )
}

fn start(label: &str, toml: &str) -> HttpPeer {
    let dir = scratch_dir(label).expect("scratch dir");
    let config = dir.join("gateway.toml");
    std::fs::write(&config, toml).expect("config");
    spawn_gateway(label, &config, &[]).expect("gateway starts")
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        // One connection per request, closed after it: the gauges then count only the test's
        // deliberate connections.
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, Option<String>, Value) {
    mcp_gateway_tests::mcp_post(&client(), url, headers, body)
}

fn session(url: &str) -> String {
    let (status, sid, msg) = post(
        url,
        &[],
        &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "faults", "version": "1"}}})
        .to_string(),
    );
    assert_eq!(status, 200, "{msg}");
    let sid = sid.expect("session id");
    let (status, _, _) = post(
        url,
        &[
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "2025-11-25"),
        ],
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    );
    assert_eq!(status, 202);
    sid
}

fn call(url: &str, sid: &str, id: u64, name: &str, args: Value) -> Value {
    let (_, _, msg) = post(
        url,
        &[
            ("mcp-session-id", sid),
            ("mcp-protocol-version", "2025-11-25"),
        ],
        &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": args}})
        .to_string(),
    );
    msg
}

/// Waits (at most 60 s) until the session's `tools/list` names `tool` (an upstream behind a slow
/// path takes a while to join).
fn wait_for_tool(url: &str, sid: &str, tool: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, msg) = post(
            url,
            &[
                ("mcp-session-id", sid),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            &json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {}}).to_string(),
        );
        let listed = msg["result"]["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == tool));
        if listed {
            return;
        }
        assert!(Instant::now() < deadline, "{tool} never joined: {msg}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn echo_works(url: &str, sid: &str) {
    let msg = call(url, sid, 99, "demo__echo", json!({"message": "alive"}));
    assert_eq!(msg["result"]["content"][0]["text"], "alive", "{msg}");
}

/// `(open connections, alive tasks)` from `/metrics` (the scrape's own connection included).
fn gauges(gw: &HttpPeer) -> (u64, u64) {
    let text = client()
        .get(format!("http://{}/metrics", gw.addr))
        .send()
        .expect("metrics")
        .text()
        .expect("metrics body");
    let read = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    (
        read("mcp_gateway_open_connections "),
        read("mcp_gateway_tasks "),
    )
}

/// Waits (at most 10 s) until both gauges are back to at most `baseline` (tasks: plus `slack`).
fn back_to_baseline(gw: &HttpPeer, baseline: (u64, u64), slack: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = gauges(gw);
        if now.0 <= baseline.0 && now.1 <= baseline.1 + slack {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "connections/tasks stuck at {now:?}, baseline {baseline:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn slow_clients_are_cut_off_and_others_keep_being_served() {
    let gw = start(
        "faults-slowloris",
        &format!(
            "listen = \"127.0.0.1:0\"\nheader_read_timeout_ms = 1000\nbody_read_timeout_ms = 1000\n\n{}",
            demo_server()
        ),
    );
    let sid = session(&gw.url);
    echo_works(&gw.url, &sid);
    let baseline = gauges(&gw);
    let host = gw.addr.to_string();
    // 40 clients that never finish their headers, 10 that never finish their bodies.
    let mut headers_only: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(gw.addr).expect("connect");
            write!(s, "POST /mcp HTTP/1.1\r\nHost: {host}\r\nX-Slow: 1\r\n").expect("write");
            s
        })
        .collect();
    let mut bodies: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = TcpStream::connect(gw.addr).expect("connect");
            write!(
                s,
                "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{{\"jsonrpc\""
            )
            .expect("write");
            s
        })
        .collect();
    assert!(
        gauges(&gw).0 >= baseline.0 + 50,
        "the slow clients are connected"
    );
    // Meanwhile everyone else is served.
    echo_works(&gw.url, &sid);
    for s in headers_only.iter_mut().chain(bodies.iter_mut()) {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
    }
    // Slow headers: the connection is closed without an answer.
    for s in &mut headers_only {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "slow headers: {text}"
        );
    }
    // Slow bodies: 408 with a JSON-RPC error.
    for s in &mut bodies {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 408"), "slow body: {text}");
        assert!(text.contains("did not arrive in time"), "{text}");
    }
    drop(headers_only);
    drop(bodies);
    back_to_baseline(&gw, baseline, 0);
    echo_works(&gw.url, &sid);
}

#[test]
fn clients_that_disconnect_mid_sse_leave_nothing_behind() {
    let gw = start(
        "faults-disconnect",
        &format!("listen = \"127.0.0.1:0\"\n\n{}", demo_server()),
    );
    let sid = session(&gw.url);
    echo_works(&gw.url, &sid);
    let baseline = gauges(&gw);
    let host = gw.addr.to_string();
    for i in 0..10 {
        let body = json!({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call", "params": {
            "name": "demo__slow_count", "arguments": {"n": 5, "delay_ms": 60},
            "_meta": {"progressToken": i}}})
        .to_string();
        let mut s = TcpStream::connect(gw.addr).expect("connect");
        write!(
            s,
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {sid}\r\nMcp-Protocol-Version: 2025-11-25\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // Read until the first progress event, then vanish.
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("notifications/progress") {
            let n = s.read(&mut buf).expect("SSE data");
            assert!(
                n > 0,
                "stream ended early: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&got).contains("text/event-stream"));
        drop(s);
    }
    // The calls finish upstream (their answers wait in the replay buffer); then nothing is left.
    std::thread::sleep(Duration::from_millis(500));
    back_to_baseline(&gw, baseline, 0);
    echo_works(&gw.url, &sid);
}

/// A Streamable HTTP "MCP server" (Python standard library only) that handshakes and lists one
/// tool correctly, then answers every `tools/call` with bytes that are not JSON.
const GARBAGE_SERVER: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Mcp-Session-Id", "garbage-session")
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        self.reply(405, b"", "text/plain")
    def do_DELETE(self):
        self.reply(200, b"", "text/plain")
    def do_POST(self):
        msg = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        method, mid = msg.get("method"), msg.get("id")
        if mid is None:
            self.reply(202, b"", "text/plain")
        elif method == "initialize":
            self.reply(200, {"jsonrpc": "2.0", "id": mid, "result": {
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                "serverInfo": {"name": "garbage", "version": "1"}}})
        elif method == "tools/list":
            self.reply(200, {"jsonrpc": "2.0", "id": mid, "result": {"tools": [
                {"name": "broken", "inputSchema": {"type": "object"}}]}})
        elif method == "tools/call":
            self.reply(200, b"\x00{garbage: not json at all", "application/json")
        else:
            self.reply(200, {"jsonrpc": "2.0", "id": mid, "result": {}})

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn an_upstream_answering_garbage_gets_a_clear_error() {
    let port = free_port().expect("port");
    let _junk = ChildGuard::spawn(
        "garbage-server",
        Command::new(mcp_gateway_tests::python::interpreter()).args([
            "-c",
            GARBAGE_SERVER,
            &port.to_string(),
        ]),
    )
    .expect("python starts");
    let junk_url = format!("http://127.0.0.1:{port}/mcp");
    wait_for_http(&junk_url, Duration::from_secs(20)).expect("garbage server listens");
    let gw = start(
        "faults-garbage",
        &format!(
            "listen = \"127.0.0.1:0\"\n\n{}\n[[server]]\nname = \"junk\"\nurl = {}\ntimeout_ms = 5000\n",
            demo_server(),
            q(&junk_url)
        ),
    );
    let sid = session(&gw.url);
    let baseline = gauges(&gw);
    let started = Instant::now();
    let msg = call(&gw.url, &sid, 1, "junk__broken", json!({}));
    let code = msg["error"]["code"].as_i64().unwrap_or_default();
    assert!(
        [-32010, -32011, -32012, -32603].contains(&code),
        "a JSON-RPC error for the garbage answer: {msg}"
    );
    assert!(
        msg["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("junk")),
        "the error names the upstream: {msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "answered within the call timeout"
    );
    echo_works(&gw.url, &sid);
    back_to_baseline(&gw, baseline, 2);
}

/// A second test host: a network namespace joined to this one by a veth link whose both
/// directions the kernel shapes to `rate` (`htb`). Removed (with its link) on drop.
struct SlowHost {
    name: String,
    /// The namespace's address, as this host reaches it.
    addr: std::net::Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` runs (iproute2 is installed by scripts/install-test-deps.sh)");
    assert!(
        out.status.success(),
        "ip {}: {} (network namespaces need root, as the test command runs)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SlowHost {
    fn new(rate: &str) -> Self {
        let id = std::process::id() % 250 + 1;
        let name = format!("mgw-slow-{}", std::process::id());
        let (outer, inner) = (format!("mgwa{id}"), format!("mgwb{id}"));
        // Leftovers of an earlier run with the same pid.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &outer]).output();
        ip(&["netns", "add", &name]);
        let host = Self {
            name: name.clone(),
            addr: std::net::Ipv4Addr::new(10, 231, u8::try_from(id).expect("id"), 2),
        };
        let local = format!("10.231.{id}.1/24");
        let remote = format!("{}/24", host.addr);
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &name]);
        ip(&["addr", "add", &local, "dev", &outer]);
        ip(&["link", "set", &outer, "up"]);
        ip(&["-n", &name, "addr", "add", &remote, "dev", &inner]);
        ip(&["-n", &name, "link", "set", &inner, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        for (ns, dev) in [(None, &outer), (Some(&name), &inner)] {
            let tc = |args: &[&str]| {
                let mut c = Command::new("tc");
                if let Some(ns) = ns {
                    c.args(["-n", ns.as_str()]);
                }
                let out = c.args(args).output().expect("tc runs");
                assert!(
                    out.status.success(),
                    "tc {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            tc(&[
                "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10",
            ]);
            tc(&[
                "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate", rate,
                "ceil", rate, "burst", "1600b", "cburst", "1600b",
            ]);
        }
        host
    }

    /// Runs a program inside the namespace.
    fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for SlowHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// server-everything (Streamable HTTP) on `port`, started by `command` (`node`, possibly inside
/// a namespace), once it listens.
fn everything_on(port: u16, mut command: Command) -> ChildGuard {
    command
        .arg(node_module("@modelcontextprotocol/server-everything/dist/index.js").expect("module"))
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .current_dir(peers_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut upstream =
        ChildGuard::spawn("server-everything", &mut command).expect("server-everything starts");
    let ready = format!("listening on port {port}");
    wait_for_stderr(&mut upstream, Duration::from_secs(60), move |line| {
        line.contains(&ready).then_some(())
    })
    .expect("server-everything is ready");
    upstream
}

/// An HTTP upstream restarted in place forgets the gateway's session: the next call meets a
/// `404` for the old session id, and the gateway opens a new session and answers it.
#[test]
fn an_http_upstream_that_lost_the_session_gets_a_new_one() {
    let port = free_port().expect("port");
    let upstream = everything_on(port, Command::new(node().expect("node")));
    let gw = start(
        "faults-session-lost",
        &format!(
            "listen = \"127.0.0.1:0\"\n\n[[server]]\nname = \"remote\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n"
        ),
    );
    let sid = session(&gw.url);
    let msg = call(
        &gw.url,
        &sid,
        1,
        "remote__echo",
        json!({"message": "first"}),
    );
    assert_eq!(msg["result"]["content"][0]["text"], "Echo: first", "{msg}");
    drop(upstream);
    let _upstream = everything_on(port, Command::new(node().expect("node")));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let msg = call(
            &gw.url,
            &sid,
            2,
            "remote__echo",
            json!({"message": "again"}),
        );
        if msg["result"]["content"][0]["text"] == "Echo: again" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never reached the restarted upstream: {msg}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A call the gateway gives up on (its timeout) is cancelled at the upstream too: the Python SDK
/// server receives `notifications/cancelled` and cancels the tool, so no work is left running
/// for an answer nobody waits for.
#[test]
fn a_call_the_gateway_gives_up_on_is_cancelled_upstream() {
    let port = free_port().expect("port");
    let _upstream = ChildGuard::spawn(
        "cancel-probe-server",
        Command::new(mcp_gateway_tests::python::interpreter())
            .arg(mcp_gateway_tests::python::script("cancel_probe_server.py"))
            .arg(port.to_string()),
    )
    .expect("python upstream starts");
    let url = format!("http://127.0.0.1:{port}/mcp");
    wait_for_http(&url, Duration::from_secs(30)).expect("upstream listens");
    let gw = start(
        "faults-cancel-upstream",
        &format!(
            "listen = \"127.0.0.1:0\"\n\n[[server]]\nname = \"probe\"\nurl = {}\ntimeout_ms = 500\n",
            q(&url)
        ),
    );
    let sid = session(&gw.url);
    let msg = call(&gw.url, &sid, 1, "probe__sleep", json!({"seconds": 30}));
    assert_eq!(msg["error"]["code"], -32011, "an upstream timeout: {msg}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let msg = call(&gw.url, &sid, 2, "probe__cancelled", json!({}));
        if msg["result"]["content"][0]["text"] == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream never saw the cancellation: {msg}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_upstream_behind_a_slow_link_answers_small_calls_and_times_out_big_ones() {
    let host = SlowHost::new("96kbit");
    let port = free_port().expect("port");
    let _upstream = everything_on(port, host.command(&node().expect("node")));
    let url = format!("http://{}:{port}/mcp", host.addr);
    let gw = start(
        "faults-slow-link",
        &format!(
            "listen = \"127.0.0.1:0\"\n\n{}\n[[server]]\nname = \"remote\"\nurl = {}\ntimeout_ms = 1500\nlist_timeout_ms = 30000\n",
            demo_server(),
            q(&url)
        ),
    );
    let sid = session(&gw.url);
    // The handshake and the tool list cross the slow link.
    wait_for_tool(&gw.url, &sid, "remote__echo");
    let baseline = gauges(&gw);
    // A small call fits in the link's budget.
    let msg = call(
        &gw.url,
        &sid,
        1,
        "remote__echo",
        json!({"message": "small"}),
    );
    assert_eq!(msg["result"]["content"][0]["text"], "Echo: small", "{msg}");
    // 32 KiB each way take over 2.7 s at 96 kbit/s: a clear timeout at 1.5 s, and the local
    // server answers meanwhile and after.
    let big = "x".repeat(32 * 1024);
    let started = Instant::now();
    let msg = call(&gw.url, &sid, 2, "remote__echo", json!({"message": big}));
    let took = started.elapsed();
    assert_eq!(msg["error"]["code"], -32011, "an upstream timeout: {msg}");
    assert!(
        msg["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("remote") && m.contains("1500")),
        "{msg}"
    );
    assert!(took < Duration::from_secs(10), "timed out late: {took:?}");
    echo_works(&gw.url, &sid);
    // The link drains and the upstream answers small calls again.
    std::thread::sleep(Duration::from_secs(4));
    let msg = call(
        &gw.url,
        &sid,
        3,
        "remote__echo",
        json!({"message": "again"}),
    );
    assert_eq!(msg["result"]["content"][0]["text"], "Echo: again", "{msg}");
    back_to_baseline(&gw, baseline, 2);
}

/// A TCP proxy on 127.0.0.1 that delays every chunk the upstream sends back by `delay`.
fn delaying_proxy(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(upstream) else {
                continue;
            };
            let (mut c_read, mut s_write) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
                let _ = s_write.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                loop {
                    match s_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            std::thread::sleep(delay);
                            if c_write.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = c_write.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

#[test]
fn a_slowed_upstream_times_out_cleanly_while_others_answer() {
    let everything = spawn_server_everything().expect("server-everything starts");
    let proxy = delaying_proxy(everything.addr, Duration::from_millis(1500));
    let slow_url = everything
        .url
        .replace(&everything.addr.to_string(), &proxy.to_string());
    let gw = start(
        "faults-slow-upstream",
        &format!(
            "listen = \"127.0.0.1:0\"\n\n{}\n[[server]]\nname = \"slow\"\nurl = {}\ntimeout_ms = 500\n",
            demo_server(),
            q(&slow_url)
        ),
    );
    let sid = session(&gw.url);
    // The slow upstream's handshake takes a few delayed round trips.
    wait_for_tool(&gw.url, &sid, "slow__echo");
    let baseline = gauges(&gw);
    let started = Instant::now();
    let msg = call(&gw.url, &sid, 1, "slow__echo", json!({"message": "late"}));
    let took = started.elapsed();
    assert_eq!(msg["error"]["code"], -32011, "an upstream timeout: {msg}");
    assert!(
        msg["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("slow") && m.contains("500")),
        "{msg}"
    );
    assert!(
        took < Duration::from_millis(1400),
        "timed out at 500 ms, took {took:?}"
    );
    // The fast upstream answers meanwhile and after.
    echo_works(&gw.url, &sid);
    back_to_baseline(&gw, baseline, 2);
}

/// The pids of `pid`'s child processes.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

#[test]
fn an_upstream_killed_mid_call_fails_that_call_and_comes_back() {
    let gw = start(
        "faults-upstream-killed",
        &format!("listen = \"127.0.0.1:0\"\n\n{}", demo_server()),
    );
    let sid = session(&gw.url);
    echo_works(&gw.url, &sid);
    let demo = children(gw.child.id());
    assert_eq!(demo.len(), 1, "one demo-server child: {demo:?}");
    let (url, sid2) = (gw.url.clone(), sid.clone());
    let in_flight = std::thread::spawn(move || {
        call(
            &url,
            &sid2,
            7,
            "demo__slow_count",
            json!({"n": 100, "delay_ms": 50}),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(demo[0]).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the upstream");
    let msg = in_flight.join().expect("the call returns");
    assert_eq!(msg["error"]["code"], -32010, "upstream unavailable: {msg}");
    assert!(
        msg["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("demo")),
        "{msg}"
    );
    // The supervisor restarts it; calls succeed again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let msg = call(&gw.url, &sid, 8, "demo__echo", json!({"message": "back"}));
        if msg["result"]["content"][0]["text"] == "back" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream did not come back: {msg}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let again = children(gw.child.id());
    assert!(
        again.len() == 1 && again[0] != demo[0],
        "a new demo-server: {again:?}"
    );
}

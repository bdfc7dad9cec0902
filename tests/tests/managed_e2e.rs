//! Managed deployment through the reference gateway binary, with real containers: a
//! `[[managed]]` spec becomes containers through the Docker runtime (image built `FROM scratch`
//! with `mcp-bridge` and the workspace's demo server); two API-key identities reach two
//! dedicated instances and a third reaches the shared one (per-instance state proves which
//! instance answered); killing a container raises an outage alert and a restart, and calls
//! succeed again (the same with a local process); the SSH runtime deploys the generated command
//! to an sshd on 127.0.0.1 and the bridge refuses requests without the shared secret; the
//! crate README shows exactly what `managed command` prints. No container or process outlives a
//! test.
//!
//! Docker must run (CI starts `dockerd`); the tests skip, saying why, only when it cannot run
//! at all here.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mcp_gateway_tests::{HttpPeer, containers, scratch_dir, workspace_bin};
use mcp_gateway_tests::{create_api_key, gateway_cli};
use serde_json::{Value, json};

const IMAGE: &str = "mcp-gateway-e2e-demo:latest";
const ADMIN_TOKEN: &str = "admin-token-for-the-managed-test-0123";
const LABEL: &str = "mcp-e2e";

/// Docker is required; only a machine where `dockerd` cannot run at all skips (and says so).
fn docker_or_skip(test: &str) -> bool {
    match containers::ensure_dockerd() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED {test}: Docker cannot run on this machine: {why}");
            false
        }
    }
}

fn build_image() {
    containers::scratch_image(
        IMAGE,
        &[
            (workspace_bin("mcp-bridge").unwrap(), "/mcp-bridge"),
            (workspace_bin("demo-server").unwrap(), "/demo-server"),
        ],
    )
    .expect("the FROM scratch test image builds");
}

/// Removes the test's containers however the test ends; the test itself asserts none is left.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        containers::remove_containers_with_label(LABEL, &self.0);
    }
}

fn marker(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// The `[managed.spec]` of the demo server in the test image, labelled with `marker`.
fn spec(marker: &str) -> String {
    format!(
        r#"[managed.spec]
name = "demo"
kind = "image"
image = "{IMAGE}"
command = "/demo-server"
labels = {{ {LABEL} = "{marker}" }}
resources = {{ memory_mb = 128, pids = 64 }}
health = {{ interval_ms = 300, failure_threshold = 2, ready_timeout_ms = 30000 }}
"#
    )
}

/// Stops the gateway the way an operator does (SIGTERM), so it tears its instances down.
fn stop(mut gw: HttpPeer) {
    gw.child.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    gw.child
        .wait_timeout(Duration::from_secs(60))
        .expect("the gateway stops after SIGTERM");
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// === a webhook receiver for the gateway's alerts ===

/// Records the JSON bodies POSTed to it (the gateway's `[audit.alerts]` webhook).
struct Webhook {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        // The thread ends with the test process.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok()
                    && let Ok(v) = serde_json::from_slice(&body)
                {
                    sink.lock().unwrap().push(v);
                }
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Self { url, received }
    }

    /// Waits for an alert of `kind` about `server`.
    fn wait_for(&self, kind: &str, server: &str) -> Value {
        wait_until(
            &format!("a {kind} alert for {server}"),
            Duration::from_secs(60),
            || {
                self.received
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|a| a["kind"] == kind && a["details"]["server"] == server)
                    .cloned()
            },
        )
    }
}

// === MCP over raw HTTP ===

struct Client {
    http: reqwest::blocking::Client,
    url: String,
}

/// One caller's session at the gateway, optionally pinned to a named instance (`mcp-instance`).
struct Session<'a> {
    client: &'a Client,
    key: Option<String>,
    sid: String,
    instance: Option<&'static str>,
}

impl Client {
    fn new(url: &str) -> Self {
        Self {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()
                .unwrap(),
            url: url.to_owned(),
        }
    }

    fn post(
        &self,
        key: Option<&str>,
        sid: Option<&str>,
        instance: Option<&str>,
        body: Value,
    ) -> (u16, Option<String>, Value) {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if let Some(s) = sid {
            req = req.header("mcp-session-id", s);
        }
        if let Some(i) = instance {
            req = req.header("mcp-instance", i);
        }
        let res = req.send().unwrap();
        let status = res.status().as_u16();
        let sid = res
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = res.text().unwrap();
        (status, sid, mcp_gateway_tests::jsonrpc_message(&text))
    }

    fn session(&self, key: Option<&str>, instance: Option<&'static str>) -> Session<'_> {
        let (status, sid, v) = self.post(
            key,
            None,
            instance,
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "managed-e2e", "version": "1"}}}),
        );
        assert_eq!(status, 200, "{v}");
        Session {
            client: self,
            key: key.map(str::to_owned),
            sid: sid.expect("a session id"),
            instance,
        }
    }

    fn admin_instances(&self) -> Vec<Value> {
        let url = self.url.replace("/mcp", "/admin/instances");
        let v: Value = self
            .http
            .get(url)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["instances"].as_array().cloned().unwrap_or_default()
    }
}

impl Session<'_> {
    fn rpc(&self, method: &str, params: Value) -> Value {
        let (status, _, v) = self.client.post(
            self.key.as_deref(),
            Some(&self.sid),
            self.instance,
            json!({"jsonrpc": "2.0", "id": 2, "method": method, "params": params}),
        );
        assert_eq!(status, 200, "{method}: {v}");
        v
    }

    fn tools(&self) -> Vec<String> {
        let v = self.rpc("tools/list", json!({}));
        v["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// `demo__write_note`: state kept in the instance's memory.
    fn write_note(&self, id: &str, text: &str) -> Value {
        self.rpc(
            "tools/call",
            json!({"name": "demo__write_note", "arguments": {"id": id, "text": text}}),
        )
    }

    /// Reads `demo://notes/<id>` from the caller's instance: `Ok(text)` or `Err(error message)`.
    fn read_note(&self, id: &str) -> Result<String, String> {
        let v = self.rpc(
            "resources/read",
            json!({"uri": format!("demo+demo://notes/{id}")}),
        );
        match v["result"]["contents"][0]["text"].as_str() {
            Some(t) => Ok(t.to_owned()),
            None => Err(v["error"]["message"]
                .as_str()
                .unwrap_or_else(|| panic!("neither a note nor an error: {v}"))
                .to_owned()),
        }
    }
}

fn instance<'a>(list: &'a [Value], prefix: &str) -> &'a Value {
    list.iter()
        .find(|i| {
            i["instance"]
                .as_str()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no instance {prefix}* in {list:?}"))
}

/// Acceptance 1 and 3 through the binary with the Docker runtime.
#[test]
fn docker_dedicated_and_shared_instances_outage_and_restart_through_the_gateway() {
    if !docker_or_skip("docker_dedicated_and_shared_instances") {
        return;
    }
    build_image();
    let m = marker("docker");
    let _cleanup = Cleanup(m.clone());
    let hook = Webhook::start();
    let dir = scratch_dir("managed-docker").unwrap();
    let config_path = dir.join("gateway.toml");
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap();
    std::fs::write(
        &config_path,
        format!(
            r#"listen = "127.0.0.1:0"

[identity]
mode = "required"
[identity.api_keys]
file = {keys}

[audit]
[audit.alerts]
webhook = "{hook}"

[admin]
token_env = "GW_ADMIN_TOKEN"

[[managed]]
sharing = "per_identity"
max_instances = 10
runtime = {{ type = "docker" }}
[managed.instances.shared]
teams = ["ops"]
{spec}"#,
            keys = q(&dir.join("keys.json")),
            hook = hook.url,
            spec = spec(&m),
        ),
    )
    .unwrap();
    let (code, out, err) = gateway_cli(&config_path, &["check"]);
    assert_eq!(code, 0, "check: {out}{err}");
    let alice = create_api_key(&config_path, "alice", "a");
    let bob = create_api_key(&config_path, "bob", "b");
    let carol = create_api_key(&config_path, "carol", "ops");
    let gw = mcp_gateway_tests::spawn_gateway(
        "managed-docker",
        &config_path,
        &[("GW_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .unwrap();
    let client = Client::new(&gw.url);

    // The catalog lists the image's tools (from the catalog instance, through the relay).
    let a = client.session(Some(&alice), None);
    let tools = a.tools();
    assert!(
        tools.contains(&"demo__write_note".to_owned()) && tools.contains(&"demo__echo".to_owned()),
        "{tools:?}"
    );

    // Per-instance state tells the instances apart: each caller writes the same note id.
    let b = client.session(Some(&bob), None);
    let c = client.session(Some(&carol), Some("shared"));
    for (s, who) in [(&a, "alice"), (&b, "bob"), (&c, "carol")] {
        let v = s.write_note("owner", who);
        assert_eq!(
            v["result"]["content"][0]["text"], "stored demo://notes/owner",
            "{v}"
        );
    }
    assert_eq!(a.read_note("owner").as_deref(), Ok("alice"));
    assert_eq!(b.read_note("owner").as_deref(), Ok("bob"));
    assert_eq!(c.read_note("owner").as_deref(), Ok("carol"));
    // Alice keeps her instance across sessions; she may not select the ops team's instance.
    let a2 = client.session(Some(&alice), None);
    assert_eq!(a2.read_note("owner").as_deref(), Ok("alice"));
    let denied = client.session(Some(&alice), Some("shared"));
    let v = denied.rpc(
        "tools/call",
        json!({"name": "demo__echo", "arguments": {"message": "x"}}),
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not available to you")),
        "{v}"
    );

    // Four containers (catalog, alice, bob, shared), the ones the gateway lists, locked down.
    let list = client.admin_instances();
    let mut ids: Vec<String> = list
        .iter()
        .map(|i| i["runtime_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut running = containers::containers_with_label(LABEL, &m);
    running.sort();
    assert_eq!(ids, running, "{list:?}");
    assert_eq!(ids.len(), 4, "{list:?}");
    for prefix in ["catalog", "shared", "u-alice-", "u-bob-"] {
        let id = instance(&list, prefix)["runtime_id"].as_str().unwrap();
        assert_eq!(
            containers::inspect(
                id,
                "{{.State.Running}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}"
            )
            .unwrap(),
            "true true [ALL]"
        );
    }

    // Acceptance 3: kill Alice's container. An outage alert, a restart, and calls work again
    // (on a fresh instance: its memory is empty).
    let alice_instance = instance(&list, "u-alice-")["instance"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_id = instance(&list, "u-alice-")["runtime_id"]
        .as_str()
        .unwrap()
        .to_owned();
    containers::kill(&old_id).unwrap();
    let event_server = format!("demo/{alice_instance}");
    let down = hook.wait_for("upstream_down", &event_server);
    assert!(
        down["summary"]
            .as_str()
            .is_some_and(|s| s.contains("health probes")),
        "{down}"
    );
    hook.wait_for("upstream_recovered", &event_server);
    let new_id = wait_until("the restarted container", Duration::from_secs(30), || {
        let list = client.admin_instances();
        let i = instance(&list, "u-alice-");
        (i["state"] == "ready" && i["runtime_id"] != old_id.as_str())
            .then(|| i["runtime_id"].as_str().unwrap().to_owned())
    });
    assert_eq!(
        containers::inspect(&new_id, "{{.State.Running}}").unwrap(),
        "true"
    );
    let err = a.read_note("owner").unwrap_err();
    assert!(err.contains("not found") || err.contains("owner"), "{err}");
    let v = a.write_note("owner", "alice again");
    assert_eq!(
        v["result"]["content"][0]["text"], "stored demo://notes/owner",
        "{v}"
    );
    assert_eq!(a.read_note("owner").as_deref(), Ok("alice again"));
    // The others were not touched.
    assert_eq!(b.read_note("owner").as_deref(), Ok("bob"));
    assert_eq!(c.read_note("owner").as_deref(), Ok("carol"));

    // SIGTERM: the gateway removes every container it started.
    stop(gw);
    assert_eq!(
        containers::containers_with_label(LABEL, &m),
        Vec::<String>::new(),
        "orphan containers"
    );
}

/// Acceptance 2 through the binary: the SSH runtime runs the generated `docker run` on the
/// loopback sshd host; the gateway reaches the instance with its shared secret, the bridge
/// refuses requests without it.
#[test]
fn ssh_runtime_through_the_gateway_and_the_bridge_refuses_missing_secrets() {
    if !docker_or_skip("ssh_runtime_through_the_gateway") {
        return;
    }
    build_image();
    let m = marker("ssh");
    let _cleanup = Cleanup(m.clone());
    let sshd = containers::Sshd::start().unwrap();
    let dir = scratch_dir("managed-ssh").unwrap();
    let config_path = dir.join("gateway.toml");
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap();
    std::fs::write(
        &config_path,
        format!(
            r#"listen = "127.0.0.1:0"

[admin]
token_env = "GW_ADMIN_TOKEN"

[[managed]]
sharing = "shared"
runtime = {{ type = "ssh", destination = "root@127.0.0.1", port = {port}, identity = {key}, known_hosts = {known} }}
{spec}"#,
            port = sshd.port,
            key = q(&sshd.dir.join("client_key")),
            known = q(&sshd.dir.join("known_hosts")),
            spec = spec(&m),
        ),
    )
    .unwrap();
    let (code, out, err) = gateway_cli(&config_path, &["check"]);
    assert_eq!(code, 0, "check: {out}{err}");
    let gw = mcp_gateway_tests::spawn_gateway(
        "managed-ssh",
        &config_path,
        &[("GW_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .unwrap();
    let client = Client::new(&gw.url);

    let s = client.session(None, None);
    assert!(s.tools().contains(&"demo__echo".to_owned()));
    let v = s.rpc(
        "tools/call",
        json!({"name": "demo__echo", "arguments": {"message": "over ssh"}}),
    );
    assert_eq!(v["result"]["content"][0]["text"], "over ssh", "{v}");

    // The container the SSH host runs is the one the gateway lists; its command line holds no
    // secret.
    let list = client.admin_instances();
    assert_eq!(list.len(), 1, "{list:?}");
    let ids = containers::containers_with_label(LABEL, &m);
    assert_eq!(ids.len(), 1);
    assert_eq!(
        containers::inspect(&ids[0], "{{.Name}}").unwrap(),
        format!("/{}", list[0]["runtime_id"].as_str().unwrap())
    );
    let args = containers::inspect(&ids[0], "{{json .Args}}").unwrap();
    assert!(!args.to_lowercase().contains("secret"), "{args}");

    // Straight to the bridge, bypassing the gateway: no secret, or a wrong one, is refused.
    let url = list[0]["url"].as_str().unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    let post = |secret: Option<&str>| {
        let mut req = client
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.clone());
        if let Some(s) = secret {
            req = req.header("x-mcp-bridge-secret", s);
        }
        let res = req.send().unwrap();
        (res.status().as_u16(), res.text().unwrap())
    };
    let (status, text) = post(None);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("secret"), "{text}");
    assert_eq!(post(Some("not-the-secret")).0, 401);
    // The gateway still reaches it.
    let v = s.rpc(
        "tools/call",
        json!({"name": "demo__echo", "arguments": {"message": "still"}}),
    );
    assert_eq!(v["result"]["content"][0]["text"], "still", "{v}");

    stop(gw);
    assert_eq!(
        containers::containers_with_label(LABEL, &m),
        Vec::<String>::new(),
        "orphan containers"
    );
    drop(sshd);
}

// === acceptance 4: the docs show what the CLI prints ===

/// The secret in the Kubernetes Secret is fresh on every run; the docs show a placeholder.
fn without_random_secret(text: &str) -> String {
    text.lines()
        .map(|l| match l.split_once("MCP_BRIDGE_SECRET: ") {
            Some((indent, _)) => {
                format!("{indent}MCP_BRIDGE_SECRET: \"<generated by the CLI on every run>\"")
            }
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The byte range of the fenced block after `marker` in `doc` (its contents only).
fn block_after(doc: &str, marker: &str) -> std::ops::Range<usize> {
    let at = doc
        .find(marker)
        .unwrap_or_else(|| panic!("the README has no `{marker}`"));
    let fence = at
        + doc[at..]
            .find("```")
            .expect("a fenced block after the marker");
    let start = fence + doc[fence..].find('\n').expect("a fence line") + 1;
    let end = start + doc[start..].find("```").expect("a closing fence");
    start..end
}

/// `mcp-managed/README.md` holds the `docker run` command, the Kubernetes manifest and the
/// compose file that `mcp-gateway managed command` prints for `mcp-managed/docs/example.toml`,
/// byte for byte (the Kubernetes Secret's fresh random secret is shown as a placeholder), and
/// the spec itself. `MCP_UPDATE_DOCS=1` rewrites the README from the CLI instead of comparing.
#[test]
fn readme_shows_what_the_cli_generates() {
    let root = mcp_gateway_tests::repo_root();
    let readme_path = root.join("mcp-managed/README.md");
    let example_path = root.join("mcp-managed/docs/example.toml");
    let mut readme = std::fs::read_to_string(&readme_path).unwrap();
    let example = std::fs::read_to_string(&example_path).unwrap();
    let update = std::env::var_os("MCP_UPDATE_DOCS").is_some_and(|v| v == "1");
    let mut wanted = vec![("<!-- spec: docs/example.toml -->".to_owned(), example)];
    for format in ["docker", "k8s", "compose"] {
        let (code, out, err) = gateway_cli(
            &example_path,
            &["managed", "command", "everything", "--format", format],
        );
        assert_eq!(code, 0, "managed command --format {format}: {err}");
        assert!(out.contains("server-everything"), "{out}");
        let marker =
            format!("<!-- cli: mcp-gateway managed command everything --format {format} -->");
        wanted.push((marker, without_random_secret(&out)));
    }
    for (marker, text) in wanted {
        let range = block_after(&readme, &marker);
        if update {
            readme.replace_range(range, &text);
        } else {
            assert_eq!(
                readme[range].trim_end(),
                text.trim_end(),
                "mcp-managed/README.md differs from the CLI after {marker}; regenerate it with \
                 MCP_UPDATE_DOCS=1 cargo test -p mcp-gateway-tests --test integration \
                 managed_e2e::readme_shows_what_the_cli_generates"
            );
        }
    }
    if update {
        std::fs::write(&readme_path, readme).unwrap();
    }
}

/// Pids of processes whose environment holds `MCP_E2E_MARKER=<marker>`.
fn processes_with(marker: &str) -> Vec<u32> {
    let needle = format!("MCP_E2E_MARKER={marker}");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // Zombies have an empty environ: they are not running.
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

/// Acceptance 3 through the binary with the local runtime: killing an instance's bridge process
/// raises an outage alert, the instance restarts, calls succeed again, and no process is left
/// after the gateway stops.
#[test]
fn local_instance_killed_raises_an_outage_and_restarts_through_the_gateway() {
    let m = marker("local");
    let hook = Webhook::start();
    let dir = scratch_dir("managed-local").unwrap();
    let config_path = dir.join("gateway.toml");
    let demo = workspace_bin("demo-server").unwrap();
    std::fs::write(
        &config_path,
        format!(
            r#"listen = "127.0.0.1:0"

[audit]
[audit.alerts]
webhook = "{hook}"

[admin]
token_env = "GW_ADMIN_TOKEN"

[[managed]]
sharing = "shared"
runtime = {{ type = "local" }}
[managed.spec]
name = "demo"
kind = "command"
command = {demo}
env = {{ MCP_E2E_MARKER = "{m}" }}
health = {{ interval_ms = 300, failure_threshold = 2 }}
"#,
            hook = hook.url,
            demo = serde_json::to_string(&demo.to_string_lossy()).unwrap(),
        ),
    )
    .unwrap();
    let gw = mcp_gateway_tests::spawn_gateway(
        "managed-local",
        &config_path,
        &[("GW_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .unwrap();
    let client = Client::new(&gw.url);
    let s = client.session(None, None);
    s.write_note("n", "before");
    assert_eq!(s.read_note("n").as_deref(), Ok("before"));

    // Progress from the instance reaches the client: the bridge streams it over SSE.
    let report = mcp_gateway_tests::python::run_script(
        "gateway_client.py",
        &[
            "legacy",
            gw.url.as_str(),
            &json!({"progress": {"name": "demo__slow_count", "arguments": {"n": 3, "delay_ms": 20}}})
                .to_string(),
        ],
    )
    .unwrap();
    assert_eq!(
        report["progress"],
        json!({"values": [1.0, 2.0, 3.0], "text": "counted to 3"}),
        "{report}"
    );

    // The catalog's stdio run of the command and the instance (bridge + server) carry the marker.
    assert!(processes_with(&m).len() >= 3, "{:?}", processes_with(&m));
    let list = client.admin_instances();
    let old = instance(&list, "shared")["runtime_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid: i32 = old.parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    hook.wait_for("upstream_down", "demo/shared");
    hook.wait_for("upstream_recovered", "demo/shared");
    wait_until("the restarted instance", Duration::from_secs(30), || {
        let list = client.admin_instances();
        let i = instance(&list, "shared");
        (i["state"] == "ready" && i["runtime_id"] != old.as_str()).then_some(())
    });
    // A fresh process: the note is gone, and calls work again.
    assert!(s.read_note("n").is_err());
    s.write_note("n", "after");
    assert_eq!(s.read_note("n").as_deref(), Ok("after"));

    stop(gw);
    wait_until("no process left", Duration::from_secs(10), || {
        processes_with(&m).is_empty().then_some(())
    });
}

/// A stdio server the gateway runs reaches the client through the bridge: the npm reference
/// server (`server-everything`, stdio) run as a local managed instance asks the Python SDK client
/// for a sampling completion and for elicited input in the middle of tool calls, and both answers
/// come back to it.
#[test]
fn a_managed_stdio_servers_requests_reach_the_client_through_the_bridge() {
    let dir = scratch_dir("managed-relay").unwrap();
    let config_path = dir.join("gateway.toml");
    let node = mcp_gateway_tests::node().unwrap();
    let script =
        mcp_gateway_tests::node_module("@modelcontextprotocol/server-everything/dist/index.js")
            .unwrap();
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap();
    std::fs::write(
        &config_path,
        format!(
            r#"listen = "127.0.0.1:0"

[[managed]]
sharing = "shared"
runtime = {{ type = "local" }}
[managed.spec]
name = "everything"
kind = "command"
command = {node}
args = [{script}, "stdio"]
health = {{ interval_ms = 500, failure_threshold = 3, ready_timeout_ms = 60000 }}
"#,
            node = q(&node),
            script = q(&script),
        ),
    )
    .unwrap();
    let gw = mcp_gateway_tests::spawn_gateway("managed-relay", &config_path, &[]).unwrap();
    let report = mcp_gateway_tests::python::run_script(
        "gateway_client.py",
        &[
            "legacy",
            gw.url.as_str(),
            &json!({
                "sampling": {"name": "everything__trigger-sampling-request",
                             "arguments": {"prompt": "say hi", "maxTokens": 16}},
                "elicitation": {"name": "everything__trigger-elicitation-request", "arguments": {}},
            })
            .to_string(),
        ],
    )
    .unwrap();
    assert_eq!(report["sampling"]["requests"], 1, "{report}");
    assert!(
        report["sampling"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("sampled by the python client")),
        "the client's completion reached the server: {report}"
    );
    assert_eq!(report["elicitation"]["requests"], 1, "{report}");
    assert!(
        report["elicitation"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Ada")),
        "the client's elicited answer reached the server: {report}"
    );
    stop(gw);
}

//! Audit end to end (issue 6, acceptance 1): ONE Python SDK client session through the reference
//! gateway binary, with identity (API key), policy, DLP, a managed instance and audit (hash-chained
//! JSON lines + OTLP export to a receiver that decodes the protobuf with `opentelemetry-proto`).
//!
//! The client is instrumented as an OpenTelemetry user's would be (`tests/py/traced_session.py`):
//! one `session` span, the MCP SDK's client span per request in `_meta.traceparent`, the
//! context as the HTTP `traceparent` header. Upstreams: `mcp-server-time` over stdio, a Python SDK
//! server over Streamable HTTP that reports the trace context it received
//! (`tests/py/trace_probe_server.py`), and `mcp-server-time` again as a per-identity managed
//! instance. The test checks every field the issue lists on the records, that all records of the
//! session share the client's trace id, that the HTTP upstream got `traceparent` as a header and in
//! `_meta` naming the record's gateway-to-upstream span, that the same trace (four spans per call,
//! the same span ids) plus one log record per audit event and matching metrics reach the OTLP
//! receiver, and that `audit verify` passes.
//!
//! The CLI side of acceptance 2 is here too: `audit verify` names an edited record, and
//! `audit export` (CSV and JSON) applies its filters.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use mcp_gateway_tests::gateway_cli;
use mcp_gateway_tests::{
    ChildGuard, STARTUP_TIMEOUT, free_port, python, scratch_dir, wait_for_http, wait_for_stdout,
    workspace_bin,
};
use serde_json::{Value, json};

const ORIGIN: &str = "http://localhost:6274";

fn q(p: &Path) -> String {
    serde_json::to_string(&p.to_string_lossy()).unwrap()
}

fn python_peer(name: &str, script: &str, args: &[&str], stdout: Stdio) -> ChildGuard {
    let mut command = Command::new(python::interpreter());
    command
        .arg(python::script(script))
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit());
    ChildGuard::spawn(name, &mut command).unwrap()
}

fn config(dir: &Path, probe_url: &str, otlp: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:0"

[identity]
mode = "required"
[identity.api_keys]
file = {keys}

[policy]
[policy.servers.time]
tools = "allow-all"
[policy.servers.probe]
tools = "allow-all"
resources = "allow-all"
[policy.servers.mtime]
tools = "allow-all"
[[policy.rules]]
name = "team-a-time"
teams = ["a"]
server = "time"
[[policy.rules]]
name = "team-a-probe"
teams = ["a"]
server = "probe"
[[policy.rules]]
name = "team-a-mtime"
teams = ["a"]
server = "mtime"

[dlp]

[audit]
gateway = "gw-e2e"
[audit.file]
dir = {audit}
[audit.otlp]
endpoint = "{otlp}"
metrics_interval_ms = 500

[[server]]
name = "time"
command = "python3"
args = ["-m", "mcp_server_time", "--local-timezone", "UTC"]

[[server]]
name = "probe"
url = "{probe_url}"

[[managed]]
sharing = "per_identity"
runtime = {{ type = "local" }}
[managed.spec]
name = "mtime"
kind = "command"
command = "python3"
args = ["-m", "mcp_server_time", "--local-timezone", "UTC"]
"#,
        keys = q(&dir.join("keys.json")),
        audit = q(&dir.join("audit")),
    )
}

fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

fn records(dir: &Path) -> Vec<Value> {
    audit_files(dir)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn is_hex(s: &Value, len: usize) -> bool {
    s.as_str()
        .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The answer record of the request with JSON-RPC id `id`.
fn answer(recs: &[Value], id: u64) -> &Value {
    recs.iter()
        .find(|r| r["kind"] == "response" && r["request_id"] == id)
        .unwrap_or_else(|| panic!("no answer record for id {id}"))
}

fn request(recs: &[Value], id: u64) -> &Value {
    recs.iter()
        .find(|r| r["kind"] == "request" && r["request_id"] == id)
        .unwrap_or_else(|| panic!("no request record for id {id}"))
}

#[test]
fn one_python_session_is_recorded_and_traced_end_to_end() {
    let dir = scratch_dir("audit-e2e").unwrap();

    // The OTLP receiver and the HTTP upstream that reports the trace context it receives.
    let otlp_out = dir.join("otlp.jsonl");
    let mut receiver = python_peer(
        "otlp receiver",
        "otlp_receiver.py",
        &[&otlp_out.to_string_lossy()],
        Stdio::piped(),
    );
    let otlp = wait_for_stdout(&mut receiver, STARTUP_TIMEOUT, |l| {
        l.strip_prefix("listening on ").map(str::to_owned)
    })
    .unwrap();
    let port = free_port().unwrap().to_string();
    let _probe = python_peer(
        "trace probe",
        "trace_probe_server.py",
        &[&port],
        Stdio::null(),
    );
    let probe_url = format!("http://127.0.0.1:{port}/mcp");
    wait_for_http(&probe_url, STARTUP_TIMEOUT).unwrap();

    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, config(&dir, &probe_url, &otlp)).unwrap();
    let (code, out, err) = gateway_cli(&config_path, &["check"]);
    assert_eq!(code, 0, "check: {out}{err}");
    let (code, out, err) = gateway_cli(
        &config_path,
        &["api-key", "create", "--agent", "alice", "--team", "a"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("mgw_"))
        .unwrap()
        .to_owned();
    let key_id = key.split('_').nth(1).unwrap().to_owned();
    let mut gw = mcp_gateway_tests::spawn_gateway("audit-e2e", &config_path, &[]).unwrap();

    // ONE client session.
    let plan = json!({"calls": [
        {"name": "time__get_current_time", "arguments": {"timezone": "Europe/Paris"}},
        {"name": "time__get_current_time", "arguments": {"timezone": "Mars/Olympus"}},
        {"name": "time__no_such_tool", "arguments": {}},
        {"name": "probe__probe", "arguments": {"text": "mail ada@example.com please"}},
        {"name": "mtime__get_current_time", "arguments": {"timezone": "UTC"}},
    ], "read_resource": "probe+probe://readme"});
    let headers = json!({"authorization": format!("Bearer {key}"), "origin": ORIGIN}).to_string();
    let report = python::run_script_with_env(
        "traced_session.py",
        &[gw.url.as_str(), &plan.to_string()],
        &[("MCP_HEADERS", headers.as_str())],
    )
    .unwrap();
    let trace_id = report["trace_id"].as_str().unwrap().to_owned();
    let calls = report["calls"].as_array().unwrap();
    assert_eq!(calls[0]["is_error"], false, "{report}");
    assert_eq!(calls[1]["is_error"], true, "{report}");
    assert!(calls[2]["error"].is_string(), "{report}");
    assert_eq!(calls[4]["is_error"], false, "{report}");
    assert_eq!(
        report["resource"]["text"], "the trace probe reports the trace context it receives",
        "{report}"
    );
    // What the HTTP upstream saw: the same traceparent as header and in `_meta`, in the trace.
    let probe: Value = serde_json::from_str(calls[3]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        probe["text"], "mail [REDACTED:email] please",
        "DLP: {probe}"
    );
    let upstream_tp = probe["header"]
        .as_str()
        .unwrap_or_else(|| panic!("{probe}"));
    assert_eq!(probe["meta"], upstream_tp, "{probe}");
    assert!(
        upstream_tp.starts_with(&format!("00-{trace_id}-")),
        "{upstream_tp} not in trace {trace_id}"
    );

    // Stop the gateway (SIGTERM: in-flight calls finish, audit and OTLP are flushed).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gw.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    gw.child.wait_timeout(Duration::from_secs(30)).unwrap();

    // === the records ===
    let audit_dir = dir.join("audit");
    let recs = records(&audit_dir);
    // initialize, notifications/initialized, tools/list, 5 calls, resources/read: 8 request
    // records, 8 answers, 1 notification.
    let requests = recs.iter().filter(|r| r["kind"] == "request").count();
    let answers = recs.iter().filter(|r| r["kind"] == "response").count();
    assert_eq!((requests, answers), (8, 8), "{recs:#?}");
    let client_spans: HashSet<&str> = report["client_spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("MCP send"))
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    let session_span = report["session_span_id"].as_str().unwrap();
    let mut event_ids = HashSet::new();
    let session_id = answer(&recs, 2)["session_id"].clone();
    assert!(session_id.as_str().is_some_and(|s| !s.is_empty()));
    for r in &recs {
        let ctx = format!("{r:#}");
        // One trace id for the whole session; the client's spans are the parents.
        assert_eq!(r["trace_id"], trace_id, "{ctx}");
        assert!(event_ids.insert(r["event_id"].as_str().unwrap().to_owned()));
        assert!(is_hex(&r["event_id"], 32), "{ctx}");
        assert!(is_hex(&r["span_id"], 16), "{ctx}");
        for leg in [
            "client_to_gateway",
            "gateway_to_upstream",
            "upstream_to_gateway",
            "gateway_to_client",
        ] {
            assert!(is_hex(&r["spans"][leg], 16), "{leg}: {ctx}");
        }
        let caller = r["spans"]["caller"].as_str().unwrap();
        if r["kind"] == "notification" {
            assert_eq!(caller, session_span, "{ctx}");
        } else {
            assert!(client_spans.contains(caller), "{ctx}");
        }
        let ts = r["timestamp"].as_str().unwrap();
        assert!(ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T');
        assert!(r["ts_ms"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(r["gateway"], "gw-e2e");
        // Identity, client, origin, protocol.
        assert_eq!(r["identity"]["subject"], "alice", "{ctx}");
        assert_eq!(r["identity"]["teams"], json!(["a"]));
        assert_eq!(r["identity"]["kind"], "agent");
        assert_eq!(r["identity"]["auth_method"], "api_key");
        assert_eq!(r["identity"]["token_id"], key_id.as_str());
        assert_eq!(r["client_name"], "mcp");
        assert!(r["client_version"].as_str().is_some_and(|v| !v.is_empty()));
        assert!(r["user_agent"].as_str().unwrap().contains("httpx"), "{ctx}");
        assert!(r["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(r["origin"], ORIGIN);
        assert_eq!(r["protocol_version"], report["protocol"]);
        assert!(r["bytes_in"].as_u64().unwrap() > 0, "{ctx}");
        assert!(r["tokens_in"].is_u64(), "{ctx}");
        // The session id is minted from the initialize answer, so initialize has none.
        if r["method"] == "initialize" {
            assert!(r["session_id"].is_null(), "{ctx}");
        } else {
            assert_eq!(r["session_id"], session_id, "{ctx}");
        }
        if r["kind"] == "response" {
            assert_eq!(r["leg"], "gateway_to_client");
            assert_eq!(r["span_id"], r["spans"]["gateway_to_client"]);
            assert!(r["status"].is_string(), "{ctx}");
            assert!(r["bytes_out"].as_u64().unwrap() > 0, "{ctx}");
            assert!(r["tokens_out"].as_u64().unwrap() > 0, "{ctx}");
            assert!(r["total_latency_ms"].as_f64().unwrap() > 0.0, "{ctx}");
            // The answer carries the ids of its request.
            let req = recs
                .iter()
                .find(|q| q["kind"] == "request" && q["request_id"] == r["request_id"])
                .unwrap();
            assert_eq!(req["spans"], r["spans"], "{ctx}");
            assert_eq!(req["leg"], "client_to_gateway");
            assert_eq!(req["span_id"], req["spans"]["client_to_gateway"]);
        }
    }
    let notification = recs.iter().find(|r| r["kind"] == "notification").unwrap();
    assert_eq!(notification["method"], "notifications/initialized");

    // The successful call: server, feature, arguments, policy, latencies, real token counts.
    let (req3, ans3) = (request(&recs, 3), answer(&recs, 3));
    assert_eq!(req3["method"], "tools/call");
    assert_eq!(req3["feature_kind"], "tool");
    assert_eq!(req3["feature"], "time__get_current_time");
    assert_eq!(req3["arguments"], json!({"timezone": "Europe/Paris"}));
    assert_eq!(ans3["server"], "time");
    assert_eq!(ans3["status"], "ok");
    assert!(ans3["error_code"].is_null());
    assert_eq!(
        ans3["policy"],
        json!([{"rule": "scope:team-a-time", "effect": "allow", "reason": "allowed by rule"}])
    );
    let upstream = ans3["upstream_latency_ms"].as_f64().unwrap();
    assert!(upstream > 0.0 && upstream <= ans3["total_latency_ms"].as_f64().unwrap());
    // o200k_base: {"timezone":"Europe/Paris"} and the name are more than a handful of tokens,
    // and fewer than bytes / 2 (a tokenizer, not a byte count).
    let (tin, bin) = (
        ans3["tokens_in"].as_u64().unwrap(),
        ans3["bytes_in"].as_u64().unwrap(),
    );
    assert!(tin >= 5 && tin * 2 < bin, "tokens {tin}, bytes {bin}");
    // The tool that failed: a failed call without a JSON-RPC code.
    let ans4 = answer(&recs, 4);
    assert_eq!(ans4["status"], "error", "{ans4:#}");
    assert!(ans4["error_code"].is_null());
    assert!(
        ans4["error_message"]
            .as_str()
            .unwrap()
            .contains("Invalid timezone")
    );
    // A JSON-RPC error answer: its code.
    let ans5 = answer(&recs, 5);
    assert_eq!(ans5["status"], "error", "{ans5:#}");
    assert_eq!(ans5["error_code"], -32602);
    // DLP: the arguments are scrubbed, the finding is counted, never the data.
    let (req6, ans6) = (request(&recs, 6), answer(&recs, 6));
    assert_eq!(
        req6["arguments"],
        json!({"text": "mail [REDACTED:email] please"})
    );
    assert_eq!(
        ans6["dlp"],
        json!([{"detector": "email", "direction": "request", "count": 1, "action": "redact"}])
    );
    assert_eq!(ans6["server"], "probe");
    // The upstream got the record's gateway-to-upstream span.
    assert_eq!(
        upstream_tp.split('-').nth(2),
        ans6["spans"]["gateway_to_upstream"].as_str(),
        "{upstream_tp} vs {ans6:#}"
    );
    // The managed instance that served the call.
    let ans7 = answer(&recs, 7);
    assert_eq!(ans7["server"], "mtime");
    assert!(
        ans7["instance"].as_str().unwrap().starts_with("u-alice"),
        "{ans7:#}"
    );
    // The resource read.
    let ans8 = answer(&recs, 8);
    assert_eq!(ans8["method"], "resources/read");
    assert_eq!(ans8["feature_kind"], "resource");
    assert_eq!(ans8["feature"], "probe+probe://readme");
    assert_eq!(ans8["server"], "probe");
    let serialized = serde_json::to_string(&recs).unwrap();
    assert!(!serialized.contains("ada@example.com"), "data leaked");
    assert!(!serialized.contains(&key), "API key leaked");

    let (code, out, err) = gateway_cli(&config_path, &["audit", "verify"]);
    assert_eq!(code, 0, "verify: {out}{err}");

    // === the same trace at the OTLP receiver ===
    let received: Vec<Value> = std::fs::read_to_string(&otlp_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let spans: HashMap<&str, &Value> = received
        .iter()
        .filter(|s| s["signal"] == "span" && s["trace_id"] == trace_id.as_str())
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect();
    for a in recs.iter().filter(|r| r["kind"] == "response") {
        let legs = &a["spans"];
        let server = spans
            .get(legs["client_to_gateway"].as_str().unwrap())
            .unwrap_or_else(|| panic!("no server span for {a:#}"));
        assert_eq!(server["kind"], "SPAN_KIND_SERVER");
        assert_eq!(server["parent_span_id"], legs["caller"]);
        assert_eq!(server["resource"]["service.name"], "mcp-gateway");
        assert_eq!(server["attributes"]["mcp.method.name"], a["method"]);
        assert_eq!(server["attributes"]["enduser.id"], "alice");
        let upstream = spans[legs["gateway_to_upstream"].as_str().unwrap()];
        assert_eq!(upstream["kind"], "SPAN_KIND_CLIENT");
        assert_eq!(upstream["parent_span_id"], legs["client_to_gateway"]);
        let back = spans[legs["upstream_to_gateway"].as_str().unwrap()];
        assert_eq!(back["parent_span_id"], legs["gateway_to_upstream"]);
        let out = spans[legs["gateway_to_client"].as_str().unwrap()];
        assert_eq!(out["parent_span_id"], legs["client_to_gateway"]);
    }
    assert_eq!(spans.len(), 4 * answers, "4 spans per answered call");
    // One log record per audit event, in the trace, with its event id.
    let logged: HashSet<&str> = received
        .iter()
        .filter(|l| l["signal"] == "log" && l["trace_id"] == trace_id.as_str())
        .map(|l| l["attributes"]["mcp.audit.event_id"].as_str().unwrap())
        .collect();
    let recorded: HashSet<&str> = recs
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(logged, recorded);
    // Metrics: the last export of `mcp.calls` counts every answer by server, feature, identity.
    let mut calls: BTreeMap<(String, String), i64> = BTreeMap::new();
    for m in received
        .iter()
        .filter(|m| m["signal"] == "metric" && m["name"] == "mcp.calls")
    {
        for p in m["points"].as_array().unwrap() {
            let a = &p["attributes"];
            assert_eq!(a["identity"], "alice");
            calls.insert(
                (
                    a["server"].as_str().unwrap().to_owned(),
                    a["feature"].as_str().unwrap().to_owned(),
                ),
                p["value"].as_i64().unwrap(),
            );
        }
    }
    let mut expected: BTreeMap<(String, String), i64> = BTreeMap::new();
    for a in recs.iter().filter(|r| r["kind"] == "response") {
        let server = a["server"].as_str().unwrap_or("gateway").to_owned();
        let feature = a["feature"]
            .as_str()
            .or(a["method"].as_str())
            .unwrap()
            .to_owned();
        *expected.entry((server, feature)).or_default() += 1;
    }
    assert_eq!(calls, expected);
    drop(receiver);
}

/// Acceptance 2 through the binary's CLI: `audit export --format csv|json` with each filter, and
/// `audit verify` naming the exact record that was edited.
#[test]
fn audit_cli_exports_with_filters_and_verify_finds_the_edited_record() {
    let dir = scratch_dir("audit-cli").unwrap();
    let config_path = dir.join("gateway.toml");
    let demo = workspace_bin("mcp-gateway").unwrap();
    std::fs::write(
        &config_path,
        format!(
            r#"listen = "127.0.0.1:0"

[identity]
mode = "required"
[identity.api_keys]
file = {keys}

[audit]
[audit.file]
dir = {audit}

[[server]]
name = "demo"
command = {demo}
args = ["demo-server"]
"#,
            keys = q(&dir.join("keys.json")),
            audit = q(&dir.join("audit")),
            demo = q(&demo),
        ),
    )
    .unwrap();
    let mut keys = Vec::new();
    for who in ["alice", "bob"] {
        let (code, out, err) = gateway_cli(
            &config_path,
            &["api-key", "create", "--agent", who, "--team", "t"],
        );
        assert_eq!(code, 0, "{out}{err}");
        keys.push(
            out.split_whitespace()
                .find(|w| w.starts_with("mgw_"))
                .unwrap()
                .to_owned(),
        );
    }
    let mut gw = mcp_gateway_tests::spawn_gateway("audit-cli", &config_path, &[]).unwrap();
    for (key, calls) in keys.iter().zip([
        json!({"calls": [{"name": "demo__echo", "arguments": {"message": "a1"}},
                         {"name": "demo__echo", "arguments": {"message": "a2"}}]}),
        json!({"calls": [{"name": "demo__add", "arguments": {"a": 1, "b": 2}}]}),
    ]) {
        let headers = json!({"authorization": format!("Bearer {key}")}).to_string();
        python::run_script_with_env(
            "gateway_client.py",
            &["legacy", gw.url.as_str(), &calls.to_string()],
            &[("MCP_HEADERS", headers.as_str())],
        )
        .unwrap();
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gw.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    gw.child.wait_timeout(Duration::from_secs(30)).unwrap();
    let audit_dir = dir.join("audit");
    let recs = records(&audit_dir);
    let (code, out, err) = gateway_cli(&config_path, &["audit", "verify"]);
    assert_eq!(code, 0, "verify: {out}{err}");

    // JSON, identity + method filters: exactly alice's tools/call records.
    let (code, out, err) = gateway_cli(
        &config_path,
        &[
            "audit",
            "export",
            "--format",
            "json",
            "--identity",
            "alice",
            "--method",
            "tools/call",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let exported: Vec<Value> = match serde_json::from_str::<Value>(&out).unwrap() {
        Value::Array(v) => v,
        other => panic!("not a JSON array: {other}"),
    };
    let want = recs
        .iter()
        .filter(|r| r["identity"]["subject"] == "alice" && r["method"] == "tools/call")
        .count();
    assert_eq!(want, 4, "2 calls, request + answer each");
    assert_eq!(exported.len(), want, "{out}");
    assert!(
        exported
            .iter()
            .all(|r| r["identity"]["subject"] == "alice" && r["method"] == "tools/call")
    );
    // CSV, server filter + time range: a header line and one line per matching record.
    let first = recs
        .iter()
        .map(|r| r["ts_ms"].as_u64().unwrap())
        .min()
        .unwrap();
    let last = recs
        .iter()
        .map(|r| r["ts_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    let (code, out, err) = gateway_cli(&config_path, &["audit", "export", "--help"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("--since") && out.contains("--until"), "{out}");
    let (code, csv, err) = gateway_cli(
        &config_path,
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "--server",
            "demo",
            "--since",
            &first.to_string(),
            "--until",
            &(last + 1).to_string(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].contains("trace_id") && lines[0].contains("server"),
        "{csv}"
    );
    let demo_answers = recs.iter().filter(|r| r["server"] == "demo").count();
    assert_eq!(demo_answers, 3, "three answered calls on demo");
    assert_eq!(lines.len() - 1, demo_answers, "{csv}");
    assert!(lines[1..].iter().all(|l| l.contains(",demo,")), "{csv}");
    // A time range that ends before the first record selects nothing.
    let (code, csv, _) = gateway_cli(
        &config_path,
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "--until",
            &(first - 1).to_string(),
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(csv.lines().count(), 1, "header only: {csv}");

    // Edit one record (alice's first call changes to bob's name): verify names that record.
    let file = audit_files(&audit_dir).remove(0);
    let text = std::fs::read_to_string(&file).unwrap();
    let (index, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("\"a1\""))
        .unwrap();
    let seq = serde_json::from_str::<Value>(line).unwrap()["seq"].clone();
    let edited = text.replacen("\"a1\"", "\"b1\"", 1);
    std::fs::write(&file, edited).unwrap();
    let (code, out, err) = gateway_cli(&config_path, &["audit", "verify", "--json"]);
    assert_eq!(code, 1, "verify passed an edited log: {out}{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["line"], index + 1, "{report}");
    assert_eq!(report["record"], seq, "{report}");
    assert!(
        report["problem"].as_str().unwrap().contains("hash"),
        "{report}"
    );
    let (code, out, _) = gateway_cli(&config_path, &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("NOT intact"), "{out}");
}

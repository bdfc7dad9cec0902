//! Every DLP action end to end: the reference gateway binary with a `[dlp]` section fronting two
//! real server-everything processes (stdio), driven by the Python SDK client.
//!
//! - `req`: rules on the **request** direction act on the echo tool's arguments; its results pass
//!   untouched (an `allow` rule), so the echo shows exactly what reached the upstream.
//! - `res`: arguments pass untouched (an `allow` rule) and rules on the **response** direction act
//!   on tool results: the echo of what the client sent, and `get-env`, whose result carries values
//!   that only the upstream's environment holds.
//!
//! One detector per action: `email` redact, `phone` replace, `credit_card` mask, `ssn` hash,
//! `ipv4` warn, `iban` allow, `aws_access_key` block. `warn` and `allow` leave the data alone;
//! the audit log tells them apart (a `warn` finding is recorded, an `allow` is not) and shows that
//! a request blocked by DLP never reached its upstream.

use std::{path::Path, time::Duration};

use mcp_gateway_tests::gateway_cli;
use mcp_gateway_tests::{node, node_module, python, scratch_dir};
use ring::hmac;
use serde_json::{Value, json};

const HASH_KEY: &str = "dlp-e2e-hash-key-0123456789abcdef";

const EMAIL: &str = "ada@example.com";
const PHONE: &str = "+1 (415) 555-2671";
const CARD: &str = "4111 1111 1111 1111";
const SSN: &str = "123-45-6789";
const IPV4: &str = "192.168.10.1";
const IBAN: &str = "DE89 3704 0044 0532 0130 00";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

/// The same rules for both servers, each limited to one server and one direction.
fn rules(server: &str, direction: &str) -> String {
    let rule = |action: &str, detector: &str, extra: &str| {
        format!(
            "[[dlp.rules]]\nname = \"{server}-{action}\"\naction = \"{action}\"\ndetectors = [\"{detector}\"]\nservers = [\"{server}\"]\ndirections = [\"{direction}\"]\n{extra}\n"
        )
    };
    [
        rule("block", "aws_access_key", ""),
        rule("redact", "email", ""),
        rule("replace", "phone", "replacement = \"<phone>\""),
        rule("mask", "credit_card", "keep = 4"),
        rule("hash", "ssn", ""),
        rule("warn", "ipv4", ""),
        rule("allow", "iban", ""),
    ]
    .concat()
}

fn config(dir: &Path) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let node = node().unwrap();
    let everything = node_module("@modelcontextprotocol/server-everything/dist/index.js").unwrap();
    format!(
        r#"listen = "127.0.0.1:0"

[audit]
[audit.file]
dir = {audit}

[dlp]
hash_key = {key}

# What the upstream of `req` answers passes untouched; what the client sends to `res` too.
[[dlp.rules]]
name = "req-results-pass"
action = "allow"
servers = ["req"]
directions = ["response"]

[[dlp.rules]]
name = "res-arguments-pass"
action = "allow"
servers = ["res"]
directions = ["request"]

{req_rules}
{res_rules}
[[server]]
name = "req"
command = {node}
args = [{everything}, "stdio"]

[[server]]
name = "res"
command = {node}
args = [{everything}, "stdio"]
env = {{ DLP_EMAIL = {email}, DLP_PHONE = {phone}, DLP_CARD = {card}, DLP_SSN = {ssn}, DLP_IPV4 = {ipv4}, DLP_IBAN = {iban} }}
"#,
        audit = q(&dir.join("audit").to_string_lossy()),
        key = q(HASH_KEY),
        req_rules = rules("req", "request"),
        res_rules = rules("res", "response"),
        node = q(&node.to_string_lossy()),
        everything = q(&everything.to_string_lossy()),
        email = q(EMAIL),
        phone = q(PHONE),
        card = q(CARD),
        ssn = q(SSN),
        ipv4 = q(IPV4),
        iban = q(IBAN),
    )
}

/// The message carrying one value per non-blocking action.
fn sensitive_message() -> String {
    format!("email {EMAIL}; phone {PHONE}; card {CARD}; ssn {SSN}; ip {IPV4}; iban {IBAN}.")
}

/// `[HASH:<kind>:<16 hex>]`: the first 8 bytes of HMAC-SHA256 under the configured key, computed
/// here independently of the gateway.
fn hash_token(kind: &str, value: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, HASH_KEY.as_bytes());
    let tag = hmac::sign(&key, value.as_bytes());
    let hex: String = tag.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("[HASH:{kind}:{hex}]")
}

/// What every action makes of the sensitive values.
fn rewritten_message() -> String {
    let mask = format!("{}1111", "*".repeat(CARD.len() - 4));
    let hash = hash_token("ssn", SSN);
    format!(
        "email [REDACTED:email]; phone <phone>; card {mask}; ssn {hash}; ip {IPV4}; iban {IBAN}."
    )
}

/// The audit records (`audit export --format json`), JSON lines or one array.
fn audit_events(config: &Path) -> Vec<Value> {
    let (code, out, err) = gateway_cli(config, &["audit", "export", "--format", "json"]);
    assert_eq!(code, 0, "audit export: {out}{err}");
    if let Ok(Value::Array(all)) = serde_json::from_str(&out) {
        return all;
    }
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The `(detector, direction, action)` findings of the audit records of `tools/call` `feature`.
fn findings(events: &[Value], feature: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e["method"] == "tools/call" && e["feature"] == feature)
        .flat_map(|e| e["dlp"].as_array().cloned().unwrap_or_default())
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (s("detector"), s("direction"), s("action"))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn expected_findings(direction: &str) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = [
        ("credit_card", "mask"),
        ("email", "redact"),
        ("ipv4", "warn"),
        ("phone", "replace"),
        ("ssn", "hash"),
    ]
    .iter()
    .map(|(d, a)| (d.to_string(), direction.to_string(), a.to_string()))
    .collect();
    v.sort();
    v
}

#[test]
fn every_dlp_action_on_arguments_and_on_tool_results() {
    let dir = scratch_dir("dlp-e2e").unwrap();
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, config(&dir)).unwrap();
    let (code, out, err) = gateway_cli(&config_path, &["check"]);
    assert_eq!(code, 0, "check: {out}{err}");
    let mut gw = mcp_gateway_tests::spawn_gateway("dlp-e2e", &config_path, &[]).unwrap();

    let message = sensitive_message();
    let blocked = format!("deploy with {AWS_KEY} please");
    let plan = json!({"calls": [
        {"label": "req-actions", "name": "req__echo", "arguments": {"message": message}},
        {"label": "req-block", "name": "req__echo", "arguments": {"message": blocked}},
        {"label": "res-actions", "name": "res__echo", "arguments": {"message": message}},
        {"label": "res-block", "name": "res__echo", "arguments": {"message": blocked}},
        {"label": "res-env", "name": "res__get-env", "arguments": {}},
    ]});
    let report =
        python::run_script("gateway_client.py", &["legacy", &gw.url, &plan.to_string()]).unwrap();
    let calls = &report["calls"];
    let text = |label: &str| -> String {
        calls[label]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{label}: {report}"))
            .to_owned()
    };

    // Request direction: the echo shows what reached the upstream (its results pass untouched).
    assert_eq!(
        text("req-actions"),
        format!("Echo: {}", rewritten_message()),
        "{report}"
    );
    // Response direction: the upstream got the original (arguments pass) and echoed it; the
    // client sees the rewritten result. The hash token and the kept digits are those of the
    // original values.
    assert_eq!(
        text("res-actions"),
        format!("Echo: {}", rewritten_message()),
        "{report}"
    );
    // A tool result whose sensitive values come from the upstream alone (its environment).
    let env = text("res-env");
    let env: Value = serde_json::from_str(&env).unwrap_or_else(|e| panic!("{e}: {env}"));
    assert_eq!(env["DLP_EMAIL"], "[REDACTED:email]", "{env}");
    assert_eq!(env["DLP_PHONE"], "<phone>", "{env}");
    assert_eq!(env["DLP_CARD"], "***************1111", "{env}");
    assert_eq!(env["DLP_SSN"], hash_token("ssn", SSN), "{env}");
    assert_eq!(env["DLP_IPV4"], IPV4, "{env}");
    assert_eq!(env["DLP_IBAN"], IBAN, "{env}");

    // Block, both ways: a JSON-RPC error naming the rule and the detector, never the data.
    for (label, rule, direction) in [
        ("req-block", "req-block", "request"),
        ("res-block", "res-block", "response"),
    ] {
        let c = &calls[label];
        assert_eq!(c["code"], -32030, "{label}: {c}");
        let msg = c["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(&format!("`{rule}`")) && msg.contains("aws_access_key"),
            "{label}: {c}"
        );
        assert!(!c.to_string().contains(AWS_KEY), "{label} leaks: {c}");
        assert_eq!(c["data"]["rule"], rule, "{label}: {c}");
        assert_eq!(c["data"]["direction"], direction, "{label}: {c}");
    }

    // Stop the gateway cleanly so the audit log is complete, then read it.
    gw.child.signal(nix_sigterm()).expect("SIGTERM the gateway");
    gw.child
        .wait_timeout(Duration::from_secs(20))
        .expect("gateway stops");
    let events = audit_events(&config_path);
    assert!(!events.is_empty(), "no audit records in {}", dir.display());
    // `warn` is recorded, `allow` is not (no `iban` finding); blocks are recorded too.
    let req = findings(&events, "req__echo");
    let mut want = expected_findings("request");
    want.push(("aws_access_key".into(), "request".into(), "block".into()));
    want.sort();
    assert_eq!(req, want, "req__echo findings");
    let res = findings(&events, "res__echo");
    let mut want = expected_findings("response");
    want.push(("aws_access_key".into(), "response".into(), "block".into()));
    want.sort();
    assert_eq!(res, want, "res__echo findings");
    let env_findings = findings(&events, "res__get-env");
    for f in expected_findings("response") {
        assert!(env_findings.contains(&f), "{f:?} missing: {env_findings:?}");
    }
    assert!(
        !env_findings.iter().any(|(d, _, _)| d == "iban"),
        "allow records nothing: {env_findings:?}"
    );
    // The blocked request never reached its upstream; the blocked response did.
    let upstream_called = |feature: &str, blocked: bool| -> Vec<bool> {
        events
            .iter()
            .filter(|e| e["method"] == "tools/call" && e["feature"] == feature)
            .filter(|e| e["status"].is_string())
            .filter(|e| (e["status"] == "error") == blocked)
            .map(|e| e["upstream_latency_ms"].is_number())
            .collect()
    };
    assert_eq!(upstream_called("req__echo", true), [false], "{events:?}");
    assert_eq!(upstream_called("req__echo", false), [true], "{events:?}");
    assert_eq!(upstream_called("res__echo", true), [true], "{events:?}");
}

fn nix_sigterm() -> nix::sys::signal::Signal {
    nix::sys::signal::Signal::SIGTERM
}

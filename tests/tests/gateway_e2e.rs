//! The reference gateway binary end to end, with real servers and real clients nobody here wrote:
//! the Python SDK client through `mcp-gateway` fronting mcp-server-time (stdio), server-everything
//! (stdio and Streamable HTTP) and the demo server; a 2026-07-28 client with no session; sessions
//! resumed on a second gateway process; bad input.

use std::path::PathBuf;

use mcp_gateway_tests::toml_str;
use mcp_gateway_tests::{
    HttpPeer, node, node_module, python, scratch_dir, spawn_server_everything, workspace_bin,
};
use serde_json::{Value, json};

/// Writes `config` and starts the gateway on it.
fn spawn_gateway(label: &str, config: &str) -> HttpPeer {
    let path: PathBuf = scratch_dir(label).unwrap().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    mcp_gateway_tests::spawn_gateway(label, &path, &[("RUST_LOG", "info")]).unwrap()
}

fn four_upstreams(everything_url: &str, extra: &str) -> String {
    let node = node().unwrap();
    let everything = node_module("@modelcontextprotocol/server-everything/dist/index.js").unwrap();
    let gateway = workspace_bin("mcp-gateway").unwrap();
    format!(
        r#"listen = "127.0.0.1:0"
{extra}

[[server]]
name = "time"
command = "mcp-server-time"
args = []
env = {{}}

[[server]]
name = "everything"
command = {node}
args = [{everything}, "stdio"]

[[server]]
name = "web"
url = {everything_url}

[[server]]
name = "demo"
command = {gateway}
args = ["demo-server"]
"#,
        node = toml_str(&node.to_string_lossy()),
        everything = toml_str(&everything.to_string_lossy()),
        everything_url = toml_str(everything_url),
        gateway = toml_str(&gateway.to_string_lossy()),
    )
}

fn client(mode: &str, url: &str, plan: Value) -> Value {
    python::run_script("gateway_client.py", &[mode, url, &plan.to_string()]).unwrap()
}

#[test]
fn python_sdk_through_the_gateway_fronting_four_upstreams() {
    let everything = spawn_server_everything().unwrap();
    let gw = spawn_gateway("four", &four_upstreams(&everything.url, ""));
    let plan = json!({
        "calls": [
            {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}},
            {"name": "everything__echo", "arguments": {"message": "via stdio"}},
            {"name": "web__echo", "arguments": {"message": "via http"}},
            {"name": "demo__add", "arguments": {"a": 2, "b": 40}},
        ],
        "progress": {"name": "web__trigger-long-running-operation", "arguments": {"duration": 0.4, "steps": 4}},
        "sampling": {"name": "everything__trigger-sampling-request", "arguments": {"prompt": "hi"}},
        "elicitation": {"name": "web__trigger-elicitation-request", "arguments": {}},
        "read_resource": "first",
        "prompt": {"name": "demo__greeting", "arguments": {"name": "Ada"}},
    });
    let report = client("legacy", &gw.url, plan);
    assert_eq!(report["protocol"], "2025-11-25", "{report}");
    let tools: Vec<&str> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for prefix in ["time__", "everything__", "web__", "demo__"] {
        assert!(
            tools.iter().any(|t| t.starts_with(prefix)),
            "no {prefix} tools in {tools:?}"
        );
    }
    let calls = &report["calls"];
    assert!(
        calls["time__get_current_time"]["text"]
            .as_str()
            .unwrap()
            .contains("UTC"),
        "{report}"
    );
    assert!(
        calls["everything__echo"]["text"]
            .as_str()
            .unwrap()
            .contains("via stdio"),
        "{report}"
    );
    assert!(
        calls["web__echo"]["text"]
            .as_str()
            .unwrap()
            .contains("via http"),
        "{report}"
    );
    assert!(
        calls["demo__add"]["text"].as_str().unwrap().contains("42"),
        "{report}"
    );
    assert_eq!(
        report["progress"]["values"],
        json!([1.0, 2.0, 3.0, 4.0]),
        "{report}"
    );
    assert_eq!(report["sampling"]["requests"], 1, "{report}");
    assert!(
        report["sampling"]["text"]
            .as_str()
            .unwrap()
            .contains("sampled by the python client"),
        "{report}"
    );
    assert_eq!(report["elicitation"]["requests"], 1, "{report}");
    assert_eq!(report["elicitation"]["is_error"], false, "{report}");
    let uri = report["resource"]["uri"].as_str().unwrap();
    assert!(uri.contains('+'), "resource URIs are namespaced: {report}");
    assert!(report["resource"]["text"].is_string(), "{report}");
    assert!(
        report["prompt"]["messages"][0]["content"]["text"]
            .as_str()
            .unwrap()
            .contains("Ada"),
        "{report}"
    );
}

#[test]
fn a_2026_client_works_without_a_session() {
    let gw = spawn_gateway("modern", &four_upstreams("http://127.0.0.1:9/unused", ""));
    let report = client(
        "modern",
        &gw.url,
        json!({
            "calls": [{"name": "demo__echo", "arguments": {"message": "stateless"}},
                      {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}],
            "progress": {"name": "demo__slow_count", "arguments": {"n": 3, "delay_ms": 20}},
        }),
    );
    assert_eq!(report["protocol"], "2026-07-28", "{report}");
    assert!(
        report["supported_versions"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28"))
    );
    assert_eq!(
        report["calls"]["demo__echo"]["text"], "stateless",
        "{report}"
    );
    assert!(
        report["calls"]["time__get_current_time"]["text"]
            .as_str()
            .unwrap()
            .contains("UTC")
    );
    assert_eq!(
        report["progress"]["values"],
        json!([1.0, 2.0, 3.0]),
        "{report}"
    );
    // The unreachable HTTP upstream does not break anything else.
    assert!(
        !report["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().starts_with("web__"))
    );
}

//! The real peers the end-to-end tests rely on work on this machine, driven by a real client
//! (the Python SDK): server-everything over Streamable HTTP, demo-server over stdio.

use mcp_gateway_tests::{
    python, spawn_conformance_fixture, spawn_server_everything, stdio_command,
};
use serde_json::Value;

fn names(value: &Value, key: &str) -> Vec<String> {
    value[key]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn server_everything_over_http_lists_tools_via_python_sdk() {
    let everything = spawn_server_everything().expect("server-everything starts");
    let out =
        python::run_script("list_tools.py", &[everything.url.as_str()]).expect("python client ran");
    assert_eq!(out["server_name"], "mcp-servers/everything", "{out}");
    let tools = names(&out, "tools");
    for expected in ["echo", "get-sum", "trigger-long-running-operation"] {
        assert!(
            tools.iter().any(|t| t == expected),
            "{expected} missing from {tools:?}"
        );
    }
}

#[test]
fn demo_server_over_stdio_via_python_sdk() {
    let command = stdio_command("demo-server").expect("demo-server is built");
    let out = python::run_script("stdio_client.py", &command).expect("python client ran");
    assert_eq!(out["server_name"], "demo-server", "{out}");
    assert_eq!(
        names(&out, "tools"),
        [
            "add",
            "contact_card",
            "echo",
            "slow_count",
            "whoami",
            "write_note"
        ]
    );
    assert_eq!(out["echo"][0], "hello from python");
    assert_eq!(out["slow_count"][0], "counted to 3");
    // One progress notification per step, in order.
    assert_eq!(out["progress"], serde_json::json!([1.0, 2.0, 3.0]));
    assert_eq!(names(&out, "prompts"), ["greeting"]);
    assert!(
        names(&out, "resources").contains(&"demo://readme".to_owned()),
        "{out}"
    );
    assert_eq!(names(&out, "templates"), ["demo://notes/{id}"]);
    assert!(
        out["prompt_text"][0]
            .as_str()
            .is_some_and(|text| text.contains("Ada")),
        "{out}"
    );
}

#[test]
fn conformance_fixture_over_stdio_via_python_sdk() {
    let mut command = stdio_command("conformance-server").expect("conformance-server is built");
    command.push("stdio".to_owned());
    let out = python::run_script("stdio_client.py", &command).expect("python client ran");
    assert_eq!(out["server_name"], "conformance-server", "{out}");
    let tools = names(&out, "tools");
    for expected in [
        "test_simple_text",
        "test_sampling",
        "json_schema_2020_12_tool",
    ] {
        assert!(
            tools.iter().any(|t| t == expected),
            "{expected} missing from {tools:?}"
        );
    }
    assert_eq!(
        names(&out, "resources"),
        [
            "test://static-binary",
            "test://static-text",
            "test://watched-resource"
        ]
    );
    assert_eq!(names(&out, "templates"), ["test://template/{id}/data"]);
    assert_eq!(names(&out, "prompts").len(), 4, "{out}");
}

#[test]
fn conformance_fixture_2026_input_required_round_trips_via_python_sdk() {
    // A 2026-07-28 client (no initialize, no session): sampling and elicitation come back as
    // InputRequiredResult, the client answers with inputResponses + requestState, the tool ends.
    let fixture = spawn_conformance_fixture().expect("fixture starts");
    let calls = [
        r#"{"name": "test_sampling", "arguments": {"prompt": "hi"}}"#,
        r#"{"name": "test_elicitation", "arguments": {"message": "who?"}}"#,
        r#"{"name": "test_simple_text"}"#,
    ];
    let mut args = vec![fixture.url.as_str()];
    args.extend(calls);
    let out = python::run_script("input_required.py", &args).expect("python client ran");
    assert!(
        names(&out, "supported_versions").contains(&"2026-07-28".to_owned()),
        "{out}"
    );
    assert_eq!(
        out["results"]["test_sampling"], "LLM response: sampled by the python client",
        "{out}"
    );
    assert_eq!(
        out["results"]["test_elicitation"],
        r#"User response: action=accept, content={"email":"ada@example.com","username":"ada"}"#,
        "{out}"
    );
    assert_eq!(out["rounds"]["test_sampling"], 1, "{out}");
    assert_eq!(out["rounds"]["test_elicitation"], 1, "{out}");
    assert_eq!(out["rounds"]["test_simple_text"], 0, "{out}");
    assert_eq!(out["sampling_requests"], 1);
    assert_eq!(out["elicitation_requests"], 1);
}

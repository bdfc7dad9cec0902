//! The MCP conformance suite through the reference gateway in pass-through mode
//! (`prefix = "never"`) in front of the rmcp conformance fixture: every scenario the fixture passes
//! directly must pass through the gateway too.

use std::collections::BTreeSet;

use mcp_gateway_tests::{
    conformance::{self, FIXTURE_PASSES},
    scratch_dir, spawn_conformance_fixture,
};

/// The gateway speaks 2025-11-25 to the fixture (the default: `initialize` first). Every
/// scenario the fixture passes directly must pass through the gateway, `server-sse-polling`
/// included: the fixture closes its SSE stream mid-call and the gateway's upstream client resumes
/// it with `Last-Event-ID` after the announced `retry`.
#[test]
fn conformance_through_the_gateway() {
    run_through_gateway("timeout_ms = 5000\n");
}

fn run_through_gateway(server_extra: &str) {
    let fixture = spawn_conformance_fixture().expect("fixture starts");
    let dir = scratch_dir("conformance-gateway").unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nprefix = \"never\"\n\n[[server]]\nname = \"fixture\"\nurl = {}\n{server_extra}",
            serde_json::to_string(&fixture.url).unwrap()
        ),
    )
    .unwrap();
    let gateway = mcp_gateway_tests::spawn_gateway("conformance", &config, &[]).unwrap();
    let url = gateway.url.clone();

    let report = conformance::run(&url).expect("suite runs");
    println!("through the gateway:\n{}", report.table());
    let expected: BTreeSet<String> = FIXTURE_PASSES.iter().map(|s| (*s).to_owned()).collect();
    let passed = report.passed();
    let missing: Vec<_> = expected.difference(&passed).collect();
    for name in &missing {
        if let Some(scenario) = report.scenarios.get(*name) {
            eprintln!("{name}: {:?}", scenario.failures());
        }
    }
    assert!(
        missing.is_empty(),
        "scenarios the fixture passes directly but not through the gateway: {missing:?} (results in {})",
        report.output_dir.display()
    );
}

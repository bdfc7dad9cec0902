//! The conformance suite in client mode against `mcp-gateway connect`: the gateway's upstream
//! connection and OAuth client (`mcp_identity::oauth`) as an MCP client, through every
//! authorization scenario of `--suite auth` and `--suite backcompat` (the non-draft,
//! non-extension ones).

use std::collections::BTreeSet;

use mcp_gateway_tests::{conformance, workspace_bin};

/// Every non-draft, non-extension client authorization scenario of the suite (0.1.16).
const TARGET: &[&str] = &[
    "auth/2025-03-26-oauth-endpoint-fallback",
    "auth/2025-03-26-oauth-metadata-backcompat",
    "auth/basic-cimd",
    "auth/metadata-default",
    "auth/metadata-var1",
    "auth/metadata-var2",
    "auth/metadata-var3",
    "auth/pre-registration",
    "auth/scope-from-scopes-supported",
    "auth/scope-from-www-authenticate",
    "auth/scope-omitted-when-undefined",
    "auth/scope-retry-limit",
    "auth/scope-step-up",
    "auth/token-endpoint-auth-basic",
    "auth/token-endpoint-auth-none",
    "auth/token-endpoint-auth-post",
];

/// The client ID metadata document URL the `basic-cimd` scenario expects as `client_id`.
const CIMD_URL: &str = "https://conformance-test.local/client-metadata.json";

/// The command the suite runs, the server URL appended.
fn connect_command() -> String {
    let bin = workspace_bin("mcp-gateway").expect("mcp-gateway is built");
    format!(
        "{} connect --call test-tool --client-metadata-url {CIMD_URL} --client-credentials-env MCP_CONFORMANCE_CONTEXT --timeout 20",
        bin.display()
    )
}

#[test]
fn conformance_auth_client() {
    let command = connect_command();
    let report = conformance::run_client(&command, &["auth", "backcompat"]).expect("suite runs");
    let versions = conformance::list_client_scenarios().expect("list");
    println!("command: {command} <server-url>\n");
    println!("{}", report.table(&versions));

    // The suite judges checks; the client must also have finished its work (listed the tools
    // and called `test-tool`) wherever the scenario expects it to succeed.
    for name in TARGET {
        let Some(s) = report.scenarios.get(*name) else {
            continue;
        };
        if *name != "auth/scope-retry-limit" && s.is_pass() {
            assert!(
                s.stdout.contains(r#""tool":"test-tool""#),
                "{name}: the client did not call the tool; stdout: {}\nstderr: {}",
                s.stdout,
                s.stderr
            );
        }
    }
    // The retry-limit server never lets the call through: the client must give up with an error.
    if let Some(s) = report.scenarios.get("auth/scope-retry-limit") {
        assert!(
            s.stderr.contains("mcp-gateway connect:"),
            "scope-retry-limit: no clear error; stderr: {}",
            s.stderr
        );
    }

    let target: BTreeSet<String> = TARGET.iter().map(|s| (*s).to_owned()).collect();
    let passed = report.passed();
    let missing: Vec<&String> = target.difference(&passed).collect();
    for name in &missing {
        match report.scenarios.get(*name) {
            Some(s) => eprintln!(
                "{name}: {:?}\nstdout: {}\nstderr: {}",
                s.problems(),
                s.stdout,
                s.stderr
            ),
            None => eprintln!("{name}: no result"),
        }
    }
    assert!(
        missing.is_empty(),
        "scenarios that do not pass: {missing:?} (results in {})",
        report.output_dir.display()
    );
}

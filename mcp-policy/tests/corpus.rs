//! The attack corpus (written from published tool-poisoning, shadowing and mimicry examples) is
//! caught; the real tool lists of server-everything, mcp-server-time and mcp-server-git pass
//! clean. Both run through `scan-tools` as the CLI would.

use std::path::PathBuf;

use mcp_policy::{
    cli::{ScanToolsArgs, read_approved, scan_tools},
    threat::{Approved, Severity, ToolRef, scan_set},
};
use serde_json::Value;

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name)
}

fn load(name: &str) -> Vec<Value> {
    std::fs::read_to_string(corpus(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect()
}

#[test]
fn attacks_are_caught() {
    let tools = load("attack_tools.jsonl");
    assert!(tools.len() >= 20);
    let refs: Vec<ToolRef<'_>> = tools
        .iter()
        .map(|t| ToolRef {
            server: t["server"].as_str().unwrap_or_default(),
            def: t,
        })
        .collect();
    let findings = scan_set(&refs, &Approved::default());
    let mut caught = 0;
    for (t, f) in tools.iter().zip(&findings) {
        let expect = t["expect"].as_str().unwrap_or_default();
        if expect == "context" {
            continue;
        }
        assert!(
            f.iter()
                .any(|x| x.class.as_str() == expect && x.severity >= Severity::Medium),
            "{}/{} should have a {expect} finding, got {f:?}",
            t["server"],
            t["name"]
        );
        caught += 1;
    }
    assert_eq!(
        caught,
        tools.iter().filter(|t| t["expect"] != "context").count()
    );
}

#[test]
fn attacks_are_caught_against_an_approved_set_only_on_the_newcomer() {
    // With the benign context tools approved, mimicry flags only the imitators.
    let tools = load("attack_tools.jsonl");
    let mut approved = Approved::default();
    for t in tools.iter().filter(|t| t["expect"] == "context") {
        let s = t["server"].as_str().unwrap_or_default().to_string();
        approved.servers.insert(s.clone());
        approved
            .tools
            .insert((s, t["name"].as_str().unwrap_or_default().to_string()));
    }
    let refs: Vec<ToolRef<'_>> = tools
        .iter()
        .map(|t| ToolRef {
            server: t["server"].as_str().unwrap_or_default(),
            def: t,
        })
        .collect();
    let findings = scan_set(&refs, &approved);
    for (t, f) in tools.iter().zip(&findings) {
        if t["expect"] == "context" {
            assert!(
                f.iter().all(|x| x.class.as_str() != "mimicry"),
                "{}: {f:?}",
                t["name"]
            );
        }
        if t["expect"] == "mimicry" {
            assert!(
                f.iter().any(|x| x.class.as_str() == "mimicry"),
                "{}: {f:?}",
                t["name"]
            );
        }
    }
}

#[test]
fn real_tools_pass_clean() {
    let tools = load("real_tools.jsonl");
    assert!(
        tools.len() >= 20,
        "regenerate with tests/corpus/fetch_real_tools.py"
    );
    for server in ["everything", "time", "git"] {
        assert!(
            tools.iter().any(|t| t["server"] == server),
            "{server} missing from the corpus"
        );
    }
    let refs: Vec<ToolRef<'_>> = tools
        .iter()
        .map(|t| ToolRef {
            server: t["server"].as_str().unwrap_or_default(),
            def: t,
        })
        .collect();
    for (t, f) in tools.iter().zip(scan_set(&refs, &Approved::default())) {
        assert!(
            f.iter().all(|x| x.severity < Severity::Medium),
            "{}/{} flagged: {f:?}",
            t["server"],
            t["name"]
        );
    }
}

#[test]
fn real_and_attack_tools_together() {
    // Mixing the real servers in does not make them look like attackers or hide attacks.
    let mut tools = load("real_tools.jsonl");
    let real = tools.len();
    tools.extend(load("attack_tools.jsonl"));
    let refs: Vec<ToolRef<'_>> = tools
        .iter()
        .map(|t| ToolRef {
            server: t["server"].as_str().unwrap_or_default(),
            def: t,
        })
        .collect();
    let findings = scan_set(&refs, &Approved::default());
    for (t, f) in tools[..real].iter().zip(&findings[..real]) {
        assert!(
            f.iter().all(|x| x.severity < Severity::Medium),
            "{}: {f:?}",
            t["name"]
        );
    }
    assert!(findings[real..].iter().filter(|f| !f.is_empty()).count() >= 19);
}

#[test]
fn scan_tools_cli_prints_one_line_per_tool() {
    let args = ScanToolsArgs {
        file: Some(corpus("attack_tools.jsonl")),
        approved: None,
    };
    let mut out = Vec::new();
    let summary = scan_tools(&args, std::io::empty(), &mut out).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8(out).unwrap_or_default();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), summary.tools);
    assert_eq!(summary.worst, Some(Severity::High));
    let add = lines
        .iter()
        .find(|l| l["name"] == "add")
        .cloned()
        .unwrap_or_default();
    assert_eq!(add["server"], "math");
    assert_eq!(add["findings"][0]["class"], "poisoning");
    assert_eq!(add["findings"][0]["severity"], "high");
    assert!(
        add["findings"][0]["why"]
            .as_str()
            .is_some_and(|w| !w.is_empty())
    );

    // From standard input, real tools: every line has an empty findings list or low ones only.
    let text = std::fs::read_to_string(corpus("real_tools.jsonl")).unwrap_or_default();
    let mut out = Vec::new();
    let summary = scan_tools(&ScanToolsArgs::default(), text.as_bytes(), &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        summary.worst.is_none_or(|w| w < Severity::Medium),
        "{summary:?}"
    );
}

#[test]
fn scan_tools_reports_bad_lines_with_their_number() {
    let input = "{\"server\": \"a\", \"name\": \"x\"}\n{\"name\": \"y\"}\n";
    let e = scan_tools(&ScanToolsArgs::default(), input.as_bytes(), Vec::new()).err();
    assert_eq!(
        e.map(|e| e.to_string()),
        Some("-:2: missing string field `server`".to_string())
    );
    let e = scan_tools(&ScanToolsArgs::default(), "not json".as_bytes(), Vec::new()).err();
    assert!(e.is_some_and(|e| e.to_string().starts_with("-:1: not JSON")));
}

#[test]
fn approved_file_formats() {
    let dir = std::env::temp_dir().join(format!("mcp-policy-approved-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let lines = dir.join("approved.jsonl");
    let _ = std::fs::write(
        &lines,
        "{\"server\": \"mail\", \"name\": \"send_email\"}\n{\"server\": \"slack\"}\n",
    );
    let a = read_approved(&lines).unwrap_or_else(|e| panic!("{e}"));
    assert!(a.servers.contains("slack") && a.tools.contains(&("mail".into(), "send_email".into())));
    let _ = std::fs::write(&lines, "{\"server\": \"mail\"}\n{oops\n");
    assert!(
        read_approved(&lines)
            .err()
            .is_some_and(|e| e.to_string().contains(":2:"))
    );
}

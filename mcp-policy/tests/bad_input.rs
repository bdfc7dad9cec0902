//! Bad input: malformed files, unknown fields, conflicting rules, expressions that do not compile
//! or use unknown variables, enormous rule sets: clear errors at load; nothing panics at run time.

use mcp_gateway_core::{FeatureKind, Method};
use mcp_policy::{
    Config,
    config::{compile_document, parse_document},
    engine::Caller,
    expr::{Env, Expr},
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn load_err(text: &str) -> String {
    match parse_document(text, None).and_then(|d| compile_document(&d, Some(text), None)) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_and_unknown() {
    let e = load_err("[defaults\ntools = 1\n");
    assert!(e.contains("1:"), "{e}");
    let e = load_err("[defaults]\ntools = \"allow-some\"\n");
    assert!(e.contains("2:") && e.contains("allow-some"), "{e}");
    let e = load_err("[pinning]\nmode = \"enforce\"\nstrict = true\n");
    assert!(e.contains("3:") && e.contains("strict"), "{e}");
    let e = load_err("[servers.a]\ntools = \"allow-all\"\nallowed_tools = [\"x\"]\n");
    assert!(
        e.contains("3:") && e.contains("only used with `allow-selected`"),
        "{e}"
    );
    let e = load_err("[[rate_limits]]\nname = \"r\"\nkey = \"ip\"\nrate = 0\nper = \"soon\"\n");
    assert!(
        e.contains("unknown key `ip`")
            && e.contains("rate must be at least 1")
            && e.contains("bad period"),
        "{e}"
    );
    let e = load_err(
        "[[overrides]]\nserver = \"s\"\ntool = \"a\"\nrename = \"x\"\n[[overrides]]\nserver = \"s\"\ntool = \"b\"\nrename = \"x\"\n",
    );
    assert!(e.contains("8:") && e.contains("also the rename"), "{e}");
}

#[test]
fn expressions_that_do_not_compile() {
    for (src, needle) in [
        ("identity.teams.contains(\"a\")", "string receiver"),
        ("identity.subject.contains(1)", "takes a string"),
        ("who.subject == \"a\"", "unknown variable `who`"),
        ("identity.group == \"x\"", "unknown field `identity.group`"),
        ("time.hour >= \"9\"", "cannot order"),
        ("identity.subject", "must be a bool"),
        ("1 < 2 < 3", "do not chain"),
        ("(identity.authenticated", "expected `)`"),
        ("identity.subject = \"a\"", "use `==`"),
        ("\"unterminated", "unterminated"),
        ("args.x ? 1 : 2", "not supported"),
        ("99999999999999999999 > 1", "out of range"),
    ] {
        match Expr::compile(src) {
            Ok(_) => panic!("`{src}` compiled"),
            Err(e) => assert!(e.to_string().contains(needle), "`{src}`: {e}"),
        }
    }
    let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
    assert!(Expr::compile(&deep).is_err());
    assert!(Expr::compile(&"!".repeat(500)).is_err());
    assert!(Expr::compile(&"x".repeat(5000)).is_err());
}

#[test]
fn expressions_evaluate() {
    let id = {
        let mut i =
            mcp_gateway_core::Identity::new("alice", mcp_gateway_core::identity::AuthMethod::Jwt);
        i.roles = vec!["admin".into()];
        i
    };
    let mut args = serde_json::Map::new();
    args.insert("path".into(), json!("/tmp/x"));
    args.insert("n".into(), json!(3));
    args.insert("list".into(), json!(["a", "b"]));
    let env = Env {
        identity: Some(&id),
        now_unix: 1_700_000_000, // Tuesday 2023-11-14 22:13:20 UTC
        server: "fs",
        name: "read_file",
        kind: "tool",
        method: "tools/call",
        args: Some(&args),
        ..Default::default()
    };
    for (src, want) in [
        ("\"admin\" in identity.roles", true),
        (
            "identity.subject == 'alice' && identity.authenticated",
            true,
        ),
        ("args.path.startsWith(\"/tmp/\")", true),
        ("args[\"n\"] + 1 == 4", true),
        ("has(args.path) && !has(args.nope)", true),
        ("size(args.list) == 2 && 'b' in args.list", true),
        (
            "time.hour == 22 && time.minute == 13 && time.weekday == 2",
            true,
        ),
        (
            "feature.server == 'fs' && feature.name.endsWith('_file')",
            true,
        ),
        ("identity.kind == 'human' && client.name == ''", true),
        ("method == 'tools/call' && 'path' in args", true),
        ("identity.email.lowerAscii() == ''", true),
        ("args.n > 5 || args.missing == null", true),
        ("-args.n == -3", true),
    ] {
        let e = Expr::compile(src).unwrap_or_else(|e| panic!("`{src}`: {e}"));
        assert_eq!(e.eval(&env), Ok(want), "`{src}`");
    }
    // Dynamic type errors are errors, not panics or silent truths.
    assert!(
        Expr::compile("args.path > 3")
            .ok()
            .map(|e| e.eval(&env).is_err())
            .unwrap_or(false)
    );
    assert!(
        Expr::compile("args.n.startsWith('a')")
            .ok()
            .map(|e| e.eval(&env).is_err())
            .unwrap_or(false)
    );
}

#[test]
fn enormous_rule_sets() {
    let mut text = String::from("[defaults]\ntools = \"allow-all\"\n");
    for i in 0..20_000 {
        text.push_str(&format!(
            "[[rules]]\nname = \"r{i}\"\nserver = \"s{i}\"\nwhen = \"time.hour >= {}\"\n",
            i % 24
        ));
    }
    let doc = parse_document(&text, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(compile_document(&doc, Some(&text), None).is_ok());
    let mut big = doc.clone();
    big.rules = std::iter::repeat_n(doc.rules[0].clone(), mcp_policy::config::MAX_RULES + 1)
        .enumerate()
        .map(|(i, mut r)| {
            r.name = format!("r{i}");
            r
        })
        .collect();
    let e = compile_document(&big, None, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("at most"), "{e}");
}

#[test]
fn gateway_config_section() {
    let gateway = "[server]\nlisten = \"x\"\n\n[policy]\napprovals = \"/tmp/a.json\"\n\n[[policy.rules]]\nname = \"a\"\nwhen = \"nope\"\n";
    #[derive(serde::Deserialize)]
    struct G {
        policy: Config,
    }
    let g: G = toml::from_str::<toml::Table>(gateway)
        .ok()
        .and_then(|t| t.get("policy").cloned())
        .and_then(|p| p.try_into::<Config>().ok())
        .map(|policy| G { policy })
        .unwrap_or_else(|| panic!("config did not parse"));
    let e = g
        .policy
        .check(Some(gateway))
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(e.problems[0].line, Some(9), "{e}");
    assert_eq!(e.problems[0].path, "policy.rules[0].when");
    let bad: Result<Config, _> = toml::from_str("fle = \"x\"\n");
    assert!(bad.is_err());
    let both: Config =
        toml::from_str("file = \"/nonexistent\"\n[[rules]]\nname = \"a\"\n").unwrap_or_default();
    assert!(
        both.check(None)
            .err()
            .is_some_and(|e| e.to_string().contains("not both"))
    );
}

proptest! {
    #[test]
    fn compile_and_eval_never_panic(src in "[a-z.()\\[\\]'\"!&|=<> 0-9_+-]{0,40}", argv in "[a-z0-9]{0,5}") {
        if let Ok(e) = Expr::compile(&src) {
            let mut args = serde_json::Map::new();
            args.insert("a".into(), Value::String(argv));
            args.insert("n".into(), json!(i64::MAX));
            let env = Env { args: Some(&args), ..Default::default() };
            let _ = e.eval(&env);
        }
    }

    #[test]
    fn random_policy_text_never_panics(text in "(\\[\\[rules\\]\\]\nname = \"[a-z]\"\n(when = \"[a-z. =<>0-9']{0,20}\"\n)?){0,4}") {
        if let Ok(doc) = parse_document(&text, None)
            && let Ok(engine) = compile_document(&doc, Some(&text), None) {
                let _ = engine.decide(&Caller::default(), &Method::ToolsCall, FeatureKind::Tool, "s", "t", Some(&Default::default()));
            }
    }
}

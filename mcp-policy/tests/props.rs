//! Properties: fail-closed with no rules, hidden is indistinguishable from missing (lists and
//! calls), decisions are deterministic, overrides round-trip to the upstream.

use crate::common;

use std::collections::BTreeSet;

use common::*;
use mcp_gateway_core::{BoxError, McpRequest, McpResponse, Method};
use mcp_policy::{
    PolicyHandle, PolicyLayer,
    config::{compile_document, parse_document},
    engine::Caller,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::{Layer, ServiceExt, util::BoxCloneService};

fn handle(text: &str) -> PolicyHandle {
    let doc = parse_document(text, None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    PolicyHandle::new(
        compile_document(&doc, Some(text), None).unwrap_or_else(|e| panic!("{e}\n{text}")),
    )
}

fn stack(
    h: &PolicyHandle,
    tools: &[(String, Value)],
) -> (BoxCloneService<McpRequest, McpResponse, BoxError>, Calls) {
    let refs: Vec<(&str, Value)> = tools.iter().map(|(s, v)| (s.as_str(), v.clone())).collect();
    let cat = catalog(&refs);
    let calls: Calls = Default::default();
    let layer = PolicyLayer::new(h.clone());
    let policy = layer.layer(dispatch(cat.clone(), calls.clone()));
    let route = Route {
        inner: BoxCloneService::new(policy),
        cat,
    };
    (
        BoxCloneService::new(layer.names_layer().layer(route)),
        calls,
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn send(
    svc: &BoxCloneService<McpRequest, McpResponse, BoxError>,
    r: McpRequest,
) -> McpResponse {
    svc.clone()
        .oneshot(r)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn tool_set() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::btree_set(("(alpha|beta|gamma)", "[a-z]{1,6}(_[a-z]{1,6})?"), 1..12).prop_map(|set| {
        set.into_iter()
            .map(|(s, n)| (s, json!({"name": n, "description": format!("Does {n}."), "inputSchema": {"type": "object"}})))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn with_no_rules_nothing_is_visible_or_callable(
        tools in tool_set(),
        teams in prop::collection::vec("[a-c]", 0..3),
        policy in prop::sample::select(vec![
            "",
            "[defaults]\ntools = \"allow-all\"\n",
            "[defaults]\ntools = \"allow-all\"\n[servers.alpha]\ntools = \"allow-all\"\n",
            "[[rules]]\nname = \"everyone\"\n",
            "[defaults]\ntools = \"allow-selected\"\n[[rules]]\nname = \"everyone\"\n",
        ]),
    ) {
        let h = handle(policy);
        let (svc, calls) = stack(&h, &tools);
        let team_refs: Vec<&str> = teams.iter().map(String::as_str).collect();
        let who = Some(identity("u", &team_refs));
        rt().block_on(async {
            prop_assert!(names(&send(&svc, list(who.clone())).await).is_empty());
            for (s, d) in &tools {
                let exposed = format!("{s}__{}", d["name"].as_str().unwrap_or_default());
                let res = send(&svc, call(who.clone(), &exposed, json!({}))).await;
                prop_assert_eq!(
                    err_json(&res),
                    Some(json!({"code": -32602, "message": format!("Unknown tool: {exposed}")}))
                );
            }
            prop_assert_eq!(calls.lock().map(|c| c.len()).unwrap_or(1), 0);
            Ok(())
        })?;
    }

    #[test]
    fn hidden_is_indistinguishable_from_missing(
        tools in tool_set(),
        allowed in prop::collection::vec(any::<bool>(), 12),
    ) {
        let allow: Vec<String> = tools
            .iter()
            .zip(&allowed)
            .filter(|(_, a)| **a)
            .map(|((_, d), _)| format!("{:?}", d["name"].as_str().unwrap_or_default()))
            .collect();
        let text = format!(
            "[defaults]\ntools = \"allow-all\"\n[[rules]]\nname = \"t\"\nteams = [\"t\"]\nfeatures = [{}]\n",
            allow.join(", ")
        );
        let text = if allow.is_empty() { "[defaults]\ntools = \"allow-all\"\n".to_string() } else { text };
        let who = Some(identity("u", &["t"]));
        // The same catalog with every hidden tool removed.
        let allowed_names: BTreeSet<String> = tools.iter().zip(&allowed).filter(|(_, a)| **a).map(|((_, d), _)| d["name"].as_str().unwrap_or_default().to_string()).collect();
        let visible: Vec<(String, Value)> = tools.iter().filter(|(_, d)| allowed_names.contains(d["name"].as_str().unwrap_or_default())).cloned().collect();
        let (with_hidden, _) = stack(&handle(&text), &tools);
        let (without, _) = stack(&handle(&text), &visible);
        rt().block_on(async {
            let a = send(&with_hidden, list(who.clone())).await;
            let b = send(&without, list(who.clone())).await;
            prop_assert_eq!(a.to_jsonrpc(), b.to_jsonrpc());
            for (s, d) in &tools {
                let exposed = format!("{s}__{}", d["name"].as_str().unwrap_or_default());
                let a = send(&with_hidden, call(who.clone(), &exposed, json!({"x": 1}))).await;
                let b = send(&without, call(who.clone(), &exposed, json!({"x": 1}))).await;
                prop_assert_eq!(a.to_jsonrpc(), b.to_jsonrpc());
            }
            Ok(())
        })?;
    }

    #[test]
    fn the_same_input_gets_the_same_decision(
        server in "(alpha|beta)",
        name in "[a-z_]{1,8}",
        teams in prop::collection::vec("[a-c]", 0..3),
        tz in "[A-Za-z/]{0,8}",
    ) {
        let h = handle(
            "[defaults]\ntools = \"allow-all\"\n\
             [[rules]]\nname = \"a\"\nteams = [\"a\"]\nwhen = 'args.tz == \"UTC\" || feature.name.startsWith(\"g\")'\n\
             [[rules]]\nname = \"b\"\nteams = [\"b\"]\nserver = \"beta\"\n\
             [[rules]]\nname = \"no-c\"\neffect = \"deny\"\nteams = [\"c\"]\nfeatures = [\"x*\"]\n",
        );
        let engine = h.engine();
        let team_refs: Vec<&str> = teams.iter().map(String::as_str).collect();
        let id = identity("u", &team_refs);
        let caller = Caller { identity: Some(&id), now_unix: 1_700_000_000, ..Default::default() };
        let mut args = serde_json::Map::new();
        args.insert("tz".into(), Value::String(tz));
        let kind = mcp_gateway_core::FeatureKind::Tool;
        let first = engine.decide(&caller, &Method::ToolsCall, kind, &server, &name, Some(&args));
        for _ in 0..3 {
            prop_assert_eq!(&engine.decide(&caller, &Method::ToolsCall, kind, &server, &name, Some(&args)), &first);
        }
        let l1 = engine.decide(&caller, &Method::ToolsList, kind, &server, &name, None);
        prop_assert_eq!(engine.decide(&caller, &Method::ToolsList, kind, &server, &name, None), l1);
    }

    #[test]
    fn overrides_round_trip(
        rename in "[a-z]{3,10}",
        pinned in prop_oneof![
            "[ -~]{0,12}".prop_map(Value::String),
            any::<i32>().prop_map(|i| json!(i)),
            any::<bool>().prop_map(Value::Bool),
        ],
        sent in "[a-z]{0,6}",
    ) {
        let pin_toml = toml::Value::try_from(&pinned).map(|v| v.to_string()).unwrap_or_default();
        let text = format!(
            "[defaults]\ntools = \"allow-all\"\n[[rules]]\nname = \"all\"\n[[overrides]]\nserver = \"alpha\"\ntool = \"do_it\"\nrename = \"{rename}\"\nhide_params = [\"secret\"]\npin_params = {{ p = {pin_toml} }}\n"
        );
        let tools = vec![("alpha".to_string(), json!({"name": "do_it", "inputSchema": {"type": "object", "properties": {"p": {}, "q": {}, "secret": {}}}}))];
        let (svc, calls) = stack(&handle(&text), &tools);
        let who = Some(identity("u", &[]));
        rt().block_on(async {
            let l = send(&svc, list(who.clone())).await;
            prop_assert_eq!(names(&l), vec![rename.clone()]);
            let res = send(&svc, call(who.clone(), &rename, json!({"p": "client", "q": sent.clone(), "secret": 1}))).await;
            prop_assert!(!res.is_error(), "{:?}", res.body);
            let got = calls.lock().map(|c| c.last().cloned()).unwrap_or_default();
            prop_assert_eq!(got, Some(("alpha".to_string(), "do_it".to_string(), json!({"p": pinned.clone(), "q": sent.clone()}))));
            Ok(())
        })?;
    }
}

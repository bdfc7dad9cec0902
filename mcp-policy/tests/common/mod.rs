//! Test support: a stand-in for the core route layer and dispatch with the same semantics
//! (namespacing `server__name`, `ListOrigins` on merged lists, params rewritten to the original
//! name, unresolved names passed on without a target and answered by dispatch with
//! `message::not_found`), since the policy layer is tested on its own here.
#![allow(dead_code, unreachable_pub)]

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use mcp_gateway_core::{
    BoxError, Identity, ListOrigins, McpRequest, McpResponse, Method, SessionInfo, Target,
    identity::AuthMethod, message::not_found,
};
use serde_json::{Value, json};
use tower::{Service, ServiceExt, service_fn, util::BoxCloneService};

/// The upstream catalog: (server, tool definition).
pub type Catalog = Arc<Mutex<Vec<(String, Value)>>>;
/// What the upstream received: (server, original name, arguments).
pub type Calls = Arc<Mutex<Vec<(String, String, Value)>>>;

pub fn catalog(tools: &[(&str, Value)]) -> Catalog {
    Arc::new(Mutex::new(
        tools
            .iter()
            .map(|(s, v)| (s.to_string(), v.clone()))
            .collect(),
    ))
}

/// Dispatch: answers lists with ListOrigins, calls with what it received.
pub fn dispatch(cat: Catalog, calls: Calls) -> BoxCloneService<McpRequest, McpResponse, BoxError> {
    BoxCloneService::new(service_fn(move |req: McpRequest| {
        let cat = cat.clone();
        let calls = calls.clone();
        async move {
            match req.method {
                Method::ToolsList => {
                    let cat = cat.lock().map(|c| c.clone()).unwrap_or_default();
                    let mut tools = Vec::new();
                    let mut origins = Vec::new();
                    for (server, def) in cat {
                        let name = def["name"].as_str().unwrap_or_default().to_string();
                        let exposed = format!("{server}__{name}");
                        let mut d = def.clone();
                        d["name"] = Value::String(exposed.clone());
                        tools.push(d);
                        origins.push(Target {
                            server: server.as_str().into(),
                            name: Some(name),
                            exposed_name: Some(exposed),
                            instance: None,
                        });
                    }
                    let mut res = req.reply(json!({ "tools": tools }));
                    res.extensions.insert(ListOrigins(Arc::new(origins)));
                    Ok(res)
                }
                Method::ToolsCall => {
                    // Like core dispatch: an unresolved name is answered as missing.
                    let Some(t) = req.ctx.target.clone() else {
                        let name = req.name().unwrap_or_default().to_string();
                        return Ok(req.error(not_found::tool(&name)));
                    };
                    let args = req.params.get("arguments").cloned().unwrap_or(json!({}));
                    if let Ok(mut c) = calls.lock() {
                        c.push((
                            t.server.to_string(),
                            t.name.clone().unwrap_or_default(),
                            args.clone(),
                        ));
                    }
                    Ok(req.reply(json!({"content": [{"type": "text", "text": "ok"}]})))
                }
                _ => Ok(req.reply(json!({}))),
            }
        }
    }))
}

/// The route stand-in: resolves `server__name` against the catalog, answers unknown tools exactly
/// like the core route layer, sets `ctx.target`.
#[derive(Clone)]
pub struct Route<S> {
    pub inner: S,
    pub cat: Catalog,
}

impl<S> Service<McpRequest> for Route<S>
where
    S: Service<McpRequest, Response = McpResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = McpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<McpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: McpRequest) -> Self::Future {
        let inner = self.inner.clone();
        let cat = self.cat.clone();
        Box::pin(async move {
            if req.method == Method::ToolsCall {
                let name = req.name().unwrap_or_default().to_string();
                let found = name.split_once("__").and_then(|(s, n)| {
                    let cat = cat.lock().ok()?;
                    cat.iter()
                        .any(|(cs, d)| cs == s && d["name"] == n)
                        .then(|| (s.to_string(), n.to_string()))
                });
                // Like the core route layer: set the target and rewrite the name to the
                // original; an unresolved name passes on with no target.
                if let Some((s, n)) = found {
                    req.params.insert("name".into(), Value::String(n.clone()));
                    req.ctx.target = Some(Target {
                        server: s.into(),
                        name: Some(n),
                        exposed_name: Some(name),
                        instance: None,
                    });
                }
            }
            inner.oneshot(req).await
        })
    }
}

pub fn identity(subject: &str, teams: &[&str]) -> Arc<Identity> {
    let mut i = Identity::new(subject, AuthMethod::Jwt);
    i.teams = teams.iter().map(|t| t.to_string()).collect();
    Arc::new(i)
}

pub fn list(id: Option<Arc<Identity>>) -> McpRequest {
    let mut r = McpRequest::new(
        Some(mcp_gateway_core::RequestId::Number(1)),
        Method::ToolsList,
        Default::default(),
    );
    r.ctx.identity = id;
    r
}

pub fn call(id: Option<Arc<Identity>>, name: &str, args: Value) -> McpRequest {
    let mut p = serde_json::Map::new();
    p.insert("name".into(), Value::String(name.into()));
    p.insert("arguments".into(), args);
    let mut r = McpRequest::new(
        Some(mcp_gateway_core::RequestId::Number(2)),
        Method::ToolsCall,
        p,
    );
    r.ctx.identity = id;
    r
}

pub fn with_client(mut r: McpRequest, client: &str) -> McpRequest {
    r.ctx.session = Arc::new(SessionInfo {
        client_info: Some(Arc::new(json!({"name": client, "version": "1"}))),
        ..Default::default()
    });
    r
}

/// Names of a tools/list answer.
pub fn names(res: &McpResponse) -> Vec<String> {
    res.body
        .as_ref()
        .ok()
        .and_then(|b| b["tools"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The JSON-RPC error of an answer, as JSON (code, message, data).
pub fn err_json(res: &McpResponse) -> Option<Value> {
    res.body
        .as_ref()
        .err()
        .and_then(|e| serde_json::to_value(e).ok())
}

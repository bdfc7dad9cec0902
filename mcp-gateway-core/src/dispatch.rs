//! The dispatch service: answers what the gateway answers itself and sends the rest upstream.
//!
//! [`Dispatch`] is the innermost MCP-level service. It answers `initialize`, `server/discover`,
//! `ping` and the merged `*/list` methods from the [`Catalog`] (paginated, with a [`ListOrigins`]
//! extension so outer layers know where each entry came from), fans `logging/setLevel` and
//! `notifications/roots/list_changed` out to every upstream, and sends routed requests
//! (`ctx.target`, set by [`Route`](crate::route::Route)) to their upstream. A request with no target
//! is answered exactly like a missing feature ([`not_found`]).

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};
use tower_service::Service;

use crate::{
    catalog::{Catalog, PrefixMode, list_key},
    events::EventBus,
    message::{
        Annotation, BoxError, ErrorData, FeatureKind, JsonObject, ListFilter, ListOrigins,
        McpRequest, McpResponse, Method, codes, error, not_found,
    },
    upstream::{Endpoint, Pool, Status, Upstream, inflight_token},
};

/// Protocol revisions that use the `initialize` handshake, oldest first.
pub const LEGACY_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The stateless revision.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// How many `input_required` rounds the gateway drives for a legacy client.
const MAX_INPUT_ROUNDS: usize = 10;

/// Whether lists fail when an upstream is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListFailMode {
    /// Lists answer with what is known; a down upstream's last known features stay listed.
    #[default]
    Open,
    /// Lists fail with `UPSTREAM_UNAVAILABLE` while any upstream is not serving.
    Closed,
}

/// What dispatch says about the gateway itself.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// `serverInfo.name`.
    pub name: String,
    /// `serverInfo.version`.
    pub version: String,
    /// `instructions` given to clients (upstream instructions are appended).
    pub instructions: Option<String>,
    /// Entries per page of merged lists.
    pub page_size: usize,
    /// What lists do while an upstream is down.
    pub list_fail_mode: ListFailMode,
    /// Forward resource URIs whose host is link-local or a cloud metadata address (see
    /// [`crate::ssrf`]); refused by default.
    pub allow_link_local: bool,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            name: "mcp-gateway".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            instructions: None,
            page_size: 500,
            list_fail_mode: ListFailMode::Open,
            allow_link_local: false,
        }
    }
}

/// Sends MCP requests to upstreams and answers the rest. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Dispatch {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Catalog,
    upstreams: HashMap<Arc<str>, Upstream>,
    config: DispatchConfig,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch")
            .field("upstreams", &self.upstreams.keys().collect::<Vec<_>>())
            .field("endpoint_connections", &self.pool.len())
            .finish()
    }
}

impl Dispatch {
    /// Dispatch over these upstreams and catalog.
    pub fn new(catalog: Catalog, upstreams: Vec<Upstream>, config: DispatchConfig) -> Self {
        let pool = Pool::new(
            EventBus::default(),
            catalog.clone(),
            tokio_util::sync::CancellationToken::new(),
            Duration::from_secs(300),
        );
        Self::with_pool(catalog, upstreams, config, pool)
    }

    pub(crate) fn with_pool(
        catalog: Catalog,
        upstreams: Vec<Upstream>,
        config: DispatchConfig,
        pool: Arc<Pool>,
    ) -> Self {
        let upstreams = upstreams
            .into_iter()
            .map(|u| (u.name().clone(), u))
            .collect();
        Self {
            inner: Arc::new(Inner {
                catalog,
                upstreams,
                config,
                pool,
            }),
        }
    }
}

impl Service<McpRequest> for Dispatch {
    type Response = McpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<McpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: McpRequest) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let stateless = is_stateless(&req);
            let method = req.method.clone();
            let mut res = inner.handle(req).await;
            if let Ok(value) = &mut res.body {
                shape_result(value, &method, stateless);
            }
            Ok(res)
        })
    }
}

impl Inner {
    async fn handle(&self, req: McpRequest) -> McpResponse {
        match &req.method {
            Method::Initialize => self.initialize(&req),
            Method::Discover => req.reply(self.discover()),
            Method::Ping => req.reply(json!({})),
            Method::ToolsList => self.list(&req, FeatureKind::Tool),
            Method::PromptsList => self.list(&req, FeatureKind::Prompt),
            Method::ResourcesList => self.list(&req, FeatureKind::Resource),
            Method::ResourceTemplatesList => self.list(&req, FeatureKind::ResourceTemplate),
            Method::SetLevel => self.set_level(req).await,
            Method::RootsListChanged => {
                for upstream in self.upstreams.values() {
                    let _ = upstream.notify(&req.method, JsonObject::new()).await;
                }
                McpResponse::accepted()
            }
            Method::Initialized | Method::Cancelled | Method::Progress => McpResponse::accepted(),
            Method::ToolsCall
            | Method::PromptsGet
            | Method::ResourcesRead
            | Method::ResourcesSubscribe
            | Method::ResourcesUnsubscribe
            | Method::Complete => self.forward(req).await,
            Method::SubscriptionsListen => req.reply(json!({})),
            Method::Other(_) => self.forward_other(req).await,
        }
    }

    fn initialize(&self, req: &McpRequest) -> McpResponse {
        let asked = req.params.get("protocolVersion").and_then(Value::as_str);
        let version = match asked {
            Some(v) if LEGACY_VERSIONS.contains(&v) => v,
            _ => LEGACY_VERSIONS[LEGACY_VERSIONS.len() - 1],
        };
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": capabilities(),
            "serverInfo": self.server_info(),
        });
        if let Some(instructions) = self.instructions() {
            result["instructions"] = Value::String(instructions);
        }
        req.reply(result)
    }

    fn discover(&self) -> Value {
        let mut versions: Vec<&str> = LEGACY_VERSIONS.to_vec();
        versions.push(STATELESS_VERSION);
        let mut result = json!({
            "resultType": "complete",
            "supportedVersions": versions,
            "capabilities": capabilities(),
            "ttlMs": 0,
            "cacheScope": "private",
            "_meta": {"io.modelcontextprotocol/serverInfo": self.server_info()},
        });
        if let Some(instructions) = self.instructions() {
            result["instructions"] = Value::String(instructions);
        }
        result
    }

    fn server_info(&self) -> Value {
        json!({"name": self.config.name, "version": self.config.version})
    }

    /// The gateway's instructions followed by each upstream's, labelled by server.
    fn instructions(&self) -> Option<String> {
        let mut parts: Vec<String> = self.config.instructions.iter().cloned().collect();
        for name in self.catalog.servers() {
            if let Some(Status::Ready { info }) = self.upstreams.get(name).map(Upstream::status)
                && let Some(text) = &info.instructions
                && !text.trim().is_empty()
            {
                parts.push(match self.catalog.naming().mode {
                    PrefixMode::Always => format!("[{name}] {text}"),
                    PrefixMode::Never => text.clone(),
                });
            }
        }
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    fn list(&self, req: &McpRequest, kind: FeatureKind) -> McpResponse {
        if self.config.list_fail_mode == ListFailMode::Closed
            && let Some(down) = self
                .upstreams
                .values()
                .find(|u| !matches!(u.status(), Status::Ready { .. }))
        {
            return req.error(error(
                codes::UPSTREAM_UNAVAILABLE,
                format!(
                    "upstream '{}' is not serving, and lists are fail-closed",
                    down.name()
                ),
                Some(json!({"server": &**down.name()})),
            ));
        }
        let snapshot = self.catalog.snapshot();
        let list = snapshot.list(kind);
        let start = match req.params.get("cursor") {
            None | Some(Value::Null) => 0,
            Some(Value::String(c)) => match decode_cursor(c) {
                Some(n) if n <= list.items.len() => n,
                _ => {
                    return req.error(error(
                        codes::INVALID_PARAMS,
                        format!("Invalid cursor: {c}"),
                        None,
                    ));
                }
            },
            Some(_) => {
                return req.error(error(
                    codes::INVALID_PARAMS,
                    "cursor must be a string",
                    None,
                ));
            }
        };
        let len = list.items.len();
        let page = self.config.page_size.max(1);
        // A layer that hides entries says which ones this caller may see: only those are copied,
        // and pages are filled with visible entries (the cursor stays an index into the list).
        let visible = req
            .ctx
            .extensions
            .get::<ListFilter>()
            .map(|f| (f.0)(kind, &list.origins))
            .filter(|v| v.len() == len);
        let shown = |i: usize| visible.as_ref().is_none_or(|v| v[i]);
        let mut items = Vec::with_capacity(page.min(len - start));
        let mut origins = Vec::with_capacity(page.min(len - start));
        let mut next = start;
        while next < len && items.len() < page {
            if shown(next) {
                items.push(list.items[next].clone());
                origins.push(list.origins[next].clone());
            }
            next += 1;
        }
        while next < len && !shown(next) {
            next += 1;
        }
        let (key, _) = list_key(kind);
        let mut result = JsonObject::with_capacity(2);
        result.insert(key.into(), Value::Array(items));
        if next < len {
            result.insert("nextCursor".into(), Value::String(encode_cursor(next)));
        }
        let mut res = req.reply(Value::Object(result));
        res.extensions.insert(ListOrigins(Arc::new(origins)));
        res
    }

    async fn set_level(&self, req: McpRequest) -> McpResponse {
        let calls = self.upstreams.values().filter_map(|u| match u.status() {
            Status::Ready { info } if info.capabilities.logging.is_some() => {
                let params = req.params.clone();
                let ctx = req.ctx.clone();
                let method = req.method.clone();
                Some(async move { u.request(&method, params, &ctx).await })
            }
            _ => None,
        });
        futures::future::join_all(calls).await;
        req.reply(json!({}))
    }

    async fn forward(&self, mut req: McpRequest) -> McpResponse {
        let Some(target) = req.ctx.target.clone() else {
            return req.error(self.missing(&req));
        };
        if !self.config.allow_link_local
            && matches!(
                req.method,
                Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe
            )
            && let Some((host, why)) = req.uri().and_then(crate::ssrf::refused_url)
        {
            return req.error(error(
                codes::INVALID_PARAMS,
                format!("resource URI refused: its host {host} is {why}"),
                None,
            ));
        }
        let Some(base) = self.upstreams.get(&target.server) else {
            return req.error(self.missing(&req));
        };
        // A layer may have chosen a specific endpoint (a managed instance, per-user credentials).
        let pooled;
        let upstream = match req.ctx.extensions.get::<Endpoint>() {
            Some(endpoint) => match self.pool.get(base, endpoint).await {
                Ok(u) => {
                    pooled = u;
                    &pooled
                }
                Err(e) => return req.error(e),
            },
            None => base,
        };
        if let Some(token) = req.progress_token().cloned() {
            req.ctx.extensions.insert(inflight_token(token));
        }
        strip_hop_meta(&mut req.params);
        let started = Instant::now();
        let params = std::mem::take(&mut req.params);
        let result = self.request_rounds(upstream, &req, params).await;
        req.ctx.annotations.push(Annotation::Upstream {
            server: target.server.clone(),
            instance: target.instance.clone(),
            latency: started.elapsed(),
        });
        match result {
            Ok(mut value) => {
                if self.catalog.naming().mode == PrefixMode::Always {
                    expose_uris(&mut value, &|uri| {
                        self.catalog.naming().expose_uri(&target.server, uri)
                    });
                }
                req.reply(value)
            }
            Err(e) => req.error(e),
        }
    }

    /// Sends a request upstream. When a 2026-07-28 upstream answers `input_required` and the
    /// client can be asked directly (a legacy session), the gateway fulfils the input requests
    /// through the client's stream and retries with `inputResponses` and `requestState`, so the
    /// client sees an ordinary result. Stateless clients get the `InputRequiredResult` itself and
    /// drive the rounds (their retry passes through unchanged).
    async fn request_rounds(
        &self,
        upstream: &Upstream,
        req: &McpRequest,
        params: JsonObject,
    ) -> Result<Value, ErrorData> {
        let downstream = match (&req.ctx.downstream, is_stateless(req)) {
            (Some(d), false) => d.clone(),
            _ => return upstream.request(&req.method, params, &req.ctx).await,
        };
        let mut attempt = params.clone();
        for _ in 0..MAX_INPUT_ROUNDS {
            let value = upstream.request(&req.method, attempt, &req.ctx).await?;
            if value.get("resultType").and_then(Value::as_str) != Some("input_required") {
                return Ok(value);
            }
            let mut responses = JsonObject::new();
            if let Some(Value::Object(requests)) = value.get("inputRequests") {
                for (key, request) in requests {
                    let method = request
                        .get("method")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let params = match request.get("params") {
                        Some(Value::Object(p)) => p.clone(),
                        _ => JsonObject::new(),
                    };
                    let message = crate::downstream::ServerMessage {
                        server: Some(upstream.name().clone()),
                        method: method.to_owned(),
                        params,
                    };
                    match downstream.request(message).await {
                        Ok(Ok(answer)) => {
                            responses.insert(key.clone(), answer);
                        }
                        Ok(Err(e)) => return Err(e),
                        Err(e) => {
                            return Err(error(
                                codes::INTERNAL_ERROR,
                                format!(
                                    "the upstream needs input ({method}) the client cannot give: {e}"
                                ),
                                None,
                            ));
                        }
                    }
                }
            }
            attempt = params.clone();
            attempt.insert("inputResponses".into(), Value::Object(responses));
            if let Some(state) = value.get("requestState") {
                attempt.insert("requestState".into(), state.clone());
            }
        }
        Err(error(
            codes::UPSTREAM_PROTOCOL,
            format!(
                "upstream '{}' still needed input after {MAX_INPUT_ROUNDS} rounds",
                upstream.name()
            ),
            None,
        ))
    }

    async fn forward_other(&self, mut req: McpRequest) -> McpResponse {
        // Pass-through gateways (one upstream, no prefixes) forward methods they do not know.
        let only = match (self.catalog.naming().mode, self.catalog.servers()) {
            (PrefixMode::Never, [only]) => self.upstreams.get(only),
            _ => None,
        };
        match (only, req.is_notification()) {
            (Some(upstream), true) => {
                let _ = upstream
                    .notify(&req.method, std::mem::take(&mut req.params))
                    .await;
                McpResponse::accepted()
            }
            (Some(upstream), false) => {
                strip_hop_meta(&mut req.params);
                let params = std::mem::take(&mut req.params);
                match upstream.request(&req.method, params, &req.ctx).await {
                    Ok(v) => req.reply(v),
                    Err(e) => req.error(e),
                }
            }
            (None, true) => McpResponse::accepted(),
            (None, false) => req.error(not_found::method(req.method.as_str())),
        }
    }

    fn missing(&self, req: &McpRequest) -> ErrorData {
        let name = req.name().unwrap_or_default();
        match req.method {
            Method::ToolsCall => not_found::tool(name),
            Method::PromptsGet => not_found::prompt(name),
            Method::Complete => error(codes::INVALID_PARAMS, "Unknown completion reference", None),
            _ => not_found::resource(req.uri().unwrap_or_default()),
        }
    }
}

fn capabilities() -> Value {
    json!({
        "tools": {"listChanged": true},
        "prompts": {"listChanged": true},
        "resources": {"subscribe": true, "listChanged": true},
        "logging": {},
        "completions": {},
    })
}

fn is_stateless(req: &McpRequest) -> bool {
    req.ctx.session.protocol_version.as_deref() == Some(STATELESS_VERSION)
}

/// Removes the `_meta` keys that describe the client's hop (protocol version, client info and
/// capabilities of 2026-07-28): the gateway's own connection to the upstream has its own.
fn strip_hop_meta(params: &mut JsonObject) {
    if let Some(Value::Object(meta)) = params.get_mut("_meta") {
        meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
        if meta.is_empty() {
            params.remove("_meta");
        }
    }
}

/// Gives a result the shape the client's protocol revision expects: 2026-07-28 results carry
/// `resultType` (and lists and reads the caching hints `ttlMs`/`cacheScope`; `private` because
/// what a caller sees depends on who they are); legacy clients do not know `resultType`, and only
/// `complete` is safe to drop.
fn shape_result(value: &mut Value, method: &Method, stateless: bool) {
    let Value::Object(o) = value else { return };
    if matches!(method, Method::Initialize | Method::Discover) {
        return;
    }
    if stateless {
        o.entry("resultType")
            .or_insert_with(|| Value::String("complete".into()));
        if method.is_list() || *method == Method::ResourcesRead {
            o.entry("ttlMs").or_insert(Value::from(0));
            o.entry("cacheScope")
                .or_insert_with(|| Value::String("private".into()));
        }
    } else if o.get("resultType").and_then(Value::as_str) == Some("complete") {
        o.remove("resultType");
    }
}

/// Rewrites the resource URIs inside a result (embedded resources, resource links, read
/// contents) to their client-facing form, so the client can read them back through the gateway.
fn expose_uris(value: &mut Value, expose: &dyn Fn(&str) -> String) {
    fn walk(v: &mut Value, expose: &dyn Fn(&str) -> String, depth: usize) {
        if depth > 16 {
            return;
        }
        match v {
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, expose, depth + 1)),
            Value::Object(o) => {
                let is_resource =
                    matches!(o.get("type").and_then(Value::as_str), Some("resource_link"))
                        || (o.contains_key("uri")
                            && (o.contains_key("text") || o.contains_key("blob")));
                if is_resource && let Some(Value::String(uri)) = o.get_mut("uri") {
                    *uri = expose(uri);
                }
                for (k, child) in o.iter_mut() {
                    if matches!(
                        k.as_str(),
                        "content" | "contents" | "resource" | "messages" | "structuredContent"
                    ) || child.is_array()
                    {
                        walk(child, expose, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
    walk(value, expose, 0);
}

fn encode_cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o:{offset}"))
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    std::str::from_utf8(&bytes)
        .ok()?
        .strip_prefix("o:")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(1234)), Some(1234));
        assert_eq!(decode_cursor("garbage!"), None);
        assert_eq!(decode_cursor(""), None);
    }

    #[test]
    fn uris_in_results_are_exposed() {
        let mut v = json!({"content": [
            {"type": "text", "text": "hi"},
            {"type": "resource", "resource": {"uri": "test://a", "text": "x"}},
            {"type": "resource_link", "uri": "test://b", "name": "b"}
        ]});
        expose_uris(&mut v, &|u| format!("s+{u}"));
        assert_eq!(v["content"][1]["resource"]["uri"], "s+test://a");
        assert_eq!(v["content"][2]["uri"], "s+test://b");
        assert_eq!(v["content"][0]["text"], "hi");
    }

    #[tokio::test]
    async fn a_list_filter_fills_pages_with_visible_entries_only() {
        use crate::catalog::{Naming, ServerLists};
        let server: Arc<str> = "s".into();
        let catalog = Catalog::new(Naming::default(), vec![server.clone()], EventBus::default());
        let tools = (0..10).map(|i| json!({"name": format!("t{i}")})).collect();
        catalog.update(
            &server,
            ServerLists {
                tools,
                ..ServerLists::default()
            },
        );
        let config = DispatchConfig {
            page_size: 2,
            ..DispatchConfig::default()
        };
        let dispatch = Dispatch::new(catalog, Vec::new(), config);
        // Only t1, t2, t5 are visible to this caller.
        let filter = ListFilter(Arc::new(|_, origins: &[crate::message::Target]| {
            origins
                .iter()
                .map(|o| matches!(o.name.as_deref(), Some("t1" | "t2" | "t5")))
                .collect()
        }));
        let page = |cursor: Option<Value>| {
            let mut params = JsonObject::new();
            if let Some(c) = cursor {
                params.insert("cursor".into(), c);
            }
            let mut req = McpRequest::new(
                Some(crate::message::RequestId::Number(1)),
                Method::ToolsList,
                params,
            );
            req.ctx.extensions.insert(filter.clone());
            let mut d = dispatch.clone();
            async move { d.call(req).await.unwrap() }
        };
        let first = page(None).await;
        let body = first.body.as_ref().unwrap();
        let names: Vec<&str> = body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert_eq!(names, ["s__t1", "s__t2"]);
        let origins = &first.extensions.get::<ListOrigins>().unwrap().0;
        assert_eq!(origins.len(), 2);
        let second = page(Some(body["nextCursor"].clone())).await;
        let body = second.body.as_ref().unwrap();
        assert_eq!(body["tools"], json!([{"name": "s__t5"}]));
        // Nothing visible after t5: no further page.
        assert!(body.get("nextCursor").is_none(), "{body}");
    }

    #[test]
    fn hop_meta_is_stripped() {
        let mut p: JsonObject = serde_json::from_value(json!({"_meta": {
            "progressToken": 1, "io.modelcontextprotocol/protocolVersion": "2026-07-28"}}))
        .unwrap();
        strip_hop_meta(&mut p);
        assert_eq!(Value::Object(p), json!({"_meta": {"progressToken": 1}}));
    }
}

//! The tower layers: [`PolicyLayer`] (after the core route layer) and [`ExposedNamesLayer`]
//! (before it, only needed when overrides rename tools).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use mcp_gateway_core::{
    Annotation, Annotations, BoxError, FeatureKind, Identity, ListOrigins, McpRequest, McpResponse,
    Method, Origin, SessionInfo, Target, codes, error, identity::AuthMethod, message::not_found,
};
use pin_project_lite::pin_project;
use serde_json::{Value, json};
use tower::{Layer, Service};

use crate::{
    engine::{Caller, Decision, Engine, LimitKey, Provisioned},
    state::{PolicyHandle, Shared},
};

/// `Retry-After` for the HTTP adapter: put on a rate-limited response's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

/// Put in `ctx.extensions` by [`ExposedNames`] when the client called a renamed tool: the name
/// the client used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientToolName(pub String);

/// The answer a client gets for a feature that does not exist (the same as the route layer's).
pub fn missing(req: &McpRequest, kind: FeatureKind, shown: &str) -> McpResponse {
    req.error(match kind {
        FeatureKind::Tool => not_found::tool(shown),
        FeatureKind::Prompt => not_found::prompt(shown),
        FeatureKind::Resource | FeatureKind::ResourceTemplate => not_found::resource(shown),
    })
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn note(a: &Annotations, rule: impl Into<String>, effect: &'static str, reason: impl Into<String>) {
    a.push(Annotation::Policy {
        rule: rule.into(),
        effect,
        reason: reason.into(),
    });
}

// === PolicyLayer ===

/// Applies the policy: kill switches, rate limits, authorization of named features, and
/// filtering/rewriting of merged lists. Place it after the core route layer.
#[derive(Clone, Debug)]
pub struct PolicyLayer {
    handle: PolicyHandle,
}

impl PolicyLayer {
    /// A layer over a handle (keep a clone of the handle for admin operations).
    pub fn new(handle: PolicyHandle) -> Self {
        Self { handle }
    }

    /// The admin handle.
    pub fn handle(&self) -> &PolicyHandle {
        &self.handle
    }

    /// The layer to place before the core route layer, so renamed tools can be called.
    #[must_use]
    pub fn names_layer(&self) -> ExposedNamesLayer {
        ExposedNamesLayer {
            handle: self.handle.clone(),
        }
    }
}

impl<S> Layer<S> for PolicyLayer {
    type Service = Policy<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Policy {
            inner,
            shared: self.handle.shared.clone(),
        }
    }
}

// === Policy ===

/// The policy service.
#[derive(Clone, Debug)]
pub struct Policy<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Policy<S> {
    /// Wraps `inner` with the policy of `handle`.
    pub fn new(inner: S, handle: &PolicyHandle) -> Self {
        Self {
            inner,
            shared: handle.shared.clone(),
        }
    }

    /// A layer for this service.
    pub fn layer(handle: PolicyHandle) -> PolicyLayer {
        PolicyLayer::new(handle)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

enum Pre {
    Answer(McpResponse),
    Forward(Option<Box<ListPost>>),
}

/// The list filtering a [`ResponseFuture`] applies on the way out (opaque).
pub struct ListPost {
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    identity: Option<Arc<Identity>>,
    session: Arc<SessionInfo>,
    origin: Arc<Origin>,
    method: Method,
    annotations: Annotations,
}

impl Shared {
    fn kill_check(&self, req: &McpRequest) -> Option<(String, &'static str)> {
        let kills = self.kills.load();
        if !kills.any {
            return None;
        }
        if kills.gateway {
            return Some(("the gateway is disabled".into(), "gateway"));
        }
        if let Some(c) = req.ctx.session.client_name()
            && kills.clients.contains(c)
        {
            return Some((format!("client `{c}` is disabled"), "client"));
        }
        if let Some(id) = &req.ctx.identity
            && kills.identities.contains(&*id.subject)
        {
            return Some((format!("identity `{}` is disabled", id.subject), "identity"));
        }
        if let Some(t) = &req.ctx.target {
            if kills.servers.contains(&*t.server) {
                return Some((format!("server `{}` is disabled", t.server), "server"));
            }
            if req.method == Method::ToolsCall
                && let Some(n) = &t.name
                && kills.tools.contains(&(t.server.to_string(), n.clone()))
            {
                return Some((
                    format!("tool `{n}` of server `{}` is disabled", t.server),
                    "tool",
                ));
            }
        }
        None
    }

    fn rate_check(&self, engine: &Engine, req: &McpRequest) -> Option<McpResponse> {
        if engine.limits.is_empty() || req.is_notification() {
            return None;
        }
        let now = tokio::time::Instant::now();
        let target = req.ctx.target.as_ref();
        for l in &engine.limits {
            if !l.methods.is_empty() && !l.methods.contains(&req.method) {
                continue;
            }
            if let Some(g) = &l.server
                && !target.is_some_and(|t| g.matches(&t.server))
            {
                continue;
            }
            if !l.features.is_empty()
                && !target
                    .and_then(|t| t.name.as_deref())
                    .is_some_and(|n| l.features.iter().any(|g| g.matches(n)))
            {
                continue;
            }
            let id = req.ctx.identity.as_deref();
            let key = match l.key {
                LimitKey::Identity => {
                    id.map_or_else(|| "\u{0}anonymous".to_string(), |i| i.subject.to_string())
                }
                LimitKey::ApiKey => match id {
                    Some(i) if i.auth_method == AuthMethod::ApiKey => {
                        i.token_id.clone().unwrap_or_else(|| i.subject.to_string())
                    }
                    _ => continue,
                },
                LimitKey::Origin => {
                    let o = &req.ctx.origin;
                    match (o.remote_addr, &o.origin) {
                        (Some(a), _) => a.ip().to_string(),
                        (None, Some(h)) => h.clone(),
                        (None, None) => "unknown".into(),
                    }
                }
                LimitKey::Tool => match target.and_then(|t| t.name.as_deref().map(|n| (t, n))) {
                    Some((t, n)) => format!("{}\u{0}{n}", t.server),
                    None => continue,
                },
                LimitKey::Global => String::new(),
            };
            if let Err(wait) = l.gcra.check(&key, now) {
                let ms = wait.as_millis().max(1) as u64;
                note(
                    &req.ctx.annotations,
                    format!("rate_limit:{}", l.name),
                    "rate_limited",
                    format!("retry in {ms} ms"),
                );
                let mut resp = req.error(error(
                    codes::RATE_LIMITED,
                    format!("Rate limit `{}` exceeded; retry in {ms} ms", l.name),
                    Some(json!({"retryAfterMs": ms, "limit": &*l.name})),
                ));
                resp.extensions.insert(RetryAfter(wait));
                return Some(resp);
            }
        }
        None
    }

    fn pre(self: &Arc<Self>, req: &mut McpRequest) -> Pre {
        let engine = self.engine.load_full();
        if let Some((why, scope)) = self.kill_check(req) {
            note(
                &req.ctx.annotations,
                format!("kill_switch:{scope}"),
                "deny",
                why.clone(),
            );
            if req.is_notification() {
                return Pre::Answer(McpResponse::accepted());
            }
            return Pre::Answer(req.error(error(
                codes::KILL_SWITCH,
                format!("Kill switch active: {why}"),
                Some(json!({"scope": scope})),
            )));
        }
        if req.method.is_list() {
            if let Some(r) = self.rate_check(&engine, req) {
                return Pre::Answer(r);
            }
            let ctx = &req.ctx;
            return Pre::Forward(Some(Box::new(ListPost {
                shared: self.clone(),
                engine,
                identity: ctx.identity.clone(),
                session: ctx.session.clone(),
                origin: ctx.origin.clone(),
                method: req.method.clone(),
                annotations: ctx.annotations.clone(),
            })));
        }
        let named = matches!(
            req.method,
            Method::ToolsCall
                | Method::PromptsGet
                | Method::ResourcesRead
                | Method::ResourcesSubscribe
                | Method::ResourcesUnsubscribe
        );
        if named
            && let Some(kind) = req.method.feature()
            && let Some(answer) = self.authorize(&engine, req, kind, false)
        {
            return Pre::Answer(answer);
        }
        if req.method == Method::Complete && req.ctx.target.is_some() {
            // Completions of a hidden prompt or template are answered like an unknown reference.
            let kind = match req
                .params
                .get("ref")
                .and_then(|r| r.get("type"))
                .and_then(Value::as_str)
            {
                Some("ref/prompt") => FeatureKind::Prompt,
                _ => FeatureKind::ResourceTemplate,
            };
            if let Some(answer) = self.authorize(&engine, req, kind, true) {
                return Pre::Answer(answer);
            }
        }
        if let Some(r) = self.rate_check(&engine, req) {
            return Pre::Answer(r);
        }
        Pre::Forward(None)
    }

    fn authorize(
        &self,
        engine: &Engine,
        req: &mut McpRequest,
        kind: FeatureKind,
        completion: bool,
    ) -> Option<McpResponse> {
        let shown = req
            .ctx
            .extensions
            .get::<ClientToolName>()
            .map(|c| c.0.clone())
            .or_else(|| req.ctx.target.as_ref().and_then(|t| t.exposed_name.clone()))
            .or_else(|| {
                if kind == FeatureKind::Tool || kind == FeatureKind::Prompt {
                    req.name().map(str::to_string)
                } else {
                    req.uri().map(str::to_string)
                }
            })
            .unwrap_or_default();
        if req.ctx.target.is_none() && kind == FeatureKind::Tool {
            // The route layer could not resolve the name: it may be one of our renames.
            if let Some((server, original)) = engine.renamed_from(&shown) {
                req.ctx.target = Some(Target {
                    server: server.as_str().into(),
                    name: Some(original.clone()),
                    exposed_name: Some(shown.clone()),
                    instance: None,
                });
                req.params
                    .insert("name".into(), Value::String(original.clone()));
                req.ctx.extensions.insert(ClientToolName(shown.clone()));
            }
        }
        let Some(target) = req.ctx.target.clone() else {
            note(
                &req.ctx.annotations,
                "policy:no_target",
                "hide",
                "no route target; failing closed",
            );
            return Some(missing(req, kind, &shown));
        };
        let name = target.name.as_deref().unwrap_or(shown.as_str());
        let server = &*target.server;
        let hide = |req: &McpRequest, rule: &str, reason: &str| {
            note(&req.ctx.annotations, rule, "hide", reason);
            if completion {
                return Some(req.error(error(
                    codes::INVALID_PARAMS,
                    "Unknown completion reference",
                    None,
                )));
            }
            Some(missing(req, kind, &shown))
        };
        let approved = || self.is_approved(kind, server, name);
        match engine.provisioned(
            kind,
            server,
            name,
            engine.mode(kind, server) == crate::engine::Mode::AllowSelected && approved(),
        ) {
            Provisioned::Yes => {}
            Provisioned::Pending => {
                self.pending(kind, server, name);
                return hide(req, "provisioning:pending", "feature waits for approval");
            }
            Provisioned::No => {
                return hide(req, "provisioning:blocked", "feature is not provisioned");
            }
        }
        if kind == FeatureKind::Tool {
            let withheld = self.withheld.load();
            if !withheld.is_empty() && withheld.contains(&(server.to_string(), name.to_string())) {
                return hide(
                    req,
                    "integrity:withheld",
                    "tool changed since approval or failed threat checks",
                );
            }
        }
        let caller = Caller {
            identity: req.ctx.identity.as_deref(),
            session: Some(&req.ctx.session),
            origin: Some(&req.ctx.origin),
            now_unix: now_unix(),
        };
        let empty = serde_json::Map::new();
        let args = if kind == FeatureKind::Tool {
            req.arguments().unwrap_or(&empty)
        } else {
            &empty
        };
        match engine.decide(&caller, &req.method, kind, server, name, Some(args)) {
            Decision::Allow(rule) => {
                note(
                    &req.ctx.annotations,
                    format!("scope:{rule}"),
                    "allow",
                    "allowed by rule",
                );
            }
            Decision::Hide(rule) => {
                let r = rule.map_or_else(|| "scope:none".to_string(), |r| format!("scope:{r}"));
                return hide(req, &r, "no rule allows this caller");
            }
            Decision::Refuse(rule) => {
                note(
                    &req.ctx.annotations,
                    format!("scope:{rule}"),
                    "deny",
                    "condition on arguments failed",
                );
                return Some(req.error(error(
                    codes::POLICY_DENIED,
                    format!("Policy denied this call of `{shown}`"),
                    Some(json!({"rule": &*rule})),
                )));
            }
        }
        if kind == FeatureKind::Tool
            && let Some(o) = engine.override_for(server, name)
        {
            if o.rename.is_some() && req.ctx.extensions.get::<ClientToolName>().is_none() {
                return hide(
                    req,
                    "override:renamed",
                    "the tool is only exposed under its new name",
                );
            }
            if !o.hide.is_empty() {
                let args = req
                    .params
                    .entry("arguments")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(args) = args.as_object_mut() {
                    for h in &o.hide {
                        args.remove(h);
                    }
                    for (k, v) in &o.pin {
                        args.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        None
    }
}

impl ListPost {
    fn apply(self, resp: &mut McpResponse) {
        let Ok(body) = &mut resp.body else {
            return;
        };
        let (field, kind) = match self.method {
            Method::ToolsList => ("tools", FeatureKind::Tool),
            Method::PromptsList => ("prompts", FeatureKind::Prompt),
            Method::ResourcesList => ("resources", FeatureKind::Resource),
            _ => ("resourceTemplates", FeatureKind::ResourceTemplate),
        };
        let origins = resp.extensions.get::<ListOrigins>().map(|o| o.0.clone());
        let Some(items) = body.get_mut(field).and_then(Value::as_array_mut) else {
            return;
        };
        let origins = match origins {
            Some(o) if o.len() == items.len() => o,
            other => {
                // Without knowing where entries came from nothing can be authorized: fail closed.
                let why = match other {
                    Some(o) => format!(
                        "ListOrigins has {} entries for {} items",
                        o.len(),
                        items.len()
                    ),
                    None => "no ListOrigins on the list response".into(),
                };
                tracing::error!(target: "mcp_policy", "{why}; answering an empty list");
                note(&self.annotations, "policy:no_origins", "hide", why);
                items.clear();
                resp.extensions.remove::<ListOrigins>();
                return;
            }
        };
        let engine = &*self.engine;
        let shared = &*self.shared;
        if kind == FeatureKind::Tool {
            shared.observe_tools(engine, &origins, items);
        }
        let caller = Caller {
            identity: self.identity.as_deref(),
            session: Some(&self.session),
            origin: Some(&self.origin),
            now_unix: now_unix(),
        };
        let kills = shared.kills.load();
        let withheld = shared.withheld.load();
        let mask = engine.subject_mask(&caller);
        let mut keep = Vec::with_capacity(items.len());
        let mut kept_origins = Vec::with_capacity(items.len());
        let mut renames = Vec::new();
        let mut hidden = 0usize;
        for (item, o) in std::mem::take(items).into_iter().zip(origins.iter()) {
            let server = &*o.server;
            let name = o.name.as_deref().unwrap_or("");
            let visible = (|| {
                if kills.any
                    && (kills.servers.contains(server)
                        || (kind == FeatureKind::Tool
                            && kills
                                .tools
                                .contains(&(server.to_string(), name.to_string()))))
                {
                    return false;
                }
                let approved = engine.mode(kind, server) == crate::engine::Mode::AllowSelected
                    && shared.is_approved(kind, server, name);
                match engine.provisioned(kind, server, name, approved) {
                    Provisioned::Yes => {}
                    Provisioned::Pending => {
                        shared.pending(kind, server, name);
                        return false;
                    }
                    Provisioned::No => return false,
                }
                if kind == FeatureKind::Tool
                    && !withheld.is_empty()
                    && withheld.contains(&(server.to_string(), name.to_string()))
                {
                    return false;
                }
                matches!(
                    engine.decide_masked(&mask, &caller, &self.method, kind, server, name, None),
                    Decision::Allow(_)
                )
            })();
            if !visible {
                hidden += 1;
                continue;
            }
            let mut item = item;
            if kind == FeatureKind::Tool
                && let Some(r) = engine
                    .override_for(server, name)
                    .and_then(|o| o.rename.clone())
            {
                let exposed = item
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| o.exposed_name.clone())
                    .unwrap_or_default();
                renames.push((r, exposed));
            }
            engine.rewrite_entry(kind, server, name, &mut item);
            let mut o = o.clone();
            if let Some(n) = item.get("name").and_then(Value::as_str)
                && (kind == FeatureKind::Tool || kind == FeatureKind::Prompt)
            {
                o.exposed_name = Some(n.to_string());
            }
            keep.push(item);
            kept_origins.push(o);
        }
        *items = keep;
        if !renames.is_empty() {
            shared.learn_renames(renames);
        }
        if hidden > 0 {
            note(
                &self.annotations,
                "policy:list",
                "hide",
                format!("{hidden} {field} hidden from this caller"),
            );
        }
        resp.extensions.insert(ListOrigins(Arc::new(kept_origins)));
    }
}

impl<S> Service<McpRequest> for Policy<S>
where
    S: Service<McpRequest, Response = McpResponse, Error = BoxError>,
{
    type Response = McpResponse;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: McpRequest) -> Self::Future {
        match self.shared.pre(&mut req) {
            Pre::Answer(resp) => ResponseFuture::Ready { resp: Some(resp) },
            Pre::Forward(post) => ResponseFuture::Inner {
                fut: self.inner.call(req),
                post,
            },
        }
    }
}

pin_project! {
    /// The policy's response future: a refusal decided up front, or the inner call with list
    /// filtering on the way out.
    #[allow(missing_docs)]
    #[project = Proj]
    pub enum ResponseFuture<F> {
        /// Waiting for the inner service.
        Inner {
            #[pin]
            fut: F,
            post: Option<Box<ListPost>>,
        },
        /// Answered by the policy itself.
        Ready {
            resp: Option<McpResponse>,
        },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<McpResponse, BoxError>>,
{
    type Output = Result<McpResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Inner { fut, post } => match fut.poll(cx) {
                Poll::Ready(Ok(mut resp)) => {
                    if let Some(p) = post.take() {
                        p.apply(&mut resp);
                    }
                    Poll::Ready(Ok(resp))
                }
                other => other,
            },
            Proj::Ready { resp } => match resp.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => Poll::Ready(Err("policy response polled after completion".into())),
            },
        }
    }
}

// === ExposedNamesLayer ===

/// Maps renamed tool names back to the names the route layer knows. Place it before the core
/// route layer (only needed when `[[overrides]]` rename tools).
#[derive(Clone, Debug)]
pub struct ExposedNamesLayer {
    handle: PolicyHandle,
}

impl ExposedNamesLayer {
    /// A names layer over a policy handle.
    pub fn new(handle: PolicyHandle) -> Self {
        Self { handle }
    }
}

impl<S> Layer<S> for ExposedNamesLayer {
    type Service = ExposedNames<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ExposedNames {
            inner,
            shared: self.handle.shared.clone(),
        }
    }
}

/// See [`ExposedNamesLayer`].
#[derive(Clone, Debug)]
pub struct ExposedNames<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> ExposedNames<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, handle: &PolicyHandle) -> Self {
        Self {
            inner,
            shared: handle.shared.clone(),
        }
    }

    /// A layer for this service.
    pub fn layer(handle: PolicyHandle) -> ExposedNamesLayer {
        ExposedNamesLayer::new(handle)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<McpRequest> for ExposedNames<S>
where
    S: Service<McpRequest, Response = McpResponse, Error = BoxError>,
{
    type Response = McpResponse;
    type Error = BoxError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: McpRequest) -> Self::Future {
        if req.method == Method::ToolsCall {
            let renamed = self.shared.renamed.load();
            if !renamed.is_empty()
                && let Some(name) = req.name().map(str::to_string)
                && let Some(exposed) = renamed.get(&name)
            {
                req.params
                    .insert("name".into(), Value::String(exposed.clone()));
                req.ctx.extensions.insert(ClientToolName(name));
            }
        }
        self.inner.call(req)
    }
}

/// A convenience for tests and embedders: the [`Target`] of a feature.
pub fn target(server: &str, name: &str, exposed: &str) -> Target {
    Target {
        server: server.into(),
        name: Some(name.into()),
        exposed_name: Some(exposed.into()),
        instance: None,
    }
}

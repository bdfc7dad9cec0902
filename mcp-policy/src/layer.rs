//! The tower layers: [`PolicyLayer`] (after the core route layer) and [`ExposedNamesLayer`]
//! (before it, only needed when overrides rename tools).

use std::{
    borrow::Cow,
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::SystemTime,
};

use mcp_gateway_core::{
    Annotation, Annotations, BoxError, FeatureKind, Identity, ListFilter, ListOrigins, McpRequest,
    McpResponse, Method, Origin, SessionInfo, Target, codes, error, identity::AuthMethod,
    message::not_found,
};
use pin_project_lite::pin_project;
use serde_json::{Value, json};
use tower::{Layer, Service};

use crate::{
    engine::{Caller, Decision, Engine, LimitKey, Mode, Provisioned, kind_index},
    state::{Kills, PairSet, PolicyHandle, Shared},
};

/// `Retry-After` for the HTTP adapter: put on a rate-limited response's extensions (core's type,
/// which the Streamable HTTP adapter sends as the `Retry-After` header).
pub use mcp_gateway_core::RetryAfter;

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
    Forward(Option<Arc<ListPost>>),
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
    /// Entries the inner service left out because our [`ListFilter`] hid them.
    hidden_inside: AtomicUsize,
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
                && kills.tools.contains(&t.server, n)
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
            let key: Cow<'_, str> = match l.key {
                LimitKey::Identity => id.map_or(Cow::Borrowed("\u{0}anonymous"), |i| {
                    Cow::Borrowed(&*i.subject)
                }),
                LimitKey::ApiKey => match id {
                    Some(i) if i.auth_method == AuthMethod::ApiKey => {
                        Cow::Borrowed(i.token_id.as_deref().unwrap_or(&*i.subject))
                    }
                    _ => continue,
                },
                LimitKey::Origin => {
                    let o = &req.ctx.origin;
                    match (o.remote_addr, &o.origin) {
                        (Some(a), _) => Cow::Owned(a.ip().to_string()),
                        (None, Some(h)) => Cow::Borrowed(h.as_str()),
                        (None, None) => Cow::Borrowed("unknown"),
                    }
                }
                LimitKey::Tool => match target.and_then(|t| t.name.as_deref().map(|n| (t, n))) {
                    Some((t, n)) => Cow::Owned(format!("{}\u{0}{n}", t.server)),
                    None => continue,
                },
                LimitKey::Global => Cow::Borrowed(""),
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
            let engine = self.engine.load_full();
            if let Some(r) = self.rate_check(&engine, req) {
                return Pre::Answer(r);
            }
            let ctx = &req.ctx;
            let post = Arc::new(ListPost {
                shared: self.clone(),
                engine,
                identity: ctx.identity.clone(),
                session: ctx.session.clone(),
                origin: ctx.origin.clone(),
                method: req.method.clone(),
                annotations: ctx.annotations.clone(),
                hidden_inside: AtomicUsize::new(0),
            });
            // Lets dispatch copy only what this caller may see; the answer is filtered anyway.
            let filter = post.clone();
            req.ctx.extensions.insert(ListFilter(Arc::new(
                move |kind: FeatureKind, origins: &[Target]| {
                    let mut lister = filter.lister(kind);
                    let visible: Vec<bool> = origins.iter().map(|o| lister.visible(o)).collect();
                    let hidden = visible.iter().filter(|v| !**v).count();
                    filter.hidden_inside.store(hidden, Ordering::Relaxed);
                    visible
                },
            )));
            return Pre::Forward(Some(post));
        }
        let engine = self.engine.load();
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
        if req.ctx.target.is_none() && kind == FeatureKind::Tool {
            // The route layer could not resolve the name: it may be one of our renames.
            let shown = shown_name(req, kind);
            if let Some((server, original)) = engine.renamed_from(&shown) {
                req.ctx.target = Some(Target {
                    server: server.as_str().into(),
                    name: Some(original.clone()),
                    exposed_name: Some(shown.clone()),
                    instance: None,
                });
                req.params
                    .insert("name".into(), Value::String(original.clone()));
                req.ctx.extensions.insert(ClientToolName(shown));
            }
        }
        match self.judge_call(engine, req, kind) {
            CallOutcome::Allow { rule, rewrite_args } => {
                note(
                    &req.ctx.annotations,
                    format!("scope:{rule}"),
                    "allow",
                    "allowed by rule",
                );
                if rewrite_args {
                    override_args(engine, req);
                }
                None
            }
            CallOutcome::Hide { rule, reason } => {
                note(&req.ctx.annotations, rule, "hide", reason);
                if completion {
                    return Some(req.error(error(
                        codes::INVALID_PARAMS,
                        "Unknown completion reference",
                        None,
                    )));
                }
                Some(missing(req, kind, &shown_name(req, kind)))
            }
            CallOutcome::Refuse(rule) => {
                note(
                    &req.ctx.annotations,
                    format!("scope:{rule}"),
                    "deny",
                    "condition on arguments failed",
                );
                Some(req.error(error(
                    codes::POLICY_DENIED,
                    format!("Policy denied this call of `{}`", shown_name(req, kind)),
                    Some(json!({"rule": &*rule})),
                )))
            }
        }
    }

    /// The decision for a named feature, without touching the request.
    fn judge_call(&self, engine: &Engine, req: &McpRequest, kind: FeatureKind) -> CallOutcome {
        let hide = |rule: &'static str, reason: &'static str| CallOutcome::Hide {
            rule: Cow::Borrowed(rule),
            reason,
        };
        let Some(target) = req.ctx.target.as_ref() else {
            return hide("policy:no_target", "no route target; failing closed");
        };
        let name: Cow<'_, str> = match target.name.as_deref() {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Owned(shown_name(req, kind)),
        };
        let name = &*name;
        let server = &*target.server;
        let mode = engine.mode(kind, server);
        let approved = mode == Mode::AllowSelected && self.is_approved(kind, server, name);
        let provisioned = match mode {
            Mode::AllowAll => Provisioned::Yes,
            _ => engine.provisioned(kind, server, name, approved),
        };
        match provisioned {
            Provisioned::Yes => {}
            Provisioned::Pending => {
                self.pending(kind, server, name);
                return hide("provisioning:pending", "feature waits for approval");
            }
            Provisioned::No => return hide("provisioning:blocked", "feature is not provisioned"),
        }
        if kind == FeatureKind::Tool {
            let withheld = self.withheld.load();
            if !withheld.is_empty() && withheld.contains(server, name) {
                return hide(
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
                let o = (kind == FeatureKind::Tool)
                    .then(|| engine.override_for(server, name))
                    .flatten();
                if o.is_some_and(|o| o.rename.is_some())
                    && req.ctx.extensions.get::<ClientToolName>().is_none()
                {
                    return hide(
                        "override:renamed",
                        "the tool is only exposed under its new name",
                    );
                }
                CallOutcome::Allow {
                    rule,
                    rewrite_args: o.is_some_and(|o| !o.hide.is_empty()),
                }
            }
            Decision::Hide(rule) => CallOutcome::Hide {
                rule: Cow::Owned(
                    rule.map_or_else(|| "scope:none".to_string(), |r| format!("scope:{r}")),
                ),
                reason: "no rule allows this caller",
            },
            Decision::Refuse(rule) => CallOutcome::Refuse(rule),
        }
    }
}

/// What [`Shared::judge_call`] decided.
enum CallOutcome {
    Allow {
        rule: Arc<str>,
        /// The tool's override hides or pins arguments.
        rewrite_args: bool,
    },
    Hide {
        rule: Cow<'static, str>,
        reason: &'static str,
    },
    Refuse(Arc<str>),
}

/// The name the client used for the feature (for answers that must read like its own request).
fn shown_name(req: &McpRequest, kind: FeatureKind) -> String {
    if let Some(c) = req.ctx.extensions.get::<ClientToolName>() {
        return c.0.clone();
    }
    if let Some(n) = req
        .ctx
        .target
        .as_ref()
        .and_then(|t| t.exposed_name.as_ref())
    {
        return n.clone();
    }
    let own = if kind == FeatureKind::Tool || kind == FeatureKind::Prompt {
        req.name()
    } else {
        req.uri()
    };
    own.unwrap_or_default().to_string()
}

/// Removes hidden arguments and sets pinned ones, as the tool's override says.
fn override_args(engine: &Engine, req: &mut McpRequest) {
    let Some(t) = req.ctx.target.as_ref() else {
        return;
    };
    let Some(o) = t
        .name
        .as_deref()
        .and_then(|n| engine.override_for(&t.server, n))
    else {
        return;
    };
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

/// Per-server facts for one caller, computed once per list.
struct ServerView {
    mode: Mode,
    killed: bool,
    /// Rules that may apply here whose kind and subject selectors match the caller.
    rules: Vec<u32>,
}

/// Decides the visibility of list entries for one caller: kill switches, provisioning, pins and
/// rules, with the per-server and per-rule work done once per list, not once per entry.
struct Lister<'a> {
    shared: &'a Shared,
    engine: &'a Engine,
    caller: Caller<'a>,
    method: &'a Method,
    kind: FeatureKind,
    kills: arc_swap::Guard<Arc<Kills>>,
    withheld: arc_swap::Guard<Arc<PairSet>>,
    /// Whether each rule's subject selectors match the caller: 0 not yet known, 1 yes, 2 no.
    subject: Vec<u8>,
    views: Vec<ServerView>,
    by_server: HashMap<Arc<str>, usize>,
    last: Option<(Arc<str>, usize)>,
}

impl Lister<'_> {
    fn view(&mut self, server: &Arc<str>) -> usize {
        if let Some((s, i)) = &self.last
            && s == server
        {
            return *i;
        }
        let i = match self.by_server.get(&**server) {
            Some(i) => *i,
            None => {
                let view = self.make_view(server);
                self.views.push(view);
                let i = self.views.len() - 1;
                self.by_server.insert(server.clone(), i);
                i
            }
        };
        self.last = Some((server.clone(), i));
        i
    }

    fn make_view(&mut self, server: &str) -> ServerView {
        let engine = self.engine;
        let bit = 1u8 << kind_index(self.kind);
        let mut rules = Vec::new();
        for i in engine.rules_for(server) {
            let r = &engine.rules[i];
            if r.kinds & bit == 0 {
                continue;
            }
            let known = self.subject.get(i).copied().unwrap_or(2);
            let matches = if known == 0 {
                let m = Engine::subject_matches(r, &self.caller);
                if let Some(slot) = self.subject.get_mut(i) {
                    *slot = if m { 1 } else { 2 };
                }
                m
            } else {
                known == 1
            };
            if matches {
                rules.push(i as u32);
            }
        }
        ServerView {
            mode: engine.mode(self.kind, server),
            killed: self.kills.any && self.kills.servers.contains(server),
            rules,
        }
    }

    /// Whether the caller may see this entry (pins as last observed).
    fn visible(&mut self, o: &Target) -> bool {
        let v = self.view(&o.server);
        let view = &self.views[v];
        if view.killed {
            return false;
        }
        let (server, name) = (&*o.server, o.name.as_deref().unwrap_or(""));
        let tool = self.kind == FeatureKind::Tool;
        if tool && self.kills.any && self.kills.tools.contains(server, name) {
            return false;
        }
        match view.mode {
            Mode::AllowAll => {}
            Mode::BlockAll => return false,
            Mode::AllowSelected => {
                let approved = self.shared.is_approved(self.kind, server, name);
                match self.engine.provisioned(self.kind, server, name, approved) {
                    Provisioned::Yes => {}
                    Provisioned::Pending => {
                        self.shared.pending(self.kind, server, name);
                        return false;
                    }
                    Provisioned::No => return false,
                }
            }
        }
        if tool && !self.withheld.is_empty() && self.withheld.contains(server, name) {
            return false;
        }
        matches!(
            self.engine.decide_among(
                view.rules.iter().map(|&i| i as usize),
                &self.caller,
                self.method,
                self.kind,
                server,
                name,
                None,
            ),
            Decision::Allow(_)
        )
    }
}

impl ListPost {
    fn lister(&self, kind: FeatureKind) -> Lister<'_> {
        let shared = &*self.shared;
        Lister {
            shared,
            engine: &self.engine,
            caller: Caller {
                identity: self.identity.as_deref(),
                session: Some(&self.session),
                origin: Some(&self.origin),
                now_unix: now_unix(),
            },
            method: &self.method,
            kind,
            kills: shared.kills.load(),
            withheld: shared.withheld.load(),
            subject: vec![0; self.engine.rules.len()],
            views: Vec::new(),
            by_server: HashMap::new(),
            last: None,
        }
    }

    fn apply(&self, resp: &mut McpResponse) {
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
        let mut visible: Vec<bool> = {
            let mut lister = self.lister(kind);
            origins.iter().map(|o| lister.visible(o)).collect()
        };
        if kind == FeatureKind::Tool {
            // Pins and threat checks of what this caller is about to see; a definition that
            // changed since it was last seen may be withheld now.
            shared.observe_tools(
                engine,
                origins
                    .iter()
                    .zip(items.iter())
                    .zip(&visible)
                    .filter(|(_, v)| **v)
                    .map(|(p, _)| p),
            );
            let withheld = shared.withheld.load();
            if !withheld.is_empty() {
                for (v, o) in visible.iter_mut().zip(origins.iter()) {
                    if *v && withheld.contains(&o.server, o.name.as_deref().unwrap_or("")) {
                        *v = false;
                    }
                }
            }
        }
        let shown = visible.iter().filter(|v| **v).count();
        let hidden = items.len() - shown + self.hidden_inside.load(Ordering::Relaxed);
        let mut keep = Vec::with_capacity(shown);
        let mut kept_origins = Vec::with_capacity(shown);
        let mut renames = Vec::new();
        for ((mut item, o), _) in std::mem::take(items)
            .into_iter()
            .zip(origins.iter())
            .zip(&visible)
            .filter(|(_, v)| **v)
        {
            let server = &*o.server;
            let name = o.name.as_deref().unwrap_or("");
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
                && o.exposed_name.as_deref() != Some(n)
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
            post: Option<Arc<ListPost>>,
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

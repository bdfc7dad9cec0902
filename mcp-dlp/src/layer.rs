//! The DLP tower layer: scans requests, responses and the reverse path.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use async_trait::async_trait;
use mcp_gateway_core::{
    Annotation, Annotations, BoxError, Direction, Downstream, ErrorData, McpRequest, McpResponse,
    Method, ServerMessage, codes, error,
};
use pin_project_lite::pin_project;
use serde_json::{Map, Value, json};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    action::{Rule, Scope},
    external::{EngineRule, Inspection, Verdict},
    injection::InjectionReport,
    scan::{Block, Finding, Report, Scanner},
};

/// What DLP found in a response (kinds and counts, never data), put in
/// [`McpResponse::extensions`] so outer layers (policy) can act on it, e.g. on the
/// prompt-injection score.
#[derive(Debug, Clone, Default)]
pub struct DlpReport {
    /// Findings in the response direction.
    pub findings: Vec<Finding>,
    /// Prompt-injection signals and score of the response content.
    pub injection: InjectionReport,
}

pub(crate) struct Shared {
    pub(crate) scanner: Scanner,
    pub(crate) engines: Vec<EngineRule>,
}

// === impl DlpLayer ===

/// Applies DLP to an MCP-level service: see [`Dlp`].
#[derive(Clone)]
pub struct DlpLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for DlpLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DlpLayer")
            .field("detectors", self.shared.scanner.detectors())
            .field("rules", &self.shared.scanner.rules.len())
            .field("engines", &self.shared.engines)
            .finish()
    }
}

impl Default for DlpLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl DlpLayer {
    /// All built-in detectors, matches redacted, injection heuristics warning.
    pub fn new() -> Self {
        Self::with_scanner(Scanner::default())
    }

    /// A layer around a configured [`Scanner`].
    pub fn with_scanner(scanner: Scanner) -> Self {
        Self {
            shared: Arc::new(Shared {
                scanner,
                engines: Vec::new(),
            }),
        }
    }

    fn edit(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Shared {
            scanner: self.shared.scanner.clone(),
            engines: self.shared.engines.clone(),
        };
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Adds a rule.
    #[must_use]
    pub fn rule(self, rule: Rule) -> Self {
        self.edit(|s| s.scanner = s.scanner.clone().rule(rule))
    }

    /// Replaces the scanner.
    #[must_use]
    pub fn scanner(self, scanner: Scanner) -> Self {
        self.edit(|s| s.scanner = scanner)
    }

    /// Adds an external engine (run after the built-in detectors, in order).
    #[must_use]
    pub fn engine(self, engine: EngineRule) -> Self {
        self.edit(|s| s.engines.push(engine))
    }

    /// The scanner (e.g. to build a [`Redactor`](crate::Redactor) sharing it).
    pub fn get_scanner(&self) -> &Scanner {
        &self.shared.scanner
    }
}

impl<S> Layer<S> for DlpLayer {
    type Service = Dlp<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Dlp {
            inner,
            shared: self.shared.clone(),
        }
    }
}

// === impl Dlp ===

/// Scans every message: request params on the way in, the result on the way out, and what the
/// upstream sends back through `ctx.downstream` (progress, logs, sampling and elicitation
/// requests and their answers). Findings are recorded on `ctx.annotations` as
/// [`Annotation::Dlp`]; a block answers [`codes::DLP_BLOCKED`] naming the rule.
#[derive(Clone)]
pub struct Dlp<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for Dlp<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dlp")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Dlp<S> {
    /// Wraps `inner` with the layer's configuration.
    pub fn new(inner: S, layer: &DlpLayer) -> Self {
        layer.layer(inner)
    }

    /// A layer with the built-in defaults.
    pub fn layer() -> DlpLayer {
        DlpLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn scans_request(m: &Method) -> bool {
    !matches!(
        m,
        Method::Initialize
            | Method::Initialized
            | Method::Ping
            | Method::Discover
            | Method::ToolsList
            | Method::PromptsList
            | Method::ResourcesList
            | Method::ResourceTemplatesList
            | Method::ResourcesSubscribe
            | Method::ResourcesUnsubscribe
            | Method::SubscriptionsListen
            | Method::SetLevel
            | Method::Cancelled
            | Method::RootsListChanged
    )
}

fn scans_response(m: &Method) -> bool {
    scans_request(m) && !matches!(m, Method::Progress)
}

/// Records a report's findings on the annotations.
pub(crate) fn record(annotations: &Annotations, direction: Direction, report: &Report) {
    for f in &report.findings {
        annotations.push(Annotation::Dlp {
            detector: f.kind.to_string(),
            direction,
            count: f.count,
            action: f.action,
        });
    }
    if !report.injection.is_empty() {
        annotations.push(Annotation::Other {
            key: "dlp.injection",
            value: json!({
                "direction": direction,
                "score": report.injection.score,
                "signals": report.injection.signals.iter().map(|s| s.name()).collect::<Vec<_>>(),
            }),
        });
    }
}

pub(crate) fn blocked_error(block: &Block, direction: Direction) -> ErrorData {
    error(
        codes::DLP_BLOCKED,
        block.message.clone(),
        Some(json!({
            "rule": block.rule,
            "detector": block.kind,
            "direction": direction,
        })),
    )
}

/// Per-message data the response half needs.
struct Post {
    shared: Arc<Shared>,
    server: Option<Arc<str>>,
    tool: Option<String>,
    annotations: Annotations,
    scan: bool,
}

impl Post {
    fn scope(&self, direction: Direction) -> Scope<'_> {
        Scope {
            direction,
            server: self.server.as_deref(),
            tool: self.tool.as_deref(),
        }
    }

    fn finish(&self, mut res: McpResponse) -> McpResponse {
        if !self.scan {
            return res;
        }
        let scope = self.scope(Direction::Response);
        let report = match &mut res.body {
            Ok(v) => self.shared.scanner.scan_value(v, &scope),
            Err(e) => {
                let mut r = Report::default();
                let msg = self.shared.scanner.scan_str(&e.message, &scope, &mut r);
                if let std::borrow::Cow::Owned(m) = msg {
                    e.message = m.into();
                }
                if let Some(d) = &mut e.data {
                    r.merge(self.shared.scanner.scan_value(d, &scope));
                }
                r
            }
        };
        if report.is_clean() {
            return res;
        }
        record(&self.annotations, Direction::Response, &report);
        if let Some(block) = &report.block {
            res.body = Err(blocked_error(block, Direction::Response));
        }
        res.extensions.insert(DlpReport {
            findings: report.findings,
            injection: report.injection,
        });
        res
    }
}

impl<S> Service<McpRequest> for Dlp<S>
where
    S: Service<McpRequest, Response = McpResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = McpResponse;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: McpRequest) -> Self::Future {
        let shared = self.shared.clone();
        let server = req.ctx.target.as_ref().map(|t| t.server.clone());
        let tool = req.ctx.target.as_ref().and_then(|t| t.name.clone());
        let annotations = req.ctx.annotations.clone();
        if let Some(down) = req.ctx.downstream.take() {
            req.ctx.downstream = Some(Arc::new(DlpDownstream {
                inner: down,
                shared: shared.clone(),
                server: server.clone(),
                tool: tool.clone(),
                annotations: annotations.clone(),
            }));
        }
        if scans_request(&req.method) {
            let scope = Scope {
                direction: Direction::Request,
                server: server.as_deref(),
                tool: tool.as_deref(),
            };
            let report = shared.scanner.scan_params(&mut req.params, &scope);
            if !report.is_clean() {
                record(&annotations, Direction::Request, &report);
                if let Some(block) = &report.block {
                    let res = req.error(blocked_error(block, Direction::Request));
                    return ResponseFuture::blocked(res);
                }
            }
        }
        let post = Post {
            shared: shared.clone(),
            server,
            tool,
            annotations,
            scan: scans_response(&req.method),
        };
        if shared.engines.is_empty() {
            return ResponseFuture::inner(self.inner.call(req), post);
        }
        // external engines are async: take the ready inner service and run it in a boxed future
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::boxed(Box::pin(async move {
            if scans_request(&req.method) {
                let method = req.method.as_str().to_string();
                let scope = post.scope(Direction::Request);
                let (server, tool) = (
                    scope.server.map(str::to_string),
                    scope.tool.map(str::to_string),
                );
                if let Some(block) = run_engines_params(
                    &post.shared,
                    Direction::Request,
                    &method,
                    server,
                    tool,
                    &mut req.params,
                    &post.annotations,
                )
                .await
                {
                    return Ok(req.error(blocked_error(&block, Direction::Request)));
                }
            }
            let scan = post.scan;
            let method = req.method.as_str().to_string();
            let res = inner.call(req).await?;
            let mut res = post.finish(res);
            if scan && let Ok(v) = &mut res.body {
                let server = post.server.as_deref().map(str::to_string);
                if let Some(block) = run_engines(
                    &post.shared,
                    Direction::Response,
                    &method,
                    server,
                    post.tool.clone(),
                    v,
                    &post.annotations,
                )
                .await
                {
                    res.body = Err(blocked_error(&block, Direction::Response));
                }
            }
            Ok(res)
        }))
    }
}

/// Runs the engines that apply over `content`; returns a block if one refused.
pub(crate) async fn run_engines(
    shared: &Shared,
    direction: Direction,
    method: &str,
    server: Option<String>,
    tool: Option<String>,
    content: &mut Value,
    annotations: &Annotations,
) -> Option<Block> {
    let applicable: Vec<&EngineRule> = shared
        .engines
        .iter()
        .filter(|e| e.applies(direction, server.as_deref(), tool.as_deref()))
        .collect();
    if applicable.is_empty() {
        return None;
    }
    let mut inspection = Inspection {
        direction,
        method: method.to_string(),
        server,
        tool,
        content: std::mem::take(content),
    };
    let mut block = None;
    for rule in applicable {
        let (verdict, err) = rule.run(&inspection).await;
        if let Some(e) = &err {
            tracing::warn!(engine = rule.name(), error = %e, "DLP engine failed");
            annotations.push(Annotation::Other {
                key: "dlp.engine_error",
                value: json!({"engine": rule.name(), "error": e.to_string(), "fail": rule.fail}),
            });
        }
        let detector = format!("engine:{}", rule.name());
        match verdict {
            Verdict::Pass => {}
            Verdict::Modify { content } => {
                annotations.push(Annotation::Dlp {
                    detector,
                    direction,
                    count: 1,
                    action: "replace",
                });
                inspection.content = content;
            }
            Verdict::Block { reason } => {
                annotations.push(Annotation::Dlp {
                    detector: detector.clone(),
                    direction,
                    count: 1,
                    action: "block",
                });
                let reason = reason.unwrap_or_else(|| "refused".into());
                block = Some(Block {
                    rule: detector,
                    kind: None,
                    message: format!("blocked by DLP rule `engine:{}`: {reason}", rule.name()),
                });
                break;
            }
        }
    }
    *content = inspection.content;
    block
}

/// [`run_engines`] over a params object, without its `_meta`.
async fn run_engines_params(
    shared: &Shared,
    direction: Direction,
    method: &str,
    server: Option<String>,
    tool: Option<String>,
    params: &mut Map<String, Value>,
    annotations: &Annotations,
) -> Option<Block> {
    if shared.engines.is_empty() {
        return None;
    }
    let meta = params.remove("_meta");
    let mut content = Value::Object(std::mem::take(params));
    let block = run_engines(
        shared,
        direction,
        method,
        server,
        tool,
        &mut content,
        annotations,
    )
    .await;
    if let Value::Object(m) = content {
        *params = m;
    }
    if let Some(meta) = meta {
        params.insert("_meta".into(), meta);
    }
    block
}

// === impl ResponseFuture ===

pin_project! {
    /// The future of [`Dlp`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = Proj]
    enum State<F> {
        // Blocked before reaching the inner service.
        Blocked { response: Option<McpResponse> },
        // Waiting for the inner service; the response is scanned when it arrives.
        Inner { #[pin] fut: F, post: Option<Post> },
        // External engines are configured: the whole exchange runs in one boxed future.
        Boxed { fut: Pin<Box<dyn Future<Output = Result<McpResponse, BoxError>> + Send>> },
    }
}

impl<F> ResponseFuture<F> {
    fn blocked(res: McpResponse) -> Self {
        Self {
            state: State::Blocked {
                response: Some(res),
            },
        }
    }

    fn inner(fut: F, post: Post) -> Self {
        Self {
            state: State::Inner {
                fut,
                post: Some(post),
            },
        }
    }

    fn boxed(fut: Pin<Box<dyn Future<Output = Result<McpResponse, BoxError>> + Send>>) -> Self {
        Self {
            state: State::Boxed { fut },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match &self.state {
            State::Blocked { .. } => "ResponseFuture::Blocked",
            State::Inner { .. } => "ResponseFuture::Inner",
            State::Boxed { .. } => "ResponseFuture::Boxed",
        })
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<McpResponse, BoxError>>,
{
    type Output = Result<McpResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Proj::Blocked { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => Poll::Ready(Err("DLP response future polled after completion".into())),
            },
            Proj::Inner { fut, post } => {
                let res = ready!(fut.poll(cx))?;
                match post.take() {
                    Some(post) => Poll::Ready(Ok(post.finish(res))),
                    None => Poll::Ready(Err("DLP response future polled after completion".into())),
                }
            }
            Proj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}

// === impl DlpDownstream ===

/// Wraps the reverse path so what upstreams send to the client is scanned too.
struct DlpDownstream {
    inner: Arc<dyn Downstream>,
    shared: Arc<Shared>,
    server: Option<Arc<str>>,
    tool: Option<String>,
    annotations: Annotations,
}

impl DlpDownstream {
    fn scope<'a>(&'a self, msg_server: Option<&'a str>, direction: Direction) -> Scope<'a> {
        Scope {
            direction,
            server: msg_server.or(self.server.as_deref()),
            tool: self.tool.as_deref(),
        }
    }

    /// Scans a server message's params (response direction); returns a block if refused.
    async fn check_message(&self, msg: &mut ServerMessage) -> Option<Block> {
        let server = msg.server.clone();
        let report = {
            let scope = self.scope(server.as_deref(), Direction::Response);
            self.shared.scanner.scan_params(&mut msg.params, &scope)
        };
        if !report.is_clean() {
            record(&self.annotations, Direction::Response, &report);
            if let Some(b) = report.block {
                return Some(b);
            }
        }
        let server = server
            .as_deref()
            .or(self.server.as_deref())
            .map(str::to_string);
        run_engines_params(
            &self.shared,
            Direction::Response,
            &msg.method,
            server,
            self.tool.clone(),
            &mut msg.params,
            &self.annotations,
        )
        .await
    }
}

#[async_trait]
impl Downstream for DlpDownstream {
    async fn notify(&self, mut message: ServerMessage) -> Result<(), BoxError> {
        if let Some(block) = self.check_message(&mut message).await {
            // a blocked notification is dropped: the client never sees it
            tracing::debug!(rule = %block.rule, method = %message.method, "DLP dropped a notification");
            return Ok(());
        }
        self.inner.notify(message).await
    }

    async fn request(
        &self,
        mut message: ServerMessage,
    ) -> Result<Result<Value, ErrorData>, BoxError> {
        if let Some(block) = self.check_message(&mut message).await {
            return Ok(Err(blocked_error(&block, Direction::Response)));
        }
        let server = message.server.clone();
        let method = message.method.clone();
        let answer = self.inner.request(message).await?;
        let mut value = match answer {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        // the client's answer (e.g. a sampled completion) travels towards the upstream
        let report = {
            let scope = self.scope(server.as_deref(), Direction::Request);
            self.shared.scanner.scan_value(&mut value, &scope)
        };
        if !report.is_clean() {
            record(&self.annotations, Direction::Request, &report);
            if let Some(b) = &report.block {
                return Ok(Err(blocked_error(b, Direction::Request)));
            }
        }
        let server = server
            .as_deref()
            .or(self.server.as_deref())
            .map(str::to_string);
        if let Some(b) = run_engines(
            &self.shared,
            Direction::Request,
            &method,
            server,
            self.tool.clone(),
            &mut value,
            &self.annotations,
        )
        .await
        {
            return Ok(Err(blocked_error(&b, Direction::Request)));
        }
        Ok(Ok(value))
    }
}

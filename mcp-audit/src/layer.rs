//! The audit layer: one event per MCP message in both directions.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use async_trait::async_trait;
use futures::future::BoxFuture;
use mcp_gateway_core::{
    Annotation, Annotations, BoxError, Direction, Downstream, ErrorData, McpRequest, McpResponse,
    ServerMessage, Target, TraceContext, codes,
};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    AuditEvent, Auditor, Leg, LegSpans, MessageKind, Submitted,
    scrub::{NoScrub, SharedScrubber},
    tokens::TokenCounter,
};

/// When the layer releases a call's answer to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// As soon as the answer's record is queued (or spilled). Fastest; a `kill -9` loses what is
    /// still queued.
    Queued,
    /// Only after the durable sink (the JSON-lines file) has written the answer's record to the
    /// OS: after a `kill -9` every call a client saw answered has its record. The wait is one
    /// batched `write(2)` (group commit), plus an fsync with `fsync = "always"`.
    #[default]
    Written,
}

#[derive(Clone)]
struct Settings {
    auditor: Auditor,
    gateway: Option<Arc<str>>,
    scrubber: SharedScrubber,
    tokens: Option<TokenCounter>,
    durability: Durability,
    record_arguments: bool,
    propagate_trace: bool,
}

// === impl AuditLayer ===

/// Records every message passing through (requests, answers, and reverse-path messages through
/// a wrapped [`Downstream`]), and propagates W3C trace context to upstreams.
#[derive(Clone)]
pub struct AuditLayer {
    settings: Arc<Settings>,
}

impl std::fmt::Debug for AuditLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLayer")
            .field("auditor", &self.settings.auditor)
            .field("durability", &self.settings.durability)
            .finish_non_exhaustive()
    }
}

impl AuditLayer {
    /// A layer that submits events to `auditor`, with token counts (when the `tokenizer` feature
    /// is on), no scrubbing, `Durability::Written`, and trace propagation on.
    pub fn new(auditor: Auditor) -> Self {
        Self {
            settings: Arc::new(Settings {
                auditor,
                gateway: None,
                scrubber: Arc::new(NoScrub),
                tokens: TokenCounter::o200k(),
                durability: Durability::default(),
                record_arguments: true,
                propagate_trace: true,
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(Arc::make_mut(&mut self.settings));
        self
    }

    /// The gateway name recorded when the context's origin names none.
    #[must_use]
    pub fn gateway(self, name: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        self.with(|s| s.gateway = Some(name))
    }

    /// The scrubber for recorded arguments and error messages (connect the DLP redactor here).
    #[must_use]
    pub fn scrubber(self, scrubber: SharedScrubber) -> Self {
        self.with(|s| s.scrubber = scrubber)
    }

    /// Turns token estimates on (`Some`) or off.
    #[must_use]
    pub fn tokens(self, counter: Option<TokenCounter>) -> Self {
        self.with(|s| s.tokens = counter)
    }

    /// When answers are released.
    #[must_use]
    pub fn durability(self, durability: Durability) -> Self {
        self.with(|s| s.durability = durability)
    }

    /// Whether arguments are recorded at all (scrubbed).
    #[must_use]
    pub fn record_arguments(self, on: bool) -> Self {
        self.with(|s| s.record_arguments = on)
    }

    /// Whether `_meta.traceparent` is set on requests going inward.
    #[must_use]
    pub fn propagate_trace(self, on: bool) -> Self {
        self.with(|s| s.propagate_trace = on)
    }

    /// The auditor.
    pub fn auditor(&self) -> &Auditor {
        &self.settings.auditor
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit {
            inner,
            settings: self.settings.clone(),
        }
    }
}

// === impl Audit ===

/// The service [`AuditLayer`] produces.
#[derive(Clone)]
pub struct Audit<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Audit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Audit<S> {
    /// Wraps a service with the layer's settings.
    pub fn new(inner: S, layer: &AuditLayer) -> Self {
        layer.layer(inner)
    }

    /// A layer (same as [`AuditLayer::new`]).
    pub fn layer(auditor: Auditor) -> AuditLayer {
        AuditLayer::new(auditor)
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

impl Settings {
    fn scrubbed(&self, value: &Value) -> Value {
        let mut v = value.clone();
        self.scrubber.scrub(&mut v);
        v
    }

    fn count_tokens(&self, value: &Value) -> Option<u64> {
        self.tokens.as_ref().map(|t| t.count_value(value))
    }
}

/// Size of a value's compact JSON, without allocating it.
fn json_len<T: Serialize + ?Sized>(value: &T) -> u64 {
    struct Counter(u64);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

/// JSON-RPC envelope overhead (`{"jsonrpc":"2.0","id":..,"method":"..","params":}`), roughly.
fn envelope_len(method: &str, id: Option<&Value>) -> u64 {
    40 + method.len() as u64 + id.map_or(0, json_len)
}

impl<S> Service<McpRequest> for Audit<S>
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
        let settings = &self.settings;
        let received_at = req.ctx.received_at;
        let mut client_span = req.ctx.trace;
        // A client may carry its trace context in `_meta.traceparent` instead of the header.
        if client_span.parent_span_id.is_none()
            && let Some(tc) = req
                .meta()
                .and_then(|m| m.get("traceparent"))
                .and_then(Value::as_str)
                .and_then(TraceContext::from_traceparent)
        {
            client_span = tc;
            req.ctx.trace = tc;
        }
        let upstream_span = client_span.child();
        let spans = LegSpans {
            caller: client_span.parent_span_id.map(|p| {
                TraceContext {
                    span_id: p,
                    ..client_span
                }
                .span_id_hex()
            }),
            client_to_gateway: client_span.span_id_hex(),
            gateway_to_upstream: upstream_span.span_id_hex(),
            upstream_to_gateway: upstream_span.child().span_id_hex(),
            gateway_to_client: client_span.child().span_id_hex(),
        };
        let is_notification = req.is_notification();
        let kind = if is_notification {
            MessageKind::Notification
        } else {
            MessageKind::Request
        };
        let mut event = AuditEvent::new(
            req.method.as_str(),
            Direction::Request,
            kind,
            Leg::ClientToGateway,
        );
        event.fill_context(&req.ctx, settings.gateway.as_ref());
        event.fill_request(&req);
        event.trace_id = client_span.trace_id_hex();
        event.span_id = spans.client_to_gateway.clone();
        event.parent_span_id = spans.caller.clone();
        event.spans = spans;
        event.bytes_in = Some(
            json_len(&req.params) + envelope_len(req.method.as_str(), event.request_id.as_ref()),
        );
        event.tokens_in = settings
            .tokens
            .as_ref()
            .map(|t| t.count_object(&req.params));
        if settings.record_arguments
            && let Some(args) = req.params.get("arguments")
        {
            event.arguments = Some(settings.scrubbed(args));
        }

        // The response template: everything but what the answer brings.
        let mut template = event.clone();
        template.arguments = None;

        // Propagate the upstream leg's trace context inward (dispatch also sends it as the HTTP
        // `traceparent` header from `ctx.trace`).
        if settings.propagate_trace {
            req.ctx.trace = upstream_span;
            let tp = Value::String(upstream_span.traceparent());
            match req.params.get_mut("_meta") {
                Some(Value::Object(meta)) => {
                    meta.insert("traceparent".into(), tp);
                }
                Some(_) => {}
                None => {
                    let mut meta = serde_json::Map::new();
                    meta.insert("traceparent".into(), tp);
                    req.params.insert("_meta".into(), Value::Object(meta));
                }
            }
        }
        if let Some(ds) = req.ctx.downstream.take() {
            req.ctx.downstream = Some(Arc::new(AuditDownstream {
                inner: ds,
                settings: self.settings.clone(),
                template: Arc::new(template.clone()),
                trace: upstream_span,
            }));
        }
        let annotations = req.ctx.annotations.clone();
        let admit = match settings.auditor.submit(event, false) {
            Submitted::Done => None,
            Submitted::Wait(w) => Some(w),
        };
        let pending = (!is_notification).then(|| {
            Box::new(Pending {
                settings: self.settings.clone(),
                template,
                annotations,
                received_at,
            })
        });
        ResponseFuture {
            inner: self.inner.call(req),
            admit,
            pending,
            record: None,
            output: None,
        }
    }
}

struct Pending {
    settings: Arc<Settings>,
    template: AuditEvent,
    annotations: Annotations,
    received_at: Instant,
}

impl Pending {
    fn finish(self, out: &Result<McpResponse, BoxError>) -> Submitted {
        let Self {
            settings,
            template,
            annotations,
            received_at,
        } = self;
        let mut ev = template;
        let now = std::time::SystemTime::now();
        ev.ts_ms = mcp_gateway_core::message::unix_millis(now);
        ev.timestamp = crate::time::format_rfc3339_millis(ev.ts_ms);
        ev.event_id = crate::event::random_hex16();
        ev.direction = Direction::Response;
        ev.kind = MessageKind::Response;
        ev.leg = Leg::GatewayToClient;
        ev.span_id = ev.spans.gateway_to_client.clone();
        ev.parent_span_id = Some(ev.spans.client_to_gateway.clone());
        let annotations = annotations.snapshot();
        apply_target(
            &mut ev,
            &annotations,
            out.as_ref().ok().and_then(|r| r.extensions.get::<Target>()),
        );
        ev.fill_annotations(&annotations);
        ev.total_latency_ms = Some(received_at.elapsed().as_secs_f64() * 1000.0);
        match out {
            Ok(resp) => {
                let id = ev.request_id.clone();
                match &resp.body {
                    Ok(result) => {
                        ev.status = Some("ok".into());
                        if let Some(message) = tool_error(result) {
                            // A tool that failed answers with a result, not a JSON-RPC error:
                            // it is a failed call all the same (no error code).
                            ev.status = Some("error".into());
                            ev.error_message = Some(settings.scrubber.scrub_text(&message));
                        }
                        ev.bytes_out = Some(json_len(result) + envelope_len("", id.as_ref()));
                        ev.tokens_out = settings.count_tokens(result);
                    }
                    Err(err) => fill_error(&settings, &mut ev, err, id.as_ref()),
                }
            }
            Err(e) => {
                ev.status = Some("error".into());
                ev.error_code = Some(codes::INTERNAL_ERROR);
                ev.error_message = Some(settings.scrubber.scrub_text(&e.to_string()));
            }
        }
        settings
            .auditor
            .submit(ev, settings.durability == Durability::Written)
    }
}

/// The longest tool error text kept in a record's `error_message`.
const TOOL_ERROR_MAX: usize = 256;

/// For a `tools/call` result with `isError: true`: its first text content (at most
/// [`TOOL_ERROR_MAX`] bytes, cut at a character boundary), or `"tool error"`.
fn tool_error(result: &Value) -> Option<String> {
    if result.get("isError").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let text = result
        .get("content")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find_map(|b| b.get("text").and_then(Value::as_str)))
        .unwrap_or("tool error");
    let mut end = text.len().min(TOOL_ERROR_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_owned())
}

fn fill_error(settings: &Settings, ev: &mut AuditEvent, err: &ErrorData, id: Option<&Value>) {
    ev.status = Some("error".into());
    ev.error_code = Some(err.code.0);
    ev.error_message = Some(settings.scrubber.scrub_text(&err.message));
    ev.bytes_out = Some(json_len(err) + envelope_len("", id));
    ev.tokens_out = settings.count_tokens(&Value::String(err.message.to_string()));
}

/// The route layer runs inside audit, so the target comes back through an annotation
/// (`Annotation::Other { key: "target", value: {"server":..,"name":..,"instance":..} }`) or a
/// `Target` in the response extensions; `Annotation::Upstream` also names the server.
fn apply_target(ev: &mut AuditEvent, annotations: &[Annotation], target: Option<&Target>) {
    if let Some(t) = target {
        ev.server = Some(t.server.to_string());
        if let Some(i) = &t.instance {
            ev.instance = Some(i.to_string());
        }
    }
    for a in annotations {
        if let Annotation::Other {
            key: "target",
            value,
        } = a
        {
            if let Some(s) = value.get("server").and_then(Value::as_str) {
                ev.server = Some(s.to_owned());
            }
            if let Some(i) = value.get("instance").and_then(Value::as_str) {
                ev.instance = Some(i.to_owned());
            }
        }
    }
}

// === impl ResponseFuture ===

pin_project! {
    /// The future of [`Audit`]: waits for room in the queue for the request's record (only with
    /// `Overflow::Block` and a full queue), runs the inner call, records the answer and, with
    /// [`Durability::Written`], waits until the record is written.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        admit: Option<BoxFuture<'static, ()>>,
        pending: Option<Box<Pending>>,
        record: Option<BoxFuture<'static, ()>>,
        output: Option<Result<McpResponse, BoxError>>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<McpResponse, BoxError>>,
{
    type Output = Result<McpResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(admit) = this.admit.as_mut() {
            ready!(admit.as_mut().poll(cx));
            *this.admit = None;
        }
        if this.output.is_none() {
            let out = ready!(this.inner.as_mut().poll(cx));
            if let Some(pending) = this.pending.take()
                && let Submitted::Wait(w) = pending.finish(&out)
            {
                *this.record = Some(w);
            }
            *this.output = Some(out);
        }
        if let Some(record) = this.record.as_mut() {
            ready!(record.as_mut().poll(cx));
            *this.record = None;
        }
        Poll::Ready(
            this.output
                .take()
                .unwrap_or_else(|| Err("audit ResponseFuture polled after completion".into())),
        )
    }
}

// === impl AuditDownstream ===

/// Wraps the reverse path so notifications and server-to-client requests (and the client's
/// answers to them) are recorded too.
struct AuditDownstream {
    inner: Arc<dyn Downstream>,
    settings: Arc<Settings>,
    template: Arc<AuditEvent>,
    trace: TraceContext,
}

impl AuditDownstream {
    fn event(
        &self,
        message: &ServerMessage,
        kind: MessageKind,
        direction: Direction,
        leg: Leg,
    ) -> AuditEvent {
        let mut ev = (*self.template).clone();
        let fresh = AuditEvent::new(message.method.clone(), direction, kind, leg);
        ev.timestamp = fresh.timestamp;
        ev.ts_ms = fresh.ts_ms;
        ev.event_id = fresh.event_id;
        ev.method = fresh.method;
        ev.direction = direction;
        ev.kind = kind;
        ev.leg = leg;
        ev.feature_kind = None;
        ev.feature = None;
        // The message's own id is the upstream's; the trace and session link it to the call.
        ev.request_id = None;
        ev.bytes_in = None;
        ev.tokens_in = None;
        let span = self.trace.child();
        ev.span_id = span.span_id_hex();
        ev.parent_span_id = Some(self.trace.span_id_hex());
        if let Some(s) = &message.server {
            ev.server = Some(s.to_string());
        }
        ev
    }
}

#[async_trait]
impl Downstream for AuditDownstream {
    async fn notify(&self, message: ServerMessage) -> Result<(), BoxError> {
        let mut ev = self.event(
            &message,
            MessageKind::Notification,
            Direction::Response,
            Leg::GatewayToClient,
        );
        ev.bytes_out = Some(json_len(&message.params) + envelope_len(&message.method, None));
        ev.tokens_out = self
            .settings
            .tokens
            .as_ref()
            .map(|t| t.count_object(&message.params));
        if self.settings.record_arguments {
            let mut params = Value::Object(message.params.clone());
            self.settings.scrubber.scrub(&mut params);
            ev.arguments = Some(params);
        }
        let started = Instant::now();
        let out = self.inner.notify(message).await;
        ev.total_latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        ev.status = Some(if out.is_ok() { "ok" } else { "error" }.into());
        self.settings.auditor.record(ev, false).await;
        out
    }

    async fn request(&self, message: ServerMessage) -> Result<Result<Value, ErrorData>, BoxError> {
        let mut ev = self.event(
            &message,
            MessageKind::Request,
            Direction::Response,
            Leg::GatewayToClient,
        );
        ev.bytes_out = Some(json_len(&message.params) + envelope_len(&message.method, None));
        ev.tokens_out = self
            .settings
            .tokens
            .as_ref()
            .map(|t| t.count_object(&message.params));
        if self.settings.record_arguments {
            let mut params = Value::Object(message.params.clone());
            self.settings.scrubber.scrub(&mut params);
            ev.arguments = Some(params);
        }
        let mut answer = self.event(
            &message,
            MessageKind::Response,
            Direction::Request,
            Leg::ClientToGateway,
        );
        self.settings.auditor.record(ev, false).await;
        let started = Instant::now();
        let out = self.inner.request(message).await;
        answer.total_latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        match &out {
            Ok(Ok(result)) => {
                answer.status = Some("ok".into());
                answer.bytes_in = Some(json_len(result));
                answer.tokens_in = self.settings.count_tokens(result);
            }
            Ok(Err(err)) => {
                fill_error(&self.settings, &mut answer, err, None);
                answer.bytes_in = answer.bytes_out.take();
                answer.tokens_in = answer.tokens_out.take();
            }
            Err(e) => {
                answer.status = Some("error".into());
                answer.error_code = Some(codes::INTERNAL_ERROR);
                answer.error_message = Some(self.settings.scrubber.scrub_text(&e.to_string()));
            }
        }
        self.settings.auditor.record(answer, false).await;
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tool_error_is_a_failed_call() {
        assert_eq!(
            tool_error(&json!({"content": [{"type": "text", "text": "ok"}]})),
            None
        );
        assert_eq!(tool_error(&json!({"isError": false, "content": []})), None);
        assert_eq!(
            tool_error(
                &json!({"isError": true, "content": [{"type": "image", "data": ""}, {"type": "text", "text": "bad zone"}]})
            ),
            Some("bad zone".into())
        );
        assert_eq!(
            tool_error(&json!({"isError": true})),
            Some("tool error".into())
        );
        let long = "é".repeat(200);
        let cut =
            tool_error(&json!({"isError": true, "content": [{"type": "text", "text": long}]}))
                .unwrap();
        assert!(cut.len() <= TOOL_ERROR_MAX && cut.chars().all(|c| c == 'é'));
    }
}

//! The direct path for requests to Streamable HTTP upstreams in a 2025 session: the request's
//! JSON goes out as it is over the pooled HTTP client, and the answer comes back as JSON,
//! without rmcp's typed model, service loop and transport worker in between (they cost about
//! half of the gateway's CPU per call; see `benches/README.md`).
//!
//! rmcp still owns the connection: the handshake, the session (its id is read off the messages
//! rmcp posts, see [`SessionSlot`]), the standalone GET stream and stdio. The direct path only
//! sends requests within that session and reads their answers:
//!
//! - `application/json`: the answer.
//! - `text/event-stream`: the messages the server sends for this request, in order: progress and
//!   log notifications go to the caller's client, the server's requests to the client (sampling,
//!   elicitation, roots) are asked of the caller's client and the answers POSTed back, until the
//!   answer arrives. A stream that ends early is resumed with `Last-Event-ID` (SEP-1699), after
//!   the server's `retry` delay.
//! - `401`/`403`: `UPSTREAM_AUTH_REQUIRED` with the challenge; `404` (or the `400` some servers
//!   answer for a session id they do not know, e.g. after a restart): the session is gone, the
//!   connection is renewed (a new rmcp session) and the request sent once more.
//!
//! Dropping the future (the client cancelled, the call timed out) tells the server with
//! `notifications/cancelled`.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::{
    downstream::ServerMessage,
    message::{ErrorData, JsonObject, Method, RequestContext, codes, error},
};

/// The upstream session's id, as rmcp last sent it.
#[derive(Debug, Default)]
pub(crate) struct SessionSlot(RwLock<Option<Arc<str>>>);

impl SessionSlot {
    pub(crate) fn set(&self, id: &Arc<str>) {
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        if slot.as_deref() != Some(&**id) {
            *slot = Some(Arc::clone(id));
        }
    }

    fn get(&self) -> Option<Arc<str>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn forget(&self, id: &str) {
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        if slot.as_deref() == Some(id) {
            *slot = None;
        }
    }
}

/// How the direct path reaches one upstream.
#[derive(Debug)]
pub(crate) struct Direct {
    pub(crate) client: reqwest::Client,
    pub(crate) url: String,
    /// The configured headers (credentials among them).
    pub(crate) headers: HeaderMap,
    pub(crate) session: Arc<SessionSlot>,
    pub(crate) protocol: HeaderValue,
    pub(crate) server: Arc<str>,
}

/// Why the direct path did not answer.
pub(crate) enum Miss {
    /// An error for the caller.
    Error(ErrorData),
    /// No session yet: use rmcp.
    Fallback,
    /// The server does not know the session (`404`, or the `400` some servers answer for an
    /// unknown session id): a new session is needed before trying again.
    SessionLost,
}

impl From<ErrorData> for Miss {
    fn from(e: ErrorData) -> Self {
        Self::Error(e)
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How often a stream that ended before the answer is resumed.
const MAX_RESUMES: usize = 5;

impl Direct {
    fn base_request(&self, method: http::Method, session: &str) -> reqwest::RequestBuilder {
        let mut headers = self.headers.clone();
        if let Ok(v) = HeaderValue::from_str(session) {
            headers.insert("mcp-session-id", v);
        }
        headers.insert("mcp-protocol-version", self.protocol.clone());
        self.client.request(method, &self.url).headers(headers)
    }

    fn post(&self, session: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        self.base_request(http::Method::POST, session)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(body)
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> ErrorData {
        error(
            codes::UPSTREAM_UNAVAILABLE,
            format!("upstream '{}' {what}", self.server),
            Some(json!({"server": &*self.server})),
        )
    }

    fn protocol_error(&self, what: impl std::fmt::Display) -> ErrorData {
        error(
            codes::UPSTREAM_PROTOCOL,
            format!("upstream '{}' {what}", self.server),
            Some(json!({"server": &*self.server})),
        )
    }

    /// Sends one request and waits for its answer (no timeout of its own: the caller's covers
    /// the whole call, and dropping this future cancels the request upstream).
    pub(crate) async fn request(
        &self,
        method: &Method,
        params: &JsonObject,
        ctx: &RequestContext,
    ) -> Result<Value, Miss> {
        let Some(session) = self.session.get() else {
            return Err(Miss::Fallback);
        };
        let id = format!("gw-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        tracing::trace!(server = %self.server, %id, method = method.as_str(), "direct request");
        let meta = |k: &str| params.get("_meta")?.get(k)?.as_str();
        let trace = super::trace_header::meta_headers(meta("traceparent"), meta("tracestate"));
        #[derive(serde::Serialize)]
        struct Outgoing<'a> {
            jsonrpc: &'static str,
            id: &'a str,
            method: &'a str,
            params: &'a JsonObject,
        }
        let body = serde_json::to_vec(&Outgoing {
            jsonrpc: "2.0",
            id: &id,
            method: method.as_str(),
            params,
        })
        .map_err(|e| Miss::Error(self.protocol_error(format!("request cannot be encoded: {e}"))))?;
        let mut req = self.post(&session, body);
        for (k, v) in trace {
            req = req.header(k, v);
        }
        let mut cancel = CancelOnDrop {
            direct: self,
            session: &session,
            id: &id,
            armed: true,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| Miss::Error(self.unavailable(format!("did not answer: {e}"))))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST {
            cancel.armed = false;
            let body = resp.text().await.unwrap_or_default();
            // Some servers answer an unknown session id with 400 (and say so); any other 400
            // is the server refusing this request.
            if status == StatusCode::NOT_FOUND || body.to_ascii_lowercase().contains("session") {
                self.session.forget(&session);
                return Err(Miss::SessionLost);
            }
            let body: String = body.chars().take(200).collect();
            return Err(Miss::Error(
                self.protocol_error(format!("answered HTTP 400: {body}")),
            ));
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            cancel.armed = false;
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Err(Miss::Error(error(
                codes::UPSTREAM_AUTH_REQUIRED,
                format!(
                    "upstream '{}' refused the request's credentials (HTTP {})",
                    self.server,
                    status.as_u16()
                ),
                Some(json!({
                    "server": &*self.server,
                    "status": status.as_u16(),
                    "wwwAuthenticate": challenge,
                })),
            )));
        }
        if !status.is_success() {
            cancel.armed = false;
            return Err(Miss::Error(
                self.protocol_error(format!("answered HTTP {}", status.as_u16())),
            ));
        }
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let answer = if is_sse {
            self.read_stream(resp, &id, &session, ctx).await?
        } else {
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| Miss::Error(self.unavailable(format!("answer broke off: {e}"))))?;
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| Miss::Error(self.protocol_error(format!("sent invalid JSON: {e}"))))?
        };
        cancel.armed = false;
        self.outcome(answer, &id)
    }

    /// The result or error of a JSON-RPC response to `id`.
    fn outcome(&self, mut answer: Value, id: &str) -> Result<Value, Miss> {
        if answer.get("id").and_then(Value::as_str) != Some(id) {
            return Err(Miss::Error(
                self.protocol_error("answered a different request"),
            ));
        }
        if let Some(e) = answer.get_mut("error") {
            return Err(Miss::Error(serde_json::from_value(e.take()).map_err(
                |e| self.protocol_error(format!("sent a malformed error: {e}")),
            )?));
        }
        match answer.get_mut("result") {
            Some(r) => Ok(r.take()),
            None => Err(Miss::Error(
                self.protocol_error("answered with neither result nor error"),
            )),
        }
    }

    /// Reads an SSE answer (resuming it when it ends early) until the response to `id`.
    async fn read_stream(
        &self,
        resp: reqwest::Response,
        id: &str,
        session: &str,
        ctx: &RequestContext,
    ) -> Result<Value, Miss> {
        let mut stream = sse_stream::SseStream::from_bytes_stream(resp.bytes_stream()).boxed();
        let mut last_event_id: Option<String> = None;
        let mut retry = Duration::from_millis(100);
        let mut resumes = 0;
        loop {
            match stream.next().await {
                Some(Ok(event)) => {
                    if let Some(eid) = event.id.filter(|i| !i.is_empty()) {
                        last_event_id = Some(eid);
                    }
                    if let Some(ms) = event.retry {
                        retry = Duration::from_millis(ms.min(60_000));
                    }
                    let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
                        continue; // a priming event, a comment
                    };
                    let message: Value = serde_json::from_str(&data).map_err(|e| {
                        Miss::Error(self.protocol_error(format!("sent an invalid event: {e}")))
                    })?;
                    if message.get("method").is_none() && message.get("id").is_some() {
                        if message.get("id").and_then(Value::as_str) == Some(id) {
                            return Ok(message);
                        }
                        continue; // an answer to someone else: not ours to read
                    }
                    self.relay(message, session, ctx).await;
                }
                Some(Err(e)) => {
                    return Err(Miss::Error(
                        self.protocol_error(format!("sent a broken event stream: {e}")),
                    ));
                }
                None => {
                    // Ended before the answer: resume where it stopped (SEP-1699).
                    let Some(from) = last_event_id.clone() else {
                        return Err(Miss::Error(
                            self.unavailable("closed the stream before answering"),
                        ));
                    };
                    if resumes == MAX_RESUMES {
                        return Err(Miss::Error(self.unavailable(format!(
                            "closed the stream before answering, {MAX_RESUMES} times"
                        ))));
                    }
                    resumes += 1;
                    tokio::time::sleep(retry).await;
                    let resp = self
                        .base_request(http::Method::GET, session)
                        .header(header::ACCEPT, "text/event-stream")
                        .header("last-event-id", from)
                        .send()
                        .await
                        .map_err(|e| {
                            Miss::Error(self.unavailable(format!("did not resume: {e}")))
                        })?;
                    if !resp.status().is_success() {
                        return Err(Miss::Error(self.unavailable(format!(
                            "refused to resume the stream (HTTP {})",
                            resp.status().as_u16()
                        ))));
                    }
                    stream = sse_stream::SseStream::from_bytes_stream(resp.bytes_stream()).boxed();
                }
            }
        }
    }

    /// A message the server sent for this request: a notification for the caller's client, or
    /// a request to it whose answer goes back to the server.
    async fn relay(&self, mut message: Value, session: &str, ctx: &RequestContext) {
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let params = match message.get_mut("params").map(Value::take) {
            Some(Value::Object(o)) => o,
            _ => JsonObject::new(),
        };
        let relayed = ServerMessage {
            server: Some(self.server.clone()),
            method: method.clone(),
            params,
        };
        if method == "ping"
            && let Some(request_id) = message.get("id")
        {
            let body = json!({"jsonrpc": "2.0", "id": request_id, "result": {}})
                .to_string()
                .into_bytes();
            let _ = self.post(session, body).send().await;
            return;
        }
        let Some(request_id) = message.get("id").cloned() else {
            // Progress carries the client's own token (passed through unchanged).
            if let Some(d) = &ctx.downstream {
                let _ = d.notify(relayed).await;
            }
            return;
        };
        let answer = match &ctx.downstream {
            Some(d) => match d.request(relayed).await {
                Ok(Ok(result)) => json!({"jsonrpc": "2.0", "id": request_id, "result": result}),
                Ok(Err(e)) => json!({"jsonrpc": "2.0", "id": request_id, "error": e}),
                Err(e) => json!({"jsonrpc": "2.0", "id": request_id, "error": error(
                    codes::METHOD_NOT_FOUND, format!("{method}: the client cannot be asked ({e})"), None)}),
            },
            None => json!({"jsonrpc": "2.0", "id": request_id, "error": error(
                codes::METHOD_NOT_FOUND, format!("{method}: no client is waiting on this server's request"), None)}),
        };
        let body = answer.to_string().into_bytes();
        if let Err(e) = self.post(session, body).send().await {
            tracing::warn!(server = %self.server, error = %e, "could not send the client's answer upstream");
        }
    }
}

/// Tells the server a request was abandoned (the caller cancelled or timed out), unless disarmed.
struct CancelOnDrop<'a> {
    direct: &'a Direct,
    session: &'a str,
    id: &'a str,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let body = json!({
            "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": self.id, "reason": "the gateway's caller gave up"},
        })
        .to_string()
        .into_bytes();
        let req = self.direct.post(self.session, body);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = req.send().await;
            });
        }
    }
}

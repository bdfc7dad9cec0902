//! The bridge: runs a stdio MCP server as a child and serves it over Streamable HTTP.
//!
//! This module is the library behind the `mcp-bridge` binary; the local-process runtime runs that
//! binary, containers use it as their entrypoint.
//!
//! - The child is driven with rmcp's client (`TokioChildProcess`); the bridge initializes it once
//!   and is **ready** once `initialize` and `tools/list` succeeded (`GET /readyz` answers 200;
//!   `GET /healthz` answers 200 while the bridge runs).
//! - `POST /mcp` takes one JSON-RPC message. Before anything is parsed or reaches the child, the
//!   source address is checked against the allowlist (403) and the `x-mcp-bridge-secret` header
//!   against the shared secret (401): both sides are HMAC-SHA256'd under a per-process random key
//!   and compared with `ring::hmac::verify` (constant time). `initialize` is answered from the
//!   child's own initialize result; other requests are forwarded and their answers returned as
//!   `application/json`; when the caller accepts `text/event-stream` and the child has
//!   something for it before the answer, as an SSE stream of those messages followed by the
//!   answer: its progress notifications for the request (under the caller's token), its log
//!   messages, and its requests to the client (sampling, elicitation, roots), whose answers the
//!   caller POSTs back (routed by the bridge's request id; `202`). Notifications get `202`. The
//!   bridge keeps no HTTP session (no `Mcp-Session-Id`).
//! - A stdio child's request or log message says nothing about which client request caused it.
//!   The bridge relays it while exactly one request that can take it (SSE) is in flight, which
//!   is then the only candidate; with none or several, log messages are dropped, `roots/list`
//!   is answered with no roots, and sampling or elicitation are refused with an error naming
//!   the reason, so a shared instance never sends one caller's prompt to another.
//! - When the child exits, the bridge is not ready until a new child (restarted with exponential
//!   backoff, 100 ms up to 5 s) has passed initialize and tools/list again.
//! - The secret is read from an environment variable and removed from the child's environment.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ring::hmac;
use rmcp::{
    ClientHandler, RoleClient, ServiceExt,
    model::{
        ClientJsonRpcMessage, ClientRequest, ErrorCode, ProgressNotificationParam, ServerResult,
    },
    service::{NotificationContext, Peer, PeerRequestOptions, RunningService, ServiceError},
    transport::TokioChildProcess,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::RwLock};
use tokio_util::sync::CancellationToken;

use crate::spec::SECRET_HEADER;

/// The largest request body the bridge reads.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

// === source allowlist ===

/// An IP network (`10.0.0.0/8`, `127.0.0.1`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl IpNet {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

// === config ===

/// How to run a bridge.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The server's argv (program first).
    pub command: Vec<String>,
    /// The shared secret; `None` only when explicitly running without one.
    pub secret: Option<String>,
    /// Source networks allowed to call (empty: any).
    pub allow: Vec<IpNet>,
    /// Environment variables removed from the child's environment (the secret's variable).
    pub scrub_env: Vec<String>,
}

/// A secret checker: HMAC both sides under a random key, compare in constant time.
pub(crate) struct SecretCheck {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl SecretCheck {
    pub(crate) fn new(secret: &str) -> Result<Self, ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)?;
        let tag = hmac::sign(&key, secret.as_bytes());
        Ok(Self { key, tag })
    }

    pub(crate) fn check(&self, presented: &[u8]) -> bool {
        hmac::verify(&self.key, presented, self.tag.as_ref()).is_ok()
    }
}

// === state ===

struct State {
    secret: Option<SecretCheck>,
    allow: Vec<IpNet>,
    ready: AtomicBool,
    restarts: AtomicU64,
    peer: RwLock<Option<(Peer<RoleClient>, Value)>>,
    /// What the child sends towards the client, for the requests in flight.
    relay: Arc<Relay>,
}

/// Something the child sent towards the client.
#[derive(Clone, Debug)]
enum ChildEvent {
    /// A progress notification (matched to its request by token).
    Progress(ProgressNotificationParam),
    /// A log message or a request to the client, as the JSON-RPC message to put on the stream.
    Message(Value),
}

/// How long the child's request to the client may wait for the client's answer.
const CLIENT_ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// The child's messages towards the client, and its requests waiting for the client's answer.
#[derive(Debug)]
struct Relay {
    events: tokio::sync::broadcast::Sender<ChildEvent>,
    /// Requests in flight that can take relayed messages (their caller accepts SSE).
    listening: std::sync::atomic::AtomicUsize,
    /// The child's requests to the client, by the bridge's id, waiting for the client's answer.
    waiting:
        std::sync::Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<Value>>>,
    next_id: AtomicU64,
}

impl Relay {
    fn new() -> Self {
        Self {
            events: tokio::sync::broadcast::channel(256).0,
            listening: std::sync::atomic::AtomicUsize::new(0),
            waiting: std::sync::Mutex::new(std::collections::HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Counts a request that takes relayed messages while the guard lives.
    fn listen(self: &Arc<Self>) -> Listening {
        self.listening.fetch_add(1, Ordering::AcqRel);
        Listening(Arc::clone(self))
    }

    /// Why the child's message cannot be relayed now: unless exactly one caller listens, the
    /// bridge cannot tell whose request caused it.
    fn ambiguity(&self) -> Option<String> {
        match self.listening.load(Ordering::Acquire) {
            1 => None,
            0 => Some("no client request is in flight to ask".into()),
            n => Some(format!(
                "{n} client requests are in flight and a stdio server's request does not say which one it belongs to"
            )),
        }
    }

    /// Relays one of the child's requests to the client and waits for the answer.
    async fn request<P: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: P,
        cancelled: CancellationToken,
    ) -> Result<R, rmcp::ErrorData> {
        let refuse = |why: String| {
            rmcp::ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!("{method}: {why}"),
                None,
            )
        };
        if let Some(why) = self.ambiguity() {
            return Err(refuse(why));
        }
        let id = format!(
            "mcp-bridge-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock_waiting().insert(id.clone(), tx);
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if self.events.send(ChildEvent::Message(message)).is_err() {
            self.lock_waiting().remove(&id);
            return Err(refuse("no client request is in flight to ask".into()));
        }
        let answer = tokio::select! {
            a = tokio::time::timeout(CLIENT_ANSWER_TIMEOUT, rx) => a,
            _ = cancelled.cancelled() => {
                self.lock_waiting().remove(&id);
                return Err(refuse("cancelled by the server".into()));
            }
        };
        self.lock_waiting().remove(&id);
        let answer = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => return Err(refuse("the client went away".into())),
            Err(_) => return Err(refuse("the client did not answer in time".into())),
        };
        if let Some(e) = answer.get("error") {
            return Err(serde_json::from_value(e.clone()).unwrap_or_else(|_| {
                rmcp::ErrorData::new(
                    ErrorCode::INTERNAL_ERROR,
                    format!("{method}: the client refused"),
                    None,
                )
            }));
        }
        serde_json::from_value(answer.get("result").cloned().unwrap_or(Value::Null)).map_err(|e| {
            rmcp::ErrorData::new(
                ErrorCode::INVALID_PARAMS,
                format!("{method}: the client's answer is malformed: {e}"),
                None,
            )
        })
    }

    /// Hands the client's answer (a JSON-RPC response) to the child's request waiting for it.
    /// `false` when no request waits under that id.
    fn answer(&self, id: &Value, message: Value) -> bool {
        let Some(id) = id.as_str() else { return false };
        match self.lock_waiting().remove(id) {
            Some(tx) => tx.send(message).is_ok(),
            None => false,
        }
    }

    fn lock_waiting(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, tokio::sync::oneshot::Sender<Value>>,
    > {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request in flight that takes relayed messages; counted until dropped.
struct Listening(Arc<Relay>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.listening.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The bridge's side of the child's MCP session: it offers the client capabilities a gateway
/// relays (sampling, elicitation, roots) and passes what the child sends to the requests in
/// flight.
#[derive(Clone)]
struct ChildEvents {
    relay: Arc<Relay>,
}

#[allow(deprecated)] // sampling, roots and logging: deprecated by SEP-2577, still spoken.
impl ClientHandler for ChildEvents {
    fn get_info(&self) -> rmcp::model::ClientInfo {
        let capabilities: rmcp::model::ClientCapabilities = serde_json::from_value(json!({
            "sampling": {},
            "elicitation": {"form": {}, "url": {}},
            "roots": {"listChanged": true},
        }))
        .unwrap_or_default();
        rmcp::model::ClientInfo::new(
            capabilities,
            rmcp::model::Implementation::new("mcp-bridge", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        // Nobody listening (no SSE answer in flight) is fine.
        let _ = self.relay.events.send(ChildEvent::Progress(params));
    }

    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(why) = self.relay.ambiguity() {
            tracing::debug!("mcp-bridge: log message not relayed: {why}");
            return;
        }
        let message =
            json!({"jsonrpc": "2.0", "method": "notifications/message", "params": params});
        let _ = self.relay.events.send(ChildEvent::Message(message));
    }

    async fn create_message(
        &self,
        params: rmcp::model::CreateMessageRequestParams,
        context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        self.relay
            .request("sampling/createMessage", params, context.ct)
            .await
    }

    async fn create_elicitation(
        &self,
        params: rmcp::model::ElicitRequestParams,
        context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        self.relay
            .request("elicitation/create", params, context.ct)
            .await
    }

    async fn list_roots(
        &self,
        context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ListRootsResult, rmcp::ErrorData> {
        // Servers ask for roots at startup too, when no client is there: no roots then.
        if self.relay.ambiguity().is_some() {
            return Ok(rmcp::model::ListRootsResult::default());
        }
        self.relay
            .request("roots/list", json!({}), context.ct)
            .await
    }
}

/// The body of the bridge's answers: a JSON document, or an SSE stream.
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A running bridge; dropping it does not stop it, call [`Bridge::shutdown`].
#[derive(Clone)]
pub struct Bridge {
    state: Arc<State>,
    addr: SocketAddr,
    stop: CancellationToken,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("addr", &self.addr)
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// Why a bridge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// No command was given.
    #[error("no server command given")]
    NoCommand,
    /// No secret was given.
    #[error("no shared secret: set the secret variable or pass --insecure-no-secret")]
    NoSecret,
    /// The random key for the secret check could not be made.
    #[error("no randomness for the secret check")]
    Random,
}

impl Bridge {
    /// Starts serving on `listener` and supervising the child.
    pub fn start(config: BridgeConfig, listener: TcpListener) -> Result<Self, BridgeError> {
        if config.command.is_empty() {
            return Err(BridgeError::NoCommand);
        }
        let secret = match &config.secret {
            Some(s) if !s.is_empty() => Some(SecretCheck::new(s).map_err(|_| BridgeError::Random)?),
            Some(_) => return Err(BridgeError::NoSecret),
            None => None,
        };
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let state = Arc::new(State {
            secret,
            allow: config.allow.clone(),
            ready: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
            peer: RwLock::new(None),
            relay: Arc::new(Relay::new()),
        });
        let stop = CancellationToken::new();
        tokio::spawn(supervise(state.clone(), config, stop.clone()));
        tokio::spawn(accept_loop(state.clone(), listener, stop.clone()));
        Ok(Self { state, addr, stop })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the child passed initialize and tools/list.
    pub fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Acquire)
    }

    /// How often the child was restarted.
    pub fn restarts(&self) -> u64 {
        self.state.restarts.load(Ordering::Relaxed)
    }

    /// Stops serving and stops the child.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Resolves once shutdown was asked for.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }
}

async fn start_child(
    config: &BridgeConfig,
    relay: Arc<Relay>,
) -> Result<RunningService<RoleClient, ChildEvents>, Box<dyn std::error::Error + Send + Sync>> {
    let mut cmd = tokio::process::Command::new(&config.command[0]);
    cmd.args(&config.command[1..]).stderr(Stdio::inherit());
    for v in &config.scrub_env {
        cmd.env_remove(v);
    }
    let transport = TokioChildProcess::new(cmd)?;
    let running = ChildEvents { relay }.serve(transport).await?;
    if running
        .peer()
        .peer_info()
        .is_some_and(|i| i.capabilities.tools.is_some())
    {
        running.peer().list_tools(None).await?;
    }
    Ok(running)
}

async fn supervise(state: Arc<State>, config: BridgeConfig, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = start_child(&config, state.relay.clone()) => r,
        };
        match attempt {
            Ok(mut running) => {
                let info = running
                    .peer()
                    .peer_info()
                    .and_then(|i| serde_json::to_value(&*i).ok())
                    .unwrap_or_else(|| json!({}));
                *state.peer.write().await = Some((running.peer().clone(), info));
                state.ready.store(true, Ordering::Release);
                tracing::info!("mcp-bridge: child ready");
                let stopped = tokio::select! {
                    _ = stop.cancelled() => true,
                    _ = wait_closed(&mut running) => false,
                };
                state.ready.store(false, Ordering::Release);
                *state.peer.write().await = None;
                // Closing the service drops the transport, which kills the child.
                let _ = running.close_with_timeout(Duration::from_secs(8)).await;
                if stopped {
                    return;
                }
                tracing::warn!("mcp-bridge: child exited; restarting");
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(100);
                }
            }
            Err(e) => tracing::warn!("mcp-bridge: child failed to start: {e}"),
        }
        state.restarts.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn wait_closed(running: &mut RunningService<RoleClient, ChildEvents>) {
    // The peer's channel closes when the service loop ends (the child's stdout closed).
    let peer = running.peer().clone();
    while !peer.is_transport_closed() {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn accept_loop(state: Arc<State>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("mcp-bridge: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, remote, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = stop.cancelled() => {}
                r = conn => if let Err(e) = r { tracing::debug!("mcp-bridge: connection: {e}") },
            }
        });
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_response(v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn rpc_error(id: Option<&Value>, code: i32, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": {"code": code, "message": message}})
}

async fn handle(state: &State, remote: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    if !state.allow.is_empty() && !state.allow.iter().any(|n| n.contains(remote.ip())) {
        return text(StatusCode::FORBIDDEN, "source address not allowed\n");
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            return if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            };
        }
        _ => {}
    }
    if let Some(check) = &state.secret {
        let ok = req
            .headers()
            .get(SECRET_HEADER)
            .is_some_and(|v| check.check(v.as_bytes()));
        if !ok {
            return text(StatusCode::UNAUTHORIZED, "missing or wrong shared secret\n");
        }
    }
    if req.uri().path() != "/mcp" {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    match *req.method() {
        Method::POST => {}
        Method::DELETE => return text(StatusCode::OK, ""),
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n");
            r.headers_mut().insert(
                header::ALLOW,
                http::HeaderValue::from_static("POST, DELETE"),
            );
            return r;
        }
    }
    let req_accepts_sse = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|a| a.contains("text/event-stream")));
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let mut r = json_response(&rpc_error(None, -32700, &format!("parse error: {e}")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
    };
    let id = value.get("id").cloned();
    let progress_token = value.pointer("/params/_meta/progressToken").cloned();
    let Some(method) = value
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        // The client's answer to one of the child's requests.
        return match id {
            Some(id) if state.relay.answer(&id, value) => text(StatusCode::ACCEPTED, ""),
            _ => text(
                StatusCode::NOT_FOUND,
                "no request of the server waits for this answer\n",
            ),
        };
    };
    let peer = state.peer.read().await.clone();
    let Some((peer, info)) = peer else {
        return match id {
            Some(id) => json_response(&rpc_error(
                Some(&id),
                mcp_gateway_core::codes::UPSTREAM_UNAVAILABLE,
                "the server is not ready",
            )),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        };
    };
    let Some(id) = id else {
        if method == "notifications/initialized" {
            return text(StatusCode::ACCEPTED, "");
        }
        if let Ok(ClientJsonRpcMessage::Notification(n)) =
            serde_json::from_value::<ClientJsonRpcMessage>(value)
        {
            let _ = peer.send_notification(n.notification).await;
        }
        return text(StatusCode::ACCEPTED, "");
    };
    if method == "initialize" {
        let mut result = info;
        if result.get("serverInfo").is_none() {
            result["serverInfo"] =
                json!({"name": "mcp-bridge", "version": env!("CARGO_PKG_VERSION")});
        }
        return json_response(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
    }
    let request: ClientRequest = match serde_json::from_value::<ClientJsonRpcMessage>(value) {
        Ok(ClientJsonRpcMessage::Request(r)) => r.request,
        Ok(_) => return json_response(&rpc_error(Some(&id), -32600, "not a request")),
        Err(e) => {
            return json_response(&rpc_error(
                Some(&id),
                ErrorCode::INVALID_PARAMS.0,
                &format!("invalid request: {e}"),
            ));
        }
    };
    if !req_accepts_sse {
        return json_response(&answer(&id, peer.send_request(request).await));
    }
    // The caller takes SSE: the answer stays plain JSON unless the child sends something for
    // the caller first (progress for this request, a log message, a request to the client).
    let mut events = state.relay.events.subscribe();
    let listening = state.relay.listen();
    let handle = match peer
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await
    {
        Ok(h) => h,
        Err(e) => return json_response(&answer(&id, Err(e))),
    };
    let child_token = handle.progress_token.clone();
    let for_caller = move |e: &ChildEvent| -> Option<Value> {
        match e {
            ChildEvent::Progress(p) if p.progress_token == child_token => {
                let token = progress_token.clone()?;
                let mut params = serde_json::to_value(p).unwrap_or_else(|_| json!({}));
                params["progressToken"] = token;
                Some(
                    json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": params}),
                )
            }
            ChildEvent::Progress(_) => None,
            ChildEvent::Message(m) => Some(m.clone()),
        }
    };
    let mut response = Box::pin(handle.await_response());
    let first = loop {
        tokio::select! {
            r = &mut response => return json_response(&answer(&id, r)),
            e = events.recv() => match e {
                Ok(e) => if let Some(m) = for_caller(&e) { break m },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return json_response(&answer(&id, response.await));
                }
            },
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let _listening = listening;
        let event = |v: &Value| Bytes::from(format!("event: message\ndata: {v}\n\n"));
        let is_last_progress = |m: &Value| {
            let p = &m["params"];
            m["method"] == "notifications/progress"
                && p["total"]
                    .as_f64()
                    .is_some_and(|t| p["progress"].as_f64().is_some_and(|v| v >= t))
        };
        let mut finished = is_last_progress(&first);
        let mut progressed = first["method"] == "notifications/progress";
        if tx.send(event(&first)).await.is_err() {
            return; // the caller went away
        }
        let result = loop {
            tokio::select! {
                r = &mut response => break r,
                e = events.recv() => match e {
                    Ok(e) => if let Some(m) = for_caller(&e) {
                        progressed |= m["method"] == "notifications/progress";
                        finished |= is_last_progress(&m);
                        if tx.send(event(&m)).await.is_err() {
                            return;
                        }
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break response.await,
                },
            }
        };
        // rmcp hands each notification to its own task but completes the response inline, so
        // the last progress can still be on its way: let it through first (bounded).
        let settle = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
        while progressed && !finished {
            let wait = tokio::time::timeout_at(
                settle.min(tokio::time::Instant::now() + std::time::Duration::from_millis(50)),
                events.recv(),
            );
            match wait.await {
                Ok(Ok(e)) => {
                    if let Some(m) = for_caller(&e) {
                        finished = is_last_progress(&m);
                        if tx.send(event(&m)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        let _ = tx.send(event(&answer(&id, result))).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(hyper::body::Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    r
}

/// The JSON-RPC answer for the child's result.
fn answer(id: &Value, result: Result<ServerResult, ServiceError>) -> Value {
    match result {
        Ok(result) => {
            let result: Value = match result {
                ServerResult::EmptyResult(_) => json!({}),
                other => serde_json::to_value(&other).unwrap_or_else(|_| json!({})),
            };
            json!({"jsonrpc": "2.0", "id": id, "result": result})
        }
        Err(ServiceError::McpError(e)) => json!({"jsonrpc": "2.0", "id": id, "error": e}),
        Err(e) => rpc_error(
            Some(id),
            mcp_gateway_core::codes::UPSTREAM_UNAVAILABLE,
            &format!("the server did not answer: {e}"),
        ),
    }
}

/// `mcp-bridge probe URL`: a GET that succeeds on a 2xx answer (for container health checks,
/// where images built `FROM scratch` have no curl).
pub async fn probe(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(hostport),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, hostport)
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", res.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipnet() {
        let n: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("1.2.3.4/33".parse::<IpNet>().is_err());
        assert!("nope".parse::<IpNet>().is_err());
    }

    #[tokio::test]
    async fn the_childs_requests_go_only_to_the_one_caller_in_flight() {
        let relay = Arc::new(Relay::new());
        let ask = |relay: Arc<Relay>| async move {
            relay
                .request::<_, Value>(
                    "sampling/createMessage",
                    json!({}),
                    CancellationToken::new(),
                )
                .await
        };
        // Nobody, or two callers in flight: refused with the reason, nothing is sent.
        let e = ask(relay.clone()).await.unwrap_err();
        assert!(e.message.contains("no client request"), "{e:?}");
        let (a, b) = (relay.listen(), relay.listen());
        let e = ask(relay.clone()).await.unwrap_err();
        assert!(e.message.contains("2 client requests"), "{e:?}");
        drop(b);
        // One caller: it gets the request, and its answer (by the bridge's id) completes it.
        let mut events = relay.events.subscribe();
        let pending = tokio::spawn(ask(relay.clone()));
        let ChildEvent::Message(m) = events.recv().await.unwrap() else {
            panic!("a message")
        };
        assert_eq!(m["method"], "sampling/createMessage");
        assert!(
            !relay.answer(&json!("mcp-bridge-999"), json!({})),
            "unknown id"
        );
        assert!(relay.answer(
            &m["id"],
            json!({"jsonrpc": "2.0", "id": m["id"], "result": {"ok": true}})
        ));
        assert_eq!(pending.await.unwrap().unwrap(), json!({"ok": true}));
        drop(a);
        assert_eq!(relay.listening.load(Ordering::Acquire), 0);
    }

    #[test]
    fn secret_check_is_exact() {
        let c = SecretCheck::new("s3cret").unwrap();
        assert!(c.check(b"s3cret"));
        assert!(!c.check(b"s3cre"));
        assert!(!c.check(b"s3crett"));
        assert!(!c.check(b""));
    }
}

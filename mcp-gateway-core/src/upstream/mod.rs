//! Connections to upstream MCP servers: stdio child processes and Streamable HTTP.
//!
//! An [`Upstream`] is one configured server. A supervisor task keeps it connected: it starts the
//! child process (or opens the HTTP session), negotiates the protocol with rmcp's client
//! (`initialize` first, `server/discover` as the fallback, so 2025-06-18, 2025-11-25 and
//! 2026-07-28-only servers all work), and after a crash or a closed connection reconnects with
//! exponential backoff. Child processes live in their own process group and are killed when the
//! upstream is dropped or shut down; their stderr goes to the logs line by line.
//!
//! One connection per upstream is shared by every downstream session: the stateless 2026-07-28
//! path never initializes an upstream session per request, and stdio servers only have one
//! session anyway. The reverse path (progress, logs, sampling, elicitation, roots) is matched to the
//! downstream request that caused it: for HTTP upstreams exactly, by the POST stream the message
//! arrived on; for stdio upstreams by the in-flight request (the most recent one when several are
//! in flight and the upstream does not say which).

mod direct;
mod handler;
mod inflight;
mod pool;
mod trace_header;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use rmcp::{
    model::{ClientRequest, ProtocolVersion, ServerPeerInfo},
    service::{
        ClientLifecycleMode, ClientServiceExt, Peer, PeerRequestOptions, RoleClient,
        RunningService, ServiceError,
    },
    transport::{
        StreamableHttpClientTransport, TokioChildProcess,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::Value;
use tokio::{io::AsyncBufReadExt, sync::mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    events::{EventBus, GatewayEvent},
    message::{ErrorData, JsonObject, Method, RequestContext, codes, error},
};

pub use handler::UpstreamHandler;
use inflight::{ClientProgressToken, Inflight};
pub use pool::Endpoint;
pub(crate) use pool::Pool;

/// Marks the progress token the client sent, so upstream progress reaches it under that token.
pub(crate) fn inflight_token(token: Value) -> ClientProgressToken {
    ClientProgressToken(token)
}

// === config ===

/// How to reach an upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A child process speaking MCP over stdin/stdout.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Extra environment variables.
        env: BTreeMap<String, String>,
        /// The working directory.
        cwd: Option<PathBuf>,
    },
    /// A Streamable HTTP endpoint.
    Http {
        /// The endpoint URL (`http://127.0.0.1:3001/mcp`).
        url: String,
        /// Extra headers sent with every request (e.g. an API key).
        headers: BTreeMap<String, String>,
    },
}

/// Which protocol revision to speak to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtocolMode {
    /// Try `initialize` (2025-11-25 and older) and fall back to `server/discover` (2026-07-28).
    #[default]
    Auto,
    /// Only the legacy `initialize` handshake (2025-11-25 and older).
    Legacy,
    /// Only 2026-07-28 (`server/discover`, stateless).
    Modern,
}

/// The configuration of one upstream server.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The server's name (the namespace prefix of its features).
    pub name: Arc<str>,
    /// How to reach it.
    pub transport: Transport,
    /// How long a call may take before the client gets a timeout error.
    pub call_timeout: Duration,
    /// How long listing its features may take when the catalog refreshes.
    pub list_timeout: Duration,
    /// How long connecting (spawn + handshake) may take.
    pub connect_timeout: Duration,
    /// Which protocol revision to speak.
    pub protocol: ProtocolMode,
    /// The longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Connect even when the URL's host is, or resolves to, a link-local or cloud metadata
    /// address (see [`crate::ssrf`]); refused by default.
    pub allow_link_local: bool,
}

impl UpstreamConfig {
    /// A config with default timeouts.
    pub fn new(name: impl Into<Arc<str>>, transport: Transport) -> Self {
        Self {
            name: name.into(),
            transport,
            call_timeout: Duration::from_secs(60),
            list_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            protocol: ProtocolMode::Auto,
            max_backoff: Duration::from_secs(30),
            allow_link_local: false,
        }
    }
}

// === state ===

/// Whether an upstream is serving.
#[derive(Debug, Clone)]
pub enum Status {
    /// Connecting for the first time (or again after a failure).
    Connecting,
    /// Serving.
    Ready {
        /// What the server said about itself.
        info: Arc<ServerPeerInfo>,
    },
    /// Down; reconnecting with backoff.
    Down {
        /// Why, for humans.
        reason: String,
    },
}

enum State {
    Connecting,
    Ready {
        peer: Peer<RoleClient>,
        info: Arc<ServerPeerInfo>,
        /// Requests bypass rmcp on this path (Streamable HTTP in a 2025 session).
        direct: Option<Arc<direct::Direct>>,
    },
    Down {
        reason: String,
    },
}

pub(crate) struct Shared {
    pub(crate) config: UpstreamConfig,
    state: RwLock<State>,
    pub(crate) inflight: Inflight,
    pub(crate) events: EventBus,
    /// Told when the upstream's lists may have changed (connected, or `list_changed`).
    pub(crate) refresh: mpsc::UnboundedSender<Arc<str>>,
    /// How resource URIs are exposed to clients (for `resources/updated`).
    pub(crate) naming: crate::catalog::Naming,
    shutdown: CancellationToken,
    /// Set when the supervisor has stopped for good (after shutdown).
    stopped: std::sync::atomic::AtomicBool,
    /// The `WWW-Authenticate` challenge of the last refused connection attempt (401/403).
    auth_challenge: std::sync::Mutex<Option<String>>,
    /// Asks the supervisor for a new connection (the server lost the session).
    renew: Arc<tokio::sync::Notify>,
}

/// A supervised connection to one upstream server. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.shared.config.name)
            .field("status", &self.status())
            .finish()
    }
}

/// Built by the gateway for each upstream.
pub(crate) struct UpstreamParts {
    pub(crate) events: EventBus,
    pub(crate) refresh: mpsc::UnboundedSender<Arc<str>>,
    pub(crate) naming: crate::catalog::Naming,
    pub(crate) shutdown: CancellationToken,
}

impl Upstream {
    /// Starts supervising an upstream: the first connection attempt begins at once, in the
    /// background.
    pub(crate) fn spawn(config: UpstreamConfig, parts: UpstreamParts) -> Self {
        let shared = Arc::new(Shared {
            config,
            state: RwLock::new(State::Connecting),
            inflight: Inflight::default(),
            events: parts.events,
            refresh: parts.refresh,
            naming: parts.naming,
            shutdown: parts.shutdown,
            stopped: std::sync::atomic::AtomicBool::new(false),
            auth_challenge: std::sync::Mutex::new(None),
            renew: Arc::new(tokio::sync::Notify::new()),
        });
        tokio::spawn(supervise(Arc::downgrade(&shared)));
        Self { shared }
    }

    /// A supervised connection on its own, outside a [`Gateway`](crate::gateway::Gateway) (a
    /// client, a probe): connecting starts at once, in the background; [`shutdown`](Self::shutdown)
    /// stops it. Must be called inside a tokio runtime.
    pub fn standalone(config: UpstreamConfig) -> Self {
        let (refresh, _) = mpsc::unbounded_channel();
        Self::spawn(
            config,
            UpstreamParts {
                events: EventBus::default(),
                refresh,
                naming: crate::catalog::Naming::default(),
                shutdown: CancellationToken::new(),
            },
        )
    }

    /// The `WWW-Authenticate` value with which the server refused the last connection attempt
    /// (HTTP 401, or 403 `insufficient_scope`); `None` once a connection succeeds. An OAuth client
    /// starts its discovery from it.
    pub fn auth_challenge(&self) -> Option<String> {
        self.shared
            .auth_challenge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The server's configured name.
    pub fn name(&self) -> &Arc<str> {
        &self.shared.config.name
    }

    /// The server's configuration.
    pub fn config(&self) -> &UpstreamConfig {
        &self.shared.config
    }

    /// Whether it is serving.
    pub fn status(&self) -> Status {
        match &*self.shared.state.read().unwrap_or_else(|e| e.into_inner()) {
            State::Connecting => Status::Connecting,
            State::Ready { info, .. } => Status::Ready { info: info.clone() },
            State::Down { reason } => Status::Down {
                reason: reason.clone(),
            },
        }
    }

    /// The direct path, when the connection has one.
    fn direct(&self) -> Option<Arc<direct::Direct>> {
        match &*self.shared.state.read().unwrap_or_else(|e| e.into_inner()) {
            State::Ready { direct, .. } => direct.clone(),
            _ => None,
        }
    }

    /// Asks for a new connection because the server lost `old`'s session, and waits for it
    /// (the caller's timeout bounds the wait).
    async fn renew(&self, old: &Arc<direct::Direct>) -> Result<Arc<direct::Direct>, direct::Miss> {
        tracing::info!(server = %self.name(), "the upstream lost the session; opening a new one");
        self.shared.renew.notify_one();
        loop {
            // Decided under the lock, acted on after it (`peer()` takes it again).
            let seen = match &*self.shared.state.read().unwrap_or_else(|e| e.into_inner()) {
                State::Ready {
                    direct: Some(d), ..
                } if !Arc::ptr_eq(d, old) => Some(Ok(Arc::clone(d))),
                State::Ready { direct: None, .. } => Some(Err(None)),
                State::Down { reason } if !reason.contains("session") => Some(Err(Some(()))),
                _ => None,
            };
            match seen {
                Some(Ok(d)) => return Ok(d),
                Some(Err(None)) => return Err(direct::Miss::Fallback),
                Some(Err(Some(()))) => {
                    return Err(direct::Miss::Error(self.peer().err().unwrap_or_else(
                        || self.service_error(ServiceError::TransportClosed, Duration::ZERO),
                    )));
                }
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// The connected peer, or the error a caller should see.
    pub(crate) fn peer(&self) -> Result<Peer<RoleClient>, ErrorData> {
        match &*self.shared.state.read().unwrap_or_else(|e| e.into_inner()) {
            State::Ready { peer, .. } => Ok(peer.clone()),
            State::Connecting => Err(error(
                codes::UPSTREAM_UNAVAILABLE,
                format!(
                    "upstream '{}' is still connecting; try again shortly",
                    self.name()
                ),
                Some(serde_json::json!({"server": &*self.shared.config.name})),
            )),
            State::Down { reason } => Err(error(
                codes::UPSTREAM_UNAVAILABLE,
                format!("upstream '{}' is unavailable: {reason}", self.name()),
                Some(serde_json::json!({"server": &*self.shared.config.name})),
            )),
        }
    }

    /// Sends a request to the upstream and waits for its answer. The reverse-path messages it
    /// causes go to `ctx.downstream`. Dropping the future cancels the upstream request.
    pub async fn request(
        &self,
        method: &Method,
        params: JsonObject,
        ctx: &RequestContext,
    ) -> Result<Value, ErrorData> {
        self.request_with_timeout(method, params, ctx, self.shared.config.call_timeout)
            .await
    }

    pub(crate) async fn request_with_timeout(
        &self,
        method: &Method,
        mut params: JsonObject,
        ctx: &RequestContext,
        timeout: Duration,
    ) -> Result<Value, ErrorData> {
        // W3C trace context (SEP-414): the caller's (or the audit layer's) `_meta.traceparent`
        // passes through; otherwise the request's own context goes along. HTTP upstreams get it
        // as the `traceparent` header too (see `trace_header`, `direct`).
        if let Value::Object(meta) = params
            .entry("_meta")
            .or_insert_with(|| Value::Object(JsonObject::new()))
            && !meta.contains_key("traceparent")
        {
            meta.insert("traceparent".into(), Value::String(ctx.trace.traceparent()));
        }
        let started = tokio::time::Instant::now();
        if let Some(direct) = self.direct() {
            let attempt = async {
                match direct.request(method, &params, ctx).await {
                    Err(direct::Miss::SessionLost) => {
                        // A new session, then once more (on whichever path it offers).
                        let renewed = self.renew(&direct).await?;
                        match renewed.request(method, &params, ctx).await {
                            Err(direct::Miss::SessionLost) => Err(direct::Miss::Error(error(
                                codes::UPSTREAM_PROTOCOL,
                                format!(
                                    "upstream '{}' does not know a session it just opened",
                                    self.name()
                                ),
                                Some(serde_json::json!({"server": &*self.shared.config.name})),
                            ))),
                            other => other,
                        }
                    }
                    other => other,
                }
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(direct::Miss::Error(e))) => return Err(e),
                Ok(Err(direct::Miss::Fallback | direct::Miss::SessionLost)) => {}
                Err(_) => return Err(self.timeout_error(timeout)),
            }
        }
        let timeout = timeout.saturating_sub(started.elapsed());
        let peer = self.peer()?;
        let request = client_request(method, params)?;
        // Registered before sending, so a reverse-path message that overtakes the handle still
        // finds its request.
        let mut guard = self.shared.inflight.register(ctx, peer.clone());
        let options = {
            let mut o = PeerRequestOptions::no_options();
            o.timeout = Some(timeout);
            o
        };
        // The timeout covers the whole call: sending can itself wait on the upstream (rmcp sends
        // an HTTP POST and waits for its response head), and only then does rmcp's own timer run.
        let started = tokio::time::Instant::now();
        let handle =
            match tokio::time::timeout(timeout, peer.send_cancellable_request(request, options))
                .await
            {
                Ok(sent) => sent.map_err(|e| self.service_error(e, timeout))?,
                Err(_) => return Err(self.timeout_error(timeout)),
            };
        guard.bind(handle.id.clone(), handle.progress_token.clone());
        let left = timeout.saturating_sub(started.elapsed());
        let result = match tokio::time::timeout(left, handle.await_response()).await {
            Ok(result) => result,
            Err(_) => return Err(self.timeout_error(timeout)),
        };
        guard.finish();
        if guard.wants_progress() {
            // rmcp hands each notification to its own task but completes the response inline, so
            // the last progress notifications can still be on their way when the result arrives.
            // Let them through first (bounded), so the client sees them before the result closes
            // its stream.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            guard.progress().settle(Duration::from_millis(200)).await;
        }
        match result {
            Ok(result) => serde_json::to_value(result).map_err(|e| {
                error(
                    codes::UPSTREAM_PROTOCOL,
                    format!(
                        "upstream '{}' sent a result that cannot be encoded: {e}",
                        self.name()
                    ),
                    None,
                )
            }),
            Err(e) => Err(self.service_error(e, timeout)),
        }
    }

    /// Forwards a client notification (e.g. `notifications/roots/list_changed`).
    pub async fn notify(&self, method: &Method, params: JsonObject) -> Result<(), ErrorData> {
        let peer = self.peer()?;
        let notification = serde_json::from_value(serde_json::json!({
            "method": method.as_str(),
            "params": params,
        }))
        .map_err(|e| {
            error(
                codes::INVALID_PARAMS,
                format!("invalid notification params: {e}"),
                None,
            )
        })?;
        peer.send_notification(notification)
            .await
            .map_err(|e| self.service_error(e, Duration::ZERO))
    }

    fn timeout_error(&self, timeout: Duration) -> ErrorData {
        self.service_error(ServiceError::Timeout { timeout }, timeout)
    }

    fn service_error(&self, e: ServiceError, timeout: Duration) -> ErrorData {
        let server = serde_json::json!({"server": &*self.shared.config.name});
        match e {
            ServiceError::McpError(e) => e,
            ServiceError::Timeout { .. } => error(
                codes::UPSTREAM_TIMEOUT,
                format!(
                    "upstream '{}' did not answer within {} ms",
                    self.name(),
                    timeout.as_millis()
                ),
                Some(server),
            ),
            ServiceError::TransportSend(e) if auth_challenge(e.error.as_ref()).is_some() => {
                let (status, challenge) = auth_challenge(e.error.as_ref()).unwrap_or_default();
                error(
                    codes::UPSTREAM_AUTH_REQUIRED,
                    format!(
                        "upstream '{}' refused the request's credentials (HTTP {status})",
                        self.name()
                    ),
                    Some(serde_json::json!({
                        "server": &*self.shared.config.name,
                        "status": status,
                        "wwwAuthenticate": challenge,
                    })),
                )
            }
            ServiceError::TransportClosed
            | ServiceError::TransportSend(_)
            | ServiceError::Cancelled { .. } => error(
                codes::UPSTREAM_UNAVAILABLE,
                format!(
                    "upstream '{}' closed the connection before answering",
                    self.name()
                ),
                Some(server),
            ),
            other => error(
                codes::UPSTREAM_PROTOCOL,
                format!("upstream '{}' failed: {other}", self.name()),
                Some(server),
            ),
        }
    }

    /// Stops the upstream (the child process is asked to exit, then killed).
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Whether the upstream has stopped for good after [`shutdown`](Self::shutdown).
    pub fn is_stopped(&self) -> bool {
        self.shared
            .stopped
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The HTTP status (401 or 403) and `WWW-Authenticate` value of a transport error caused by an
/// authentication refusal, found anywhere in its chain of causes.
fn auth_challenge(e: &(dyn std::error::Error + 'static)) -> Option<(u16, String)> {
    use rmcp::transport::streamable_http_client::{AuthRequiredError, InsufficientScopeError};
    let mut cause = Some(e);
    while let Some(current) = cause {
        if let Some(e) = current.downcast_ref::<AuthRequiredError>() {
            return Some((401, e.www_authenticate_header.clone()));
        }
        if let Some(e) = current.downcast_ref::<InsufficientScopeError>() {
            return Some((403, e.www_authenticate_header.clone()));
        }
        cause = current.source();
    }
    None
}

/// Why a connection attempt failed; `challenge` when the server refused the credentials.
struct ConnectError {
    message: String,
    challenge: Option<String>,
}

impl From<String> for ConnectError {
    fn from(message: String) -> Self {
        Self {
            message,
            challenge: None,
        }
    }
}

/// Turns a method and raw params into rmcp's typed request (unknown methods become custom
/// requests, so they pass through unchanged).
fn client_request(method: &Method, params: JsonObject) -> Result<ClientRequest, ErrorData> {
    let mut message = JsonObject::with_capacity(2);
    message.insert("method".into(), Value::String(method.as_str().to_owned()));
    message.insert("params".into(), Value::Object(params));
    serde_json::from_value(Value::Object(message)).map_err(|e| {
        error(
            codes::INVALID_PARAMS,
            format!("invalid params for {method}: {e}"),
            None,
        )
    })
}

// === supervision ===

async fn supervise(shared: std::sync::Weak<Shared>) {
    run(&shared).await;
    if let Some(s) = shared.upgrade() {
        *s.state.write().unwrap_or_else(|e| e.into_inner()) = State::Down {
            reason: "the gateway is shutting down".into(),
        };
        s.stopped.store(true, std::sync::atomic::Ordering::Release);
    }
}

async fn run(shared: &std::sync::Weak<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(s) = shared.upgrade() else { return };
        let shutdown = s.shutdown.clone();
        let name = s.config.name.clone();
        let started = Instant::now();
        let connected = tokio::select! {
            r = tokio::time::timeout(s.config.connect_timeout, connect(&s)) => match r {
                Ok(r) => r,
                Err(_) => Err(ConnectError::from(format!("no answer to the handshake within {} s", s.config.connect_timeout.as_secs()))),
            },
            _ = shutdown.cancelled() => return,
        };
        match connected {
            Ok((mut running, direct)) => {
                *s.auth_challenge.lock().unwrap_or_else(|e| e.into_inner()) = None;
                let peer = running.peer().clone();
                let info = peer.peer_info().unwrap_or_else(|| {
                    Arc::new(ServerPeerInfo::new(
                        ProtocolVersion::LATEST_WITH_INITIALIZE,
                        Default::default(),
                    ))
                });
                tracing::info!(server = %name, protocol = %info.protocol_version, "upstream connected");
                // The direct path serves 2025 sessions (2026-07-28 requests carry more state).
                let direct =
                    direct.filter(|_| info.protocol_version != ProtocolVersion::V_2026_07_28);
                *s.state.write().unwrap_or_else(|e| e.into_inner()) =
                    State::Ready { peer, info, direct };
                s.events.publish(GatewayEvent::UpstreamUp {
                    server: name.clone(),
                });
                let _ = s.refresh.send(name.clone());
                let renew = Arc::clone(&s.renew);
                drop(s);
                let closed = tokio::select! {
                    r = closed(&running) => r,
                    _ = renew.notified() => {
                        let _ = running.close_with_timeout(Duration::from_secs(1)).await;
                        backoff = Duration::ZERO;
                        "the server lost the session"
                    }
                    _ = shutdown.cancelled() => {
                        let _ = running.close_with_timeout(Duration::from_secs(5)).await;
                        return;
                    }
                };
                let Some(s) = shared.upgrade() else { return };
                let reason = format!("connection closed ({closed})");
                tracing::warn!(server = %name, %reason, "upstream down");
                *s.state.write().unwrap_or_else(|e| e.into_inner()) = State::Down {
                    reason: reason.clone(),
                };
                s.inflight.fail_all();
                s.events.publish(GatewayEvent::UpstreamDown {
                    server: name.clone(),
                    reason,
                });
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(100);
                }
            }
            Err(ConnectError {
                message: reason,
                challenge,
            }) => {
                tracing::warn!(server = %name, %reason, "upstream connection failed");
                *s.auth_challenge.lock().unwrap_or_else(|e| e.into_inner()) = challenge;
                let was_down = matches!(
                    &*s.state.read().unwrap_or_else(|e| e.into_inner()),
                    State::Down { .. }
                );
                *s.state.write().unwrap_or_else(|e| e.into_inner()) = State::Down {
                    reason: reason.clone(),
                };
                if !was_down {
                    s.events.publish(GatewayEvent::UpstreamDown {
                        server: name.clone(),
                        reason,
                    });
                }
            }
        }
        let Some(s) = shared.upgrade() else { return };
        let max = s.config.max_backoff;
        drop(s);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).max(Duration::from_millis(100)).min(max);
    }
}

/// Waits until the connection ends on its own (child exited, HTTP session gone).
async fn closed(running: &RunningService<RoleClient, UpstreamHandler>) -> &'static str {
    // `waiting` consumes the service, and shutdown must still be able to close it gracefully, so
    // watch the peer's channel instead (it closes when the service loop ends).
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if running.peer().is_transport_closed() {
            return "transport closed";
        }
    }
}

/// Connects with the configured protocol. `Auto` tries the `initialize` handshake first and
/// falls back to `server/discover` (2026-07-28 only servers): the gateway keeps one long-lived
/// session per upstream, where a legacy session is the richer one (server-to-client requests on
/// the call's own stream, `resources/subscribe`, logging), and servers that speak 2026-07-28
/// almost always speak 2025-11-25 too.
/// A connection: rmcp's service, and the direct path when the transport has one.
type Connected = (
    RunningService<RoleClient, UpstreamHandler>,
    Option<Arc<direct::Direct>>,
);

async fn connect(s: &Arc<Shared>) -> Result<Connected, ConnectError> {
    let modern = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    match s.config.protocol {
        ProtocolMode::Legacy => connect_with(s, ClientLifecycleMode::Initialize).await,
        ProtocolMode::Modern => connect_with(s, modern).await,
        ProtocolMode::Auto => match connect_with(s, ClientLifecycleMode::Initialize).await {
            Ok(running) => Ok(running),
            // A refused credential is refused whatever the handshake: no second attempt.
            Err(legacy) if legacy.challenge.is_some() => Err(legacy),
            Err(legacy) => connect_with(s, modern)
                .await
                .map_err(|modern| ConnectError {
                    message: format!(
                        "{}; and with server/discover: {}",
                        legacy.message, modern.message
                    ),
                    challenge: modern.challenge,
                }),
        },
    }
}

async fn connect_with(
    s: &Arc<Shared>,
    lifecycle: ClientLifecycleMode,
) -> Result<Connected, ConnectError> {
    let handler = UpstreamHandler::new(Arc::downgrade(s));
    match &s.config.transport {
        Transport::Stdio {
            command,
            args,
            env,
            cwd,
        } => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args).envs(env).kill_on_drop(true);
            if let Some(cwd) = cwd {
                cmd.current_dir(cwd);
            }
            let mut wrap = process_wrap::tokio::CommandWrap::from(cmd);
            wrap.wrap(process_wrap::tokio::ProcessGroup::leader());
            let (transport, stderr) = TokioChildProcess::builder(wrap)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| ConnectError::from(format!("cannot start '{command}': {e}")))?;
            if let Some(stderr) = stderr {
                let name = s.config.name.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::info!(target: "upstream::stderr", server = %name, "{line}");
                    }
                });
            }
            handler
                .serve_with_lifecycle(transport, lifecycle)
                .await
                .map(|running| (running, None))
                .map_err(|e| ConnectError::from(format!("handshake with '{command}' failed: {e}")))
        }
        Transport::Http { url, headers } => {
            let guarded = !s.config.allow_link_local;
            if guarded && let Some((host, why)) = crate::ssrf::refused_url(url) {
                return Err(ConnectError::from(format!(
                    "refused to connect to {url}: its host {host} is {why} (allow_link_local allows it)"
                )));
            }
            let mut custom = std::collections::HashMap::new();
            let mut all = http::HeaderMap::new();
            let mut auth = None;
            for (k, v) in headers {
                let name = http::HeaderName::try_from(k.as_str())
                    .map_err(|e| ConnectError::from(format!("invalid header name '{k}': {e}")))?;
                let value = http::HeaderValue::try_from(v.as_str()).map_err(|e| {
                    ConnectError::from(format!("invalid value for header '{k}': {e}"))
                })?;
                all.insert(name.clone(), value.clone());
                if k.eq_ignore_ascii_case("authorization") {
                    auth = Some(v.trim_start_matches("Bearer ").to_owned());
                    continue;
                }
                custom.insert(name, value);
            }
            let session = Arc::new(direct::SessionSlot::default());
            // rmcp caps concurrent POSTs per transport at 16; one transport carries every
            // downstream session's calls here.
            let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                .custom_headers(custom)
                .max_concurrent_requests(256)
                .reinit_on_expired_session(true);
            if let Some(auth) = auth {
                config = config.auth_header(auth);
            }
            let transport = StreamableHttpClientTransport::with_client(
                trace_header::TraceHeaders::new(http_client(guarded), Arc::clone(&session)),
                config,
            );
            let running = handler
                .serve_with_lifecycle(transport, lifecycle)
                .await
                .map_err(|e| ConnectError {
                    challenge: e.auth_challenge().map(str::to_owned),
                    message: format!("handshake with {url} failed: {e}"),
                })?;
            let protocol = running
                .peer()
                .peer_info()
                .and_then(|i| http::HeaderValue::from_str(i.protocol_version.as_str()).ok());
            let direct = protocol.map(|protocol| {
                Arc::new(direct::Direct {
                    client: http_client(guarded),
                    url: url.clone(),
                    headers: all,
                    session,
                    protocol,
                    server: s.config.name.clone(),
                })
            });
            Ok((running, direct))
        }
    }
}

/// One pooled HTTP client for every upstream (rmcp's default disables connection reuse); the
/// guarded one resolves names through [`crate::ssrf::GuardedResolver`].
fn http_client(guarded: bool) -> reqwest::Client {
    static GUARDED: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    static OPEN: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let cell = if guarded { &GUARDED } else { &OPEN };
    cell.get_or_init(|| {
        let builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            // Upstream redirects are not followed (and cost a layer per request).
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64);
        let builder = if guarded {
            builder.dns_resolver(Arc::new(crate::ssrf::GuardedResolver))
        } else {
            builder
        };
        builder.build().unwrap_or_default()
    })
    .clone()
}

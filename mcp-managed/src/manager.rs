//! The instance manager: which instances exist, who may use them, starting them on first use,
//! probing them, restarting them after an outage, reaping idle ones, and lifecycle operations
//! (recreate, rolling update, drain, teardown).
//!
//! - **Managed-Shared**: one instance (`shared`) for everybody allowed, plus any named instances
//!   with their own access lists.
//! - **Managed-Dedicated**: one instance per identity (or per team), started on first use, reaped
//!   after `idle_timeout` without traffic, at most `max_instances` per server.
//! - Traffic is routed only to a generation whose bridge answered `/readyz` (initialize and
//!   tools/list passed).
//! - A health monitor probes each instance; `failure_threshold` failures in a row publish
//!   [`GatewayEvent::UpstreamDown`] (server `"<server>/<instance>"`), stop routing to it and
//!   restart it with exponential backoff; the first ready probe after that publishes
//!   [`GatewayEvent::UpstreamUp`].

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine as _;
use mcp_gateway_core::{ErrorData, EventBus, GatewayEvent, Identity, codes, error};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{
    runtime::{Handle, Launch, Runtime},
    spec::{InstanceSpec, SECRET_HEADER},
    types::{InstanceTypes, Resolved},
};

// === public types ===

/// Where the dispatch sends a request for a managed server: the instance's Streamable HTTP URL
/// and the header carrying its shared secret. Put into `RequestContext::extensions` by the
/// managed layer.
#[derive(Clone)]
pub struct InstanceEndpoint {
    /// The server.
    pub server: Arc<str>,
    /// The instance (`shared`, `u-alice-…`, a named instance).
    pub instance: Arc<str>,
    /// The MCP endpoint (`http://127.0.0.1:PORT/mcp`).
    pub url: Arc<str>,
    /// The secret header to send with every request (`x-mcp-bridge-secret`; marked sensitive).
    pub secret_header: (http::HeaderName, http::HeaderValue),
    /// Which generation of the instance (changes on restart, recreate and rolling update).
    pub generation: u64,
}

impl fmt::Debug for InstanceEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceEndpoint")
            .field("server", &self.server)
            .field("instance", &self.instance)
            .field("url", &self.url)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl InstanceEndpoint {
    /// Sends one JSON-RPC request to the instance over plain HTTP (a fresh connection, no
    /// session) and returns the JSON-RPC answer; for admin tools, checks and benches. The
    /// gateway's dispatch talks to [`InstanceEndpoint::url`] with its own pooled client instead.
    pub async fn call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, mcp_gateway_core::BoxError> {
        use http_body_util::BodyExt as _;
        let uri: http::Uri = self.url.parse()?;
        let host = uri
            .authority()
            .ok_or("no host in the instance URL")?
            .to_string();
        let stream = tokio::net::TcpStream::connect(&host).await?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let req = http::Request::post(uri.path())
            .header(http::header::HOST, &host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header(self.secret_header.0.clone(), self.secret_header.1.clone())
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))?;
        let res = sender.send_request(req).await?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(format!(
                "instance answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            )
            .into());
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// How a server's instances are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// One instance for everybody (Managed-Shared).
    Shared,
    /// One instance per identity (Managed-Dedicated).
    PerIdentity,
    /// One instance per team (the caller's first team).
    PerTeam,
}

/// Who may use an instance. Empty lists: everybody.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessList {
    /// Subjects allowed.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Teams allowed.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Roles allowed.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl AccessList {
    /// Whether the list allows everybody.
    pub fn is_open(&self) -> bool {
        self.subjects.is_empty() && self.teams.is_empty() && self.roles.is_empty()
    }

    /// Whether `identity` may use it.
    pub fn allows(&self, identity: Option<&Identity>) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(id) = identity else { return false };
        self.subjects.iter().any(|s| **s == *id.subject)
            || self.teams.iter().any(|t| id.in_team(t))
            || self.roles.iter().any(|r| id.has_role(r))
    }
}

/// Resolves the spec's secret references (`secrets: {TOKEN = "env:GITHUB_TOKEN"}`) at start.
pub trait SecretSource: Send + Sync + 'static {
    /// The value for `reference`, or why not.
    fn resolve(&self, reference: &str, identity: Option<&Identity>) -> Result<String, String>;
}

impl<F> SecretSource for F
where
    F: Fn(&str, Option<&Identity>) -> Result<String, String> + Send + Sync + 'static,
{
    fn resolve(&self, reference: &str, identity: Option<&Identity>) -> Result<String, String> {
        self(reference, identity)
    }
}

/// The default [`SecretSource`]: `env:NAME` reads the gateway's own environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSecrets;

impl SecretSource for EnvSecrets {
    fn resolve(&self, reference: &str, _: Option<&Identity>) -> Result<String, String> {
        match reference.strip_prefix("env:") {
            Some(name) => std::env::var(name).map_err(|_| format!("${name} is not set")),
            None => Err(format!(
                "unknown secret reference {reference:?} (this source knows `env:NAME`)"
            )),
        }
    }
}

/// One managed server, as the manager runs it.
#[derive(Clone)]
pub struct ServerSettings {
    /// The spec.
    pub spec: InstanceSpec,
    /// Where its instances run.
    pub runtime: Arc<dyn Runtime>,
    /// Shared or dedicated.
    pub sharing: Sharing,
    /// Who may use the server at all.
    pub access: AccessList,
    /// Named instances (always shared among those their list allows).
    pub named: BTreeMap<String, AccessList>,
    /// Dedicated: reaped after this long without traffic.
    pub idle_timeout: Duration,
    /// Dedicated: at most this many instances.
    pub max_instances: usize,
}

impl fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSettings")
            .field("spec", &self.spec.name)
            .field("runtime", &self.runtime.name())
            .field("sharing", &self.sharing)
            .finish_non_exhaustive()
    }
}

impl ServerSettings {
    /// A shared server on `runtime`.
    pub fn new(spec: InstanceSpec, runtime: Arc<dyn Runtime>) -> Self {
        Self {
            spec,
            runtime,
            sharing: Sharing::Shared,
            access: AccessList::default(),
            named: BTreeMap::new(),
            idle_timeout: Duration::from_secs(600),
            max_instances: 50,
        }
    }

    /// Shared or dedicated.
    #[must_use]
    pub fn sharing(mut self, sharing: Sharing) -> Self {
        self.sharing = sharing;
        self
    }

    /// Who may use the server.
    #[must_use]
    pub fn access(mut self, access: AccessList) -> Self {
        self.access = access;
        self
    }

    /// Adds a named instance with its access list.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>, access: AccessList) -> Self {
        self.named.insert(name.into(), access);
        self
    }

    /// Idle time after which a dedicated instance is reaped.
    #[must_use]
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Cap on dedicated instances.
    #[must_use]
    pub fn max_instances(mut self, n: usize) -> Self {
        self.max_instances = n;
        self
    }
}

/// Manager-wide timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// First restart delay after an outage (doubles up to `restart_backoff_max`).
    pub restart_backoff: Duration,
    /// Longest restart delay.
    pub restart_backoff_max: Duration,
    /// How often idle dedicated instances are looked for.
    pub reap_interval: Duration,
    /// How often a starting instance's readiness is polled.
    pub ready_poll: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            restart_backoff: Duration::from_millis(500),
            restart_backoff_max: Duration::from_secs(30),
            reap_interval: Duration::from_secs(5),
            ready_poll: Duration::from_millis(10),
        }
    }
}

/// A refusal or failure while resolving an instance; becomes a JSON-RPC error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ManagedError {
    code: i32,
    message: String,
}

impl ManagedError {
    fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The JSON-RPC error code.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// As JSON-RPC error data.
    pub fn to_error_data(&self) -> ErrorData {
        error(self.code, self.message.clone(), None)
    }
}

/// An instance's state, for admin listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Not started (or reaped, or starting).
    Stopped,
    /// Serving.
    Ready,
    /// Outage: not serving, being restarted.
    Down,
    /// Maintenance: no new sessions.
    Draining,
}

/// One instance, for admin listings.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceInfo {
    /// Server.
    pub server: String,
    /// Instance.
    pub instance: String,
    /// State.
    pub state: InstanceState,
    /// URL when ready.
    pub url: Option<String>,
    /// Generation.
    pub generation: u64,
    /// Requests in flight.
    pub in_flight: usize,
    /// Time since the last request, in ms.
    pub idle_ms: u64,
    /// The runtime's id (pid, container id).
    pub runtime_id: Option<String>,
}

// === internals ===

struct Generation {
    number: u64,
    handle: Handle,
    endpoint: InstanceEndpoint,
    in_flight: AtomicUsize,
    idle: tokio::sync::Notify,
}

struct Server {
    name: Arc<str>,
    resolved: RwLock<Resolved>,
    settings: ServerSettings,
}

struct Instance {
    server: Arc<Server>,
    name: Arc<str>,
    secret: String,
    identity: Option<Identity>,
    current: RwLock<Option<Arc<Generation>>>,
    start_lock: tokio::sync::Mutex<()>,
    generations: AtomicU64,
    last_used: Mutex<Instant>,
    draining: AtomicBool,
    down: AtomicBool,
    sessions: Mutex<HashSet<Arc<str>>>,
    stop: CancellationToken,
    monitor_started: AtomicBool,
}

type Key = (Arc<str>, Arc<str>);

struct Inner {
    types: InstanceTypes,
    servers: HashMap<Arc<str>, Arc<Server>>,
    instances: Mutex<HashMap<Key, Arc<Instance>>>,
    events: EventBus,
    secrets: Arc<dyn SecretSource>,
    timing: Timing,
    stop: CancellationToken,
}

/// The instance manager. Cheap to clone; [`Manager::shutdown`] tears everything down.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("servers", &self.inner.servers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Manager`].
pub struct ManagerBuilder {
    types: InstanceTypes,
    servers: Vec<ServerSettings>,
    events: EventBus,
    secrets: Arc<dyn SecretSource>,
    timing: Timing,
}

impl fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Default for ManagerBuilder {
    fn default() -> Self {
        Self {
            types: InstanceTypes::default(),
            servers: Vec::new(),
            events: EventBus::default(),
            secrets: Arc::new(EnvSecrets),
            timing: Timing::default(),
        }
    }
}

impl ManagerBuilder {
    /// The instance-type registry.
    #[must_use]
    pub fn types(mut self, types: InstanceTypes) -> Self {
        self.types = types;
        self
    }

    /// Adds a server.
    #[must_use]
    pub fn server(mut self, server: ServerSettings) -> Self {
        self.servers.push(server);
        self
    }

    /// Where outage and recovery events go.
    #[must_use]
    pub fn events(mut self, events: EventBus) -> Self {
        self.events = events;
        self
    }

    /// Where secret references are resolved.
    #[must_use]
    pub fn secrets(mut self, secrets: impl SecretSource) -> Self {
        self.secrets = Arc::new(secrets);
        self
    }

    /// Timing.
    #[must_use]
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Validates every spec and starts the reaper. Must run inside a tokio runtime.
    pub fn build(self) -> Result<Manager, crate::spec::SpecError> {
        let mut servers = HashMap::new();
        for s in self.servers {
            let resolved = self.types.resolve(&s.spec)?;
            for n in s.named.keys() {
                if !crate::spec::is_dns_label(n, 40) {
                    return Err(crate::spec::SpecError::new(
                        &s.spec.name,
                        format!("instances.{n}"),
                        "instance names are DNS labels (a-z, 0-9, `-`)",
                    ));
                }
            }
            if servers.contains_key(s.spec.name.as_str()) {
                return Err(crate::spec::SpecError::new(
                    &s.spec.name,
                    "name",
                    "two managed servers have this name",
                ));
            }
            let name: Arc<str> = s.spec.name.as_str().into();
            servers.insert(
                name.clone(),
                Arc::new(Server {
                    name,
                    resolved: RwLock::new(resolved),
                    settings: s,
                }),
            );
        }
        let inner = Arc::new(Inner {
            types: self.types,
            servers,
            instances: Mutex::new(HashMap::new()),
            events: self.events,
            secrets: self.secrets,
            timing: self.timing,
            stop: CancellationToken::new(),
        });
        tokio::spawn(reaper(Arc::downgrade(&inner), inner.stop.clone()));
        Ok(Manager { inner })
    }
}

/// Holds an instance's generation busy while a request uses it (counts in-flight requests).
pub struct Lease {
    generation: Arc<Generation>,
    instance: Arc<Instance>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Lease")
            .field(&self.generation.endpoint)
            .finish()
    }
}

impl Lease {
    /// The endpoint to send to.
    pub fn endpoint(&self) -> &InstanceEndpoint {
        &self.generation.endpoint
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut t) = self.instance.last_used.lock() {
            *t = Instant::now();
        }
        if self.generation.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.generation.idle.notify_waiters();
        }
    }
}

fn random_secret() -> String {
    let mut b = [0u8; 32];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A DNS-label instance name for a subject or team: a readable prefix and a hash.
fn key_name(prefix: &str, raw: &str) -> String {
    let readable: String = raw
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(16)
        .collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    let hex: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if readable.is_empty() {
        format!("{prefix}-{hex}")
    } else {
        format!("{prefix}-{readable}-{hex}")
    }
}

impl Manager {
    /// A builder.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// Whether `server` is managed here.
    pub fn is_managed(&self, server: &str) -> bool {
        self.inner.servers.contains_key(server)
    }

    /// The managed servers' names.
    pub fn servers(&self) -> Vec<Arc<str>> {
        self.inner.servers.keys().cloned().collect()
    }

    /// The event bus outage and recovery events go to.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// The instance name a caller gets when they select none.
    pub fn default_instance(
        &self,
        server: &str,
        identity: Option<&Identity>,
    ) -> Result<String, ManagedError> {
        let s = self.server(server)?;
        match s.settings.sharing {
            Sharing::Shared => Ok("shared".into()),
            Sharing::PerIdentity => identity.map(|i| key_name("u", &i.subject)).ok_or_else(|| {
                ManagedError::new(
                    codes::UNAUTHORIZED,
                    format!("`{server}` runs one instance per user: sign in first"),
                )
            }),
            Sharing::PerTeam => identity
                .and_then(|i| i.teams.first())
                .map(|t| key_name("t", t))
                .ok_or_else(|| {
                    ManagedError::new(
                        codes::UNAUTHORIZED,
                        format!("`{server}` runs one instance per team: the caller has no team"),
                    )
                }),
        }
    }

    fn server(&self, server: &str) -> Result<Arc<Server>, ManagedError> {
        self.inner.servers.get(server).cloned().ok_or_else(|| {
            ManagedError::new(
                codes::INVALID_PARAMS,
                format!("`{server}` is not a managed server"),
            )
        })
    }

    /// Resolves (and starts, when needed) the instance that serves this caller, and leases its
    /// ready generation. `selected` is an instance the caller asked for by name (URL path or
    /// header); `session` keeps a draining instance serving sessions it already had.
    pub async fn acquire(
        &self,
        server: &str,
        identity: Option<&Identity>,
        selected: Option<&str>,
        session: Option<&str>,
    ) -> Result<Lease, ManagedError> {
        let s = self.server(server)?;
        let denied = |name: &str| {
            ManagedError::new(
                codes::POLICY_DENIED,
                format!("instance `{name}` of `{server}` is not available to you"),
            )
        };
        if !s.settings.access.allows(identity) {
            return Err(ManagedError::new(
                codes::POLICY_DENIED,
                format!("you may not use `{server}`"),
            ));
        }
        let own = self.default_instance(server, identity);
        let name = match selected {
            None => own?,
            Some(sel) => {
                if let Some(acl) = s.settings.named.get(sel) {
                    if !acl.allows(identity) {
                        return Err(denied(sel));
                    }
                    sel.to_string()
                } else if own.as_deref().ok() == Some(sel) {
                    sel.to_string()
                } else {
                    return Err(denied(sel));
                }
            }
        };
        let instance = self.instance(&s, &name, identity)?;
        instance.lease(&self.inner, session).await
    }

    fn instance(
        &self,
        s: &Arc<Server>,
        name: &str,
        identity: Option<&Identity>,
    ) -> Result<Arc<Instance>, ManagedError> {
        let key: Key = (s.name.clone(), name.into());
        let mut map = self
            .inner
            .instances
            .lock()
            .map_err(|_| ManagedError::new(codes::INTERNAL_ERROR, "instance table poisoned"))?;
        if let Some(i) = map.get(&key) {
            return Ok(i.clone());
        }
        let dedicated =
            s.settings.sharing != Sharing::Shared && !s.settings.named.contains_key(name);
        if dedicated {
            let count = map.keys().filter(|(srv, _)| *srv == s.name).count();
            if count >= s.settings.max_instances {
                return Err(ManagedError::new(
                    codes::UPSTREAM_UNAVAILABLE,
                    format!(
                        "`{}` is at its cap of {} instances; try again later",
                        s.name, s.settings.max_instances
                    ),
                ));
            }
        }
        let inst = Arc::new(Instance {
            server: s.clone(),
            name: key.1.clone(),
            secret: random_secret(),
            identity: identity.cloned(),
            current: RwLock::new(None),
            start_lock: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
            last_used: Mutex::new(Instant::now()),
            draining: AtomicBool::new(false),
            down: AtomicBool::new(false),
            sessions: Mutex::new(HashSet::new()),
            stop: self.inner.stop.child_token(),
            monitor_started: AtomicBool::new(false),
        });
        map.insert(key, inst.clone());
        Ok(inst)
    }

    fn find(&self, server: &str, instance: &str) -> Option<Arc<Instance>> {
        let map = self.inner.instances.lock().ok()?;
        map.get(&(Arc::from(server), Arc::from(instance))).cloned()
    }

    fn all(&self) -> Vec<Arc<Instance>> {
        self.inner
            .instances
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every instance, for the admin API.
    pub fn list(&self) -> Vec<InstanceInfo> {
        let mut v: Vec<InstanceInfo> = self.all().iter().map(|i| i.info()).collect();
        v.sort_by(|a, b| (&a.server, &a.instance).cmp(&(&b.server, &b.instance)));
        v
    }

    /// Starts an instance now (e.g. a shared one at gateway start) and waits until it is ready.
    pub async fn ensure(
        &self,
        server: &str,
        instance: &str,
    ) -> Result<InstanceEndpoint, ManagedError> {
        let s = self.server(server)?;
        let inst = self.instance(&s, instance, None)?;
        let lease = inst.lease(&self.inner, None).await?;
        Ok(lease.endpoint().clone())
    }

    /// The instance the gateway lists a server's features from when it cannot run the server's
    /// command itself (containers, SSH hosts): `shared` for a shared server, else a dedicated
    /// `catalog` instance nobody else can select (it counts towards the cap and is reaped when
    /// idle like any dedicated instance; the next listing starts it again).
    pub fn catalog_instance(&self, server: &str) -> Result<&'static str, ManagedError> {
        Ok(match self.server(server)?.settings.sharing {
            Sharing::Shared => "shared",
            Sharing::PerIdentity | Sharing::PerTeam => "catalog",
        })
    }

    /// Leases (starting it when needed) the [`Manager::catalog_instance`] of `server`.
    pub async fn catalog_lease(&self, server: &str) -> Result<Lease, ManagedError> {
        let s = self.server(server)?;
        let name = self.catalog_instance(server)?;
        let inst = self.instance(&s, name, None)?;
        inst.lease(&self.inner, None).await
    }

    /// Replaces an instance with a fresh one: the new generation starts and becomes ready, then
    /// traffic moves to it, then the old one stops once its in-flight requests finished.
    pub async fn recreate(
        &self,
        server: &str,
        instance: &str,
    ) -> Result<InstanceEndpoint, ManagedError> {
        let inst = self.find(server, instance).ok_or_else(|| {
            ManagedError::new(
                codes::INVALID_PARAMS,
                format!("no instance `{server}/{instance}`"),
            )
        })?;
        inst.replace(&self.inner).await
    }

    /// Rolling update: validates `spec` (same name), switches the server to it, and recreates its
    /// instances one at a time (each new one ready before the old one goes).
    pub async fn rolling_update(&self, spec: InstanceSpec) -> Result<usize, ManagedError> {
        let s = self.server(&spec.name)?;
        let resolved = self
            .inner
            .types
            .resolve(&spec)
            .map_err(|e| ManagedError::new(codes::INVALID_PARAMS, e.to_string()))?;
        if let Ok(mut r) = s.resolved.write() {
            *r = resolved;
        }
        let mut n = 0;
        for inst in self.all().into_iter().filter(|i| i.server.name == s.name) {
            inst.replace(&self.inner).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Maintenance mode: the instance takes no new sessions, keeps serving the ones it has, and
    /// is torn down once nothing used it for `grace` (or after `deadline`).
    pub fn drain(&self, server: &str, instance: &str, grace: Duration, deadline: Duration) -> bool {
        let Some(inst) = self.find(server, instance) else {
            return false;
        };
        inst.draining.store(true, Ordering::Release);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                let idle = inst
                    .last_used
                    .lock()
                    .map(|t| t.elapsed())
                    .unwrap_or_default();
                let busy = inst.in_flight() > 0;
                if (!busy && idle >= grace) || start.elapsed() >= deadline {
                    break;
                }
                tokio::time::sleep(grace.min(Duration::from_millis(100))).await;
            }
            teardown(&inner, &inst).await;
        });
        true
    }

    /// Stops and forgets an instance.
    pub async fn teardown(&self, server: &str, instance: &str) -> bool {
        match self.find(server, instance) {
            Some(inst) => {
                teardown(&self.inner, &inst).await;
                true
            }
            None => false,
        }
    }

    /// Reaps dedicated instances idle longer than their server's `idle_timeout` now; returns how
    /// many went.
    pub async fn reap_idle(&self) -> usize {
        reap_once(&self.inner).await
    }

    /// Tears every instance down and stops background tasks.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let all = self.all();
        futures::future::join_all(all.iter().map(|i| teardown(&self.inner, i))).await;
    }
}

impl Instance {
    fn key(&self) -> Key {
        (self.server.name.clone(), self.name.clone())
    }

    fn event_name(&self) -> Arc<str> {
        format!("{}/{}", self.server.name, self.name).into()
    }

    fn in_flight(&self) -> usize {
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|g| g.in_flight.load(Ordering::Acquire)))
            .unwrap_or(0)
    }

    fn routable(&self) -> Option<Arc<Generation>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    fn info(&self) -> InstanceInfo {
        let cur = self.routable();
        let state = if self.draining.load(Ordering::Acquire) {
            InstanceState::Draining
        } else if self.down.load(Ordering::Acquire) {
            InstanceState::Down
        } else if cur.is_some() {
            InstanceState::Ready
        } else {
            InstanceState::Stopped
        };
        InstanceInfo {
            server: self.server.name.to_string(),
            instance: self.name.to_string(),
            state,
            url: cur.as_ref().map(|g| g.endpoint.url.to_string()),
            generation: cur.as_ref().map_or(0, |g| g.number),
            in_flight: cur
                .as_ref()
                .map_or(0, |g| g.in_flight.load(Ordering::Acquire)),
            idle_ms: self
                .last_used
                .lock()
                .map(|t| t.elapsed().as_millis() as u64)
                .unwrap_or(0),
            runtime_id: cur.as_ref().map(|g| g.handle.id.clone()),
        }
    }

    fn lease_of(self: &Arc<Self>, g: Arc<Generation>) -> Lease {
        g.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
        Lease {
            generation: g,
            instance: self.clone(),
        }
    }

    async fn lease(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        session: Option<&str>,
    ) -> Result<Lease, ManagedError> {
        if self.draining.load(Ordering::Acquire) {
            let known = session.is_some_and(|s| {
                self.sessions
                    .lock()
                    .map(|set| set.contains(s))
                    .unwrap_or(false)
            });
            if !known {
                return Err(ManagedError::new(
                    codes::UPSTREAM_UNAVAILABLE,
                    format!(
                        "instance `{}` of `{}` is draining (maintenance): no new sessions",
                        self.name, self.server.name
                    ),
                ));
            }
        } else if let Some(s) = session
            && let Ok(mut set) = self.sessions.lock()
            && !set.contains(s)
        {
            set.insert(s.into());
        }
        if let Some(g) = self.routable() {
            return Ok(self.lease_of(g));
        }
        let ready_timeout = self
            .server
            .resolved
            .read()
            .map_or(Duration::from_secs(30), |r| r.health.ready_timeout);
        let guard = tokio::time::timeout(ready_timeout, self.start_lock.lock())
            .await
            .map_err(|_| {
                ManagedError::new(
                    codes::UPSTREAM_UNAVAILABLE,
                    format!("`{}` is still starting", self.event_name()),
                )
            })?;
        if let Some(g) = self.routable() {
            return Ok(self.lease_of(g));
        }
        let g = self.start_generation(inner).await?;
        self.install(inner, g.clone());
        drop(guard);
        Ok(self.lease_of(g))
    }

    fn install(self: &Arc<Self>, inner: &Arc<Inner>, g: Arc<Generation>) {
        if let Ok(mut cur) = self.current.write() {
            *cur = Some(g);
        }
        if !self.monitor_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(monitor(Arc::downgrade(inner), self.clone()));
        }
    }

    async fn start_generation(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
    ) -> Result<Arc<Generation>, ManagedError> {
        let resolved = self
            .server
            .resolved
            .read()
            .map(|r| r.clone())
            .map_err(|_| ManagedError::new(codes::INTERNAL_ERROR, "spec lock poisoned"))?;
        let unavailable = |m: String| ManagedError::new(codes::UPSTREAM_UNAVAILABLE, m);
        let mut secret_values = BTreeMap::new();
        for (k, reference) in &resolved.spec.secrets {
            let v = inner
                .secrets
                .resolve(reference, self.identity.as_ref())
                .map_err(|e| unavailable(format!("secret {k} for `{}`: {e}", self.server.name)))?;
            secret_values.insert(k.clone(), v);
        }
        let number = self.generations.fetch_add(1, Ordering::AcqRel) + 1;
        let launch = Launch {
            unique_name: format!("mcp-{}-{}-g{number}", self.server.name, self.name),
            resolved: resolved.clone(),
            instance: self.name.to_string(),
            secret: self.secret.clone(),
            secret_values,
        };
        let runtime = &self.server.settings.runtime;
        let handle = runtime
            .start(&launch)
            .await
            .map_err(|e| unavailable(format!("`{}` did not start: {e}", self.event_name())))?;
        let deadline = Instant::now() + resolved.health.ready_timeout;
        let ready_url = format!("{}/readyz", handle.base_url);
        loop {
            if crate::bridge::probe(&ready_url).await.is_ok() {
                break;
            }
            let alive = runtime.alive(&handle).await.unwrap_or(false);
            if !alive || Instant::now() >= deadline {
                let _ = runtime.stop(&handle).await;
                let why = if alive {
                    format!("not ready within {:?}", resolved.health.ready_timeout)
                } else {
                    "exited before it was ready".into()
                };
                return Err(unavailable(format!("`{}` {why}", self.event_name())));
            }
            tokio::time::sleep(inner.timing.ready_poll).await;
        }
        let mut value = http::HeaderValue::from_str(&self.secret).map_err(|_| {
            ManagedError::new(codes::INTERNAL_ERROR, "secret is not a header value")
        })?;
        value.set_sensitive(true);
        let endpoint = InstanceEndpoint {
            server: self.server.name.clone(),
            instance: self.name.clone(),
            url: format!("{}/mcp", handle.base_url).into(),
            secret_header: (http::HeaderName::from_static(SECRET_HEADER), value),
            generation: number,
        };
        Ok(Arc::new(Generation {
            number,
            handle,
            endpoint,
            in_flight: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
        }))
    }

    async fn replace(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
    ) -> Result<InstanceEndpoint, ManagedError> {
        let guard = self.start_lock.lock().await;
        let g = self.start_generation(inner).await?;
        let old = self
            .current
            .write()
            .ok()
            .and_then(|mut c| c.replace(g.clone()));
        self.down.store(false, Ordering::Release);
        drop(guard);
        if !self.monitor_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(monitor(Arc::downgrade(inner), self.clone()));
        }
        if let Some(old) = old {
            retire(&*self.server.settings.runtime, old).await;
        }
        Ok(g.endpoint.clone())
    }
}

/// Stops a generation once its in-flight requests finished (at most 30 s).
async fn retire(runtime: &dyn Runtime, g: Arc<Generation>) {
    let wait = async {
        while g.in_flight.load(Ordering::Acquire) > 0 {
            let n = g.idle.notified();
            if g.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), n).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), wait).await;
    if let Err(e) = runtime.stop(&g.handle).await {
        tracing::warn!("stopping {}: {e}", g.handle.name());
    }
}

async fn teardown(inner: &Arc<Inner>, inst: &Arc<Instance>) {
    inst.stop.cancel();
    if let Ok(mut map) = inner.instances.lock()
        && map.get(&inst.key()).is_some_and(|i| Arc::ptr_eq(i, inst))
    {
        map.remove(&inst.key());
    }
    let _guard = inst.start_lock.lock().await;
    let old = inst.current.write().ok().and_then(|mut c| c.take());
    if let Some(g) = old
        && let Err(e) = inst.server.settings.runtime.stop(&g.handle).await
    {
        tracing::warn!("stopping {}: {e}", g.handle.name());
    }
}

async fn reap_once(inner: &Arc<Inner>) -> usize {
    let candidates: Vec<Arc<Instance>> = inner
        .instances
        .lock()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let mut n = 0;
    for inst in candidates {
        let s = &inst.server.settings;
        if s.sharing == Sharing::Shared || s.named.contains_key(&*inst.name) {
            continue;
        }
        let idle = inst
            .last_used
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        if inst.in_flight() == 0 && idle >= s.idle_timeout {
            teardown(inner, &inst).await;
            n += 1;
        }
    }
    n
}

async fn reaper(inner: std::sync::Weak<Inner>, stop: CancellationToken) {
    loop {
        let interval = match inner.upgrade() {
            Some(i) => i.timing.reap_interval,
            None => return,
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(i) = inner.upgrade() else { return };
        reap_once(&i).await;
    }
}

async fn monitor(inner: std::sync::Weak<Inner>, inst: Arc<Instance>) {
    let mut failures = 0u32;
    let mut backoff = None::<Duration>;
    loop {
        let health = inst
            .server
            .resolved
            .read()
            .map(|r| r.health)
            .unwrap_or_default();
        tokio::select! {
            _ = inst.stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.unwrap_or(health.interval)) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let current = inst.routable();
        let ok = match &current {
            Some(g) => crate::bridge::probe(&format!("{}/readyz", g.handle.base_url))
                .await
                .is_ok(),
            None => false,
        };
        if ok {
            failures = 0;
            backoff = None;
            if inst.down.swap(false, Ordering::AcqRel) {
                inner.events.publish(GatewayEvent::UpstreamUp {
                    server: inst.event_name(),
                });
            }
            continue;
        }
        if current.is_none() && !inst.down.load(Ordering::Acquire) {
            // Not started yet (or torn down): nothing to watch.
            continue;
        }
        failures += 1;
        if failures < health.failure_threshold && !inst.down.load(Ordering::Acquire) {
            continue;
        }
        if !inst.down.swap(true, Ordering::AcqRel) {
            let reason = format!("{} failed health probes in a row", health.failure_threshold);
            tracing::warn!("managed instance {} is down: {reason}", inst.event_name());
            inner.events.publish(GatewayEvent::UpstreamDown {
                server: inst.event_name(),
                reason,
            });
            let old = inst.current.write().ok().and_then(|mut c| c.take());
            if let Some(old) = old {
                let _ = inst.server.settings.runtime.stop(&old.handle).await;
            }
        }
        // Restart (a request may have restarted it meanwhile: then the next probe sees it).
        let guard = inst.start_lock.lock().await;
        if inst.stop.is_cancelled() {
            return;
        }
        if inst.routable().is_none() {
            match inst.start_generation(&inner).await {
                Ok(g) => {
                    if let Ok(mut cur) = inst.current.write() {
                        *cur = Some(g);
                    }
                    backoff = Some(Duration::ZERO);
                }
                Err(e) => {
                    tracing::warn!("restart of {} failed: {e}", inst.event_name());
                    let next = backoff
                        .filter(|b| !b.is_zero())
                        .map_or(inner.timing.restart_backoff, |b| b * 2)
                        .min(inner.timing.restart_backoff_max);
                    backoff = Some(next);
                }
            }
        } else {
            backoff = Some(Duration::ZERO);
        }
        drop(guard);
    }
}

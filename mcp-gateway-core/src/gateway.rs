//! The [`Gateway`]: upstreams, catalog, routing and dispatch assembled.
//!
//! ```no_run
//! use mcp_gateway_core::{gateway::Gateway, upstream::{Transport, UpstreamConfig}};
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> Result<(), mcp_gateway_core::BoxError> {
//! let gateway = Gateway::builder()
//!     .upstream(UpstreamConfig::new("time", Transport::Stdio {
//!         command: "mcp-server-time".into(),
//!         args: vec![],
//!         env: Default::default(),
//!         cwd: None,
//!     }))
//!     .build()?;
//! // The MCP-level service: add your own layers around the route layer.
//! let svc = ServiceBuilder::new()
//!     .layer(gateway.route_layer())
//!     .service(gateway.dispatch());
//! # let _ = svc;
//! gateway.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    catalog::{Catalog, Naming, ServerLists, list_key},
    dispatch::{Dispatch, DispatchConfig, ListFailMode},
    events::EventBus,
    message::{BoxError, FeatureKind, JsonObject, Method, RequestContext},
    route::RouteLayer,
    upstream::{Pool, Status, Upstream, UpstreamConfig, UpstreamParts},
};

/// Configures a [`Gateway`].
#[derive(Debug, Default)]
#[must_use]
pub struct GatewayBuilder {
    upstreams: Vec<UpstreamConfig>,
    naming: Naming,
    dispatch: DispatchConfig,
    events: Option<EventBus>,
}

impl GatewayBuilder {
    /// Adds an upstream server.
    pub fn upstream(mut self, config: UpstreamConfig) -> Self {
        self.upstreams.push(config);
        self
    }

    /// How features are named towards clients.
    pub fn naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// What the gateway says about itself, page size and list fail mode.
    pub fn dispatch_config(mut self, config: DispatchConfig) -> Self {
        self.dispatch = config;
        self
    }

    /// Entries per page of merged lists.
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.dispatch.page_size = page_size;
        self
    }

    /// What lists do while an upstream is down.
    pub fn list_fail_mode(mut self, mode: ListFailMode) -> Self {
        self.dispatch.list_fail_mode = mode;
        self
    }

    /// Publishes on this bus instead of a new one.
    pub fn events(mut self, events: EventBus) -> Self {
        self.events = Some(events);
        self
    }

    /// Validates the configuration and starts connecting to every upstream (in the background;
    /// see [`Gateway::ready`]). Must be called inside a tokio runtime.
    pub fn build(self) -> Result<Gateway, BoxError> {
        let mut seen = HashSet::new();
        for u in &self.upstreams {
            self.naming.check_server_name(&u.name)?;
            if !seen.insert(u.name.clone()) {
                return Err(format!("server '{}' is configured twice", u.name).into());
            }
        }
        let events = self.events.unwrap_or_default();
        let order: Vec<Arc<str>> = self.upstreams.iter().map(|u| u.name.clone()).collect();
        let catalog = Catalog::new(self.naming.clone(), order, events.clone());
        let shutdown = CancellationToken::new();
        let (refresh_tx, refresh_rx) = mpsc::unbounded_channel();
        let upstreams: Vec<Upstream> = self
            .upstreams
            .into_iter()
            .map(|config| {
                Upstream::spawn(
                    config,
                    UpstreamParts {
                        events: events.clone(),
                        refresh: refresh_tx.clone(),
                        naming: self.naming.clone(),
                        shutdown: shutdown.child_token(),
                    },
                )
            })
            .collect();
        let listed = Arc::new(Listed::default());
        let by_name: HashMap<Arc<str>, Upstream> = upstreams
            .iter()
            .map(|u| (u.name().clone(), u.clone()))
            .collect();
        tokio::spawn(refresh_loop(
            catalog.clone(),
            by_name,
            refresh_rx,
            listed.clone(),
            shutdown.clone(),
        ));
        let pool = Pool::new(
            events.clone(),
            catalog.clone(),
            shutdown.child_token(),
            Duration::from_secs(300),
        );
        let dispatch = Dispatch::with_pool(catalog.clone(), upstreams.clone(), self.dispatch, pool);
        Ok(Gateway {
            inner: Arc::new(GatewayInner {
                catalog,
                upstreams,
                dispatch,
                events,
                listed,
                shutdown,
            }),
        })
    }
}

/// Which upstreams have had their lists fetched at least once.
#[derive(Default)]
struct Listed {
    servers: Mutex<HashSet<Arc<str>>>,
    changed: Notify,
}

/// A running gateway core. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<GatewayInner>,
}

struct GatewayInner {
    catalog: Catalog,
    upstreams: Vec<Upstream>,
    dispatch: Dispatch,
    events: EventBus,
    listed: Arc<Listed>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstreams", &self.inner.upstreams)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts configuring a gateway.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The innermost service.
    pub fn dispatch(&self) -> Dispatch {
        self.inner.dispatch.clone()
    }

    /// The routing layer over this gateway's catalog.
    pub fn route_layer(&self) -> RouteLayer {
        RouteLayer::new(self.inner.catalog.clone())
    }

    /// The merged catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// The upstreams, in configuration order.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.inner.upstreams
    }

    /// Waits until every upstream has settled — connected and listed, or failed its connection
    /// attempt — or the timeout passes; returns the names of those still pending.
    pub async fn ready(&self, timeout: Duration) -> Vec<Arc<str>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.listed.changed.notified();
            let pending: Vec<Arc<str>> = {
                let listed = self
                    .inner
                    .listed
                    .servers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                self.inner
                    .upstreams
                    .iter()
                    .filter(|u| {
                        !listed.contains(u.name()) && !matches!(u.status(), Status::Down { .. })
                    })
                    .map(|u| u.name().clone())
                    .collect()
            };
            if pending.is_empty() || tokio::time::Instant::now() >= deadline {
                return pending;
            }
            // Listing wakes us; a failed connection does not, so look again every 100 ms.
            let wake = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
            let _ = tokio::time::timeout_at(wake, notified).await;
        }
    }

    /// Stops every upstream (children exit or are killed) and waits briefly for them.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        // Give supervisors the time to close their transports (stdin closed, SIGTERM, kill).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
        while tokio::time::Instant::now() < deadline
            && self.inner.upstreams.iter().any(|u| !u.is_stopped())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn refresh_loop(
    catalog: Catalog,
    upstreams: HashMap<Arc<str>, Upstream>,
    mut rx: mpsc::UnboundedReceiver<Arc<str>>,
    listed: Arc<Listed>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            s = rx.recv() => match s { Some(s) => s, None => return },
            _ = shutdown.cancelled() => return,
        };
        // Coalesce bursts of list_changed notifications.
        let mut pending: HashSet<Arc<str>> = HashSet::from([first]);
        while let Ok(s) = rx.try_recv() {
            pending.insert(s);
        }
        let refreshes = pending.into_iter().filter_map(|name| {
            let upstream = upstreams.get(&name)?.clone();
            let catalog = catalog.clone();
            let listed = listed.clone();
            Some(async move {
                match fetch_lists(&upstream).await {
                    Ok(lists) => {
                        catalog.update(&name, lists);
                        listed
                            .servers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(name);
                        listed.changed.notify_waiters();
                    }
                    Err(e) => {
                        tracing::warn!(server = %name, error = %e.message, "listing the upstream's features failed");
                    }
                }
            })
        });
        futures::future::join_all(refreshes).await;
    }
}

/// Fetches every page of every list the upstream says it offers.
pub(crate) async fn fetch_lists(
    upstream: &Upstream,
) -> Result<ServerLists, crate::message::ErrorData> {
    let Status::Ready { info } = upstream.status() else {
        return Err(crate::message::error(
            crate::codes::UPSTREAM_UNAVAILABLE,
            "not connected",
            None,
        ));
    };
    let caps = &info.capabilities;
    let mut lists = ServerLists::default();
    if caps.tools.is_some() {
        lists.tools = fetch_all(upstream, Method::ToolsList, FeatureKind::Tool).await?;
    }
    if caps.prompts.is_some() {
        lists.prompts = fetch_all(upstream, Method::PromptsList, FeatureKind::Prompt).await?;
    }
    if caps.resources.is_some() {
        lists.resources = fetch_all(upstream, Method::ResourcesList, FeatureKind::Resource).await?;
        lists.templates = fetch_all(
            upstream,
            Method::ResourceTemplatesList,
            FeatureKind::ResourceTemplate,
        )
        .await
        .unwrap_or_default();
    }
    Ok(lists)
}

async fn fetch_all(
    upstream: &Upstream,
    method: Method,
    kind: FeatureKind,
) -> Result<Vec<Value>, crate::message::ErrorData> {
    let (key, _) = list_key(kind);
    let ctx = RequestContext::default();
    let mut items = Vec::new();
    let mut cursor: Option<Value> = None;
    // A bound on pages protects against an upstream that never stops paginating.
    for _ in 0..1000 {
        let mut params = JsonObject::new();
        if let Some(c) = cursor.take() {
            params.insert("cursor".into(), c);
        }
        let page = upstream
            .request_with_timeout(&method, params, &ctx, upstream.config().list_timeout)
            .await?;
        if let Some(Value::Array(page_items)) = page.get(key) {
            items.extend(page_items.iter().cloned());
        }
        match page.get("nextCursor") {
            Some(c @ Value::String(s)) if !s.is_empty() => cursor = Some(c.clone()),
            _ => break,
        }
    }
    Ok(items)
}

//! Connections opened per request target: a managed instance's URL, or an upstream reached with
//! the caller's own credentials.
//!
//! A layer that decides *where* or *as whom* a request goes (the managed layer picks an instance,
//! the credential layer attaches per-user credentials) puts an [`Endpoint`] into
//! `ctx.extensions`. Dispatch then sends the request over a connection opened for exactly that
//! endpoint (the server's own transport with the URL replaced and the headers added), shared by
//! every request with the same endpoint and closed after it has been idle for a while.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Status, Transport, Upstream, UpstreamParts};
use crate::{
    catalog::{Catalog, Naming},
    events::EventBus,
    message::{ErrorData, codes, error},
};

/// Where and as whom one request reaches its upstream; put into `ctx.extensions` by a layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Replaces the server's URL (a managed instance); `None` keeps the configured one.
    pub url: Option<String>,
    /// Headers sent with every request on this connection (credentials, instance secrets).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Endpoint {
    fn key(&self, server: &str) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        server.hash(&mut h);
        self.url.hash(&mut h);
        for (k, v) in &self.headers {
            k.as_str().hash(&mut h);
            v.as_bytes().hash(&mut h);
        }
        h.finish()
    }
}

struct Entry {
    upstream: Upstream,
    last_used: Instant,
}

/// The per-endpoint connections of a gateway.
pub(crate) struct Pool {
    entries: Mutex<HashMap<u64, Entry>>,
    events: EventBus,
    naming: Naming,
    shutdown: CancellationToken,
    idle: Duration,
    /// Where a connection that stands in for a configured one lists its server's features.
    catalog: Catalog,
}

impl Pool {
    pub(crate) fn new(
        events: EventBus,
        catalog: Catalog,
        shutdown: CancellationToken,
        idle: Duration,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            events,
            naming: catalog.naming().clone(),
            shutdown,
            idle,
            catalog,
        });
        tokio::spawn(reap(Arc::downgrade(&pool), idle));
        pool
    }

    /// The connection for `endpoint` on `base`'s server, opened (and its handshake awaited) if
    /// needed.
    pub(crate) async fn get(
        &self,
        base: &Upstream,
        endpoint: &Endpoint,
    ) -> Result<Upstream, ErrorData> {
        let key = endpoint.key(base.name());
        let upstream = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let entry = entries.entry(key).or_insert_with(|| Entry {
                upstream: self.open(base, endpoint),
                last_used: Instant::now(),
            });
            entry.last_used = Instant::now();
            entry.upstream.clone()
        };
        let deadline = Instant::now() + upstream.config().connect_timeout;
        loop {
            match upstream.status() {
                Status::Ready { .. } => return Ok(upstream),
                // Refused credentials will not get better by waiting: say so at once, with the
                // challenge an OAuth client starts from.
                Status::Down { reason } if upstream.auth_challenge().is_some() => {
                    return Err(error(
                        codes::UPSTREAM_AUTH_REQUIRED,
                        format!(
                            "upstream '{}' refused the credentials: {reason}",
                            base.name()
                        ),
                        Some(serde_json::json!({
                            "server": &**base.name(),
                            "wwwAuthenticate": upstream.auth_challenge(),
                        })),
                    ));
                }
                Status::Down { reason } if Instant::now() >= deadline => {
                    return Err(error(
                        codes::UPSTREAM_UNAVAILABLE,
                        format!("upstream '{}' is unavailable: {reason}", base.name()),
                        None,
                    ));
                }
                _ if Instant::now() >= deadline => {
                    return Err(error(
                        codes::UPSTREAM_UNAVAILABLE,
                        format!("upstream '{}' did not become ready in time", base.name()),
                        None,
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn open(&self, base: &Upstream, endpoint: &Endpoint) -> Upstream {
        let mut config = base.config().clone();
        if let Transport::Http { url, headers } = &mut config.transport {
            if let Some(u) = &endpoint.url {
                *url = u.clone();
            }
            for (k, v) in &endpoint.headers {
                if let Ok(v) = v.to_str() {
                    headers.insert(k.as_str().to_owned(), v.to_owned());
                }
            }
        } else if let Some(u) = &endpoint.url {
            // A stdio server run as a managed instance is reached over HTTP (through its bridge).
            config.transport = Transport::Http {
                url: u.clone(),
                headers: endpoint
                    .headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect(),
            };
        }
        let (refresh, lists_changed) = mpsc::unbounded_channel();
        let upstream = Upstream::spawn(
            config,
            UpstreamParts {
                events: self.events.clone(),
                refresh,
                naming: self.naming.clone(),
                shutdown: self.shutdown.child_token(),
            },
        );
        tokio::spawn(stand_in_lister(
            base.clone(),
            std::sync::Arc::downgrade(&upstream.shared),
            lists_changed,
            self.catalog.clone(),
        ));
        upstream
    }

    /// How many per-endpoint connections are open.
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

/// Lists a server's features through a per-endpoint connection when (and only while) its
/// configured connection cannot: the server refused the gateway's own credentials because it
/// needs each user's (per-user API keys, OAuth). Without this such a server's tools would never
/// reach the catalog, so clients could not discover them. The catalog keeps one list per
/// server: the features a signed-in user's connection saw, which policy then filters per caller.
/// Runs until the connection is gone (its `list_changed` channel closes).
async fn stand_in_lister(
    base: Upstream,
    connection: std::sync::Weak<super::Shared>,
    mut lists_changed: mpsc::UnboundedReceiver<Arc<str>>,
    catalog: Catalog,
) {
    while lists_changed.recv().await.is_some() {
        let refused =
            !matches!(base.status(), Status::Ready { .. }) && base.auth_challenge().is_some();
        if !refused {
            continue;
        }
        let Some(shared) = connection.upgrade() else {
            return;
        };
        let upstream = Upstream { shared };
        match crate::gateway::fetch_lists(&upstream).await {
            Ok(lists) => {
                tracing::info!(server = %base.name(), "listed through a user's connection (the server refuses the gateway's own credentials)");
                catalog.update(base.name(), lists);
            }
            Err(e) => {
                tracing::warn!(server = %base.name(), error = %e.message, "listing through a user's connection failed");
            }
        }
    }
}

async fn reap(pool: std::sync::Weak<Pool>, idle: Duration) {
    let mut tick = tokio::time::interval(idle.max(Duration::from_millis(100)) / 2);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        if pool.shutdown.is_cancelled() {
            return;
        }
        let mut entries = pool.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| {
            let keep = e.last_used.elapsed() < pool.idle;
            if !keep {
                e.upstream.shutdown();
            }
            keep
        });
    }
}

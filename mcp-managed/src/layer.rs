//! [`ManagedLayer`]: picks the managed instance that serves each request and starts it when needed.
//!
//! For a request routed to a managed server (`ctx.target.server`), the layer resolves the
//! caller's instance ([`Manager::acquire`]: the caller's selection, else their dedicated or the
//! shared instance; access lists checked), sets `ctx.target.instance`, and inserts an
//! [`InstanceEndpoint`] into `ctx.extensions` for dispatch. For a request without a target that
//! fans out (`tools/list` and the other lists, `initialize`, `server/discover`) it inserts
//! [`ManagedEndpoints`]: one endpoint per managed server the caller may use (servers that fail to
//! start are left out, so the merged answer is partial rather than failed). The instance stays
//! leased (counted in flight, so drain and rolling updates wait for it) until the inner service
//! answered.
//!
//! The caller selects an instance by, in order: an [`InstanceSelection`] extension; the
//! `mcp-instance` header (from an `http::HeaderMap` or `http::request::Parts` in
//! `ctx.extensions`); a URL path `/mcp/<server>/<instance>` (from `http::request::Parts` or an
//! `http::Uri` in `ctx.extensions`).

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use futures::future::BoxFuture;
use mcp_gateway_core::{BoxError, McpRequest, McpResponse};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::manager::{InstanceEndpoint, Lease, Manager};

/// The header a caller names an instance with.
pub const INSTANCE_HEADER: &str = "mcp-instance";

/// An instance the caller asked for (set by the HTTP adapter, or found by the layer in headers or
/// the URL path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSelection {
    /// The server it applies to (`None`: whichever server the request targets).
    pub server: Option<Arc<str>>,
    /// The instance.
    pub instance: Arc<str>,
}

impl InstanceSelection {
    /// Parses `/mcp/<server>/<instance>` (a trailing part after it is ignored).
    pub fn from_path(path: &str) -> Option<Self> {
        let mut it = path.trim_start_matches('/').split('/');
        if it.next()? != "mcp" {
            return None;
        }
        let server = it.next().filter(|s| !s.is_empty())?;
        let instance = it.next().filter(|s| !s.is_empty())?;
        Some(Self {
            server: Some(server.into()),
            instance: instance.into(),
        })
    }
}

/// Endpoints of every managed server for a fan-out request, keyed by server.
#[derive(Debug, Clone, Default)]
pub struct ManagedEndpoints(pub Arc<HashMap<Arc<str>, InstanceEndpoint>>);

/// Resolves the managed instance for each request. See the module docs.
#[derive(Debug, Clone)]
pub struct ManagedLayer {
    manager: Manager,
}

impl ManagedLayer {
    /// A layer over `manager`.
    pub fn new(manager: Manager) -> Self {
        Self { manager }
    }
}

impl<S> Layer<S> for ManagedLayer {
    type Service = Managed<S>;

    fn layer(&self, inner: S) -> Managed<S> {
        Managed::new(inner, self.manager.clone())
    }
}

/// The service made by [`ManagedLayer`].
#[derive(Debug, Clone)]
pub struct Managed<S> {
    inner: S,
    manager: Manager,
}

impl<S> Managed<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, manager: Manager) -> Self {
        Self { inner, manager }
    }

    /// A layer (same as [`ManagedLayer::new`]).
    pub fn layer(manager: Manager) -> ManagedLayer {
        ManagedLayer::new(manager)
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

fn selection(req: &McpRequest, server: &str) -> Option<Arc<str>> {
    let ext = &req.ctx.extensions;
    let applies = |s: &InstanceSelection| s.server.as_deref().is_none_or(|x| x == server);
    if let Some(s) = ext.get::<InstanceSelection>() {
        return applies(s).then(|| s.instance.clone());
    }
    let header = ext
        .get::<http::HeaderMap>()
        .or_else(|| ext.get::<http::request::Parts>().map(|p| &p.headers))
        .and_then(|h| h.get(INSTANCE_HEADER))
        .and_then(|v| v.to_str().ok());
    if let Some(h) = header {
        // `server/instance` or just `instance`.
        return match h.split_once('/') {
            Some((s, i)) => (s == server).then(|| i.into()),
            None => Some(h.into()),
        };
    }
    let path = ext
        .get::<http::request::Parts>()
        .map(|p| p.uri.path())
        .or_else(|| ext.get::<http::Uri>().map(|u| u.path()));
    path.and_then(InstanceSelection::from_path)
        .filter(applies)
        .map(|s| s.instance)
}

async fn resolve(
    manager: Manager,
    mut req: McpRequest,
) -> Result<(McpRequest, Vec<Lease>), McpResponse> {
    let identity = req.ctx.identity.clone();
    let session = req.ctx.session.id.clone();
    if let Some(target) = &req.ctx.target {
        let server = target.server.clone();
        if !manager.is_managed(&server) {
            return Ok((req, Vec::new()));
        }
        let selected = selection(&req, &server);
        let lease = manager
            .acquire(
                &server,
                identity.as_deref(),
                selected.as_deref(),
                session.as_deref(),
            )
            .await
            .map_err(|e| req.error(e.to_error_data()))?;
        let ep = lease.endpoint().clone();
        if let Some(t) = req.ctx.target.as_mut() {
            t.instance = Some(ep.instance.clone());
        }
        req.ctx
            .extensions
            .insert(ManagedEndpoints(Arc::new(HashMap::from([(
                ep.server.clone(),
                ep.clone(),
            )]))));
        // Core dispatch sends the request to exactly this instance, with its secret.
        req.ctx
            .extensions
            .insert(mcp_gateway_core::upstream::Endpoint {
                url: Some(ep.url.to_string()),
                headers: vec![ep.secret_header.clone()],
            });
        req.ctx.extensions.insert(ep);
        return Ok((req, vec![lease]));
    }
    use mcp_gateway_core::Method;
    let fans_out =
        req.method.is_list() || matches!(req.method, Method::Initialize | Method::Discover);
    if !fans_out {
        return Ok((req, Vec::new()));
    }
    let servers = manager.servers();
    let results = futures::future::join_all(servers.iter().map(|s| {
        let selected = selection(&req, s);
        let manager = manager.clone();
        let identity = identity.clone();
        let session = session.clone();
        let s = s.clone();
        async move {
            manager
                .acquire(
                    &s,
                    identity.as_deref(),
                    selected.as_deref(),
                    session.as_deref(),
                )
                .await
        }
    }))
    .await;
    let mut map = HashMap::new();
    let mut leases = Vec::new();
    for (server, r) in servers.into_iter().zip(results) {
        match r {
            Ok(lease) => {
                map.insert(server, lease.endpoint().clone());
                leases.push(lease);
            }
            Err(e) => tracing::debug!("managed server {server} left out: {e}"),
        }
    }
    req.ctx.extensions.insert(ManagedEndpoints(Arc::new(map)));
    Ok((req, leases))
}

impl<S> Service<McpRequest> for Managed<S>
where
    S: Service<McpRequest, Response = McpResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = McpResponse;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: McpRequest) -> Self::Future {
        // The ready inner service goes into the future; a fresh clone stays here.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: State::Resolving {
                fut: Box::pin(resolve(self.manager.clone(), req)),
                inner: Some(inner),
            },
        }
    }
}

pin_project! {
    /// The future of [`Managed`]: resolving the instance, then the inner call (holding the lease),
    /// or a refusal.
    pub struct ResponseFuture<S: Service<McpRequest>> {
        #[pin]
        state: State<S>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<McpRequest>> {
        Resolving {
            fut: BoxFuture<'static, Result<(McpRequest, Vec<Lease>), McpResponse>>,
            inner: Option<S>,
        },
        Calling {
            #[pin]
            fut: S::Future,
            leases: Vec<Lease>,
        },
        Refused {
            response: Option<McpResponse>,
        },
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<McpRequest, Response = McpResponse, Error = BoxError>,
{
    type Output = Result<McpResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Resolving { fut, inner } => {
                    let next = match ready!(fut.as_mut().poll(cx)) {
                        Ok((req, leases)) => match inner.take() {
                            Some(mut svc) => State::Calling {
                                fut: svc.call(req),
                                leases,
                            },
                            None => {
                                return Poll::Ready(Err("managed: polled after completion".into()));
                            }
                        },
                        Err(response) => State::Refused {
                            response: Some(response),
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Calling { fut, leases: _ } => return fut.poll(cx),
                StateProj::Refused { response } => {
                    return Poll::Ready(
                        response
                            .take()
                            .ok_or_else(|| "managed: polled after completion".into()),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_selection() {
        let s = InstanceSelection::from_path("/mcp/browser/alice").unwrap();
        assert_eq!(s.server.as_deref(), Some("browser"));
        assert_eq!(&*s.instance, "alice");
        assert!(InstanceSelection::from_path("/mcp/browser").is_none());
        assert!(InstanceSelection::from_path("/other/a/b").is_none());
        assert!(InstanceSelection::from_path("/mcp//x").is_none());
    }
}

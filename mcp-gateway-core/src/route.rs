//! The routing layer: namespaced names to an upstream and the name it knows.
//!
//! For `tools/call`, `prompts/get`, `resources/read|subscribe|unsubscribe` and
//! `completion/complete`, [`Route`] looks the client-facing name or URI up in the [`Catalog`],
//! sets [`RequestContext::target`](crate::RequestContext) to the server and the original name, and
//! rewrites the params so inner layers and the upstream see the original name. A name it cannot
//! resolve passes on with no target: an inner layer (policy overrides) may still resolve it, and
//! dispatch answers it exactly like a missing feature. Lists pass through untouched (dispatch
//! merges them).
//!
//! ```
//! use mcp_gateway_core::{catalog::{Catalog, Naming}, route::RouteLayer, EventBus};
//! use tower::Layer;
//!
//! let catalog = Catalog::new(Naming::default(), vec!["time".into()], EventBus::default());
//! let svc = RouteLayer::new(catalog).layer(tower::service_fn(|req: mcp_gateway_core::McpRequest| async move {
//!     Ok::<_, mcp_gateway_core::BoxError>(req.reply(serde_json::json!({})))
//! }));
//! # let _ = svc;
//! ```

use std::task::{Context, Poll};

use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    catalog::Catalog,
    message::{FeatureKind, McpRequest, Method, Target},
};

/// Applies [`Route`] to a service.
#[derive(Clone, Debug)]
pub struct RouteLayer {
    catalog: Catalog,
}

impl RouteLayer {
    /// Routes with this catalog.
    pub fn new(catalog: Catalog) -> Self {
        Self { catalog }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Route::new(inner, self.catalog.clone())
    }
}

/// Resolves client-facing names to an upstream target.
#[derive(Clone, Debug)]
pub struct Route<S> {
    inner: S,
    catalog: Catalog,
}

impl<S> Route<S> {
    /// Wraps a service.
    pub fn new(inner: S, catalog: Catalog) -> Self {
        Self { inner, catalog }
    }

    /// A layer for this service.
    pub fn layer(catalog: Catalog) -> RouteLayer {
        RouteLayer::new(catalog)
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

impl<S> Service<McpRequest> for Route<S>
where
    S: Service<McpRequest>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: McpRequest) -> Self::Future {
        route(&self.catalog, &mut req);
        self.inner.call(req)
    }
}

/// Resolves and rewrites one request in place.
pub fn route(catalog: &Catalog, req: &mut McpRequest) {
    match req.method {
        Method::ToolsCall => route_name(catalog, req, FeatureKind::Tool),
        Method::PromptsGet => route_name(catalog, req, FeatureKind::Prompt),
        Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
            let Some(uri) = req.uri() else { return };
            if let Some(target) = catalog.resolve_uri(uri) {
                set(req, "uri", target);
            }
        }
        Method::Complete => {
            let Some(reference) = req.params.get_mut("ref").and_then(Value::as_object_mut) else {
                return;
            };
            let (field, target) = match reference.get("type").and_then(Value::as_str) {
                Some("ref/prompt") => {
                    let Some(name) = reference.get("name").and_then(Value::as_str) else {
                        return;
                    };
                    ("name", catalog.resolve_name(FeatureKind::Prompt, name))
                }
                Some("ref/resource") => {
                    let Some(uri) = reference.get("uri").and_then(Value::as_str) else {
                        return;
                    };
                    ("uri", catalog.resolve_uri(uri))
                }
                _ => return,
            };
            if let Some(target) = target {
                if let Some(original) = &target.name {
                    reference.insert(field.into(), Value::String(original.clone()));
                }
                annotate(req, &target);
                req.ctx.target = Some(target);
            }
        }
        _ => {}
    }
}

fn route_name(catalog: &Catalog, req: &mut McpRequest, kind: FeatureKind) {
    let Some(name) = req.name() else { return };
    if let Some(target) = catalog.resolve_name(kind, name) {
        set(req, "name", target);
    }
}

fn set(req: &mut McpRequest, field: &str, target: Target) {
    if let Some(original) = &target.name {
        req.params
            .insert(field.into(), Value::String(original.clone()));
    }
    annotate(req, &target);
    req.ctx.target = Some(target);
}

/// Layers outside routing (audit) learn the target from the shared annotations.
fn annotate(req: &McpRequest, target: &Target) {
    req.ctx.annotations.push(crate::message::Annotation::Other {
        key: "target",
        value: serde_json::json!({"server": &*target.server, "name": target.name}),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        catalog::{Naming, ServerLists},
        events::EventBus,
        message::{BoxError, RequestId},
    };
    use serde_json::json;
    use tower::{ServiceBuilder, ServiceExt};

    #[tokio::test]
    async fn rewrites_names_and_sets_target() {
        let catalog = Catalog::new(Naming::default(), vec!["time".into()], EventBus::default());
        catalog.update(
            &"time".into(),
            ServerLists {
                tools: vec![json!({"name": "get_current_time"})],
                ..Default::default()
            },
        );
        let svc = ServiceBuilder::new()
            .layer(RouteLayer::new(catalog))
            .service_fn(|req: McpRequest| async move {
                let t = req.ctx.target.clone();
                Ok::<_, BoxError>(req.reply(json!({
                    "server": t.as_ref().map(|t| t.server.to_string()),
                    "name": req.params["name"],
                })))
            });
        let mut params = crate::JsonObject::new();
        params.insert("name".into(), json!("time__get_current_time"));
        let res = svc
            .clone()
            .oneshot(McpRequest::new(
                Some(RequestId::Number(1)),
                Method::ToolsCall,
                params,
            ))
            .await
            .unwrap();
        assert_eq!(
            res.body.unwrap(),
            json!({"server": "time", "name": "get_current_time"})
        );

        let mut params = crate::JsonObject::new();
        params.insert("name".into(), json!("nope"));
        let res = svc
            .oneshot(McpRequest::new(
                Some(RequestId::Number(2)),
                Method::ToolsCall,
                params,
            ))
            .await
            .unwrap();
        assert_eq!(res.body.unwrap(), json!({"server": null, "name": "nope"}));
    }
}

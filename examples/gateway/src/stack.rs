//! Assembling the reference gateway: the MCP-level layer stack and the HTTP front (identity,
//! the MCP endpoint, `/metrics`, `/admin/...`, the upstream-authorization pages).

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use mcp_gateway_core::{
    BoxError, FeatureKind, McpRequest, McpResponse,
    gateway::Gateway,
    http::BoxBody,
    upstream::{Transport, UpstreamConfig},
};
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder, ServiceExt, util::BoxCloneSyncService};

use crate::config::Settings;

/// The MCP-level service every layer wraps.
pub(crate) type McpService = BoxCloneSyncService<McpRequest, McpResponse, BoxError>;

/// Everything the layers built that serving and shutdown need.
pub(crate) struct Parts {
    pub(crate) mcp: McpService,
    pub(crate) identity: Option<mcp_identity::config::Built>,
    pub(crate) policy: Option<mcp_policy::PolicyHandle>,
    pub(crate) audit: Option<mcp_audit::config::AuditStack>,
    pub(crate) managed: Option<mcp_managed::Manager>,
}

/// Builds the manager of the `[[managed]]` servers (none: `None`), publishing outage and
/// recovery events on `events` (the gateway's bus). Runs before the gateway is built: servers
/// the gateway cannot run itself are listed through the manager's catalog relays.
pub(crate) fn managed(
    settings: &Settings,
    events: &mcp_gateway_core::EventBus,
) -> Result<Option<mcp_managed::Manager>, BoxError> {
    if settings.managed.is_empty() {
        return Ok(None);
    }
    Ok(Some(mcp_managed::build_manager(
        &settings.managed,
        events.clone(),
    )?))
}

/// One catalog upstream per managed server that does not run locally (containers, SSH hosts):
/// an HTTP upstream at a [`mcp_managed::relay::CatalogRelay`], which reaches the server's
/// catalog instance whatever its current address. The relays stop when dropped.
pub(crate) async fn catalog_relays(
    settings: &Settings,
    manager: &mcp_managed::Manager,
) -> Result<Vec<(UpstreamConfig, mcp_managed::relay::CatalogRelay)>, BoxError> {
    let types = mcp_managed::InstanceTypes::default();
    let mut out = Vec::new();
    for m in settings.managed.iter().filter(|m| !m.runs_locally()) {
        let relay = mcp_managed::relay::CatalogRelay::start(manager.clone(), &m.spec.name).await?;
        let (k, v) = relay.secret_header();
        let mut config = UpstreamConfig::new(
            m.spec.name.as_str(),
            Transport::Http {
                url: relay.url(),
                headers: [(k.to_owned(), v.to_owned())].into(),
            },
        );
        // The first connection waits for the catalog instance to start and become ready.
        let ready = types.resolve(&m.spec)?.health.ready_timeout;
        config.connect_timeout = config.connect_timeout.max(ready + Duration::from_secs(10));
        out.push((config, relay));
    }
    Ok(out)
}

/// Builds the MCP stack, outermost first: audit, route, policy, DLP, credentials, dispatch.
pub(crate) fn mcp_stack(
    settings: &Settings,
    gateway: &Gateway,
    managed: Option<mcp_managed::Manager>,
) -> Result<Parts, BoxError> {
    let identity = settings.identity.as_ref().map(|c| c.build()).transpose()?;
    let policy = match &settings.policy {
        Some(c) => {
            let handle = mcp_policy::PolicyHandle::from_config(c, Some(&settings.text))?;
            handle.attach_bus(gateway.events().clone());
            // Pins are checked when the catalog changes, not only when a client lists.
            handle.watch_catalog(gateway.catalog().clone(), gateway.events());
            Some(handle)
        }
        None => None,
    };
    let dlp = match &settings.dlp {
        Some(c) => c.layer()?,
        None => None,
    };
    // Audit scrubs arguments with the DLP redactor (all built-in detectors).
    let audit = match &settings.audit {
        Some(c) => {
            let redactor = mcp_dlp::Redactor::new();
            let scrubber: mcp_audit::scrub::SharedScrubber = Arc::new(move |v: &mut Value| {
                redactor.redact_value(v);
            });
            let stack = c.build(Some(scrubber))?;
            if let Some(alerts) = &stack.alerts {
                alerts.watch(gateway.events());
            }
            Some(stack)
        }
        None => None,
    };
    let mcp = ServiceBuilder::new()
        .option_layer(audit.as_ref().map(|a| a.layer.clone()))
        .layer(gateway.route_layer())
        .option_layer(policy.clone().map(mcp_policy::PolicyLayer::new))
        .option_layer(dlp)
        .option_layer(managed.clone().map(mcp_managed::ManagedLayer::new))
        .option_layer(identity.as_ref().map(|i| i.credentials.clone()))
        .service(gateway.dispatch())
        .map_err(Into::<BoxError>::into);
    Ok(Parts {
        mcp: BoxCloneSyncService::new(mcp),
        identity,
        policy,
        audit,
        managed,
    })
}

type HttpService = BoxCloneSyncService<Request<Incoming>, Response<BoxBody>, Infallible>;

fn boxed<B>(res: Response<B>) -> Response<BoxBody>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    res.map(|b| b.map_err(Into::into).boxed())
}

fn json_response(status: StatusCode, value: Value) -> Response<BoxBody> {
    let mut res = Response::new(
        Full::new(Bytes::from(value.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}

/// The HTTP front: `/metrics` (open), then identity, then `/admin/...` or the MCP endpoint.
pub(crate) fn http_front<A, AB>(adapter: A, parts: &Parts, settings: &Settings) -> HttpService
where
    A: Service<Request<Incoming>, Response = Response<AB>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    A::Future: Send + 'static,
    AB: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    AB::Error: Into<BoxError>,
{
    let admin = Admin {
        policy: parts.policy.clone(),
        managed: parts.managed.clone(),
        api_keys: parts
            .identity
            .as_ref()
            .and_then(|i| i.api_keys.clone())
            .map(|store| {
                mcp_identity::admin::ApiKeyAdmin::new(
                    store,
                    "/admin/api-keys",
                    &admin_role(settings),
                )
            }),
        role: admin_role(settings),
        token: settings
            .admin
            .as_ref()
            .and_then(|a| a.token_env.as_ref())
            .and_then(|name| std::env::var(name).ok())
            .filter(|t| !t.is_empty())
            .map(Arc::from),
    };
    let outer_admin = admin.clone();
    let inner = tower::service_fn(move |req: Request<Incoming>| {
        let adapter = adapter.clone();
        let admin = admin.clone();
        async move {
            if req.uri().path().starts_with("/admin/") {
                return Ok::<_, Infallible>(admin.handle(req).await);
            }
            let res = adapter.oneshot(req).await?;
            Ok(boxed(res))
        }
    });
    let authed: HttpService = match &parts.identity {
        Some(identity) => BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(identity.authn.clone())
                .service(inner)
                .map_response(boxed),
        ),
        None => BoxCloneSyncService::new(inner),
    };
    let metrics = parts
        .audit
        .as_ref()
        .and_then(|a| a.metrics.clone().map(|m| (m, a.auditor.clone())));
    let oauth_pages = parts.identity.as_ref().and_then(|i| i.oauth_pages.clone());
    BoxCloneSyncService::new(tower::service_fn(move |req: Request<Incoming>| {
        let authed = authed.clone();
        let metrics = metrics.clone();
        let admin = outer_admin.clone();
        let oauth_pages = oauth_pages.clone();
        async move {
            // The upstream-authorization consent page and callback: browsers, no MCP credentials.
            if let Some(pages) = oauth_pages.filter(|p| p.serves(req.uri().path())) {
                return match pages.oneshot(req).await {
                    Ok(res) => Ok(boxed(res)),
                    Err(never) => match never {},
                };
            }
            // The admin token works without an identity provider: checked before authn.
            if req.uri().path().starts_with("/admin/") && admin.token_matches(&req) {
                return Ok(admin.handle(req).await);
            }
            if req.uri().path() == "/metrics" {
                // Process gauges always; the audit layer's counters when it runs.
                let mut text = process_gauges();
                if let Some((m, auditor)) = &metrics {
                    text.push_str(&m.render_prometheus_with(&auditor.stats()));
                }
                let mut res = Response::new(
                    Full::new(Bytes::from(text))
                        .map_err(|never| match never {})
                        .boxed(),
                );
                res.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(mcp_audit::metrics::PROMETHEUS_CONTENT_TYPE),
                );
                return Ok(res);
            }
            authed.oneshot(req).await
        }
    }))
}

/// Gauges of the process itself: open HTTP connections and alive tokio tasks (fault tests check
/// that both return to their baseline after an attack).
fn process_gauges() -> String {
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    format!(
        "# HELP mcp_gateway_open_connections HTTP connections open right now.\n\
         # TYPE mcp_gateway_open_connections gauge\n\
         mcp_gateway_open_connections {}\n\
         # HELP mcp_gateway_tasks Tokio tasks alive right now.\n\
         # TYPE mcp_gateway_tasks gauge\n\
         mcp_gateway_tasks {tasks}\n",
        mcp_gateway_core::http::open_connections()
    )
}

fn admin_role(settings: &Settings) -> String {
    settings
        .admin
        .as_ref()
        .map_or_else(|| "mcp-admin".to_owned(), |a| a.role.clone())
}

/// `/admin/...`: kill switches, approvals and policy reload (policy), API keys (identity).
#[derive(Clone)]
struct Admin {
    policy: Option<mcp_policy::PolicyHandle>,
    managed: Option<mcp_managed::Manager>,
    api_keys: Option<mcp_identity::admin::ApiKeyAdmin>,
    role: String,
    token: Option<Arc<str>>,
}

impl Admin {
    fn allowed(&self, req: &Request<Incoming>) -> bool {
        let by_role = req
            .extensions()
            .get::<Arc<mcp_gateway_core::Identity>>()
            .is_some_and(|i| i.has_role(&self.role));
        by_role || self.token_matches(req)
    }

    fn token_matches(&self, req: &Request<Incoming>) -> bool {
        self.token.as_ref().is_some_and(|token| {
            req.headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
        })
    }

    async fn handle(self, req: Request<Incoming>) -> Response<BoxBody> {
        let path = req.uri().path().to_owned();
        if path.starts_with("/admin/api-keys") {
            return match self.api_keys {
                Some(svc) => match svc.oneshot(req).await {
                    Ok(res) => boxed(res),
                    Err(never) => match never {},
                },
                None => json_response(
                    StatusCode::NOT_FOUND,
                    json!({"error": "API keys need [identity.api_keys]"}),
                ),
            };
        }
        if !self.allowed(&req) {
            return json_response(
                StatusCode::FORBIDDEN,
                json!({"error": format!("the admin endpoint needs the '{}' role or the admin token", self.role)}),
            );
        }
        if let Some(rest) = path.strip_prefix("/admin/instances") {
            let Some(manager) = &self.managed else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    json!({"error": "no [[managed]] servers"}),
                );
            };
            let (status, body) =
                mcp_managed::admin::handle(manager, req.method(), &format!("/instances{rest}"))
                    .await;
            return json_response(status, body);
        }
        let Some(policy) = self.policy else {
            return json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "this needs a [policy] section"}),
            );
        };
        let method = req.method().clone();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return json_response(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}));
            }
        };
        let parse = || serde_json::from_slice::<Value>(&body);
        match (method, path.as_str()) {
            (Method::GET, "/admin/kill-switches") => {
                json_response(StatusCode::OK, json!({"active": policy.kill_switches()}))
            }
            (m @ (Method::POST | Method::DELETE), "/admin/kill-switches") => {
                let target: mcp_policy::KillTarget = match parse().and_then(serde_json::from_value)
                {
                    Ok(t) => t,
                    Err(e) => {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            json!({"error": format!("expected a kill target like {{\"scope\":\"tool\",\"server\":\"time\",\"tool\":\"get_current_time\"}}: {e}")}),
                        );
                    }
                };
                if m == Method::POST {
                    policy.kill(target);
                } else {
                    policy.lift(target);
                }
                json_response(StatusCode::OK, json!({"active": policy.kill_switches()}))
            }
            (Method::POST, "/admin/policy/reload") => match policy.reload() {
                Ok(()) => json_response(StatusCode::OK, json!({"reloaded": true})),
                Err(e) => json_response(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
            },
            (Method::POST, "/admin/approvals") => {
                #[derive(serde::Deserialize)]
                struct Approve {
                    kind: Option<String>,
                    server: String,
                    name: String,
                }
                let a: Approve = match parse().and_then(serde_json::from_value) {
                    Ok(a) => a,
                    Err(e) => {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            json!({"error": format!("expected {{\"server\":..,\"name\":..,\"kind\":\"tool\"}}: {e}")}),
                        );
                    }
                };
                let kind = match a.kind.as_deref().unwrap_or("tool") {
                    "tool" => FeatureKind::Tool,
                    "prompt" => FeatureKind::Prompt,
                    "resource" => FeatureKind::Resource,
                    "resource_template" => FeatureKind::ResourceTemplate,
                    other => {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            json!({"error": format!("unknown kind {other}")}),
                        );
                    }
                };
                match policy.approve(kind, &a.server, &a.name) {
                    Ok(_) => json_response(
                        StatusCode::OK,
                        json!({"approved": {"server": a.server, "name": a.name}}),
                    ),
                    Err(e) => json_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({"error": e.to_string()}),
                    ),
                }
            }
            (Method::GET, "/admin/approvals") => {
                let pending: Vec<Value> = policy
                    .pending()
                    .into_iter()
                    .map(|(kind, server, name)| {
                        json!({"kind": kind.as_str(), "server": server, "name": name})
                    })
                    .collect();
                json_response(
                    StatusCode::OK,
                    json!({
                        "approvals": policy.approvals().approvals,
                        "pending": pending,
                        "withheld": policy.withheld(),
                    }),
                )
            }
            (Method::GET, "/admin/policy/events") => {
                json_response(StatusCode::OK, json!({"events": policy.recent_events()}))
            }
            _ => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": format!("no admin route {path}")}),
            ),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Flushes audit and stops managed instances on shutdown.
pub(crate) async fn shutdown(parts: &Parts) {
    if let Some(m) = &parts.managed {
        m.shutdown().await;
    }
    if let Some(a) = &parts.audit {
        a.auditor.flush(Duration::from_secs(10)).await;
    }
}

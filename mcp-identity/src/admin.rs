//! The API-key admin endpoint, for the reference gateway to mount behind [`AuthnLayer`]
//! (e.g. at `/admin/api-keys`):
//!
//! | request | answer |
//! |---|---|
//! | `GET    <prefix>` | `200` list of records (never secrets) |
//! | `POST   <prefix>` `{"agent": "...", "description"?, "teams"?, "roles"?, "scopes"?, "ttl_days"?}` | `201 {"key": "mgw_…", "record": {…}}` (the key is shown once) |
//! | `DELETE <prefix>/<id>` | `200` the revoked record, `404` unknown id |
//!
//! The caller must be authenticated (an `Arc<Identity>` in the request extensions, as
//! `AuthnLayer` puts there) and hold the configured admin role; otherwise `403`.
//!
//! [`AuthnLayer`]: crate::AuthnLayer

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use mcp_gateway_core::identity::{AuthMethod, Identity};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_service::Service;

use crate::apikey::{ApiKeyError, ApiKeyStore, NewApiKey};

/// The admin service.
#[derive(Debug, Clone)]
pub struct ApiKeyAdmin {
    store: Arc<ApiKeyStore>,
    prefix: Arc<str>,
    admin_role: Arc<str>,
}

impl ApiKeyAdmin {
    /// Serves `prefix` (e.g. `/admin/api-keys`) for callers with `admin_role`.
    pub fn new(store: Arc<ApiKeyStore>, prefix: &str, admin_role: &str) -> Self {
        Self {
            store,
            prefix: prefix.trim_end_matches('/').into(),
            admin_role: admin_role.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    agent: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    teams: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    ttl_days: Option<u64>,
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

fn problem(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    reply(status, json!({"error": msg}))
}

impl<B> Service<Request<B>> for ApiKeyAdmin
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

impl ApiKeyAdmin {
    async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let allowed = req.extensions().get::<Arc<Identity>>().is_some_and(|id| {
            id.auth_method != AuthMethod::Anonymous && id.has_role(&self.admin_role)
        });
        if !allowed {
            return problem(
                StatusCode::FORBIDDEN,
                "API key administration needs the admin role",
            );
        }
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let Some(rest) = path.strip_prefix(&*self.prefix) else {
            return problem(StatusCode::NOT_FOUND, "not found");
        };
        let method = req.method().clone();
        match (method, rest) {
            (Method::GET, "") => match self.store.list() {
                Ok(list) => reply(
                    StatusCode::OK,
                    serde_json::to_value(
                        list.iter()
                            .map(|r| {
                                json!({"id": r.id, "agent": r.agent, "description": r.description,
                                       "teams": r.teams, "roles": r.roles, "scopes": r.scopes,
                                       "created_at": r.created_at, "expires_at": r.expires_at,
                                       "revoked_at": r.revoked_at})
                            })
                            .collect::<Vec<_>>(),
                    )
                    .unwrap_or_default(),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "listing API keys");
                    problem(StatusCode::INTERNAL_SERVER_ERROR, "key store unavailable")
                }
            },
            (Method::POST, "") => {
                let Ok(body) = Limited::new(req.into_body(), 16 * 1024).collect().await else {
                    return problem(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body too large or unreadable",
                    );
                };
                let body: CreateBody = match serde_json::from_slice(&body.to_bytes()) {
                    Ok(b) => b,
                    Err(e) => {
                        return problem(StatusCode::BAD_REQUEST, &format!("invalid body: {e}"));
                    }
                };
                match self.store.create(NewApiKey {
                    agent: body.agent,
                    description: body.description,
                    teams: body.teams,
                    roles: body.roles,
                    scopes: body.scopes,
                    ttl: body
                        .ttl_days
                        .map(|d| Duration::from_secs(d.saturating_mul(86_400))),
                }) {
                    Ok((key, rec)) => reply(
                        StatusCode::CREATED,
                        json!({"key": key, "record": {"id": rec.id, "agent": rec.agent, "teams": rec.teams,
                               "roles": rec.roles, "scopes": rec.scopes, "expires_at": rec.expires_at}}),
                    ),
                    Err(ApiKeyError::Invalid(m)) => problem(StatusCode::BAD_REQUEST, &m),
                    Err(e) => {
                        tracing::error!(error = %e, "creating API key");
                        problem(StatusCode::INTERNAL_SERVER_ERROR, "key store unavailable")
                    }
                }
            }
            (Method::DELETE, id) if id.len() > 1 => match self.store.revoke(&id[1..]) {
                Ok(rec) => reply(
                    StatusCode::OK,
                    json!({"id": rec.id, "revoked_at": rec.revoked_at}),
                ),
                Err(ApiKeyError::NotFound(_)) => problem(StatusCode::NOT_FOUND, "no such key"),
                Err(e) => {
                    tracing::error!(error = %e, "revoking API key");
                    problem(StatusCode::INTERNAL_SERVER_ERROR, "key store unavailable")
                }
            },
            _ => problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET, POST or DELETE <id>",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn req(method: Method, path: &str, body: &str, role: Option<&str>) -> Request<Full<Bytes>> {
        let mut r = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        if let Some(role) = role {
            let mut id = Identity::new("admin-user", AuthMethod::Jwt);
            id.roles = vec![role.into()];
            r.extensions_mut().insert(Arc::new(id));
        }
        r
    }

    async fn json_of(r: Response<Full<Bytes>>) -> (StatusCode, Value) {
        let s = r.status();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn create_list_revoke_over_http() {
        let file =
            std::env::temp_dir().join(format!("mcp-identity-admin-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let store = Arc::new(ApiKeyStore::open(&file, "gw").unwrap());
        let admin = ApiKeyAdmin::new(Arc::clone(&store), "/admin/api-keys", "mcp-admin");
        let (s, _) = json_of(
            admin
                .clone()
                .oneshot(req(Method::GET, "/admin/api-keys", "", None))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = json_of(
            admin
                .clone()
                .oneshot(req(Method::GET, "/admin/api-keys", "", Some("dev")))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, v) = json_of(
            admin
                .clone()
                .oneshot(req(
                    Method::POST,
                    "/admin/api-keys",
                    r#"{"agent":"bot","teams":["t"]}"#,
                    Some("mcp-admin"),
                ))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        let key = v["key"].as_str().unwrap();
        assert_eq!(&*store.authenticate(key).unwrap().subject, "bot");
        let id = v["record"]["id"].as_str().unwrap().to_owned();
        let (s, v) = json_of(
            admin
                .clone()
                .oneshot(req(Method::GET, "/admin/api-keys", "", Some("mcp-admin")))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v[0]["id"], id.as_str());
        assert!(!v.to_string().contains(&key[21..]));
        let (s, _) = json_of(
            admin
                .clone()
                .oneshot(req(
                    Method::DELETE,
                    &format!("/admin/api-keys/{id}"),
                    "",
                    Some("mcp-admin"),
                ))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert!(store.authenticate(key).is_none());
        let (s, _) = json_of(
            admin
                .clone()
                .oneshot(req(
                    Method::POST,
                    "/admin/api-keys",
                    r#"{"agnt":"x"}"#,
                    Some("mcp-admin"),
                ))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = json_of(
            admin
                .oneshot(req(
                    Method::DELETE,
                    "/admin/api-keys/0000000000000000",
                    "",
                    Some("mcp-admin"),
                ))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let _ = std::fs::remove_file(&file);
    }
}

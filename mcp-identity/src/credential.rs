//! `CredentialLayer` (MCP level): how the gateway authenticates to each upstream.
//!
//! Per upstream server (`ctx.target.server`) the administrator picks one [`UpstreamAuth`]:
//! a shared service-account secret from the [`Vault`], per-user credentials (each user's own
//! upstream token, stored in the vault by the OAuth client or an administrator), RFC 8693 token
//! exchange at the IdP (the caller's token is exchanged for an upstream-audience token), or
//! nothing. Static headers (API keys) can be added, and optionally the caller's verified identity
//! as a short-lived gateway-signed JWT ([`IdentitySigner`]).
//!
//! The result is put into `ctx.extensions` as [`UpstreamCredentials`] (the headers the upstream
//! connection must send with this request) and merged into core's
//! [`Endpoint`] extension, whose headers core dispatch sends
//! on a connection opened for exactly that endpoint (a managed layer's URL is kept). The caller's own token ([`BearerToken`]) is removed
//! from the context before the inner service runs, so it cannot reach an upstream.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use mcp_gateway_core::{
    BoxError, ErrorData, Identity, McpRequest, McpResponse, codes, error, upstream::Endpoint,
};
use pin_project_lite::pin_project;
use ring::signature::KeyPair as _;
use serde_json::{Value, json};
use tower_layer::Layer;
use tower_service::Service;

use crate::{authn::BearerToken, oauth::OAuthRegistry, vault::Vault};

/// The headers to send to the upstream with this request. Values are marked sensitive.
#[derive(Clone, Default)]
pub struct UpstreamCredentials {
    /// Header name and value pairs.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl fmt::Debug for UpstreamCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.headers.iter().map(|(n, _)| n))
            .finish()
    }
}

/// How the gateway authenticates to one upstream.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum UpstreamAuth {
    /// No credentials.
    None,
    /// One service-account secret (a vault record) for every caller.
    Shared {
        /// The vault record name.
        secret: String,
        /// The header (default `authorization`).
        header: HeaderName,
        /// The value with `{secret}` replaced (default `Bearer {secret}`).
        format: String,
    },
    /// Each user's own credential: vault record [`user_secret_name`]`(identity, server)`.
    /// Missing: the caller gets `UPSTREAM_AUTH_REQUIRED`, with `data.authorizationUrl` when an
    /// [`AuthorizationUrls`] is configured.
    PerUser {
        /// The header.
        header: HeaderName,
        /// The value format.
        format: String,
    },
    /// RFC 8693 token exchange of the caller's token for an upstream-audience token.
    TokenExchange(TokenExchange),
    /// Per-user OAuth tokens obtained by the gateway's OAuth client ([`OAuthRegistry`]):
    /// refreshed when they expire; when the user has none, the caller gets
    /// `UPSTREAM_AUTH_REQUIRED` with `data.authorizationUrl`.
    OAuth,
}

/// The error a caller sees when an upstream needs their authorization.
pub fn authorization_required(server: &str, url: &str) -> ErrorData {
    error(
        codes::UPSTREAM_AUTH_REQUIRED,
        format!("server `{server}` needs your authorization: open {url}"),
        Some(json!({"server": server, "authorizationUrl": url})),
    )
}

/// The `WWW-Authenticate` value of an upstream's refusal of the credentials: core reports it as
/// `UPSTREAM_AUTH_REQUIRED` with `data.wwwAuthenticate`. `None` for any other error.
pub fn refusal_challenge(e: &ErrorData) -> Option<String> {
    if e.code.0 != codes::UPSTREAM_AUTH_REQUIRED {
        return None;
    }
    e.data
        .as_ref()?
        .get("wwwAuthenticate")?
        .as_str()
        .map(str::to_owned)
}

/// RFC 8693 settings.
#[derive(Debug, Clone)]
pub struct TokenExchange {
    /// The IdP's token endpoint.
    pub token_endpoint: String,
    /// The gateway's client id at the IdP.
    pub client_id: String,
    /// Vault record holding the client secret, if the client is confidential.
    pub client_secret: Option<String>,
    /// `audience` parameter.
    pub audience: Option<String>,
    /// `resource` parameter (RFC 8707).
    pub resource: Option<String>,
    /// `scope` parameter.
    pub scope: Option<String>,
}

/// Produces the URL a user must visit to authorize an upstream (the OAuth client implements it).
pub trait AuthorizationUrls: Send + Sync + 'static {
    /// The URL for this user and server, or `None` if the server has no OAuth configured.
    fn authorization_url(&self, identity: &Identity, server: &str) -> Option<String>;
}

/// Everything configured for one upstream.
#[derive(Debug, Clone)]
pub struct ServerCredentials {
    /// The scheme.
    pub auth: UpstreamAuth,
    /// Extra headers whose values come from vault records (API keys): (header, record name).
    pub secret_headers: Vec<(HeaderName, String)>,
    /// Forward the caller's identity as a gateway-signed JWT in this header.
    pub identity_header: Option<HeaderName>,
}

impl ServerCredentials {
    /// Credentials of one scheme, nothing else.
    pub fn new(auth: UpstreamAuth) -> Self {
        Self {
            auth,
            secret_headers: Vec::new(),
            identity_header: None,
        }
    }
}

/// The vault record name of a user's credential for a server: `user/<hash of issuer+subject>/<server>`.
pub fn user_secret_name(identity: &Identity, server: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, identity.binding().as_bytes());
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("user/{hex}/{server}")
}

// === IdentitySigner ===

/// Signs short-lived JWTs that tell an upstream who the caller is (EdDSA, Ed25519).
#[derive(Clone)]
pub struct IdentitySigner {
    key: Arc<jsonwebtoken::EncodingKey>,
    kid: String,
    public: Vec<u8>,
    issuer: String,
    ttl: Duration,
}

impl fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl IdentitySigner {
    /// A signer from an Ed25519 PKCS#8 document.
    pub fn from_pkcs8(
        pkcs8: &[u8],
        issuer: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, String> {
        crate::jwt::install_crypto_provider();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| format!("identity signing key is not an Ed25519 PKCS#8 key: {e}"))?;
        let public = pair.public_key().as_ref().to_vec();
        let d = ring::digest::digest(&ring::digest::SHA256, &public);
        let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d.as_ref()[..12]);
        Ok(Self {
            key: Arc::new(jsonwebtoken::EncodingKey::from_ed_der(pkcs8)),
            kid,
            public,
            issuer: issuer.into(),
            ttl,
        })
    }

    /// A fresh Ed25519 PKCS#8 key (store it in the vault to share it across replicas).
    pub fn generate_pkcs8() -> Result<Vec<u8>, String> {
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| "no system randomness".to_owned())
    }

    /// The public key as a JWKS document, for upstreams to verify with.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": self.kid,
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.public),
        }]})
    }

    /// Signs an identity for an audience (the upstream server's name).
    pub fn sign(&self, identity: &Identity, audience: &str) -> Result<String, String> {
        let now = crate::jwt::now_secs();
        let mut jti = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti)
            .map_err(|_| "no system randomness".to_owned())?;
        let claims = json!({
            "iss": self.issuer, "aud": audience, "sub": &*identity.subject,
            "iat": now, "nbf": now, "exp": now + self.ttl.as_secs().max(1),
            "jti": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
            "name": identity.name, "email": identity.email, "groups": identity.teams,
            "roles": identity.roles, "kind": identity.kind, "auth_method": identity.auth_method,
            "original_issuer": identity.issuer,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())
    }
}

// === CredentialLayer ===

struct Shared {
    servers: HashMap<Arc<str>, ServerCredentials>,
    vault: Option<Vault>,
    signer: Option<IdentitySigner>,
    urls: Option<Arc<dyn AuthorizationUrls>>,
    oauth: Option<Arc<OAuthRegistry>>,
    http: reqwest::Client,
    exchanged: Mutex<ExchangeCache>,
    identity_jwts: Mutex<ExchangeCache>,
}

type ExchangeCache = HashMap<(String, Arc<str>), (HeaderValue, Instant)>;

impl Clone for Shared {
    fn clone(&self) -> Self {
        Self {
            servers: self.servers.clone(),
            vault: self.vault.clone(),
            signer: self.signer.clone(),
            urls: self.urls.clone(),
            oauth: self.oauth.clone(),
            http: self.http.clone(),
            exchanged: Mutex::new(HashMap::new()),
            identity_jwts: Mutex::new(HashMap::new()),
        }
    }
}

/// Attaches upstream credentials; see the [module docs](self).
#[derive(Clone)]
pub struct CredentialLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for CredentialLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialLayer")
            .field("servers", &self.shared.servers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for CredentialLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CredentialLayer {
    /// A layer with no servers configured (requests pass with no credentials).
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                servers: HashMap::new(),
                vault: None,
                signer: None,
                urls: None,
                oauth: None,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap_or_default(),
                exchanged: Mutex::new(HashMap::new()),
                identity_jwts: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn shared_mut(&mut self) -> &mut Shared {
        // Builders run before the layer is cloned; if it was, copy on write.
        Arc::make_mut(&mut self.shared)
    }

    /// Configures one server.
    #[must_use]
    pub fn server(mut self, name: impl Into<Arc<str>>, creds: ServerCredentials) -> Self {
        self.shared_mut().servers.insert(name.into(), creds);
        self
    }

    /// The vault that holds shared and per-user secrets.
    #[must_use]
    pub fn vault(mut self, vault: Vault) -> Self {
        self.shared_mut().vault = Some(vault);
        self
    }

    /// The signer for identity JWTs.
    #[must_use]
    pub fn signer(mut self, signer: IdentitySigner) -> Self {
        self.shared_mut().signer = Some(signer);
        self
    }

    /// Where users go to authorize per-user upstreams.
    #[must_use]
    pub fn authorization_urls(mut self, urls: Arc<dyn AuthorizationUrls>) -> Self {
        self.shared_mut().urls = Some(urls);
        self
    }

    /// The OAuth clients for [`UpstreamAuth::OAuth`] servers.
    #[must_use]
    pub fn oauth(mut self, registry: Arc<OAuthRegistry>) -> Self {
        self.shared_mut().oauth = Some(registry);
        self
    }

    /// The HTTP client for token exchange.
    #[must_use]
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.shared_mut().http = http;
        self
    }
}

impl<S> Layer<S> for CredentialLayer {
    type Service = Credential<S>;

    fn layer(&self, inner: S) -> Credential<S> {
        Credential {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service built by [`CredentialLayer`].
#[derive(Clone)]
pub struct Credential<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for Credential<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Credential<S> {
    /// Wraps `inner` with the layer's configuration.
    pub fn new(inner: S, layer: &CredentialLayer) -> Self {
        layer.layer(inner)
    }

    /// A default layer.
    pub fn layer() -> CredentialLayer {
        CredentialLayer::new()
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

fn sensitive(v: &str) -> Result<HeaderValue, ErrorData> {
    let mut h = HeaderValue::from_str(v).map_err(|_| {
        error(
            codes::INTERNAL_ERROR,
            "an upstream credential is not a valid header value",
            None,
        )
    })?;
    h.set_sensitive(true);
    Ok(h)
}

fn vault_error(e: crate::vault::VaultError) -> ErrorData {
    tracing::error!(error = %e, "vault read failed");
    error(
        codes::INTERNAL_ERROR,
        "upstream credentials are unavailable",
        None,
    )
}

enum Plan {
    Ready(UpstreamCredentials),
    Exchange(UpstreamCredentials, TokenExchange, String),
    OAuth(UpstreamCredentials, Arc<Identity>),
}

impl Shared {
    fn secret(&self, name: &str) -> Result<Option<String>, ErrorData> {
        let vault = self.vault.as_ref().ok_or_else(|| {
            error(
                codes::INTERNAL_ERROR,
                "no vault configured for upstream credentials",
                None,
            )
        })?;
        vault.get_string(name).map_err(vault_error)
    }

    /// A signed identity assertion, reused for half its lifetime (so a per-caller upstream
    /// connection is not replaced on every request).
    fn identity_jwt(
        &self,
        signer: &IdentitySigner,
        id: &Identity,
        server: &Arc<str>,
    ) -> Result<HeaderValue, ErrorData> {
        let key = (id.binding(), Arc::clone(server));
        if let Ok(cache) = self.identity_jwts.lock()
            && let Some((v, until)) = cache.get(&key)
            && Instant::now() < *until
        {
            return Ok(v.clone());
        }
        let jwt = signer.sign(id, server).map_err(|e| {
            tracing::error!(error = %e, "signing identity JWT failed");
            error(
                codes::INTERNAL_ERROR,
                "could not sign the identity assertion",
                None,
            )
        })?;
        let v = sensitive(&jwt)?;
        if let Ok(mut cache) = self.identity_jwts.lock() {
            let now = Instant::now();
            if cache.len() > 10_000 {
                cache.retain(|_, (_, until)| *until > now);
            }
            cache.insert(key, (v.clone(), now + signer.ttl / 2));
        }
        Ok(v)
    }

    fn plan(&self, req: &McpRequest, server: &Arc<str>) -> Result<Plan, ErrorData> {
        let Some(cfg) = self.servers.get(server) else {
            return Ok(Plan::Ready(UpstreamCredentials::default()));
        };
        let mut creds = UpstreamCredentials::default();
        let identity = req.ctx.identity.as_deref();
        for (h, name) in &cfg.secret_headers {
            let v = self.secret(name)?.ok_or_else(|| {
                tracing::error!(server = %server, secret = %name, "vault record missing");
                error(
                    codes::INTERNAL_ERROR,
                    "upstream credentials are unavailable",
                    None,
                )
            })?;
            creds.headers.push((h.clone(), sensitive(&v)?));
        }
        if let (Some(h), Some(signer), Some(id)) = (&cfg.identity_header, &self.signer, identity) {
            creds
                .headers
                .push((h.clone(), self.identity_jwt(signer, id, server)?));
        }
        match &cfg.auth {
            UpstreamAuth::None => Ok(Plan::Ready(creds)),
            UpstreamAuth::Shared {
                secret,
                header,
                format,
            } => {
                let v = self.secret(secret)?.ok_or_else(|| {
                    tracing::error!(server = %server, secret = %secret, "shared secret missing from vault");
                    error(codes::INTERNAL_ERROR, "upstream credentials are unavailable", None)
                })?;
                creds
                    .headers
                    .push((header.clone(), sensitive(&format.replace("{secret}", &v))?));
                Ok(Plan::Ready(creds))
            }
            UpstreamAuth::PerUser { header, format } => {
                let id = identity
                    .filter(|i| i.auth_method != mcp_gateway_core::identity::AuthMethod::Anonymous);
                let Some(id) = id else {
                    return Err(error(
                        codes::UNAUTHORIZED,
                        format!("server `{server}` uses per-user credentials: sign in first"),
                        None,
                    ));
                };
                match self.secret(&user_secret_name(id, server))? {
                    Some(v) => {
                        creds
                            .headers
                            .push((header.clone(), sensitive(&format.replace("{secret}", &v))?));
                        Ok(Plan::Ready(creds))
                    }
                    None => {
                        let url = self
                            .urls
                            .as_ref()
                            .and_then(|u| u.authorization_url(id, server));
                        let data = url
                            .as_ref()
                            .map(|u| json!({"server": &**server, "authorizationUrl": u}));
                        let msg = match &url {
                            Some(u) => {
                                format!("server `{server}` needs your authorization: open {u}")
                            }
                            None => format!(
                                "server `{server}` has no credentials for you; ask an administrator"
                            ),
                        };
                        Err(error(codes::UPSTREAM_AUTH_REQUIRED, msg, data))
                    }
                }
            }
            UpstreamAuth::TokenExchange(tx) => {
                let token = req.ctx.extensions.get::<BearerToken>().ok_or_else(|| {
                    error(
                        codes::UNAUTHORIZED,
                        format!("server `{server}` needs a signed-in caller (token exchange)"),
                        None,
                    )
                })?;
                let key = token_key(token.expose());
                if let Ok(cache) = self.exchanged.lock()
                    && let Some((v, until)) = cache.get(&(key.clone(), Arc::clone(server)))
                    && Instant::now() < *until
                {
                    creds.headers.push((http::header::AUTHORIZATION, v.clone()));
                    return Ok(Plan::Ready(creds));
                }
                Ok(Plan::Exchange(creds, tx.clone(), token.expose().to_owned()))
            }
            UpstreamAuth::OAuth => {
                let id = req
                    .ctx
                    .identity
                    .clone()
                    .filter(|i| i.auth_method != mcp_gateway_core::identity::AuthMethod::Anonymous)
                    .ok_or_else(|| {
                        error(
                            codes::UNAUTHORIZED,
                            format!("server `{server}` uses per-user credentials: sign in first"),
                            None,
                        )
                    })?;
                Ok(Plan::OAuth(creds, id))
            }
        }
    }

    async fn oauth_token(
        self: Arc<Self>,
        server: Arc<str>,
        mut creds: UpstreamCredentials,
        identity: Arc<Identity>,
    ) -> Result<UpstreamCredentials, ErrorData> {
        let unavailable = |e: crate::oauth::OAuthError| {
            tracing::warn!(server = %server, error = %e, "upstream OAuth failed");
            error(
                codes::UPSTREAM_AUTH_REQUIRED,
                format!(
                    "server `{server}` needs authorization, but the gateway could not start it"
                ),
                Some(json!({"server": &*server})),
            )
        };
        let registry = self.oauth.as_ref().ok_or_else(|| {
            error(
                codes::INTERNAL_ERROR,
                "no OAuth client configured for this server",
                None,
            )
        })?;
        let client = registry.get(&server).ok_or_else(|| {
            error(
                codes::INTERNAL_ERROR,
                "no OAuth client configured for this server",
                None,
            )
        })?;
        match client.access_token(&identity).await.map_err(unavailable)? {
            Some(token) => {
                creds.headers.push((
                    http::header::AUTHORIZATION,
                    sensitive(&format!("Bearer {token}"))?,
                ));
                Ok(creds)
            }
            None => {
                let url = registry
                    .authorization_url(&identity, &server, None)
                    .await
                    .map_err(unavailable)?;
                Err(authorization_required(&server, &url))
            }
        }
    }

    async fn exchange(
        self: Arc<Self>,
        server: Arc<str>,
        mut creds: UpstreamCredentials,
        tx: TokenExchange,
        subject_token: String,
    ) -> Result<UpstreamCredentials, ErrorData> {
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
            ),
            ("subject_token", subject_token.clone()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token".to_owned(),
            ),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token".to_owned(),
            ),
            ("client_id", tx.client_id.clone()),
        ];
        if let Some(a) = &tx.audience {
            form.push(("audience", a.clone()));
        }
        if let Some(r) = &tx.resource {
            form.push(("resource", r.clone()));
        }
        if let Some(s) = &tx.scope {
            form.push(("scope", s.clone()));
        }
        let mut rb = self.http.post(&tx.token_endpoint);
        if let Some(name) = &tx.client_secret {
            let secret = self.secret(name)?.unwrap_or_default();
            rb = rb.basic_auth(&tx.client_id, Some(secret));
        }
        let failed = |why: String| {
            tracing::warn!(server = %server, why = %why, "token exchange failed");
            error(
                codes::UPSTREAM_AUTH_REQUIRED,
                format!(
                    "could not obtain credentials for server `{server}` (token exchange refused)"
                ),
                Some(json!({"server": &*server})),
            )
        };
        let resp = rb
            .form(&form)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            return Err(failed(format!(
                "HTTP {status}: {}",
                body.get("error").unwrap_or(&Value::Null)
            )));
        }
        let access = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| failed("no access_token".into()))?;
        if access == subject_token {
            return Err(failed("the IdP returned the caller's own token".into()));
        }
        let ttl = body.get("expires_in").and_then(Value::as_u64).unwrap_or(60);
        let value = sensitive(&format!("Bearer {access}"))?;
        if let Ok(mut cache) = self.exchanged.lock() {
            if cache.len() > 10_000 {
                let now = Instant::now();
                cache.retain(|_, (_, until)| *until > now);
            }
            cache.insert(
                (token_key(&subject_token), server),
                (
                    value.clone(),
                    Instant::now() + Duration::from_secs(ttl.saturating_sub(30).max(1)),
                ),
            );
        }
        creds.headers.push((http::header::AUTHORIZATION, value));
        Ok(creds)
    }
}

/// Puts credentials into the context: as [`UpstreamCredentials`], and merged into core's
/// `Endpoint` (same-named headers replaced, a URL chosen by another layer kept).
pub fn attach(ext: &mut http::Extensions, creds: UpstreamCredentials) {
    if !creds.headers.is_empty() {
        let mut ep = ext.remove::<Endpoint>().unwrap_or_default();
        for (n, v) in &creds.headers {
            ep.headers.retain(|(k, _)| k != n);
            ep.headers.push((n.clone(), v.clone()));
        }
        ext.insert(ep);
    }
    ext.insert(creds);
}

fn token_key(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(d.as_ref())
}

type Exchanging = Pin<Box<dyn Future<Output = Result<UpstreamCredentials, ErrorData>> + Send>>;

impl<S> Service<McpRequest> for Credential<S>
where
    S: Service<McpRequest, Response = McpResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = McpResponse;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: McpRequest) -> Self::Future {
        let Some(server) = req.ctx.target.as_ref().map(|t| Arc::clone(&t.server)) else {
            req.ctx.extensions.remove::<BearerToken>();
            return ResponseFuture::inner(self.inner.call(req));
        };
        match self.shared.plan(&req, &server) {
            Ok(Plan::Ready(creds)) => {
                req.ctx.extensions.remove::<BearerToken>();
                attach(&mut req.ctx.extensions, creds);
                ResponseFuture::inner(self.inner.call(req))
            }
            Ok(Plan::Exchange(creds, tx, token)) => {
                req.ctx.extensions.remove::<BearerToken>();
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let fut = Box::pin(Arc::clone(&self.shared).exchange(server, creds, tx, token));
                ResponseFuture {
                    state: State::Exchanging {
                        fut,
                        req: Some(req),
                        inner,
                        step_up: None,
                    },
                }
            }
            Ok(Plan::OAuth(creds, identity)) => {
                req.ctx.extensions.remove::<BearerToken>();
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let step_up = self.shared.oauth.as_ref().map(|registry| StepUp {
                    registry: Arc::clone(registry),
                    identity: Arc::clone(&identity),
                    server: Arc::clone(&server),
                });
                let fut = Box::pin(Arc::clone(&self.shared).oauth_token(server, creds, identity));
                ResponseFuture {
                    state: State::Exchanging {
                        fut,
                        req: Some(req),
                        inner,
                        step_up,
                    },
                }
            }
            Err(e) => ResponseFuture {
                state: State::Refused {
                    response: Some(req.error(e)),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_the_challenge() {
        let e = error(
            codes::UPSTREAM_AUTH_REQUIRED,
            "x",
            Some(json!({"wwwAuthenticate": "Bearer scope=\"a\""})),
        );
        assert_eq!(refusal_challenge(&e).as_deref(), Some("Bearer scope=\"a\""));
        let other = error(codes::UPSTREAM_UNAVAILABLE, "x", None);
        assert!(refusal_challenge(&other).is_none());
    }

    #[test]
    fn attach_merges_into_endpoint() {
        let mut ext = http::Extensions::new();
        ext.insert(Endpoint {
            url: Some("http://instance-7/mcp".into()),
            headers: vec![
                (
                    HeaderName::from_static("x-instance-secret"),
                    HeaderValue::from_static("s"),
                ),
                (
                    http::header::AUTHORIZATION,
                    HeaderValue::from_static("Bearer old"),
                ),
            ],
        });
        let creds = UpstreamCredentials {
            headers: vec![(
                http::header::AUTHORIZATION,
                HeaderValue::from_static("Bearer new"),
            )],
        };
        attach(&mut ext, creds);
        let ep = ext.get::<Endpoint>().unwrap();
        assert_eq!(ep.url.as_deref(), Some("http://instance-7/mcp"));
        assert_eq!(ep.headers.len(), 2);
        assert_eq!(ep.headers[1].1, "Bearer new");
        // No headers: no Endpoint is invented (the shared base connection stays in use).
        let mut ext = http::Extensions::new();
        attach(&mut ext, UpstreamCredentials::default());
        assert!(ext.get::<Endpoint>().is_none());
        assert!(ext.get::<UpstreamCredentials>().is_some());
    }

    #[test]
    fn identity_jwt_is_reused_within_half_its_lifetime() {
        let signer = IdentitySigner::from_pkcs8(
            &IdentitySigner::generate_pkcs8().unwrap(),
            "https://gw",
            Duration::from_secs(60),
        )
        .unwrap();
        let layer = CredentialLayer::new().signer(signer.clone());
        let alice = Identity::new("alice", mcp_gateway_core::identity::AuthMethod::Jwt);
        let bob = Identity::new("bob", mcp_gateway_core::identity::AuthMethod::Jwt);
        let server: Arc<str> = "s".into();
        let a = layer.shared.identity_jwt(&signer, &alice, &server).unwrap();
        let b = layer.shared.identity_jwt(&signer, &alice, &server).unwrap();
        assert_eq!(a, b);
        let other = layer.shared.identity_jwt(&signer, &bob, &server).unwrap();
        assert_ne!(a, other);
    }
}

pin_project! {
    /// The response future of [`Credential`].
    pub struct ResponseFuture<S: Service<McpRequest>> {
        #[pin]
        state: State<S>,
    }
}

/// What an OAuth upstream's refusal of a stored token needs to become a fresh (step-up)
/// authorization URL for the user.
struct StepUp {
    registry: Arc<OAuthRegistry>,
    identity: Arc<Identity>,
    server: Arc<str>,
}

impl StepUp {
    /// The `WWW-Authenticate` challenge of an upstream that refused the token, if this
    /// response is such a refusal.
    fn challenge(response: &McpResponse) -> Option<String> {
        refusal_challenge(response.body.as_ref().err()?)
    }

    /// The refusal turned into an authorization URL: for `insufficient_scope` one asking for
    /// the union of the granted and the demanded scopes, else a new grant.
    async fn rewrite(self, mut response: McpResponse, challenge: String) -> McpResponse {
        tracing::info!(server = %self.server, challenge = %challenge, "upstream refused the user's OAuth token; asking the user to authorize");
        response.body = Err(self
            .registry
            .challenge_error(&self.identity, &self.server, Some(&challenge))
            .await);
        response
    }
}

type Rewriting = Pin<Box<dyn Future<Output = McpResponse> + Send>>;

pin_project! {
    #[project = StateProj]
    enum State<S: Service<McpRequest>> {
        Inner { #[pin] fut: S::Future, step_up: Option<StepUp> },
        Refused { response: Option<McpResponse> },
        Exchanging { fut: Exchanging, req: Option<McpRequest>, inner: S, step_up: Option<StepUp> },
        Rewriting { fut: Rewriting },
    }
}

impl<S: Service<McpRequest>> ResponseFuture<S> {
    fn inner(fut: S::Future) -> Self {
        Self {
            state: State::Inner { fut, step_up: None },
        }
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
                StateProj::Inner { fut, step_up } => {
                    let response = ready!(fut.poll(cx))?;
                    let challenge = step_up.as_ref().and_then(|_| StepUp::challenge(&response));
                    match (step_up.take(), challenge) {
                        (Some(step_up), Some(challenge)) => {
                            let fut = Box::pin(step_up.rewrite(response, challenge));
                            this.state.set(State::Rewriting { fut });
                        }
                        _ => return Poll::Ready(Ok(response)),
                    }
                }
                StateProj::Rewriting { fut } => return fut.as_mut().poll(cx).map(Ok),
                StateProj::Refused { response } => {
                    return Poll::Ready(
                        response
                            .take()
                            .ok_or_else(|| "credential future polled after completion".into()),
                    );
                }
                StateProj::Exchanging {
                    fut,
                    req,
                    inner,
                    step_up,
                } => {
                    let result = ready!(fut.as_mut().poll(cx));
                    let Some(mut req) = req.take() else {
                        return Poll::Ready(
                            Err("credential future polled after completion".into()),
                        );
                    };
                    match result {
                        Ok(creds) => {
                            attach(&mut req.ctx.extensions, creds);
                            let fut = inner.call(req);
                            let step_up = step_up.take();
                            this.state.set(State::Inner { fut, step_up });
                        }
                        Err(e) => {
                            let response = Some(req.error(e));
                            this.state.set(State::Refused { response });
                        }
                    }
                }
            }
        }
    }
}

//! The OAuth client for upstreams that require OAuth (GitHub, Sentry style MCP servers).
//!
//! [`UpstreamOAuth`] finds the upstream's authorization server through RFC 9728 protected
//! resource metadata (from the upstream's `WWW-Authenticate` challenge or its well-known URL),
//! then RFC 8414 / OpenID Connect discovery; identifies the gateway as a client with a client ID
//! metadata document (when the server supports it and one is configured), a pre-registered
//! client, or RFC 7591 dynamic registration as a fallback; runs the authorization code flow with
//! PKCE (S256) and RFC 8707 `resource` indicators; stores each user's tokens in the [`Vault`];
//! refreshes them (storing rotated refresh tokens); and on `insufficient_scope` builds a step-up
//! authorization URL for the union of scopes. [`OAuthRegistry`] holds one client per upstream,
//! the pending authorizations, and handles the callback the gateway hosts.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use mcp_gateway_core::Identity;
use ring::rand::SecureRandom as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub mod pages;

use crate::{
    credential::user_secret_name,
    jwks::{AuthServerMetadata, discover, get_json, read_json},
    metadata::{ProtectedResourceMetadata, canonical_resource_uri, metadata_url},
    parse::BearerChallenge,
    vault::Vault,
};

/// OAuth client errors. `AuthorizationRequired` carries the URL the user must open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// The user must authorize (first time, refresh failed, or step-up).
    #[error("authorization required at {0}")]
    AuthorizationRequired(String),
    /// Discovery or registration failed.
    #[error("OAuth discovery for `{server}`: {message}")]
    Discovery {
        /// The upstream.
        server: String,
        /// What failed.
        message: String,
    },
    /// The token endpoint refused.
    #[error("token endpoint refused: {0}")]
    Token(String),
    /// The callback's state is unknown or expired.
    #[error("unknown or expired authorization state")]
    UnknownState,
    /// The callback did not come from the browser that confirmed the authorization on the
    /// gateway's consent page.
    #[error("this authorization was not confirmed in this browser")]
    NotThisBrowser,
    /// Vault failure.
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
}

/// The gateway's client settings for one upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthClientConfig {
    /// Where the authorization server sends the user back (the gateway's callback).
    pub redirect_uri: String,
    /// A pre-registered client id.
    pub client_id: Option<String>,
    /// Vault record holding the pre-registered client's secret.
    pub client_secret: Option<String>,
    /// The URL of the gateway's client ID metadata document, used as `client_id` when the
    /// authorization server supports client ID metadata documents.
    pub client_metadata_url: Option<String>,
    /// The client name for dynamic registration.
    pub client_name: Option<String>,
    /// Scopes to ask for (default: the resource's `scopes_supported`).
    pub scopes: Vec<String>,
    /// Use this authorization server instead of discovering it.
    pub issuer: Option<String>,
    /// The gateway's consent page, where users confirm an authorization before they are sent
    /// to the authorization server ([`pages`]). It must be on the redirect URI's origin (the
    /// browser binding is a cookie). Default: `authorize` beside the redirect URI
    /// (`…/oauth/callback` → `…/oauth/authorize`).
    pub consent_uri: Option<String>,
}

impl OAuthClientConfig {
    /// The consent page's URL: [`consent_uri`](Self::consent_uri), or `authorize` beside the
    /// redirect URI. Errors when either is not a URL or they are on different origins.
    pub fn consent_page(&self) -> Result<String, String> {
        let redirect = reqwest::Url::parse(&self.redirect_uri)
            .map_err(|e| format!("redirect_uri `{}`: {e}", self.redirect_uri))?;
        let consent = match &self.consent_uri {
            Some(u) => reqwest::Url::parse(u).map_err(|e| format!("consent_uri `{u}`: {e}"))?,
            None => redirect
                .join("authorize")
                .map_err(|e| format!("redirect_uri `{}`: {e}", self.redirect_uri))?,
        };
        if consent.origin() != redirect.origin() {
            return Err(format!(
                "consent_uri `{consent}` must be on the redirect URI's origin ({})",
                redirect.origin().ascii_serialization()
            ));
        }
        if consent.path() == redirect.path() {
            return Err(format!(
                "consent_uri `{consent}` must differ from the redirect URI"
            ));
        }
        Ok(consent.to_string())
    }
}

/// A user's tokens for one upstream, as stored in the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    /// The access token.
    pub access_token: String,
    /// The refresh token.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Expiry, Unix seconds.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Granted scopes.
    #[serde(default)]
    pub scope: Option<String>,
}

/// How the client authenticates at the token endpoint (RFC 7591 `token_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuth {
    /// A public client: `client_id` in the form, no secret.
    #[default]
    None,
    /// `client_secret_basic`: HTTP Basic with the form-urlencoded id and secret.
    ClientSecretBasic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form.
    ClientSecretPost,
}

impl TokenEndpointAuth {
    /// The RFC 7591 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Self::None),
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            _ => None,
        }
    }

    /// The method for a client that has (or has not) a secret, among those the authorization
    /// server supports (`None`: not advertised, where RFC 8414 says `client_secret_basic`).
    pub fn choose(has_secret: bool, supported: Option<&[String]>) -> Self {
        if !has_secret {
            return Self::None;
        }
        let supports = |m: Self| supported.is_none_or(|s| s.iter().any(|x| x == m.as_str()));
        [Self::ClientSecretBasic, Self::ClientSecretPost]
            .into_iter()
            .find(|m| supports(*m))
            .unwrap_or(Self::None)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registration {
    metadata: AuthServerMetadata,
    resource: String,
    scopes_supported: Vec<String>,
    client_id: String,
    client_secret: Option<String>,
    #[serde(default)]
    auth_method: TokenEndpointAuth,
}

/// A fresh PKCE pair: (verifier, S256 challenge).
pub fn pkce_pair() -> Result<(String, String), OAuthError> {
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| OAuthError::Token("no system randomness".into()))?;
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    Ok((verifier.clone(), pkce_challenge(&verifier)))
}

/// The S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

fn random_state() -> Result<String, OAuthError> {
    let mut raw = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| OAuthError::Token("no system randomness".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// The client ID metadata document the gateway hosts at `client_metadata_url`.
pub fn client_metadata_document(cfg: &OAuthClientConfig) -> Value {
    json!({
        "client_id": cfg.client_metadata_url,
        "client_name": cfg.client_name.clone().unwrap_or_else(|| "MCP gateway".into()),
        "redirect_uris": [cfg.redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

struct Pending {
    server: String,
    secret_name: String,
    verifier: String,
    scope: String,
    created: Instant,
    /// The user it was started for, as the consent page names them.
    who: String,
    /// The authorization server's URL for this flow.
    authorize_url: String,
    /// Started for a browser: the callback must come from the browser that confirmed it on the
    /// consent page ([`pages`]), not through [`OAuthRegistry::callback`].
    needs_browser: bool,
    /// SHA-256 of the secret cookie given to the browser that confirmed.
    browser: Option<[u8; 32]>,
}

/// The OAuth client for one upstream.
pub struct UpstreamOAuth {
    server: String,
    resource_url: String,
    cfg: OAuthClientConfig,
    http: reqwest::Client,
    vault: Vault,
    registration: tokio::sync::Mutex<Option<Arc<Registration>>>,
}

impl std::fmt::Debug for UpstreamOAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamOAuth")
            .field("server", &self.server)
            .field("resource", &self.resource_url)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    crate::jwt::now_secs()
}

impl UpstreamOAuth {
    /// A client for `server`, whose MCP endpoint is `resource_url`.
    pub fn new(
        server: impl Into<String>,
        resource_url: impl Into<String>,
        cfg: OAuthClientConfig,
        vault: Vault,
    ) -> Self {
        Self {
            server: server.into(),
            resource_url: resource_url.into(),
            cfg,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            vault,
            registration: tokio::sync::Mutex::new(None),
        }
    }

    /// The upstream's name.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn disc(&self, message: impl Into<String>) -> OAuthError {
        OAuthError::Discovery {
            server: self.server.clone(),
            message: message.into(),
        }
    }

    /// Discovery and client registration (cached; persisted in the vault).
    async fn registration(
        &self,
        challenge: Option<&BearerChallenge>,
    ) -> Result<Arc<Registration>, OAuthError> {
        let mut slot = self.registration.lock().await;
        if let Some(r) = &*slot {
            return Ok(Arc::clone(r));
        }
        let record = format!("oauth/client/{}", self.server);
        if let Some(raw) = self.vault.get(&record)?
            && let Ok(r) = serde_json::from_slice::<Registration>(&raw)
        {
            let r = Arc::new(r);
            *slot = Some(Arc::clone(&r));
            return Ok(r);
        }
        // RFC 9728: the resource's metadata names its authorization servers. Without any
        // (a 2025-03-26 server), the server's origin is its own authorization server.
        let canonical = canonical_resource_uri(&self.resource_url).map_err(|e| self.disc(e))?;
        let (metadata, resource, scopes) = match &self.cfg.issuer {
            Some(iss) => (
                discover(&self.http, iss)
                    .await
                    .map_err(|e| self.disc(e.to_string()))?,
                canonical,
                Vec::new(),
            ),
            None => match self.resource_metadata(challenge).await? {
                Some(prm) => {
                    let iss = prm.authorization_servers.first().cloned().ok_or_else(|| {
                        self.disc("protected resource metadata names no authorization server")
                    })?;
                    let metadata = discover(&self.http, &iss)
                        .await
                        .map_err(|e| self.disc(e.to_string()))?;
                    (metadata, prm.resource, prm.scopes_supported)
                }
                None => (self.legacy_metadata().await?, canonical, Vec::new()),
            },
        };
        if let Some(methods) = &metadata.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err(self.disc("the authorization server does not support PKCE S256"));
        }
        let supported = metadata.token_endpoint_auth_methods_supported.as_deref();
        let (client_id, client_secret, auth_method) = if let Some(id) = &self.cfg.client_id {
            let secret = match &self.cfg.client_secret {
                Some(name) => self.vault.get_string(name)?,
                None => None,
            };
            let method = TokenEndpointAuth::choose(secret.is_some(), supported);
            (id.clone(), secret, method)
        } else if let (Some(url), Some(true)) = (
            &self.cfg.client_metadata_url,
            metadata.client_id_metadata_document_supported,
        ) {
            (url.clone(), None, TokenEndpointAuth::None)
        } else if let Some(reg) = &metadata.registration_endpoint {
            self.register(reg, supported).await?
        } else {
            return Err(self.disc(
                "no client id configured, no client ID metadata document support, and no dynamic registration",
            ));
        };
        let r = Arc::new(Registration {
            metadata,
            resource,
            scopes_supported: scopes,
            client_id,
            client_secret,
            auth_method,
        });
        if let Ok(raw) = serde_json::to_vec(&*r) {
            self.vault.put(&record, &raw)?;
        }
        *slot = Some(Arc::clone(&r));
        Ok(r)
    }

    /// The resource's RFC 9728 metadata: from the challenge's `resource_metadata`, else the
    /// path-suffixed well-known URL, else the root one (in that order; the first document found
    /// wins). `Ok(None)` when there is none (a 2025-03-26 server); an error when a document is
    /// broken or describes another resource (never authorize for the wrong resource).
    async fn resource_metadata(
        &self,
        challenge: Option<&BearerChallenge>,
    ) -> Result<Option<ProtectedResourceMetadata>, OAuthError> {
        let mut urls = Vec::new();
        if let Some(u) = challenge.and_then(|c| c.resource_metadata.clone()) {
            urls.push(u);
        }
        urls.push(metadata_url(&self.resource_url));
        if let Ok(u) = reqwest::Url::parse(&self.resource_url) {
            urls.push(format!(
                "{}{}",
                u.origin().ascii_serialization(),
                crate::metadata::WELL_KNOWN
            ));
        }
        urls.dedup();
        let expected = canonical_resource_uri(&self.resource_url).map_err(|e| self.disc(e))?;
        for url in urls {
            match get_json(&self.http, &url, 64 * 1024).await {
                Ok(v) => {
                    let prm: ProtectedResourceMetadata =
                        serde_json::from_value(v).map_err(|e| self.disc(format!("{url}: {e}")))?;
                    let got = canonical_resource_uri(&prm.resource).unwrap_or_default();
                    // The document must be about this resource (or its origin, for root documents).
                    if got != expected && !expected.starts_with(&format!("{got}/")) {
                        return Err(self.disc(format!(
                            "{url} describes `{}`, not `{expected}`",
                            prm.resource
                        )));
                    }
                    return Ok(Some(prm));
                }
                Err(e) => {
                    tracing::debug!(server = %self.server, error = %e, "no protected resource metadata here")
                }
            }
        }
        Ok(None)
    }

    /// 2025-03-26 discovery: RFC 8414 metadata at the server's origin (whatever issuer it names:
    /// that revision has no issuer check), else the default endpoints `/authorize`, `/token`
    /// and `/register` at the origin.
    async fn legacy_metadata(&self) -> Result<AuthServerMetadata, OAuthError> {
        let origin = reqwest::Url::parse(&self.resource_url)
            .map_err(|e| self.disc(format!("`{}`: {e}", self.resource_url)))?
            .origin()
            .ascii_serialization();
        let url = format!("{origin}/.well-known/oauth-authorization-server");
        match get_json(&self.http, &url, 256 * 1024).await {
            Ok(v) => serde_json::from_value(v).map_err(|e| self.disc(format!("{url}: {e}"))),
            Err(e) => {
                tracing::debug!(server = %self.server, error = %e, "no authorization server metadata; using the default endpoints");
                Ok(AuthServerMetadata {
                    issuer: origin.clone(),
                    jwks_uri: None,
                    authorization_endpoint: Some(format!("{origin}/authorize")),
                    token_endpoint: Some(format!("{origin}/token")),
                    registration_endpoint: Some(format!("{origin}/register")),
                    scopes_supported: None,
                    code_challenge_methods_supported: None,
                    client_id_metadata_document_supported: None,
                    token_endpoint_auth_methods_supported: None,
                })
            }
        }
    }

    async fn register(
        &self,
        endpoint: &str,
        supported: Option<&[String]>,
    ) -> Result<(String, Option<String>, TokenEndpointAuth), OAuthError> {
        // A public client where the server allows it, else a confidential one it supports.
        let asked = if supported.is_none_or(|s| s.iter().any(|m| m == "none")) {
            TokenEndpointAuth::None
        } else {
            TokenEndpointAuth::choose(true, supported)
        };
        let body = json!({
            "client_name": self.cfg.client_name.clone().unwrap_or_else(|| "MCP gateway".into()),
            "redirect_uris": [self.cfg.redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": asked.as_str(),
        });
        let resp = self
            .http
            .post(endpoint)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.disc(format!("registration: {e}")))?;
        let v = read_json(endpoint, resp, 64 * 1024)
            .await
            .map_err(|e| self.disc(format!("registration: {e}")))?;
        let id = v
            .get("client_id")
            .and_then(Value::as_str)
            .ok_or_else(|| self.disc("registration response has no client_id"))?;
        let secret = v
            .get("client_secret")
            .and_then(Value::as_str)
            .map(str::to_owned);
        // The server has the last word on the method (RFC 7591 section 3.2.1).
        let method = match v.get("token_endpoint_auth_method").and_then(Value::as_str) {
            Some(m) => TokenEndpointAuth::parse(m).ok_or_else(|| {
                self.disc(format!(
                    "registration: unsupported token_endpoint_auth_method `{m}`"
                ))
            })?,
            None => TokenEndpointAuth::choose(secret.is_some(), supported),
        };
        if method != TokenEndpointAuth::None && secret.is_none() {
            return Err(self.disc(format!(
                "registration: method `{}` without a client_secret",
                method.as_str()
            )));
        }
        Ok((id.to_owned(), secret, method))
    }

    async fn begin(
        &self,
        identity: &Identity,
        extra_scope: Option<&str>,
        challenge: Option<&BearerChallenge>,
    ) -> Result<(String, Pending), OAuthError> {
        let reg = self.registration(challenge).await?;
        let who = match &identity.issuer {
            Some(iss) => format!("{} ({iss})", identity.subject),
            None => identity.subject.to_string(),
        };
        let auth_ep = reg
            .metadata
            .authorization_endpoint
            .clone()
            .ok_or_else(|| self.disc("no authorization_endpoint"))?;
        // MCP scope selection: the challenge's `scope`, else the configured scopes, else the
        // resource's `scopes_supported`, else none (the parameter is omitted). Scopes already
        // granted are kept, so a step-up asks for the union.
        let mut scopes: BTreeSet<String> = match extra_scope {
            Some(s) => s.split_whitespace().map(str::to_owned).collect(),
            None if !self.cfg.scopes.is_empty() => self.cfg.scopes.iter().cloned().collect(),
            None => reg.scopes_supported.iter().cloned().collect(),
        };
        if let Some(old) = self.tokens(identity)?.and_then(|t| t.scope) {
            scopes.extend(old.split_whitespace().map(str::to_owned));
        }
        let scope = scopes.into_iter().collect::<Vec<_>>().join(" ");
        let (verifier, challenge) = pkce_pair()?;
        let state = random_state()?;
        let mut url = reqwest::Url::parse(&auth_ep)
            .map_err(|e| self.disc(format!("authorization_endpoint: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &reg.client_id)
                .append_pair("redirect_uri", &self.cfg.redirect_uri)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("state", &state)
                .append_pair("resource", &reg.resource);
            if !scope.is_empty() {
                q.append_pair("scope", &scope);
            }
        }
        let pending = Pending {
            server: self.server.clone(),
            secret_name: user_secret_name(identity, &self.server),
            verifier,
            scope,
            created: Instant::now(),
            who,
            authorize_url: url.to_string(),
            needs_browser: false,
            browser: None,
        };
        Ok((state, pending))
    }

    /// The user's stored tokens.
    pub fn tokens(&self, identity: &Identity) -> Result<Option<TokenSet>, OAuthError> {
        let name = format!("{}/oauth", user_secret_name(identity, &self.server));
        Ok(self
            .vault
            .get(&name)?
            .and_then(|raw| serde_json::from_slice(&raw).ok()))
    }

    fn store(&self, secret_name: &str, t: &TokenSet) -> Result<(), OAuthError> {
        let raw = serde_json::to_vec(t).map_err(|e| OAuthError::Token(e.to_string()))?;
        self.vault.put(&format!("{secret_name}/oauth"), &raw)?;
        // The plain access token where per-user credentials are looked up.
        self.vault.put(secret_name, t.access_token.as_bytes())?;
        Ok(())
    }

    async fn token_request(
        &self,
        reg: &Registration,
        form: &[(&str, &str)],
    ) -> Result<TokenSet, OAuthError> {
        let ep = reg
            .metadata
            .token_endpoint
            .clone()
            .ok_or_else(|| self.disc("no token_endpoint"))?;
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let secret = reg.client_secret.as_deref().unwrap_or_default();
        let mut basic = None;
        match reg.auth_method {
            TokenEndpointAuth::None => form.push(("client_id", &reg.client_id)),
            TokenEndpointAuth::ClientSecretPost => {
                form.push(("client_id", &reg.client_id));
                form.push(("client_secret", secret));
            }
            TokenEndpointAuth::ClientSecretBasic => {
                // RFC 6749 section 2.3.1: both parts form-urlencoded before base64.
                let enc = |v: &str| form_urlencode(v);
                basic = Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!(
                        "{}:{}",
                        enc(&reg.client_id),
                        enc(secret)
                    ))
                ));
            }
        }
        let mut rb = self.http.post(&ep).form(&form);
        if let Some(b) = basic {
            rb = rb.header(http::header::AUTHORIZATION, b);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| OAuthError::Token(e.to_string()))?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|e| OAuthError::Token(e.to_string()))?;
        if !status.is_success() {
            return Err(OAuthError::Token(format!(
                "HTTP {status}: {}",
                v.get("error").unwrap_or(&Value::Null)
            )));
        }
        let access = v
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| OAuthError::Token("no access_token".into()))?;
        Ok(TokenSet {
            access_token: access.to_owned(),
            refresh_token: v
                .get("refresh_token")
                .and_then(Value::as_str)
                .map(str::to_owned),
            expires_at: v
                .get("expires_in")
                .and_then(Value::as_u64)
                .map(|s| now() + s),
            scope: v.get("scope").and_then(Value::as_str).map(str::to_owned),
        })
    }

    async fn complete(&self, p: &Pending, code: &str) -> Result<TokenSet, OAuthError> {
        let reg = self.registration(None).await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.cfg.redirect_uri.as_str()),
            ("code_verifier", p.verifier.as_str()),
            ("resource", reg.resource.as_str()),
        ];
        let mut t = self.token_request(&reg, &form).await?;
        if t.scope.is_none() && !p.scope.is_empty() {
            t.scope = Some(p.scope.clone());
        }
        self.store(&p.secret_name, &t)?;
        Ok(t)
    }

    /// A valid access token for this user: the stored one, refreshed when it expires within 60 s
    /// (a rotated refresh token replaces the old one). `Ok(None)` when the user has none.
    pub async fn access_token(&self, identity: &Identity) -> Result<Option<String>, OAuthError> {
        let Some(t) = self.tokens(identity)? else {
            return Ok(None);
        };
        if t.expires_at.is_none_or(|e| e > now() + 60) {
            return Ok(Some(t.access_token));
        }
        let Some(refresh) = t.refresh_token.clone() else {
            return Ok(None);
        };
        let reg = self.registration(None).await?;
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("resource", reg.resource.as_str()),
        ];
        match self.token_request(&reg, &form).await {
            Ok(mut new) => {
                if new.refresh_token.is_none() {
                    new.refresh_token = Some(refresh);
                }
                if new.scope.is_none() {
                    new.scope = t.scope;
                }
                self.store(&user_secret_name(identity, &self.server), &new)?;
                Ok(Some(new.access_token))
            }
            Err(e) => {
                tracing::info!(server = %self.server, error = %e, "refresh failed; user must re-authorize");
                Ok(None)
            }
        }
    }
}

/// All upstream OAuth clients, the pending authorizations, and the callback.
///
/// A gateway that sends people's browsers to authorize should also set a
/// [`consent_page`](Self::consent_page) and serve [`pages::OAuthPages`]: the user is then shown
/// who and what they authorize before the authorization server is asked, and the callback is
/// accepted only from the browser that confirmed. Without it, whoever opens an authorization URL
/// completes it for the user it was made for (the confused-deputy problem of the MCP security
/// best practices).
#[derive(Default)]
pub struct OAuthRegistry {
    clients: HashMap<String, Arc<UpstreamOAuth>>,
    pending: Mutex<HashMap<String, Pending>>,
    consent_page: Option<String>,
}

impl std::fmt::Debug for OAuthRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthRegistry")
            .field("servers", &self.clients.keys().collect::<Vec<_>>())
            .field("consent_page", &self.consent_page)
            .finish_non_exhaustive()
    }
}

/// How long a started authorization stays valid.
const PENDING_TTL: Duration = Duration::from_secs(600);

impl OAuthRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an upstream's client.
    #[must_use]
    pub fn client(mut self, c: UpstreamOAuth) -> Self {
        self.clients.insert(c.server.clone(), Arc::new(c));
        self
    }

    /// Sends users to the gateway's consent page at `url` (served by [`pages::OAuthPages`])
    /// instead of straight to the authorization server, and accepts their callbacks only from
    /// the browser that confirmed there.
    #[must_use]
    pub fn consent_page(mut self, url: impl Into<String>) -> Self {
        self.consent_page = Some(url.into());
        self
    }

    /// The consent page's URL, if one is set.
    pub fn consent_page_url(&self) -> Option<&str> {
        self.consent_page.as_deref()
    }

    /// The redirect URIs of the clients (where [`pages::OAuthPages`] serves the callback).
    pub fn redirect_uris(&self) -> BTreeSet<&str> {
        self.clients
            .values()
            .map(|c| c.cfg.redirect_uri.as_str())
            .collect()
    }

    /// The client for a server.
    pub fn get(&self, server: &str) -> Option<&Arc<UpstreamOAuth>> {
        self.clients.get(server)
    }

    /// Starts an authorization and remembers it: `(state, authorization server URL)`.
    async fn start(
        &self,
        identity: &Identity,
        server: &str,
        challenge: Option<&BearerChallenge>,
        needs_browser: bool,
    ) -> Result<(String, String), OAuthError> {
        let c = self
            .clients
            .get(server)
            .ok_or_else(|| OAuthError::Discovery {
                server: server.into(),
                message: "no OAuth client configured".into(),
            })?;
        let (state, mut pending) = c
            .begin(
                identity,
                challenge.and_then(|c| c.scope.as_deref()),
                challenge,
            )
            .await?;
        pending.needs_browser = needs_browser;
        let url = pending.authorize_url.clone();
        if let Ok(mut p) = self.pending.lock() {
            p.retain(|_, v| v.created.elapsed() < PENDING_TTL);
            p.insert(state.clone(), pending);
        }
        Ok((state, url))
    }

    /// Starts an authorization for a user (first time, or step-up with the challenge's scope):
    /// the URL to send them to. With a [`consent_page`](Self::consent_page) that is the consent
    /// page for this authorization, else the authorization server itself.
    pub async fn authorization_url(
        &self,
        identity: &Identity,
        server: &str,
        challenge: Option<&BearerChallenge>,
    ) -> Result<String, OAuthError> {
        let browser = self.consent_page.is_some();
        let (state, url) = self.start(identity, server, challenge, browser).await?;
        match &self.consent_page {
            Some(page) => {
                let mut page = reqwest::Url::parse(page)
                    .map_err(|e| OAuthError::Token(format!("consent page URL: {e}")))?;
                page.query_pairs_mut().append_pair("state", &state);
                Ok(page.to_string())
            }
            None => Ok(url),
        }
    }

    /// What the caller should see when an OAuth upstream answered `401`/`403` with this
    /// `WWW-Authenticate` value (call it from the upstream connection code): a fresh
    /// authorization URL — for `insufficient_scope` a step-up URL asking for the union of the
    /// granted and the demanded scopes — wrapped in an `UPSTREAM_AUTH_REQUIRED` error.
    pub async fn challenge_error(
        &self,
        identity: &Identity,
        server: &str,
        www_authenticate: Option<&str>,
    ) -> mcp_gateway_core::ErrorData {
        let challenge = www_authenticate.and_then(crate::parse::parse_www_authenticate);
        match self
            .authorization_url(identity, server, challenge.as_ref())
            .await
        {
            Ok(url) => crate::credential::authorization_required(server, &url),
            Err(e) => {
                tracing::warn!(server, error = %e, "cannot start upstream authorization");
                mcp_gateway_core::error(
                    mcp_gateway_core::codes::UPSTREAM_AUTH_REQUIRED,
                    format!(
                        "server `{server}` refused the gateway's credentials and authorization could not be started"
                    ),
                    Some(json!({"server": server})),
                )
            }
        }
    }

    /// Runs an authorization for an authorization server that approves without user interaction
    /// (a pre-consented client, a test server, the `mcp-gateway connect` command): GETs the
    /// authorization URL without following redirects, expects a redirect to the configured
    /// `redirect_uri`, and completes it like [`callback`](Self::callback) (state checked, code
    /// exchanged with the PKCE verifier). Returns the URL when the server wants a user instead.
    pub async fn authorize_headless(
        &self,
        identity: &Identity,
        server: &str,
        challenge: Option<&BearerChallenge>,
    ) -> Result<(), OAuthError> {
        let (_, url) = self.start(identity, server, challenge, false).await?;
        let c = self.clients.get(server).ok_or(OAuthError::UnknownState)?;
        let resp = c
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| OAuthError::Token(format!("authorization request: {e}")))?;
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .filter(|_| resp.status().is_redirection())
            .and_then(|l| resp.url().join(l).ok());
        let Some(location) = location else {
            return Err(OAuthError::AuthorizationRequired(url));
        };
        let expected = reqwest::Url::parse(&c.cfg.redirect_uri)
            .map_err(|e| OAuthError::Token(format!("redirect_uri: {e}")))?;
        if location.origin() != expected.origin() || location.path() != expected.path() {
            return Err(OAuthError::Token(format!(
                "the authorization server redirected to {}, not to the redirect URI",
                location.origin().ascii_serialization()
            )));
        }
        self.callback(location.query().unwrap_or_default()).await?;
        Ok(())
    }

    /// Handles the redirect back (`?code=…&state=…`): exchanges the code (with the PKCE verifier)
    /// and stores the tokens. Returns the server name. Authorizations started for a browser
    /// through the consent page are refused here ([`OAuthError::NotThisBrowser`]): only
    /// [`pages::OAuthPages`], which checks the browser, completes those.
    pub async fn callback(&self, query: &str) -> Result<String, OAuthError> {
        self.finish(query, None).await
    }

    /// Completes a callback. `browser` is the secret cookie the callback request carried (the
    /// consent page's binding), `None` for callbacks outside a browser.
    async fn finish(&self, query: &str, browser: Option<&str>) -> Result<String, OAuthError> {
        let mut code = None;
        let mut state = None;
        let mut err = None;
        for (k, v) in url_pairs(query) {
            match k.as_str() {
                "code" => code = Some(v),
                "state" => state = Some(v),
                "error" => err = Some(v),
                _ => {}
            }
        }
        let state = state.ok_or(OAuthError::UnknownState)?;
        let pending = {
            let mut all = self.pending.lock().map_err(|_| OAuthError::UnknownState)?;
            let p = all
                .get(&state)
                .filter(|p| p.created.elapsed() < PENDING_TTL)
                .ok_or(OAuthError::UnknownState)?;
            if p.needs_browser {
                // Only the browser that confirmed on the consent page may finish. A callback
                // from anywhere else ends the authorization: its code came from someone who
                // was not asked, and must not be redeemable later through this state.
                let given = browser.map(|b| sha256(b.as_bytes()));
                if p.browser.is_none() || given != p.browser {
                    all.remove(&state);
                    return Err(OAuthError::NotThisBrowser);
                }
            }
            all.remove(&state).ok_or(OAuthError::UnknownState)?
        };
        if let Some(e) = err {
            return Err(OAuthError::Token(format!("authorization denied: {e}")));
        }
        let code = code.ok_or_else(|| OAuthError::Token("callback without code".into()))?;
        let c = self
            .clients
            .get(&pending.server)
            .ok_or(OAuthError::UnknownState)?;
        c.complete(&pending, &code).await?;
        Ok(pending.server)
    }

    /// Runs `f` on a live pending authorization.
    fn with_pending<T>(&self, state: &str, f: impl FnOnce(&mut Pending) -> T) -> Option<T> {
        let mut all = self.pending.lock().ok()?;
        all.get_mut(state)
            .filter(|p| p.created.elapsed() < PENDING_TTL)
            .map(f)
    }

    /// Forgets a pending authorization (the user declined it).
    fn cancel(&self, state: &str) -> bool {
        self.pending
            .lock()
            .ok()
            .and_then(|mut all| all.remove(state))
            .is_some()
    }
}

fn sha256(v: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, v);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn form_urlencode(v: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("v", v)])
        .ok()
        .and_then(|u| u.query().map(|q| q.trim_start_matches("v=").to_owned()))
        .unwrap_or_default()
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{}", query.trim_start_matches('?')))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_rfc7636_vector() {
        // RFC 7636 appendix B
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let (v, c) = pkce_pair().unwrap();
        assert_eq!(pkce_challenge(&v), c);
        assert!(v.len() >= 43);
    }

    #[test]
    fn token_endpoint_auth_choice() {
        use TokenEndpointAuth as T;
        let s = |v: &[&str]| v.iter().map(|m| (*m).to_owned()).collect::<Vec<_>>();
        assert_eq!(T::choose(false, None), T::None);
        // Not advertised: RFC 8414's default, client_secret_basic.
        assert_eq!(T::choose(true, None), T::ClientSecretBasic);
        assert_eq!(
            T::choose(true, Some(&s(&["client_secret_post"]))),
            T::ClientSecretPost
        );
        assert_eq!(
            T::choose(
                true,
                Some(&s(&["client_secret_post", "client_secret_basic"]))
            ),
            T::ClientSecretBasic
        );
        assert_eq!(T::choose(true, Some(&s(&["none"]))), T::None);
        assert_eq!(T::parse("client_secret_post"), Some(T::ClientSecretPost));
        assert_eq!(T::parse("private_key_jwt"), None);
        // RFC 6749 section 2.3.1: form-urlencoded before base64.
        assert_eq!(form_urlencode("a b:c/é"), "a+b%3Ac%2F%C3%A9");
    }
}

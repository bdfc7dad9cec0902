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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registration {
    metadata: AuthServerMetadata,
    resource: String,
    scopes_supported: Vec<String>,
    client_id: String,
    client_secret: Option<String>,
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
        // RFC 9728: the resource's metadata names its authorization servers.
        let (issuer, resource, scopes) = match &self.cfg.issuer {
            Some(iss) => (
                iss.clone(),
                canonical_resource_uri(&self.resource_url).map_err(|e| self.disc(e))?,
                Vec::new(),
            ),
            None => {
                let prm = self.resource_metadata(challenge).await?;
                let iss = prm.authorization_servers.first().cloned().ok_or_else(|| {
                    self.disc("protected resource metadata names no authorization server")
                })?;
                (iss, prm.resource, prm.scopes_supported)
            }
        };
        let metadata = discover(&self.http, &issuer)
            .await
            .map_err(|e| self.disc(e.to_string()))?;
        if let Some(methods) = &metadata.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err(self.disc("the authorization server does not support PKCE S256"));
        }
        let (client_id, client_secret) = if let Some(id) = &self.cfg.client_id {
            let secret = match &self.cfg.client_secret {
                Some(name) => self.vault.get_string(name)?,
                None => None,
            };
            (id.clone(), secret)
        } else if let (Some(url), Some(true)) = (
            &self.cfg.client_metadata_url,
            metadata.client_id_metadata_document_supported,
        ) {
            (url.clone(), None)
        } else if let Some(reg) = &metadata.registration_endpoint {
            self.register(reg).await?
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
        });
        if let Ok(raw) = serde_json::to_vec(&*r) {
            self.vault.put(&record, &raw)?;
        }
        *slot = Some(Arc::clone(&r));
        Ok(r)
    }

    async fn resource_metadata(
        &self,
        challenge: Option<&BearerChallenge>,
    ) -> Result<ProtectedResourceMetadata, OAuthError> {
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
        let expected = canonical_resource_uri(&self.resource_url).map_err(|e| self.disc(e))?;
        let mut last = String::from("no metadata URL");
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
                    return Ok(prm);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(self.disc(last))
    }

    async fn register(&self, endpoint: &str) -> Result<(String, Option<String>), OAuthError> {
        let body = json!({
            "client_name": self.cfg.client_name.clone().unwrap_or_else(|| "MCP gateway".into()),
            "redirect_uris": [self.cfg.redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
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
        Ok((
            id.to_owned(),
            v.get("client_secret")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ))
    }

    async fn begin(
        &self,
        identity: &Identity,
        extra_scope: Option<&str>,
        challenge: Option<&BearerChallenge>,
    ) -> Result<(String, Pending), OAuthError> {
        let reg = self.registration(challenge).await?;
        let auth_ep = reg
            .metadata
            .authorization_endpoint
            .clone()
            .ok_or_else(|| self.disc("no authorization_endpoint"))?;
        let mut scopes: BTreeSet<String> = if self.cfg.scopes.is_empty() {
            reg.scopes_supported.iter().cloned().collect()
        } else {
            self.cfg.scopes.iter().cloned().collect()
        };
        if let Some(s) = extra_scope {
            scopes.extend(s.split_whitespace().map(str::to_owned));
        }
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
        };
        Ok((format!("{url}\u{0}{state}"), pending))
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
        let mut rb = self.http.post(&ep).form(form);
        if let Some(secret) = &reg.client_secret {
            rb = rb.basic_auth(&reg.client_id, Some(secret));
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
            ("client_id", reg.client_id.as_str()),
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
            ("client_id", reg.client_id.as_str()),
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
#[derive(Default)]
pub struct OAuthRegistry {
    clients: HashMap<String, Arc<UpstreamOAuth>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for OAuthRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthRegistry")
            .field("servers", &self.clients.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

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

    /// The client for a server.
    pub fn get(&self, server: &str) -> Option<&Arc<UpstreamOAuth>> {
        self.clients.get(server)
    }

    /// Starts an authorization for a user (first time, or step-up with the challenge's scope):
    /// the URL to send them to.
    pub async fn authorization_url(
        &self,
        identity: &Identity,
        server: &str,
        challenge: Option<&BearerChallenge>,
    ) -> Result<String, OAuthError> {
        let c = self
            .clients
            .get(server)
            .ok_or_else(|| OAuthError::Discovery {
                server: server.into(),
                message: "no OAuth client configured".into(),
            })?;
        let (url_state, pending) = c
            .begin(
                identity,
                challenge.and_then(|c| c.scope.as_deref()),
                challenge,
            )
            .await?;
        let (url, state) = url_state
            .split_once('\u{0}')
            .unwrap_or((url_state.as_str(), ""));
        if let Ok(mut p) = self.pending.lock() {
            p.retain(|_, v| v.created.elapsed() < Duration::from_secs(600));
            p.insert(state.to_owned(), pending);
        }
        Ok(url.to_owned())
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

    /// Handles the redirect back (`?code=…&state=…`): exchanges the code (with the PKCE verifier)
    /// and stores the tokens. Returns the server name.
    pub async fn callback(&self, query: &str) -> Result<String, OAuthError> {
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
        let pending = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&state))
            .filter(|p| p.created.elapsed() < Duration::from_secs(600))
            .ok_or(OAuthError::UnknownState)?;
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
}

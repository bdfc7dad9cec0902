//! The `[identity]` section of the gateway's TOML, and building the layers from it.
//!
//! ```toml
//! [identity]
//! mode = "required"                        # required | optional | permissive
//! resource = "https://gw.example.com/mcp"  # the gateway's canonical resource URI (token audience)
//! required_scopes = ["mcp:tools"]
//!
//! [identity.jwt]
//! issuer = "https://idp.example.com/realms/corp"
//! algorithms = ["RS256", "ES256"]
//! jwks_fail_mode = "serve_stale"           # serve_stale | closed
//! claims = { preset = "keycloak", client_id = "mcp-gateway" }
//!
//! [identity.api_keys]
//! file = "/var/lib/mcp-gateway/api-keys.json"
//!
//! [identity.vault]
//! dir = "/var/lib/mcp-gateway/vault"
//! key_id = "2026-11"
//! key_env = "MCP_GATEWAY_VAULT_KEY"
//!
//! [identity.upstreams.github]
//! mode = "shared"
//! secret = "github-service-token"
//! ```

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use http::HeaderName;
use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

use crate::{
    apikey::ApiKeyStore,
    authn::{Authenticator, AuthnLayer, Mode},
    claims::ClaimMapping,
    credential::{CredentialLayer, IdentitySigner, ServerCredentials, TokenExchange, UpstreamAuth},
    jwks::{FailMode, JwksCache, JwksTiming, KeySource},
    jwt::JwtValidator,
    metadata::{ProtectedResourceMetadata, canonical_resource_uri},
    oauth::{OAuthClientConfig, OAuthRegistry, UpstreamOAuth, pages::OAuthPages},
    vault::{FileStore, Vault, parse_key},
};

/// A configuration error: which setting, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identity.{path}: {message}")]
pub struct ConfigError {
    /// The setting, e.g. `jwt.algorithms`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// `[identity]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// required | optional | permissive.
    pub mode: Mode,
    /// The gateway's resource URI (RFC 8707; tokens must name it in `aud`).
    pub resource: Option<String>,
    /// Scopes every request needs.
    pub required_scopes: Vec<String>,
    /// Scopes advertised in the metadata document (default: `required_scopes`).
    pub scopes_supported: Vec<String>,
    /// `resource_name` in the metadata document.
    pub resource_name: Option<String>,
    /// Bearer JWTs.
    pub jwt: Option<JwtConfig>,
    /// API keys.
    pub api_keys: Option<ApiKeysConfig>,
    /// The credential vault.
    pub vault: Option<VaultConfig>,
    /// Gateway-signed identity JWTs for upstreams.
    pub identity_jwt: Option<IdentityJwtConfig>,
    /// The OAuth client for upstreams (shared settings).
    pub oauth_client: Option<OAuthClientConfig>,
    /// Per-upstream credentials, by server name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
}

/// `[identity.jwt]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// The issuer (`iss`); its keys are found by discovery unless `jwks_url` is set.
    pub issuer: String,
    /// The JWKS URL, skipping discovery.
    pub jwks_url: Option<String>,
    /// Audiences accepted in addition to `identity.resource`.
    pub audiences: Vec<String>,
    /// The algorithm allowlist (asymmetric only).
    pub algorithms: Vec<String>,
    /// Clock skew on `exp`/`nbf`, seconds (at most 300).
    pub leeway_secs: u64,
    /// Largest token, bytes.
    pub max_token_bytes: usize,
    /// JWKS freshness, seconds.
    pub jwks_ttl_secs: u64,
    /// Minimum seconds between JWKS refreshes (unknown-kid floods).
    pub jwks_min_refresh_secs: u64,
    /// JWKS/discovery HTTP timeout, milliseconds.
    pub jwks_timeout_ms: u64,
    /// serve_stale | closed.
    pub jwks_fail_mode: FailMode,
    /// How long stale keys stay usable in serve_stale, seconds.
    pub max_stale_secs: u64,
    /// Verified tokens remembered (0 disables).
    pub token_cache: usize,
    /// Claim mapping.
    pub claims: ClaimsConfig,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            jwks_url: None,
            audiences: Vec::new(),
            algorithms: vec![
                "RS256".into(),
                "PS256".into(),
                "ES256".into(),
                "EdDSA".into(),
            ],
            leeway_secs: 30,
            max_token_bytes: crate::parse::DEFAULT_MAX_TOKEN_BYTES,
            jwks_ttl_secs: 300,
            jwks_min_refresh_secs: 10,
            jwks_timeout_ms: 5000,
            jwks_fail_mode: FailMode::ServeStale,
            max_stale_secs: 86_400,
            token_cache: 10_000,
            claims: ClaimsConfig::default(),
        }
    }
}

/// `claims = { … }`: a preset and per-field overrides (claim paths, `.`-separated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimsConfig {
    /// default | okta | entra | keycloak.
    pub preset: Option<String>,
    /// The Keycloak client whose `resource_access.<client>.roles` are roles.
    pub client_id: Option<String>,
    /// Subject path.
    pub subject: Option<String>,
    /// Name paths.
    pub name: Option<Vec<String>>,
    /// E-mail paths.
    pub email: Option<Vec<String>>,
    /// Team/group paths.
    pub teams: Option<Vec<String>>,
    /// Role paths.
    pub roles: Option<Vec<String>>,
    /// Scope paths.
    pub scopes: Option<Vec<String>>,
    /// A claim marking machine callers.
    pub agent_claim: Option<String>,
}

impl ClaimsConfig {
    /// The mapping this describes.
    pub fn mapping(&self) -> Result<ClaimMapping, ConfigError> {
        let mut m = match self.preset.as_deref() {
            None | Some("default") | Some("okta") => ClaimMapping::okta(),
            Some("entra") => ClaimMapping::entra(),
            Some("keycloak") => {
                ClaimMapping::keycloak(self.client_id.as_deref().unwrap_or("account"))
            }
            Some(other) => {
                return Err(err(
                    "jwt.claims.preset",
                    format!("unknown preset `{other}` (expected default, okta, entra or keycloak)"),
                ));
            }
        };
        if let Some(s) = &self.subject {
            m.subject = s.clone();
        }
        for (dst, src) in [
            (&mut m.name, &self.name),
            (&mut m.email, &self.email),
            (&mut m.teams, &self.teams),
            (&mut m.roles, &self.roles),
            (&mut m.scopes, &self.scopes),
        ] {
            if let Some(v) = src {
                dst.clone_from(v);
            }
        }
        if self.agent_claim.is_some() {
            m.agent_claim.clone_from(&self.agent_claim);
        }
        Ok(m)
    }
}

/// `[identity.api_keys]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// The key store file.
    pub file: PathBuf,
    /// A header that may carry the key (besides `Authorization: Bearer mgw_…`).
    #[serde(default)]
    pub header: Option<String>,
    /// This gateway's id, the issuer of API-key identities (keys are scoped to one gateway).
    #[serde(default = "default_gateway_id")]
    pub gateway_id: String,
}

fn default_gateway_id() -> String {
    "mcp-gateway".into()
}

/// A key source: an environment variable or a file holding base64 of 32 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// Key id.
    pub id: String,
    /// Environment variable.
    #[serde(default)]
    pub env: Option<String>,
    /// File.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `[identity.vault]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// The directory of the file store.
    pub dir: PathBuf,
    /// The active key id.
    pub key_id: String,
    /// Environment variable with the active key (base64, 32 bytes).
    #[serde(default)]
    pub key_env: Option<String>,
    /// File with the active key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Older keys that still decrypt (records are re-encrypted to the active key at start).
    #[serde(default)]
    pub old_keys: Vec<KeyRef>,
}

/// `[identity.identity_jwt]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityJwtConfig {
    /// `iss` of the identity JWTs.
    pub issuer: String,
    /// Lifetime, seconds.
    #[serde(default = "default_identity_ttl")]
    pub ttl_secs: u64,
    /// Vault record holding the Ed25519 PKCS#8 key (generated and stored when missing).
    #[serde(default = "default_identity_key")]
    pub key_secret: String,
}

fn default_identity_ttl() -> u64 {
    60
}

fn default_identity_key() -> String {
    "gateway/identity-signing-key".into()
}

/// How the gateway authenticates to an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamMode {
    /// No credentials.
    #[default]
    None,
    /// One service-account secret.
    Shared,
    /// Each user's own stored credential.
    PerUser,
    /// RFC 8693 token exchange.
    TokenExchange,
    /// The gateway's OAuth client, per user.
    Oauth,
}

/// `[identity.upstreams.<server>]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// The scheme.
    pub mode: UpstreamMode,
    /// shared: the vault record.
    pub secret: Option<String>,
    /// shared/per_user: the header (default `authorization`).
    pub header: Option<String>,
    /// shared/per_user: the value format (default `Bearer {secret}`).
    pub format: Option<String>,
    /// Extra headers: header name -> vault record (API keys).
    pub headers: BTreeMap<String, String>,
    /// Forward the caller's identity as a gateway-signed JWT in this header.
    pub forward_identity: Option<String>,
    /// token_exchange: the IdP token endpoint.
    pub token_endpoint: Option<String>,
    /// token_exchange/oauth: the client id.
    pub client_id: Option<String>,
    /// token_exchange/oauth: vault record with the client secret.
    pub client_secret: Option<String>,
    /// token_exchange: `audience`.
    pub audience: Option<String>,
    /// token_exchange: `resource`.
    pub resource: Option<String>,
    /// token_exchange: `scope`; oauth: scopes (space-separated).
    pub scope: Option<String>,
    /// oauth: the upstream's MCP URL (the protected resource).
    pub url: Option<String>,
    /// oauth: use this authorization server instead of discovering it.
    pub issuer: Option<String>,
}

/// What [`Config::build`] produces.
#[derive(Debug, Clone)]
pub struct Built {
    /// The HTTP-level authentication layer.
    pub authn: AuthnLayer,
    /// The MCP-level credential layer.
    pub credentials: CredentialLayer,
    /// The vault, if configured.
    pub vault: Option<Vault>,
    /// The API key store, if configured (for the admin endpoint and CLI).
    pub api_keys: Option<Arc<ApiKeyStore>>,
    /// The OAuth clients.
    pub oauth: Option<Arc<OAuthRegistry>>,
    /// Their consent page and callback, to serve outside authentication (browsers carry no MCP
    /// credentials).
    pub oauth_pages: Option<OAuthPages>,
    /// The identity-JWT signer (serve its [`IdentitySigner::jwks`]).
    pub signer: Option<IdentitySigner>,
    /// The RFC 9728 document (also served by the authn layer).
    pub metadata: Option<ProtectedResourceMetadata>,
}

fn header(path: &str, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| err(path, format!("`{name}` is not a valid header name")))
}

fn algorithm(path: &str, name: &str) -> Result<Algorithm, ConfigError> {
    let a: Algorithm = name
        .parse()
        .map_err(|_| err(path, format!("unknown algorithm `{name}`")))?;
    if matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(err(
            path,
            format!(
                "`{name}` is symmetric; tokens from an issuer's JWKS use asymmetric algorithms"
            ),
        ));
    }
    Ok(a)
}

fn read_key(
    path: &str,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<[u8; 32], ConfigError> {
    let raw = match (env, file) {
        (Some(var), None) => std::env::var(var)
            .map_err(|_| err(path, format!("environment variable `{var}` is not set")))?,
        (None, Some(f)) => {
            std::fs::read_to_string(f).map_err(|e| err(path, format!("{}: {e}", f.display())))?
        }
        _ => {
            return Err(err(
                path,
                "give exactly one of key_env / key_file (env / file)",
            ));
        }
    };
    parse_key(&raw).map_err(|e| err(path, e.to_string()))
}

impl Config {
    /// Parses the `[identity]` table from TOML text of the section itself.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| err("", e.to_string()))
    }

    /// Checks everything that can be checked without secrets or network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let resource = match &self.resource {
            Some(r) => Some(canonical_resource_uri(r).map_err(|e| err("resource", e))?),
            None => None,
        };
        if let Some(j) = &self.jwt {
            if resource.is_none() && j.audiences.is_empty() {
                return Err(err(
                    "resource",
                    "JWT validation needs the gateway's resource URI (the audience)",
                ));
            }
            reqwest::Url::parse(&j.issuer)
                .map_err(|e| err("jwt.issuer", format!("`{}` is not a URL: {e}", j.issuer)))?;
            if let Some(u) = &j.jwks_url {
                reqwest::Url::parse(u).map_err(|e| err("jwt.jwks_url", e.to_string()))?;
            }
            if j.algorithms.is_empty() {
                return Err(err("jwt.algorithms", "the allowlist is empty"));
            }
            for a in &j.algorithms {
                algorithm("jwt.algorithms", a)?;
            }
            if j.leeway_secs > 300 {
                return Err(err("jwt.leeway_secs", "at most 300 seconds"));
            }
            if !(256..=65_536).contains(&j.max_token_bytes) {
                return Err(err("jwt.max_token_bytes", "between 256 and 65536"));
            }
            if j.jwks_timeout_ms == 0 {
                return Err(err("jwt.jwks_timeout_ms", "must be positive"));
            }
            j.claims.mapping()?;
        }
        if self.jwt.is_none() && self.api_keys.is_none() && self.mode == Mode::Required {
            return Err(err(
                "mode",
                "`required` needs [identity.jwt] or [identity.api_keys]; otherwise nobody can authenticate",
            ));
        }
        if let Some(k) = &self.api_keys
            && let Some(h) = &k.header
        {
            header("api_keys.header", h)?;
        }
        if let Some(v) = &self.vault {
            if v.key_id.is_empty() {
                return Err(err("vault.key_id", "must not be empty"));
            }
            if v.key_env.is_some() == v.key_file.is_some() {
                return Err(err("vault", "give exactly one of key_env / key_file"));
            }
        }
        for (name, u) in &self.upstreams {
            let p = |f: &str| format!("upstreams.{name}.{f}");
            if let Some(h) = &u.header {
                header(&p("header"), h)?;
            }
            if let Some(h) = &u.forward_identity {
                header(&p("forward_identity"), h)?;
                if self.identity_jwt.is_none() {
                    return Err(err(p("forward_identity"), "needs [identity.identity_jwt]"));
                }
            }
            for h in u.headers.keys() {
                header(&p("headers"), h)?;
            }
            let needs_vault = !u.headers.is_empty()
                || matches!(
                    u.mode,
                    UpstreamMode::Shared | UpstreamMode::PerUser | UpstreamMode::Oauth
                )
                || u.forward_identity.is_some();
            if needs_vault && self.vault.is_none() {
                return Err(err(
                    format!("upstreams.{name}"),
                    "needs [identity.vault] for its secrets",
                ));
            }
            match u.mode {
                UpstreamMode::Shared if u.secret.is_none() => {
                    return Err(err(
                        p("secret"),
                        "mode `shared` needs the vault record of the secret",
                    ));
                }
                UpstreamMode::TokenExchange => {
                    let ep = u.token_endpoint.as_ref().ok_or_else(|| {
                        err(p("token_endpoint"), "mode `token_exchange` needs it")
                    })?;
                    reqwest::Url::parse(ep).map_err(|e| err(p("token_endpoint"), e.to_string()))?;
                    if u.client_id.is_none() {
                        return Err(err(p("client_id"), "mode `token_exchange` needs it"));
                    }
                    if u.audience.is_none() && u.resource.is_none() {
                        return Err(err(
                            format!("upstreams.{name}"),
                            "token exchange needs `audience` or `resource`",
                        ));
                    }
                }
                UpstreamMode::Oauth => {
                    let url = u.url.as_ref().ok_or_else(|| {
                        err(p("url"), "mode `oauth` needs the upstream's MCP URL")
                    })?;
                    canonical_resource_uri(url).map_err(|e| err(p("url"), e))?;
                    let oc = self.oauth_client.as_ref().ok_or_else(|| {
                        err(
                            format!("upstreams.{name}"),
                            "mode `oauth` needs [identity.oauth_client]",
                        )
                    })?;
                    reqwest::Url::parse(&oc.redirect_uri)
                        .map_err(|e| err("oauth_client.redirect_uri", e.to_string()))?;
                    oc.consent_page()
                        .map_err(|e| err("oauth_client.consent_uri", e))?;
                }
                _ => {}
            }
            if u.mode != UpstreamMode::Shared && u.secret.is_some() {
                return Err(err(p("secret"), "only used with mode `shared`"));
            }
        }
        Ok(())
    }

    /// Builds the layers (reads keys, opens stores; JWKS are fetched lazily).
    pub fn build(&self) -> Result<Built, ConfigError> {
        self.validate()?;
        let resource = self
            .resource
            .as_deref()
            .map(canonical_resource_uri)
            .transpose()
            .map_err(|e| err("resource", e))?;
        let mut auth = Authenticator::new(self.mode).required_scopes(self.required_scopes.clone());
        let mut metadata = None;
        if let Some(j) = &self.jwt {
            let source = match &j.jwks_url {
                Some(u) => KeySource::Url(u.clone()),
                None => KeySource::Discover {
                    issuer: j.issuer.clone(),
                },
            };
            let timing = JwksTiming {
                ttl: Duration::from_secs(j.jwks_ttl_secs),
                min_refresh_interval: Duration::from_secs(j.jwks_min_refresh_secs),
                fetch_timeout: Duration::from_millis(j.jwks_timeout_ms),
                max_stale: Duration::from_secs(j.max_stale_secs),
            };
            let jwks = JwksCache::new(source, timing, j.jwks_fail_mode)
                .map_err(|e| err("jwt", e.to_string()))?;
            let mut audiences: Vec<String> = resource.iter().cloned().collect();
            audiences.extend(j.audiences.iter().cloned());
            let algs = j
                .algorithms
                .iter()
                .map(|a| algorithm("jwt.algorithms", a))
                .collect::<Result<Vec<_>, _>>()?;
            let v = JwtValidator::new(Arc::new(jwks), j.issuer.clone(), audiences, algs)
                .map_err(|e| err("jwt", e))?
                .leeway(j.leeway_secs)
                .max_token_bytes(j.max_token_bytes)
                .cache_capacity(j.token_cache)
                .claim_mapping(j.claims.mapping()?);
            auth = auth.jwt(v);
        }
        if let Some(r) = &resource {
            let mut m = ProtectedResourceMetadata::new(
                r.clone(),
                self.jwt.iter().map(|j| j.issuer.clone()).collect(),
            );
            m.scopes_supported = if self.scopes_supported.is_empty() {
                self.required_scopes.clone()
            } else {
                self.scopes_supported.clone()
            };
            m.resource_name.clone_from(&self.resource_name);
            auth = auth.metadata(m.clone());
            metadata = Some(m);
        }
        let mut api_keys = None;
        if let Some(k) = &self.api_keys {
            let store = Arc::new(
                ApiKeyStore::open(&k.file, &k.gateway_id)
                    .map_err(|e| err("api_keys.file", e.to_string()))?,
            );
            let h = k
                .header
                .as_deref()
                .map(|h| header("api_keys.header", h))
                .transpose()?;
            auth = auth.api_keys(Arc::clone(&store), h);
            api_keys = Some(store);
        }
        let vault = match &self.vault {
            Some(v) => {
                let key = read_key("vault", v.key_env.as_deref(), v.key_file.as_deref())?;
                let store =
                    Arc::new(FileStore::open(&v.dir).map_err(|e| err("vault.dir", e.to_string()))?);
                let vault =
                    Vault::new(store, &v.key_id, &key).map_err(|e| err("vault", e.to_string()))?;
                for (i, old) in v.old_keys.iter().enumerate() {
                    let k = read_key(
                        &format!("vault.old_keys[{i}]"),
                        old.env.as_deref(),
                        old.file.as_deref(),
                    )?;
                    vault
                        .add_decrypt_key(&old.id, &k)
                        .map_err(|e| err(format!("vault.old_keys[{i}]"), e.to_string()))?;
                }
                Some(vault)
            }
            None => None,
        };
        let signer = match (&self.identity_jwt, &vault) {
            (Some(ij), Some(vault)) => {
                let pkcs8 = match vault
                    .get(&ij.key_secret)
                    .map_err(|e| err("identity_jwt.key_secret", e.to_string()))?
                {
                    Some(k) => k,
                    None => {
                        let k =
                            IdentitySigner::generate_pkcs8().map_err(|e| err("identity_jwt", e))?;
                        vault
                            .put(&ij.key_secret, &k)
                            .map_err(|e| err("identity_jwt.key_secret", e.to_string()))?;
                        k
                    }
                };
                Some(
                    IdentitySigner::from_pkcs8(
                        &pkcs8,
                        ij.issuer.clone(),
                        Duration::from_secs(ij.ttl_secs),
                    )
                    .map_err(|e| err("identity_jwt", e))?,
                )
            }
            (Some(ij), None) => {
                let k = IdentitySigner::generate_pkcs8().map_err(|e| err("identity_jwt", e))?;
                Some(
                    IdentitySigner::from_pkcs8(
                        &k,
                        ij.issuer.clone(),
                        Duration::from_secs(ij.ttl_secs),
                    )
                    .map_err(|e| err("identity_jwt", e))?,
                )
            }
            _ => None,
        };
        let mut creds = CredentialLayer::new();
        let mut registry = OAuthRegistry::new();
        let mut any_oauth = false;
        for (name, u) in &self.upstreams {
            let hdr = u
                .header
                .as_deref()
                .map(|h| header("", h))
                .transpose()?
                .unwrap_or(http::header::AUTHORIZATION);
            let format = u.format.clone().unwrap_or_else(|| "Bearer {secret}".into());
            let auth = match u.mode {
                UpstreamMode::None => UpstreamAuth::None,
                UpstreamMode::Shared => UpstreamAuth::Shared {
                    secret: u.secret.clone().unwrap_or_default(),
                    header: hdr,
                    format,
                },
                UpstreamMode::PerUser => UpstreamAuth::PerUser {
                    header: hdr,
                    format,
                },
                UpstreamMode::TokenExchange => UpstreamAuth::TokenExchange(TokenExchange {
                    token_endpoint: u.token_endpoint.clone().unwrap_or_default(),
                    client_id: u.client_id.clone().unwrap_or_default(),
                    client_secret: u.client_secret.clone(),
                    audience: u.audience.clone(),
                    resource: u.resource.clone(),
                    scope: u.scope.clone(),
                }),
                UpstreamMode::Oauth => {
                    let (Some(oc), Some(vault)) = (&self.oauth_client, &vault) else {
                        return Err(err(
                            format!("upstreams.{name}"),
                            "mode `oauth` needs [identity.oauth_client] and [identity.vault]",
                        ));
                    };
                    let mut cfg = oc.clone();
                    if u.client_id.is_some() {
                        cfg.client_id.clone_from(&u.client_id);
                        cfg.client_secret.clone_from(&u.client_secret);
                    }
                    if let Some(s) = &u.scope {
                        cfg.scopes = s.split_whitespace().map(str::to_owned).collect();
                    }
                    if u.issuer.is_some() {
                        cfg.issuer.clone_from(&u.issuer);
                    }
                    registry = registry.client(UpstreamOAuth::new(
                        name.clone(),
                        u.url.clone().unwrap_or_default(),
                        cfg,
                        vault.clone(),
                    ));
                    any_oauth = true;
                    UpstreamAuth::OAuth
                }
            };
            let mut sc = ServerCredentials::new(auth);
            for (h, rec) in &u.headers {
                sc.secret_headers.push((header("", h)?, rec.clone()));
            }
            sc.identity_header = u
                .forward_identity
                .as_deref()
                .map(|h| header("", h))
                .transpose()?;
            creds = creds.server(name.as_str(), sc);
        }
        if let Some(v) = &vault {
            creds = creds.vault(v.clone());
        }
        if let Some(s) = &signer {
            creds = creds.signer(s.clone());
        }
        if any_oauth && let Some(oc) = &self.oauth_client {
            // Users confirm on the gateway's page; callbacks only from the confirming browser.
            registry =
                registry.consent_page(oc.consent_page().map_err(|e| err("oauth_client", e))?);
        }
        let oauth = any_oauth.then(|| Arc::new(registry));
        let oauth_pages = oauth.clone().and_then(OAuthPages::new);
        if let Some(r) = &oauth {
            creds = creds.oauth(Arc::clone(r));
        }
        Ok(Built {
            authn: AuthnLayer::new(auth),
            credentials: creds,
            vault,
            api_keys,
            oauth,
            oauth_pages,
            signer,
            metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        let c = Config::from_toml(s)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn full_example_parses_and_builds() {
        let dir = std::env::temp_dir().join(format!("mcp-identity-cfg-{}", std::process::id()));
        let keyfile = dir.join("vault.key");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&keyfile, crate::vault::generate_key().unwrap()).unwrap();
        let text = format!(
            r#"
mode = "required"
resource = "https://GW.example.com/mcp/"
required_scopes = ["mcp:tools"]
[jwt]
issuer = "https://idp.example.com"
algorithms = ["RS256", "ES256"]
jwks_fail_mode = "closed"
claims = {{ preset = "keycloak", client_id = "gw" }}
[api_keys]
file = "{dir}/keys.json"
header = "X-Api-Key"
[vault]
dir = "{dir}/vault"
key_id = "k1"
key_file = "{key}"
[identity_jwt]
issuer = "https://gw.example.com"
[oauth_client]
redirect_uri = "https://gw.example.com/oauth/callback"
[upstreams.github]
mode = "shared"
secret = "gh"
headers = {{ "x-api-key" = "gh-key" }}
forward_identity = "x-gateway-identity"
[upstreams.tickets]
mode = "token_exchange"
token_endpoint = "https://idp.example.com/token"
client_id = "gw"
audience = "tickets"
[upstreams.files]
mode = "oauth"
url = "https://files.example.com/mcp"
[upstreams.notes]
mode = "per_user"
"#,
            dir = dir.display(),
            key = keyfile.display()
        );
        let c = parse(&text).unwrap();
        let built = c.build().unwrap();
        assert_eq!(
            built.metadata.unwrap().resource,
            "https://gw.example.com/mcp"
        );
        assert!(built.oauth.unwrap().get("files").is_some());
        assert!(built.oauth_pages.unwrap().serves("/oauth/authorize"));
        assert!(built.signer.is_some());
        // The identity key was generated and stored in the vault.
        assert!(
            built
                .vault
                .unwrap()
                .get("gateway/identity-signing-key")
                .unwrap()
                .is_some()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = |s: &str| parse(s).unwrap_err().to_string();
        assert!(e("mode = \"sometimes\"").contains("unknown variant"));
        assert!(e("bogus = 1").contains("unknown field"));
        assert_eq!(
            e(
                "resource = \"https://gw/mcp\"\n[jwt]\nissuer = \"https://i\"\nalgorithms = [\"HS256\"]"
            ),
            "identity.jwt.algorithms: `HS256` is symmetric; tokens from an issuer's JWKS use asymmetric algorithms"
        );
        assert!(e("[jwt]\nissuer = \"https://i\"").starts_with("identity.resource:"));
        assert!(
            e("resource = \"https://gw/mcp#x\"\nmode = \"optional\"")
                .starts_with("identity.resource:")
        );
        assert!(e("mode = \"required\"").starts_with("identity.mode:"));
        assert!(
            e("mode = \"optional\"\n[upstreams.a]\nmode = \"shared\"")
                .contains("needs [identity.vault]")
        );
        assert!(
            e("mode = \"optional\"\n[vault]\ndir = \"/tmp/x\"\nkey_id = \"k\"\nkey_env = \"X\"\n[upstreams.a]\nmode = \"shared\"")
                .starts_with("identity.upstreams.a.secret:")
        );
        assert!(
            e("mode = \"optional\"\n[upstreams.a]\nmode = \"token_exchange\"")
                .starts_with("identity.upstreams.a.token_endpoint:")
        );
        assert!(
            e("resource = \"https://gw/mcp\"\n[jwt]\nissuer = \"https://i\"\nclaims = { preset = \"auth0\" }")
                .starts_with("identity.jwt.claims.preset:")
        );
        assert!(parse("mode = \"permissive\"").is_ok());
    }
}

//! The issuer's signing keys: found through OpenID Connect discovery or RFC 8414 metadata,
//! cached, refreshed when a token names an unknown `kid` (rate limited, one fetch in flight), and
//! kept or dropped during an outage according to a [`FailMode`].

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
};
use serde::{Deserialize, Serialize};

/// What authentication does when the JWKS endpoint cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Keep verifying with the last keys fetched successfully (up to `max_stale`); unknown `kid`s
    /// are refused. The default: an IdP blip does not log everyone out.
    #[default]
    ServeStale,
    /// Once the cached keys are older than the TTL and a refresh fails, refuse every token until
    /// a refresh succeeds.
    Closed,
}

/// Why keys could not be loaded. Logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// An HTTP request failed or timed out.
    #[error("fetching {url}: {source}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint answered with a non-success status.
    #[error("fetching {url}: HTTP {status}")]
    Status {
        /// What was fetched.
        url: String,
        /// The status.
        status: u16,
    },
    /// The document is not what it should be.
    #[error("{0}")]
    Invalid(String),
    /// A refresh was attempted too recently (rate limit).
    #[error("JWKS refresh rate limited")]
    RateLimited,
}

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Discover `jwks_uri` from the issuer: OpenID Connect discovery first, then RFC 8414.
    Discover {
        /// The issuer URL.
        issuer: String,
    },
    /// A JWKS URL given directly.
    Url(String),
}

/// Timing knobs of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksTiming {
    /// How long fetched keys are fresh.
    pub ttl: Duration,
    /// The minimum time between two refreshes (unknown-kid floods cause at most one fetch per
    /// interval).
    pub min_refresh_interval: Duration,
    /// HTTP timeout for discovery and JWKS fetches.
    pub fetch_timeout: Duration,
    /// In [`FailMode::ServeStale`], how long stale keys remain usable.
    pub max_stale: Duration,
}

impl Default for JwksTiming {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(5),
            max_stale: Duration::from_secs(24 * 3600),
        }
    }
}

/// A verification key from the JWKS.
#[derive(Clone)]
pub struct VerifyKey {
    /// The key.
    pub key: DecodingKey,
    /// The algorithm the JWK pins, if it names one.
    pub alg: Option<Algorithm>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("family", &self.key.family())
            .field("alg", &self.alg)
            .finish()
    }
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    unnamed: Vec<Arc<VerifyKey>>,
    fetched_at: Option<Instant>,
}

struct RefreshState {
    jwks_uri: Option<String>,
    last_attempt: Option<Instant>,
}

/// Where a key lookup stands.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Found a usable key.
    Found(Arc<VerifyKey>),
    /// No usable key without a refresh (unknown kid, nothing fetched yet, or keys past their TTL).
    NeedsRefresh,
    /// No key and none will come (fail mode closed with an outage in progress, or unknown kid
    /// right after a refresh).
    Missing,
}

/// A cached, shared JWKS.
pub struct JwksCache {
    source: KeySource,
    timing: JwksTiming,
    fail_mode: FailMode,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    refresh: tokio::sync::Mutex<()>,
    state: Mutex<RefreshState>,
    generation: AtomicU64,
    fetches: AtomicU64,
    /// Milliseconds after `base` until which the installed keys are fresh.
    fresh_until: AtomicU64,
    base: Instant,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("source", &self.source)
            .field("fail_mode", &self.fail_mode)
            .field("fetches", &self.fetches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// A cache that loads lazily (or on [`JwksCache::refresh`]).
    pub fn new(
        source: KeySource,
        timing: JwksTiming,
        fail_mode: FailMode,
    ) -> Result<Self, JwksError> {
        let http = reqwest::Client::builder()
            .timeout(timing.fetch_timeout)
            .connect_timeout(timing.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| JwksError::Invalid(format!("building HTTP client: {e}")))?;
        let jwks_uri = match &source {
            KeySource::Url(u) => Some(u.clone()),
            KeySource::Discover { .. } => None,
        };
        Ok(Self {
            source,
            timing,
            fail_mode,
            http,
            keys: RwLock::new(Arc::default()),
            refresh: tokio::sync::Mutex::new(()),
            state: Mutex::new(RefreshState {
                jwks_uri,
                last_attempt: None,
            }),
            generation: AtomicU64::new(0),
            fresh_until: AtomicU64::new(0),
            base: Instant::now(),
            fetches: AtomicU64::new(0),
        })
    }

    /// A cache with a fixed key set that never fetches (tests, benches, embedded keys).
    pub fn from_jwks(set: &JwkSet) -> Result<Self, JwksError> {
        let cache = Self::new(
            KeySource::Url(String::new()),
            JwksTiming {
                ttl: Duration::from_secs(u64::MAX / 4),
                ..JwksTiming::default()
            },
            FailMode::ServeStale,
        )?;
        cache.install(set, Instant::now());
        Ok(cache)
    }

    /// How many JWKS documents were fetched (successful or not).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The configured fail mode.
    pub fn fail_mode(&self) -> FailMode {
        self.fail_mode
    }

    /// Finds the key for a token header without any I/O.
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let set = match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(_) => return Lookup::Missing,
        };
        let Some(fetched_at) = set.fetched_at else {
            return Lookup::NeedsRefresh;
        };
        let age = fetched_at.elapsed();
        let found = match kid {
            Some(kid) => set.by_kid.get(kid).cloned(),
            None => {
                let mut usable = set
                    .by_kid
                    .values()
                    .chain(set.unnamed.iter())
                    .filter(|k| key_fits(k, alg));
                match (usable.next(), usable.next()) {
                    (Some(k), None) => Some(Arc::clone(k)),
                    _ => None,
                }
            }
        };
        if age > self.timing.ttl {
            // Stale: try to refresh unless one failed recently.
            if !self.recently_attempted() {
                return Lookup::NeedsRefresh;
            }
            return match (self.fail_mode, found) {
                (FailMode::ServeStale, Some(k))
                    if age <= self.timing.ttl + self.timing.max_stale =>
                {
                    Lookup::Found(k)
                }
                _ => Lookup::Missing,
            };
        }
        match found {
            Some(k) => Lookup::Found(k),
            None if kid.is_some() && !self.recently_attempted() => Lookup::NeedsRefresh,
            None => Lookup::Missing,
        }
    }

    fn recently_attempted(&self) -> bool {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.last_attempt)
            .is_some_and(|t| t.elapsed() < self.timing.min_refresh_interval)
    }

    /// Refreshes the keys, at most once per `min_refresh_interval`; concurrent callers share one
    /// fetch. Returns `Ok` when keys are (now) loaded by this or a concurrent call.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let seen = self.generation.load(Ordering::Acquire);
        let _guard = self.refresh.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return Ok(()); // someone refreshed while we waited
        }
        {
            let mut st = self
                .state
                .lock()
                .map_err(|_| JwksError::Invalid("state poisoned".into()))?;
            if st
                .last_attempt
                .is_some_and(|t| t.elapsed() < self.timing.min_refresh_interval)
            {
                return Err(JwksError::RateLimited);
            }
            st.last_attempt = Some(Instant::now());
        }
        let result = self.fetch().await;
        match &result {
            Ok(set) => {
                self.install(set, Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed"),
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        result.map(|_| ())
    }

    /// Whether the installed keys are within their TTL (cheap: one atomic load).
    pub fn keys_fresh(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.fresh_until.load(Ordering::Relaxed)
    }

    fn install(&self, set: &JwkSet, at: Instant) {
        let until = at
            .saturating_duration_since(self.base)
            .saturating_add(self.timing.ttl)
            .as_millis();
        self.fresh_until
            .store(u64::try_from(until).unwrap_or(u64::MAX), Ordering::Relaxed);
        let mut next = KeySet {
            fetched_at: Some(at),
            ..KeySet::default()
        };
        for jwk in &set.keys {
            if let Some(k) = verify_key(jwk) {
                match &jwk.common.key_id {
                    Some(kid) => {
                        next.by_kid.insert(kid.clone(), Arc::new(k));
                    }
                    None => next.unnamed.push(Arc::new(k)),
                }
            }
        }
        if let Ok(mut keys) = self.keys.write() {
            *keys = Arc::new(next);
        }
    }

    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        let uri = self.state.lock().ok().and_then(|s| s.jwks_uri.clone());
        let uri = match uri {
            Some(u) => u,
            None => {
                let KeySource::Discover { issuer } = &self.source else {
                    return Err(JwksError::Invalid("no JWKS URL".into()));
                };
                let meta = discover(&self.http, issuer).await?;
                let uri = meta.jwks_uri.ok_or_else(|| {
                    JwksError::Invalid(format!("issuer {issuer} publishes no jwks_uri"))
                })?;
                if let Ok(mut st) = self.state.lock() {
                    st.jwks_uri = Some(uri.clone());
                }
                uri
            }
        };
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let body = get_json(&self.http, &uri, 512 * 1024).await?;
        // Parse leniently: keys this library cannot read are skipped, not fatal.
        let keys = body
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| JwksError::Invalid(format!("{uri}: no `keys` array")))?
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .collect();
        Ok(JwkSet { keys })
    }
}

/// Whether a key may verify a token with this algorithm (no family confusion, pinned alg honoured).
pub fn key_fits(key: &VerifyKey, alg: Algorithm) -> bool {
    algorithm_family(alg) == key.key.family() && key.alg.is_none_or(|a| a == alg)
}

/// The family of an algorithm.
pub fn algorithm_family(alg: Algorithm) -> jsonwebtoken::AlgorithmFamily {
    use jsonwebtoken::AlgorithmFamily as F;
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => F::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => F::Ec,
        Algorithm::EdDSA => F::Ed,
        _ => F::Rsa,
    }
}

fn verify_key(jwk: &Jwk) -> Option<VerifyKey> {
    // Only public keys meant for signatures; never symmetric keys from a JWKS.
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return None;
    }
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(key_algorithm(a)?),
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey { key, alg })
}

fn key_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Authorization server metadata (RFC 8414 / OpenID Connect discovery), the fields we use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthServerMetadata {
    /// `issuer`
    pub issuer: String,
    /// `jwks_uri`
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// `authorization_endpoint`
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// `token_endpoint`
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// `registration_endpoint` (RFC 7591)
    #[serde(default)]
    pub registration_endpoint: Option<String>,
    /// `scopes_supported`
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
    /// `code_challenge_methods_supported`
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// `client_id_metadata_document_supported` (client ID metadata documents)
    #[serde(default)]
    pub client_id_metadata_document_supported: Option<bool>,
    /// `token_endpoint_auth_methods_supported`
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// The discovery URLs to try for an issuer, in order: RFC 8414 path-inserted, OIDC path-inserted,
/// OIDC path-appended (the order the MCP authorization spec gives).
pub fn discovery_urls(issuer: &str) -> Result<Vec<String>, JwksError> {
    let url = reqwest::Url::parse(issuer)
        .map_err(|e| JwksError::Invalid(format!("issuer `{issuer}` is not a URL: {e}")))?;
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    Ok(if path.is_empty() {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ]
    })
}

/// Fetches authorization server metadata, trying each discovery URL, and checks that the
/// document names the expected issuer.
pub async fn discover(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<AuthServerMetadata, JwksError> {
    let mut last = None;
    for url in discovery_urls(issuer)? {
        match get_json(http, &url, 256 * 1024).await {
            Ok(v) => {
                let meta: AuthServerMetadata = serde_json::from_value(v)
                    .map_err(|e| JwksError::Invalid(format!("{url}: bad metadata: {e}")))?;
                if meta.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
                    return Err(JwksError::Invalid(format!(
                        "{url}: metadata names issuer `{}`, expected `{issuer}`",
                        meta.issuer
                    )));
                }
                return Ok(meta);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| JwksError::Invalid("no discovery URL".into())))
}

/// GETs a JSON document with a size cap.
pub(crate) async fn get_json(
    http: &reqwest::Client,
    url: &str,
    max: usize,
) -> Result<serde_json::Value, JwksError> {
    let resp = http
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|source| JwksError::Fetch {
            url: url.into(),
            source,
        })?;
    read_json(url, resp, max).await
}

pub(crate) async fn read_json(
    url: &str,
    mut resp: reqwest::Response,
    max: usize,
) -> Result<serde_json::Value, JwksError> {
    let status = resp.status();
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|source| JwksError::Fetch {
        url: url.into(),
        source,
    })? {
        if buf.len() + chunk.len() > max {
            return Err(JwksError::Invalid(format!(
                "{url}: document larger than {max} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(JwksError::Status {
            url: url.into(),
            status: status.as_u16(),
        });
    }
    serde_json::from_slice(&buf).map_err(|e| JwksError::Invalid(format!("{url}: not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_url_forms() {
        assert_eq!(
            discovery_urls("https://a.io").unwrap(),
            [
                "https://a.io/.well-known/oauth-authorization-server",
                "https://a.io/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            discovery_urls("https://a.io/realms/x/").unwrap(),
            [
                "https://a.io/.well-known/oauth-authorization-server/realms/x",
                "https://a.io/.well-known/openid-configuration/realms/x",
                "https://a.io/realms/x/.well-known/openid-configuration"
            ]
        );
        assert!(discovery_urls("not a url").is_err());
    }
}

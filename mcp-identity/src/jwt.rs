//! Bearer JWT validation: algorithm allowlist, key lookup in the [`JwksCache`], issuer, audience
//! (the gateway's RFC 8707 canonical resource URI), `exp`/`nbf` with leeway, and a cache of
//! already verified tokens so a repeated token costs a hash and a map lookup.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, Validation};
use mcp_gateway_core::identity::{AuthMethod, Identity};
use serde_json::{Map, Value};

use crate::{
    claims::ClaimMapping,
    jwks::{JwksCache, Lookup, key_fits},
    parse::{ParseError, parse_jwt_header},
};

/// Why a token was refused. Logged; the client only sees `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token could not be parsed.
    #[error("malformed token: {0}")]
    Malformed(#[from] ParseError),
    /// The algorithm is not in the allowlist.
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    /// No key verifies this token (unknown kid, or keys unavailable).
    #[error("no verification key for this token")]
    NoKey,
    /// The signature or the claims are invalid.
    #[error("token rejected: {0}")]
    Invalid(String),
    /// The token is expired.
    #[error("token expired")]
    Expired,
    /// The token is not valid yet.
    #[error("token not yet valid")]
    NotYetValid,
    /// Wrong issuer.
    #[error("wrong issuer")]
    Issuer,
    /// Wrong audience.
    #[error("wrong audience")]
    Audience,
    /// The claims carry no subject.
    #[error("token has no subject")]
    NoSubject,
}

type TokenCache = HashMap<[u8; 32], (Arc<Identity>, u64)>;

/// The outcome of the synchronous part of verification.
#[derive(Debug)]
pub enum Verify {
    /// Verified.
    Ok(Arc<Identity>),
    /// Refused.
    Err(TokenError),
    /// The key is not cached: refresh the JWKS and try again.
    NeedsKeys,
}

/// Checks bearer JWTs.
#[derive(Debug)]
pub struct JwtValidator {
    jwks: Arc<JwksCache>,
    algorithms: Vec<Algorithm>,
    issuer: String,
    audiences: Vec<String>,
    leeway: u64,
    max_token_bytes: usize,
    mapping: ClaimMapping,
    cache: RwLock<TokenCache>,
    cache_capacity: usize,
}

/// Selects `jsonwebtoken`'s aws-lc-rs crypto backend for the process, so verification keeps
/// working even if another crate in the build enables its `rust_crypto` feature too (with both
/// features on and no provider installed, `jsonwebtoken` panics). Idempotent; called by
/// [`JwtValidator::new`] and the identity-JWT signer.
pub fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
    );
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl JwtValidator {
    /// A validator for tokens from `issuer`, for one of `audiences`, signed with one of
    /// `algorithms` (HMAC algorithms are refused: keys come from a public JWKS).
    pub fn new(
        jwks: Arc<JwksCache>,
        issuer: impl Into<String>,
        audiences: Vec<String>,
        algorithms: Vec<Algorithm>,
    ) -> Result<Self, String> {
        install_crypto_provider();
        if algorithms.is_empty() {
            return Err("the algorithm allowlist is empty".into());
        }
        if let Some(a) = algorithms
            .iter()
            .find(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        {
            return Err(format!(
                "algorithm {a:?} is symmetric; only asymmetric algorithms may verify tokens from a JWKS"
            ));
        }
        if audiences.is_empty() {
            return Err("at least one audience (the gateway's resource URI) is required".into());
        }
        Ok(Self {
            jwks,
            algorithms,
            issuer: issuer.into(),
            audiences,
            leeway: 30,
            max_token_bytes: crate::parse::DEFAULT_MAX_TOKEN_BYTES,
            mapping: ClaimMapping::default(),
            cache: RwLock::new(HashMap::new()),
            cache_capacity: 10_000,
        })
    }

    /// Clock skew allowed on `exp` and `nbf`, seconds (default 30).
    #[must_use]
    pub fn leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self
    }

    /// Largest accepted token (default 8 KiB).
    #[must_use]
    pub fn max_token_bytes(mut self, n: usize) -> Self {
        self.max_token_bytes = n;
        self
    }

    /// Where identity fields are found in the claims.
    #[must_use]
    pub fn claim_mapping(mut self, m: ClaimMapping) -> Self {
        self.mapping = m;
        self
    }

    /// How many verified tokens are remembered (0 disables the cache).
    #[must_use]
    pub fn cache_capacity(mut self, n: usize) -> Self {
        self.cache_capacity = n;
        self
    }

    /// The key cache.
    pub fn jwks(&self) -> &Arc<JwksCache> {
        &self.jwks
    }

    /// The largest accepted token.
    pub fn token_limit(&self) -> usize {
        self.max_token_bytes
    }

    /// Verifies without I/O. [`Verify::NeedsKeys`] asks the caller to refresh the JWKS and retry.
    pub fn verify_cached(&self, token: &str) -> Verify {
        if token.len() > self.max_token_bytes {
            return Verify::Err(TokenError::Malformed(ParseError::TooLong));
        }
        let now = now_secs();
        let digest = self.digest(token);
        if let Some(d) = &digest
            && let Ok(cache) = self.cache.read()
            && let Some((id, exp)) = cache.get(d)
            && now <= exp.saturating_add(self.leeway)
            // fail mode `closed`: once the keys are past their TTL, re-check (and refresh) even
            // tokens verified before, so an outage refuses everyone.
            && (self.jwks.fail_mode() != crate::jwks::FailMode::Closed || self.jwks.keys_fresh())
        {
            return Verify::Ok(Arc::clone(id));
        }
        let header = match parse_jwt_header(token, self.max_token_bytes) {
            Ok(h) => h,
            Err(e) => return Verify::Err(e.into()),
        };
        let alg = match header.alg.parse::<Algorithm>() {
            Ok(a) if self.algorithms.contains(&a) => a,
            _ => return Verify::Err(TokenError::AlgorithmNotAllowed(header.alg)),
        };
        let key = match self.jwks.lookup(header.kid.as_deref(), alg) {
            Lookup::Found(k) => k,
            Lookup::NeedsRefresh => return Verify::NeedsKeys,
            Lookup::Missing => return Verify::Err(TokenError::NoKey),
        };
        if !key_fits(&key, alg) {
            // e.g. an HS256 header pointing at an RSA key: key confusion.
            return Verify::Err(TokenError::AlgorithmNotAllowed(header.alg));
        }
        match self.decode(token, &key.key, alg) {
            Ok((id, exp)) => {
                if let Some(d) = digest {
                    self.remember(d, Arc::clone(&id), exp, now);
                }
                Verify::Ok(id)
            }
            Err(e) => Verify::Err(e),
        }
    }

    /// Verifies, refreshing the JWKS if the key is not cached (rate limited).
    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>, TokenError> {
        match self.verify_cached(token) {
            Verify::Ok(id) => Ok(id),
            Verify::Err(e) => Err(e),
            Verify::NeedsKeys => {
                let _ = self.jwks.refresh().await;
                match self.verify_cached(token) {
                    Verify::Ok(id) => Ok(id),
                    Verify::Err(e) => Err(e),
                    Verify::NeedsKeys => Err(TokenError::NoKey),
                }
            }
        }
    }

    fn digest(&self, token: &str) -> Option<[u8; 32]> {
        if self.cache_capacity == 0 {
            return None;
        }
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        d.as_ref().try_into().ok()
    }

    fn remember(&self, digest: [u8; 32], id: Arc<Identity>, exp: u64, now: u64) {
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= self.cache_capacity {
                cache.retain(|_, (_, e)| *e > now);
                if cache.len() >= self.cache_capacity {
                    cache.clear();
                }
            }
            cache.insert(digest, (id, exp));
        }
    }

    fn decode(
        &self,
        token: &str,
        key: &jsonwebtoken::DecodingKey,
        alg: Algorithm,
    ) -> Result<(Arc<Identity>, u64), TokenError> {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&self.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidIssuer => TokenError::Issuer,
                K::InvalidAudience => TokenError::Audience,
                K::InvalidAlgorithm => TokenError::AlgorithmNotAllowed(format!("{alg:?}")),
                other => TokenError::Invalid(format!("{other:?}")),
            }
        })?;
        let exp = data.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let id = self
            .mapping
            .identity(&data.claims, AuthMethod::Jwt)
            .ok_or(TokenError::NoSubject)?;
        Ok((Arc::new(id), exp))
    }
}

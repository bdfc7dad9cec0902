//! `AuthnLayer`: the gateway as an OAuth 2.1 resource server, at the HTTP level.
//!
//! For every `http::Request<B>` the layer:
//! - answers `GET /.well-known/oauth-protected-resource[/<path>]` with the RFC 9728 document;
//! - reads `Authorization: Bearer …` (a JWT from the configured issuer, or a gateway API key
//!   `mgw_…`) or the API-key header;
//! - on success inserts `Arc<Identity>` (what the core HTTP adapter reads) and a [`BearerToken`]
//!   (for RFC 8693 token exchange further in) into the request extensions;
//! - otherwise answers `401` with `WWW-Authenticate: Bearer resource_metadata="…", scope="…"`
//!   (plus `error="invalid_token"` / `"invalid_request"` when credentials were bad, never any
//!   detail), or `403 error="insufficient_scope"` when required scopes are missing, according to
//!   the [`Mode`].

mod body;
mod future;
mod layer;
mod service;

use std::{fmt, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use mcp_gateway_core::identity::{AuthMethod, Identity};
use serde::{Deserialize, Serialize};

pub use body::AuthnBody;
pub use future::ResponseFuture;
pub use layer::AuthnLayer;
pub use service::Authn;

use crate::{
    apikey::{ApiKeyStore, PREFIX},
    jwt::{JwtValidator, TokenError, Verify},
    metadata::ProtectedResourceMetadata,
    parse::{ParseError, parse_bearer},
};

/// How strictly requests must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every request needs valid credentials.
    #[default]
    Required,
    /// Requests without credentials pass as anonymous; bad credentials are refused.
    Optional,
    /// Nothing is refused: bad or missing credentials pass as anonymous (logged). For rollout.
    Permissive,
}

/// The caller's bearer token, kept (not forwarded!) so the credential layer can exchange it
/// (RFC 8693). `Debug` never prints it.
#[derive(Clone)]
pub struct BearerToken(Arc<str>);

impl BearerToken {
    /// Wraps a token.
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self(token.into())
    }

    /// The token.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

/// What the layer decided about one request.
#[derive(Debug)]
pub enum Outcome {
    /// Authenticated.
    Authenticated(Arc<Identity>, Option<BearerToken>),
    /// Passes as anonymous.
    Anonymous,
    /// Refused.
    Reject(Rejection),
}

/// A refusal: status and the `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 401 or 403.
    pub status: StatusCode,
    /// The challenge.
    pub challenge: HeaderValue,
}

/// The shared state of the layer: validators, key store, mode, metadata.
pub struct Authenticator {
    mode: Mode,
    jwt: Option<JwtValidator>,
    api_keys: Option<Arc<ApiKeyStore>>,
    api_key_header: Option<HeaderName>,
    required_scopes: Vec<String>,
    metadata: Option<ProtectedResourceMetadata>,
    metadata_paths: Vec<String>,
    anonymous: Arc<Identity>,
    challenge_base: String,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .field("jwt", &self.jwt.is_some())
            .field("api_keys", &self.api_keys.is_some())
            .field("required_scopes", &self.required_scopes)
            .finish_non_exhaustive()
    }
}

fn quote(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

impl Authenticator {
    /// An authenticator with nothing configured: every credential is refused (fail closed).
    pub fn new(mode: Mode) -> Self {
        let mut anonymous = Identity::new("anonymous", AuthMethod::Anonymous);
        anonymous.kind = mcp_gateway_core::identity::PrincipalKind::Human;
        let mut a = Self {
            mode,
            jwt: None,
            api_keys: None,
            api_key_header: None,
            required_scopes: Vec::new(),
            metadata: None,
            metadata_paths: Vec::new(),
            anonymous: Arc::new(anonymous),
            challenge_base: String::new(),
        };
        a.rebuild_challenge();
        a
    }

    /// Accept JWTs checked by this validator.
    #[must_use]
    pub fn jwt(mut self, v: JwtValidator) -> Self {
        self.jwt = Some(v);
        self
    }

    /// Accept API keys from this store (as `Bearer mgw_…`, and in `header` if given).
    #[must_use]
    pub fn api_keys(mut self, store: Arc<ApiKeyStore>, header: Option<HeaderName>) -> Self {
        self.api_keys = Some(store);
        self.api_key_header = header;
        self
    }

    /// Scopes every request needs (else 403 `insufficient_scope`).
    #[must_use]
    pub fn required_scopes(mut self, scopes: Vec<String>) -> Self {
        self.required_scopes = scopes;
        self.rebuild_challenge();
        self
    }

    /// Serve this RFC 9728 document and point challenges at it.
    #[must_use]
    pub fn metadata(mut self, m: ProtectedResourceMetadata) -> Self {
        self.metadata_paths = m.paths();
        self.metadata = Some(m);
        self.rebuild_challenge();
        self
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The JWT validator, if any.
    pub fn jwt_validator(&self) -> Option<&JwtValidator> {
        self.jwt.as_ref()
    }

    fn rebuild_challenge(&mut self) {
        let mut parts = Vec::new();
        if let Some(m) = &self.metadata {
            parts.push(format!("resource_metadata=\"{}\"", quote(&m.url())));
        }
        if !self.required_scopes.is_empty() {
            parts.push(format!(
                "scope=\"{}\"",
                quote(&self.required_scopes.join(" "))
            ));
        }
        self.challenge_base = parts.join(", ");
    }

    fn challenge(&self, error: Option<&str>) -> HeaderValue {
        let mut s = String::from("Bearer");
        let mut sep = " ";
        if let Some(e) = error {
            s.push_str(&format!(" error=\"{e}\""));
            sep = ", ";
        }
        if !self.challenge_base.is_empty() {
            s.push_str(sep);
            s.push_str(&self.challenge_base);
        }
        HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    /// Whether a path is one of the metadata paths (answered without authentication).
    pub fn metadata_for(
        &self,
        method: &http::Method,
        path: &str,
    ) -> Option<&ProtectedResourceMetadata> {
        if method != http::Method::GET && method != http::Method::HEAD {
            return None;
        }
        let path = path.trim_end_matches('/');
        self.metadata
            .as_ref()
            .filter(|_| self.metadata_paths.iter().any(|p| p == path))
    }

    fn unauthorized(&self, error: Option<&str>) -> Outcome {
        if self.mode == Mode::Permissive {
            return Outcome::Anonymous;
        }
        Outcome::Reject(Rejection {
            status: StatusCode::UNAUTHORIZED,
            challenge: self.challenge(error),
        })
    }

    fn bad_token(&self, e: &TokenError) -> Outcome {
        tracing::debug!(error = %e, "bearer token refused");
        self.unauthorized(Some("invalid_token"))
    }

    fn check_scopes(&self, id: Arc<Identity>, token: Option<BearerToken>) -> Outcome {
        let missing = self
            .required_scopes
            .iter()
            .any(|s| !id.scopes.iter().any(|g| g == s));
        if missing && self.mode != Mode::Permissive {
            let mut s = String::from("Bearer error=\"insufficient_scope\"");
            if !self.challenge_base.is_empty() {
                s.push_str(", ");
                s.push_str(&self.challenge_base);
            }
            return Outcome::Reject(Rejection {
                status: StatusCode::FORBIDDEN,
                challenge: HeaderValue::from_str(&s).unwrap_or_else(|_| {
                    HeaderValue::from_static("Bearer error=\"insufficient_scope\"")
                }),
            });
        }
        Outcome::Authenticated(id, token)
    }

    /// Decides without I/O; `Err(token)` means a JWT whose key must be fetched first
    /// (then call [`Authenticator::authenticate_jwt`]).
    pub fn authenticate_sync(&self, headers: &HeaderMap) -> Result<Outcome, String> {
        let mut auth = headers.get_all(header::AUTHORIZATION).iter();
        let first = auth.next();
        if first.is_some() && auth.next().is_some() {
            return Ok(self.unauthorized(Some("invalid_request")));
        }
        let Some(value) = first else {
            if let (Some(h), Some(store)) = (&self.api_key_header, &self.api_keys)
                && let Some(v) = headers.get(h)
            {
                return Ok(match v.to_str().ok().and_then(|k| store.authenticate(k)) {
                    Some(id) => self.check_scopes(Arc::new(id), None),
                    None => self.unauthorized(Some("invalid_token")),
                });
            }
            return Ok(match self.mode {
                Mode::Required => self.unauthorized(None),
                Mode::Optional | Mode::Permissive => Outcome::Anonymous,
            });
        };
        let limit = self.jwt.as_ref().map_or(
            crate::parse::DEFAULT_MAX_TOKEN_BYTES,
            JwtValidator::token_limit,
        );
        let token = match parse_bearer(value.as_bytes(), limit) {
            Ok(t) => t,
            Err(ParseError::TooLong) => return Ok(self.unauthorized(Some("invalid_token"))),
            Err(e) => {
                tracing::debug!(error = %e, "malformed Authorization header");
                return Ok(self.unauthorized(Some("invalid_request")));
            }
        };
        if token.starts_with(PREFIX) {
            return Ok(
                match self.api_keys.as_ref().and_then(|s| s.authenticate(token)) {
                    Some(id) => self.check_scopes(Arc::new(id), None),
                    None => self.unauthorized(Some("invalid_token")),
                },
            );
        }
        let Some(jwt) = &self.jwt else {
            return Ok(self.unauthorized(Some("invalid_token")));
        };
        match jwt.verify_cached(token) {
            Verify::Ok(id) => Ok(self.check_scopes(id, Some(BearerToken::new(token)))),
            Verify::Err(e) => Ok(self.bad_token(&e)),
            Verify::NeedsKeys => Err(token.to_owned()),
        }
    }

    /// Verifies a JWT, fetching keys if needed.
    pub async fn authenticate_jwt(&self, token: String) -> Outcome {
        let Some(jwt) = &self.jwt else {
            return self.unauthorized(Some("invalid_token"));
        };
        match jwt.verify(&token).await {
            Ok(id) => self.check_scopes(id, Some(BearerToken::new(token))),
            Err(e) => self.bad_token(&e),
        }
    }

    /// Applies an outcome to a request's extensions; `Err` is the refusal to send.
    pub fn apply(&self, outcome: Outcome, ext: &mut http::Extensions) -> Result<(), Rejection> {
        match outcome {
            Outcome::Authenticated(id, token) => {
                ext.insert(id);
                if let Some(t) = token {
                    ext.insert(t);
                }
                Ok(())
            }
            Outcome::Anonymous => {
                ext.insert(Arc::clone(&self.anonymous));
                Ok(())
            }
            Outcome::Reject(r) => Err(r),
        }
    }
}

//! # mcp-identity
//!
//! Who is calling, and with which credentials the gateway calls upstream.
//!
//! - [`AuthnLayer`] (HTTP level, over any `http::Request<B>`): the gateway as an OAuth 2.1
//!   resource server. Bearer JWTs are checked against the issuer's JWKS ([`jwks`], found by OpenID
//!   Connect discovery or RFC 8414, cached, refreshed on an unknown `kid` at most once per
//!   interval), issuer, audience (the RFC 8707 canonical resource URI), `exp`/`nbf` with leeway,
//!   an algorithm allowlist and required scopes. Gateway API keys ([`apikey`]) identify agents.
//!   The RFC 9728 metadata document is served, refusals carry the right `WWW-Authenticate`
//!   challenge. The verified caller goes into the request extensions as
//!   `Arc<mcp_gateway_core::Identity>`.
//! - [`CredentialLayer`] (MCP level, over `McpRequest`): per upstream
//!   server a shared service-account secret, per-user credentials, RFC 8693 token exchange, or
//!   per-user OAuth tokens from the upstream OAuth client ([`oauth`]); secret headers (API keys);
//!   an optional gateway-signed identity JWT. The result is
//!   [`UpstreamCredentials`] in `ctx.extensions`; the caller's
//!   own token is removed from the context so it never reaches an upstream.
//! - The credential [`vault`]: AES-256-GCM records with key ids and rotation.
//! - [`config::Config`] for the gateway's `[identity]` section, [`cli`] for
//!   `api-key create|revoke|list` and `vault …`, [`admin::ApiKeyAdmin`] for the admin endpoint.
//! - Parsers an attacker reaches are plain functions in [`parse`] (fuzz targets: `fuzz/`).
//!
//! ```
//! use std::sync::Arc;
//! use http::{Request, Response, StatusCode};
//! use mcp_identity::{AuthnLayer, Authenticator, Identity, Mode, ProtectedResourceMetadata};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let auth = Authenticator::new(Mode::Required).metadata(ProtectedResourceMetadata::new(
//!     "https://gw.example.com/mcp",
//!     vec!["https://idp.example.com".into()],
//! ));
//! let svc = ServiceBuilder::new().layer(AuthnLayer::new(auth)).service(service_fn(
//!     |req: Request<String>| async move {
//!         let who = req.extensions().get::<Arc<Identity>>().map(|i| i.subject.to_string());
//!         Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
//!             bytes::Bytes::from(who.unwrap_or_default()),
//!         )))
//!     },
//! ));
//! // No credentials: 401 with a challenge that points at the metadata document.
//! let res = svc.clone().oneshot(Request::new(String::new())).await?;
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(
//!     res.headers()["www-authenticate"],
//!     "Bearer resource_metadata=\"https://gw.example.com/.well-known/oauth-protected-resource/mcp\""
//! );
//! // The metadata document itself is served without credentials.
//! let req = Request::get("/.well-known/oauth-protected-resource/mcp").body(String::new())?;
//! assert_eq!(svc.oneshot(req).await?.status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | everything is always built; JWT crypto uses `jsonwebtoken`'s `aws_lc_rs` backend |
//! | `fuzzing` | no | `fuzz`: the bodies of the cargo-fuzz targets in `fuzz/` |

pub mod admin;
pub mod apikey;
pub mod authn;
pub mod claims;
pub mod cli;
pub mod config;
pub mod credential;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod jwks;
pub mod jwt;
pub mod metadata;
pub mod oauth;
pub mod parse;
pub mod vault;

pub use authn::{Authenticator, Authn, AuthnLayer, BearerToken, Mode};
pub use claims::ClaimMapping;
pub use config::Config;
pub use credential::{CredentialLayer, UpstreamCredentials};
pub use jwks::{FailMode, JwksCache, KeySource};
pub use jwt::JwtValidator;
pub use mcp_gateway_core::identity::{AuthMethod, Identity, PrincipalKind};
pub use metadata::ProtectedResourceMetadata;

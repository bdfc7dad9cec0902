//! RFC 9728 OAuth 2.0 Protected Resource Metadata, and RFC 8707 canonical resource URIs.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

/// The well-known path prefix (RFC 9728 section 3).
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedResourceMetadata {
    /// The resource identifier: the gateway's canonical URI.
    pub resource: String,
    /// Issuers that grant tokens for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_servers: Vec<String>,
    /// Scopes a client may ask for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    /// How tokens may be presented (always `header`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bearer_methods_supported: Vec<String>,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// Documentation URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_documentation: Option<String>,
}

impl ProtectedResourceMetadata {
    /// Metadata for a resource protected by the given issuers.
    pub fn new(resource: impl Into<String>, authorization_servers: Vec<String>) -> Self {
        Self {
            resource: resource.into(),
            authorization_servers,
            scopes_supported: Vec::new(),
            bearer_methods_supported: vec!["header".into()],
            resource_name: None,
            resource_documentation: None,
        }
    }

    /// The URL a client fetches this document from (path-suffixed form for resources with a path).
    pub fn url(&self) -> String {
        metadata_url(&self.resource)
    }

    /// The paths at which the document is served: the path-suffixed form and, for resources with a
    /// path, also the bare form (some clients only try that).
    pub fn paths(&self) -> Vec<String> {
        let path = resource_path(&self.resource);
        if path.is_empty() {
            vec![WELL_KNOWN.to_owned()]
        } else {
            vec![format!("{WELL_KNOWN}{path}"), WELL_KNOWN.to_owned()]
        }
    }

    /// The document as an HTTP response.
    pub fn response(&self) -> Response<Bytes> {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut r = Response::new(Bytes::from(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        );
        r.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        r
    }

    /// A tower service answering every request with the document (mount it at [`Self::paths`]).
    pub fn into_service(self) -> MetadataService {
        MetadataService { doc: self }
    }
}

/// Serves a [`ProtectedResourceMetadata`] document.
#[derive(Debug, Clone)]
pub struct MetadataService {
    doc: ProtectedResourceMetadata,
}

impl<B> tower_service::Service<http::Request<B>> for MetadataService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let resp = if req.method() == http::Method::GET || req.method() == http::Method::HEAD {
            self.doc.response().map(Full::new)
        } else {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            r
        };
        ready(Ok(resp))
    }
}

fn resource_path(resource: &str) -> String {
    reqwest::Url::parse(resource)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// The metadata URL for a resource (RFC 9728 section 3.1: well-known path inserted between the
/// host and the resource's path).
pub fn metadata_url(resource: &str) -> String {
    match reqwest::Url::parse(resource) {
        Ok(u) => format!(
            "{}{WELL_KNOWN}{}",
            u.origin().ascii_serialization(),
            u.path().trim_end_matches('/')
        ),
        Err(_) => format!("{}{WELL_KNOWN}", resource.trim_end_matches('/')),
    }
}

/// The canonical form of a resource URI (RFC 8707 / MCP authorization): absolute, `http(s)`,
/// lower-case scheme and host, default port dropped, no fragment, no trailing slash.
pub fn canonical_resource_uri(uri: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(uri).map_err(|e| format!("`{uri}` is not an absolute URI: {e}"))?;
    if !matches!(u.scheme(), "https" | "http") {
        return Err(format!("`{uri}`: the resource URI must be http or https"));
    }
    if u.fragment().is_some() {
        return Err(format!(
            "`{uri}`: the resource URI must not have a fragment"
        ));
    }
    let host = u
        .host_str()
        .ok_or_else(|| format!("`{uri}`: the resource URI has no host"))?;
    let mut out = format!("{}://{}", u.scheme(), host.to_ascii_lowercase());
    if let Some(port) = u.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(u.path().trim_end_matches('/'));
    if let Some(q) = u.query() {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        let m = ProtectedResourceMetadata::new(
            "https://gw.example.com/mcp",
            vec!["https://idp".into()],
        );
        assert_eq!(
            m.url(),
            "https://gw.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            m.paths(),
            [
                "/.well-known/oauth-protected-resource/mcp",
                "/.well-known/oauth-protected-resource"
            ]
        );
        let root = ProtectedResourceMetadata::new("https://gw.example.com", vec![]);
        assert_eq!(
            root.url(),
            "https://gw.example.com/.well-known/oauth-protected-resource"
        );
        let v: serde_json::Value = serde_json::from_slice(m.response().body()).unwrap();
        assert_eq!(v["resource"], "https://gw.example.com/mcp");
        assert_eq!(v["authorization_servers"][0], "https://idp");
        assert_eq!(v["bearer_methods_supported"][0], "header");
    }

    #[test]
    fn canonical() {
        assert_eq!(
            canonical_resource_uri("HTTPS://GW.Example.com:443/mcp/").unwrap(),
            "https://gw.example.com/mcp"
        );
        assert_eq!(
            canonical_resource_uri("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(canonical_resource_uri("https://gw/mcp#frag").is_err());
        assert!(canonical_resource_uri("ftp://gw/mcp").is_err());
        assert!(canonical_resource_uri("/mcp").is_err());
    }
}

//! `mcp-gateway connect <url>`: the gateway's client side on its own. Connects to a Streamable
//! HTTP MCP server through the same machinery the gateway uses for its upstreams
//! ([`mcp_gateway_core::upstream::Upstream`] for the connection, [`mcp_identity::oauth`] for
//! OAuth), lists the server's tools and calls the ones asked for.
//!
//! When the server refuses (401, or 403 `insufficient_scope`), the OAuth client runs the whole
//! flow without a browser: RFC 9728 resource metadata from the challenge or the well-known URLs
//! (2025-03-26 fallbacks when there is none), RFC 8414 / OIDC discovery, a pre-registered client,
//! a client ID metadata document or dynamic registration, PKCE S256, the `resource` indicator,
//! the token endpoint authentication the server supports. It then reconnects with the token.
//! Step-ups ask for the union of scopes; the number of authorizations is bounded, and an
//! authorization that could not help (the token already has every scope demanded) is not tried.

use std::{collections::BTreeMap, io::Write, time::Duration};

use mcp_gateway_core::{
    JsonObject, Method, RequestContext,
    upstream::{ProtocolMode, Status, Transport, Upstream, UpstreamConfig},
};
use mcp_identity::{
    AuthMethod, Identity,
    credential::refusal_challenge,
    oauth::{OAuthClientConfig, OAuthRegistry, UpstreamOAuth},
    parse::{BearerChallenge, parse_www_authenticate},
    vault::Vault,
};
use serde_json::{Value, json};

/// The name of the one upstream (it shows in logs and error messages).
const SERVER: &str = "server";
/// The vault record of a pre-registered client's secret.
const SECRET_RECORD: &str = "connect/client-secret";

/// Arguments of `mcp-gateway connect`.
#[derive(clap::Args, Debug)]
pub(crate) struct ConnectArgs {
    /// Call this tool after listing (repeatable; in order).
    #[arg(long = "call", value_name = "TOOL")]
    calls: Vec<String>,
    /// Arguments of the matching `--call`, a JSON object (default `{}`).
    #[arg(long = "args", value_name = "JSON")]
    args: Vec<String>,
    /// An extra header for every request, `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A pre-registered OAuth client id.
    #[arg(long)]
    client_id: Option<String>,
    /// The pre-registered client's secret.
    #[arg(long)]
    client_secret: Option<String>,
    /// Read `client_id` and `client_secret` from a JSON object in this environment variable
    /// (the conformance suite passes them as `MCP_CONFORMANCE_CONTEXT`).
    #[arg(long, value_name = "VAR")]
    client_credentials_env: Option<String>,
    /// The URL of this client's client ID metadata document, used as `client_id` where the
    /// authorization server supports client ID metadata documents.
    #[arg(long, value_name = "URL")]
    client_metadata_url: Option<String>,
    /// Where the authorization server sends the authorization code.
    #[arg(long, default_value = "http://127.0.0.1:8976/callback")]
    redirect_uri: String,
    /// Scopes to ask for when neither the challenge nor the server's metadata names any.
    #[arg(long)]
    scope: Option<String>,
    /// The most authorizations (the first one and step-ups together).
    #[arg(long, default_value_t = 3)]
    max_authorizations: u32,
    /// Seconds each connection and request may take.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// The server's Streamable HTTP endpoint.
    url: String,
}

/// Why `connect` failed; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConnectError(String);

fn fail(message: impl Into<String>) -> ConnectError {
    ConnectError(message.into())
}

/// Runs `connect`, writing one JSON document per line to `out`: the server, its tools, each
/// call's result.
pub(crate) async fn run(args: ConnectArgs, out: &mut impl Write) -> Result<(), ConnectError> {
    let headers = parse_headers(&args.headers)?;
    let calls = parse_calls(&args.calls, &args.args)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut client = Client::new(&args, headers, timeout)?;

    let info = client.connected().await?;
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = JsonObject::new();
        if let Some(c) = cursor.take() {
            params.insert("cursor".into(), Value::String(c));
        }
        let page = client.request(Method::ToolsList, params).await?;
        tools.extend(
            page.get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .cloned(),
        );
        match page.get("nextCursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => break,
        }
    }
    let info = client.info().unwrap_or(info);
    print_line(out, &json!({"server": info}))?;
    print_line(out, &json!({"tools": tools}))?;

    let mut tool_errors = Vec::new();
    for (name, arguments) in calls {
        let mut params = JsonObject::new();
        params.insert("name".into(), Value::String(name.clone()));
        params.insert("arguments".into(), Value::Object(arguments));
        let result = client.request(Method::ToolsCall, params).await?;
        if result.get("isError").and_then(Value::as_bool) == Some(true) {
            tool_errors.push(name.clone());
        }
        print_line(out, &json!({"tool": name, "result": result}))?;
    }
    client.close();
    if !tool_errors.is_empty() {
        return Err(fail(format!(
            "the tool(s) {} reported an error",
            tool_errors.join(", ")
        )));
    }
    Ok(())
}

fn print_line(out: &mut impl Write, v: &Value) -> Result<(), ConnectError> {
    writeln!(out, "{v}").map_err(|e| fail(format!("writing the output: {e}")))
}

fn parse_headers(raw: &[String]) -> Result<BTreeMap<String, String>, ConnectError> {
    raw.iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| fail(format!("--header `{h}`: expected `Name: value`")))?;
            let name = name.trim();
            http::HeaderName::try_from(name)
                .map_err(|e| fail(format!("--header `{h}`: bad name: {e}")))?;
            http::HeaderValue::try_from(value.trim())
                .map_err(|e| fail(format!("--header `{h}`: bad value: {e}")))?;
            Ok((name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

fn parse_calls(
    calls: &[String],
    args: &[String],
) -> Result<Vec<(String, JsonObject)>, ConnectError> {
    if args.len() > calls.len() {
        return Err(fail("more --args than --call"));
    }
    calls
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let arguments = match args.get(i) {
                None => JsonObject::new(),
                Some(raw) => match serde_json::from_str(raw) {
                    Ok(Value::Object(o)) => o,
                    Ok(_) => return Err(fail(format!("--args for `{name}`: not a JSON object"))),
                    Err(e) => return Err(fail(format!("--args for `{name}`: {e}"))),
                },
            };
            Ok((name.clone(), arguments))
        })
        .collect()
}

/// Pre-registered client credentials from the flags or the named environment variable.
fn client_credentials(
    args: &ConnectArgs,
) -> Result<(Option<String>, Option<String>), ConnectError> {
    let mut id = args.client_id.clone();
    let mut secret = args.client_secret.clone();
    if let Some(var) = &args.client_credentials_env
        && let Ok(raw) = std::env::var(var)
    {
        let v: Value = serde_json::from_str(&raw)
            .map_err(|e| fail(format!("${var} is not a JSON object: {e}")))?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        id = id.or_else(|| field("client_id"));
        secret = secret.or_else(|| field("client_secret"));
    }
    if secret.is_some() && id.is_none() {
        return Err(fail("a client secret without a client id"));
    }
    Ok((id, secret))
}

// === Client ===

/// One server, its connection (replaced whenever the credentials change) and its OAuth client.
struct Client {
    url: String,
    headers: BTreeMap<String, String>,
    timeout: Duration,
    oauth: OAuthRegistry,
    me: Identity,
    upstream: Upstream,
    token: Option<String>,
    authorizations: u32,
    max_authorizations: u32,
}

/// What the server said when it refused.
enum Refused {
    /// 401 / 403 with this `WWW-Authenticate` value.
    Auth(String),
    /// Anything else.
    Other(ConnectError),
}

impl Client {
    fn new(
        args: &ConnectArgs,
        headers: BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let url = check_url(&args.url)?;
        let vault = Vault::ephemeral().map_err(|e| fail(format!("vault: {e}")))?;
        let (client_id, client_secret) = client_credentials(args)?;
        let mut cfg = OAuthClientConfig {
            redirect_uri: args.redirect_uri.clone(),
            client_name: Some("mcp-gateway connect".into()),
            client_metadata_url: args.client_metadata_url.clone(),
            scopes: args
                .scope
                .as_deref()
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            client_id,
            ..OAuthClientConfig::default()
        };
        if let Some(secret) = client_secret {
            vault
                .put(SECRET_RECORD, secret.as_bytes())
                .map_err(|e| fail(format!("vault: {e}")))?;
            cfg.client_secret = Some(SECRET_RECORD.into());
        }
        let oauth = OAuthRegistry::new().client(UpstreamOAuth::new(SERVER, &url, cfg, vault));
        let upstream = open(&url, &headers, None, timeout);
        Ok(Self {
            url,
            headers,
            timeout,
            oauth,
            me: Identity::new("mcp-gateway-connect", AuthMethod::Other("cli".into())),
            upstream,
            token: None,
            authorizations: 0,
            max_authorizations: args.max_authorizations,
        })
    }

    /// The current connection, once its handshake has settled.
    async fn settled(&self) -> Result<Value, Refused> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match self.upstream.status() {
                Status::Ready { info } => {
                    return Ok(serde_json::to_value(&*info).unwrap_or(Value::Null));
                }
                Status::Down { reason } => {
                    return Err(match self.upstream.auth_challenge() {
                        Some(challenge) => Refused::Auth(challenge),
                        None => Refused::Other(fail(format!("cannot connect: {reason}"))),
                    });
                }
                Status::Connecting if tokio::time::Instant::now() >= deadline => {
                    return Err(Refused::Other(fail(format!(
                        "no answer from {} within {} s",
                        self.url,
                        self.timeout.as_secs()
                    ))));
                }
                Status::Connecting => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Connects (authorizing when the server asks); returns what the server said about itself.
    async fn connected(&mut self) -> Result<Value, ConnectError> {
        loop {
            match self.settled().await {
                Ok(info) => return Ok(info),
                Err(Refused::Auth(challenge)) => self.authorize(&challenge).await?,
                Err(Refused::Other(e)) => return Err(e),
            }
        }
    }

    fn info(&self) -> Option<Value> {
        match self.upstream.status() {
            Status::Ready { info } => serde_json::to_value(&*info).ok(),
            _ => None,
        }
    }

    /// Sends a request, authorizing (and reconnecting) when the server refuses the credentials.
    async fn request(&mut self, method: Method, params: JsonObject) -> Result<Value, ConnectError> {
        loop {
            self.connected().await?;
            let ctx = RequestContext::default();
            match self.upstream.request(&method, params.clone(), &ctx).await {
                Ok(v) => return Ok(v),
                Err(e) => match refusal_challenge(&e) {
                    Some(challenge) => self.authorize(&challenge).await?,
                    None => return Err(fail(format!("{method} failed: {}", e.message))),
                },
            }
        }
    }

    /// Runs the OAuth flow for this challenge and reconnects with the new token.
    async fn authorize(&mut self, www_authenticate: &str) -> Result<(), ConnectError> {
        let challenge = parse_www_authenticate(www_authenticate);
        if let Some(c) = &challenge
            && self.token.is_some()
            && self.already_granted(c)
        {
            return Err(fail(format!(
                "the server refuses the token although it was granted every scope the server asks for ({www_authenticate}); not authorizing again"
            )));
        }
        if self.authorizations >= self.max_authorizations {
            return Err(fail(format!(
                "the server still refuses after {} authorization(s): {www_authenticate}",
                self.authorizations
            )));
        }
        self.authorizations += 1;
        tracing::info!(attempt = self.authorizations, challenge = %www_authenticate, "authorizing");
        self.oauth
            .authorize_headless(&self.me, SERVER, challenge.as_ref())
            .await
            .map_err(|e| fail(format!("authorization failed: {e}")))?;
        let client = self
            .oauth
            .get(SERVER)
            .ok_or_else(|| fail("no OAuth client"))?;
        let token = client
            .access_token(&self.me)
            .await
            .map_err(|e| fail(format!("authorization failed: {e}")))?
            .ok_or_else(|| fail("authorization completed without a token"))?;
        self.upstream.shutdown();
        self.upstream = open(&self.url, &self.headers, Some(&token), self.timeout);
        self.token = Some(token);
        Ok(())
    }

    /// Whether the current token was granted every scope an `insufficient_scope` challenge asks
    /// for (authorizing again cannot help then).
    fn already_granted(&self, c: &BearerChallenge) -> bool {
        if c.error.as_deref() != Some("insufficient_scope") {
            return false;
        }
        let (Some(wanted), Ok(Some(tokens))) = (
            c.scope.as_deref(),
            self.oauth
                .get(SERVER)
                .map_or(Ok(None), |client| client.tokens(&self.me)),
        ) else {
            return false;
        };
        let granted = tokens.scope.unwrap_or_default();
        let granted: Vec<&str> = granted.split_whitespace().collect();
        wanted.split_whitespace().all(|s| granted.contains(&s))
    }

    fn close(&self) {
        self.upstream.shutdown();
    }
}

fn check_url(url: &str) -> Result<String, ConnectError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| fail(format!("`{url}` is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(url.to_owned()),
        _ => Err(fail(format!(
            "`{url}`: expected an http(s) URL of a Streamable HTTP endpoint"
        ))),
    }
}

/// A supervised connection to `url` with these headers and bearer token.
fn open(
    url: &str,
    headers: &BTreeMap<String, String>,
    token: Option<&str>,
    timeout: Duration,
) -> Upstream {
    let mut headers = headers.clone();
    if let Some(t) = token {
        headers.retain(|k, _| !k.eq_ignore_ascii_case("authorization"));
        headers.insert("authorization".into(), format!("Bearer {t}"));
    }
    let mut config = UpstreamConfig::new(
        SERVER,
        Transport::Http {
            url: url.to_owned(),
            headers,
        },
    );
    config.call_timeout = timeout;
    config.list_timeout = timeout;
    config.connect_timeout = timeout;
    config.protocol = ProtocolMode::Auto;
    // A refused or failed first attempt is reported, not retried in a tight loop.
    config.max_backoff = Duration::from_secs(60);
    Upstream::standalone(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_calls_are_checked() {
        assert_eq!(
            parse_headers(&["X-Api-Key:  abc ".into()]).unwrap()["X-Api-Key"],
            "abc"
        );
        assert!(parse_headers(&["no colon".into()]).is_err());
        assert!(parse_headers(&["bad name: x".into()]).is_err());
        let calls = parse_calls(&["a".into(), "b".into()], &[r#"{"x":1}"#.into()]).unwrap();
        assert_eq!(calls[0].1["x"], 1);
        assert!(calls[1].1.is_empty());
        assert!(parse_calls(&["a".into()], &["[1]".into()]).is_err());
        assert!(parse_calls(&["a".into()], &["{".into()]).is_err());
        assert!(parse_calls(&[], &["{}".into()]).is_err());
        assert!(check_url("ftp://x/").is_err());
        assert!(check_url("not a url").is_err());
        assert!(check_url("http://127.0.0.1:1/mcp").is_ok());
    }
}

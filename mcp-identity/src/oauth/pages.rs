//! The browser pages of upstream authorization: the consent page and the OAuth callback, for a
//! gateway to serve (outside authentication: browsers carry no MCP credentials).
//!
//! | request | answer |
//! |---|---|
//! | `GET <consent>?state=…` | the consent page: which gateway user, which server, which authorization server, which scopes; sets a `SameSite=Strict` form token cookie |
//! | `POST <consent>` (form `state`, `csrf`, `decision`) | `allow`: binds the authorization to this browser with a secret `HttpOnly` cookie and redirects (`303`) to the authorization server; `deny`: cancels it |
//! | `GET <redirect_uri>?code=…&state=…` | completes the authorization, only with the cookie of the browser that confirmed it |
//!
//! This is the MCP security best practices' defence against the confused deputy: an
//! authorization link that reaches someone other than the user it was made for (sent by an
//! attacker, or an authorization server URL that skips the consent page) cannot attach that
//! person's upstream account to the attacker's gateway identity. The authorization server may
//! remember an earlier consent and redirect at once; the callback is still refused, because the
//! browser never confirmed this authorization on the gateway's page. The consent form itself is
//! protected against cross-site submission (`SameSite=Strict` double-submit token, `Origin` and
//! `Sec-Fetch-Site` checks) and against framing (`frame-ancestors 'none'`).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tower_service::Service;

use super::{OAuthError, OAuthRegistry, PENDING_TTL, random_state, sha256, url_pairs};

/// The largest consent form accepted.
const MAX_FORM_BYTES: usize = 8 * 1024;

/// Serves the consent page and the callbacks of an [`OAuthRegistry`] with a
/// [`consent_page`](OAuthRegistry::consent_page).
#[derive(Clone)]
pub struct OAuthPages {
    registry: Arc<OAuthRegistry>,
    consent_path: Arc<str>,
    callback_paths: Arc<[String]>,
    origin: Arc<str>,
    secure: bool,
}

impl std::fmt::Debug for OAuthPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthPages")
            .field("consent_path", &self.consent_path)
            .field("callback_paths", &self.callback_paths)
            .finish_non_exhaustive()
    }
}

impl OAuthPages {
    /// The pages of `registry`: `None` when it has no consent page. Callbacks are served at the
    /// paths of the redirect URIs on the consent page's origin (a redirect URI elsewhere is not
    /// this gateway's to serve).
    pub fn new(registry: Arc<OAuthRegistry>) -> Option<Self> {
        let consent = reqwest::Url::parse(registry.consent_page_url()?).ok()?;
        let origin = consent.origin().ascii_serialization();
        let callback_paths = registry
            .redirect_uris()
            .into_iter()
            .filter_map(|u| reqwest::Url::parse(u).ok())
            .filter(|u| u.origin().ascii_serialization() == origin)
            .map(|u| u.path().to_owned())
            .collect::<Vec<_>>();
        Some(Self {
            consent_path: consent.path().into(),
            callback_paths: callback_paths.into(),
            secure: consent.scheme() == "https",
            origin: origin.into(),
            registry,
        })
    }

    /// Whether a request for `path` is one of these pages.
    pub fn serves(&self, path: &str) -> bool {
        path == &*self.consent_path || self.callback_paths.iter().any(|p| p == path)
    }

    async fn handle<B>(self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or_default().to_owned();
        if path == &*self.consent_path {
            return match *req.method() {
                Method::GET | Method::HEAD => self.consent_form(&query),
                Method::POST => self.confirm(req).await,
                _ => page(StatusCode::METHOD_NOT_ALLOWED, "Not allowed", "", &[]),
            };
        }
        if req.method() != Method::GET {
            return page(StatusCode::METHOD_NOT_ALLOWED, "Not allowed", "", &[]);
        }
        self.callback(&query, req.headers()).await
    }

    /// Cookie names: `__Host-` (secure, host-only, path `/`) on HTTPS.
    fn cookie_name(&self, kind: &str, state: &str) -> String {
        let short: String = sha256(state.as_bytes())[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let prefix = if self.secure { "__Host-" } else { "" };
        format!("{prefix}mcp-oauth-{kind}-{short}")
    }

    fn cookie(&self, name: &str, value: &str, same_site: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}")
    }

    fn consent_form(&self, query: &str) -> Response<Full<Bytes>> {
        let Some(state) = param(query, "state") else {
            return unknown();
        };
        let shown = self.registry.with_pending(&state, |p| {
            (
                p.needs_browser,
                p.browser.is_some(),
                p.server.clone(),
                p.who.clone(),
                p.scope.clone(),
                p.authorize_url.clone(),
            )
        });
        let Some((true, confirmed, server, who, scope, authorize_url)) = shown else {
            return unknown();
        };
        if confirmed {
            return already_confirmed();
        }
        let Ok(csrf) = random_state() else {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Try again",
                "<p>The gateway could not make a form token.</p>",
                &[],
            );
        };
        let at = origin_of(&authorize_url);
        let scopes = if scope.is_empty() {
            String::new()
        } else {
            format!("<p>Scopes: <code>{}</code></p>", escape(&scope))
        };
        let body = format!(
            "<p>The MCP gateway user <strong>{who}</strong> asks to use your account on the server \
             <strong>{server}</strong>. You will sign in at <strong>{at}</strong>.</p>{scopes}\
             <p>Allow only if you are <strong>{who}</strong> and you started this from your own \
             MCP client. If someone sent you this link, deny: they would act as you.</p>\
             <form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"state\" value=\"{state}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button> \
             <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
            who = escape(&who),
            server = escape(&server),
            at = escape(&at),
            action = escape(&self.consent_path),
            state = escape(&state),
            csrf = escape(&csrf),
        );
        let cookie = self.cookie(
            &self.cookie_name("csrf", &state),
            &csrf,
            "Strict",
            PENDING_TTL.as_secs(),
        );
        let mut res = page(
            StatusCode::OK,
            &format!("Connect {server}"),
            &body,
            &[at.as_str()],
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
        res
    }

    async fn confirm<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        // A cross-site form post (another site submitting the victim's browser) is refused
        // before anything else: browsers say so in `Sec-Fetch-Site` and `Origin`.
        let site = parts
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok());
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if site.is_some_and(|s| s != "same-origin") || origin.is_some_and(|o| o != &*self.origin) {
            return forbidden_form();
        }
        let Ok(collected) = Limited::new(body, MAX_FORM_BYTES).collect().await else {
            return page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "<p>The consent form is larger than the gateway accepts.</p>",
                &[],
            );
        };
        let form = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
        let (Some(state), Some(csrf)) = (param(&form, "state"), param(&form, "csrf")) else {
            return forbidden_form();
        };
        let cookie = cookie_value(&parts.headers, &self.cookie_name("csrf", &state));
        if csrf.is_empty() || cookie.as_deref() != Some(csrf.as_str()) {
            return forbidden_form();
        }
        let clear_csrf = self.cookie(&self.cookie_name("csrf", &state), "", "Strict", 0);
        if param(&form, "decision").as_deref() != Some("allow") {
            let mut res = if self.registry.cancel(&state) {
                page(
                    StatusCode::OK,
                    "Authorization cancelled",
                    "<p>Nothing was connected. You can close this page.</p>",
                    &[],
                )
            } else {
                unknown()
            };
            set_cookie(&mut res, &clear_csrf);
            return res;
        }
        let Ok(secret) = random_state() else {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Try again",
                "<p>The gateway could not make a browser binding.</p>",
                &[],
            );
        };
        let bound = self.registry.with_pending(&state, |p| {
            if !p.needs_browser || p.browser.is_some() {
                return None;
            }
            p.browser = Some(sha256(secret.as_bytes()));
            Some(p.authorize_url.clone())
        });
        let authorize_url = match bound {
            None => return unknown(),
            Some(None) => return already_confirmed(),
            Some(Some(url)) => url,
        };
        let mut res = page(
            StatusCode::SEE_OTHER,
            "Continue to sign in",
            &format!(
                "<p><a href=\"{}\">Continue to sign in</a></p>",
                escape(&authorize_url)
            ),
            &[],
        );
        if let Ok(v) = HeaderValue::from_str(&authorize_url) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        let flow = self.cookie(
            &self.cookie_name("flow", &state),
            &secret,
            // Lax: the authorization server's redirect back is a cross-site top-level GET.
            "Lax",
            PENDING_TTL.as_secs(),
        );
        set_cookie(&mut res, &flow);
        set_cookie(&mut res, &clear_csrf);
        res
    }

    async fn callback(&self, query: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
        let Some(state) = param(query, "state") else {
            return unknown();
        };
        let name = self.cookie_name("flow", &state);
        let browser = cookie_value(headers, &name);
        match self.registry.finish(query, browser.as_deref()).await {
            Ok(server) => {
                let mut res = page(
                    StatusCode::OK,
                    "Connected",
                    &format!(
                        "<p>The gateway can now use your account on <strong>{}</strong>. \
                         Close this page and try again in your MCP client.</p>",
                        escape(&server)
                    ),
                    &[],
                );
                set_cookie(&mut res, &self.cookie(&name, "", "Lax", 0));
                res
            }
            Err(OAuthError::UnknownState) => unknown(),
            Err(OAuthError::NotThisBrowser) => {
                tracing::warn!("OAuth callback refused: not from the browser that confirmed it");
                page(
                    StatusCode::FORBIDDEN,
                    "Not confirmed in this browser",
                    "<p>This authorization was not confirmed on the gateway's consent page in \
                     this browser, so nothing was connected. If you did not start it yourself \
                     from your MCP client, someone may have tried to connect your account to \
                     theirs.</p>",
                    &[],
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "OAuth callback failed");
                page(
                    StatusCode::BAD_GATEWAY,
                    "Authorization failed",
                    &format!("<p>{}</p>", escape(&e.to_string())),
                    &[],
                )
            }
        }
    }
}

impl<B> Service<Request<B>> for OAuthPages
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

fn param(query: &str, name: &str) -> Option<String> {
    url_pairs(query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(res: &mut Response<Full<Bytes>>, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn origin_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| url.to_owned())
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn unknown() -> Response<Full<Bytes>> {
    page(
        StatusCode::BAD_REQUEST,
        "Unknown or expired authorization",
        "<p>This authorization is unknown or has expired. Start again from your MCP client.</p>",
        &[],
    )
}

fn already_confirmed() -> Response<Full<Bytes>> {
    page(
        StatusCode::CONFLICT,
        "Already confirmed",
        "<p>This authorization was already confirmed in a browser. Start again from your MCP \
         client.</p>",
        &[],
    )
}

fn forbidden_form() -> Response<Full<Bytes>> {
    page(
        StatusCode::FORBIDDEN,
        "Refused",
        "<p>The consent form must be sent from the gateway's own consent page. Open the \
         authorization link from your MCP client again.</p>",
        &[],
    )
}

/// An HTML page that cannot be framed, cached, or leak its URL (which may hold a code) as a
/// referrer. `form_targets` are origins the page's form may lead to.
fn page(
    status: StatusCode,
    title: &str,
    body: &str,
    form_targets: &[&str],
) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    let mut res = Response::new(Full::new(Bytes::from(html)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    let csp = format!(
        "default-src 'none'; form-action 'self' {}; frame-ancestors 'none'; base-uri 'none'",
        form_targets.join(" ")
    );
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_many() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("mcp-oauth-flow-x=s3cret"),
        );
        assert_eq!(cookie_value(&h, "b").as_deref(), Some("2"));
        assert_eq!(
            cookie_value(&h, "mcp-oauth-flow-x").as_deref(),
            Some("s3cret")
        );
        assert_eq!(cookie_value(&h, "mcp-oauth-flow"), None);
    }

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(
            escape("<script>\"x\"&'y'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"
        );
        let res = page(StatusCode::OK, "a<b", "", &["https://as.example"]);
        assert_eq!(res.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(
            res.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
}

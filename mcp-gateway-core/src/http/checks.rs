//! Header checks: Host and Origin (DNS rebinding), Accept, Content-Type.

use http::{HeaderMap, Uri, header};

const LOCAL_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Splits `host[:port]` / `[v6][:port]` into a lower-case host (no brackets) and a port.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim();
    if authority.is_empty() {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_ascii_lowercase(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Some((host.to_ascii_lowercase(), Some(port.parse().ok()?)))
        }
        Some(_) => Some((authority.to_ascii_lowercase(), None)), // bare IPv6 without brackets
        None => Some((authority.to_ascii_lowercase(), None)),
    }
}

/// Whether the request's Host (or URI authority) is allowed.
pub(crate) fn host_allowed(uri: &Uri, headers: &HeaderMap, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a == "*") {
        return true;
    }
    let raw = match headers.get(header::HOST) {
        Some(v) => match v.to_str() {
            Ok(s) => s.to_owned(),
            Err(_) => return false,
        },
        None => match uri.authority() {
            Some(a) => a.as_str().to_owned(),
            None => return false,
        },
    };
    let Some((host, port)) = split_authority(&raw) else {
        return false;
    };
    if LOCAL_HOSTS.contains(&host.as_str()) {
        return true;
    }
    allowed.iter().any(|entry| match split_authority(entry) {
        Some((h, None)) => h == host,
        Some((h, Some(p))) => h == host && port == Some(p),
        None => false,
    })
}

/// Whether the request's Origin, when present, is allowed.
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(value) = headers.get(header::ORIGIN) else {
        return true;
    };
    if allowed.iter().any(|a| a == "*") {
        return true;
    }
    let Ok(origin) = value.to_str() else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // includes "null"
    };
    if scheme != "http" && scheme != "https" {
        return allowed.contains(&origin);
    }
    if let Some((host, _)) = split_authority(authority)
        && LOCAL_HOSTS.contains(&host.as_str())
    {
        return true;
    }
    allowed.iter().any(|a| {
        *a == origin
            || (a.split_once("://").is_some_and(|(s, auth)| {
                s == scheme
                    && !auth.contains(':')
                    && split_authority(authority).is_some_and(|(h, _)| h == auth)
            }))
    })
}

/// The media ranges in Accept whose quality is not zero.
fn accepted(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| {
            let mut parts = entry.split(';');
            let essence = parts.next()?.trim().to_ascii_lowercase();
            let zero = parts.any(|p| {
                p.split_once('=').is_some_and(|(n, v)| {
                    n.trim().eq_ignore_ascii_case("q")
                        && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            });
            (!zero && !essence.is_empty()).then_some(essence)
        })
}

/// Whether Accept allows a media type (`type/subtype`), wildcards included.
pub(crate) fn accepts(headers: &HeaderMap, media: &str) -> bool {
    let ty = media.split('/').next().unwrap_or(media);
    accepted(headers).any(|m| m == media || m == "*/*" || m.strip_suffix("/*") == Some(ty))
}

/// Whether Content-Type is JSON (`application/json`, with parameters).
pub(crate) fn content_type_is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn hosts() {
        let uri: Uri = "/mcp".parse().unwrap();
        let allowed = vec![
            "gw.example.com".to_string(),
            "api.example.com:8443".to_string(),
        ];
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:9",
            "GW.example.com:1",
            "api.example.com:8443",
        ] {
            assert!(
                host_allowed(&uri, &with(header::HOST, ok), &allowed),
                "{ok}"
            );
        }
        for bad in [
            "evil.com",
            "evil.com:80",
            "api.example.com:8444",
            "localhost.evil.com",
            "[::2]",
            "",
        ] {
            assert!(
                !host_allowed(&uri, &with(header::HOST, bad), &allowed),
                "{bad}"
            );
        }
        assert!(!host_allowed(&uri, &HeaderMap::new(), &allowed));
        assert!(host_allowed(&uri, &with(header::HOST, "x"), &["*".into()]));
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed(&HeaderMap::new(), &allowed));
        for ok in [
            "http://localhost:3000",
            "https://127.0.0.1",
            "http://[::1]:5",
            "https://app.example.com",
            "https://app.example.com/",
        ] {
            assert!(origin_allowed(&with(header::ORIGIN, ok), &allowed), "{ok}");
        }
        for bad in [
            "https://evil.com",
            "null",
            "http://app.example.com",
            "https://localhost.evil.com",
        ] {
            assert!(
                !origin_allowed(&with(header::ORIGIN, bad), &allowed),
                "{bad}"
            );
        }
    }

    #[test]
    fn accept() {
        let h = with(header::ACCEPT, "application/json, text/event-stream");
        assert!(accepts(&h, "application/json") && accepts(&h, "text/event-stream"));
        let h = with(header::ACCEPT, "text/html");
        assert!(!accepts(&h, "application/json"));
        let h = with(header::ACCEPT, "*/*");
        assert!(accepts(&h, "text/event-stream"));
        let h = with(header::ACCEPT, "application/json, text/event-stream;q=0");
        assert!(!accepts(&h, "text/event-stream"));
    }
}

//! Parsing of what an attacker controls: the `Authorization` header and the JWT's protected
//! header. Pure functions with no allocation beyond the header JSON, suitable as fuzz targets.

use base64::Engine as _;
use serde::Deserialize;

/// The largest token accepted by default (bytes). Tokens beyond the configured limit are refused
/// before any decoding.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why an `Authorization` header or a token could not be parsed. The message is safe to log; it is
/// never sent to the client (a client only sees `invalid_token` / `invalid_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The header is not visible ASCII.
    #[error("authorization header is not visible ASCII")]
    NotAscii,
    /// The scheme is not `Bearer`.
    #[error("authorization scheme is not Bearer")]
    NotBearer,
    /// `Bearer` with no credentials.
    #[error("bearer credentials are empty")]
    Empty,
    /// The credentials contain characters outside RFC 6750 `b64token`.
    #[error("bearer credentials contain characters outside b64token")]
    BadCharacters,
    /// The token is longer than the limit.
    #[error("token is longer than the limit")]
    TooLong,
    /// A JWT must have exactly three dot-separated parts.
    #[error("token is not a compact JWS (three parts)")]
    NotCompactJws,
    /// A part is not base64url.
    #[error("token part is not base64url")]
    BadBase64,
    /// The protected header is not a JSON object of the expected shape.
    #[error("token header is not valid JSON")]
    BadHeaderJson,
    /// The header names `alg: none` (or no algorithm at all): never accepted.
    #[error("unsigned token (alg none)")]
    Unsigned,
    /// The header carries `crit` parameters, none of which are understood.
    #[error("token header has critical extensions")]
    Critical,
}

/// Extracts the bearer token from an `Authorization` header value (RFC 6750 section 2.1).
///
/// The scheme is case-insensitive; exactly one or more spaces separate it from the token, which
/// must be a `b64token` of at most `max_len` bytes.
pub fn parse_bearer(value: &[u8], max_len: usize) -> Result<&str, ParseError> {
    if !value.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(ParseError::NotAscii);
    }
    let value = value.trim_ascii();
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"bearer") {
        return Err(ParseError::NotBearer);
    }
    let rest = &value[6..];
    if !rest.is_empty() && rest[0] != b' ' {
        return Err(ParseError::NotBearer);
    }
    let token = rest.trim_ascii_start();
    if token.is_empty() {
        return Err(ParseError::Empty);
    }
    if token.len() > max_len {
        return Err(ParseError::TooLong);
    }
    // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body_end = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let ok = body_end > 0
        && token[..body_end].iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
    if !ok {
        return Err(ParseError::BadCharacters);
    }
    // All bytes were checked to be ASCII above.
    std::str::from_utf8(token).map_err(|_| ParseError::NotAscii)
}

/// The parts of a JWT protected header the gateway decides on before touching any key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JwtHeader {
    /// The `alg` parameter, verbatim.
    pub alg: String,
    /// The `kid` parameter.
    #[serde(default)]
    pub kid: Option<String>,
    /// The `typ` parameter.
    #[serde(default)]
    pub typ: Option<String>,
    /// The `crit` parameter (refused when present: we understand no extensions).
    #[serde(default)]
    pub crit: Option<serde_json::Value>,
}

/// Splits a compact JWS and decodes its protected header, refusing `alg: none`, `crit`, and
/// anything that is not three base64url parts. Does not verify anything.
pub fn parse_jwt_header(token: &str, max_len: usize) -> Result<JwtHeader, ParseError> {
    if token.len() > max_len {
        return Err(ParseError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::NotCompactJws);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(ParseError::NotCompactJws);
    }
    for part in [header, payload, sig] {
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ParseError::BadBase64);
        }
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| ParseError::BadBase64)?;
    let header: JwtHeader = serde_json::from_slice(&raw).map_err(|_| ParseError::BadHeaderJson)?;
    if header.alg.is_empty() || header.alg.eq_ignore_ascii_case("none") || sig.is_empty() {
        return Err(ParseError::Unsigned);
    }
    if header.crit.is_some() {
        return Err(ParseError::Critical);
    }
    Ok(header)
}

/// A parsed `WWW-Authenticate: Bearer …` challenge (RFC 6750 / RFC 9728), as an upstream sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    /// `resource_metadata`
    pub resource_metadata: Option<String>,
    /// `scope` (space-separated)
    pub scope: Option<String>,
    /// `error`
    pub error: Option<String>,
    /// `realm`
    pub realm: Option<String>,
}

/// Parses the first `Bearer` challenge of a `WWW-Authenticate` value. Unknown parameters are
/// ignored; `None` when there is no Bearer challenge or the syntax is broken.
pub fn parse_www_authenticate(value: &str) -> Option<BearerChallenge> {
    if value.len() > 8192 {
        return None;
    }
    let lower = value.to_ascii_lowercase();
    let start = lower
        .match_indices("bearer")
        .find(|(i, _)| *i == 0 || matches!(value.as_bytes()[i - 1], b' ' | b','))?
        .0;
    let mut rest = &value[start + 6..];
    let mut out = BearerChallenge::default();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.is_empty() {
            break;
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        if name.contains(' ') {
            break; // the next challenge's scheme
        }
        rest = rest[eq + 1..].trim_start();
        let v;
        if let Some(q) = rest.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => val.push(c),
                }
            }
            let end = end?;
            rest = &q[end + 1..];
            v = val;
        } else {
            let end = rest.find([',', ' ']).unwrap_or(rest.len());
            v = rest[..end].to_owned();
            rest = &rest[end..];
        }
        match name.to_ascii_lowercase().as_str() {
            "resource_metadata" => out.resource_metadata = Some(v),
            "scope" => out.scope = Some(v),
            "error" => out.error = Some(v),
            "realm" => out.realm = Some(v),
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bearer_forms() {
        assert_eq!(
            parse_bearer(b"Bearer abc.def-_~+/=", 100),
            Ok("abc.def-_~+/=")
        );
        assert_eq!(parse_bearer(b"bearer   abc", 100), Ok("abc"));
        assert_eq!(parse_bearer(b"BEARER abc", 100), Ok("abc"));
        assert_eq!(parse_bearer(b"Basic abc", 100), Err(ParseError::NotBearer));
        assert_eq!(parse_bearer(b"Bearerabc", 100), Err(ParseError::NotBearer));
        assert_eq!(parse_bearer(b"Bearer", 100), Err(ParseError::Empty));
        assert_eq!(parse_bearer(b"Bearer ", 100), Err(ParseError::Empty));
        assert_eq!(
            parse_bearer(b"Bearer a b", 100),
            Err(ParseError::BadCharacters)
        );
        assert_eq!(
            parse_bearer(b"Bearer ===", 100),
            Err(ParseError::BadCharacters)
        );
        assert_eq!(
            parse_bearer(b"Bearer a=b", 100),
            Err(ParseError::BadCharacters)
        );
        assert_eq!(
            parse_bearer(b"Bearer \xffab", 100),
            Err(ParseError::NotAscii)
        );
        assert_eq!(parse_bearer(b"Bearer abcd", 3), Err(ParseError::TooLong));
    }

    #[test]
    fn jwt_header_forms() {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let h = format!("{}.{}.sig", b(r#"{"alg":"RS256","kid":"k1"}"#), b("{}"));
        let parsed = parse_jwt_header(&h, 1000).unwrap();
        assert_eq!(parsed.alg, "RS256");
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        let none = format!("{}.{}.", b(r#"{"alg":"none"}"#), b("{}"));
        assert_eq!(parse_jwt_header(&none, 1000), Err(ParseError::Unsigned));
        let none2 = format!("{}.{}.sig", b(r#"{"alg":"NONE"}"#), b("{}"));
        assert_eq!(parse_jwt_header(&none2, 1000), Err(ParseError::Unsigned));
        let crit = format!("{}.{}.sig", b(r#"{"alg":"RS256","crit":["x"]}"#), b("{}"));
        assert_eq!(parse_jwt_header(&crit, 1000), Err(ParseError::Critical));
        assert_eq!(
            parse_jwt_header("a.b", 1000),
            Err(ParseError::NotCompactJws)
        );
        assert_eq!(
            parse_jwt_header("a.b.c.d", 1000),
            Err(ParseError::NotCompactJws)
        );
        assert_eq!(parse_jwt_header("a+.b.c", 1000), Err(ParseError::BadBase64));
        let not_json = format!("{}.{}.sig", b("hello"), b("{}"));
        assert_eq!(
            parse_jwt_header(&not_json, 1000),
            Err(ParseError::BadHeaderJson)
        );
        assert_eq!(parse_jwt_header(&h, 5), Err(ParseError::TooLong));
    }

    #[test]
    fn www_authenticate_forms() {
        let c = parse_www_authenticate(
            r#"Bearer error="insufficient_scope", scope="a b", resource_metadata="https://x/.well-known/oauth-protected-resource/mcp""#,
        )
        .unwrap();
        assert_eq!(c.error.as_deref(), Some("insufficient_scope"));
        assert_eq!(c.scope.as_deref(), Some("a b"));
        assert_eq!(
            c.resource_metadata.as_deref(),
            Some("https://x/.well-known/oauth-protected-resource/mcp")
        );
        let c =
            parse_www_authenticate(r#"Basic realm="x", Bearer realm=api, error="invalid_token""#)
                .unwrap();
        assert_eq!(c.realm.as_deref(), Some("api"));
        assert_eq!(c.error.as_deref(), Some("invalid_token"));
        assert_eq!(
            parse_www_authenticate("Bearer").unwrap(),
            BearerChallenge::default()
        );
        assert!(parse_www_authenticate("Basic realm=x").is_none());
        assert!(parse_www_authenticate(r#"Bearer scope="unterminated"#).is_none());
        let c = parse_www_authenticate(r#"Bearer scope="a\"b""#).unwrap();
        assert_eq!(c.scope.as_deref(), Some("a\"b"));
    }

    proptest! {
        #[test]
        fn challenge_parser_never_panics(s in "\\PC{0,200}") {
            let _ = parse_www_authenticate(&s);
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_bearer(&bytes, 200);
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let _ = parse_jwt_header(s, 200);
            }
        }

        #[test]
        fn accepted_tokens_are_b64token(tok in "[A-Za-z0-9._~+/-]{1,50}={0,2}") {
            let header = format!("Bearer {tok}");
            prop_assert_eq!(parse_bearer(header.as_bytes(), 100), Ok(tok.as_str()));
        }
    }
}

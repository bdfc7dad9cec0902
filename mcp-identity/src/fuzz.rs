//! The bodies of the cargo-fuzz targets in `fuzz/` (feature `fuzzing`): each feeds arbitrary
//! bytes to a parser an attacker reaches and checks what the parser promises, so a fuzzer finds
//! wrong answers as well as panics. The unit tests run the same bodies on stable Rust over the
//! checked-in seeds (`fuzz/seeds/<target>/`) and random input.

use crate::{
    apikey::{PREFIX, parse_api_key},
    parse::{
        BearerChallenge, DEFAULT_MAX_TOKEN_BYTES, parse_bearer, parse_jwt_header,
        parse_www_authenticate,
    },
};

/// `Authorization` header parsing: an accepted token is a non-empty RFC 6750 `b64token` within
/// the limit, taken from the header, and `Bearer <token>` gives it back.
pub fn bearer_header(data: &[u8]) {
    let max = 256;
    let Ok(token) = parse_bearer(data, max) else {
        return;
    };
    assert!(!token.is_empty() && token.len() <= max, "{token:?}");
    let body = token.trim_end_matches('=');
    assert!(!body.is_empty(), "{token:?}");
    assert!(
        body.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)),
        "{token:?}"
    );
    assert!(
        data.windows(token.len()).any(|w| w == token.as_bytes()),
        "{token:?}"
    );
    assert_eq!(
        parse_bearer(format!("Bearer {token}").as_bytes(), max),
        Ok(token)
    );
}

/// JWT protected header parsing: an accepted token has three parts and names a real algorithm
/// (never `none`) and no critical extensions.
pub fn jwt_header(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(header) = parse_jwt_header(token, DEFAULT_MAX_TOKEN_BYTES) else {
        return;
    };
    assert_eq!(token.split('.').count(), 3, "{token:?}");
    assert!(!token.ends_with('.'), "unsigned token accepted: {token:?}");
    assert!(
        !header.alg.is_empty() && !header.alg.eq_ignore_ascii_case("none"),
        "{header:?}"
    );
    assert!(header.crit.is_none(), "{header:?}");
}

/// `WWW-Authenticate` parsing: whatever is parsed, written back as a canonical challenge
/// (quoted strings), parses to the same thing.
pub fn www_authenticate(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let Some(challenge) = parse_www_authenticate(value) else {
        return;
    };
    let written = write_challenge(&challenge);
    if written.len() > 8192 {
        return; // beyond the parser's size limit once escaped
    }
    assert_eq!(
        parse_www_authenticate(&written).as_ref(),
        Some(&challenge),
        "{value:?} -> {written:?}"
    );
}

fn write_challenge(c: &BearerChallenge) -> String {
    let quote = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let params: Vec<String> = [
        ("realm", &c.realm),
        ("scope", &c.scope),
        ("error", &c.error),
        ("resource_metadata", &c.resource_metadata),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}={}", quote(v))))
    .collect();
    if params.is_empty() {
        "Bearer".to_owned()
    } else {
        format!("Bearer {}", params.join(", "))
    }
}

/// API key parsing: an accepted key is `mgw_<16 hex>_<20..=128 base64url>` and is exactly the
/// parts it was split into.
pub fn api_key(data: &[u8]) {
    let Ok(key) = std::str::from_utf8(data) else {
        return;
    };
    let Some((id, secret)) = parse_api_key(key) else {
        return;
    };
    assert_eq!(format!("{PREFIX}{id}_{secret}"), key);
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id:?}"
    );
    assert!((20..=128).contains(&secret.len()), "{secret:?}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{secret:?}"
    );
}

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target, by name (the names of the `fuzz/fuzz_targets/*.rs` files).
pub const TARGETS: &[(&str, Body)] = &[
    ("bearer_header", bearer_header),
    ("jwt_header", jwt_header),
    ("www_authenticate", www_authenticate),
    ("api_key", api_key),
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The checked-in seeds of each target, run through its body.
    #[test]
    fn seeds_pass() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        for (name, body) in TARGETS {
            let dir = root.join(name);
            let mut n = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let data = std::fs::read(entry.unwrap().path()).unwrap();
                body(&data);
                n += 1;
            }
            assert!(n >= 3, "{name}: only {n} seeds");
        }
    }

    #[test]
    fn bodies_check_accepted_inputs() {
        // Inputs each parser accepts, so the invariants are exercised, not just skipped.
        bearer_header(b"Bearer abc.DEF-_~+/==");
        jwt_header(b"eyJhbGciOiJSUzI1NiJ9.e30.c2ln");
        www_authenticate(br#"Bearer realm="a\"b", scope=x, error="insufficient_scope""#);
        api_key(b"mgw_0123456789abcdef_abcdefghijklmnopqrstuvwxyz");
        assert!(parse_api_key("mgw_0123456789abcdef_abcdefghijklmnopqrstuvwxyz").is_some());
        assert!(parse_jwt_header("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", 100).is_ok());
    }

    proptest! {
        #[test]
        fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            for (_, body) in TARGETS {
                body(&data);
            }
        }

        #[test]
        fn random_headers(s in "(Bearer|bearer|Basic)? ?[ -~]{0,120}") {
            for (_, body) in TARGETS {
                body(s.as_bytes());
            }
        }

        #[test]
        fn random_challenges(
            params in proptest::collection::vec(
                ("(realm|scope|error|resource_metadata|x)", "[ -~]{0,20}", any::<bool>()),
                0..5,
            )
        ) {
            let body: Vec<String> = params
                .iter()
                .map(|(k, v, quoted)| if *quoted {
                    format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                } else {
                    format!("{k}={}", v.replace([' ', ',', '"'], ""))
                })
                .collect();
            www_authenticate(format!("Bearer {}", body.join(", ")).as_bytes());
        }
    }
}

//! Sealed, identity-bound session ids.
//!
//! A legacy-protocol (2025-06-18, 2025-11-25) session id is minted by the gateway after a
//! successful `initialize`. It is not a random handle into a table: it is the session itself,
//! sealed with AES-256-GCM under a [`SessionKey`]. Any gateway process holding the same key can
//! open it and rebuild the session (another replica behind a load balancer, a restarted
//! process), and nobody can forge or alter one.
//!
//! The sealed payload ([`SessionClaims`]) is: a version byte, the SHA-256 of the caller's
//! [`Identity::binding`] (or of `"anonymous"`), the negotiated protocol version, the client's
//! `clientInfo` and capabilities, the creation time and the upstream session ids
//! ([`UpstreamSessions`]). The wire form is `base64url(nonce ‖ ciphertext ‖ tag)` with a random
//! 96-bit nonce.
//!
//! ```
//! use mcp_gateway_core::session::{SessionClaims, SessionKey, identity_binding};
//!
//! let key = SessionKey::from_bytes([7u8; 32]);
//! let claims = SessionClaims::new(identity_binding(None), "2025-11-25");
//! let id = key.seal(&claims).unwrap();
//! assert_eq!(key.open(&id).unwrap(), claims);
//! // Any change to the id makes it unopenable.
//! let mut forged = id.clone();
//! forged.replace_range(10..11, if &id[10..11] == "A" { "B" } else { "A" });
//! assert!(key.open(&forged).is_err());
//! ```

use std::{collections::BTreeMap, fmt, time::SystemTime};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest,
    rand::{SecureRandom, SystemRandom},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::identity::Identity;

/// The format version of the sealed payload.
const PAYLOAD_VERSION: u8 = 1;
/// Bound into every seal so a ciphertext made for another purpose under the same key never opens.
const AAD: &[u8] = b"mcp-gateway/session/v1";
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// Longest session id [`SessionKey::open`] looks at (a bound on work for hostile input).
pub const MAX_SESSION_ID_LEN: usize = 16 * 1024;

// === UpstreamSessions ===

/// The upstream session ids a downstream session carries: upstream server name -> the session id
/// that upstream minted (`Mcp-Session-Id`).
///
/// Dispatch may put this in the `initialize` [`McpResponse::extensions`](crate::McpResponse) so
/// the HTTP adapter seals it into the downstream id; the adapter puts it back into every later
/// request's [`RequestContext::extensions`](crate::RequestContext) (when not empty) so dispatch,
/// on any replica, can resume the upstream sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UpstreamSessions(pub BTreeMap<String, String>);

// === SessionClaims ===

/// What a sealed session id carries.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionClaims {
    /// SHA-256 of the caller's identity binding (see [`identity_binding`]).
    pub binding: [u8; 32],
    /// The negotiated protocol version.
    pub protocol_version: String,
    /// The client's `clientInfo`, as sent.
    pub client_info: Option<Value>,
    /// The client's capabilities, as sent.
    pub client_capabilities: Option<Value>,
    /// When the session was created, in seconds since the Unix epoch.
    pub created_at: u64,
    /// The upstream sessions.
    pub upstream: UpstreamSessions,
}

impl SessionClaims {
    /// Claims for a session created now, with no client info and no upstream sessions.
    pub fn new(binding: [u8; 32], protocol_version: impl Into<String>) -> Self {
        Self {
            binding,
            protocol_version: protocol_version.into(),
            client_info: None,
            client_capabilities: None,
            created_at: unix_secs(SystemTime::now()),
            upstream: UpstreamSessions::default(),
        }
    }
}

/// The JSON part of the payload (after the version byte and the 32-byte binding).
#[derive(Serialize, Deserialize)]
struct Body {
    #[serde(rename = "v")]
    protocol_version: String,
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    client_info: Option<Value>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    client_capabilities: Option<Value>,
    #[serde(rename = "t")]
    created_at: u64,
    #[serde(rename = "u", default, skip_serializing_if = "BTreeMap::is_empty")]
    upstream: BTreeMap<String, String>,
}

/// The binding a session is tied to: SHA-256 of [`Identity::binding`], or of `"anonymous"` when
/// nobody authenticated.
pub fn identity_binding(identity: Option<&Identity>) -> [u8; 32] {
    let d = match identity {
        Some(identity) => digest::digest(&digest::SHA256, identity.binding().as_bytes()),
        None => digest::digest(&digest::SHA256, b"anonymous"),
    };
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

// === SessionKey ===

/// The AES-256-GCM key that seals session ids. Every replica that should resume a session needs
/// the same key.
pub struct SessionKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl SessionKey {
    /// A key from 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        // AES-256 accepts any 32-byte key, so this cannot fail.
        let unbound = match UnboundKey::new(&AES_256_GCM, &bytes) {
            Ok(key) => key,
            Err(_) => unreachable!("a 32-byte key is valid for AES-256-GCM"),
        };
        Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// A key from a base64 (standard or URL-safe, padded or not) or 64-digit hex string.
    pub fn from_encoded(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| KeyError::Encoding)?
        } else {
            let cleaned: String = text
                .trim_end_matches('=')
                .chars()
                .map(|c| match c {
                    '+' => '-',
                    '/' => '_',
                    c => c,
                })
                .collect();
            URL_SAFE_NO_PAD
                .decode(cleaned.as_bytes())
                .map_err(|_| KeyError::Encoding)?
        };
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|v: Vec<u8>| KeyError::Length(v.len()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// A fresh random key (sessions then resume only within this process).
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(Self::from_bytes(bytes))
    }

    /// Seals claims into a session id.
    pub fn seal(&self, claims: &SessionClaims) -> Result<String, SealError> {
        let body = Body {
            protocol_version: claims.protocol_version.clone(),
            client_info: claims.client_info.clone(),
            client_capabilities: claims.client_capabilities.clone(),
            created_at: claims.created_at,
            upstream: claims.upstream.0.clone(),
        };
        let mut buf = Vec::with_capacity(NONCE_LEN + 1 + 32 + 128 + TAG_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        buf.extend_from_slice(&nonce);
        buf.push(PAYLOAD_VERSION);
        buf.extend_from_slice(&claims.binding);
        serde_json::to_writer(&mut buf, &body).map_err(|_| SealError::Encode)?;
        let (head, payload) = buf.split_at_mut(NONCE_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                payload,
            )
            .map_err(|_| SealError::Encrypt)?;
        let _ = head;
        buf.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(&buf))
    }

    /// Opens a session id. Any alteration, a wrong key or garbage gives an error.
    pub fn open(&self, id: &str) -> Result<SessionClaims, OpenError> {
        if id.len() > MAX_SESSION_ID_LEN {
            return Err(OpenError::Malformed);
        }
        let mut buf = URL_SAFE_NO_PAD
            .decode(id.as_bytes())
            .map_err(|_| OpenError::Malformed)?;
        if buf.len() < NONCE_LEN + 1 + 32 + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&buf[..NONCE_LEN]);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut buf[NONCE_LEN..],
            )
            .map_err(|_| OpenError::Unauthentic)?;
        if plain.first() != Some(&PAYLOAD_VERSION) || plain.len() < 33 {
            return Err(OpenError::Version);
        }
        let mut binding = [0u8; 32];
        binding.copy_from_slice(&plain[1..33]);
        let body: Body = serde_json::from_slice(&plain[33..]).map_err(|_| OpenError::Malformed)?;
        Ok(SessionClaims {
            binding,
            protocol_version: body.protocol_version,
            client_info: body.client_info,
            client_capabilities: body.client_capabilities,
            created_at: body.created_at,
            upstream: UpstreamSessions(body.upstream),
        })
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

// === errors ===

/// A session key could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not base64 or hex.
    #[error("session key is neither base64 nor 64 hex digits")]
    Encoding,
    /// Wrong length.
    #[error("session key must be 32 bytes, got {0}")]
    Length(usize),
    /// The system random source failed.
    #[error("system random number generator failed")]
    Random,
}

/// Sealing failed (a failure of the gateway itself).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The system random source failed.
    #[error("system random number generator failed")]
    Random,
    /// The claims could not be encoded.
    #[error("session claims could not be encoded")]
    Encode,
    /// Encryption failed.
    #[error("session id encryption failed")]
    Encrypt,
}

/// A session id could not be opened. Callers answer every variant the same way (HTTP 404), so
/// no detail leaks to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Not base64url, too short, too long, or the payload is not ours.
    #[error("session id is malformed")]
    Malformed,
    /// The authentication tag did not verify: forged, altered, or sealed with another key.
    #[error("session id is not authentic")]
    Unauthentic,
    /// An unknown payload version.
    #[error("session id has an unknown version")]
    Version,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::AuthMethod;
    use proptest::prelude::*;

    fn claims() -> SessionClaims {
        let mut c = SessionClaims::new(identity_binding(None), "2025-11-25");
        c.client_info = Some(serde_json::json!({"name": "t", "version": "1"}));
        c.client_capabilities = Some(serde_json::json!({"sampling": {}}));
        c.upstream.0.insert("time".into(), "abc".into());
        c
    }

    #[test]
    fn round_trip_and_wrong_key() {
        let key = SessionKey::from_bytes([1; 32]);
        let id = key.seal(&claims()).unwrap();
        assert_eq!(key.open(&id).unwrap(), claims());
        assert_eq!(
            SessionKey::from_bytes([2; 32]).open(&id),
            Err(OpenError::Unauthentic)
        );
        // Two seals of the same claims differ (random nonce).
        assert_ne!(id, key.seal(&claims()).unwrap());
    }

    #[test]
    fn garbage_is_refused() {
        let key = SessionKey::from_bytes([1; 32]);
        for bad in [
            "",
            "!!!",
            "abc",
            &"A".repeat(200),
            &"A".repeat(MAX_SESSION_ID_LEN + 1),
        ] {
            assert!(key.open(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bindings_differ_by_identity() {
        let a = Identity::new("alice", AuthMethod::Jwt);
        let b = Identity::new("bob", AuthMethod::Jwt);
        assert_ne!(identity_binding(Some(&a)), identity_binding(Some(&b)));
        assert_ne!(identity_binding(Some(&a)), identity_binding(None));
        assert_eq!(
            identity_binding(Some(&a)),
            identity_binding(Some(&a.clone()))
        );
    }

    #[test]
    fn key_encodings() {
        let hex = "00".repeat(31) + "ff";
        assert!(SessionKey::from_encoded(&hex).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert!(SessionKey::from_encoded(&b64).is_ok());
        assert!(matches!(
            SessionKey::from_encoded("AAAA"),
            Err(KeyError::Length(3))
        ));
        assert!(matches!(
            SessionKey::from_encoded("***"),
            Err(KeyError::Encoding)
        ));
    }

    proptest! {
        #[test]
        fn seal_open_round_trips(
            version in "[0-9a-z-]{0,20}",
            name in ".{0,40}",
            created in any::<u64>(),
            upstream in proptest::collection::btree_map(".{0,10}", ".{0,30}", 0..4),
            binding in any::<[u8; 32]>(),
        ) {
            let key = SessionKey::from_bytes([3; 32]);
            let c = SessionClaims {
                binding,
                protocol_version: version,
                client_info: Some(serde_json::json!({"name": name})),
                client_capabilities: None,
                created_at: created,
                upstream: UpstreamSessions(upstream),
            };
            let id = key.seal(&c).unwrap();
            prop_assert_eq!(key.open(&id).unwrap(), c);
        }

        #[test]
        fn any_mutation_fails(pos in any::<proptest::sample::Index>(), repl in "[A-Za-z0-9_-]", cut in any::<bool>()) {
            let key = SessionKey::from_bytes([4; 32]);
            let id = key.seal(&claims()).unwrap();
            let i = pos.index(id.len());
            let mut mutated = id.clone();
            if cut {
                mutated.truncate(i);
            } else {
                mutated.replace_range(i..i + 1, &repl);
            }
            // base64url without padding: the last char may carry unused low bits; a change there
            // may decode to the same bytes, which is then the same id (opens to the same claims).
            if let Ok(opened) = key.open(&mutated) {
                let same_bytes = URL_SAFE_NO_PAD.decode(mutated.as_bytes()).ok()
                    == URL_SAFE_NO_PAD.decode(id.as_bytes()).ok();
                prop_assert!(same_bytes && opened == claims() || mutated == id);
            }
        }
    }
}

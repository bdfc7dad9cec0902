//! Actions: what happens to a match, and the rules that pick an action per detector, direction,
//! server and tool.

use std::{fmt, sync::Arc};

use mcp_gateway_core::Direction;
use ring::hmac;

/// What to do with a match.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Refuse the whole message with `codes::DLP_BLOCKED`, naming the rule (never the data).
    Block,
    /// Replace the match with `[REDACTED:<kind>]`.
    Redact,
    /// Replace the match with fixed text.
    Replace(Arc<str>),
    /// Replace all but the last `keep` characters with `*`.
    Mask {
        /// How many trailing characters stay visible.
        keep: usize,
    },
    /// Replace the match with `[HASH:<kind>:<16 hex>]`, an HMAC-SHA256 of the value under the
    /// gateway's key: the same value always gives the same token, the value cannot be read back.
    Hash,
    /// Leave the data, record the finding.
    Warn,
    /// Leave the data and record nothing (an exemption).
    Allow,
}

impl Action {
    /// The action's name, as recorded in findings: `block`, `redact`, `replace`, `mask`, `hash`,
    /// `warn`, `allow`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Redact => "redact",
            Action::Replace(_) => "replace",
            Action::Mask { .. } => "mask",
            Action::Hash => "hash",
            Action::Warn => "warn",
            Action::Allow => "allow",
        }
    }

    /// Whether the action changes the text.
    pub fn rewrites(&self) -> bool {
        matches!(
            self,
            Action::Redact | Action::Replace(_) | Action::Mask { .. } | Action::Hash
        )
    }

    /// Appends the replacement for `value` (a match of detector `kind`) to `out`.
    pub(crate) fn write_replacement(
        &self,
        kind: &str,
        value: &[u8],
        key: &HashKey,
        out: &mut Vec<u8>,
    ) {
        match self {
            Action::Redact => {
                out.extend_from_slice(b"[REDACTED:");
                out.extend_from_slice(kind.as_bytes());
                out.push(b']');
            }
            Action::Replace(text) => out.extend_from_slice(text.as_bytes()),
            Action::Mask { keep } => match std::str::from_utf8(value) {
                Ok(s) => {
                    let n = s.chars().count();
                    let hidden = n.saturating_sub(*keep);
                    out.extend(std::iter::repeat_n(b'*', hidden));
                    let tail: String = s.chars().skip(hidden).collect();
                    out.extend_from_slice(tail.as_bytes());
                }
                Err(_) => {
                    let hidden = value.len().saturating_sub(*keep);
                    out.extend(std::iter::repeat_n(b'*', hidden));
                    out.extend_from_slice(&value[hidden..]);
                }
            },
            Action::Hash => {
                out.extend_from_slice(b"[HASH:");
                out.extend_from_slice(kind.as_bytes());
                out.push(b':');
                out.extend_from_slice(key.token(value).as_bytes());
                out.push(b']');
            }
            Action::Block | Action::Warn | Action::Allow => out.extend_from_slice(value),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The gateway's HMAC-SHA256 key for the [`Action::Hash`] action.
#[derive(Clone)]
pub struct HashKey(Arc<hmac::Key>);

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl HashKey {
    /// A key from secret bytes (use at least 32 random bytes).
    pub fn new(secret: &[u8]) -> Self {
        Self(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// A random key: tokens are stable only for this process. Use [`HashKey::new`] with a
    /// configured secret for tokens that stay the same across restarts and replicas.
    pub fn random() -> Self {
        let rng = ring::rand::SystemRandom::new();
        match hmac::Key::generate(hmac::HMAC_SHA256, &rng) {
            Ok(k) => Self(Arc::new(k)),
            // the system RNG failing is not recoverable in a useful way; fall back to a key
            // derived from the clock and address entropy rather than panicking
            Err(_) => {
                let seed = format!("{:?}{:p}", std::time::SystemTime::now(), &rng);
                Self::new(seed.as_bytes())
            }
        }
    }

    /// The 16-hex-digit token for `value`: the first 8 bytes of HMAC-SHA256(key, value).
    pub fn token(&self, value: &[u8]) -> String {
        let tag = hmac::sign(&self.0, value);
        let mut s = String::with_capacity(16);
        for b in &tag.as_ref()[..8] {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// Where a message is going: what rules are scoped by.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Which way the content travels.
    pub direction: Direction,
    /// The upstream server (from `ctx.target`), if routed.
    pub server: Option<&'a str>,
    /// The tool or prompt name at the upstream, if any.
    pub tool: Option<&'a str>,
}

impl<'a> Scope<'a> {
    /// A scope with only a direction.
    pub fn direction(direction: Direction) -> Self {
        Self {
            direction,
            server: None,
            tool: None,
        }
    }
}

/// A rule: for matches of some detectors, in some directions, on some servers and tools, do this.
/// Rules are checked in order; the first that applies decides. An empty list means "any".
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) detectors: Vec<Arc<str>>,
    pub(crate) directions: Vec<Direction>,
    pub(crate) servers: Vec<String>,
    pub(crate) tools: Vec<String>,
    pub(crate) action: Action,
}

impl Rule {
    /// A rule named `name` (the name is what a block reports) applying `action`.
    pub fn new(name: impl Into<Arc<str>>, action: Action) -> Self {
        Self {
            name: name.into(),
            detectors: Vec::new(),
            directions: Vec::new(),
            servers: Vec::new(),
            tools: Vec::new(),
            action,
        }
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule's action.
    pub fn action(&self) -> &Action {
        &self.action
    }

    /// Limits the rule to these detector kinds.
    #[must_use]
    pub fn detectors<I: IntoIterator<Item = S>, S: Into<Arc<str>>>(mut self, kinds: I) -> Self {
        self.detectors = kinds.into_iter().map(Into::into).collect();
        self
    }

    /// Limits the rule to these directions.
    #[must_use]
    pub fn directions(mut self, d: impl IntoIterator<Item = Direction>) -> Self {
        self.directions = d.into_iter().collect();
        self
    }

    /// Limits the rule to these servers.
    #[must_use]
    pub fn servers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, s: I) -> Self {
        self.servers = s.into_iter().map(Into::into).collect();
        self
    }

    /// Limits the rule to these tools (names at the upstream).
    #[must_use]
    pub fn tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, t: I) -> Self {
        self.tools = t.into_iter().map(Into::into).collect();
        self
    }

    /// Whether the rule applies to a match of `kind` in `scope`.
    pub fn applies(&self, kind: &str, scope: &Scope<'_>) -> bool {
        (self.detectors.is_empty() || self.detectors.iter().any(|d| d.as_ref() == kind))
            && (self.directions.is_empty() || self.directions.contains(&scope.direction))
            && (self.servers.is_empty()
                || scope
                    .server
                    .is_some_and(|s| self.servers.iter().any(|x| x == s)))
            && (self.tools.is_empty()
                || scope
                    .tool
                    .is_some_and(|t| self.tools.iter().any(|x| x == t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_per_key() {
        let k = HashKey::new(b"k1");
        assert_eq!(k.token(b"a@b.com"), k.token(b"a@b.com"));
        assert_ne!(k.token(b"a@b.com"), HashKey::new(b"k2").token(b"a@b.com"));
        assert_eq!(k.token(b"x").len(), 16);
    }

    #[test]
    fn mask_keeps_last_n() {
        let mut out = Vec::new();
        Action::Mask { keep: 4 }.write_replacement(
            "credit_card",
            b"4111111111111111",
            &HashKey::new(b"k"),
            &mut out,
        );
        assert_eq!(out, b"************1111");
    }

    #[test]
    fn scope_matching() {
        let r = Rule::new("r", Action::Block)
            .detectors(["email"])
            .servers(["crm"])
            .directions([Direction::Response]);
        let mut s = Scope::direction(Direction::Response);
        assert!(!r.applies("email", &s));
        s.server = Some("crm");
        assert!(r.applies("email", &s));
        assert!(!r.applies("ssn", &s));
        s.direction = Direction::Request;
        assert!(!r.applies("email", &s));
    }
}

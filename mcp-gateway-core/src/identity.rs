//! Who is calling: the verified caller that the identity layer produces and every other layer reads.
//!
//! The type lives in core so that policy, audit and managed can read it without depending on
//! `mcp-identity` (layers never depend on each other); `mcp-identity` re-exports it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Whether the caller is a person or a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A person, typically through an OAuth token.
    #[default]
    Human,
    /// An agent or machine, typically through an API key.
    Agent,
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// An OAuth 2.1 bearer JWT.
    Jwt,
    /// A gateway-issued API key.
    ApiKey,
    /// Nobody authenticated (optional or permissive modes).
    Anonymous,
    /// Something an integrator plugged in.
    Other(String),
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The stable subject (`sub` claim, or the API key's agent id).
    pub subject: Arc<str>,
    /// Display name, if known.
    pub name: Option<String>,
    /// E-mail, if known.
    pub email: Option<String>,
    /// Teams or groups.
    pub teams: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Person or machine.
    pub kind: PrincipalKind,
    /// How they authenticated.
    pub auth_method: AuthMethod,
    /// The token's `jti` or the API key's id, for audit.
    pub token_id: Option<String>,
    /// The issuer that vouched for them.
    pub issuer: Option<String>,
}

impl Identity {
    /// A minimal identity with just a subject (useful in tests and for API keys).
    pub fn new(subject: impl Into<Arc<str>>, auth_method: AuthMethod) -> Self {
        Self {
            subject: subject.into(),
            name: None,
            email: None,
            teams: Vec::new(),
            roles: Vec::new(),
            scopes: Vec::new(),
            kind: PrincipalKind::Human,
            auth_method,
            token_id: None,
            issuer: None,
        }
    }

    /// Whether the caller is in a team or group.
    pub fn in_team(&self, team: &str) -> bool {
        self.teams.iter().any(|t| t == team)
    }

    /// Whether the caller has a role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The key a session is bound to: issuer and subject.
    pub fn binding(&self) -> String {
        match &self.issuer {
            Some(iss) => format!("{iss}\u{0}{}", self.subject),
            None => self.subject.to_string(),
        }
    }
}

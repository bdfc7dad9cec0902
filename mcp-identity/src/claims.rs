//! Mapping token claims to an [`Identity`]: claim paths are configurable so Okta, Entra ID and
//! Keycloak shaped tokens all map.
//!
//! A path is a list of object keys separated by `.` (`realm_access.roles`); a key that itself
//! contains a dot is written with a backslash (`https://example\.com/groups`). A value may be a
//! string or an array of strings; scopes given as one string are split on whitespace.

use std::sync::Arc;

use mcp_gateway_core::identity::{AuthMethod, Identity, PrincipalKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where each part of an [`Identity`] is found in a token's claims. For each field the first path
/// that yields a value wins (lists are merged across all paths).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    /// The subject (default `sub`).
    pub subject: String,
    /// Display name (default `name`, `preferred_username`).
    pub name: Vec<String>,
    /// E-mail (default `email`, `upn`, `preferred_username` when it looks like an address).
    pub email: Vec<String>,
    /// Teams or groups (default `groups`).
    pub teams: Vec<String>,
    /// Roles (default `roles`, `realm_access.roles`).
    pub roles: Vec<String>,
    /// Scopes (default `scope`, `scp`).
    pub scopes: Vec<String>,
    /// A claim whose presence marks a machine caller (default: the token is an agent when it has a
    /// `client_id` or `azp` equal to its `sub`, as client-credentials tokens do).
    pub agent_claim: Option<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            name: vec!["name".into(), "preferred_username".into()],
            email: vec!["email".into(), "upn".into()],
            teams: vec!["groups".into()],
            roles: vec!["roles".into(), "realm_access.roles".into()],
            scopes: vec!["scope".into(), "scp".into()],
            agent_claim: None,
        }
    }
}

impl ClaimMapping {
    /// Preset for Okta (`groups`, `scp` array).
    pub fn okta() -> Self {
        Self::default()
    }

    /// Preset for Microsoft Entra ID (`groups`, `roles`, `scp` string, `preferred_username`/`upn`
    /// for e-mail, `oid` is the stable subject across applications).
    pub fn entra() -> Self {
        Self {
            subject: "oid".into(),
            email: vec!["email".into(), "preferred_username".into(), "upn".into()],
            ..Self::default()
        }
    }

    /// Preset for Keycloak (`groups`, `realm_access.roles`, `resource_access.<client>.roles`).
    pub fn keycloak(client_id: &str) -> Self {
        Self {
            roles: vec![
                "realm_access.roles".into(),
                format!("resource_access.{}.roles", escape_key(client_id)),
            ],
            ..Self::default()
        }
    }

    /// Builds an identity from verified claims. Returns `None` when there is no subject.
    pub fn identity(&self, claims: &Map<String, Value>, method: AuthMethod) -> Option<Identity> {
        let subject = lookup(claims, &self.subject)?.as_str()?.to_owned();
        if subject.is_empty() {
            return None;
        }
        let first_string = |paths: &[String]| {
            paths
                .iter()
                .find_map(|p| lookup(claims, p).and_then(Value::as_str).map(str::to_owned))
        };
        let mut id = Identity::new(Arc::<str>::from(subject.as_str()), method);
        id.name = first_string(&self.name);
        id.email = self
            .email
            .iter()
            .filter_map(|p| lookup(claims, p).and_then(Value::as_str))
            .find(|s| s.contains('@'))
            .map(str::to_owned);
        id.teams = collect(claims, &self.teams, false);
        id.roles = collect(claims, &self.roles, false);
        id.scopes = collect(claims, &self.scopes, true);
        id.token_id = claims.get("jti").and_then(Value::as_str).map(str::to_owned);
        id.issuer = claims.get("iss").and_then(Value::as_str).map(str::to_owned);
        let agent = match &self.agent_claim {
            Some(path) => {
                lookup(claims, path).is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
            }
            None => ["client_id", "azp"]
                .iter()
                .any(|c| claims.get(*c).and_then(Value::as_str) == Some(subject.as_str())),
        };
        id.kind = if agent {
            PrincipalKind::Agent
        } else {
            PrincipalKind::Human
        };
        Some(id)
    }
}

fn escape_key(key: &str) -> String {
    key.replace('\\', "\\\\").replace('.', "\\.")
}

/// Splits a claim path on unescaped dots.
pub fn split_path(path: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), out.last_mut()) {
                    last.push(n);
                }
            }
            '.' => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// Looks a path up in claims.
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if !path.contains('.') && !path.contains('\\') {
        return claims.get(path);
    }
    let mut keys = split_path(path).into_iter();
    let mut cur = claims.get(&keys.next()?)?;
    for key in keys {
        cur = cur.as_object()?.get(&key)?;
    }
    Some(cur)
}

fn collect(claims: &Map<String, Value>, paths: &[String], split_ws: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: &str| {
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    };
    for path in paths {
        match lookup(claims, path) {
            Some(Value::String(s)) if split_ws => s.split_whitespace().for_each(&mut push),
            Some(Value::String(s)) => push(s),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(&mut push),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn okta_shape() {
        let c = obj(
            json!({"sub":"00u1","iss":"https://okta","name":"Ann","email":"ann@x.io",
            "groups":["eng","ops"],"scp":["mcp.read","mcp.write"],"jti":"j1"}),
        );
        let id = ClaimMapping::okta().identity(&c, AuthMethod::Jwt).unwrap();
        assert_eq!(&*id.subject, "00u1");
        assert_eq!(id.teams, ["eng", "ops"]);
        assert_eq!(id.scopes, ["mcp.read", "mcp.write"]);
        assert_eq!(id.email.as_deref(), Some("ann@x.io"));
        assert_eq!(id.token_id.as_deref(), Some("j1"));
        assert_eq!(id.kind, PrincipalKind::Human);
    }

    #[test]
    fn entra_shape() {
        let c = obj(
            json!({"sub":"pairwise","oid":"guid-1","preferred_username":"bob@corp.com",
            "groups":["g-1"],"roles":["Admin"],"scp":"a b  c"}),
        );
        let id = ClaimMapping::entra().identity(&c, AuthMethod::Jwt).unwrap();
        assert_eq!(&*id.subject, "guid-1");
        assert_eq!(id.email.as_deref(), Some("bob@corp.com"));
        assert_eq!(id.roles, ["Admin"]);
        assert_eq!(id.scopes, ["a", "b", "c"]);
    }

    #[test]
    fn keycloak_shape() {
        let c = obj(
            json!({"sub":"u","groups":["/team-a"],"realm_access":{"roles":["r1"]},
            "resource_access":{"my.gw":{"roles":["r2","r1"]}},"scope":"openid mcp",
            "azp":"u"}),
        );
        let id = ClaimMapping::keycloak("my.gw")
            .identity(&c, AuthMethod::Jwt)
            .unwrap();
        assert_eq!(id.roles, ["r1", "r2"]);
        assert_eq!(id.teams, ["/team-a"]);
        assert_eq!(id.kind, PrincipalKind::Agent);
    }

    #[test]
    fn no_subject_no_identity() {
        assert!(
            ClaimMapping::default()
                .identity(&obj(json!({"name":"x"})), AuthMethod::Jwt)
                .is_none()
        );
        assert!(
            ClaimMapping::default()
                .identity(&obj(json!({"sub":""})), AuthMethod::Jwt)
                .is_none()
        );
        assert!(
            ClaimMapping::default()
                .identity(&obj(json!({"sub":5})), AuthMethod::Jwt)
                .is_none()
        );
    }

    #[test]
    fn escaped_paths() {
        assert_eq!(split_path(r"a\.b.c"), ["a.b", "c"]);
        let c = obj(json!({"https://x.io/groups":["t"]}));
        assert_eq!(lookup(&c, r"https://x\.io/groups"), Some(&json!(["t"])));
    }
}

//! [`InstanceSpec`]: the short description of a managed MCP server that everything else is built
//! from (generated commands, runtimes, the instance manager), and its validation.
//!
//! Validation is strict for every field that ends up as a name, an option or a key (instance name,
//! kind, image, package, command, env names, label keys and values, addresses): such a field with
//! a shell metacharacter, a newline or a leading `-` is refused with an error that names the
//! field. Free-form values (args, env values) may hold anything but NUL; the generators quote them
//! for the shell, YAML, Kubernetes and compose.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

/// The environment variable that carries the bridge's shared secret (never a command-line arg).
pub const SECRET_ENV: &str = "MCP_BRIDGE_SECRET";

/// The HTTP header in which the gateway presents the shared secret to the bridge.
pub const SECRET_HEADER: &str = "x-mcp-bridge-secret";

/// The port the bridge listens on inside a container or pod.
pub const CONTAINER_PORT: u16 = 8080;

/// A managed MCP server: what to run and how to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// The server's name (a DNS label: lower-case letters, digits and `-`, at most 40 characters).
    pub name: String,
    /// The instance type from the registry: `npx`, `uvx`, `image`, `command`, or a custom one.
    pub kind: String,
    /// The npm or PyPI package (`npx`, `uvx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// The container image (required by `image`; overrides the type's image otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The executable (required by `command` and `image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Arguments for the server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Plain environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables: env name -> reference in the vault (resolved at start time,
    /// never written into generated text).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// CPU and memory limits.
    #[serde(default)]
    pub resources: Resources,
    /// Network policy.
    #[serde(default)]
    pub network: NetworkPolicy,
    /// Labels (Kubernetes label syntax, so the same spec renders everywhere).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The host address the instance is published at (`127.0.0.1:8931`); a free port on
    /// 127.0.0.1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    /// The DNS name the instance is reached at, if any (used for Kubernetes and as the URL host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The health probe; defaults come from the instance type.
    #[serde(default)]
    pub health: HealthProbe,
}

/// CPU, memory and process limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs (e.g. `0.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Maximum number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

/// Where the instance may connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Whether the server may open outgoing connections. `false` renders a Kubernetes
    /// NetworkPolicy denying egress; for Docker it requires `network` to name an internal network.
    #[serde(default = "yes")]
    pub egress: bool,
    /// A Docker network (or compose network) to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        Self {
            egress: true,
            network: None,
        }
    }
}

/// How the instance's health is probed. Unset fields take the instance type's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthProbe {
    /// How long a start may take until the bridge is ready (initialize + tools/list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout_ms: Option<u64>,
    /// How often a running instance is probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// How many failed probes in a row make an outage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

/// The health contract after defaults were applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthContract {
    /// Start deadline.
    pub ready_timeout: Duration,
    /// Probe interval.
    pub interval: Duration,
    /// Failed probes in a row that make an outage.
    pub failure_threshold: u32,
}

impl Default for HealthContract {
    fn default() -> Self {
        Self {
            ready_timeout: Duration::from_secs(30),
            interval: Duration::from_secs(2),
            failure_threshold: 3,
        }
    }
}

impl HealthProbe {
    /// Applies this probe's settings over `base`.
    pub fn apply(&self, base: HealthContract) -> HealthContract {
        HealthContract {
            ready_timeout: self
                .ready_timeout_ms
                .map_or(base.ready_timeout, Duration::from_millis),
            interval: self
                .interval_ms
                .map_or(base.interval, Duration::from_millis),
            failure_threshold: self.failure_threshold.unwrap_or(base.failure_threshold),
        }
    }
}

// === errors ===

/// A spec that cannot be used: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid instance spec `{spec}`: field `{field}`: {problem}")]
pub struct SpecError {
    spec: String,
    field: String,
    problem: String,
}

impl SpecError {
    pub(crate) fn new(
        spec: impl Into<String>,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        Self {
            spec: spec.into(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The field that is wrong (`env.FOO`, `image`, ...).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

// === validation ===

/// Whether `s` is a DNS-1123 label of at most `max` characters.
pub(crate) fn is_dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| is_dns_label(l, 63))
}

fn is_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_name(prefix) && !prefix.is_empty() && is_label_name(name),
        None => is_label_name(s),
    }
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

/// Characters allowed in image references, package names and commands: no whitespace, no shell
/// metacharacters, no quotes.
fn plain_token(s: &str, extra: &[u8]) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.starts_with('-') {
        return Err("must not start with `-` (it would be read as an option)".into());
    }
    if s.len() > 512 {
        return Err("is longer than 512 characters".into());
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || (c.is_ascii() && extra.contains(&(*c as u8)))))
    {
        Some(c) => Err(format!(
            "contains {c:?}, which is not allowed here (allowed: letters, digits and {})",
            String::from_utf8_lossy(extra)
        )),
        None => Ok(()),
    }
}

fn free_text(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        Err("contains a NUL byte".into())
    } else if s.len() > 32 * 1024 {
        Err("is longer than 32 KiB".into())
    } else {
        Ok(())
    }
}

impl InstanceSpec {
    /// A spec with a name and a kind and nothing else set.
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            package: None,
            image: None,
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            resources: Resources::default(),
            network: NetworkPolicy::default(),
            labels: BTreeMap::new(),
            address: None,
            domain: None,
            health: HealthProbe::default(),
        }
    }

    /// Checks every field that does not depend on the instance type (the registry checks the
    /// rest: see [`crate::InstanceTypes::resolve`]).
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |field: &str, problem: String| SpecError::new(&self.name, field, problem);
        if !is_dns_label(&self.name, 40) {
            return Err(err(
                "name",
                format!(
                    "{:?} is not a DNS label (lower-case letters, digits and `-`, at most 40 characters)",
                    self.name
                ),
            ));
        }
        if !is_dns_label(&self.kind, 63) {
            return Err(err(
                "kind",
                format!("{:?} is not a valid kind name", self.kind),
            ));
        }
        if let Some(p) = &self.package {
            plain_token(p, b"@/._-:=~^+").map_err(|e| err("package", e))?;
        }
        if let Some(i) = &self.image {
            plain_token(i, b"/._-:@").map_err(|e| err("image", e))?;
        }
        if let Some(c) = &self.command {
            plain_token(c, b"/._-+").map_err(|e| err("command", e))?;
        }
        for (n, a) in self.args.iter().enumerate() {
            free_text(a).map_err(|e| err(&format!("args[{n}]"), e))?;
        }
        for (k, v) in &self.env {
            if !is_env_name(k) {
                return Err(err(
                    &format!("env.{k}"),
                    format!("{k:?} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"),
                ));
            }
            if k.starts_with("MCP_BRIDGE_") {
                return Err(err(
                    &format!("env.{k}"),
                    "names starting with MCP_BRIDGE_ are reserved for the bridge".into(),
                ));
            }
            free_text(v).map_err(|e| err(&format!("env.{k}"), e))?;
        }
        for (k, v) in &self.secrets {
            if !is_env_name(k) || k.starts_with("MCP_BRIDGE_") {
                return Err(err(
                    &format!("secrets.{k}"),
                    format!("{k:?} is not a usable environment variable name"),
                ));
            }
            if self.env.contains_key(k) {
                return Err(err(&format!("secrets.{k}"), "is also set in `env`".into()));
            }
            plain_token(v, b"/._-:").map_err(|e| err(&format!("secrets.{k}"), e))?;
        }
        for (k, v) in &self.labels {
            if !is_label_key(k) {
                return Err(err(
                    &format!("labels.{k}"),
                    format!("{k:?} is not a label key ([prefix/]name, letters, digits, `-_.`)"),
                ));
            }
            if !is_label_value(v) {
                return Err(err(
                    &format!("labels.{k}"),
                    format!("{v:?} is not a label value (letters, digits, `-_.`, at most 63)"),
                ));
            }
        }
        if let Some(c) = self.resources.cpus
            && !(c > 0.0 && c <= 1024.0)
        {
            return Err(err(
                "resources.cpus",
                format!("{c} is not between 0 and 1024"),
            ));
        }
        if let Some(m) = self.resources.memory_mb
            && m < 6
        {
            return Err(err(
                "resources.memory_mb",
                format!("{m} MiB is below the 6 MiB minimum"),
            ));
        }
        if let Some(p) = self.resources.pids
            && p == 0
        {
            return Err(err("resources.pids", "must be at least 1".into()));
        }
        if let Some(n) = &self.network.network {
            plain_token(n, b"._-").map_err(|e| err("network.network", e))?;
        }
        if let Some(d) = &self.domain
            && !is_dns_name(d)
        {
            return Err(err("domain", format!("{d:?} is not a DNS name")));
        }
        if self.health.failure_threshold == Some(0) {
            return Err(err("health.failure_threshold", "must be at least 1".into()));
        }
        if self.health.ready_timeout_ms == Some(0) || self.health.interval_ms == Some(0) {
            return Err(err("health", "durations must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> InstanceSpec {
        let mut s = InstanceSpec::new("time", "command");
        s.command = Some("python3".into());
        s
    }

    #[test]
    fn good_spec_passes() {
        let mut s = base();
        s.args = vec!["-m".into(), "it's $(rm -rf /)\n; `x`".into()];
        s.env.insert("TZ".into(), "a b\nc'\"$HOME".into());
        s.labels
            .insert("team.example.com/owner".into(), "ops_1".into());
        s.validate().unwrap();
    }

    #[test]
    fn hostile_identifiers_are_refused_with_the_field() {
        let hostile = [
            "a;b", "a\nb", "a b", "$(x)", "`x`", "a'b", "a\"b", "-rf", "a|b", "a&b",
        ];
        for h in hostile {
            let mut s = base();
            s.name = h.into();
            assert_eq!(s.validate().unwrap_err().field(), "name", "{h:?}");
            let mut s = base();
            s.kind = h.into();
            assert_eq!(s.validate().unwrap_err().field(), "kind", "{h:?}");
            let mut s = base();
            s.image = Some(h.into());
            assert_eq!(s.validate().unwrap_err().field(), "image", "{h:?}");
            let mut s = base();
            s.command = Some(h.into());
            assert_eq!(s.validate().unwrap_err().field(), "command", "{h:?}");
            let mut s = base();
            s.package = Some(h.into());
            assert_eq!(s.validate().unwrap_err().field(), "package", "{h:?}");
            let mut s = base();
            s.env.insert(h.into(), "v".into());
            assert!(
                s.validate().unwrap_err().field().starts_with("env."),
                "{h:?}"
            );
            let mut s = base();
            s.labels.insert(h.into(), "v".into());
            assert!(s.validate().unwrap_err().field().starts_with("labels."));
            let mut s = base();
            s.labels.insert("k".into(), h.into());
            assert!(s.validate().unwrap_err().field().starts_with("labels."));
            let mut s = base();
            s.secrets.insert("TOKEN".into(), h.into());
            assert!(s.validate().unwrap_err().field().starts_with("secrets."));
            let mut s = base();
            s.network.network = Some(h.into());
            assert_eq!(s.validate().unwrap_err().field(), "network.network");
            let mut s = base();
            s.domain = Some(h.into());
            assert_eq!(s.validate().unwrap_err().field(), "domain");
        }
    }

    #[test]
    fn nul_in_free_text_and_bad_numbers_are_refused() {
        let mut s = base();
        s.args.push("a\0b".into());
        assert_eq!(s.validate().unwrap_err().field(), "args[0]");
        let mut s = base();
        s.env.insert("MCP_BRIDGE_SECRET".into(), "x".into());
        assert!(s.validate().unwrap_err().problem().contains("reserved"));
        let mut s = base();
        s.resources.memory_mb = Some(1);
        assert_eq!(s.validate().unwrap_err().field(), "resources.memory_mb");
        let mut s = base();
        s.resources.cpus = Some(-1.0);
        assert_eq!(s.validate().unwrap_err().field(), "resources.cpus");
        let mut s = base();
        s.health.failure_threshold = Some(0);
        assert_eq!(
            s.validate().unwrap_err().field(),
            "health.failure_threshold"
        );
    }

    #[test]
    fn error_message_names_spec_and_field() {
        let mut s = base();
        s.env.insert("BAD NAME".into(), "x".into());
        let msg = s.validate().unwrap_err().to_string();
        assert!(
            msg.contains("`time`") && msg.contains("env.BAD NAME"),
            "{msg}"
        );
    }
}

//! The `[dlp]` section of the gateway's TOML configuration.

use std::{collections::HashSet, time::Duration};

use mcp_gateway_core::Direction;
use serde::{Deserialize, Serialize};

use crate::{
    action::{Action, HashKey, Rule},
    detector::{Detector, DetectorsBuilder, Validator, builtin},
    external::{EngineRule, FailMode, WebhookEngine},
    layer::DlpLayer,
    scan::{InjectionAction, Scanner},
};

/// The `[dlp]` section. Every field has a default: an empty section turns on all built-in
/// detectors with `redact` and warn-only injection heuristics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Turns the layer on or off (default on).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Which built-in detectors run.
    #[serde(default)]
    pub detectors: DetectorsConfig,
    /// Custom detectors.
    #[serde(default)]
    pub custom: Vec<CustomDetector>,
    /// Action for matches no rule covers (default `redact`).
    #[serde(default)]
    pub default_action: ActionConfig,
    /// Rules, checked in order; the first that applies decides.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The HMAC key for `hash` (at least 16 bytes). Prefer `hash_key_env`.
    #[serde(default)]
    pub hash_key: Option<String>,
    /// The environment variable holding the HMAC key for `hash`.
    #[serde(default)]
    pub hash_key_env: Option<String>,
    /// External engines (webhooks).
    #[serde(default)]
    pub engines: Vec<EngineConfig>,
    /// Prompt-injection heuristics on content coming back from upstreams.
    #[serde(default)]
    pub injection: InjectionConfig,
    /// Maximum JSON nesting depth scanned; deeper messages are blocked (default 64).
    #[serde(default = "default_depth")]
    pub max_depth: usize,
    /// Maximum length of a custom pattern in bytes (default 1024).
    #[serde(default = "default_pattern_len")]
    pub max_pattern_len: usize,
}

fn yes() -> bool {
    true
}
fn default_depth() -> usize {
    64
}
fn default_pattern_len() -> usize {
    1024
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            detectors: DetectorsConfig::default(),
            custom: Vec::new(),
            default_action: ActionConfig::default(),
            rules: Vec::new(),
            hash_key: None,
            hash_key_env: None,
            engines: Vec::new(),
            injection: InjectionConfig::default(),
            max_depth: default_depth(),
            max_pattern_len: default_pattern_len(),
        }
    }
}

/// Which built-in detectors run: `enable` (only these) or `disable` (all but these).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorsConfig {
    /// Only these built-ins (default: all).
    #[serde(default)]
    pub enable: Option<Vec<String>>,
    /// All built-ins but these.
    #[serde(default)]
    pub disable: Vec<String>,
}

/// A custom detector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// The kind reported in findings and markers (e.g. `employee_id`).
    pub name: String,
    /// The pattern (regex-automata syntax, ASCII, byte-oriented; no look-around).
    pub pattern: String,
    /// A validator: `none`, `luhn`, `iban`, `entropy`, `ssn`, `phone`, `ipv4`, `ipv6`, `jwt`.
    #[serde(default)]
    pub validator: Validator,
    /// Minimum entropy for `validator = "entropy"` (bits per byte, default 3.5).
    #[serde(default)]
    pub min_entropy: Option<f64>,
    /// Context words near the match.
    #[serde(default)]
    pub context: Vec<String>,
    /// Whether a context word is required.
    #[serde(default)]
    pub require_context: bool,
    /// Bytes searched for context words on each side (default 48).
    #[serde(default)]
    pub context_window: Option<usize>,
    /// Case-insensitive matching.
    #[serde(default)]
    pub case_insensitive: bool,
}

/// An action name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionConfig {
    /// Refuse the message.
    Block,
    /// `[REDACTED:<kind>]`.
    #[default]
    Redact,
    /// Fixed text (`replacement`).
    Replace,
    /// Keep the last `keep` characters.
    Mask,
    /// HMAC-SHA256 token.
    Hash,
    /// Record only.
    Warn,
    /// Exempt.
    Allow,
}

/// A rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's name (what a block reports).
    pub name: String,
    /// The action.
    pub action: ActionConfig,
    /// Detector kinds (default: all).
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Directions (`request`, `response`; default: both).
    #[serde(default)]
    pub directions: Vec<Direction>,
    /// Servers (default: all).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Tools or prompts, by their name at the upstream (default: all).
    #[serde(default)]
    pub tools: Vec<String>,
    /// The text for `replace`.
    #[serde(default)]
    pub replacement: Option<String>,
    /// Trailing characters kept by `mask` (default 4).
    #[serde(default)]
    pub keep: Option<usize>,
}

/// A webhook engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// The engine's name (blocks report `engine:<name>`).
    pub name: String,
    /// The URL the gateway POSTs to.
    pub url: String,
    /// Timeout in milliseconds (default 1000).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// `open` or `closed` (default `closed`).
    #[serde(default)]
    pub fail: FailMode,
    /// Directions (default both).
    #[serde(default)]
    pub directions: Vec<Direction>,
    /// Servers (default all).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Tools (default all).
    #[serde(default)]
    pub tools: Vec<String>,
}

fn default_timeout() -> u64 {
    1000
}

/// Prompt-injection heuristics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionConfig {
    /// On or off (default on).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `warn` (default) or `block`.
    #[serde(default = "warn")]
    pub action: ActionConfig,
    /// Score at which `block` applies (0..=1, default 0.5).
    #[serde(default = "half")]
    pub threshold: f32,
}

fn warn() -> ActionConfig {
    ActionConfig::Warn
}
fn half() -> f32 {
    0.5
}

impl Default for InjectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            action: ActionConfig::Warn,
            threshold: 0.5,
        }
    }
}

/// What is wrong with a `[dlp]` section.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A detector failed to build (bad or oversized pattern, duplicate name).
    #[error("dlp: {0}")]
    Detector(#[from] crate::detector::BuildError),
    /// A name that is not a detector.
    #[error("dlp: {place} names unknown detector `{name}` (known: {known})")]
    UnknownDetector {
        /// Where.
        place: String,
        /// The name.
        name: String,
        /// The known names.
        known: String,
    },
    /// Anything else, with a message that says what and where.
    #[error("dlp: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses a `[dlp]` section from TOML text (the section's body, not the whole file).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml_parse(text)
    }

    /// Checks everything [`Config::layer`] checks, without keeping the result and without
    /// building the engines' HTTP client (which reads the system's root certificates): no file
    /// or network access.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.scanner()?;
        self.engine_urls().map(|_| ())
    }

    /// Builds the scanner.
    pub fn scanner(&self) -> Result<Scanner, ConfigError> {
        let builtin_names: Vec<String> = builtin().iter().map(|d| d.kind().to_string()).collect();
        let known_builtin = builtin_names.join(", ");
        let check_builtin = |place: &str, name: &str| -> Result<(), ConfigError> {
            if builtin_names.iter().any(|b| b == name) {
                Ok(())
            } else {
                Err(ConfigError::UnknownDetector {
                    place: place.into(),
                    name: name.into(),
                    known: known_builtin.clone(),
                })
            }
        };
        if self.detectors.enable.is_some() && !self.detectors.disable.is_empty() {
            return Err(ConfigError::Invalid(
                "detectors: set `enable` or `disable`, not both".into(),
            ));
        }
        for n in self.detectors.enable.iter().flatten() {
            check_builtin("detectors.enable", n)?;
        }
        for n in &self.detectors.disable {
            check_builtin("detectors.disable", n)?;
        }
        let mut builder = DetectorsBuilder::new().max_pattern_len(self.max_pattern_len);
        let enable = self.detectors.enable.clone();
        let disable = self.detectors.disable.clone();
        builder = builder.retain(move |k| {
            enable.as_ref().is_none_or(|e| e.iter().any(|x| x == k))
                && !disable.iter().any(|x| x == k)
        });
        for c in &self.custom {
            if c.name.is_empty()
                || !c
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(ConfigError::Invalid(format!(
                    "custom detector name `{}` must be non-empty letters, digits, `_` or `-`",
                    c.name
                )));
            }
            if builtin_names.contains(&c.name) {
                return Err(ConfigError::Invalid(format!(
                    "custom detector `{}` has the name of a built-in detector",
                    c.name
                )));
            }
            let mut d = Detector::new(c.name.as_str(), c.pattern.as_str())
                .validator(c.validator)
                .context(&c.context)
                .require_context(c.require_context);
            if let Some(e) = c.min_entropy {
                d = d.min_entropy(e);
            }
            if let Some(w) = c.context_window {
                d = d.context_window(w);
            }
            if c.case_insensitive {
                d = d.case_insensitive();
            }
            if c.require_context && c.context.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "custom detector `{}`: require_context needs `context` words",
                    c.name
                )));
            }
            builder = builder.detector(d);
        }
        let detectors = builder.build()?;
        let mut known: Vec<String> = builtin_names.clone();
        known.extend(self.custom.iter().map(|c| c.name.clone()));

        let key = match (&self.hash_key, &self.hash_key_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "set `hash_key` or `hash_key_env`, not both".into(),
                ));
            }
            (Some(k), None) => Some(k.clone()),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!(
                    "hash_key_env: environment variable `{var}` is not set"
                ))
            })?),
            (None, None) => None,
        };
        if let Some(k) = &key
            && k.len() < 16
        {
            return Err(ConfigError::Invalid(format!(
                "the hash key is {} bytes; use at least 16",
                k.len()
            )));
        }
        let uses_hash = self.default_action == ActionConfig::Hash
            || self.rules.iter().any(|r| r.action == ActionConfig::Hash);
        if uses_hash && key.is_none() {
            return Err(ConfigError::Invalid(
                "the `hash` action needs `hash_key` or `hash_key_env` (so tokens stay stable across restarts and replicas)".into(),
            ));
        }

        let default_action = match self.default_action {
            ActionConfig::Replace | ActionConfig::Mask => {
                return Err(ConfigError::Invalid(
                    "default_action: use block, redact, hash, warn or allow (replace and mask need a rule)".into(),
                ));
            }
            a => to_action(a, None, None, "default_action")?,
        };
        let mut scanner = Scanner::new(detectors)
            .default_action(default_action)
            .max_depth(self.max_depth);
        if let Some(k) = key {
            scanner = scanner.hash_key(HashKey::new(k.as_bytes()));
        }
        let mut names = HashSet::new();
        for r in &self.rules {
            if !names.insert(r.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "rule `{}` is defined twice",
                    r.name
                )));
            }
            for d in &r.detectors {
                if !known.contains(d) {
                    return Err(ConfigError::UnknownDetector {
                        place: format!("rule `{}`", r.name),
                        name: d.clone(),
                        known: known.join(", "),
                    });
                }
            }
            let action = to_action(
                r.action,
                r.replacement.as_deref(),
                r.keep,
                &format!("rule `{}`", r.name),
            )?;
            scanner = scanner.rule(
                Rule::new(r.name.as_str(), action)
                    .detectors(r.detectors.iter().map(String::as_str))
                    .directions(r.directions.iter().copied())
                    .servers(r.servers.iter().cloned())
                    .tools(r.tools.iter().cloned()),
            );
        }
        let inj = &self.injection;
        if !(0.0..=1.0).contains(&inj.threshold) {
            return Err(ConfigError::Invalid(format!(
                "injection.threshold must be between 0 and 1, got {}",
                inj.threshold
            )));
        }
        scanner = scanner.injection(if inj.enabled {
            Some((
                match inj.action {
                    ActionConfig::Warn => InjectionAction::Warn,
                    ActionConfig::Block => InjectionAction::Block,
                    other => {
                        return Err(ConfigError::Invalid(format!(
                            "injection.action must be `warn` or `block`, got `{}`",
                            to_name(other)
                        )));
                    }
                },
                inj.threshold,
            ))
        } else {
            None
        });
        Ok(scanner)
    }

    /// Checks the engines' settings: their URLs, in order.
    fn engine_urls(&self) -> Result<Vec<reqwest::Url>, ConfigError> {
        let mut names = HashSet::new();
        let mut urls = Vec::with_capacity(self.engines.len());
        for e in &self.engines {
            if !names.insert(e.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "engine `{}` is defined twice",
                    e.name
                )));
            }
            let url = reqwest::Url::parse(&e.url).map_err(|err| {
                ConfigError::Invalid(format!("engine `{}`: url `{}`: {err}", e.name, e.url))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid(format!(
                    "engine `{}`: url must be http or https",
                    e.name
                )));
            }
            if e.timeout_ms == 0 {
                return Err(ConfigError::Invalid(format!(
                    "engine `{}`: timeout_ms must be above 0",
                    e.name
                )));
            }
            urls.push(url);
        }
        Ok(urls)
    }

    /// Builds the engines (and their HTTP client, when there are any).
    pub fn engines(&self) -> Result<Vec<EngineRule>, ConfigError> {
        let urls = self.engine_urls()?;
        if urls.is_empty() {
            return Ok(Vec::new());
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| ConfigError::Invalid(format!("engines: HTTP client: {e}")))?;
        Ok(self
            .engines
            .iter()
            .zip(urls)
            .map(|(e, url)| {
                let engine =
                    WebhookEngine::new(e.name.clone(), url, Duration::from_millis(e.timeout_ms))
                        .with_client(client.clone());
                EngineRule::new(engine)
                    .fail(e.fail)
                    .directions(e.directions.iter().copied())
                    .servers(e.servers.iter().cloned())
                    .tools(e.tools.iter().cloned())
            })
            .collect())
    }

    /// Builds the layer; `Ok(None)` when `enabled = false`.
    pub fn layer(&self) -> Result<Option<DlpLayer>, ConfigError> {
        let scanner = self.scanner()?;
        let engines = self.engines()?;
        if !self.enabled {
            return Ok(None);
        }
        let mut layer = DlpLayer::with_scanner(scanner);
        for e in engines {
            layer = layer.engine(e);
        }
        Ok(Some(layer))
    }
}

fn to_name(a: ActionConfig) -> &'static str {
    match a {
        ActionConfig::Block => "block",
        ActionConfig::Redact => "redact",
        ActionConfig::Replace => "replace",
        ActionConfig::Mask => "mask",
        ActionConfig::Hash => "hash",
        ActionConfig::Warn => "warn",
        ActionConfig::Allow => "allow",
    }
}

fn to_action(
    a: ActionConfig,
    replacement: Option<&str>,
    keep: Option<usize>,
    place: &str,
) -> Result<Action, ConfigError> {
    if replacement.is_some() && a != ActionConfig::Replace {
        return Err(ConfigError::Invalid(format!(
            "{place}: `replacement` is only for action = \"replace\""
        )));
    }
    if keep.is_some() && a != ActionConfig::Mask {
        return Err(ConfigError::Invalid(format!(
            "{place}: `keep` is only for action = \"mask\""
        )));
    }
    Ok(match a {
        ActionConfig::Block => Action::Block,
        ActionConfig::Redact => Action::Redact,
        ActionConfig::Replace => Action::Replace(
            replacement
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "{place}: action = \"replace\" needs `replacement`"
                    ))
                })?
                .into(),
        ),
        ActionConfig::Mask => Action::Mask {
            keep: keep.unwrap_or(4),
        },
        ActionConfig::Hash => Action::Hash,
        ActionConfig::Warn => Action::Warn,
        ActionConfig::Allow => Action::Allow,
    })
}

fn toml_parse(text: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))
}

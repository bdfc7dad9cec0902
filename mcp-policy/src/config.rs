//! The policy document (the gateway TOML's `[policy]` section or a separate policy file) and its
//! compilation into an [`Engine`]. Loading is all or nothing: every problem is reported, with a
//! line and column when the source text is known, and nothing is applied unless all is well.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    engine::{Effect, Engine, Glob, Limit, LimitKey, Mode, Override, Rule, ServerProv, kind_index},
    expr::Expr,
    pin::parse_kind,
    ratelimit::Gcra,
    threat::Severity,
};

/// Limits on the size of a policy, so an enormous file fails at load, not at run time.
pub const MAX_RULES: usize = 100_000;

// === the document ===

/// Provisioning modes for each feature kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindModes {
    /// Tools (default `block-all`).
    #[serde(default)]
    pub tools: Option<Mode>,
    /// Prompts.
    #[serde(default)]
    pub prompts: Option<Mode>,
    /// Resources.
    #[serde(default)]
    pub resources: Option<Mode>,
    /// Resource templates.
    #[serde(default)]
    pub resource_templates: Option<Mode>,
}

/// Provisioning of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Tools mode (falls back to `[defaults]`).
    #[serde(default)]
    pub tools: Option<Mode>,
    /// Prompts mode.
    #[serde(default)]
    pub prompts: Option<Mode>,
    /// Resources mode.
    #[serde(default)]
    pub resources: Option<Mode>,
    /// Resource templates mode.
    #[serde(default)]
    pub resource_templates: Option<Mode>,
    /// Tools provisioned under `allow-selected` (names as the upstream knows them; `*` globs).
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    /// Prompts provisioned under `allow-selected`.
    #[serde(default)]
    pub allowed_prompts: Vec<String>,
    /// Resource URIs provisioned under `allow-selected`.
    #[serde(default)]
    pub allowed_resources: Vec<String>,
    /// Resource template URIs provisioned under `allow-selected`.
    #[serde(default)]
    pub allowed_resource_templates: Vec<String>,
}

/// A scoping rule: who (subjects), what (server, kinds, features), when (condition).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    /// A unique name, used in audit annotations.
    pub name: String,
    /// `allow` (default) or `deny`; a matching deny always wins.
    #[serde(default)]
    pub effect: Effect,
    /// Teams (any of).
    #[serde(default)]
    pub teams: Vec<String>,
    /// Identity subjects (any of; `*` globs).
    #[serde(default)]
    pub identities: Vec<String>,
    /// Roles (any of).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Agent subjects (callers of kind agent; `*` globs).
    #[serde(default)]
    pub agents: Vec<String>,
    /// Client names from `clientInfo.name` (`*` globs).
    #[serde(default)]
    pub clients: Vec<String>,
    /// The server (`*` globs); default every server.
    #[serde(default)]
    pub server: Option<String>,
    /// Feature kinds (`tool`, `prompt`, `resource`, `resource_template`); default all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Feature names or URIs as the upstream knows them (`*` globs); default all.
    #[serde(default)]
    pub features: Vec<String>,
    /// A condition (see [`crate::expr`]).
    #[serde(default)]
    pub when: Option<String>,
}

/// Pinning mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinMode {
    /// No pinning.
    Off,
    /// Changed tools raise an event and an audit warning but stay available.
    Warn,
    /// Changed tools are withheld until re-approved (default).
    #[default]
    Enforce,
}

/// `[pinning]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinningSection {
    /// `off`, `warn` or `enforce` (default).
    #[serde(default)]
    pub mode: PinMode,
}

/// What to do with a threat finding of some severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreatAction {
    /// Withhold the tool.
    Block,
    /// Keep it, record a warning.
    Warn,
    /// Ignore.
    Allow,
}

/// `[threats]`: severity to action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatConfig {
    /// Run the checks at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Default `block`.
    #[serde(default = "block")]
    pub high: ThreatAction,
    /// Default `warn`.
    #[serde(default = "warn")]
    pub medium: ThreatAction,
    /// Default `allow`.
    #[serde(default = "allow")]
    pub low: ThreatAction,
}

fn yes() -> bool {
    true
}
fn block() -> ThreatAction {
    ThreatAction::Block
}
fn warn() -> ThreatAction {
    ThreatAction::Warn
}
fn allow() -> ThreatAction {
    ThreatAction::Allow
}

impl Default for ThreatConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            high: ThreatAction::Block,
            medium: ThreatAction::Warn,
            low: ThreatAction::Allow,
        }
    }
}

impl ThreatConfig {
    /// The action for a severity.
    pub fn action(&self, s: Severity) -> ThreatAction {
        match s {
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
        }
    }
}

/// A rate limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// A unique name.
    pub name: String,
    /// `identity`, `api_key`, `origin`, `tool` or `global`.
    pub key: String,
    /// Requests per `per`.
    pub rate: u32,
    /// The period: `500ms`, `1s`, `1m`, `1h` (default `1s`).
    #[serde(default)]
    pub per: Option<String>,
    /// Burst size (default `rate`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Methods it applies to (default every request).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Only requests to this server (`*` globs).
    #[serde(default)]
    pub server: Option<String>,
    /// Only calls of these features (`*` globs).
    #[serde(default)]
    pub features: Vec<String>,
}

/// `[metadata]`: cutting tokens from every list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSection {
    /// Shorten descriptions to this many characters (0 = keep).
    #[serde(default)]
    pub max_description: usize,
    /// Remove `description` from the properties of input schemas.
    #[serde(default)]
    pub strip_schema_descriptions: bool,
    /// Remove `outputSchema` from tools.
    #[serde(default)]
    pub strip_output_schema: bool,
}

/// An override of one tool's metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideSection {
    /// The server.
    pub server: String,
    /// The tool's name on the upstream.
    pub tool: String,
    /// The name clients see instead (the upstream still receives the original).
    #[serde(default)]
    pub rename: Option<String>,
    /// A replacement description.
    #[serde(default)]
    pub description: Option<String>,
    /// Shorten the description to this many characters.
    #[serde(default)]
    pub max_description: Option<usize>,
    /// Parameters removed from the schema (and from calls).
    #[serde(default)]
    pub hide_params: Vec<String>,
    /// Parameters removed from the schema and forced to these values on every call.
    #[serde(default)]
    pub pin_params: BTreeMap<String, toml::Value>,
}

/// A policy document: the content of a policy file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Gateway-wide provisioning per kind (default `block-all` for every kind: fail-closed).
    #[serde(default)]
    pub defaults: KindModes,
    /// Per-server provisioning.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerSection>,
    /// Scoping rules. With none, nothing is visible.
    #[serde(default)]
    pub rules: Vec<RuleSection>,
    /// Tool pinning.
    #[serde(default)]
    pub pinning: PinningSection,
    /// Threat checks.
    #[serde(default)]
    pub threats: ThreatConfig,
    /// Rate limits.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitSection>,
    /// Metadata filtering.
    #[serde(default)]
    pub metadata: MetadataSection,
    /// Per-tool overrides.
    #[serde(default)]
    pub overrides: Vec<OverrideSection>,
}

/// The gateway TOML's `[policy]` section: the policy inline, or `file = "..."` naming a separate
/// (reloadable) policy file, plus where approvals are kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A separate policy file (then no inline sections may be set).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The approvals file (JSON); default: approvals kept in memory only.
    #[serde(default)]
    pub approvals: Option<PathBuf>,
    /// Inline: gateway-wide provisioning.
    #[serde(default)]
    pub defaults: KindModes,
    /// Inline: per-server provisioning.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerSection>,
    /// Inline: scoping rules.
    #[serde(default)]
    pub rules: Vec<RuleSection>,
    /// Inline: pinning.
    #[serde(default)]
    pub pinning: PinningSection,
    /// Inline: threat checks.
    #[serde(default)]
    pub threats: ThreatConfig,
    /// Inline: rate limits.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitSection>,
    /// Inline: metadata filtering.
    #[serde(default)]
    pub metadata: MetadataSection,
    /// Inline: overrides.
    #[serde(default)]
    pub overrides: Vec<OverrideSection>,
}

impl Config {
    /// The inline part as a document.
    pub fn inline_document(&self) -> Document {
        Document {
            defaults: self.defaults.clone(),
            servers: self.servers.clone(),
            rules: self.rules.clone(),
            pinning: self.pinning.clone(),
            threats: self.threats.clone(),
            rate_limits: self.rate_limits.clone(),
            metadata: self.metadata.clone(),
            overrides: self.overrides.clone(),
        }
    }

    /// The document this config stands for: the file's (read and parsed now) or the inline one.
    /// `source` is the gateway TOML's text, if known, so inline errors get line numbers.
    pub fn load_document(
        &self,
        source: Option<&str>,
    ) -> Result<(Document, Option<String>), LoadError> {
        match &self.file {
            Some(path) => {
                let inline = self.inline_document();
                if inline != Document::default() {
                    return Err(LoadError::one(
                        None,
                        "policy",
                        "set either `policy.file` or inline policy sections, not both",
                    ));
                }
                let text = std::fs::read_to_string(path).map_err(|e| {
                    LoadError::one(
                        Some(path.clone()),
                        "",
                        format!("cannot read policy file: {e}"),
                    )
                })?;
                let doc = parse_document(&text, Some(path))?;
                Ok((doc, Some(text)))
            }
            None => {
                let _ = source;
                Ok((self.inline_document(), None))
            }
        }
    }

    /// Validates everything (the `mcp-gateway check` entry point): parses the file if any and
    /// compiles the policy. `source` is the gateway TOML text, for line numbers of inline errors.
    pub fn check(&self, source: Option<&str>) -> Result<(), LoadError> {
        let (doc, text) = self.load_document(source)?;
        match text {
            Some(t) => compile(&doc, Some(&t), &[], self.file.clone()).map(|_| ()),
            None => compile(&doc, source, &["policy"], None).map(|_| ()),
        }
    }
}

// === errors ===

/// One problem in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, when known.
    pub file: Option<PathBuf>,
    /// 1-based line, when the source text is known.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// Where in the document (`rules[2].when`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
        }
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, "{l}:{c}: ")?;
        } else if self.file.is_some() {
            f.write_str(" ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A policy that failed to load: every problem found. Nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The problems, in document order.
    pub problems: Vec<Problem>,
}

impl LoadError {
    fn one(file: Option<PathBuf>, path: &str, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                file,
                line: None,
                column: None,
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid policy ({} problem{})",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses a policy file's text (syntax and field errors with line numbers).
pub fn parse_document(text: &str, file: Option<&Path>) -> Result<Document, LoadError> {
    toml::from_str::<Document>(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let (l, c) = line_col(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        LoadError {
            problems: vec![Problem {
                file: file.map(Path::to_path_buf),
                line,
                column,
                path: String::new(),
                message: e.message().to_string(),
            }],
        }
    })
}

/// A path segment in the document.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Idx(usize),
}

/// Finds the byte span of a path in TOML text.
fn locate(text: &str, path: &[Seg]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut cur: Option<&toml::Spanned<DeValue<'_>>> = None;
    let mut span = root.span().start;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    for seg in path {
        let next = match (seg, cur.map(|c| c.get_ref()), table) {
            (Seg::Key(k), None, Some(t)) => t.get(k.as_str()),
            (Seg::Key(k), Some(DeValue::Table(t)), _) => t.get(k.as_str()),
            (Seg::Idx(i), Some(DeValue::Array(a)), _) => a.get(*i),
            _ => None,
        };
        match next {
            Some(v) => {
                span = v.span().start;
                cur = Some(v);
                table = None;
            }
            None => break,
        }
    }
    Some(span)
}

struct Problems<'a> {
    text: Option<&'a str>,
    prefix: Vec<Seg>,
    file: Option<PathBuf>,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn add(&mut self, path: &[Seg], message: impl Into<String>) {
        let mut full = self.prefix.clone();
        full.extend_from_slice(path);
        let (line, column) = match self
            .text
            .and_then(|t| locate(t, &full).map(|o| line_col(t, o)))
        {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        let mut p = String::new();
        for s in &full {
            match s {
                Seg::Key(k) if p.is_empty() => p.push_str(k),
                Seg::Key(k) => {
                    p.push('.');
                    p.push_str(k);
                }
                Seg::Idx(i) => p.push_str(&format!("[{i}]")),
            }
        }
        self.list.push(Problem {
            file: self.file.clone(),
            line,
            column,
            path: p,
            message: message.into(),
        });
    }
}

fn k(s: &str) -> Seg {
    Seg::Key(s.into())
}

/// Parses a period: `500ms`, `1s`, `2m`, `1h`.
pub fn parse_period(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// Compiles a document into an engine; `text` (the source) and `prefix` (the document's place in
/// it, e.g. `["policy"]` for the gateway TOML) give errors line numbers.
pub fn compile_document(
    doc: &Document,
    text: Option<&str>,
    file: Option<PathBuf>,
) -> Result<Engine, LoadError> {
    compile(doc, text, &[], file)
}

pub(crate) fn compile(
    doc: &Document,
    text: Option<&str>,
    prefix: &[&str],
    file: Option<PathBuf>,
) -> Result<Engine, LoadError> {
    let mut pr = Problems {
        text,
        prefix: prefix.iter().map(|s| k(s)).collect(),
        file,
        list: Vec::new(),
    };
    let mut engine = Engine::empty();
    engine.defaults = [
        doc.defaults.tools,
        doc.defaults.prompts,
        doc.defaults.resources,
        doc.defaults.resource_templates,
    ]
    .map(|m| m.unwrap_or(Mode::BlockAll));

    if doc.rules.len() > MAX_RULES {
        pr.add(
            &[k("rules")],
            format!("{} rules; at most {MAX_RULES} are allowed", doc.rules.len()),
        );
    }

    for (name, s) in &doc.servers {
        let modes = [s.tools, s.prompts, s.resources, s.resource_templates];
        let lists = [
            (&s.allowed_tools, "allowed_tools"),
            (&s.allowed_prompts, "allowed_prompts"),
            (&s.allowed_resources, "allowed_resources"),
            (&s.allowed_resource_templates, "allowed_resource_templates"),
        ];
        let mut prov = ServerProv::default();
        for (i, (list, field)) in lists.iter().enumerate() {
            let mode = modes[i].unwrap_or(engine.defaults[i]);
            if !list.is_empty() && mode != Mode::AllowSelected {
                pr.add(
                    &[k("servers"), k(name), k(field)],
                    format!(
                        "`{field}` is only used with `allow-selected`, but this kind is `{}`",
                        mode.as_str()
                    ),
                );
            }
            prov.modes[i] = modes[i];
            prov.allowed[i] = list.iter().map(|p| Glob::new(p)).collect();
        }
        engine.servers.insert(name.clone(), prov);
    }

    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut signatures: HashMap<String, (usize, Effect)> = HashMap::new();
    for (i, r) in doc.rules.iter().enumerate() {
        let at = |f: &str| vec![k("rules"), Seg::Idx(i), k(f)];
        if r.name.trim().is_empty() {
            pr.add(&at("name"), "a rule needs a non-empty name");
        } else if let Some(prev) = names.insert(&r.name, i) {
            pr.add(
                &at("name"),
                format!("duplicate rule name `{}` (also rules[{prev}])", r.name),
            );
        }
        let mut kinds = 0u8;
        for (j, kname) in r.kinds.iter().enumerate() {
            match parse_kind(kname) {
                Some(kind) => kinds |= 1 << kind_index(kind),
                None => pr.add(
                    &[k("rules"), Seg::Idx(i), k("kinds"), Seg::Idx(j)],
                    format!("unknown kind `{kname}` (tool, prompt, resource, resource_template)"),
                ),
            }
        }
        if kinds == 0 {
            kinds = 0b1111;
        }
        let when = match &r.when {
            Some(src) => match Expr::compile(src) {
                Ok(e) => Some(e),
                Err(e) => {
                    pr.add(
                        &at("when"),
                        format!("condition does not compile: {e} in `{src}`"),
                    );
                    None
                }
            },
            None => None,
        };
        if r.when.is_none() {
            let mut sig = r.clone();
            sig.name.clear();
            sig.effect = Effect::Allow;
            let sig = format!("{sig:?}");
            if let Some((prev, eff)) = signatures.get(&sig) {
                if *eff != r.effect {
                    pr.add(
                        &at("effect"),
                        format!(
                            "conflicts with rules[{prev}]: same callers and features, one allows and the other denies"
                        ),
                    );
                }
            } else {
                signatures.insert(sig, (i, r.effect));
            }
        }
        let rule = Rule {
            name: r.name.as_str().into(),
            effect: r.effect,
            teams: r.teams.clone(),
            identities: r.identities.iter().map(|s| Glob::new(s)).collect(),
            roles: r.roles.clone(),
            agents: r.agents.iter().map(|s| Glob::new(s)).collect(),
            clients: r.clients.iter().map(|s| Glob::new(s)).collect(),
            kinds,
            features: r.features.iter().map(|s| Glob::new(s)).collect(),
            when,
        };
        let idx = engine.rules.len() as u32;
        match r.server.as_deref() {
            None | Some("*") => engine.wildcard_rules.push(idx),
            Some(s) if s.contains('*') => {
                engine.glob_rules.push((Glob::new(s), idx));
            }
            Some(s) => engine
                .rules_by_server
                .entry(s.to_string())
                .or_default()
                .push(idx),
        }
        engine.rules.push(rule);
    }

    let mut limit_names = HashSet::new();
    for (i, l) in doc.rate_limits.iter().enumerate() {
        let at = |f: &str| vec![k("rate_limits"), Seg::Idx(i), k(f)];
        if !limit_names.insert(l.name.as_str()) {
            pr.add(
                &at("name"),
                format!("duplicate rate limit name `{}`", l.name),
            );
        }
        let key = match l.key.as_str() {
            "identity" => Some(LimitKey::Identity),
            "api_key" => Some(LimitKey::ApiKey),
            "origin" => Some(LimitKey::Origin),
            "tool" => Some(LimitKey::Tool),
            "global" => Some(LimitKey::Global),
            other => {
                pr.add(
                    &at("key"),
                    format!("unknown key `{other}` (identity, api_key, origin, tool, global)"),
                );
                None
            }
        };
        if l.rate == 0 {
            pr.add(&at("rate"), "rate must be at least 1");
        }
        let per = match &l.per {
            None => Some(Duration::from_secs(1)),
            Some(p) => {
                let d = parse_period(p);
                if d.is_none() {
                    pr.add(
                        &at("per"),
                        format!("bad period `{p}` (use e.g. `500ms`, `1s`, `1m`, `1h`)"),
                    );
                }
                d
            }
        };
        if l.burst == Some(0) {
            pr.add(&at("burst"), "burst must be at least 1");
        }
        if let (Some(key), Some(per)) = (key, per)
            && l.rate > 0
        {
            let burst = l.burst.unwrap_or(l.rate).max(1);
            engine.limits.push(Limit {
                name: l.name.as_str().into(),
                key,
                methods: l
                    .methods
                    .iter()
                    .map(|m| mcp_gateway_core::Method::parse(m))
                    .collect(),
                server: l.server.as_deref().map(Glob::new),
                features: l.features.iter().map(|s| Glob::new(s)).collect(),
                gcra: Arc::new(Gcra::new(l.rate, per, burst)),
            });
        }
    }

    let mut renames: HashMap<&str, usize> = HashMap::new();
    for (i, o) in doc.overrides.iter().enumerate() {
        let at = |f: &str| vec![k("overrides"), Seg::Idx(i), k(f)];
        let key = (o.server.clone(), o.tool.clone());
        if engine
            .overrides
            .get(&o.server)
            .is_some_and(|t| t.contains_key(&o.tool))
        {
            pr.add(
                &at("tool"),
                format!(
                    "a second override for tool `{}` of server `{}`",
                    o.tool, o.server
                ),
            );
            continue;
        }
        if let Some(r) = &o.rename {
            if r.trim().is_empty() {
                pr.add(&at("rename"), "a rename needs a non-empty name");
            } else if let Some(prev) = renames.insert(r, i) {
                pr.add(
                    &at("rename"),
                    format!("`{r}` is also the rename of overrides[{prev}]"),
                );
            } else {
                engine.renamed_from.insert(r.clone(), key.clone());
            }
        }
        if o.max_description == Some(0) {
            pr.add(&at("max_description"), "max_description must be at least 1");
        }
        let mut pins = serde_json::Map::new();
        for (p, v) in &o.pin_params {
            match serde_json::to_value(v) {
                Ok(v) => {
                    pins.insert(p.clone(), v);
                }
                Err(e) => pr.add(
                    &[k("overrides"), Seg::Idx(i), k("pin_params"), k(p)],
                    format!("cannot use value: {e}"),
                ),
            }
        }
        engine.overrides.entry(key.0).or_default().insert(
            key.1,
            Override {
                rename: o.rename.clone(),
                description: o.description.clone(),
                max_description: o.max_description,
                hide: o
                    .hide_params
                    .iter()
                    .chain(o.pin_params.keys())
                    .cloned()
                    .collect(),
                pin: pins,
            },
        );
    }

    engine.pinning = doc.pinning.mode;
    engine.threats = doc.threats.clone();
    engine.metadata = doc.metadata.clone();

    if pr.list.is_empty() {
        Ok(engine)
    } else {
        Err(LoadError { problems: pr.list })
    }
}

/// Converts a JSON value (from a TOML `pin_params` table) for display.
pub fn toml_to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_has_a_line() {
        let text =
            "[defaults]\ntools = \"allow-all\"\n\n[[rules]]\nname = \"a\"\nteamz = [\"x\"]\n";
        let e = parse_document(text, None)
            .err()
            .map(|e| e.problems[0].clone());
        let p = e.unwrap_or_else(|| panic!("should fail"));
        assert_eq!(p.line, Some(6), "{p}");
        assert!(p.message.contains("teamz"), "{p}");
    }

    #[test]
    fn semantic_errors_are_all_reported_with_lines() {
        let text = "[[rules]]\nname = \"a\"\nwhen = \"identity.nope == 1\"\n\n[[rules]]\nname = \"a\"\nkinds = [\"toolz\"]\n";
        let doc = parse_document(text, None).unwrap_or_default();
        let e = compile_document(&doc, Some(text), None)
            .err()
            .unwrap_or_else(|| panic!("should fail"));
        assert_eq!(e.problems.len(), 3, "{e}");
        assert_eq!(e.problems[0].line, Some(3), "{e}");
        assert!(
            e.problems[0]
                .message
                .contains("unknown field `identity.nope`"),
            "{e}"
        );
        assert_eq!(e.problems[1].line, Some(6), "{e}");
        assert!(e.problems[1].message.contains("duplicate rule name"), "{e}");
        assert_eq!(e.problems[2].line, Some(7), "{e}");
    }

    #[test]
    fn conflicting_rules_are_rejected() {
        let text = "[[rules]]\nname = \"a\"\nteams = [\"t\"]\n[[rules]]\nname = \"b\"\neffect = \"deny\"\nteams = [\"t\"]\n";
        let doc = parse_document(text, None).unwrap_or_default();
        let e = compile_document(&doc, Some(text), None)
            .err()
            .unwrap_or_else(|| panic!("should fail"));
        assert!(e.problems[0].message.contains("conflicts"), "{e}");
    }

    #[test]
    fn periods() {
        assert_eq!(parse_period("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_period("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_period("0s"), None);
        assert_eq!(parse_period("s"), None);
        assert_eq!(parse_period("10x"), None);
    }
}

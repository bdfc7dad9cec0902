//! The compiled policy: provisioning, scoping rules, rate limits and overrides, with the decision
//! functions the layer calls. An [`Engine`] is immutable; reloading swaps in a new one.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Arc,
};

use mcp_gateway_core::{
    FeatureKind, Identity, JsonObject, Method, Origin, SessionInfo, identity::PrincipalKind,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    config::{MetadataSection, PinMode, ThreatConfig},
    expr::{Env, Expr},
    ratelimit::Gcra,
};

/// Provisioning mode of a feature kind on a server (or gateway-wide).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every feature of this kind is provisioned.
    AllowAll,
    /// Only the listed (or approved) features; newly discovered ones wait for approval.
    AllowSelected,
    /// Nothing (the default).
    BlockAll,
}

impl Mode {
    /// `allow-all`, `allow-selected`, `block-all`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllowAll => "allow-all",
            Self::AllowSelected => "allow-selected",
            Self::BlockAll => "block-all",
        }
    }
}

/// A rule's effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Makes features visible and callable.
    #[default]
    Allow,
    /// Hides them; wins over any allow.
    Deny,
}

/// Index of a kind in per-kind arrays.
pub fn kind_index(k: FeatureKind) -> usize {
    match k {
        FeatureKind::Tool => 0,
        FeatureKind::Prompt => 1,
        FeatureKind::Resource => 2,
        FeatureKind::ResourceTemplate => 3,
    }
}

/// A pattern with `*` wildcards (matching any run of characters); no other metacharacters.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    parts: Vec<String>,
    exact: bool,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.parts.join("*"))
    }
}

impl Glob {
    /// Compiles a pattern.
    pub fn new(p: &str) -> Self {
        Self {
            parts: p.split('*').map(str::to_string).collect(),
            exact: !p.contains('*'),
        }
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        if self.exact {
            return self.parts[0] == s;
        }
        let (first, rest) = match self.parts.split_first() {
            Some(x) => x,
            None => return s.is_empty(),
        };
        let Some(mut s) = s.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return s.is_empty();
        };
        for m in middle {
            match s.find(m.as_str()) {
                Some(i) => s = &s[i + m.len()..],
                None => return false,
            }
        }
        s.ends_with(last.as_str())
    }
}

/// Provisioning of one server.
#[derive(Debug, Clone, Default)]
pub struct ServerProv {
    pub(crate) modes: [Option<Mode>; 4],
    pub(crate) allowed: [Vec<Glob>; 4],
}

/// A compiled scoping rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) effect: Effect,
    pub(crate) teams: Vec<String>,
    pub(crate) identities: Vec<Glob>,
    pub(crate) roles: Vec<String>,
    pub(crate) agents: Vec<Glob>,
    pub(crate) clients: Vec<Glob>,
    pub(crate) kinds: u8,
    pub(crate) features: Vec<Glob>,
    pub(crate) when: Option<Expr>,
}

/// What a rate limit is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// The identity's subject (anonymous callers share one bucket).
    Identity,
    /// The API key id (only callers that used an API key).
    ApiKey,
    /// The client's IP address (or `Origin` header).
    Origin,
    /// The feature called (server and name), across callers.
    Tool,
    /// One bucket for everything.
    Global,
}

/// A compiled rate limit.
#[derive(Debug, Clone)]
pub struct Limit {
    pub(crate) name: Arc<str>,
    pub(crate) key: LimitKey,
    pub(crate) methods: Vec<Method>,
    pub(crate) server: Option<Glob>,
    pub(crate) features: Vec<Glob>,
    pub(crate) gcra: Arc<Gcra>,
}

/// A compiled tool override.
#[derive(Debug, Clone, Default)]
pub struct Override {
    pub(crate) rename: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) max_description: Option<usize>,
    pub(crate) hide: Vec<String>,
    pub(crate) pin: JsonObject,
}

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) defaults: [Mode; 4],
    pub(crate) servers: HashMap<String, ServerProv>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) rules_by_server: HashMap<String, Vec<u32>>,
    pub(crate) wildcard_rules: Vec<u32>,
    pub(crate) glob_rules: Vec<(Glob, u32)>,
    pub(crate) limits: Vec<Limit>,
    /// server -> tool -> override.
    pub(crate) overrides: HashMap<String, HashMap<String, Override>>,
    pub(crate) renamed_from: HashMap<String, (String, String)>,
    pub(crate) pinning: PinMode,
    pub(crate) threats: ThreatConfig,
    pub(crate) metadata: MetadataSection,
}

/// Who is asking, gathered once per message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The identity, if any.
    pub identity: Option<&'a Identity>,
    /// The session.
    pub session: Option<&'a SessionInfo>,
    /// The origin.
    pub origin: Option<&'a Origin>,
    /// Now, seconds since the Unix epoch.
    pub now_unix: i64,
}

impl Caller<'_> {
    fn client_name(&self) -> &str {
        self.session.and_then(|s| s.client_name()).unwrap_or("")
    }
}

/// Provisioning state of a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioned {
    /// Provisioned.
    Yes,
    /// Under `allow-selected` and neither listed nor approved: waits for approval.
    Pending,
    /// Blocked (`block-all`).
    No,
}

/// Per-caller precomputation of which rules' subject selectors match (see
/// [`Engine::subject_mask`]).
#[derive(Debug, Clone)]
pub struct SubjectMask(Vec<bool>);

/// A scoping decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, by this rule.
    Allow(Arc<str>),
    /// Not allowed: hidden (no rule allows, or this deny rule matched).
    Hide(Option<Arc<str>>),
    /// A call refused by a condition on its arguments (the feature is listed to this caller).
    Refuse(Arc<str>),
}

impl Engine {
    /// An engine with no rules: nothing is provisioned or visible.
    pub fn empty() -> Self {
        Self {
            defaults: [Mode::BlockAll; 4],
            servers: HashMap::new(),
            rules: Vec::new(),
            rules_by_server: HashMap::new(),
            wildcard_rules: Vec::new(),
            glob_rules: Vec::new(),
            limits: Vec::new(),
            overrides: HashMap::new(),
            renamed_from: HashMap::new(),
            pinning: PinMode::Enforce,
            threats: ThreatConfig::default(),
            metadata: MetadataSection::default(),
        }
    }

    /// The pinning mode.
    pub fn pinning(&self) -> PinMode {
        self.pinning
    }

    /// The provisioning mode of a kind on a server.
    pub fn mode(&self, kind: FeatureKind, server: &str) -> Mode {
        let i = kind_index(kind);
        self.servers
            .get(server)
            .and_then(|s| s.modes[i])
            .unwrap_or(self.defaults[i])
    }

    /// Whether a feature is provisioned; `approved` says whether the approvals store lists it.
    pub fn provisioned(
        &self,
        kind: FeatureKind,
        server: &str,
        name: &str,
        approved: bool,
    ) -> Provisioned {
        match self.mode(kind, server) {
            Mode::AllowAll => Provisioned::Yes,
            Mode::BlockAll => Provisioned::No,
            Mode::AllowSelected => {
                let listed = self
                    .servers
                    .get(server)
                    .is_some_and(|s| s.allowed[kind_index(kind)].iter().any(|g| g.matches(name)));
                if listed || approved {
                    Provisioned::Yes
                } else {
                    Provisioned::Pending
                }
            }
        }
    }

    pub(crate) fn subject_matches(r: &Rule, c: &Caller<'_>) -> bool {
        let id = c.identity;
        if !r.teams.is_empty() && !id.is_some_and(|i| r.teams.iter().any(|t| i.in_team(t))) {
            return false;
        }
        if !r.roles.is_empty() && !id.is_some_and(|i| r.roles.iter().any(|t| i.has_role(t))) {
            return false;
        }
        if !r.identities.is_empty()
            && !id.is_some_and(|i| r.identities.iter().any(|g| g.matches(&i.subject)))
        {
            return false;
        }
        if !r.agents.is_empty()
            && !id.is_some_and(|i| {
                i.kind == PrincipalKind::Agent && r.agents.iter().any(|g| g.matches(&i.subject))
            })
        {
            return false;
        }
        if !r.clients.is_empty() {
            let name = c.client_name();
            if !r.clients.iter().any(|g| g.matches(name)) {
                return false;
            }
        }
        true
    }

    /// Indices of the rules that may apply to `server`, in precedence order: the server's own,
    /// then gateway-wide ones, then those whose server glob matches.
    pub(crate) fn rules_for<'a>(
        &'a self,
        server: &'a str,
    ) -> impl Iterator<Item = usize> + Clone + 'a {
        self.rules_by_server
            .get(server)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .chain(&self.wildcard_rules)
            .map(|&i| i as usize)
            .chain(
                self.glob_rules
                    .iter()
                    .filter(move |(g, _)| g.matches(server))
                    .map(|(_, i)| *i as usize),
            )
    }

    /// Which rules' subject selectors match a caller (index = rule), computed once per list so
    /// filtering a long list does not re-match every rule's selectors per entry.
    pub fn subject_mask(&self, caller: &Caller<'_>) -> SubjectMask {
        SubjectMask(
            self.rules
                .iter()
                .map(|r| Self::subject_matches(r, caller))
                .collect(),
        )
    }

    /// [`Engine::decide`] with a precomputed [`SubjectMask`] for the same caller.
    #[allow(clippy::too_many_arguments)]
    pub fn decide_masked(
        &self,
        mask: &SubjectMask,
        caller: &Caller<'_>,
        method: &Method,
        kind: FeatureKind,
        server: &str,
        name: &str,
        args: Option<&JsonObject>,
    ) -> Decision {
        let bit = 1u8 << kind_index(kind);
        let rules = self
            .rules_for(server)
            .filter(|&i| self.rules[i].kinds & bit != 0 && mask.0.get(i).copied().unwrap_or(false));
        self.decide_among(rules, caller, method, kind, server, name, args)
    }

    /// Decides whether a caller may see (`args = None`, a list) or call (`args = Some`) a feature.
    /// Conditions that read `args` are skipped on lists (the feature stays listed) and decided
    /// on the call. An evaluation error counts against the caller: an allow does not apply, a
    /// deny does.
    pub fn decide(
        &self,
        caller: &Caller<'_>,
        method: &Method,
        kind: FeatureKind,
        server: &str,
        name: &str,
        args: Option<&JsonObject>,
    ) -> Decision {
        let bit = 1u8 << kind_index(kind);
        let rules = self.rules_for(server).filter(|&i| {
            let r = &self.rules[i];
            r.kinds & bit != 0 && Self::subject_matches(r, caller)
        });
        self.decide_among(rules, caller, method, kind, server, name, args)
    }

    /// The decision among `rules` (indices, in precedence order), whose kind and subject
    /// selectors already match: features and conditions are checked here. Deny rules are
    /// checked first (any of them wins); then allow rules until the first one that holds, which
    /// is the one reported.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decide_among(
        &self,
        rules: impl Iterator<Item = usize> + Clone,
        caller: &Caller<'_>,
        method: &Method,
        kind: FeatureKind,
        server: &str,
        name: &str,
        args: Option<&JsonObject>,
    ) -> Decision {
        let is_call = args.is_some();
        let env = Env {
            identity: caller.identity,
            session: caller.session,
            origin: caller.origin,
            now_unix: caller.now_unix,
            server,
            name,
            kind: kind.as_str(),
            method: method.as_str(),
            args,
        };
        let applies =
            |r: &Rule| r.features.is_empty() || r.features.iter().any(|g| g.matches(name));
        // Whether a rule's condition holds: `None` when it reads arguments on a list (decided on
        // the call). An evaluation error counts against the caller.
        let holds = |r: &Rule| -> Option<bool> {
            match &r.when {
                None => Some(true),
                Some(e) if e.uses_args() && !is_call => None,
                Some(e) => Some(e.eval(&env).unwrap_or(r.effect == Effect::Deny)),
            }
        };
        let uses_args = |r: &Rule| r.when.as_ref().is_some_and(Expr::uses_args);
        let mut args_deny: Option<&Arc<str>> = None;
        for i in rules.clone() {
            let r = &self.rules[i];
            if r.effect != Effect::Deny || !applies(r) {
                continue;
            }
            match holds(r) {
                Some(true) if uses_args(r) => args_deny = args_deny.or(Some(&r.name)),
                Some(true) => return Decision::Hide(Some(r.name.clone())),
                // A deny on arguments does not hide the feature from lists.
                None | Some(false) => {}
            }
        }
        // Whether the feature would be listed (allowed ignoring argument conditions).
        let mut listed_by: Option<&Arc<str>> = None;
        for i in rules {
            let r = &self.rules[i];
            if r.effect != Effect::Allow || !applies(r) {
                continue;
            }
            match holds(r) {
                Some(true) => {
                    if !is_call {
                        return Decision::Allow(listed_by.unwrap_or(&r.name).clone());
                    }
                    return match args_deny {
                        None => Decision::Allow(r.name.clone()),
                        Some(d) => Decision::Refuse(d.clone()),
                    };
                }
                None => listed_by = listed_by.or(Some(&r.name)),
                Some(false) if uses_args(r) => listed_by = listed_by.or(Some(&r.name)),
                Some(false) => {}
            }
        }
        match (is_call, listed_by, args_deny) {
            (false, Some(l), _) => Decision::Allow(l.clone()),
            (true, Some(_), Some(d)) => Decision::Refuse(d.clone()),
            (true, Some(l), None) => Decision::Refuse(l.clone()),
            (_, None, _) => Decision::Hide(None),
        }
    }

    /// The override of a tool, if any.
    pub fn override_for(&self, server: &str, tool: &str) -> Option<&Override> {
        if self.overrides.is_empty() {
            return None;
        }
        self.overrides.get(server)?.get(tool)
    }

    /// Applies metadata filtering and the tool's override to a list entry (in place).
    pub fn rewrite_entry(&self, kind: FeatureKind, server: &str, name: &str, entry: &mut Value) {
        let Some(obj) = entry.as_object_mut() else {
            return;
        };
        let o = if kind == FeatureKind::Tool {
            self.override_for(server, name)
        } else {
            None
        };
        if let Some(o) = o {
            if let Some(r) = &o.rename {
                obj.insert("name".into(), Value::String(r.clone()));
            }
            if let Some(d) = &o.description {
                obj.insert("description".into(), Value::String(d.clone()));
            }
            if let Some(max) = o.max_description {
                shorten(obj, max);
            }
            if !o.hide.is_empty()
                && let Some(schema) = obj.get_mut("inputSchema").and_then(Value::as_object_mut)
            {
                if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                    for h in &o.hide {
                        props.remove(h);
                    }
                }
                if let Some(req) = schema.get_mut("required").and_then(Value::as_array_mut) {
                    req.retain(|r| !r.as_str().is_some_and(|r| o.hide.iter().any(|h| h == r)));
                }
            }
        }
        let m = &self.metadata;
        if m.max_description > 0 {
            shorten(obj, m.max_description);
        }
        if kind == FeatureKind::Tool {
            if m.strip_output_schema {
                obj.remove("outputSchema");
            }
            if m.strip_schema_descriptions
                && let Some(props) = obj
                    .get_mut("inputSchema")
                    .and_then(|s| s.get_mut("properties"))
                    .and_then(Value::as_object_mut)
            {
                for p in props.values_mut() {
                    if let Some(p) = p.as_object_mut() {
                        p.remove("description");
                    }
                }
            }
        }
    }

    /// The (server, original name) of a tool renamed to `name`.
    pub fn renamed_from(&self, name: &str) -> Option<&(String, String)> {
        if self.renamed_from.is_empty() {
            return None;
        }
        self.renamed_from.get(name)
    }

    /// Whether any override renames tools (the names layer is then needed).
    pub fn has_renames(&self) -> bool {
        self.overrides
            .values()
            .flat_map(HashMap::values)
            .any(|o| o.rename.is_some())
    }

    /// Renames: (server, tool) -> new name.
    pub fn renames(&self) -> BTreeMap<(String, String), String> {
        self.overrides
            .iter()
            .flat_map(|(server, tools)| {
                tools.iter().filter_map(move |(tool, o)| {
                    Some(((server.clone(), tool.clone()), o.rename.clone()?))
                })
            })
            .collect()
    }
}

fn shorten(obj: &mut JsonObject, max: usize) {
    if let Some(Value::String(d)) = obj.get_mut("description")
        && let Some((cut, _)) = d.char_indices().nth(max)
    {
        d.truncate(cut);
        d.push('…');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(Glob::new("get_*").matches("get_time"));
        assert!(!Glob::new("get_*").matches("set_time"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("a*b*c").matches("axxbyyc"));
        assert!(!Glob::new("a*b*c").matches("axxbyy"));
        assert!(Glob::new("exact").matches("exact"));
        assert!(!Glob::new("exact").matches("exactly"));
        assert!(Glob::new("*_time").matches("get_current_time"));
    }
}

//! The scanner: detectors + rules + actions, over text and over JSON values.

use std::{borrow::Cow, sync::Arc};

use mcp_gateway_core::Direction;
use serde_json::{Map, Value};

use crate::{
    action::{Action, HashKey, Rule, Scope},
    detector::{Detectors, Match},
    injection::{InjectionDetector, InjectionReport},
};

/// What the scanner decided about a finding's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The detector kind (e.g. `email`).
    pub kind: Arc<str>,
    /// The rule that decided (`default` when no rule applied).
    pub rule: Arc<str>,
    /// The action taken.
    pub action: &'static str,
    /// How many matches.
    pub count: u32,
}

/// Why a message is blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The rule that blocked (e.g. `block-secrets`, `dlp:max_depth`, `engine:presidio`).
    pub rule: String,
    /// The detector kind, when a detector matched.
    pub kind: Option<String>,
    /// A message for the client; never contains the data.
    pub message: String,
}

/// The outcome of scanning one message: findings (kinds and counts, never data), whether the
/// content was rewritten, and whether it must be blocked.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Findings by kind and action, in the order first seen.
    pub findings: Vec<Finding>,
    /// Whether any content was rewritten.
    pub modified: bool,
    /// Set when the message must not pass.
    pub block: Option<Block>,
    /// Prompt-injection signals (response direction only).
    pub injection: InjectionReport,
}

impl Report {
    fn add(&mut self, kind: &Arc<str>, rule: &Arc<str>, action: &'static str) {
        if let Some(f) = self
            .findings
            .iter_mut()
            .find(|f| f.kind == *kind && f.action == action && f.rule == *rule)
        {
            f.count = f.count.saturating_add(1);
        } else {
            self.findings.push(Finding {
                kind: kind.clone(),
                rule: rule.clone(),
                action,
                count: 1,
            });
        }
    }

    /// Whether the message passes unchanged.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.block.is_none() && self.injection.is_empty()
    }

    /// Merges another report into this one.
    pub fn merge(&mut self, other: Report) {
        for f in other.findings {
            match self
                .findings
                .iter_mut()
                .find(|x| x.kind == f.kind && x.action == f.action && x.rule == f.rule)
            {
                Some(x) => x.count = x.count.saturating_add(f.count),
                None => self.findings.push(f),
            }
        }
        self.modified |= other.modified;
        if self.block.is_none() {
            self.block = other.block;
        }
        self.injection.merge(&other.injection);
    }
}

/// What to do when the injection score reaches the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectionAction {
    /// Record the score only.
    Warn,
    /// Block the message.
    Block,
}

#[derive(Debug, Clone)]
pub(crate) struct InjectionConfig {
    pub(crate) detector: InjectionDetector,
    pub(crate) action: InjectionAction,
    pub(crate) threshold: f32,
}

/// Detectors, rules and actions, ready to scan text and JSON. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Scanner {
    pub(crate) detectors: Detectors,
    pub(crate) rules: Arc<[Rule]>,
    pub(crate) default_action: Action,
    pub(crate) hash_key: HashKey,
    pub(crate) max_depth: usize,
    pub(crate) injection: Option<Arc<InjectionConfig>>,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new(Detectors::builtin())
    }
}

const DEFAULT_RULE: &str = "default";

impl Scanner {
    /// A scanner with `detectors`, no rules, `redact` as the default action, a random hash key,
    /// depth limit 64 and injection heuristics on (warn at 0.5).
    pub fn new(detectors: Detectors) -> Self {
        Self {
            detectors,
            rules: Arc::from(Vec::new()),
            default_action: Action::Redact,
            hash_key: HashKey::random(),
            max_depth: 64,
            injection: Some(Arc::new(InjectionConfig {
                detector: InjectionDetector::new(),
                action: InjectionAction::Warn,
                threshold: 0.5,
            })),
        }
    }

    /// Adds a rule (checked in order; first that applies decides).
    #[must_use]
    pub fn rule(mut self, rule: Rule) -> Self {
        let mut rules = self.rules.to_vec();
        rules.push(rule);
        self.rules = Arc::from(rules);
        self
    }

    /// The action for matches no rule covers (default `redact`).
    #[must_use]
    pub fn default_action(mut self, action: Action) -> Self {
        self.default_action = action;
        self
    }

    /// The HMAC key for the `hash` action.
    #[must_use]
    pub fn hash_key(mut self, key: HashKey) -> Self {
        self.hash_key = key;
        self
    }

    /// Maximum JSON nesting depth; deeper content is blocked (fail closed).
    #[must_use]
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Prompt-injection heuristics on response content: `None` turns them off.
    #[must_use]
    pub fn injection(mut self, action: Option<(InjectionAction, f32)>) -> Self {
        self.injection = action.map(|(action, threshold)| {
            Arc::new(InjectionConfig {
                detector: InjectionDetector::new(),
                action,
                threshold,
            })
        });
        self
    }

    /// The detectors.
    pub fn detectors(&self) -> &Detectors {
        &self.detectors
    }

    /// The rule and action for a match of `kind` in `scope`.
    pub fn action_for(&self, kind: &str, scope: &Scope<'_>) -> (Arc<str>, &Action) {
        for r in self.rules.iter() {
            if r.applies(kind, scope) {
                return (r.name.clone(), &r.action);
            }
        }
        (Arc::from(DEFAULT_RULE), &self.default_action)
    }

    /// Scans bytes; returns the matches with the action each gets.
    pub fn findings<'s>(&'s self, text: &[u8], scope: &Scope<'_>) -> Vec<(Match, &'s Action)> {
        let mut out = Vec::new();
        self.detectors.scan(text, 0..text.len(), |m| {
            let (_, a) = self.action_for(self.detectors.kind(m.detector), scope);
            out.push((m, a));
        });
        out
    }

    /// Scans bytes and rewrites them: appends the result to `out` when anything was rewritten
    /// and returns `true`; leaves `out` untouched and returns `false` otherwise.
    pub fn rewrite_bytes(
        &self,
        text: &[u8],
        scope: &Scope<'_>,
        report: &mut Report,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut matches: Vec<(Match, Arc<str>, &Action)> = Vec::new();
        self.detectors.scan(text, 0..text.len(), |m| {
            let (rule, a) = self.action_for(self.detectors.kind(m.detector), scope);
            matches.push((m, rule, a));
        });
        self.apply(text, matches, report, out)
    }

    fn apply(
        &self,
        text: &[u8],
        matches: Vec<(Match, Arc<str>, &Action)>,
        report: &mut Report,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut rewrite = false;
        for (m, rule, a) in &matches {
            let kind = self.detectors.kind(m.detector);
            if **a == Action::Allow {
                continue;
            }
            let kind_arc: Arc<str> = Arc::from(kind);
            report.add(&kind_arc, rule, a.name());
            if **a == Action::Block && report.block.is_none() {
                report.block = Some(Block {
                    rule: rule.to_string(),
                    kind: Some(kind.to_string()),
                    message: format!(
                        "blocked by DLP rule `{rule}`: content matched detector `{kind}`"
                    ),
                });
            }
            rewrite |= a.rewrites();
        }
        if !rewrite {
            return false;
        }
        let start_len = out.len();
        out.reserve(text.len());
        let mut last = 0;
        for (m, _, a) in &matches {
            if !a.rewrites() {
                continue;
            }
            let (s, e) = char_bounds(text, m.start, m.end);
            if s < last {
                continue;
            }
            out.extend_from_slice(&text[last..s]);
            a.write_replacement(
                self.detectors.kind(m.detector),
                &text[s..e],
                &self.hash_key,
                out,
            );
            last = e;
        }
        out.extend_from_slice(&text[last..]);
        report.modified = true;
        out.len() != start_len || !text.is_empty()
    }

    /// Scans and rewrites a string. Returns the rewritten text when anything changed.
    pub fn scan_str<'t>(
        &self,
        text: &'t str,
        scope: &Scope<'_>,
        report: &mut Report,
    ) -> Cow<'t, str> {
        let mut out = Vec::new();
        if self.rewrite_bytes(text.as_bytes(), scope, report, &mut out) {
            // replacements are UTF-8 and cuts are on char boundaries, so this cannot fail; fall
            // back to a lossy conversion rather than panic
            match String::from_utf8(out) {
                Ok(s) => Cow::Owned(s),
                Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
            }
        } else {
            Cow::Borrowed(text)
        }
    }

    /// Scans a JSON value in place: strings are rewritten (they stay strings), numbers that match
    /// a rewriting rule become `0` (they stay numbers), object keys are rewritten too. Content
    /// nested deeper than the depth limit blocks the message.
    pub fn scan_value(&self, value: &mut Value, scope: &Scope<'_>) -> Report {
        let mut report = Report::default();
        let inj = self.injection_for(scope);
        self.walk(value, scope, &mut report, inj, 0);
        self.injection_verdict(&mut report, inj);
        report
    }

    /// Scans a params object in place, skipping `_meta` and the routing fields (`name` of
    /// `tools/call` and `prompts/get`, `uri` of `resources/read`).
    pub fn scan_params(&self, params: &mut Map<String, Value>, scope: &Scope<'_>) -> Report {
        let mut report = Report::default();
        let inj = self.injection_for(scope);
        for (k, v) in params.iter_mut() {
            if k == "_meta" || k == "name" || k == "uri" || k == "cursor" || k == "progressToken" {
                continue;
            }
            self.walk(v, scope, &mut report, inj, 1);
        }
        self.injection_verdict(&mut report, inj);
        report
    }

    fn injection_for(&self, scope: &Scope<'_>) -> Option<&InjectionConfig> {
        match scope.direction {
            Direction::Response => self.injection.as_deref(),
            Direction::Request => None,
        }
    }

    fn injection_verdict(&self, report: &mut Report, inj: Option<&InjectionConfig>) {
        let Some(cfg) = inj else { return };
        if report.injection.is_empty() {
            return;
        }
        let blocking =
            cfg.action == InjectionAction::Block && report.injection.score >= cfg.threshold;
        let kind: Arc<str> = Arc::from("prompt_injection");
        let rule: Arc<str> = Arc::from("injection");
        report.add(&kind, &rule, if blocking { "block" } else { "warn" });
        if blocking && report.block.is_none() {
            report.block = Some(Block {
                rule: "injection".into(),
                kind: Some("prompt_injection".into()),
                message: format!(
                    "blocked by DLP rule `injection`: prompt-injection score {:.2} (signals: {})",
                    report.injection.score,
                    report
                        .injection
                        .signals
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }

    fn walk(
        &self,
        v: &mut Value,
        scope: &Scope<'_>,
        report: &mut Report,
        inj: Option<&InjectionConfig>,
        depth: usize,
    ) {
        if depth > self.max_depth {
            if report.block.is_none() {
                report.block = Some(Block {
                    rule: "dlp:max_depth".into(),
                    kind: None,
                    message: format!(
                        "blocked by DLP: content nested deeper than {} levels cannot be scanned",
                        self.max_depth
                    ),
                });
            }
            return;
        }
        match v {
            Value::String(s) => {
                let mut out = Vec::new();
                if self.rewrite_bytes(s.as_bytes(), scope, report, &mut out) {
                    match String::from_utf8(out) {
                        Ok(new) => *s = new,
                        Err(e) => *s = String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    }
                }
                if let Some(cfg) = inj {
                    let r = cfg.detector.scan(s.as_bytes());
                    if !r.is_empty() {
                        report.injection.merge(&r);
                    }
                }
            }
            Value::Number(n) => {
                let text = n.to_string();
                let mut out = Vec::new();
                if self.rewrite_bytes(text.as_bytes(), scope, report, &mut out) {
                    *v = Value::Number(0.into());
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, scope, report, inj, depth + 1);
                }
            }
            Value::Object(map) => {
                let binary = matches!(
                    map.get("type").and_then(Value::as_str),
                    Some("image" | "audio")
                );
                let mut renamed: Vec<(String, String)> = Vec::new();
                for (k, item) in map.iter_mut() {
                    if k == "_meta" || k == "blob" || k == "mimeType" || binary && k == "data" {
                        continue;
                    }
                    let mut out = Vec::new();
                    if self.rewrite_bytes(k.as_bytes(), scope, report, &mut out)
                        && let Ok(new) = String::from_utf8(out)
                    {
                        renamed.push((k.clone(), new));
                    }
                    self.walk(item, scope, report, inj, depth + 1);
                }
                for (old, mut new) in renamed {
                    if let Some(val) = map.remove(&old) {
                        let base = new.clone();
                        let mut n = 2;
                        while map.contains_key(&new) {
                            new = format!("{base}#{n}");
                            n += 1;
                        }
                        map.insert(new, val);
                    }
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
}

/// Widens `[s, e)` to UTF-8 character boundaries (custom patterns may cut inside a character).
fn char_bounds(text: &[u8], mut s: usize, mut e: usize) -> (usize, usize) {
    let is_cont = |b: u8| b & 0xC0 == 0x80;
    while s > 0 && s < text.len() && is_cont(text[s]) {
        s -= 1;
    }
    while e < text.len() && is_cont(text[e]) {
        e += 1;
    }
    (s, e.min(text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req() -> Scope<'static> {
        Scope::direction(Direction::Request)
    }

    #[test]
    fn redacts_strings_and_keeps_types() {
        let s = Scanner::default();
        let mut v = json!({"a": "mail john@example.com", "n": 4111111111111111u64, "ok": true, "arr": [1, "x"]});
        let r = s.scan_value(&mut v, &req());
        assert_eq!(v["a"], "mail [REDACTED:email]");
        assert_eq!(v["n"], 0);
        assert_eq!(v["ok"], true);
        assert!(r.modified);
        assert_eq!(r.findings.len(), 2);
    }

    #[test]
    fn block_names_rule_not_data() {
        let s = Scanner::default()
            .rule(Rule::new("no-keys", Action::Block).detectors(["aws_access_key"]));
        let mut v = json!({"k": "AKIAIOSFODNN7EXAMPLE"});
        let r = s.scan_value(&mut v, &req());
        let b = r.block.expect("blocked");
        assert_eq!(b.rule, "no-keys");
        assert!(!b.message.contains("AKIA"));
    }

    #[test]
    fn depth_limit_blocks() {
        let s = Scanner::default().max_depth(8);
        let mut v = json!("x");
        for _ in 0..20 {
            v = json!([v]);
        }
        let r = s.scan_value(&mut v, &req());
        assert_eq!(r.block.map(|b| b.rule), Some("dlp:max_depth".to_string()));
    }

    #[test]
    fn image_data_is_not_scanned() {
        let s = Scanner::default();
        let blob = "aZ3kQ9xP2mL7vB1nR5tY8wE4uI6oP0aSdFgHjKlZxCvBnM";
        let mut v = json!({"type": "image", "data": blob, "mimeType": "image/png"});
        let r = s.scan_value(&mut v, &Scope::direction(Direction::Response));
        assert!(r.is_clean());
        assert_eq!(v["data"], blob);
    }
}

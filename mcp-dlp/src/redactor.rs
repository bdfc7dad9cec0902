//! [`Redactor`]: the DLP engine as a plain API, for audit records and logs.

use std::borrow::Cow;

use mcp_gateway_core::Direction;
use serde_json::Value;

use crate::{
    action::{Action, Scope},
    detector::Detectors,
    scan::{Report, Scanner},
};

/// Scrubs secrets and personal data from text and JSON with the same detectors as the layer:
/// every match becomes `[REDACTED:<kind>]` (or what the configured action says, except `block`,
/// which redacts). Cheap to clone; share one.
#[derive(Debug, Clone)]
pub struct Redactor {
    scanner: Scanner,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new()
    }
}

impl Redactor {
    /// All built-in detectors, matches redacted.
    pub fn new() -> Self {
        Self::with_detectors(Detectors::builtin())
    }

    /// A redactor over a detector set (e.g. with custom detectors).
    pub fn with_detectors(detectors: Detectors) -> Self {
        Self {
            scanner: Scanner::new(detectors)
                .default_action(Action::Redact)
                .injection(None)
                .max_depth(usize::MAX),
        }
    }

    /// A redactor that shares a layer's scanner: same detectors, same actions for the
    /// `request` direction, except that `block` and `warn` redact.
    pub fn from_scanner(scanner: &Scanner) -> Self {
        let mut scanner = scanner.clone().injection(None).max_depth(usize::MAX);
        let rules: Vec<_> = scanner
            .rules
            .iter()
            .cloned()
            .map(|mut r| {
                if matches!(r.action, Action::Block | Action::Warn) {
                    r.action = Action::Redact;
                }
                r
            })
            .collect();
        scanner.rules = rules.into();
        if matches!(
            scanner.default_action,
            Action::Block | Action::Warn | Action::Allow
        ) {
            scanner.default_action = Action::Redact;
        }
        Self { scanner }
    }

    fn scope() -> Scope<'static> {
        Scope::direction(Direction::Request)
    }

    /// Redacts a string; borrows when nothing matched.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut report = Report::default();
        self.scanner.scan_str(text, &Self::scope(), &mut report)
    }

    /// Redacts bytes (need not be UTF-8); borrows when nothing matched.
    pub fn redact_bytes<'t>(&self, bytes: &'t [u8]) -> Cow<'t, [u8]> {
        let mut report = Report::default();
        let mut out = Vec::new();
        if self
            .scanner
            .rewrite_bytes(bytes, &Self::scope(), &mut report, &mut out)
        {
            Cow::Owned(out)
        } else {
            Cow::Borrowed(bytes)
        }
    }

    /// Redacts a JSON value in place (strings stay strings); returns how many matches.
    pub fn redact_value(&self, value: &mut Value) -> u32 {
        let report = self.scanner.scan_value(value, &Self::scope());
        report.findings.iter().map(|f| f.count).sum()
    }

    /// Whether the text holds anything the detectors find.
    pub fn contains_sensitive(&self, text: &[u8]) -> bool {
        self.scanner.detectors().is_match(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_and_borrows_clean_text() {
        let r = Redactor::new();
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
        assert_eq!(
            r.redact("key AKIAIOSFODNN7EXAMPLE for bob@corp.example.org"),
            "key [REDACTED:aws_access_key] for [REDACTED:email]"
        );
        assert_eq!(
            r.redact_bytes(b"\xff\xfe ip 10.0.0.1 \xff").as_ref(),
            b"\xff\xfe ip [REDACTED:ipv4] \xff"
        );
    }
}

//! Detectors and the multi-pattern engine that runs all of them in one pass.
//!
//! Every detector is a regular expression plus an optional validator and optional context words.
//! All patterns are compiled into **one** `regex_automata::meta::Regex` (`new_many`), so a scan
//! walks the text once whatever the number of detectors. A candidate match is then checked by its
//! detector's validator (Luhn, IBAN mod-97, entropy, ...). When a validator rejects a candidate,
//! the other detectors are tried anchored at the same position (so a rejected card number can still
//! be a phone number) and the scan resumes after the candidate.
//!
//! ## Why matching stays linear
//! `regex-automata` has no backtracking: the meta regex runs a lazy DFA (built on the fly, bounded
//! cache) or, when the cache thrashes, a PikeVM; both take time linear in the input whatever the
//! pattern (no catastrophic backtracking on `(a+)+$`). Look-around and back-references are not
//! supported, so a pattern cannot ask for super-linear work. What a pattern *can* cost is automaton
//! size (e.g. `\w{1000}` with Unicode): custom patterns are therefore limited in length and in
//! compiled NFA size ([`DetectorsBuilder::size_limit`]), with a clear error when over it.
//! Patterns are byte-oriented and ASCII (Unicode classes off) so the DFA never gives up on
//! non-ASCII text and invalid UTF-8 is scanned like any other bytes.
//!
//! ## Skipping clean text
//! Running the automaton over every byte costs a DFA transition per byte. Instead, a prefilter
//! finds where a built-in detector *can* start from anchors every match needs: a dense cluster
//! of digits (cards, SSNs, phones, IPv4, IBAN), `@` (e-mail), `:` (IPv6, Slack webhooks), a run of
//! 20 or more token bytes (API tokens, generic and AWS secrets), `eyJ` (JWT) and `-----BEGIN`
//! (PEM). It classifies 32 bytes at a time with vectorized byte compares, so prose without
//! such anchors costs a few instructions per 32 bytes. The automaton then runs anchored at the candidate positions only;
//! custom detectors are located by an automaton of their own. The findings are exactly those of
//! an unanchored scan ([`DetectorsBuilder::prefilter`] turns the prefilter off to compare).

use std::{fmt, sync::Arc};

use regex_automata::{
    Anchored, Input, MatchKind,
    meta::{self, Regex},
    util::syntax,
};
use serde::{Deserialize, Serialize};

use crate::{
    prefilter::{Finder, Prefilter},
    validate,
};

/// A validator applied to a candidate match before it counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Validator {
    /// No check: every match counts.
    #[default]
    None,
    /// Payment card: known network prefix and length, Luhn checksum.
    Luhn,
    /// IBAN: known country, registry length, ISO 7064 mod 97-10.
    Iban,
    /// Shannon entropy of the match at least the detector's `min_entropy` (bits per byte) and a
    /// mix of letters and digits.
    Entropy,
    /// US social security number rules (area, group, serial).
    Ssn,
    /// Phone: 8 to 15 digits, not glued to other digits.
    Phone,
    /// IPv4: not part of a longer dotted sequence.
    Ipv4,
    /// IPv6: parses as an address.
    Ipv6,
    /// JWT: the header decodes to a JSON object with `alg`.
    Jwt,
}

/// Which neighbouring bytes make a match invalid (the match must not be glued to them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Boundary {
    /// No check.
    #[default]
    None,
    /// ASCII letters, digits, `_`.
    Word,
    /// Token characters: letters, digits, `_`, `-`.
    Token,
    /// Base64 characters: letters, digits, `+`, `/`, `=`, `_`, `-`.
    Base64,
}

impl Boundary {
    fn glued(self, b: u8) -> bool {
        match self {
            Boundary::None => false,
            Boundary::Word => b.is_ascii_alphanumeric() || b == b'_',
            Boundary::Token => b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
            Boundary::Base64 => b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'-'),
        }
    }
}

/// One detector: a kind name, a pattern, a validator and optional context words.
#[derive(Clone)]
pub struct Detector {
    pub(crate) kind: Arc<str>,
    pub(crate) pattern: String,
    pub(crate) validator: Validator,
    pub(crate) min_entropy: f64,
    pub(crate) context: Vec<String>,
    pub(crate) require_context: bool,
    pub(crate) context_window: usize,
    pub(crate) boundary: Boundary,
    pub(crate) case_insensitive: bool,
    pub(crate) builtin: bool,
    pub(crate) strict_mix: bool,
}

impl fmt::Debug for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detector")
            .field("kind", &self.kind)
            .field("validator", &self.validator)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// A detector of `kind` matching `pattern` (regex-automata syntax, ASCII, byte-oriented).
    pub fn new(kind: impl Into<Arc<str>>, pattern: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            pattern: pattern.into(),
            validator: Validator::None,
            min_entropy: 3.5,
            context: Vec::new(),
            require_context: false,
            context_window: 48,
            boundary: Boundary::None,
            case_insensitive: false,
            builtin: false,
            strict_mix: false,
        }
    }

    /// The detector's kind (e.g. `email`), used in findings, rules and redaction markers.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Sets the validator.
    #[must_use]
    pub fn validator(mut self, v: Validator) -> Self {
        self.validator = v;
        self
    }

    /// Minimum Shannon entropy (bits per byte) for [`Validator::Entropy`].
    #[must_use]
    pub fn min_entropy(mut self, bits: f64) -> Self {
        self.min_entropy = bits;
        self
    }

    /// Context words looked for (case-insensitively) within the context window around a match.
    #[must_use]
    pub fn context<I, W>(mut self, words: I) -> Self
    where
        I: IntoIterator<Item = W>,
        W: AsRef<str>,
    {
        self.context = words
            .into_iter()
            .map(|w| w.as_ref().to_ascii_lowercase())
            .filter(|w| !w.is_empty())
            .collect();
        self
    }

    /// Whether a match counts only when a context word is near it (default: context words only
    /// lower the entropy bar by 1 bit).
    #[must_use]
    pub fn require_context(mut self, yes: bool) -> Self {
        self.require_context = yes;
        self
    }

    /// How many bytes before and after a match are searched for context words (default 48).
    #[must_use]
    pub fn context_window(mut self, bytes: usize) -> Self {
        self.context_window = bytes;
        self
    }

    #[must_use]
    fn boundary(mut self, b: Boundary) -> Self {
        self.boundary = b;
        self
    }

    /// Case-insensitive (ASCII) matching.
    #[must_use]
    pub fn case_insensitive(mut self) -> Self {
        self.case_insensitive = true;
        self
    }

    /// Checks a candidate `hay[start..end]`; returns the accepted end (validators may trim).
    fn check(&self, hay: &[u8], start: usize, end: usize) -> Option<usize> {
        if start >= end {
            return None;
        }
        if start > 0 && self.boundary.glued(hay[start - 1]) {
            return None;
        }
        let end = match self.validator {
            Validator::None => end,
            Validator::Luhn => validate::card(hay, start, end)?,
            Validator::Iban => validate::iban(hay, start, end)?,
            Validator::Ssn => validate::ssn(hay, start, end)?,
            Validator::Phone => validate::phone(hay, start, end)?,
            Validator::Ipv4 => validate::ipv4(hay, start, end)?,
            Validator::Ipv6 => validate::ipv6(hay, start, end)?,
            Validator::Jwt => validate::jwt(hay, start, end)?,
            Validator::Entropy => end,
        };
        if hay.get(end).is_some_and(|&b| self.boundary.glued(b)) {
            return None;
        }
        let context = if self.context.is_empty() {
            false
        } else {
            let lo = start.saturating_sub(self.context_window);
            let hi = end.saturating_add(self.context_window).min(hay.len());
            validate::has_context(&hay[lo..start], &self.context)
                || validate::has_context(&hay[end..hi], &self.context)
        };
        if self.require_context && !context {
            return None;
        }
        if self.validator == Validator::Entropy {
            let text = &hay[start..end];
            let (lower, upper, digit) = validate::mix(text);
            let bar = if context {
                self.min_entropy - 1.0
            } else {
                self.min_entropy
            };
            let mixed = if context && !self.strict_mix {
                digit && (lower || upper)
            } else {
                digit && lower && upper
            };
            if !mixed || validate::entropy(text) < bar {
                return None;
            }
        }
        Some(end)
    }
}

/// The built-in detectors, in priority order (earlier wins when two match at the same place).
pub fn builtin() -> Vec<Detector> {
    use Boundary::*;
    vec![
        Detector::new(
            "private_key",
            r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----(?:(?:\s|\\[nr])+[A-Za-z0-9+/=:,]{4,})*(?:(?:\s|\\[nr])*-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----)?",
        ),
        Detector::new(
            "jwt",
            r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
        )
        .validator(Validator::Jwt)
        .boundary(Token),
        Detector::new(
            "anthropic_key",
            r"sk-ant-(?:api|admin|oat|sid)[0-9]{2}-[A-Za-z0-9_-]{80,120}",
        )
        .boundary(Token),
        Detector::new(
            "openai_key",
            r"sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{40,200}|sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|sk-[A-Za-z0-9]{48}",
        )
        .boundary(Token),
        Detector::new(
            "github_token",
            r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82}",
        )
        .boundary(Token),
        Detector::new("gitlab_token", r"glpat-[A-Za-z0-9_-]{20}").boundary(Token),
        Detector::new(
            "slack_token",
            r"xox[baprse]-[0-9]{8,13}-[0-9A-Za-z-]{8,72}|https://hooks\.slack\.com/services/T[A-Z0-9]{8,12}/B[A-Z0-9]{8,12}/[A-Za-z0-9]{24}",
        )
        .boundary(Token),
        Detector::new("stripe_key", r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{24,99}").boundary(Token),
        Detector::new("google_api_key", r"AIza[0-9A-Za-z_-]{35}").boundary(Token),
        Detector::new(
            "aws_access_key",
            r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z2-7]{16}",
        )
        .boundary(Word),
        Detector::new(
            "iban",
            r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}",
        )
        .validator(Validator::Iban)
        .boundary(Word),
        Detector::new("credit_card", r"[0-9](?:[ -]?[0-9]){12,18}")
            .validator(Validator::Luhn)
            .boundary(Word),
        Detector::new("ssn", r"[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4}")
            .validator(Validator::Ssn)
            .boundary(Word),
        Detector::new(
            "phone",
            concat!(
                // E.164 and international forms: +CC then 7-14 more digits with separators
                r"\+[1-9](?:[ .-]?\(?[0-9]\)?){7,14}",
                // NANP: (555) 123-4567, 555-123-4567, 555.123.4567
                r"|\([2-9][0-9]{2}\) ?[2-9][0-9]{2}[-. ][0-9]{4}",
                r"|[2-9][0-9]{2}[-. ][2-9][0-9]{2}[-. ][0-9]{4}",
                // UK / DE style trunk prefix 0: 020 7946 0958, 030 1234 5678
                r"|0[1-9][0-9]{1,3}[ -][0-9]{3,4}[ -][0-9]{3,4}",
                // FR: 01 23 45 67 89
                r"|0[1-9](?:[ .][0-9]{2}){4}",
            ),
        )
        .validator(Validator::Phone),
        Detector::new(
            "ipv4",
            r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])",
        )
        .validator(Validator::Ipv4),
        Detector::new("ipv6", r"(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}")
            .validator(Validator::Ipv6),
        Detector::new(
            "email",
            r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?){0,8}\.[A-Za-z]{2,24}",
        )
        .boundary(Word),
        Detector::new("generic_secret", r"[A-Za-z0-9+/_-]{32,}={0,2}")
            .validator(Validator::Entropy)
            .min_entropy(4.0)
            .context([
                "secret", "token", "apikey", "api_key", "api-key", "password", "passwd",
                "credential", "private", "bearer", "auth",
            ])
            .boundary(Base64),
        Detector {
            strict_mix: true,
            ..Detector::new("aws_secret_key", r"[A-Za-z0-9/+]{40}")
        }
            .validator(Validator::Entropy)
            .min_entropy(4.2)
            .context(["aws", "secret_access", "secret-access", "secretaccess"])
            .require_context(true)
            .context_window(64)
            .boundary(Base64),
    ]
    .into_iter()
    .map(|mut d| {
        d.builtin = true;
        d
    })
    .collect()
}

/// File extensions that look like top-level domains in `name@2x.png` style strings.
const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "js", "mjs", "ts", "tsx", "jsx",
    "css", "scss", "py", "rs", "go", "java", "json", "yaml", "yml", "toml", "txt", "md", "html",
    "htm", "xml", "pdf", "zip", "gz", "tar", "lock", "sh", "rb", "php", "vue", "map", "wasm",
];

/// Errors building a detector set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A custom pattern is longer than the configured limit.
    #[error("detector `{kind}`: pattern is {len} bytes, over the limit of {limit} bytes")]
    PatternTooLong {
        /// The detector.
        kind: String,
        /// The pattern's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A pattern does not compile, or compiles to an automaton over the size limit.
    #[error("detector `{kind}`: invalid pattern: {source}")]
    Pattern {
        /// The detector.
        kind: String,
        /// What regex-automata said.
        #[source]
        source: Box<meta::BuildError>,
    },
    /// Two detectors have the same kind.
    #[error("detector `{0}` is defined twice")]
    Duplicate(String),
    /// No detector is enabled.
    #[error("no detector is enabled")]
    Empty,
    /// A name in an enable/disable list is not a detector.
    #[error("unknown detector `{0}` (built-ins: {1})")]
    Unknown(String, String),
}

/// Builds a [`Detectors`] set.
#[derive(Debug, Clone)]
pub struct DetectorsBuilder {
    detectors: Vec<Detector>,
    max_pattern_len: usize,
    size_limit: usize,
    prefilter: bool,
}

impl Default for DetectorsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DetectorsBuilder {
    /// A builder with all built-in detectors.
    pub fn new() -> Self {
        let detectors = builtin();
        Self {
            detectors,
            max_pattern_len: 1024,
            size_limit: 1 << 20,
            prefilter: true,
        }
    }

    /// A builder with no detectors.
    pub fn empty() -> Self {
        Self {
            detectors: Vec::new(),
            max_pattern_len: 1024,
            size_limit: 1 << 20,
            prefilter: true,
        }
    }

    /// Keeps only the built-ins for which `keep` returns true.
    #[must_use]
    pub fn retain(mut self, keep: impl Fn(&str) -> bool) -> Self {
        self.detectors.retain(|d| !d.builtin || keep(&d.kind));
        self
    }

    /// Adds a custom detector (checked against the size limits at [`build`](Self::build)).
    /// Custom detectors rank after the built-in secret and PII detectors but before
    /// `generic_secret`.
    #[must_use]
    pub fn detector(mut self, d: Detector) -> Self {
        self.detectors.push(d);
        self
    }

    /// Maximum length of a custom pattern in bytes (default 1024).
    #[must_use]
    pub fn max_pattern_len(mut self, bytes: usize) -> Self {
        self.max_pattern_len = bytes;
        self
    }

    /// Maximum compiled size of a custom pattern's automaton in bytes (default 1 MiB).
    #[must_use]
    pub fn size_limit(mut self, bytes: usize) -> Self {
        self.size_limit = bytes;
        self
    }

    /// Whether scans skip text where no detector can start (default on; see
    /// [`Detectors::scan`]). Off, every scan runs the automaton over every byte: the findings are
    /// the same, only slower (kept for comparison in tests and benchmarks).
    #[must_use]
    pub fn prefilter(mut self, on: bool) -> Self {
        self.prefilter = on;
        self
    }

    /// Compiles all detectors into one automaton.
    pub fn build(self) -> Result<Detectors, BuildError> {
        let mut detectors = self.detectors;
        if detectors.is_empty() {
            return Err(BuildError::Empty);
        }
        // keep generic_secret (the catch-all) and aws_secret_key (decided through it) last
        for kind in ["generic_secret", "aws_secret_key"] {
            if let Some(pos) = detectors
                .iter()
                .position(|d| d.builtin && d.kind.as_ref() == kind)
            {
                let g = detectors.remove(pos);
                detectors.push(g);
            }
        }
        let mut seen = std::collections::HashSet::new();
        for d in &detectors {
            if !seen.insert(d.kind.clone()) {
                return Err(BuildError::Duplicate(d.kind.to_string()));
            }
            if !d.builtin {
                if d.pattern.len() > self.max_pattern_len {
                    return Err(BuildError::PatternTooLong {
                        kind: d.kind.to_string(),
                        len: d.pattern.len(),
                        limit: self.max_pattern_len,
                    });
                }
                // compile alone first so the error names the detector
                compile(&[d], self.size_limit).map_err(|e| BuildError::Pattern {
                    kind: d.kind.to_string(),
                    source: e,
                })?;
            }
        }
        let refs: Vec<&Detector> = detectors.iter().collect();
        let regex =
            compile(&refs, self.size_limit.max(64 << 20)).map_err(|e| BuildError::Pattern {
                kind: "(all detectors)".into(),
                source: e,
            })?;
        let aws_secret = detectors
            .iter()
            .position(|d| d.builtin && d.kind.as_ref() == "aws_secret_key");
        let prefilter = if self.prefilter {
            let customs: Vec<&Detector> = detectors.iter().filter(|d| !d.builtin).collect();
            let custom = if customs.is_empty() {
                None
            } else {
                Some(
                    compile(&customs, self.size_limit.max(64 << 20)).map_err(|e| {
                        BuildError::Pattern {
                            kind: "(custom detectors)".into(),
                            source: e,
                        }
                    })?,
                )
            };
            Some(Prefilter::new(detectors.iter().any(|d| d.builtin), custom))
        } else {
            None
        };
        Ok(Detectors {
            inner: Arc::new(Inner {
                regex,
                detectors,
                aws_secret,
                prefilter,
            }),
        })
    }
}

fn compile(detectors: &[&Detector], size_limit: usize) -> Result<Regex, Box<meta::BuildError>> {
    let patterns: Vec<String> = detectors
        .iter()
        .map(|d| {
            if d.case_insensitive {
                format!("(?i:{})", d.pattern)
            } else {
                d.pattern.clone()
            }
        })
        .collect();
    Regex::builder()
        .configure(
            meta::Config::new()
                .match_kind(MatchKind::LeftmostFirst)
                .utf8_empty(false)
                .nfa_size_limit(Some(size_limit))
                .hybrid_cache_capacity(8 << 20),
        )
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .build_many(&patterns)
        .map_err(Box::new)
}

/// A match found by a [`Detectors`] scan: byte offsets into the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Index of the detector in [`Detectors::detectors`].
    pub detector: usize,
    /// Start byte offset (inclusive).
    pub start: usize,
    /// End byte offset (exclusive).
    pub end: usize,
}

struct Inner {
    regex: Regex,
    detectors: Vec<Detector>,
    aws_secret: Option<usize>,
    prefilter: Option<Prefilter>,
}

/// The most bytes a retry (another detector tried at a rejected candidate's start) may read.
const RETRY_SPAN: usize = 1024;

/// A compiled set of detectors: one automaton for all of them. Cheap to clone.
#[derive(Clone)]
pub struct Detectors {
    inner: Arc<Inner>,
}

impl fmt::Debug for Detectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.inner.detectors.iter().map(|d| &d.kind))
            .finish()
    }
}

impl Default for Detectors {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Detectors {
    /// All built-in detectors.
    pub fn builtin() -> Self {
        // The built-in patterns are constants tested below; a failure here is a bug in this crate.
        #[allow(clippy::expect_used)]
        DetectorsBuilder::new()
            .build()
            .expect("built-in detectors compile")
    }

    /// A builder (built-ins included; see [`DetectorsBuilder::empty`]).
    pub fn builder() -> DetectorsBuilder {
        DetectorsBuilder::new()
    }

    /// The detectors, in priority order.
    pub fn detectors(&self) -> &[Detector] {
        &self.inner.detectors
    }

    /// The kind of detector `i`.
    pub fn kind(&self, i: usize) -> &str {
        self.inner.detectors.get(i).map_or("unknown", |d| &d.kind)
    }

    /// The index of the detector of `kind`.
    pub fn index_of(&self, kind: &str) -> Option<usize> {
        self.inner
            .detectors
            .iter()
            .position(|d| d.kind.as_ref() == kind)
    }

    /// All validated matches in `hay`, left to right, non-overlapping.
    pub fn find_all(&self, hay: &[u8]) -> Vec<Match> {
        let mut out = Vec::new();
        self.scan(hay, 0..hay.len(), |m| out.push(m));
        out
    }

    /// Whether `hay` holds any validated match.
    pub fn is_match(&self, hay: &[u8]) -> bool {
        let mut any = false;
        self.scan(hay, 0..hay.len(), |_| any = true);
        any
    }

    /// Scans `hay[span]` (bytes outside the span are seen as context and boundaries only) and
    /// calls `f` for each validated match, left to right, non-overlapping.
    ///
    /// The automaton runs anchored, only at the positions where a detector can start (see
    /// "Skipping clean text" in the [module docs](self)); everywhere else the text is skipped
    /// eight bytes at a time. The findings are those of one unanchored leftmost-first search
    /// after another.
    pub fn scan(&self, hay: &[u8], span: std::ops::Range<usize>, mut f: impl FnMut(Match)) {
        let inner = &*self.inner;
        let end = span.end.min(hay.len());
        let mut at = span.start.min(end);
        let Some(pre) = &inner.prefilter else {
            return self.scan_unfiltered(hay, at, end, f);
        };
        let mut finder = Finder::new(pre, hay, at, end);
        while at < end {
            let Some(s) = finder.next(at).filter(|&s| s < end) else {
                break;
            };
            let input = Input::new(hay).span(s..end).anchored(Anchored::Yes);
            match inner.regex.search(&input) {
                Some(m) => at = self.resolve(hay, m, end, &mut f),
                None => {
                    finder.failed(s);
                    at = s + 1;
                }
            }
        }
    }

    /// [`scan`](Self::scan) without the prefilter: one unanchored search after another.
    fn scan_unfiltered(&self, hay: &[u8], mut at: usize, end: usize, mut f: impl FnMut(Match)) {
        while at < end {
            let input = Input::new(hay).span(at..end);
            let Some(m) = self.inner.regex.search(&input) else {
                break;
            };
            at = self.resolve(hay, m, end, &mut f);
        }
    }

    /// Validates the leftmost candidate `m`, reports what is accepted and returns where the scan
    /// resumes.
    fn resolve(
        &self,
        hay: &[u8],
        m: regex_automata::Match,
        end: usize,
        f: &mut impl FnMut(Match),
    ) -> usize {
        let inner = &*self.inner;
        let (s, e, pid) = (m.start(), m.end(), m.pattern().as_usize());
        if let Some(found) = self.accept(hay, pid, s, e, end) {
            f(found);
            return found.end.max(s + 1);
        }
        // the leftmost candidate was rejected: try the other detectors anchored here
        // leftmost-first: detectors ranked before `pid` do not match at `s` (they would have
        // won), so only the ones ranked after it can
        for other in pid + 1..inner.detectors.len() {
            let Ok(p) = regex_automata::PatternID::try_from(other) else {
                continue;
            };
            // bounded: a retry never rescans more than RETRY_SPAN bytes, which keeps the
            // whole scan linear on adversarial input (e.g. megabytes of `1-1-1-...`)
            let anchored = Input::new(hay)
                .span(s..end.min(s.saturating_add(RETRY_SPAN)))
                .anchored(Anchored::Pattern(p));
            if let Some(m2) = inner.regex.search(&anchored)
                && let Some(found) = self.accept(hay, other, m2.start(), m2.end(), end)
            {
                f(found);
                return found.end.max(s + 1);
            }
        }
        e.max(s + 1)
    }

    fn accept(&self, hay: &[u8], pid: usize, s: usize, e: usize, limit: usize) -> Option<Match> {
        let d = self.inner.detectors.get(pid)?;
        let mut e = d.check(hay, s, e)?;
        e = e.min(limit);
        // an AWS secret key is a 40-character generic secret with AWS context: the generic
        // detector ranks first (so long base64 runs are not cut at 40), then the AWS check
        // decides the kind
        if let Some(aws) = self.inner.aws_secret
            && d.kind.as_ref() == "generic_secret"
            && e - s == 40
            && self.inner.detectors[aws].check(hay, s, e) == Some(e)
        {
            return Some(Match {
                detector: aws,
                start: s,
                end: e,
            });
        }
        if d.kind.as_ref() == "email" && !email_ok(&hay[s..e]) {
            return None;
        }
        if d.builtin && d.kind.as_ref() == "generic_secret" && public_blob(&hay[s..e]) {
            return None;
        }
        Some(Match {
            detector: pid,
            start: s,
            end: e,
        })
    }
}

/// Base64 that is public by design: DER certificates and public keys (`MII…`, `MFkw…`, `MCow…`)
/// and Stripe publishable keys.
fn public_blob(text: &[u8]) -> bool {
    [
        &b"MII"[..],
        b"MFkw",
        b"MFYw",
        b"MCow",
        b"MHYw",
        b"pk_live_",
        b"pk_test_",
    ]
    .iter()
    .any(|p| text.starts_with(p))
}

fn email_ok(text: &[u8]) -> bool {
    let Some(dot) = memchr::memrchr(b'.', text) else {
        return false;
    };
    let tld = &text[dot + 1..];
    let Some(at) = memchr::memchr(b'@', text) else {
        return false;
    };
    // local part must not start or end with a dot
    if text[0] == b'.' || text[at - 1] == b'.' {
        return false;
    }
    !FILE_EXTENSIONS
        .iter()
        .any(|ext| ext.as_bytes().eq_ignore_ascii_case(tld))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(String, String)> {
        let d = Detectors::builtin();
        d.find_all(text.as_bytes())
            .into_iter()
            .map(|m| {
                (
                    d.kind(m.detector).to_string(),
                    text[m.start..m.end].to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn finds_each_builtin() {
        let cases = [
            (
                "mail me at john.doe@example.com today",
                "email",
                "john.doe@example.com",
            ),
            ("call +1 (415) 555-2671 now", "phone", "+1 (415) 555-2671"),
            ("ssn 123-45-6789.", "ssn", "123-45-6789"),
            (
                "card 4111 1111 1111 1111 exp",
                "credit_card",
                "4111 1111 1111 1111",
            ),
            (
                "iban DE89 3704 0044 0532 0130 00 EUR",
                "iban",
                "DE89 3704 0044 0532 0130 00",
            ),
            ("host 192.168.10.1 up", "ipv4", "192.168.10.1"),
            (
                "host 2001:db8::8a2e:370:7334 up",
                "ipv6",
                "2001:db8::8a2e:370:7334",
            ),
            (
                "key AKIAIOSFODNN7EXAMPLE x",
                "aws_access_key",
                "AKIAIOSFODNN7EXAMPLE",
            ),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_key",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ),
            (
                "token ghp_1A2b3C4d5E6f7G8h9I0jKlMnOpQrStUvWxYz end",
                "github_token",
                "ghp_1A2b3C4d5E6f7G8h9I0jKlMnOpQrStUvWxYz",
            ),
        ];
        for (text, kind, value) in cases {
            let found = kinds(text);
            assert_eq!(found, vec![(kind.to_string(), value.to_string())], "{text}");
        }
    }

    #[test]
    fn rejected_card_is_not_reported() {
        assert!(kinds("order 4111 1111 1111 1112 shipped").is_empty());
    }

    #[test]
    fn custom_pattern_too_long_is_a_clear_error() {
        let err = DetectorsBuilder::empty()
            .max_pattern_len(16)
            .detector(Detector::new("emp", "EMP-[0-9]{6}-[A-Z]{3}-[0-9]{4}"))
            .build()
            .err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("emp") && msg.contains("over the limit"),
            "{msg}"
        );
    }

    #[test]
    fn huge_automaton_is_refused() {
        let err = DetectorsBuilder::empty()
            .size_limit(100_000)
            .detector(Detector::new("big", "[a-z]{1000}[0-9]{1000}"))
            .build()
            .err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("big") && msg.contains("invalid pattern"),
            "{msg}"
        );
    }
}

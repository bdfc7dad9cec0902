//! Where a detector can start: a conservative candidate finder, so a scan runs the automaton
//! (anchored, a few bytes at a time) only where a match is possible and skips clean text eight
//! bytes at a time.
//!
//! Every built-in pattern needs an *anchor* at a bounded distance from its start:
//!
//! | detectors | anchor | candidate starts |
//! |---|---|---|
//! | `credit_card`, `ssn`, `phone`, `ipv4` | a cluster of digits and `[ .()-]` (at most 3 non-digits in a row) holding 8 or more digits, or 4 digits and 3 dots | every position from the cluster's first digit (or the `+` / `(` right before it) to its last digit |
//! | `iban` | two capitals then a digit | the first capital |
//! | `ipv6` | `:`, at most 4 hex digits, `:` | the hex digits before the first `:`, and the `:` |
//! | `slack_token` (webhook URL) | `https:` | the `h` |
//! | `email` | `@` between a local-part character and a letter or digit | the start of the local part, at most 64 bytes back |
//! | all tokens, `generic_secret`, `aws_secret_key` | 20 or more `[A-Za-z0-9+/_-]` in a row | every position at least 20 bytes before the run's end |
//! | `jwt` | `eyJ` followed by 24 or more `[A-Za-z0-9+/_.-]` | the `e` |
//! | `private_key` | `-----BEGIN` | the first `-` |
//!
//! The finder reads the text as little-endian `u64` words and tests a whole word at once (SWAR,
//! safe code): one range test finds digits, `:` and `@`; a run of 20 token bytes always covers a
//! whole aligned word with no byte below `+` or above `z`, so runs are looked for only in such
//! words. English prose has few of either: most words cost a dozen instructions and the automaton
//! never sees them. `-----BEGIN` is found with `memchr::memmem` (SIMD).
//!
//! Custom detectors have no known anchor: an automaton of the custom patterns alone (its own
//! literal prefilter included) finds where the next one starts.
//!
//! The finder only decides *where* to try; what matches there is decided by the same anchored
//! leftmost-first search of the one automaton, so the findings are those of an unanchored scan
//! (`tests::same_matches_as_the_unfiltered_scan` checks this on generated text).

use memchr::memmem;
use regex_automata::{Input, meta::Regex};

// === byte classes ===

const DIGIT: u8 = 1;
/// Token bytes `[A-Za-z0-9+/_-]` (tokens, generic secrets).
const TOKEN: u8 = 2;
/// Token bytes and `.` (JWTs).
const WORDISH: u8 = 4;
const HEX: u8 = 8;
/// E-mail local part `[A-Za-z0-9._%+-]`.
const LOCAL: u8 = 16;
const ALNUM: u8 = 32;
const UPPER: u8 = 64;
/// What card, SSN, phone and IPv4 matches are made of besides digits.
const NUMSEP: u8 = 128;

static CLASS: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut k = 0;
        let alnum = c.is_ascii_alphanumeric();
        if c.is_ascii_digit() {
            k |= DIGIT;
        }
        if alnum || c == b'+' || c == b'/' || c == b'_' || c == b'-' {
            k |= TOKEN | WORDISH;
        }
        if c == b'.' {
            k |= WORDISH;
        }
        if c.is_ascii_hexdigit() {
            k |= HEX;
        }
        if alnum || c == b'.' || c == b'_' || c == b'%' || c == b'+' || c == b'-' {
            k |= LOCAL;
        }
        if alnum {
            k |= ALNUM;
        }
        if c.is_ascii_uppercase() {
            k |= UPPER;
        }
        if c == b' ' || c == b'.' || c == b'-' || c == b'(' || c == b')' {
            k |= NUMSEP;
        }
        t[i] = k;
        i += 1;
    }
    t
}

fn is(b: u8, class: u8) -> bool {
    CLASS[b as usize] & class != 0
}

// === SWAR ===

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// The high bit of every byte of `x` below `n` (`n <= 128`); exact, no carries between bytes.
fn below(x: u64, n: u8) -> u64 {
    !(((x & LOW7) + ONES * (128 - u64::from(n))) | x) & HIGH
}

/// The high bit of every byte of `x` above `n` (`n < 128`).
fn above(x: u64, n: u8) -> u64 {
    (((x & LOW7) + ONES * (127 - u64::from(n))) | x) & HIGH
}

/// The word at `w`: `hay[w..w + 8]` with bytes at or past `end` read as 0.
fn word(hay: &[u8], w: usize, end: usize) -> u64 {
    match hay.get(w..w + 8) {
        Some(b) if w + 8 <= end => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        }
        _ => {
            let mut a = [0u8; 8];
            for (i, slot) in a.iter_mut().enumerate() {
                if w + i < end {
                    *slot = hay[w + i];
                }
            }
            u64::from_le_bytes(a)
        }
    }
}

// === the finder ===

/// What the finder needs from a [`Detectors`](crate::detector::Detectors) set.
#[derive(Debug)]
pub(crate) struct Prefilter {
    /// Whether any built-in detector is enabled (the anchors above are looked for).
    pub(crate) builtins: bool,
    /// The custom detectors' patterns alone, unanchored, when there are any.
    pub(crate) custom: Option<Regex>,
    pub(crate) pem: memmem::Finder<'static>,
    pub(crate) jwt: memmem::Finder<'static>,
}

impl Prefilter {
    pub(crate) fn new(builtins: bool, custom: Option<Regex>) -> Self {
        Self {
            builtins,
            custom,
            pem: memmem::Finder::new(b"-----BEGIN"),
            jwt: memmem::Finder::new(b"eyJ"),
        }
    }
}

/// Candidate starts `[start, end)`. A `once` entry (an e-mail local part) is tried at its first
/// position at or after the scan position only: if nothing matches there, nothing of its kind
/// matches further on either.
#[derive(Debug, Clone, Copy)]
struct Cand {
    start: usize,
    end: usize,
    once: bool,
}

/// Bytes scanned for anchors per step.
const BLOCK: usize = 1024;
/// How far before its anchor a candidate can start (an e-mail local part, plus a word).
const MARGIN: usize = 64 + 8;

/// The candidate starts of one scan, in increasing order, found lazily.
pub(crate) struct Finder<'a> {
    pre: &'a Prefilter,
    hay: &'a [u8],
    end: usize,
    /// Anchors below this have been looked at (a multiple of 8).
    scanned: usize,
    /// Candidates from the anchors seen, sorted by start from `head` on.
    pending: Vec<Cand>,
    head: usize,
    /// Digits below this belong to a cluster already looked at.
    cluster_end: usize,
    /// Words below this belong to a token run already looked at.
    run_end: usize,
    /// No candidate below this is wanted any more.
    floor: usize,
    /// The last custom search: where it started and the leftmost custom match start it found.
    custom: Option<(usize, Option<usize>)>,
}

impl<'a> Finder<'a> {
    pub(crate) fn new(pre: &'a Prefilter, hay: &'a [u8], start: usize, end: usize) -> Self {
        Self {
            pre,
            hay,
            end,
            scanned: if pre.builtins { start & !7 } else { end },
            pending: Vec::new(),
            head: 0,
            cluster_end: 0,
            run_end: 0,
            floor: start,
            custom: None,
        }
    }

    /// The smallest candidate start at or after `at`.
    pub(crate) fn next(&mut self, at: usize) -> Option<usize> {
        self.floor = self.floor.max(at);
        let builtin = self.next_builtin(at);
        let custom = self.next_custom(at);
        match (builtin, custom) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Nothing matched at `s` (the last candidate returned): one-shot entries there are spent.
    pub(crate) fn failed(&mut self, s: usize) {
        for c in &mut self.pending[self.head..] {
            if c.start > s {
                break;
            }
            if c.once && c.end > s {
                c.end = 0;
            }
        }
    }

    fn next_custom(&mut self, at: usize) -> Option<usize> {
        let re = self.pre.custom.as_ref()?;
        // the cached answer holds while no custom match can start in [from, at)
        if let Some((from, next)) = self.custom
            && from <= at
            && next.is_none_or(|n| n >= at)
        {
            return next;
        }
        let next = (at < self.end)
            .then(|| re.search(&Input::new(self.hay).span(at..self.end)))
            .flatten()
            .map(|m| m.start());
        self.custom = Some((at, next));
        next
    }

    fn next_builtin(&mut self, at: usize) -> Option<usize> {
        if !self.pre.builtins {
            return None;
        }
        loop {
            while let Some(c) = self.pending.get(self.head) {
                if c.end > at {
                    break;
                }
                self.head += 1;
            }
            if self.head >= self.pending.len() && self.scanned < (at & !7) {
                // nothing pending: what starts at or after `at` has its anchor there too
                self.scanned = at & !7;
            }
            if let Some(c) = self.pending.get(self.head) {
                let s = c.start.max(at);
                if s + MARGIN <= self.scanned || self.scanned >= self.end {
                    return Some(s);
                }
            } else if self.scanned >= self.end {
                return None;
            }
            self.scan_block();
        }
    }

    fn push(&mut self, start: usize, end: usize, once: bool) {
        let start = start.max(self.floor);
        if start < end {
            self.pending.push(Cand { start, end, once });
        }
    }

    /// Looks for anchors in the next block and queues their candidates.
    fn scan_block(&mut self) {
        if self.head > 256 && self.head * 2 > self.pending.len() {
            self.pending.drain(..self.head);
            self.head = 0;
        }
        let before = self.pending.len();
        let hay = self.hay;
        let from = self.scanned;
        let to = (from + BLOCK).min(self.end);
        let mut w = from;
        while w < to {
            let x = word(hay, w, self.end);
            let mut anchors = !(below(x, b'0') | above(x, b'@')) & HIGH;
            while anchors != 0 {
                let p = w + (anchors.trailing_zeros() / 8) as usize;
                anchors &= anchors - 1;
                match hay[p] {
                    b'0'..=b'9' if p >= self.cluster_end => self.digits(p),
                    b':' => self.colon(p),
                    b'@' => self.at_sign(p),
                    _ => {}
                }
            }
            if (below(x, b'+') | above(x, b'z')) == 0 && w >= self.run_end {
                self.run(w);
            }
            w += 8;
        }
        // `-----BEGIN` starting in [from, to)
        let tail = (to + 9).min(self.end);
        if from < tail {
            let found: Vec<usize> = self
                .pre
                .pem
                .find_iter(&hay[from..tail])
                .map(|i| from + i)
                .take_while(|&p| p < to)
                .collect();
            for p in found {
                self.push(p, p + 1, false);
            }
        }
        self.scanned = w;
        if self.pending.len() > before {
            self.pending[self.head..].sort_unstable_by_key(|c| c.start);
        }
    }

    /// A digit at `d` that no cluster looked at covers: cards, SSNs, phones, IPv4, IBAN.
    fn digits(&mut self, d: usize) {
        let hay = self.hay;
        if d >= 2 && is(hay[d - 1], UPPER) && is(hay[d - 2], UPPER) {
            self.push(d - 2, d - 1, false);
        }
        let (mut digits, mut dots, mut streak) = (0u32, 0u32, 0u32);
        let mut last = d;
        let mut j = d;
        while j < self.end {
            let c = hay[j];
            if c.is_ascii_digit() {
                digits += 1;
                streak = 0;
                last = j;
            } else if is(c, NUMSEP) {
                streak += 1;
                if streak > 3 {
                    break;
                }
                dots += u32::from(c == b'.');
            } else {
                break;
            }
            j += 1;
        }
        self.cluster_end = last + 1;
        if digits >= 8 || (digits >= 4 && dots >= 3) {
            let start = if d > 0 && matches!(hay[d - 1], b'+' | b'(') {
                d - 1
            } else {
                d
            };
            self.push(start, last + 1, false);
        }
    }

    /// A `:` at `c`: IPv6 (two colons at most 4 hex digits apart) and Slack webhook URLs.
    fn colon(&mut self, c: usize) {
        let hay = self.hay;
        if c >= 5 && &hay[c - 5..c] == b"https" {
            self.push(c - 5, c - 4, false);
        }
        let mut j = c + 1;
        while j < self.end && j <= c + 4 && is(hay[j], HEX) {
            j += 1;
        }
        if j < self.end && hay[j] == b':' {
            let mut s = c;
            while s > 0 && c - s < 4 && is(hay[s - 1], HEX) {
                s -= 1;
            }
            self.push(s, c + 1, false);
        }
    }

    /// An `@` at `a`: an e-mail address starts at most 64 local-part bytes before it.
    fn at_sign(&mut self, a: usize) {
        let hay = self.hay;
        if a == 0 || a + 1 >= self.end || !is(hay[a + 1], ALNUM) || !is(hay[a - 1], LOCAL) {
            return;
        }
        let mut s = a;
        while s > 0 && a - s < 64 && is(hay[s - 1], LOCAL) {
            s -= 1;
        }
        self.push(s, a, true);
    }

    /// A word at `w` with no byte below `+` or above `z`: maybe inside a token run.
    fn run(&mut self, w: usize) {
        let hay = self.hay;
        let end = self.end;
        if !hay[w..(w + 8).min(end)].iter().all(|&b| is(b, WORDISH)) {
            return;
        }
        let mut r0 = w;
        while r0 > self.floor && is(hay[r0 - 1], WORDISH) {
            r0 -= 1;
        }
        let mut r1 = w + 8;
        while r1 < end && is(hay[r1], WORDISH) {
            r1 += 1;
        }
        self.run_end = r1;
        // runs of token bytes (split at dots) of 20 or more
        let mut t0 = r0;
        for stop in memchr::memchr_iter(b'.', &hay[r0..r1])
            .map(|i| r0 + i)
            .chain(std::iter::once(r1))
        {
            if stop - t0 >= 20 {
                self.push(t0, stop - 19, false);
            }
            t0 = stop + 1;
        }
        if r1 - r0 >= 24 {
            let found: Vec<usize> = self
                .pre
                .jwt
                .find_iter(&hay[r0..r1])
                .map(|i| r0 + i)
                .filter(|&p| r1 - p >= 24)
                .collect();
            for p in found {
                self.push(p, p + 1, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swar_tests_are_exact() {
        for b in 0..=255u8 {
            let x = u64::from_le_bytes([b, 0x41, b, 0x41, b, 0x41, b, 0x41]);
            for n in [0u8, 1, b'+', b'0', b'@', b'z', 127] {
                let want_below = b < n;
                assert_eq!(below(x, n) & 0x80 != 0, want_below, "{b} < {n}");
                assert_eq!(above(x, n) & 0x80 != 0, b > n, "{b} > {n}");
            }
            assert_eq!(below(x, 128) & 0x80 != 0, b < 128);
        }
    }
}

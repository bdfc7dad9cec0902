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
//! The finder classifies 32 bytes at a time with branch-free byte compares that the compiler
//! turns into vector instructions (safe code, SSE2 on any x86-64): one range test finds digits,
//! `:` and `@`; a run of 20 token bytes always covers a whole aligned 8-byte word with no byte
//! below `+` or above `z`, so runs are looked for only around such words. A 32-byte group of
//! prose with neither costs a handful of instructions and the automaton never sees it.
//! `-----BEGIN` is found with `memchr::memmem` (SIMD).
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

// === 32 bytes at a time ===

/// Whether `b` is an anchor byte: `0`-`9`, `:`, `;`..`?`, `@`.
#[inline(always)]
fn anchor(b: u8) -> bool {
    b.wrapping_sub(b'0') <= b'@' - b'0'
}

/// Whether `b` is a *break*: a byte no token run holds (below `+` or above `z`).
#[inline(always)]
fn breaks(b: u8) -> bool {
    b.wrapping_sub(b'+') > b'z' - b'+'
}

/// For each 8-byte word of a 32-byte group: a byte `1` where the group has an anchor, and a
/// byte `1` where it has a break. Branch-free byte compares over a fixed-size array, which the
/// compiler turns into vector instructions (SSE2 on any x86-64).
#[inline(always)]
fn classify(g: &[u8; 32]) -> ([u64; 4], [u64; 4]) {
    let mut an = [0u8; 32];
    let mut br = [0u8; 32];
    for ((b, a), r) in g.iter().zip(&mut an).zip(&mut br) {
        *a = u8::from(anchor(*b));
        *r = u8::from(breaks(*b));
    }
    let words = |v: &[u8; 32]| [load(&v[..]), load(&v[8..]), load(&v[16..]), load(&v[24..])];
    (words(&an), words(&br))
}

/// The first 8 bytes of `b` (at least 8 long) as a little-endian word.
#[inline(always)]
fn load(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// `hay[w..w + 32]`, with bytes at or past `end` read as 0 (a break, not an anchor).
fn group(hay: &[u8], w: usize, end: usize) -> [u8; 32] {
    let mut g = [0u8; 32];
    let stop = end.min(hay.len()).min(w + 32).max(w);
    if let Some(src) = hay.get(w..stop) {
        g[..src.len()].copy_from_slice(src);
    }
    g
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
const BLOCK: usize = 4096;
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
        let end = self.end;
        let mut w = from;
        // the breaks of the word before `w`
        let mut prev = if w >= 8 {
            classify(&group(hay, w - 8, w)).1[0]
        } else {
            u64::MAX
        };
        while w < to {
            let g = match hay.get(w..w + 32) {
                Some(g) if w + 32 <= to => {
                    let mut a = [0u8; 32];
                    a.copy_from_slice(g);
                    a
                }
                _ => group(hay, w, to),
            };
            let (anchors, brk) = classify(&g);
            // clean text: no anchor, and a break in every word
            if (anchors[0] | anchors[1] | anchors[2] | anchors[3]) == 0
                && brk[0] != 0
                && brk[1] != 0
                && brk[2] != 0
                && brk[3] != 0
            {
                prev = brk[3];
                w += 32;
                continue;
            }
            for k in 0..4 {
                let at = w + 8 * k;
                let mut an = anchors[k];
                while an != 0 {
                    let p = at + (an.trailing_zeros() / 8) as usize;
                    an &= an - 1;
                    match hay[p] {
                        b'0'..=b'9' if p >= self.cluster_end => self.digits(p),
                        b':' => self.colon(p),
                        b'@' => self.at_sign(p),
                        _ => {}
                    }
                }
                if brk[k] == 0 && at >= self.run_end && at < to {
                    // how far a run through this word reaches into its neighbours: a run of 20
                    // needs 12 of their bytes (a run going on past the previous word was looked
                    // at from there)
                    let next = match brk.get(k + 1) {
                        Some(&b) => b,
                        None => classify(&group(hay, at + 8, end)).1[0],
                    };
                    let back = prev.leading_zeros() / 8;
                    let fwd = next.trailing_zeros() / 8;
                    if fwd == 8 || back + fwd >= 12 {
                        self.run(at);
                    }
                }
                prev = brk[k];
            }
            w += 32;
        }
        let w = w.min(to.max(from));
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
    fn classify_marks_anchors_and_breaks() {
        for b in 0..=255u8 {
            let mut g = [b'a'; 32];
            for i in (0..32).step_by(3) {
                g[i] = b;
            }
            let (anchors, brk) = classify(&g);
            for (i, byte) in g.into_iter().enumerate() {
                let bit = 1u64 << (8 * (i % 8));
                assert_eq!(
                    anchors[i / 8] & bit != 0,
                    (b'0'..=b'@').contains(&byte),
                    "{byte}"
                );
                assert_eq!(
                    brk[i / 8] & bit != 0,
                    !(b'+'..=b'z').contains(&byte),
                    "{byte}"
                );
            }
        }
    }
}

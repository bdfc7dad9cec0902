//! The hash chain of the JSON-lines log, and `verify`.
//!
//! ## Record format
//! Every line is one JSON object: `{"seq":N,"prev_hash":"<64 hex>",<event fields>,"hash":"<64 hex>"}`.
//! `hash` is the SHA-256 of the exact bytes of the line without its `,"hash":"…"` suffix (that is,
//! the object `{"seq":…,"prev_hash":…,<event fields>}`), so verification needs no JSON
//! canonicalization. `prev_hash` is the previous record's `hash` (64 zeros for the first record
//! ever), `seq` counts from 1 without gaps across rotated files.
//!
//! ## Files
//! Records go to `<prefix>-<first seq, 20 digits>.jsonl` in the log directory; rotation opens the
//! next file named by its first sequence number, so files sort in chain order and a lost file shows
//! as a sequence gap. `<prefix>.head` holds the last sequence number and hash known to be on disk
//! (rewritten at each fsync, atomically by rename): `verify` uses it to detect records cut off the
//! end of the newest file.
//!
//! ## What `verify` reports
//! The first bad record, by file, line and sequence number: a partial (truncated) line, a line that
//! is not a chained record, a hash that does not match the record's bytes (the record was edited),
//! a `prev_hash` that does not match the previous record (a record was removed, inserted or
//! re-hashed after an edit), a sequence gap (records or a whole file missing), or a log that ends
//! before the head says it should (records cut off the end).

use std::{
    fmt, fs,
    io::{self, BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 as 64 lower-case hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut s = String::with_capacity(64);
    for b in digest.as_ref() {
        s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    s
}

/// Builds one chained line (with the trailing newline) from an event's JSON object text.
/// Returns the line and its hash.
pub fn chain_line(seq: u64, prev_hash: &str, event_json: &str) -> (String, String) {
    let rest = event_json.strip_prefix('{').unwrap_or(event_json);
    let mut line = String::with_capacity(event_json.len() + 200);
    line.push_str("{\"seq\":");
    line.push_str(&seq.to_string());
    line.push_str(",\"prev_hash\":\"");
    line.push_str(prev_hash);
    line.push('"');
    if rest != "}" {
        line.push(',');
    }
    line.push_str(rest);
    let hash = sha256_hex(line.as_bytes());
    line.pop(); // the closing brace
    line.push_str(",\"hash\":\"");
    line.push_str(&hash);
    line.push_str("\"}\n");
    (line, hash)
}

/// The chain fields of a line, checked against its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFields {
    /// Sequence number.
    pub seq: u64,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

#[derive(Deserialize)]
struct Head {
    seq: u64,
    prev_hash: String,
}

/// Checks one line (without its newline): its hash must match its bytes.
pub fn check_line(line: &str) -> Result<ChainFields, Problem> {
    const SUFFIX_LEN: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    if line.len() < SUFFIX_LEN || !line.ends_with("\"}") {
        return Err(Problem::Malformed("no trailing hash field".into()));
    }
    let split = line.len() - SUFFIX_LEN;
    let (body, suffix) = line.split_at(split);
    let Some(hash) = suffix
        .strip_prefix(",\"hash\":\"")
        .and_then(|s| s.strip_suffix("\"}"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return Err(Problem::Malformed("no trailing hash field".into()));
    };
    let mut canonical = String::with_capacity(body.len() + 1);
    canonical.push_str(body);
    canonical.push('}');
    let head: Head = serde_json::from_str(&canonical)
        .map_err(|e| Problem::Malformed(format!("not a chained JSON record: {e}")))?;
    let actual = sha256_hex(canonical.as_bytes());
    if actual != hash {
        return Err(Problem::HashMismatch {
            stored: hash.to_owned(),
            actual,
        });
    }
    Ok(ChainFields {
        seq: head.seq,
        prev_hash: head.prev_hash,
        hash: hash.to_owned(),
    })
}

/// What is wrong with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The last line has no newline: the file was cut in the middle of a record.
    Truncated,
    /// The line is not a chained record.
    Malformed(String),
    /// The record's bytes do not hash to its `hash`: it was edited.
    HashMismatch {
        /// The hash written in the record.
        stored: String,
        /// The hash of its bytes.
        actual: String,
    },
    /// `prev_hash` is not the previous record's hash.
    ChainBroken {
        /// The previous record's hash.
        expected: String,
        /// What the record says.
        found: String,
    },
    /// The sequence number is not the next one.
    SeqGap {
        /// The next sequence number.
        expected: u64,
        /// What the record says.
        found: u64,
    },
    /// The log ends before the head file says it should.
    MissingTail {
        /// The last sequence number on disk.
        last: u64,
        /// The sequence number the head file records.
        head: u64,
    },
    /// The record at the head's sequence number does not have the head's hash.
    HeadMismatch,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => {
                f.write_str("truncated: the record has no end (file cut mid-record)")
            }
            Self::Malformed(why) => write!(f, "malformed record: {why}"),
            Self::HashMismatch { stored, actual } => write!(
                f,
                "hash mismatch: the record was edited (stored {stored}, its bytes hash to {actual})"
            ),
            Self::ChainBroken { expected, found } => write!(
                f,
                "chain broken: prev_hash {found} is not the previous record's hash {expected} (a record was removed, inserted or re-hashed)"
            ),
            Self::SeqGap { expected, found } => write!(
                f,
                "sequence gap: expected record {expected}, found {found} (records {expected}..{} missing)",
                found.saturating_sub(1)
            ),
            Self::MissingTail { last, head } => write!(
                f,
                "truncated: the log ends at record {last} but record {head} was written (records {}..={head} missing)",
                last + 1
            ),
            Self::HeadMismatch => f.write_str("the record does not match the head file's hash"),
        }
    }
}

/// The first bad record `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line number in the file.
    pub line: u64,
    /// The sequence number the record should have.
    pub seq: u64,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {} (record {}): {}",
            self.file.display(),
            self.line,
            self.seq,
            self.problem
        )
    }
}

impl std::error::Error for VerifyFailure {}

/// A clean verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Files checked.
    pub files: usize,
    /// Records checked.
    pub records: u64,
    /// The last sequence number (0 when the log is empty).
    pub last_seq: u64,
    /// The last record's hash.
    pub last_hash: String,
}

/// Errors of `verify` other than a bad record.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A bad record.
    #[error("{0}")]
    Bad(#[from] VerifyFailure),
    /// The log could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The log files of `prefix` in `dir`, in chain order, with their first sequence numbers.
pub fn log_files(dir: &Path, prefix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(seq) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(".jsonl"))
            .filter(|r| r.len() == 20)
            .and_then(|r| r.parse::<u64>().ok())
        else {
            continue;
        };
        files.push((seq, entry.path()));
    }
    files.sort();
    Ok(files)
}

/// The head file path of `prefix` in `dir`.
pub fn head_path(dir: &Path, prefix: &str) -> PathBuf {
    dir.join(format!("{prefix}.head"))
}

/// The content of the head file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadRecord {
    /// The last sequence number known to be on disk.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// Reads the head file, if any.
pub fn read_head(dir: &Path, prefix: &str) -> Option<HeadRecord> {
    let text = fs::read_to_string(head_path(dir, prefix)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Verifies the whole chain of `prefix` in `dir`; stops at the first bad record.
pub fn verify_dir(dir: &Path, prefix: &str) -> Result<VerifyReport, VerifyError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VerifyError::Io { path, source }
    };
    let files = log_files(dir, prefix).map_err(io_err(dir))?;
    let mut expected_seq = files.first().map_or(1, |(s, _)| *s);
    let mut prev_hash: Option<String> = if expected_seq == 1 {
        Some(GENESIS.to_owned())
    } else {
        None
    };
    let mut records = 0;
    let head = read_head(dir, prefix);
    let mut head_checked = false;
    let mut last_file = PathBuf::new();
    let mut last_line = 0;
    for (first_seq, path) in &files {
        last_file = path.clone();
        last_line = 0;
        if *first_seq != expected_seq {
            return Err(VerifyFailure {
                file: path.clone(),
                line: 1,
                seq: expected_seq,
                problem: Problem::SeqGap {
                    expected: expected_seq,
                    found: *first_seq,
                },
            }
            .into());
        }
        let file = fs::File::open(path).map_err(io_err(path))?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            last_line += 1;
            let fail = |problem| VerifyFailure {
                file: path.clone(),
                line: last_line,
                seq: expected_seq,
                problem,
            };
            if buf.last() != Some(&b'\n') {
                return Err(fail(Problem::Truncated).into());
            }
            buf.pop();
            let line = std::str::from_utf8(&buf)
                .map_err(|_| fail(Problem::Malformed("not UTF-8".into())))?;
            let fields = check_line(line).map_err(&fail)?;
            if fields.seq != expected_seq {
                return Err(fail(Problem::SeqGap {
                    expected: expected_seq,
                    found: fields.seq,
                })
                .into());
            }
            if let Some(prev) = &prev_hash
                && *prev != fields.prev_hash
            {
                return Err(fail(Problem::ChainBroken {
                    expected: prev.clone(),
                    found: fields.prev_hash,
                })
                .into());
            }
            if let Some(h) = &head
                && h.seq == fields.seq
            {
                head_checked = true;
                if h.hash != fields.hash {
                    return Err(fail(Problem::HeadMismatch).into());
                }
            }
            prev_hash = Some(fields.hash);
            expected_seq += 1;
            records += 1;
        }
    }
    let last_seq = expected_seq - 1;
    if let Some(h) = head
        && !head_checked
        && h.seq > last_seq
    {
        return Err(VerifyFailure {
            file: last_file,
            line: last_line + 1,
            seq: last_seq + 1,
            problem: Problem::MissingTail {
                last: last_seq,
                head: h.seq,
            },
        }
        .into());
    }
    Ok(VerifyReport {
        files: files.len(),
        records,
        last_seq,
        last_hash: prev_hash.unwrap_or_else(|| GENESIS.to_owned()),
    })
}

/// Reads every event of the log in chain order (for export), skipping nothing: a line that is not
/// a record is an error.
pub fn read_events(dir: &Path, prefix: &str) -> Result<Vec<crate::AuditEvent>, VerifyError> {
    let mut out = Vec::new();
    for (_, path) in log_files(dir, prefix).map_err(|source| VerifyError::Io {
        path: dir.into(),
        source,
    })? {
        let mut text = String::new();
        fs::File::open(&path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|source| VerifyError::Io {
                path: path.clone(),
                source,
            })?;
        for (i, line) in text.split_terminator('\n').enumerate() {
            let event = serde_json::from_str(line).map_err(|e| VerifyFailure {
                file: path.clone(),
                line: i as u64 + 1,
                seq: 0,
                problem: Problem::Malformed(e.to_string()),
            })?;
            out.push(event);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_hash_round_trips_and_detects_edits() {
        let (line, hash) = chain_line(1, GENESIS, r#"{"method":"tools/call","x":1}"#);
        let body = line.trim_end_matches('\n');
        let f = check_line(body).unwrap();
        assert_eq!(f.seq, 1);
        assert_eq!(f.hash, hash);
        assert_eq!(f.prev_hash, GENESIS);
        let edited = body.replace("\"x\":1", "\"x\":2");
        assert!(matches!(
            check_line(&edited),
            Err(Problem::HashMismatch { .. })
        ));
        assert!(matches!(
            check_line("{\"seq\":1}"),
            Err(Problem::Malformed(_))
        ));
    }
}

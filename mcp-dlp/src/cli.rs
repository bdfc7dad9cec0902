//! `mcp-gateway dlp scan [FILE]`: run the detectors over sample data to tune rules.
//!
//! Reads text (a file or stdin), one record per line (or the whole input as one record with
//! `--whole`), and prints one JSON line per record:
//! `{"findings":[{"kind":"email","start":12,"end":29,"action":"redact"}]}` with byte offsets into
//! the record; `--rewrite` prints the rewritten record instead. The input need not be UTF-8.
//!
//! Memory stays bounded whatever the input size: records are scanned in windows of 1 MiB that
//! overlap by 64 KiB, so a match is found whole unless it is longer than 64 KiB and straddles a
//! window edge (it is then reported up to the edge).

use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::PathBuf,
};

use mcp_gateway_core::Direction;

use crate::{
    action::Scope,
    config::{Config, ConfigError},
    scan::Scanner,
};

/// Arguments of `dlp scan`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScanArgs {
    /// The file to scan; standard input when absent or `-`.
    pub file: Option<PathBuf>,
    /// Treat the whole input as one record (default: one record per line).
    #[arg(long)]
    pub whole: bool,
    /// Print the rewritten text instead of the findings.
    #[arg(long)]
    pub rewrite: bool,
    /// The direction whose rules apply (`request` or `response`).
    #[arg(long, default_value = "request", value_parser = parse_direction)]
    pub direction: DirectionArg,
    /// The server whose scoped rules apply.
    #[arg(long)]
    pub server: Option<String>,
    /// The tool whose scoped rules apply.
    #[arg(long)]
    pub tool: Option<String>,
}

/// A direction on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectionArg(pub Direction);

impl Default for DirectionArg {
    fn default() -> Self {
        Self(Direction::Request)
    }
}

fn parse_direction(s: &str) -> Result<DirectionArg, String> {
    match s {
        "request" => Ok(DirectionArg(Direction::Request)),
        "response" => Ok(DirectionArg(Direction::Response)),
        other => Err(format!("`{other}`: use `request` or `response`")),
    }
}

/// What a scan saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Records read.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Findings reported.
    pub findings: u64,
}

/// Errors of `dlp scan`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Reading the input or writing the output failed.
    #[error("dlp scan: {0}")]
    Io(#[from] io::Error),
    /// The `[dlp]` configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Runs `dlp scan`: builds the scanner from `config` (built-in detectors when `None`), opens
/// `args.file` or reads `stdin`, and writes to `out`.
pub fn run(
    args: &ScanArgs,
    config: Option<&Config>,
    stdin: impl BufRead,
    out: impl Write,
) -> Result<ScanStats, CliError> {
    let scanner = match config {
        Some(c) => c.scanner()?,
        None => Scanner::default(),
    };
    match args.file.as_deref() {
        Some(p) if p.as_os_str() != "-" => {
            let f = File::open(p)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
            scan(args, &scanner, BufReader::with_capacity(1 << 20, f), out)
        }
        _ => scan(args, &scanner, stdin, out),
    }
}

const WINDOW: usize = 1 << 20;
const OVERLAP: usize = 64 << 10;
const BEHIND: usize = 256;

/// Scans `input` with `scanner` and writes one line per record to `out`.
pub fn scan(
    args: &ScanArgs,
    scanner: &Scanner,
    mut input: impl BufRead,
    out: impl Write,
) -> Result<ScanStats, CliError> {
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let scope = Scope {
        direction: args.direction.0,
        server: args.server.as_deref(),
        tool: args.tool.as_deref(),
    };
    let mut stats = ScanStats::default();
    let mut buf: Vec<u8> = Vec::with_capacity(WINDOW + OVERLAP);
    let mut rewritten: Vec<u8> = Vec::new();
    loop {
        if input.fill_buf()?.is_empty() {
            break;
        }
        stats.records += 1;
        // one record
        buf.clear();
        let mut base: u64 = 0; // record offset of buf[0]
        let mut pos = 0; // start of the not-yet-emitted part of buf
        let mut first = true;
        let mut record_end = false;
        if !args.rewrite {
            out.write_all(b"{\"findings\":[")?;
        }
        while !record_end {
            // fill up to one window past `pos`
            while buf.len() < pos + WINDOW {
                let avail = input.fill_buf()?;
                if avail.is_empty() {
                    record_end = true;
                    break;
                }
                let room = pos + WINDOW - buf.len();
                if !args.whole
                    && let Some(i) = memchr::memchr(b'\n', &avail[..avail.len().min(room)])
                {
                    buf.extend_from_slice(&avail[..i]);
                    input.consume(i + 1);
                    stats.bytes += i as u64 + 1;
                    record_end = true;
                    break;
                }
                let take = avail.len().min(room);
                buf.extend_from_slice(&avail[..take]);
                input.consume(take);
                stats.bytes += take as u64;
            }
            let limit = if record_end {
                buf.len()
            } else {
                buf.len().saturating_sub(OVERLAP).max(pos + 1)
            };
            let mut next = limit;
            let mut matches = Vec::new();
            scanner.detectors().scan(&buf, pos..buf.len(), |m| {
                if m.start < limit {
                    next = next.max(m.end);
                    matches.push(m);
                }
            });
            for m in &matches {
                let kind = scanner.detectors().kind(m.detector);
                let (_, action) = scanner.action_for(kind, &scope);
                if args.rewrite {
                    continue;
                }
                if action.name() == "allow" {
                    continue;
                }
                stats.findings += 1;
                if !first {
                    out.write_all(b",")?;
                }
                first = false;
                write!(
                    out,
                    "{{\"kind\":{},\"start\":{},\"end\":{},\"action\":\"{}\"}}",
                    serde_json::Value::String(kind.to_string()),
                    base + m.start as u64,
                    base + m.end as u64,
                    action.name()
                )?;
            }
            if args.rewrite {
                // rewrite buf[pos..next] with the matches found in it
                rewritten.clear();
                let mut last = pos;
                for m in &matches {
                    let kind = scanner.detectors().kind(m.detector);
                    let (_, action) = scanner.action_for(kind, &scope);
                    if !action.rewrites() || m.start < last {
                        continue;
                    }
                    rewritten.extend_from_slice(&buf[last..m.start]);
                    action.write_replacement(
                        kind,
                        &buf[m.start..m.end],
                        &scanner.hash_key,
                        &mut rewritten,
                    );
                    last = m.end;
                    stats.findings += 1;
                }
                rewritten.extend_from_slice(&buf[last..next.min(buf.len())]);
                out.write_all(&rewritten)?;
            }
            if record_end {
                break;
            }
            let keep_from = next.saturating_sub(BEHIND);
            buf.drain(..keep_from);
            base += keep_from as u64;
            pos = next - keep_from;
        }
        if args.rewrite {
            if !args.whole {
                out.write_all(b"\n")?;
            }
        } else {
            out.write_all(b"]}\n")?;
        }
    }
    out.flush()?;
    Ok(stats)
}

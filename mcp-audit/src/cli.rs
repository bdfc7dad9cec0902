//! `mcp-gateway audit verify` and `mcp-gateway audit export`, as functions the gateway binary
//! mounts. They take their output handle; exit codes are returned, not applied.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use crate::{
    chain::{self, VerifyError},
    export::{self, Filter, Format},
    time::parse_time,
};

/// `audit` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain of the JSON-lines log; reports the first bad record.
    Verify(VerifyArgs),
    /// Export records as CSV or JSON, filtered.
    Export(ExportArgs),
}

/// Where the log is.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// The log directory (default: `[audit.file] dir` of the gateway config).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The file name prefix.
    #[arg(long, default_value = "audit")]
    pub prefix: String,
}

/// `audit verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The log.
    #[command(flatten)]
    pub log: LogArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `audit export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The log.
    #[command(flatten)]
    pub log: LogArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Records at or after (RFC 3339, a date, or Unix ms).
    #[arg(long)]
    pub since: Option<String>,
    /// Records before (RFC 3339, a date, or Unix ms).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this server.
    #[arg(long)]
    pub server: Option<String>,
    /// Only this identity (subject; `anonymous` for none).
    #[arg(long)]
    pub identity: Option<String>,
    /// Only this method (e.g. `tools/call`).
    #[arg(long)]
    pub method: Option<String>,
    /// Skip the chain check before exporting.
    #[arg(long)]
    pub no_verify: bool,
}

/// A CLI failure other than a bad record.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The log could not be read or is bad.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

fn dir<'a>(log: &'a LogArgs, default_dir: Option<&'a Path>) -> Result<&'a Path, CliError> {
    log.dir.as_deref().or(default_dir).ok_or_else(|| {
        CliError::Usage("no audit log directory: pass --dir or configure [audit.file] dir".into())
    })
}

/// Runs a subcommand; returns the process exit code (0 clean, 1 bad record, 2 usage or I/O).
pub fn run(
    cmd: &AuditCommand,
    default_dir: Option<&Path>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let result = match cmd {
        AuditCommand::Verify(a) => verify(a, default_dir, out).map(|ok| if ok { 0 } else { 1 }),
        AuditCommand::Export(a) => export(a, default_dir, out).map(|_| 0),
    };
    match result {
        Ok(code) => code,
        Err(CliError::Verify(VerifyError::Bad(f))) => {
            let _ = writeln!(err, "audit log is NOT intact: {f}");
            1
        }
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            2
        }
    }
}

/// `audit verify`: prints the result; `Ok(false)` when a record is bad.
pub fn verify(
    args: &VerifyArgs,
    default_dir: Option<&Path>,
    out: &mut dyn Write,
) -> Result<bool, CliError> {
    let dir = dir(&args.log, default_dir)?;
    match chain::verify_dir(dir, &args.log.prefix) {
        Ok(report) => {
            if args.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"ok": true, "files": report.files, "records": report.records, "last_seq": report.last_seq, "last_hash": report.last_hash})
                )?;
            } else {
                writeln!(
                    out,
                    "audit log OK: {} records in {} files, last record {} hash {}",
                    report.records, report.files, report.last_seq, report.last_hash
                )?;
            }
            Ok(true)
        }
        Err(VerifyError::Bad(f)) => {
            if args.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"ok": false, "file": f.file, "line": f.line, "record": f.seq, "problem": f.problem.to_string()})
                )?;
            } else {
                writeln!(out, "audit log NOT intact: {f}")?;
            }
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// `audit export`: writes the records; returns how many.
pub fn export(
    args: &ExportArgs,
    default_dir: Option<&Path>,
    out: &mut dyn Write,
) -> Result<u64, CliError> {
    let dir = dir(&args.log, default_dir)?;
    let time = |s: &Option<String>, name: &str| -> Result<Option<u64>, CliError> {
        s.as_deref()
            .map(|v| parse_time(v).ok_or_else(|| CliError::Usage(format!("--{name} {v:?}: expected RFC 3339 (2026-11-21T08:00:00Z), a date (2026-11-21) or Unix milliseconds"))))
            .transpose()
    };
    let filter = Filter {
        since_ms: time(&args.since, "since")?,
        until_ms: time(&args.until, "until")?,
        server: args.server.clone(),
        identity: args.identity.clone(),
        method: args.method.clone(),
    };
    if !args.no_verify {
        chain::verify_dir(dir, &args.log.prefix)?;
    }
    let events = chain::read_events(dir, &args.log.prefix)?;
    Ok(export::export(&events, &filter, args.format, out)?)
}

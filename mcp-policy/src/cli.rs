//! Command-line entry points the reference gateway mounts (`mcp-gateway policy ...`).

use std::{
    io::{BufRead, Write},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    pin::Approvals,
    threat::{Approved, Finding, Severity, ToolRef, scan_set},
};

/// `mcp-gateway policy scan-tools [FILE] [--approved FILE]`: vets tool definitions before they
/// are approved. Input: JSON lines, each an MCP `Tool` plus `"server"`. Output: one JSON line per
/// tool, `{"server","name","findings":[{"class","severity","why"}]}`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScanToolsArgs {
    /// Tool definitions as JSON lines (default: standard input).
    pub file: Option<PathBuf>,
    /// Already-approved servers and tools: JSON lines `{"server": "...", "name": "..."}` (name
    /// optional), or an approvals file of the policy.
    #[arg(long)]
    pub approved: Option<PathBuf>,
}

/// What a scan found, for the exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Tools read.
    pub tools: usize,
    /// Tools with at least one finding.
    pub flagged: usize,
    /// The worst severity seen.
    pub worst: Option<Severity>,
}

/// Errors of the CLI: bad input (with its line) or I/O.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A line is not a tool definition.
    #[error("{file}:{line}: {message}")]
    Input {
        /// The input's name (`-` for standard input).
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Deserialize)]
struct ApprovedLine {
    server: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Serialize)]
struct OutLine<'a> {
    server: &'a str,
    name: &'a str,
    findings: &'a [Finding],
}

/// Reads an approved-set file.
pub fn read_approved(path: &std::path::Path) -> Result<Approved, CliError> {
    let text = std::fs::read_to_string(path)?;
    let file = path.display().to_string();
    let mut approved = Approved::default();
    if let Ok(doc) = serde_json::from_str::<Approvals>(&text) {
        for a in doc.approvals {
            approved.servers.insert(a.server.clone());
            if a.kind == "tool" {
                approved.tools.insert((a.server, a.name));
            }
        }
        return Ok(approved);
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: ApprovedLine = serde_json::from_str(line).map_err(|e| CliError::Input {
            file: file.clone(),
            line: i + 1,
            message: e.to_string(),
        })?;
        approved.servers.insert(l.server.clone());
        if let Some(n) = l.name {
            approved.tools.insert((l.server, n));
        }
    }
    Ok(approved)
}

/// Runs `scan-tools`: reads from `args.file` or else `stdin`, writes JSON lines to `out`.
pub fn scan_tools(
    args: &ScanToolsArgs,
    stdin: impl BufRead,
    mut out: impl Write,
) -> Result<ScanSummary, CliError> {
    let (name, text) = match &args.file {
        Some(p) => (p.display().to_string(), std::fs::read_to_string(p)?),
        None => {
            let mut s = String::new();
            let mut stdin = stdin;
            std::io::Read::read_to_string(&mut stdin, &mut s)?;
            ("-".to_string(), s)
        }
    };
    let approved = match &args.approved {
        Some(p) => read_approved(p)?,
        None => Approved::default(),
    };
    let mut tools: Vec<(String, Value)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| CliError::Input {
            file: name.clone(),
            line: i + 1,
            message,
        };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let server = v
            .get("server")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing string field `server`".into()))?
            .to_string();
        if v.get("name").and_then(Value::as_str).is_none() {
            return Err(bad("missing string field `name`".into()));
        }
        tools.push((server, v));
    }
    let refs: Vec<ToolRef<'_>> = tools
        .iter()
        .map(|(s, d)| ToolRef { server: s, def: d })
        .collect();
    let findings = scan_set(&refs, &approved);
    let mut summary = ScanSummary {
        tools: tools.len(),
        ..Default::default()
    };
    for ((server, def), f) in tools.iter().zip(&findings) {
        if !f.is_empty() {
            summary.flagged += 1;
        }
        summary.worst = summary.worst.max(f.iter().map(|x| x.severity).max());
        let line = OutLine {
            server,
            name: def.get("name").and_then(Value::as_str).unwrap_or(""),
            findings: f,
        };
        serde_json::to_writer(&mut out, &line).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
    }
    Ok(summary)
}

//! Export of audit records to CSV or JSON, with filters.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::AuditEvent;

/// Which records to export. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Records at or after this instant (Unix ms).
    pub since_ms: Option<u64>,
    /// Records before this instant (Unix ms).
    pub until_ms: Option<u64>,
    /// The server.
    pub server: Option<String>,
    /// The identity's subject (`anonymous` matches records without one).
    pub identity: Option<String>,
    /// The JSON-RPC method.
    pub method: Option<String>,
}

impl Filter {
    /// Whether a record passes.
    pub fn matches(&self, ev: &AuditEvent) -> bool {
        self.since_ms.is_none_or(|t| ev.ts_ms >= t)
            && self.until_ms.is_none_or(|t| ev.ts_ms < t)
            && self
                .server
                .as_deref()
                .is_none_or(|s| ev.server.as_deref() == Some(s))
            && self.identity.as_deref().is_none_or(|s| ev.subject() == s)
            && self.method.as_deref().is_none_or(|m| ev.method == m)
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A JSON array of records.
    Json,
    /// JSON lines, one record per line.
    Jsonl,
    /// CSV with a header row; nested fields as JSON text.
    Csv,
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "timestamp",
    "event_id",
    "gateway",
    "session_id",
    "request_id",
    "direction",
    "kind",
    "leg",
    "trace_id",
    "span_id",
    "parent_span_id",
    "identity",
    "identity_kind",
    "auth_method",
    "teams",
    "client_name",
    "client_version",
    "user_agent",
    "remote_addr",
    "origin",
    "server",
    "instance",
    "method",
    "feature_kind",
    "feature",
    "arguments",
    "status",
    "error_code",
    "error_message",
    "policy",
    "dlp",
    "annotations",
    "upstream_latency_ms",
    "total_latency_ms",
    "bytes_in",
    "bytes_out",
    "tokens_in",
    "tokens_out",
    "protocol_version",
];

fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn csv_row(ev: &AuditEvent) -> String {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let n = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    let f = |v: Option<f64>| v.map(|n| format!("{n:.3}")).unwrap_or_default();
    let enum_text = |v: String| v.trim_matches('"').to_owned();
    let id = ev.identity.as_ref();
    let cells = [
        ev.timestamp.clone(),
        ev.event_id.clone(),
        s(&ev.gateway),
        s(&ev.session_id),
        ev.request_id
            .as_ref()
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default(),
        enum_text(json_text(&ev.direction)),
        enum_text(json_text(&ev.kind)),
        ev.leg.as_str().to_owned(),
        ev.trace_id.clone(),
        ev.span_id.clone(),
        s(&ev.parent_span_id),
        id.map(|i| i.subject.clone()).unwrap_or_default(),
        id.map(|i| enum_text(json_text(&i.kind)))
            .unwrap_or_default(),
        id.map(|i| enum_text(json_text(&i.auth_method)))
            .unwrap_or_default(),
        id.map(|i| i.teams.join(";")).unwrap_or_default(),
        s(&ev.client_name),
        s(&ev.client_version),
        s(&ev.user_agent),
        s(&ev.remote_addr),
        s(&ev.origin),
        s(&ev.server),
        s(&ev.instance),
        ev.method.clone(),
        s(&ev.feature_kind),
        s(&ev.feature),
        ev.arguments.as_ref().map(json_text).unwrap_or_default(),
        s(&ev.status),
        ev.error_code.map(|c| c.to_string()).unwrap_or_default(),
        s(&ev.error_message),
        if ev.policy.is_empty() {
            String::new()
        } else {
            json_text(&ev.policy)
        },
        if ev.dlp.is_empty() {
            String::new()
        } else {
            json_text(&ev.dlp)
        },
        if ev.annotations.is_empty() {
            String::new()
        } else {
            json_text(&ev.annotations)
        },
        f(ev.upstream_latency_ms),
        f(ev.total_latency_ms),
        n(ev.bytes_in),
        n(ev.bytes_out),
        n(ev.tokens_in),
        n(ev.tokens_out),
        s(&ev.protocol_version),
    ];
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        csv_field(&mut line, c);
    }
    line.push_str("\r\n");
    line
}

/// Writes the records that pass `filter`; returns how many.
pub fn export<'a>(
    events: impl IntoIterator<Item = &'a AuditEvent>,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
) -> io::Result<u64> {
    let mut n = 0;
    match format {
        Format::Csv => {
            out.write_all(CSV_COLUMNS.join(",").as_bytes())?;
            out.write_all(b"\r\n")?;
        }
        Format::Json => out.write_all(b"[")?,
        Format::Jsonl => {}
    }
    for ev in events.into_iter().filter(|e| filter.matches(e)) {
        match format {
            Format::Csv => out.write_all(csv_row(ev).as_bytes())?,
            Format::Json => {
                if n > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(b"\n")?;
                serde_json::to_writer(&mut *out, ev)?;
            }
            Format::Jsonl => {
                serde_json::to_writer(&mut *out, ev)?;
                out.write_all(b"\n")?;
            }
        }
        n += 1;
    }
    if format == Format::Json {
        out.write_all(b"\n]\n")?;
    }
    out.flush()?;
    Ok(n)
}

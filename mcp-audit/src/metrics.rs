//! Metrics from audit events: calls, errors, latency quantiles (p50, p95, p99) and tokens by
//! server, feature and identity, rendered in the Prometheus text format.
//!
//! [`Metrics`] is an [`AuditSink`]: put it behind a lane like any sink, and serve
//! [`Metrics::render_prometheus`] on the gateway's metrics endpoint. Only answers
//! (`kind = response` for client requests) count as calls, so `calls` equals the calls clients
//! made. [`Metrics::render_prometheus_with`] appends the lanes' queue counters.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use mcp_gateway_core::Direction;

use crate::{
    AuditEvent, LaneStats, Leg, MessageKind,
    sink::{AuditSink, SinkError},
};

/// The `Content-Type` of [`Metrics::render_prometheus`] output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Log-linear histogram over microseconds: 16 buckets per power of two (≤ 4.4% relative error),
/// from 1 µs to about 73 minutes.
#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_us: f64,
}

const SUB: usize = 16;
const OCTAVES: usize = 32;

impl Histogram {
    fn new() -> Self {
        Self {
            counts: vec![0; SUB * OCTAVES],
            total: 0,
            sum_us: 0.0,
        }
    }

    fn index(us: f64) -> usize {
        if us <= 1.0 {
            return 0;
        }
        let i = (us.log2() * SUB as f64).floor() as usize;
        i.min(SUB * OCTAVES - 1)
    }

    fn record(&mut self, ms: f64) {
        let us = (ms * 1000.0).max(0.0);
        self.counts[Self::index(us)] += 1;
        self.total += 1;
        self.sum_us += us;
    }

    /// The q-quantile in seconds (upper edge of its bucket's midpoint).
    fn quantile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return f64::NAN;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let lo = 2f64.powf(i as f64 / SUB as f64);
                let hi = 2f64.powf((i + 1) as f64 / SUB as f64);
                return (lo + hi) / 2.0 / 1e6;
            }
        }
        f64::NAN
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    server: String,
    feature: String,
    identity: String,
}

#[derive(Debug, Clone)]
struct Series {
    calls: u64,
    errors: BTreeMap<i32, u64>,
    latency: Histogram,
    tokens_in: u64,
    tokens_out: u64,
}

#[derive(Debug, Default)]
struct Inner {
    series: BTreeMap<Key, Series>,
    events: BTreeMap<(String, String), u64>,
}

/// The metrics registry. Cheap to clone; every clone shares the numbers.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

/// One series' numbers, for tests and custom exporters.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSnapshot {
    /// Server.
    pub server: String,
    /// Feature (`tools/call:echo`-style: method plus feature name, or the method).
    pub feature: String,
    /// Identity subject.
    pub identity: String,
    /// Calls answered.
    pub calls: u64,
    /// Calls answered with an error.
    pub errors: u64,
    /// Tokens in.
    pub tokens_in: u64,
    /// Tokens out.
    pub tokens_out: u64,
    /// p50, p95, p99 of total latency in seconds.
    pub quantiles: [f64; 3],
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one event.
    pub fn observe(&self, ev: &AuditEvent) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let dir = match ev.direction {
            Direction::Request => "request",
            Direction::Response => "response",
        };
        *inner
            .events
            .entry((ev.method.clone(), dir.to_owned()))
            .or_default() += 1;
        // A call is a client request's answer.
        if !(ev.kind == MessageKind::Response && ev.leg == Leg::GatewayToClient) {
            return;
        }
        let key = Key {
            server: ev.server.clone().unwrap_or_else(|| "gateway".into()),
            feature: match &ev.feature {
                Some(f) => format!("{}:{f}", ev.method),
                None => ev.method.clone(),
            },
            identity: ev.subject().to_owned(),
        };
        let s = inner.series.entry(key).or_insert_with(|| Series {
            calls: 0,
            errors: BTreeMap::new(),
            latency: Histogram::new(),
            tokens_in: 0,
            tokens_out: 0,
        });
        s.calls += 1;
        if ev.is_error() {
            *s.errors.entry(ev.error_code.unwrap_or(0)).or_default() += 1;
        }
        if let Some(ms) = ev.total_latency_ms {
            s.latency.record(ms);
        }
        s.tokens_in += ev.tokens_in.unwrap_or(0);
        s.tokens_out += ev.tokens_out.unwrap_or(0);
    }

    /// Snapshots of every series.
    pub fn snapshot(&self) -> Vec<SeriesSnapshot> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        inner
            .series
            .iter()
            .map(|(k, s)| SeriesSnapshot {
                server: k.server.clone(),
                feature: k.feature.clone(),
                identity: k.identity.clone(),
                calls: s.calls,
                errors: s.errors.values().sum(),
                tokens_in: s.tokens_in,
                tokens_out: s.tokens_out,
                quantiles: [
                    s.latency.quantile(0.5),
                    s.latency.quantile(0.95),
                    s.latency.quantile(0.99),
                ],
            })
            .collect()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render_prometheus(&self) -> String {
        self.render_prometheus_with(&[])
    }

    /// The Prometheus text, plus the queue counters of `lanes`.
    pub fn render_prometheus_with(&self, lanes: &[LaneStats]) -> String {
        let mut out = String::with_capacity(4096);
        let Ok(inner) = self.inner.lock() else {
            return out;
        };
        let labels = |k: &Key| {
            format!(
                "server=\"{}\",feature=\"{}\",identity=\"{}\"",
                escape(&k.server),
                escape(&k.feature),
                escape(&k.identity)
            )
        };
        out.push_str("# HELP mcp_calls_total MCP calls answered by the gateway.\n# TYPE mcp_calls_total counter\n");
        for (k, s) in inner.series.iter().filter(|(_, s)| s.calls > 0) {
            let _ = writeln!(out, "mcp_calls_total{{{}}} {}", labels(k), s.calls);
        }
        out.push_str("# HELP mcp_errors_total MCP calls answered with a JSON-RPC error.\n# TYPE mcp_errors_total counter\n");
        for (k, s) in &inner.series {
            for (code, n) in &s.errors {
                let _ = writeln!(out, "mcp_errors_total{{{},code=\"{code}\"}} {n}", labels(k));
            }
        }
        out.push_str("# HELP mcp_call_duration_seconds Total latency of MCP calls.\n# TYPE mcp_call_duration_seconds summary\n");
        for (k, s) in inner.series.iter().filter(|(_, s)| s.latency.total > 0) {
            for q in [0.5, 0.95, 0.99] {
                let _ = writeln!(
                    out,
                    "mcp_call_duration_seconds{{{},quantile=\"{q}\"}} {}",
                    labels(k),
                    fmt_f64(s.latency.quantile(q))
                );
            }
            let _ = writeln!(
                out,
                "mcp_call_duration_seconds_sum{{{}}} {}",
                labels(k),
                fmt_f64(s.latency.sum_us / 1e6)
            );
            let _ = writeln!(
                out,
                "mcp_call_duration_seconds_count{{{}}} {}",
                labels(k),
                s.latency.total
            );
        }
        out.push_str("# HELP mcp_tokens_total Estimated tokens (o200k_base) by direction.\n# TYPE mcp_tokens_total counter\n");
        for (k, s) in &inner.series {
            let _ = writeln!(
                out,
                "mcp_tokens_total{{{},direction=\"in\"}} {}",
                labels(k),
                s.tokens_in
            );
            let _ = writeln!(
                out,
                "mcp_tokens_total{{{},direction=\"out\"}} {}",
                labels(k),
                s.tokens_out
            );
        }
        out.push_str("# HELP mcp_audit_events_total Audit events recorded, by method and direction.\n# TYPE mcp_audit_events_total counter\n");
        for ((method, dir), n) in &inner.events {
            let _ = writeln!(
                out,
                "mcp_audit_events_total{{method=\"{}\",direction=\"{dir}\"}} {n}",
                escape(method)
            );
        }
        if !lanes.is_empty() {
            for (name, help, get) in [
                (
                    "mcp_audit_sink_written_total",
                    "Events a sink took.",
                    (|l: &LaneStats| l.written) as fn(&LaneStats) -> u64,
                ),
                (
                    "mcp_audit_sink_spilled_total",
                    "Events spilled to disk because the queue was full.",
                    |l| l.spilled,
                ),
                (
                    "mcp_audit_sink_blocked_total",
                    "Times a caller waited for room in a full queue.",
                    |l| l.blocked,
                ),
                (
                    "mcp_audit_sink_errors_total",
                    "Failed sink writes (retried).",
                    |l| l.errors,
                ),
                (
                    "mcp_audit_sink_dropped_total",
                    "Events given up on (never silent).",
                    |l| l.dropped,
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for l in lanes {
                    let _ = writeln!(out, "{name}{{sink=\"{}\"}} {}", escape(&l.name), get(l));
                }
            }
            out.push_str("# HELP mcp_audit_sink_pending Events queued or spilled, not yet written.\n# TYPE mcp_audit_sink_pending gauge\n");
            for l in lanes {
                let _ = writeln!(
                    out,
                    "mcp_audit_sink_pending{{sink=\"{}\"}} {}",
                    escape(&l.name),
                    l.pending
                );
            }
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

impl AuditSink for Metrics {
    fn write(&self, events: &[Arc<AuditEvent>]) -> Result<(), SinkError> {
        for ev in events {
            self.observe(ev);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_close() {
        let mut h = Histogram::new();
        for i in 1..=1000 {
            h.record(i as f64); // 1..1000 ms
        }
        for (q, want) in [(0.5, 0.5), (0.95, 0.95), (0.99, 0.99)] {
            let got = h.quantile(q);
            assert!((got - want).abs() / want < 0.05, "q{q}: {got} vs {want}");
        }
    }
}

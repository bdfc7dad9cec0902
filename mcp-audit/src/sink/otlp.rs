//! OpenTelemetry export over OTLP HTTP/protobuf: traces, logs and metrics.
//!
//! Traces: for every answered call, four spans with the ids the audit records carry, one per leg
//! (`client_to_gateway` is the server span; `gateway_to_upstream` the client span whose
//! `traceparent` went to the upstream; `upstream_to_gateway` and `gateway_to_client` internal
//! spans), so the trace in the collector joins the audit log by trace and span id. They are handed
//! straight to the OTLP span exporter, in batches, from the sink's worker thread.
//! Logs: one log record per audit event (body = the method, attributes = the main fields, trace
//! context set), through the SDK's batch log processor. Metrics: `mcp.calls`, `mcp.errors`,
//! `mcp.call.duration` (histogram, seconds) and `mcp.tokens`, by server, feature and identity,
//! through a periodic reader.

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity},
    metrics::{Counter, Histogram, MeterProvider as _},
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    logs::SdkLoggerProvider,
    metrics::{PeriodicReader, SdkMeterProvider},
    trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
};
use serde::{Deserialize, Serialize};

use super::{AuditSink, SinkError};
use crate::{AuditEvent, Leg, MessageKind};

/// Settings of the OTLP sink (`[audit.otlp]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`; `/v1/traces`,
    /// `/v1/logs` and `/v1/metrics` are appended.
    pub endpoint: String,
    /// `service.name` of the resource.
    #[serde(default = "default_service")]
    pub service_name: String,
    /// Export traces.
    #[serde(default = "yes")]
    pub traces: bool,
    /// Export logs.
    #[serde(default = "yes")]
    pub logs: bool,
    /// Export metrics.
    #[serde(default = "yes")]
    pub metrics: bool,
    /// Request timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Metric export interval in milliseconds.
    #[serde(default = "default_interval_ms")]
    pub metrics_interval_ms: u64,
    /// Extra HTTP headers (e.g. an API key for the collector).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

fn default_service() -> String {
    "mcp-gateway".into()
}
fn yes() -> bool {
    true
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_interval_ms() -> u64 {
    10_000
}

impl OtlpConfig {
    /// Defaults for an endpoint.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: default_service(),
            traces: true,
            logs: true,
            metrics: true,
            timeout_ms: default_timeout_ms(),
            metrics_interval_ms: default_interval_ms(),
            headers: Default::default(),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        let uri: http::Uri = self
            .endpoint
            .parse()
            .map_err(|e| format!("audit.otlp.endpoint {:?} is not a URL: {e}", self.endpoint))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!(
                "audit.otlp.endpoint {:?} must be an http:// or https:// URL",
                self.endpoint
            ));
        }
        if self.timeout_ms == 0 || self.metrics_interval_ms == 0 {
            return Err("audit.otlp.timeout_ms and metrics_interval_ms must be > 0".into());
        }
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.trim_end_matches('/'))
    }
}

struct Instruments {
    calls: Counter<u64>,
    errors: Counter<u64>,
    duration: Histogram<f64>,
    tokens: Counter<u64>,
}

/// The OTLP sink.
pub struct OtlpSink {
    spans: Option<opentelemetry_otlp::SpanExporter>,
    logs: Option<SdkLoggerProvider>,
    meters: Option<(SdkMeterProvider, Instruments)>,
    scope: InstrumentationScope,
}

impl std::fmt::Debug for OtlpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSink").finish_non_exhaustive()
    }
}

/// The OTLP exporters could not be built.
#[derive(Debug, thiserror::Error)]
#[error("audit OTLP exporter: {0}")]
pub struct OtlpBuildError(String);

impl OtlpSink {
    /// Builds the exporters. Must be called outside an async context only if the blocking HTTP
    /// client is used from it later; the sink itself runs on its own thread.
    pub fn new(config: &OtlpConfig) -> Result<Self, OtlpBuildError> {
        config.validate().map_err(OtlpBuildError)?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let headers: std::collections::HashMap<String, String> =
            config.headers.clone().into_iter().collect();
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let scope = InstrumentationScope::builder("mcp-audit")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let spans = if config.traces {
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(config.url("/v1/traces"))
                .with_timeout(timeout)
                .with_headers(headers.clone())
                .build()
                .map_err(|e| OtlpBuildError(e.to_string()))?;
            exporter.set_resource(&resource);
            Some(exporter)
        } else {
            None
        };
        let logs = if config.logs {
            let exporter = opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_endpoint(config.url("/v1/logs"))
                .with_timeout(timeout)
                .with_headers(headers.clone())
                .build()
                .map_err(|e| OtlpBuildError(e.to_string()))?;
            Some(
                SdkLoggerProvider::builder()
                    .with_resource(resource.clone())
                    .with_batch_exporter(exporter)
                    .build(),
            )
        } else {
            None
        };
        let meters = if config.metrics {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_endpoint(config.url("/v1/metrics"))
                .with_timeout(timeout)
                .with_headers(headers)
                .build()
                .map_err(|e| OtlpBuildError(e.to_string()))?;
            let reader = PeriodicReader::builder(exporter)
                .with_interval(Duration::from_millis(config.metrics_interval_ms))
                .build();
            let provider = SdkMeterProvider::builder()
                .with_resource(resource)
                .with_reader(reader)
                .build();
            let meter = provider.meter_with_scope(scope.clone());
            let instruments = Instruments {
                calls: meter
                    .u64_counter("mcp.calls")
                    .with_description("MCP calls answered")
                    .build(),
                errors: meter
                    .u64_counter("mcp.errors")
                    .with_description("MCP calls answered with an error")
                    .build(),
                duration: meter
                    .f64_histogram("mcp.call.duration")
                    .with_unit("s")
                    .with_description("Total latency of MCP calls")
                    .build(),
                tokens: meter
                    .u64_counter("mcp.tokens")
                    .with_description("Estimated tokens")
                    .build(),
            };
            Some((provider, instruments))
        } else {
            None
        };
        Ok(Self {
            spans,
            logs,
            meters,
            scope,
        })
    }

    fn spans_for(&self, ev: &AuditEvent) -> Vec<SpanData> {
        // Spans are built from answers (which know the whole call) and from reverse-path messages.
        let Some(trace_id) = parse_trace_id(&ev.trace_id) else {
            return Vec::new();
        };
        let end = UNIX_EPOCH + Duration::from_millis(ev.ts_ms);
        let total = Duration::from_secs_f64(ev.total_latency_ms.unwrap_or(0.0).max(0.0) / 1000.0);
        let start = end.checked_sub(total).unwrap_or(end);
        let up = Duration::from_secs_f64(ev.upstream_latency_ms.unwrap_or(0.0).max(0.0) / 1000.0)
            .min(total);
        let attrs = attributes(ev);
        let status = if ev.is_error() {
            Status::error(ev.error_message.clone().unwrap_or_default())
        } else {
            Status::Unset
        };
        let parent = ev.parent_span_id.as_deref().and_then(parse_span_id);
        let span = |id: &str,
                    parent: Option<SpanId>,
                    kind: SpanKind,
                    name: String,
                    start: SystemTime,
                    end: SystemTime| {
            let span_id = parse_span_id(id)?;
            Some(SpanData {
                span_context: SpanContext::new(
                    trace_id,
                    span_id,
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::default(),
                ),
                parent_span_id: parent.unwrap_or(SpanId::INVALID),
                parent_span_is_remote: false,
                span_kind: kind,
                name: Cow::Owned(name),
                start_time: start,
                end_time: end,
                attributes: attrs.clone(),
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: status.clone(),
                instrumentation_scope: self.scope.clone(),
            })
        };
        if ev.kind == MessageKind::Response && ev.leg == Leg::GatewayToClient {
            let s = &ev.spans;
            let root = parse_span_id(&s.client_to_gateway);
            // The upstream wait sits at the end of the call minus the time to answer.
            let up_start = start + (total - up) / 2;
            let up_end = up_start + up;
            [
                span(
                    &s.client_to_gateway,
                    s.caller.as_deref().and_then(parse_span_id),
                    SpanKind::Server,
                    format!("mcp {}", ev.method),
                    start,
                    end,
                ),
                span(
                    &s.gateway_to_upstream,
                    root,
                    SpanKind::Client,
                    format!("upstream {}", ev.server.as_deref().unwrap_or("gateway")),
                    up_start,
                    up_end,
                ),
                span(
                    &s.upstream_to_gateway,
                    parse_span_id(&s.gateway_to_upstream),
                    SpanKind::Internal,
                    "upstream answer".into(),
                    up_end,
                    up_end,
                ),
                span(
                    &s.gateway_to_client,
                    root,
                    SpanKind::Internal,
                    "answer client".into(),
                    up_end,
                    end,
                ),
            ]
            .into_iter()
            .flatten()
            .collect()
        } else if ev.direction == mcp_gateway_core::Direction::Response
            && ev.kind != MessageKind::Response
        {
            span(
                &ev.span_id,
                parent,
                SpanKind::Producer,
                format!("mcp {} (to client)", ev.method),
                start,
                end,
            )
            .into_iter()
            .collect()
        } else {
            Vec::new()
        }
    }
}

fn parse_trace_id(hex: &str) -> Option<TraceId> {
    u128::from_str_radix(hex, 16)
        .ok()
        .filter(|v| *v != 0)
        .map(|v| TraceId::from_bytes(v.to_be_bytes()))
}

fn parse_span_id(hex: &str) -> Option<SpanId> {
    u64::from_str_radix(hex, 16)
        .ok()
        .filter(|v| *v != 0)
        .map(|v| SpanId::from_bytes(v.to_be_bytes()))
}

fn attributes(ev: &AuditEvent) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("mcp.method.name", ev.method.clone()),
        KeyValue::new("mcp.audit.event_id", ev.event_id.clone()),
        KeyValue::new("mcp.audit.leg", ev.leg.as_str()),
    ];
    let mut opt = |k: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            a.push(KeyValue::new(k, v.clone()));
        }
    };
    opt("mcp.session.id", &ev.session_id);
    opt("mcp.server", &ev.server);
    opt("mcp.instance", &ev.instance);
    opt("mcp.feature", &ev.feature);
    opt("mcp.protocol.version", &ev.protocol_version);
    opt("mcp.client.name", &ev.client_name);
    opt("mcp.client.version", &ev.client_version);
    opt("mcp.status", &ev.status);
    opt("user_agent.original", &ev.user_agent);
    opt("client.address", &ev.remote_addr);
    opt("mcp.gateway", &ev.gateway);
    if let Some(id) = &ev.identity {
        a.push(KeyValue::new("enduser.id", id.subject.clone()));
    }
    if let Some(code) = ev.error_code {
        a.push(KeyValue::new("rpc.jsonrpc.error_code", code as i64));
    }
    for (k, v) in [
        ("mcp.tokens.in", ev.tokens_in),
        ("mcp.tokens.out", ev.tokens_out),
        ("mcp.bytes.in", ev.bytes_in),
        ("mcp.bytes.out", ev.bytes_out),
    ] {
        if let Some(v) = v {
            a.push(KeyValue::new(k, v as i64));
        }
    }
    a
}

impl AuditSink for OtlpSink {
    fn write(&self, events: &[Arc<AuditEvent>]) -> Result<(), SinkError> {
        if let Some(logs) = &self.logs {
            let logger = logs.logger_with_scope(self.scope.clone());
            for ev in events {
                let mut rec = logger.create_log_record();
                rec.set_timestamp(UNIX_EPOCH + Duration::from_millis(ev.ts_ms));
                rec.set_severity_number(if ev.is_error() {
                    Severity::Warn
                } else {
                    Severity::Info
                });
                rec.set_body(AnyValue::from(format!(
                    "{} {:?} {:?}",
                    ev.method, ev.kind, ev.leg
                )));
                for kv in attributes(ev) {
                    rec.add_attribute(kv.key, AnyValue::from(kv.value.to_string()));
                }
                if let (Some(t), Some(s)) =
                    (parse_trace_id(&ev.trace_id), parse_span_id(&ev.span_id))
                {
                    rec.set_trace_context(t, s, Some(TraceFlags::SAMPLED));
                }
                logger.emit(rec);
            }
        }
        if let Some((_, inst)) = &self.meters {
            for ev in events
                .iter()
                .filter(|e| e.kind == MessageKind::Response && e.leg == Leg::GatewayToClient)
            {
                let attrs = [
                    KeyValue::new(
                        "server",
                        ev.server.clone().unwrap_or_else(|| "gateway".into()),
                    ),
                    KeyValue::new(
                        "feature",
                        ev.feature.clone().unwrap_or_else(|| ev.method.clone()),
                    ),
                    KeyValue::new("identity", ev.subject().to_owned()),
                ];
                inst.calls.add(1, &attrs);
                if ev.is_error() {
                    inst.errors.add(1, &attrs);
                }
                if let Some(ms) = ev.total_latency_ms {
                    inst.duration.record(ms / 1000.0, &attrs);
                }
                inst.tokens.add(
                    ev.tokens_in.unwrap_or(0) + ev.tokens_out.unwrap_or(0),
                    &attrs,
                );
            }
        }
        if let Some(exporter) = &self.spans {
            let batch: Vec<SpanData> = events.iter().flat_map(|e| self.spans_for(e)).collect();
            if !batch.is_empty() {
                futures::executor::block_on(exporter.export(batch)).map_err(|e| {
                    SinkError::new(0, format!("OTLP trace export failed: {e}"), None)
                })?;
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), SinkError> {
        let mut errors = Vec::new();
        if let Some(logs) = &self.logs
            && let Err(e) = logs.force_flush()
        {
            errors.push(format!("logs: {e}"));
        }
        if let Some((meters, _)) = &self.meters
            && let Err(e) = meters.force_flush()
        {
            errors.push(format!("metrics: {e}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SinkError::new(
                0,
                format!("OTLP flush failed: {}", errors.join("; ")),
                None,
            ))
        }
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        if let Some(logs) = &self.logs {
            let _ = logs.shutdown();
        }
        if let Some((meters, _)) = &self.meters {
            let _ = meters.shutdown();
        }
    }
}

//! The `[audit]` section of the gateway's TOML, and building the audit stack from it.
//!
//! ```toml
//! [audit]
//! gateway = "gw-1"              # recorded as `gateway` when the HTTP adapter names none
//! durability = "written"        # or "queued"
//! queue_capacity = 8192         # per sink
//! overflow = "spill"            # or "block"
//! spill_dir = "/var/lib/mcp-gateway/audit-spill"   # default: <file.dir>/spill
//! record_arguments = true       # scrubbed by the configured scrubber
//! tokens = true                 # o200k_base token estimates
//! metrics = true                # Prometheus registry
//!
//! [audit.file]
//! dir = "/var/log/mcp-gateway/audit"
//! prefix = "audit"
//! max_bytes = 104857600
//! max_age_secs = 86400
//! fsync = "interval"            # "always" | "interval" | "never"
//! fsync_interval_ms = 1000
//!
//! [audit.otlp]
//! endpoint = "http://127.0.0.1:4318"
//! service_name = "mcp-gateway"
//!
//! [audit.alerts]
//! webhook = "https://hooks.example.com/mcp"
//! dedup_window_secs = 300
//! max_per_minute = 30
//! ```

use std::{path::PathBuf, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{
    AuditLayer, Auditor, Durability, LaneConfig, Metrics, Overflow,
    alerts::{AlertConfig, AlertNotifier},
    scrub::SharedScrubber,
    sink::{FileSinkConfig, JsonlFileSink},
    tokens::TokenCounter,
};

/// The queue overflow policy as written in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Wait for room (lose nothing).
    #[default]
    Block,
    /// Spill to disk.
    Spill,
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Whether audit is on.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The gateway name recorded when the HTTP adapter names none.
    #[serde(default)]
    pub gateway: Option<String>,
    /// When answers are released (see [`Durability`]).
    #[serde(default)]
    pub durability: Durability,
    /// Queue capacity per sink, in events.
    #[serde(default = "default_capacity")]
    pub queue_capacity: usize,
    /// What happens when a queue is full.
    #[serde(default)]
    pub overflow: OverflowPolicy,
    /// Spill directory (default `<file.dir>/spill`).
    #[serde(default)]
    pub spill_dir: Option<PathBuf>,
    /// Retries of a failing sink batch before its events are dropped and counted (absent: retry
    /// forever).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Record (scrubbed) arguments.
    #[serde(default = "yes")]
    pub record_arguments: bool,
    /// Token estimates.
    #[serde(default = "yes")]
    pub tokens: bool,
    /// Prometheus metrics.
    #[serde(default = "yes")]
    pub metrics: bool,
    /// The JSON-lines file sink.
    #[serde(default)]
    pub file: Option<FileSinkConfig>,
    /// OTLP export.
    #[cfg(feature = "otlp")]
    #[serde(default)]
    pub otlp: Option<crate::sink::otlp::OtlpConfig>,
    /// Webhook alerts.
    #[serde(default)]
    pub alerts: Option<AlertConfig>,
}

fn yes() -> bool {
    true
}
fn default_capacity() -> usize {
    8192
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            gateway: None,
            durability: Durability::default(),
            queue_capacity: default_capacity(),
            overflow: OverflowPolicy::default(),
            spill_dir: None,
            max_retries: None,
            record_arguments: true,
            tokens: true,
            metrics: true,
            file: None,
            #[cfg(feature = "otlp")]
            otlp: None,
            alerts: None,
        }
    }
}

/// The `[audit]` section is wrong, or a sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting is invalid.
    #[error("invalid [audit] configuration: {0}")]
    Invalid(String),
    /// A sink could not start.
    #[error("audit sink {sink} could not start: {source}")]
    Sink {
        /// Which sink.
        sink: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Everything the gateway wires from `[audit]`.
#[derive(Debug, Clone)]
pub struct AuditStack {
    /// The layer (outermost MCP layer).
    pub layer: AuditLayer,
    /// The queue handle (stats, flush on shutdown).
    pub auditor: Auditor,
    /// The metrics registry, for the Prometheus endpoint
    /// (`metrics.render_prometheus_with(&auditor.stats())`).
    pub metrics: Option<Metrics>,
    /// The alert notifier; call [`AlertNotifier::watch`] with the gateway's event bus.
    pub alerts: Option<AlertNotifier>,
}

impl Config {
    /// Parses the `[audit]` table's TOML text (the table's content, not the whole file).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: Self = toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.queue_capacity == 0 {
            return bad("audit.queue_capacity must be > 0".into());
        }
        if self.overflow == OverflowPolicy::Spill && self.spill_dir.is_none() && self.file.is_none()
        {
            return bad("audit.overflow = \"spill\" needs audit.spill_dir (or an [audit.file] section to default it)".into());
        }
        if let Some(f) = &self.file {
            f.validate().map_err(ConfigError::Invalid)?;
        }
        #[cfg(feature = "otlp")]
        if let Some(o) = &self.otlp {
            o.validate().map_err(ConfigError::Invalid)?;
        }
        if let Some(a) = &self.alerts {
            a.validate().map_err(ConfigError::Invalid)?;
        }
        if self.durability == Durability::Written && self.file.is_none() && self.enabled {
            tracing::warn!(
                "audit.durability = \"written\" without [audit.file]: answers wait for nothing"
            );
        }
        Ok(())
    }

    fn overflow_for(&self) -> Overflow {
        match self.overflow {
            OverflowPolicy::Block => Overflow::Block,
            OverflowPolicy::Spill => Overflow::Spill(
                self.spill_dir
                    .clone()
                    .or_else(|| self.file.as_ref().map(|f| f.dir.join("spill")))
                    .unwrap_or_else(|| PathBuf::from("audit-spill")),
            ),
        }
    }

    /// Starts the sinks and builds the layer. Needs a tokio runtime when alerts are configured.
    pub fn build(&self, scrubber: Option<SharedScrubber>) -> Result<AuditStack, ConfigError> {
        self.validate()?;
        let lane = |name: &str| {
            LaneConfig::new(name)
                .capacity(self.queue_capacity)
                .overflow(self.overflow_for())
                .max_retries(self.max_retries)
        };
        let mut builder = Auditor::builder();
        if self.enabled {
            if let Some(f) = &self.file {
                let sink = JsonlFileSink::open(f.clone()).map_err(|e| ConfigError::Sink {
                    sink: "file",
                    source: e.into(),
                })?;
                builder = builder.sink(lane("file").durable(true), sink);
            }
            #[cfg(feature = "otlp")]
            if let Some(o) = &self.otlp {
                // The exporter's blocking HTTP client must not be built (or dropped) on an async
                // runtime thread: build it on a plain thread; the sink then lives on its worker.
                let o = o.clone();
                let sink = std::thread::spawn(move || crate::sink::otlp::OtlpSink::new(&o))
                    .join()
                    .map_err(|_| {
                        ConfigError::Invalid("the OTLP exporter panicked while starting".into())
                    })?
                    .map_err(|e| ConfigError::Sink {
                        sink: "otlp",
                        source: e.into(),
                    })?;
                builder = builder.sink(lane("otlp"), sink);
            }
        }
        let metrics = (self.enabled && self.metrics).then(Metrics::new);
        if let Some(m) = &metrics {
            builder = builder.sink(lane("metrics").overflow(Overflow::Block), m.clone());
        }
        let alerts = match (&self.alerts, self.enabled) {
            (Some(a), true) => {
                let n = AlertNotifier::spawn(a.clone()).map_err(ConfigError::Invalid)?;
                builder = builder.sink(lane("alerts").overflow(Overflow::Block), n.clone());
                Some(n)
            }
            _ => None,
        };
        let auditor = builder.build().map_err(|e| ConfigError::Sink {
            sink: "queue",
            source: e.into(),
        })?;
        let mut layer = AuditLayer::new(auditor.clone())
            .durability(self.durability)
            .record_arguments(self.record_arguments)
            .tokens(if self.tokens {
                TokenCounter::o200k()
            } else {
                None
            });
        if let Some(g) = &self.gateway {
            layer = layer.gateway(Arc::<str>::from(g.as_str()));
        }
        if let Some(s) = scrubber {
            layer = layer.scrubber(s);
        }
        Ok(AuditStack {
            layer,
            auditor,
            metrics,
            alerts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let c = Config::from_toml(
            r#"
            gateway = "gw"
            overflow = "spill"
            durability = "queued"
            [file]
            dir = "/tmp/x"
            fsync = "always"
            "#,
        )
        .unwrap();
        assert_eq!(c.overflow, OverflowPolicy::Spill);
        assert_eq!(c.file.as_ref().unwrap().fsync, crate::sink::Fsync::Always);
        let e = Config::from_toml("overflow = \"spill\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spill_dir"), "{e}");
        let e = Config::from_toml("queue_capacty = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
        let e = Config::from_toml("[file]\ndir = \"/tmp\"\nmax_bytes = 10")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_bytes"), "{e}");
        let e = Config::from_toml("[alerts]\nwebhook = \"ftp://x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("webhook"), "{e}");
    }
}

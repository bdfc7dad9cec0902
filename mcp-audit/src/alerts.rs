//! Webhook alerts: new features awaiting approval, rug pulls, DLP blocks, upstream outage and
//! recovery, OAuth failures, kill switch use; deduplicated and rate limited.
//!
//! Fed by [`GatewayEvent`]s ([`AlertNotifier::watch`]) and by audit events ([`AlertNotifier`] is
//! an [`AuditSink`]: put it behind a lane). Audit events raise alerts from their annotations:
//! a DLP finding with action `block`; a policy decision or annotation whose rule or key starts
//! with `kill_switch`, `rug_pull`, `pending_approval` or `oauth_failure`; or the JSON-RPC codes
//! `KILL_SWITCH` and `DLP_BLOCKED`. Alerts with the same key within `dedup_window_secs` are sent
//! once (the next one carries the number suppressed); beyond `max_per_minute` alerts are held
//! back, counted and logged, never silently.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mcp_gateway_core::{EventBus, GatewayEvent, codes};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    AuditEvent,
    sink::{AuditSink, SinkError},
};

/// Settings of the notifier (`[audit.alerts]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Where to POST alerts (JSON).
    pub webhook: String,
    /// Same-key alerts within this window are sent once.
    #[serde(default = "default_dedup")]
    pub dedup_window_secs: u64,
    /// At most this many alerts per minute.
    #[serde(default = "default_rate")]
    pub max_per_minute: u32,
    /// Webhook timeout in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_dedup() -> u64 {
    300
}
fn default_rate() -> u32 {
    30
}
fn default_timeout() -> u64 {
    5000
}

impl AlertConfig {
    /// Defaults for a webhook URL.
    pub fn new(webhook: impl Into<String>) -> Self {
        Self {
            webhook: webhook.into(),
            dedup_window_secs: default_dedup(),
            max_per_minute: default_rate(),
            timeout_ms: default_timeout(),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        let uri: http::Uri = self
            .webhook
            .parse()
            .map_err(|e| format!("audit.alerts.webhook {:?} is not a URL: {e}", self.webhook))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!(
                "audit.alerts.webhook {:?} must be http:// or https://",
                self.webhook
            ));
        }
        if self.max_per_minute == 0 {
            return Err("audit.alerts.max_per_minute must be > 0".into());
        }
        Ok(())
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A new or changed feature waits for an administrator's approval.
    PendingApproval,
    /// A tool's definition changed after it was pinned.
    RugPull,
    /// DLP blocked a message.
    DlpBlock,
    /// An upstream went down.
    UpstreamDown,
    /// An upstream recovered.
    UpstreamRecovered,
    /// OAuth failed (caller or upstream).
    OauthFailure,
    /// A kill switch refused a call.
    KillSwitch,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// The deduplication key (kind plus subject of the alert).
    pub key: String,
    /// For humans.
    pub summary: String,
    /// Details (never secret data).
    pub details: Value,
    /// How many same-key alerts were suppressed since the last one sent.
    #[serde(default)]
    pub suppressed: u64,
    /// When (RFC 3339).
    pub timestamp: String,
}

impl Alert {
    /// An alert stamped now.
    pub fn new(kind: AlertKind, subject: &str, summary: impl Into<String>, details: Value) -> Self {
        let ms = mcp_gateway_core::message::unix_millis(std::time::SystemTime::now());
        Self {
            kind,
            key: format!(
                "{}:{subject}",
                serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            summary: summary.into(),
            details,
            suppressed: 0,
            timestamp: crate::time::format_rfc3339_millis(ms),
        }
    }
}

/// Counters of the notifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AlertStats {
    /// Delivered to the webhook.
    pub sent: u64,
    /// Suppressed as duplicates.
    pub deduplicated: u64,
    /// Held back by the rate limit (logged).
    pub rate_limited: u64,
    /// Webhook deliveries that failed after retries (logged).
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    deduplicated: AtomicU64,
    rate_limited: AtomicU64,
    failed: AtomicU64,
}

struct Gate {
    last: HashMap<String, (Instant, u64)>,
    window: Vec<Instant>,
    down: std::collections::HashSet<String>,
}

/// The webhook notifier. Cheap to clone.
#[derive(Clone)]
pub struct AlertNotifier {
    config: Arc<AlertConfig>,
    gate: Arc<Mutex<Gate>>,
    counters: Arc<Counters>,
    tx: mpsc::UnboundedSender<Alert>,
}

impl std::fmt::Debug for AlertNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertNotifier")
            .field("webhook", &self.config.webhook)
            .finish_non_exhaustive()
    }
}

impl AlertNotifier {
    /// Starts the delivery task on the current tokio runtime.
    pub fn spawn(config: AlertConfig) -> Result<Self, String> {
        config.validate()?;
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "the alert notifier needs a tokio runtime".to_owned())?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| format!("alert webhook client: {e}"))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Alert>();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let url = config.webhook.clone();
        handle.spawn(async move {
            while let Some(alert) = rx.recv().await {
                let mut delivered = false;
                for attempt in 0..3u32 {
                    match client.post(&url).header("content-type", "application/json").body(serde_json::to_vec(&alert).unwrap_or_default()).send().await {
                        Ok(r) if r.status().is_success() => {
                            delivered = true;
                            break;
                        }
                        Ok(r) => tracing::warn!(status = %r.status(), attempt, "alert webhook refused the alert"),
                        Err(e) => tracing::warn!(error = %e, attempt, "alert webhook unreachable"),
                    }
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                if delivered {
                    c.sent.fetch_add(1, Ordering::SeqCst);
                } else {
                    c.failed.fetch_add(1, Ordering::SeqCst);
                    tracing::error!(kind = ?alert.kind, key = %alert.key, "alert could not be delivered");
                }
            }
        });
        Ok(Self {
            config: Arc::new(config),
            gate: Arc::new(Mutex::new(Gate {
                last: HashMap::new(),
                window: Vec::new(),
                down: Default::default(),
            })),
            counters,
            tx,
        })
    }

    /// Counters.
    pub fn stats(&self) -> AlertStats {
        let c = &self.counters;
        AlertStats {
            sent: c.sent.load(Ordering::SeqCst),
            deduplicated: c.deduplicated.load(Ordering::SeqCst),
            rate_limited: c.rate_limited.load(Ordering::SeqCst),
            failed: c.failed.load(Ordering::SeqCst),
        }
    }

    /// Offers an alert: deduplicated, rate limited, then queued for delivery. Returns whether it
    /// was queued.
    pub fn offer(&self, mut alert: Alert) -> bool {
        let Ok(mut gate) = self.gate.lock() else {
            return false;
        };
        let now = Instant::now();
        let window = Duration::from_secs(self.config.dedup_window_secs);
        if let Some((at, suppressed)) = gate.last.get_mut(&alert.key)
            && now.duration_since(*at) < window
        {
            *suppressed += 1;
            self.counters.deduplicated.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        gate.window
            .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        if gate.window.len() >= self.config.max_per_minute as usize {
            self.counters.rate_limited.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(kind = ?alert.kind, key = %alert.key, summary = %alert.summary, "alert rate limit reached; alert not sent");
            return false;
        }
        gate.window.push(now);
        let suppressed = gate
            .last
            .insert(alert.key.clone(), (now, 0))
            .map_or(0, |(_, s)| s);
        alert.suppressed = suppressed;
        self.tx.send(alert).is_ok()
    }

    /// Alerts for a gateway event (upstream outage and recovery).
    pub fn on_gateway_event(&self, event: &GatewayEvent) {
        let alert = match event {
            GatewayEvent::UpstreamDown { server, reason } => {
                if let Ok(mut g) = self.gate.lock() {
                    g.down.insert(server.to_string());
                }
                Alert::new(
                    AlertKind::UpstreamDown,
                    server,
                    format!("upstream {server} is down: {reason}"),
                    json!({"server": &**server, "reason": reason}),
                )
            }
            GatewayEvent::UpstreamUp { server } => {
                let was_down = self
                    .gate
                    .lock()
                    .map(|mut g| g.down.remove(&**server))
                    .unwrap_or(false);
                if !was_down {
                    return;
                }
                Alert::new(
                    AlertKind::UpstreamRecovered,
                    server,
                    format!("upstream {server} recovered"),
                    json!({"server": &**server}),
                )
            }
            _ => return,
        };
        self.offer(alert);
    }

    /// Follows the gateway's event bus until it closes.
    pub fn watch(&self, bus: &EventBus) -> tokio::task::JoinHandle<()> {
        let mut rx = bus.subscribe();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => me.on_gateway_event(&ev),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "alert notifier lagged behind the event bus");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    /// The alerts an audit event raises.
    pub fn alerts_for(ev: &AuditEvent) -> Vec<Alert> {
        let mut out = Vec::new();
        let who = ev.subject().to_owned();
        let server = ev.server.clone().unwrap_or_default();
        let feature = ev.feature.clone().unwrap_or_default();
        let base = json!({"server": server, "feature": feature, "identity": who, "method": ev.method, "trace_id": ev.trace_id, "event_id": ev.event_id});
        for d in ev.dlp.iter().filter(|d| d.action == "block") {
            let mut details = base.clone();
            details["detector"] = json!(d.detector);
            details["count"] = json!(d.count);
            out.push(Alert::new(
                AlertKind::DlpBlock,
                &format!("{server}:{feature}:{}", d.detector),
                format!(
                    "DLP blocked {} on {server} {feature} for {who} ({} x {})",
                    ev.method, d.count, d.detector
                ),
                details,
            ));
        }
        let mut keys: Vec<(&str, String)> = ev
            .policy
            .iter()
            .map(|p| (p.rule.as_str(), p.reason.clone()))
            .collect();
        keys.extend(
            ev.annotations
                .iter()
                .map(|a| (a.key.as_str(), a.value.to_string())),
        );
        for (key, reason) in keys {
            let kind = if key.starts_with("kill_switch") {
                AlertKind::KillSwitch
            } else if key.starts_with("rug_pull") {
                AlertKind::RugPull
            } else if key.starts_with("pending_approval") {
                AlertKind::PendingApproval
            } else if key.starts_with("oauth_failure") {
                AlertKind::OauthFailure
            } else {
                continue;
            };
            let mut details = base.clone();
            details["rule"] = json!(key);
            details["reason"] = json!(reason);
            out.push(Alert::new(
                kind,
                &format!("{key}:{server}:{feature}"),
                format!("{key} on {server} {feature} ({who}): {reason}"),
                details,
            ));
        }
        let has = |k: AlertKind| out.iter().any(|a| a.kind == k);
        match ev.error_code {
            Some(codes::KILL_SWITCH) if !has(AlertKind::KillSwitch) => out.push(Alert::new(
                AlertKind::KillSwitch,
                &format!("{server}:{feature}"),
                format!(
                    "kill switch refused {} on {server} {feature} for {who}",
                    ev.method
                ),
                base.clone(),
            )),
            Some(codes::DLP_BLOCKED) if !has(AlertKind::DlpBlock) => out.push(Alert::new(
                AlertKind::DlpBlock,
                &format!("{server}:{feature}"),
                format!("DLP blocked {} on {server} {feature} for {who}", ev.method),
                base.clone(),
            )),
            _ => {}
        }
        out
    }
}

impl AuditSink for AlertNotifier {
    fn write(&self, events: &[Arc<AuditEvent>]) -> Result<(), SinkError> {
        for ev in events {
            for alert in Self::alerts_for(ev) {
                self.offer(alert);
            }
        }
        Ok(())
    }
}

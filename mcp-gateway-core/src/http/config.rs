//! [`HttpConfig`]: how the adapter is configured.

use std::{sync::Arc, time::Duration};

use crate::{events::EventBus, session::SessionKey};

/// Configuration of [`StreamableHttp`](super::StreamableHttp), built with `#[must_use]` methods:
///
/// ```
/// use std::time::Duration;
/// use mcp_gateway_core::{http::HttpConfig, session::SessionKey};
///
/// let config = HttpConfig::new()
///     .path("/mcp")
///     .max_body_bytes(1 << 20)
///     .allowed_host("gateway.example.com")
///     .allowed_origin("https://app.example.com")
///     .session_key(SessionKey::from_bytes([42; 32]))
///     .sse_keep_alive(Some(Duration::from_secs(15)))
///     .idle_timeout(Duration::from_secs(600));
/// assert_eq!(config.get_path(), "/mcp");
/// ```
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub(crate) path: String,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_read_timeout: Duration,
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) session_key: Option<Arc<SessionKey>>,
    pub(crate) sse_keep_alive: Option<Duration>,
    pub(crate) stream_after: Option<Duration>,
    pub(crate) sse_retry: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_session_age: Duration,
    pub(crate) replay_buffer: usize,
    pub(crate) deleted_capacity: usize,
    pub(crate) events: Option<EventBus>,
    pub(crate) gateway_name: Option<Arc<str>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpConfig {
    /// Defaults: path `/mcp`, 4 MiB bodies, localhost hosts and origins only, a random session
    /// key (sessions resume only within this process), 15 s keep-alive, answers slower than
    /// 100 ms streamed with a priming event and a 1 s `retry`, 10 min idle timeout,
    /// 24 h maximum session age, 64 replayable events per session, no event bus.
    pub fn new() -> Self {
        Self {
            path: "/mcp".into(),
            max_body_bytes: 4 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(30),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            session_key: None,
            sse_keep_alive: Some(Duration::from_secs(15)),
            stream_after: Some(Duration::from_millis(100)),
            sse_retry: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(600),
            max_session_age: Duration::from_secs(24 * 3600),
            replay_buffer: 64,
            deleted_capacity: 10_000,
            events: None,
            gateway_name: None,
        }
    }

    /// How long a request body may take to arrive (default 30 s; then 408), so a client that
    /// trickles its body cannot hold the request open.
    #[must_use]
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// The endpoint path (default `/mcp`); other paths get 404.
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The largest request body accepted (default 4 MiB); larger ones get 413.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Allows a `Host` besides the localhost names: `name` (any port), `name:port`, or `*` (any
    /// host: turns the DNS-rebinding check off).
    #[must_use]
    pub fn allowed_host(mut self, host: impl Into<String>) -> Self {
        self.allowed_hosts.push(host.into().to_ascii_lowercase());
        self
    }

    /// Allows an `Origin` besides localhost origins: `scheme://host[:port]`, or `*` (any).
    #[must_use]
    pub fn allowed_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed_origins
            .push(origin.into().trim_end_matches('/').to_ascii_lowercase());
        self
    }

    /// The key that seals session ids; give every replica the same key so sessions resume on
    /// any of them. Default: a random key.
    #[must_use]
    pub fn session_key(mut self, key: SessionKey) -> Self {
        self.session_key = Some(Arc::new(key));
        self
    }

    /// How often an idle SSE stream gets a keep-alive comment (`None`: never).
    #[must_use]
    pub fn sse_keep_alive(mut self, every: Option<Duration>) -> Self {
        self.sse_keep_alive = every;
        self
    }

    /// When a session request's answer takes longer than `after`, the response becomes an SSE
    /// stream that opens with a priming event (an event id, empty data and a `retry` field,
    /// SEP-1699), so a client that loses the connection during a long call can resume it with
    /// `Last-Event-ID`. Faster answers stay plain JSON. `None`: stream only when the call sends
    /// notifications or requests. Stateless (2026-07-28) requests have nothing to resume and are
    /// never switched.
    #[must_use]
    pub fn stream_after(mut self, after: Option<Duration>) -> Self {
        self.stream_after = after;
        self
    }

    /// The reconnection delay the priming event announces (SSE `retry`, default 1 s).
    #[must_use]
    pub fn sse_retry(mut self, retry: Duration) -> Self {
        self.sse_retry = retry;
        self
    }

    /// How long an idle session's in-memory state is kept. A later request with the same sealed
    /// id rebuilds it (as on another replica).
    #[must_use]
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// How long after creation a session id is accepted at all (then 404).
    #[must_use]
    pub fn max_session_age(mut self, age: Duration) -> Self {
        self.max_session_age = age;
        self
    }

    /// How many SSE events each session keeps for `Last-Event-ID` resumption.
    #[must_use]
    pub fn replay_buffer(mut self, events: usize) -> Self {
        self.replay_buffer = events;
        self
    }

    /// How many DELETEd session ids this process remembers (and refuses).
    #[must_use]
    pub fn deleted_capacity(mut self, ids: usize) -> Self {
        self.deleted_capacity = ids;
        self
    }

    /// The event bus whose list changes, resource updates and unsolicited messages reach GET
    /// and `subscriptions/listen` streams.
    #[must_use]
    pub fn events(mut self, bus: EventBus) -> Self {
        self.events = Some(bus);
        self
    }

    /// This gateway instance's name, put in every request's [`Origin`](crate::Origin).
    #[must_use]
    pub fn gateway_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.gateway_name = Some(name.into());
        self
    }

    /// The endpoint path.
    pub fn get_path(&self) -> &str {
        &self.path
    }
}

// === HttpSettings ===

/// The `[http]` section of the gateway's TOML file; [`HttpSettings::into_config`] turns it into
/// an [`HttpConfig`] (the event bus and gateway name are set by the code that assembles the
/// gateway).
///
/// ```
/// use mcp_gateway_core::http::HttpSettings;
///
/// let settings: HttpSettings = toml::from_str(r#"
///     path = "/mcp"
///     max_body_bytes = 1048576
///     allowed_hosts = ["gateway.example.com"]
///     allowed_origins = ["https://app.example.com"]
///     session_key = "0101010101010101010101010101010101010101010101010101010101010101"
///     sse_keep_alive_secs = 15
///     idle_timeout_secs = 600
///     max_session_age_secs = 86400
///     replay_buffer = 64
/// "#).unwrap();
/// let config = settings.into_config().unwrap();
/// assert_eq!(config.get_path(), "/mcp");
/// ```
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Endpoint path (default `/mcp`).
    pub path: Option<String>,
    /// Largest request body in bytes (default 4 MiB).
    pub max_body_bytes: Option<usize>,
    /// Extra allowed `Host` values (`name`, `name:port` or `*`).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Extra allowed `Origin` values (`scheme://host[:port]` or `*`).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The session key, 32 bytes as base64 or 64 hex digits. Prefer `session_key_env`.
    pub session_key: Option<String>,
    /// The name of an environment variable holding the session key.
    pub session_key_env: Option<String>,
    /// SSE keep-alive interval in seconds; 0 turns keep-alives off (default 15).
    pub sse_keep_alive_secs: Option<u64>,
    /// Milliseconds after which a slow answer becomes a resumable SSE stream; 0 turns the
    /// switch off (default 100).
    pub stream_after_ms: Option<u64>,
    /// The `retry` a priming event announces, in milliseconds (default 1000).
    pub sse_retry_ms: Option<u64>,
    /// Idle session timeout in seconds (default 600).
    pub idle_timeout_secs: Option<u64>,
    /// Maximum session age in seconds (default 86400).
    pub max_session_age_secs: Option<u64>,
    /// Replayable SSE events per session (default 64).
    pub replay_buffer: Option<usize>,
}

/// What is wrong with an `[http]` section.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// `path` must start with `/`.
    #[error("http.path must start with '/', got {0:?}")]
    Path(String),
    /// A limit is zero where zero makes no sense.
    #[error("http.{0} must be greater than 0")]
    Zero(&'static str),
    /// Both `session_key` and `session_key_env` were given.
    #[error("http.session_key and http.session_key_env are mutually exclusive")]
    TwoKeys,
    /// The environment variable named by `session_key_env` is not set.
    #[error("http.session_key_env: environment variable {0} is not set")]
    MissingEnv(String),
    /// The key does not decode to 32 bytes.
    #[error("http.session_key: {0}")]
    Key(#[source] crate::session::KeyError),
    /// An allowed host or origin entry is malformed.
    #[error("http.{field}: {value:?} is not valid ({why})")]
    Entry {
        /// `allowed_hosts` or `allowed_origins`.
        field: &'static str,
        /// The entry.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
}

impl HttpSettings {
    /// Validates the section and builds the configuration.
    pub fn into_config(self) -> Result<HttpConfig, SettingsError> {
        let mut config = HttpConfig::new();
        if let Some(path) = self.path {
            if !path.starts_with('/') {
                return Err(SettingsError::Path(path));
            }
            config = config.path(path);
        }
        if let Some(max) = self.max_body_bytes {
            if max == 0 {
                return Err(SettingsError::Zero("max_body_bytes"));
            }
            config = config.max_body_bytes(max);
        }
        for host in self.allowed_hosts {
            if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
                return Err(SettingsError::Entry {
                    field: "allowed_hosts",
                    value: host,
                    why: "expected name, name:port or *",
                });
            }
            config = config.allowed_host(host);
        }
        for origin in self.allowed_origins {
            if origin != "*" && !origin.contains("://") {
                return Err(SettingsError::Entry {
                    field: "allowed_origins",
                    value: origin,
                    why: "expected scheme://host[:port] or *",
                });
            }
            config = config.allowed_origin(origin);
        }
        let key = match (self.session_key, self.session_key_env) {
            (Some(_), Some(_)) => return Err(SettingsError::TwoKeys),
            (Some(k), None) => Some(k),
            (None, Some(var)) => match std::env::var(&var) {
                Ok(k) => Some(k),
                Err(_) => return Err(SettingsError::MissingEnv(var)),
            },
            (None, None) => None,
        };
        if let Some(k) = key {
            config = config.session_key(SessionKey::from_encoded(&k).map_err(SettingsError::Key)?);
        }
        if let Some(ms) = self.stream_after_ms {
            config = config.stream_after((ms > 0).then(|| Duration::from_millis(ms)));
        }
        if let Some(ms) = self.sse_retry_ms {
            config = config.sse_retry(Duration::from_millis(ms));
        }
        if let Some(s) = self.sse_keep_alive_secs {
            config = config.sse_keep_alive((s > 0).then(|| Duration::from_secs(s)));
        }
        if let Some(s) = self.idle_timeout_secs {
            if s == 0 {
                return Err(SettingsError::Zero("idle_timeout_secs"));
            }
            config = config.idle_timeout(Duration::from_secs(s));
        }
        if let Some(s) = self.max_session_age_secs {
            if s == 0 {
                return Err(SettingsError::Zero("max_session_age_secs"));
            }
            config = config.max_session_age(Duration::from_secs(s));
        }
        if let Some(n) = self.replay_buffer {
            config = config.replay_buffer(n);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<HttpConfig, String> {
        let settings: HttpSettings = toml::from_str(s).map_err(|e| e.to_string())?;
        settings.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn settings_validate() {
        assert!(parse("").is_ok());
        assert!(
            parse("pathh = \"/x\"")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            parse("path = \"mcp\"")
                .unwrap_err()
                .contains("must start with '/'")
        );
        assert!(
            parse("max_body_bytes = 0")
                .unwrap_err()
                .contains("max_body_bytes")
        );
        assert!(
            parse("session_key = \"AAAA\"")
                .unwrap_err()
                .contains("32 bytes")
        );
        assert!(
            parse("session_key_env = \"MCP_GW_TEST_SURELY_UNSET_VAR\"")
                .unwrap_err()
                .contains("not set")
        );
        assert!(
            parse("allowed_origins = [\"example.com\"]")
                .unwrap_err()
                .contains("allowed_origins")
        );
        let c = parse("sse_keep_alive_secs = 0\nreplay_buffer = 3").unwrap();
        assert_eq!(c.sse_keep_alive, None);
        assert_eq!(c.replay_buffer, 3);
    }
}

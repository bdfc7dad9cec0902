//! External rule engines: a trait, and an HTTP webhook engine.
//!
//! An external engine (a Presidio-style PII service, a guard model, an in-house checker) sees the
//! content of a message after the built-in detectors ran (so it never sees what they already
//! redacted) and answers a [`Verdict`]. Each engine is wrapped in an [`EngineRule`] with a scope
//! and a [`FailMode`]: when the engine is down, slow or answers garbage, fail-open lets the message
//! pass (and records `engine_error`), fail-closed blocks it.
//!
//! ## Webhook JSON contract
//! The gateway `POST`s `Content-Type: application/json`:
//! ```json
//! {"direction": "request", "method": "tools/call", "server": "crm", "tool": "lookup",
//!  "content": { "arguments": { "q": "..." } }}
//! ```
//! `direction` is `request` (client to upstream) or `response`; `server` and `tool` may be `null`;
//! `content` is the params object (requests, reverse-path messages, without `_meta`) or the result
//! value (responses). The engine answers `200` with one of:
//! ```json
//! {"verdict": "pass"}
//! {"verdict": "modify", "content": { "arguments": { "q": "[NAME]" } }}
//! {"verdict": "block", "reason": "PII: person name"}
//! ```
//! A `modify` must give content of the same JSON type as what was sent. Anything else (another
//! status, a body that is not this JSON, a timeout, a refused connection) is an engine failure
//! and the rule's fail mode decides. The `reason` of a block is passed to the client in
//! `error.data.reason`: engines must not put the data itself there.

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use mcp_gateway_core::Direction;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an engine is asked to inspect.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// Which way the content travels.
    pub direction: Direction,
    /// The JSON-RPC method (`tools/call`, `sampling/createMessage`, ...).
    pub method: String,
    /// The upstream server, if routed.
    pub server: Option<String>,
    /// The tool or prompt name at the upstream, if any.
    pub tool: Option<String>,
    /// The content: params (requests, reverse-path messages) or result (responses).
    pub content: Value,
}

/// An engine's answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Let the content through unchanged.
    Pass,
    /// Replace the content.
    Modify {
        /// The new content (same JSON type as sent).
        content: Value,
    },
    /// Refuse the message.
    Block {
        /// Why, for the client (never the data).
        #[serde(default)]
        reason: Option<String>,
    },
}

/// Why an engine gave no verdict.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The engine did not answer within the timeout.
    #[error("engine `{0}` timed out after {1:?}")]
    Timeout(String, Duration),
    /// The engine could not be reached or the transfer failed.
    #[error("engine `{0}` unreachable: {1}")]
    Unreachable(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    /// The engine answered something that is not a verdict.
    #[error("engine `{0}` answered garbage: {1}")]
    Garbage(String, String),
}

/// An external rule engine. Closures `Fn(Inspection) -> Future<Output = Result<Verdict, EngineError>>`
/// implement it too (see [`engine_fn`]).
#[async_trait]
pub trait ExternalEngine: Send + Sync + 'static {
    /// The engine's name (reported in blocks as `engine:<name>`).
    fn name(&self) -> &str;
    /// Inspects content and gives a verdict.
    async fn inspect(&self, inspection: &Inspection) -> Result<Verdict, EngineError>;
}

/// An [`ExternalEngine`] from a name and an async closure.
pub fn engine_fn<F, Fut>(name: impl Into<String>, f: F) -> FnEngine<F>
where
    F: Fn(Inspection) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Verdict, EngineError>> + Send,
{
    FnEngine {
        name: name.into(),
        f,
    }
}

/// An engine made from a closure; see [`engine_fn`].
pub struct FnEngine<F> {
    name: String,
    f: F,
}

impl<F> fmt::Debug for FnEngine<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnEngine")
            .field("name", &self.name)
            .finish()
    }
}

#[async_trait]
impl<F, Fut> ExternalEngine for FnEngine<F>
where
    F: Fn(Inspection) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Verdict, EngineError>> + Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn inspect(&self, inspection: &Inspection) -> Result<Verdict, EngineError> {
        (self.f)(inspection.clone()).await
    }
}

/// The HTTP webhook engine (see the module docs for the JSON contract).
#[derive(Debug, Clone)]
pub struct WebhookEngine {
    name: String,
    url: reqwest::Url,
    client: reqwest::Client,
    timeout: Duration,
    max_body: usize,
}

impl WebhookEngine {
    /// A webhook engine posting to `url` with a timeout (default client: pooled connections).
    pub fn new(name: impl Into<String>, url: reqwest::Url, timeout: Duration) -> Self {
        Self {
            name: name.into(),
            url,
            client: reqwest::Client::new(),
            timeout,
            max_body: 16 << 20,
        }
    }

    /// Uses a shared HTTP client.
    #[must_use]
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    async fn call(&self, inspection: &Inspection) -> Result<Verdict, EngineError> {
        let body = serde_json::to_vec(inspection)
            .map_err(|e| EngineError::Garbage(self.name.clone(), e.to_string()))?;
        let res = self
            .client
            .post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| EngineError::Unreachable(self.name.clone(), Box::new(e)))?;
        let status = res.status();
        if !status.is_success() {
            return Err(EngineError::Garbage(
                self.name.clone(),
                format!("HTTP status {status}"),
            ));
        }
        let bytes = res
            .bytes()
            .await
            .map_err(|e| EngineError::Unreachable(self.name.clone(), Box::new(e)))?;
        if bytes.len() > self.max_body {
            return Err(EngineError::Garbage(
                self.name.clone(),
                format!("answer of {} bytes is too large", bytes.len()),
            ));
        }
        let verdict: Verdict = serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::Garbage(self.name.clone(), format!("not a verdict: {e}")))?;
        if let Verdict::Modify { content } = &verdict
            && std::mem::discriminant(content) != std::mem::discriminant(&inspection.content)
        {
            return Err(EngineError::Garbage(
                self.name.clone(),
                "modify changed the content's JSON type".into(),
            ));
        }
        Ok(verdict)
    }
}

#[async_trait]
impl ExternalEngine for WebhookEngine {
    fn name(&self) -> &str {
        &self.name
    }

    async fn inspect(&self, inspection: &Inspection) -> Result<Verdict, EngineError> {
        match tokio::time::timeout(self.timeout, self.call(inspection)).await {
            Ok(r) => r,
            Err(_) => Err(EngineError::Timeout(self.name.clone(), self.timeout)),
        }
    }
}

/// What to do when an engine gives no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Let the message pass (the failure is recorded).
    Open,
    /// Block the message.
    #[default]
    Closed,
}

/// An engine with its scope and fail mode.
#[derive(Clone)]
pub struct EngineRule {
    pub(crate) engine: Arc<dyn ExternalEngine>,
    pub(crate) fail: FailMode,
    pub(crate) directions: Vec<Direction>,
    pub(crate) servers: Vec<String>,
    pub(crate) tools: Vec<String>,
    pub(crate) timeout: Option<Duration>,
}

impl fmt::Debug for EngineRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineRule")
            .field("engine", &self.engine.name())
            .field("fail", &self.fail)
            .field("directions", &self.directions)
            .field("servers", &self.servers)
            .field("tools", &self.tools)
            .finish()
    }
}

impl EngineRule {
    /// An engine applied to everything, fail-closed.
    pub fn new(engine: impl ExternalEngine) -> Self {
        Self::from_arc(Arc::new(engine))
    }

    /// Same as [`EngineRule::new`] for a shared engine.
    pub fn from_arc(engine: Arc<dyn ExternalEngine>) -> Self {
        Self {
            engine,
            fail: FailMode::Closed,
            directions: Vec::new(),
            servers: Vec::new(),
            tools: Vec::new(),
            timeout: None,
        }
    }

    /// Sets the fail mode.
    #[must_use]
    pub fn fail(mut self, mode: FailMode) -> Self {
        self.fail = mode;
        self
    }

    /// An overall deadline for this engine, on top of its own (useful for closure engines).
    #[must_use]
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Limits the engine to these directions.
    #[must_use]
    pub fn directions(mut self, d: impl IntoIterator<Item = Direction>) -> Self {
        self.directions = d.into_iter().collect();
        self
    }

    /// Limits the engine to these servers.
    #[must_use]
    pub fn servers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, s: I) -> Self {
        self.servers = s.into_iter().map(Into::into).collect();
        self
    }

    /// Limits the engine to these tools.
    #[must_use]
    pub fn tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, t: I) -> Self {
        self.tools = t.into_iter().map(Into::into).collect();
        self
    }

    pub(crate) fn applies(
        &self,
        direction: Direction,
        server: Option<&str>,
        tool: Option<&str>,
    ) -> bool {
        (self.directions.is_empty() || self.directions.contains(&direction))
            && (self.servers.is_empty()
                || server.is_some_and(|s| self.servers.iter().any(|x| x == s)))
            && (self.tools.is_empty() || tool.is_some_and(|t| self.tools.iter().any(|x| x == t)))
    }

    /// Runs the engine and applies the fail mode: `Ok(verdict)` or, on failure, `Pass` (open) or
    /// `Block` (closed); the error is returned beside for the record.
    pub async fn run(&self, inspection: &Inspection) -> (Verdict, Option<EngineError>) {
        let fut = self.engine.inspect(inspection);
        let result = match self.timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => Err(EngineError::Timeout(self.engine.name().to_string(), t)),
            },
            None => fut.await,
        };
        match result {
            Ok(v) => (v, None),
            Err(e) => match self.fail {
                FailMode::Open => (Verdict::Pass, Some(e)),
                FailMode::Closed => (
                    Verdict::Block {
                        reason: Some(format!(
                            "external engine `{}` gave no verdict (fail-closed)",
                            self.engine.name()
                        )),
                    },
                    Some(e),
                ),
            },
        }
    }

    /// The engine's name.
    pub fn name(&self) -> &str {
        self.engine.name()
    }
}

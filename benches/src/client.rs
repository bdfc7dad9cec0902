//! A minimal MCP client over one raw HTTP/1.1 keep-alive connection, for load generation.
//!
//! Each [`McpClient`] owns one TCP connection (TCP_NODELAY) and sends one request at a time, the
//! way one SDK client with a keep-alive pool does. Two modes:
//!
//! - [`Mode::Session`]: MCP 2025-11-25. `initialize` + `notifications/initialized` open a session;
//!   every call carries `Mcp-Session-Id` and `MCP-Protocol-Version`.
//! - [`Mode::Stateless`]: MCP 2026-07-28. No session; every request carries `_meta` with
//!   `io.modelcontextprotocol/protocolVersion`, `clientInfo` and `clientCapabilities`, and the
//!   `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers.
//!
//! Answers may be `application/json` or `text/event-stream`; [`McpClient::call_echo`] parses either,
//! finds the JSON-RPC response with its id and checks that the echoed text is exactly the message
//! sent. The answer time it returns ends when that response has been parsed; the rest of the body
//! is then read so the connection can carry the next request.

use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::time::Instant;

use crate::sse::SseParser;

/// The protocol revision of [`Mode::Session`].
pub const SESSION_VERSION: &str = "2025-11-25";
/// The protocol revision of [`Mode::Stateless`].
pub const STATELESS_VERSION: &str = "2026-07-28";

/// How the client talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// MCP 2025-11-25 with a session (`initialize` first).
    Session,
    /// MCP 2026-07-28, stateless: per-request `_meta`, no session.
    Stateless,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Session => "session 2025-11-25",
            Mode::Stateless => "stateless 2026-07-28",
        })
    }
}

/// Where the MCP endpoint is, and extra headers for every request.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    uri: Uri,
    host: HeaderValue,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

impl Endpoint {
    /// Parses an `http://HOST:PORT/PATH` URL and resolves its host (once).
    pub async fn resolve(url: &str) -> Result<Self, ClientError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| ClientError::Setup(format!("`{url}`: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(ClientError::Setup(format!("`{url}`: only http:// URLs")));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| ClientError::Setup(format!("`{url}` has no host")))?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await
            .map_err(|e| ClientError::Setup(format!("cannot resolve `{url}`: {e}")))?
            .next()
            .ok_or_else(|| ClientError::Setup(format!("`{url}` resolves to nothing")))?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| ClientError::Setup(format!("`{url}`: {e}")))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let uri = Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|e| ClientError::Setup(format!("`{url}`: {e}")))?;
        Ok(Self {
            addr,
            uri,
            host,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
        })
    }

    /// Adds a header to every request (e.g. `Authorization`).
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// How long one request may take before it counts as failed (default 10 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The resolved socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// Bad URL or header given to the harness.
    Setup(String),
    /// Connecting, writing or reading failed.
    Transport(String),
    /// No complete answer within the endpoint's timeout.
    Timeout,
    /// An HTTP status other than the expected one.
    Status(u16, String),
    /// The body is not a JSON-RPC response to the request (bad JSON, bad SSE, wrong id, ...).
    Protocol(String),
    /// A JSON-RPC error answer.
    Rpc(i64, String),
    /// A tool result with `isError: true`.
    ToolError(String),
    /// The tool answered, but not with the text that was sent.
    Mismatch(String),
}

impl ClientError {
    /// A short name of the error's class, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Setup(_) => "setup",
            ClientError::Transport(_) => "transport",
            ClientError::Timeout => "timeout",
            ClientError::Status(..) => "http-status",
            ClientError::Protocol(_) => "protocol",
            ClientError::Rpc(..) => "json-rpc-error",
            ClientError::ToolError(_) => "tool-error",
            ClientError::Mismatch(_) => "echo-mismatch",
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Setup(m) => write!(f, "setup: {m}"),
            ClientError::Transport(m) => write!(f, "transport: {m}"),
            ClientError::Timeout => f.write_str("timeout"),
            ClientError::Status(s, body) => write!(f, "HTTP {s}: {body}"),
            ClientError::Protocol(m) => write!(f, "protocol: {m}"),
            ClientError::Rpc(code, m) => write!(f, "JSON-RPC error {code}: {m}"),
            ClientError::ToolError(m) => write!(f, "tool error: {m}"),
            ClientError::Mismatch(m) => write!(f, "echo mismatch: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// One MCP client on one connection.
#[derive(Debug)]
pub struct McpClient {
    endpoint: Arc<Endpoint>,
    mode: Mode,
    sender: Option<SendRequest<Full<Bytes>>>,
    session: Option<HeaderValue>,
    protocol: HeaderValue,
    next_id: u64,
    /// Connections opened so far (1 in a healthy run).
    connects: u64,
}

impl McpClient {
    /// Connects and, in [`Mode::Session`], opens a session.
    pub async fn connect(endpoint: Arc<Endpoint>, mode: Mode) -> Result<Self, ClientError> {
        let protocol = HeaderValue::from_static(match mode {
            Mode::Session => SESSION_VERSION,
            Mode::Stateless => STATELESS_VERSION,
        });
        let mut client = Self {
            endpoint,
            mode,
            sender: None,
            session: None,
            protocol,
            next_id: 1,
            connects: 0,
        };
        client.ensure_ready().await?;
        Ok(client)
    }

    /// How many TCP connections this client has opened (more than 1 means the server closed one).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// The session id, in [`Mode::Session`].
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_ref().and_then(|v| v.to_str().ok())
    }

    /// Calls `tools/call echo {message}` and checks the answer. Returns the time from sending the
    /// request to having parsed its response.
    pub async fn call_echo(&mut self, message: &str) -> Result<Duration, ClientError> {
        self.ensure_ready().await?;
        let id = self.take_id();
        let body = echo_request(self.mode, id, message);
        let timeout = self.endpoint.timeout;
        let start = Instant::now();
        let result = tokio::time::timeout(timeout, async {
            let response = self.send(body, Some("echo")).await?;
            let answer = read_answer(response, id).await?;
            let answered = start.elapsed();
            check_echo(&answer, message)?;
            Ok(answered)
        })
        .await;
        match result {
            Ok(Ok(elapsed)) => Ok(elapsed),
            Ok(Err(e)) => {
                self.after_error(&e);
                Err(e)
            }
            Err(_) => {
                // The connection is mid-exchange: start over on a new one.
                self.sender = None;
                Err(ClientError::Timeout)
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn after_error(&mut self, error: &ClientError) {
        match error {
            ClientError::Transport(_) | ClientError::Protocol(_) => self.sender = None,
            // The server forgot the session (restart, expiry): open a new one next time.
            ClientError::Status(404, _) if self.mode == Mode::Session => self.session = None,
            _ => {}
        }
    }

    /// Reconnects if the connection is gone, re-initializes if the session is gone.
    async fn ensure_ready(&mut self) -> Result<(), ClientError> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            self.sender = Some(self.open().await?);
        }
        if self.mode == Mode::Session && self.session.is_none() {
            let timeout = self.endpoint.timeout;
            match tokio::time::timeout(timeout, self.initialize()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.sender = None;
                    return Err(e);
                }
                Err(_) => {
                    self.sender = None;
                    return Err(ClientError::Timeout);
                }
            }
        }
        Ok(())
    }

    async fn open(&mut self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let stream = tokio::net::TcpStream::connect(self.endpoint.addr)
            .await
            .map_err(|e| ClientError::Transport(format!("connect {}: {e}", self.endpoint.addr)))?;
        stream
            .set_nodelay(true)
            .map_err(|e| ClientError::Transport(format!("TCP_NODELAY: {e}")))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Transport(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server closes; errors show up on requests.
            let _ = connection.await;
        });
        self.connects += 1;
        Ok(sender)
    }

    async fn initialize(&mut self) -> Result<(), ClientError> {
        self.session = None;
        self.protocol = HeaderValue::from_static(SESSION_VERSION);
        let id = self.take_id();
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "initialize",
            "params": {
                "protocolVersion": SESSION_VERSION,
                "capabilities": {},
                "clientInfo": client_info(),
            },
        });
        let response = self.send(Bytes::from(body.to_string()), None).await?;
        let session = response.headers().get("mcp-session-id").cloned();
        // A refusal (HTTP status, JSON-RPC error) says more than a missing header.
        let answer = read_answer(response, id).await?;
        if let Some(error) = answer.get("error") {
            let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
            let text = error.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(ClientError::Rpc(code, text.to_owned()));
        }
        let session = session.ok_or_else(|| {
            ClientError::Protocol("initialize answered without Mcp-Session-Id".into())
        })?;
        let version = answer
            .get("result")
            .and_then(|r| r.get("protocolVersion"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ClientError::Protocol(format!(
                    "initialize result without protocolVersion: {answer}"
                ))
            })?;
        self.protocol = HeaderValue::from_str(version)
            .map_err(|_| ClientError::Protocol(format!("bad protocolVersion `{version}`")))?;
        self.session = Some(session);
        let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let response = self
            .send(Bytes::from_static(initialized.as_bytes()), None)
            .await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport(format!("reading body: {e}")))?
            .to_bytes();
        if !status.is_success() {
            self.session = None;
            return Err(ClientError::Status(status.as_u16(), lossy(&body)));
        }
        Ok(())
    }

    async fn send(
        &mut self,
        body: Bytes,
        tool: Option<&str>,
    ) -> Result<Response<Incoming>, ClientError> {
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| ClientError::Transport("not connected".into()))?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.uri.clone())
            .header(header::HOST, self.endpoint.host.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(Full::new(body))
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let headers = request.headers_mut();
        for (name, value) in &self.endpoint.headers {
            headers.append(name.clone(), value.clone());
        }
        if let Some(session) = &self.session {
            headers.insert("mcp-session-id", session.clone());
        }
        if self.session.is_some() || self.mode == Mode::Stateless {
            headers.insert("mcp-protocol-version", self.protocol.clone());
        }
        if let (Mode::Stateless, Some(tool)) = (self.mode, tool) {
            headers.insert("mcp-method", HeaderValue::from_static("tools/call"));
            if let Ok(name) = HeaderValue::from_str(tool) {
                headers.insert("mcp-name", name);
            }
        }
        sender
            .ready()
            .await
            .map_err(|e| ClientError::Transport(format!("connection: {e}")))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Transport(format!("request: {e}")))
    }
}

fn client_info() -> Value {
    serde_json::json!({ "name": "mcp-gateway-load", "version": env!("CARGO_PKG_VERSION") })
}

/// The JSON-RPC body of `tools/call echo {message}` in `mode`.
pub fn echo_request(mode: Mode, id: u64, message: &str) -> Bytes {
    let mut params = serde_json::json!({
        "name": "echo",
        "arguments": { "message": message },
    });
    if mode == Mode::Stateless {
        params["_meta"] = serde_json::json!({
            "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
            "io.modelcontextprotocol/clientInfo": client_info(),
            "io.modelcontextprotocol/clientCapabilities": {},
        });
    }
    let request = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": params,
    });
    Bytes::from(request.to_string())
}

fn lossy(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut text = text.trim().to_owned();
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Reads a JSON or SSE answer until the JSON-RPC response with `id` has arrived, then the rest of
/// the body (so the connection can be reused), and returns that response.
async fn read_answer(response: Response<Incoming>, id: u64) -> Result<Value, ClientError> {
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut body = response.into_body();
    if status != StatusCode::OK {
        let bytes = body
            .collect()
            .await
            .map_err(|e| ClientError::Transport(format!("reading body: {e}")))?
            .to_bytes();
        return Err(ClientError::Status(status.as_u16(), lossy(&bytes)));
    }
    if content_type.starts_with("application/json") {
        let bytes = body
            .collect()
            .await
            .map_err(|e| ClientError::Transport(format!("reading body: {e}")))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("bad JSON ({e}): {}", lossy(&bytes))))?;
        return match_response(value, id)?.ok_or_else(|| {
            ClientError::Protocol(format!("JSON body is not the response to id {id}"))
        });
    }
    if !content_type.starts_with("text/event-stream") {
        return Err(ClientError::Protocol(format!(
            "unexpected Content-Type `{content_type}`"
        )));
    }
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    let mut answer = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Transport(format!("reading SSE: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if answer.is_some() {
            continue; // draining
        }
        parser.push(&data, &mut events);
        for event in events.drain(..) {
            let value: Value = serde_json::from_slice(&event).map_err(|e| {
                ClientError::Protocol(format!("bad JSON in SSE ({e}): {}", lossy(&event)))
            })?;
            if let Some(found) = match_response(value, id)? {
                answer = Some(found);
                break;
            }
        }
    }
    answer.ok_or_else(|| {
        ClientError::Protocol(format!("SSE stream ended without the response to id {id}"))
    })
}

/// `Some(message)` if `message` is the response to `id`; `None` for other messages (notifications,
/// server requests); an error for a batch or a response to another id.
fn match_response(message: Value, id: u64) -> Result<Option<Value>, ClientError> {
    let Value::Object(map) = &message else {
        return Err(ClientError::Protocol(format!(
            "not a JSON-RPC object: {message}"
        )));
    };
    if !map.contains_key("result") && !map.contains_key("error") {
        return Ok(None);
    }
    if map.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(ClientError::Protocol(format!(
            "response to another id (want {id}): {message}"
        )));
    }
    Ok(Some(message))
}

/// Checks that `answer` is a successful `tools/call` result whose text content is `message`.
pub fn check_echo(answer: &Value, message: &str) -> Result<(), ClientError> {
    if let Some(error) = answer.get("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        let text = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        return Err(ClientError::Rpc(code, text));
    }
    let result = answer
        .get("result")
        .ok_or_else(|| ClientError::Protocol(format!("no result: {answer}")))?;
    let text = result
        .get("content")
        .and_then(|c| c.get(0))
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
        .and_then(|block| block.get("text"))
        .and_then(Value::as_str);
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        return Err(ClientError::ToolError(text.unwrap_or("").to_owned()));
    }
    match text {
        Some(text) if text == message => Ok(()),
        Some(text) => Err(ClientError::Mismatch(format!(
            "sent {} bytes, got back {} bytes: {}",
            message.len(),
            text.len(),
            lossy(text.as_bytes())
        ))),
        None => Err(ClientError::Mismatch(format!("no text content: {result}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stateless_request_carries_meta() {
        let body = echo_request(Mode::Stateless, 9, "hi");
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["id"], 9);
        assert_eq!(value["params"]["arguments"]["message"], "hi");
        let meta = &value["params"]["_meta"];
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert!(meta["io.modelcontextprotocol/clientInfo"]["name"].is_string());
        assert!(meta["io.modelcontextprotocol/clientCapabilities"].is_object());
        let session = echo_request(Mode::Session, 9, "hi");
        let value: Value = serde_json::from_slice(&session).unwrap();
        assert!(value["params"].get("_meta").is_none());
    }

    #[test]
    fn check_echo_accepts_only_the_same_text() {
        let ok = serde_json::json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"abc"}]}});
        assert_eq!(check_echo(&ok, "abc"), Ok(()));
        assert_eq!(
            check_echo(&ok, "abd").map_err(|e| e.kind()),
            Err("echo-mismatch")
        );
        let tool_error = serde_json::json!({"id":1,"result":{"isError":true,"content":[{"type":"text","text":"abc"}]}});
        assert_eq!(
            check_echo(&tool_error, "abc").map_err(|e| e.kind()),
            Err("tool-error")
        );
        let rpc = serde_json::json!({"id":1,"error":{"code":-32602,"message":"nope"}});
        assert_eq!(
            check_echo(&rpc, "abc"),
            Err(ClientError::Rpc(-32602, "nope".into()))
        );
    }

    #[test]
    fn match_response_skips_notifications_and_rejects_other_ids() {
        let note =
            serde_json::json!({"jsonrpc":"2.0","method":"notifications/progress","params":{}});
        assert_eq!(match_response(note, 3), Ok(None));
        let other = serde_json::json!({"jsonrpc":"2.0","id":4,"result":{}});
        assert!(match_response(other, 3).is_err());
        let mine = serde_json::json!({"jsonrpc":"2.0","id":3,"result":{}});
        assert!(match_response(mine, 3).unwrap().is_some());
    }
}

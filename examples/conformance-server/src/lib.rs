//! The upstream fixture for the MCP conformance suite (`@modelcontextprotocol/conformance`, server
//! mode): an rmcp server implementing every `test_*` tool, resource and prompt the suite's server
//! scenarios call, over stdio or Streamable HTTP.
//!
//! Run with `cargo run -p conformance-server -- http --port 3002` (or `-- stdio`), then
//! `node tests/peers/node_modules/@modelcontextprotocol/conformance/dist/index.js server --url http://127.0.0.1:3002/mcp`.
//!
//! | kind | names |
//! |---|---|
//! | tools | `test_simple_text`, `test_image_content`, `test_audio_content`, `test_embedded_resource`, `test_multiple_content_types`, `test_tool_with_logging`, `test_tool_with_progress`, `test_error_handling`, `test_sampling`, `test_elicitation`, `test_elicitation_sep1034_defaults`, `test_elicitation_sep1330_enums`, `json_schema_2020_12_tool`, `test_reconnection` (HTTP only: closes its SSE stream mid-call, SEP-1699), `test_trigger_resource_update` |
//! | resources | `test://static-text`, `test://static-binary`, `test://watched-resource` (subscribe / unsubscribe) |
//! | templates | `test://template/{id}/data` |
//! | prompts | `test_simple_prompt`, `test_prompt_with_arguments`, `test_prompt_with_embedded_resource`, `test_prompt_with_image` |
//! | 2026-07-28 | `test_sampling` and the elicitation tools answer with an `InputRequiredResult` (`requestState` [`INPUT_STATE`], one input request keyed [`INPUT_KEY`]) and complete when the client retries with `inputResponses` |
//! | other | `completion/complete`, `logging/setLevel` (every level, filters the tool's log messages), `ping` |
//!
//! # Example
//!
//! ```
//! use conformance_server::ConformanceServer;
//! use rmcp::ServerHandler;
//!
//! let server = ConformanceServer::new();
//! assert!(server.get_info().capabilities.tools.is_some());
//! assert!(conformance_server::tools().iter().any(|tool| tool.name == "test_simple_text"));
//! ```
//!
//! Serving it over Streamable HTTP on a free port:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! println!("listening on http://{}/mcp", listener.local_addr()?);
//! conformance_server::http::serve(listener, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! This crate has no cargo features.

// Logging, sampling, elicitation and resources/subscribe are deprecated by the 2026-07-28 revision,
// but the suite's scenarios (2025-06-18, 2025-11-25) exercise exactly them.
#![allow(deprecated)]

pub mod http;

use std::collections::HashSet;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    CompletionInfo, ContentBlock, CreateMessageRequest, CreateMessageRequestParams, ElicitRequest,
    ElicitRequestParams, GetPromptRequestParams, GetPromptResponse, GetPromptResult,
    Implementation, InputRequest, InputRequests, InputRequiredResult, JsonObject,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    LoggingLevel, LoggingMessageNotificationParam, PaginatedRequestParams,
    ProgressNotificationParam, Prompt, PromptArgument, PromptMessage, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate, ResourceUpdatedNotificationParam, Role, SamplingMessage,
    ServerCapabilities, ServerConfig, SetLevelRequestParams, SubscribeRequestParams, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

/// A 1x1 red pixel PNG, base64.
pub const PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
/// A tiny PCM WAV (8 samples of silence, 8 kHz mono), base64.
pub const WAV_BASE64: &str =
    "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA==";
/// URI of the static text resource.
pub const STATIC_TEXT_URI: &str = "test://static-text";
/// URI of the static binary resource.
pub const STATIC_BINARY_URI: &str = "test://static-binary";
/// URI of the resource clients subscribe to.
pub const WATCHED_URI: &str = "test://watched-resource";
/// URI template of the templated resource.
pub const TEMPLATE_URI: &str = "test://template/{id}/data";
/// How long `test_reconnection` asks the client to wait before reconnecting (SSE `retry`).
pub const RECONNECT_RETRY: Duration = Duration::from_millis(500);

const JSON_SCHEMA_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

fn object(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

fn no_args() -> Arc<JsonObject> {
    object(json!({ "type": "object", "properties": {} }))
}

fn one_string_arg(name: &str, description: &str) -> Arc<JsonObject> {
    object(json!({
        "type": "object",
        "properties": { name: { "type": "string", "description": description } },
        "required": [name]
    }))
}

/// Every tool the fixture lists, in order.
pub fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "test_simple_text",
            "Returns a simple text response.",
            no_args(),
        ),
        Tool::new("test_image_content", "Returns a 1x1 PNG image.", no_args()),
        Tool::new("test_audio_content", "Returns a tiny WAV clip.", no_args()),
        Tool::new(
            "test_embedded_resource",
            "Returns an embedded text resource.",
            no_args(),
        ),
        Tool::new(
            "test_multiple_content_types",
            "Returns text, an image and an embedded resource.",
            no_args(),
        ),
        Tool::new(
            "test_tool_with_logging",
            "Sends three info log messages 50 ms apart while it runs.",
            no_args(),
        ),
        Tool::new(
            "test_tool_with_progress",
            "Reports progress 0, 50 and 100 of 100, 50 ms apart, when given a progress token.",
            no_args(),
        ),
        Tool::new(
            "test_error_handling",
            "Always fails with isError: true.",
            no_args(),
        ),
        Tool::new(
            "test_sampling",
            "Asks the client to sample an LLM completion for `prompt`.",
            one_string_arg("prompt", "The prompt to send to the LLM"),
        ),
        Tool::new(
            "test_elicitation",
            "Asks the client for a username and an e-mail address.",
            one_string_arg("message", "The message to show the user"),
        ),
        Tool::new(
            "test_elicitation_sep1034_defaults",
            "Elicits a form whose fields all carry default values (SEP-1034).",
            no_args(),
        ),
        Tool::new(
            "test_elicitation_sep1330_enums",
            "Elicits a form with the five enum schema variants (SEP-1330).",
            no_args(),
        ),
        Tool::new(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            object(json!({
                "$schema": JSON_SCHEMA_2020_12,
                "type": "object",
                "$defs": {
                    "address": {
                        "type": "object",
                        "properties": {
                            "street": { "type": "string" },
                            "city": { "type": "string" }
                        }
                    }
                },
                "properties": {
                    "name": { "type": "string" },
                    "address": { "$ref": "#/$defs/address" }
                },
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "test_reconnection",
            "Closes its SSE stream mid-call and answers after the client reconnects (SEP-1699; Streamable HTTP only).",
            no_args(),
        ),
        Tool::new(
            "test_trigger_resource_update",
            "Sends notifications/resources/updated for test://watched-resource to subscribers.",
            no_args(),
        ),
    ]
}

/// Every prompt the fixture lists, in order.
pub fn prompts() -> Vec<Prompt> {
    vec![
        Prompt::new(
            "test_simple_prompt",
            Some("A simple prompt without arguments"),
            None,
        ),
        Prompt::new(
            "test_prompt_with_arguments",
            Some("A prompt with two required arguments"),
            Some(vec![
                PromptArgument::new("arg1")
                    .with_description("First test argument")
                    .with_required(true),
                PromptArgument::new("arg2")
                    .with_description("Second test argument")
                    .with_required(true),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_embedded_resource",
            Some("A prompt embedding the resource named by resourceUri"),
            Some(vec![
                PromptArgument::new("resourceUri")
                    .with_description("URI of the resource to embed")
                    .with_required(true),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_image",
            Some("A prompt with an image"),
            None,
        ),
    ]
}

fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

#[derive(Debug)]
struct State {
    /// Lowest level sent to the client (`logging/setLevel`).
    min_level: LoggingLevel,
    subscriptions: HashSet<String>,
    subscriber: Option<Peer<RoleServer>>,
}

/// The conformance fixture. One value serves one MCP session (the HTTP factory builds one per
/// session); clones share state.
#[derive(Debug, Clone)]
pub struct ConformanceServer {
    state: Arc<Mutex<State>>,
    reconnect: Option<Arc<http::ReconnectHandle>>,
}

impl Default for ConformanceServer {
    fn default() -> Self {
        Self::new()
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn text_result(text: impl Into<String>) -> CallToolResponse {
    CallToolResponse::Complete(CallToolResult::success(vec![ContentBlock::text(text)]))
}

fn tool_failure(text: impl Into<String>) -> CallToolResponse {
    CallToolResponse::Complete(CallToolResult::error(vec![ContentBlock::text(text)]))
}

fn string_arg<'a>(args: Option<&'a JsonObject>, name: &str) -> Result<&'a str, McpError> {
    args.and_then(|args| args.get(name))
        .and_then(Value::as_str)
        .ok_or_else(|| McpError::invalid_params(format!("missing string argument `{name}`"), None))
}

fn form_elicitation(message: &str, schema: Value) -> Result<ElicitRequestParams, McpError> {
    serde_json::from_value(json!({
        "mode": "form",
        "message": message,
        "requestedSchema": schema,
    }))
    .map_err(|error| McpError::internal_error(format!("bad elicitation schema: {error}"), None))
}

/// The `requestedSchema` of `test_elicitation`.
pub fn elicitation_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "username": { "type": "string", "description": "User's response" },
            "email": { "type": "string", "description": "User's email address" }
        },
        "required": ["username", "email"]
    })
}

/// The `requestedSchema` of `test_elicitation_sep1034_defaults`.
pub fn sep1034_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "description": "User name", "default": "John Doe" },
            "age": { "type": "integer", "description": "User age", "default": 30 },
            "score": { "type": "number", "description": "User score", "default": 95.5 },
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active"
            },
            "verified": { "type": "boolean", "description": "Verification status", "default": true }
        },
        "required": []
    })
}

/// The `requestedSchema` of `test_elicitation_sep1330_enums`.
pub fn sep1330_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "untitledSingle": {
                "type": "string",
                "description": "Untitled single-select",
                "enum": ["option1", "option2", "option3"]
            },
            "titledSingle": {
                "type": "string",
                "description": "Titled single-select",
                "oneOf": [
                    { "const": "value1", "title": "First Option" },
                    { "const": "value2", "title": "Second Option" },
                    { "const": "value3", "title": "Third Option" }
                ]
            },
            "legacyEnum": {
                "type": "string",
                "description": "Legacy titled enum",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"]
            },
            "untitledMulti": {
                "type": "array",
                "description": "Untitled multi-select",
                "items": { "type": "string", "enum": ["option1", "option2", "option3"] }
            },
            "titledMulti": {
                "type": "array",
                "description": "Titled multi-select",
                "items": {
                    "anyOf": [
                        { "const": "value1", "title": "First Choice" },
                        { "const": "value2", "title": "Second Choice" },
                        { "const": "value3", "title": "Third Choice" }
                    ]
                }
            }
        },
        "required": []
    })
}

/// The `requestState` the fixture sends with its 2026-07-28 `InputRequiredResult`s.
pub const INPUT_STATE: &str = "conformance-input-1";
/// The key of the fixture's single input request in an `InputRequiredResult`.
pub const INPUT_KEY: &str = "input";

/// 2026-07-28 and later forbid server-to-client requests: the tool answers with an
/// `InputRequiredResult` and completes when the client retries with `inputResponses`.
fn is_stateless(context: &RequestContext<RoleServer>) -> bool {
    context
        .protocol_version()
        .is_some_and(|version| version >= ProtocolVersion::V_2026_07_28)
}

/// The response to `request` on a 2026-07-28 round trip: the `InputRequiredResult` on the first
/// round, the client's response on the retry.
fn input_round(
    request: &CallToolRequestParams,
    input: InputRequest,
) -> Result<Result<Value, CallToolResponse>, McpError> {
    match (
        request.request_state.as_deref(),
        request.input_responses.as_ref(),
    ) {
        (Some(INPUT_STATE), Some(responses)) => {
            responses.get(INPUT_KEY).cloned().map(Ok).ok_or_else(|| {
                McpError::invalid_params(format!("inputResponses lacks `{INPUT_KEY}`"), None)
            })
        }
        (None, _) => {
            let mut requests = InputRequests::new();
            requests.insert(INPUT_KEY.to_owned(), input);
            Ok(Err(CallToolResponse::InputRequired(
                InputRequiredResult::new(Some(requests), Some(INPUT_STATE.to_owned())),
            )))
        }
        (Some(other), _) => Err(McpError::invalid_params(
            format!("unknown requestState {other:?}"),
            None,
        )),
    }
}

fn sampled_text(value: &Value) -> String {
    let content = &value["content"];
    let block = if content.is_array() {
        &content[0]
    } else {
        content
    };
    block["text"].as_str().unwrap_or_default().to_owned()
}

// === impl ConformanceServer ===

impl ConformanceServer {
    /// A fixture for one session, without `test_reconnection` support (stdio).
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                min_level: LoggingLevel::Debug,
                subscriptions: HashSet::new(),
                subscriber: None,
            })),
            reconnect: None,
        }
    }

    /// A fixture whose `test_reconnection` closes SSE streams through `handle` (HTTP).
    pub fn with_reconnect(handle: Arc<http::ReconnectHandle>) -> Self {
        Self {
            reconnect: Some(handle),
            ..Self::new()
        }
    }

    async fn log(&self, peer: &Peer<RoleServer>, level: LoggingLevel, message: &str) {
        if severity(level) < severity(lock(&self.state).min_level) {
            return;
        }
        let param = LoggingMessageNotificationParam::new(level, Value::String(message.to_owned()))
            .with_logger("conformance-server");
        if let Err(error) = peer.notify_logging_message(param).await {
            tracing::warn!(%error, "could not send a log message");
        }
    }

    async fn with_logging(&self, context: &RequestContext<RoleServer>) -> CallToolResponse {
        self.log(&context.peer, LoggingLevel::Info, "Tool execution started")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.log(&context.peer, LoggingLevel::Info, "Tool processing data")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.log(
            &context.peer,
            LoggingLevel::Info,
            "Tool execution completed",
        )
        .await;
        text_result("Tool with logging executed successfully")
    }

    async fn with_progress(&self, context: &RequestContext<RoleServer>) -> CallToolResponse {
        let token = context.meta.get_progress_token();
        for (step, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
            if step > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(token) = &token {
                let param = ProgressNotificationParam::new(token.clone(), progress)
                    .with_total(100.0)
                    .with_message(format!("{progress}% done"));
                if let Err(error) = context.peer.notify_progress(param).await {
                    tracing::warn!(%error, "could not send a progress notification");
                }
            }
        }
        text_result("Tool with progress executed successfully")
    }

    async fn sampling(
        &self,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let prompt = string_arg(request.arguments.as_ref(), "prompt")?;
        let params = CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], 100);
        if is_stateless(context) {
            let input = InputRequest::CreateMessage(CreateMessageRequest::new(params));
            return Ok(match input_round(request, input)? {
                Ok(response) => text_result(format!("LLM response: {}", sampled_text(&response))),
                Err(input_required) => input_required,
            });
        }
        let supported = context
            .peer
            .peer_info()
            .is_some_and(|info| info.capabilities.sampling.is_some());
        if !supported {
            return Ok(tool_failure("The client does not support sampling"));
        }
        match context.peer.create_message(params).await {
            Ok(result) => {
                let text = result
                    .message
                    .content
                    .first()
                    .and_then(|content| content.as_text())
                    .map(|text| text.text.clone())
                    .unwrap_or_default();
                Ok(text_result(format!("LLM response: {text}")))
            }
            Err(error) => Ok(tool_failure(format!("Sampling failed: {error}"))),
        }
    }

    async fn elicit(
        &self,
        context: &RequestContext<RoleServer>,
        message: &str,
        schema: Value,
        prefix: &str,
        request: &CallToolRequestParams,
    ) -> Result<CallToolResponse, McpError> {
        if is_stateless(context) {
            let input =
                InputRequest::Elicitation(ElicitRequest::new(form_elicitation(message, schema)?));
            return Ok(match input_round(request, input)? {
                Ok(response) => {
                    let action = response["action"].as_str().unwrap_or("unknown");
                    let content = response.get("content").cloned().unwrap_or(Value::Null);
                    text_result(format!("{prefix}action={action}, content={content}"))
                }
                Err(input_required) => input_required,
            });
        }
        let supported = context
            .peer
            .peer_info()
            .is_some_and(|info| info.capabilities.elicitation.is_some());
        if !supported {
            return Ok(tool_failure("The client does not support elicitation"));
        }
        let params = form_elicitation(message, schema)?;
        match context.peer.create_elicitation(params).await {
            Ok(result) => {
                let action = serde_json::to_value(&result.action).unwrap_or(Value::Null);
                let action = action.as_str().unwrap_or("unknown").to_owned();
                let content = result.content.unwrap_or(Value::Null);
                Ok(text_result(format!(
                    "{prefix}action={action}, content={content}"
                )))
            }
            Err(error) => Ok(tool_failure(format!("Elicitation failed: {error}"))),
        }
    }

    async fn reconnection(&self, context: &RequestContext<RoleServer>) -> CallToolResponse {
        let Some(handle) = &self.reconnect else {
            return tool_failure("test_reconnection needs the Streamable HTTP transport");
        };
        match handle
            .close_stream_and_await_resume(context, 4 * RECONNECT_RETRY)
            .await
        {
            Ok(()) => {
                // Answered on the stream the client resumed with Last-Event-ID.
                text_result("Reconnection test completed successfully")
            }
            Err(error) => tool_failure(format!("could not close the SSE stream: {error}")),
        }
    }

    async fn trigger_update(&self) -> CallToolResponse {
        let peer = {
            let state = lock(&self.state);
            if state.subscriptions.contains(WATCHED_URI) {
                state.subscriber.clone()
            } else {
                None
            }
        };
        match peer {
            Some(peer) => {
                match peer
                    .notify_resource_updated(ResourceUpdatedNotificationParam::new(WATCHED_URI))
                    .await
                {
                    Ok(()) => text_result(format!("sent an update for {WATCHED_URI}")),
                    Err(error) => tool_failure(format!("could not notify: {error}")),
                }
            }
            None => text_result(format!("nobody is subscribed to {WATCHED_URI}")),
        }
    }
}

fn embedded_text(uri: &str, mime: &str, text: &str) -> ContentBlock {
    ContentBlock::resource(ResourceContents::text(text, uri).with_mime_type(mime))
}

fn not_found(uri: &str) -> McpError {
    McpError::resource_not_found(
        format!("Resource not found: {uri}"),
        Some(json!({ "uri": uri })),
    )
}

// === impl ServerHandler for ConformanceServer ===

impl ServerHandler for ConformanceServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_completions()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new(
            "conformance-server",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions("The MCP conformance suite's server fixture, written with rmcp.")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|tool| tool.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = request.arguments.as_ref();
        Ok(match request.name.as_ref() {
            "test_simple_text" => text_result("This is a simple text response for testing."),
            "test_image_content" => {
                CallToolResponse::Complete(CallToolResult::success(vec![ContentBlock::image(
                    PNG_BASE64,
                    "image/png",
                )]))
            }
            "test_audio_content" => {
                CallToolResponse::Complete(CallToolResult::success(vec![ContentBlock::audio(
                    WAV_BASE64,
                    "audio/wav",
                )]))
            }
            "test_embedded_resource" => {
                CallToolResponse::Complete(CallToolResult::success(vec![embedded_text(
                    "test://embedded-resource",
                    "text/plain",
                    "This is an embedded resource content.",
                )]))
            }
            "test_multiple_content_types" => {
                CallToolResponse::Complete(CallToolResult::success(vec![
                    ContentBlock::text("Multiple content types test:"),
                    ContentBlock::image(PNG_BASE64, "image/png"),
                    embedded_text(
                        "test://mixed-content-resource",
                        "application/json",
                        r#"{"test":"data","value":123}"#,
                    ),
                ]))
            }
            "test_tool_with_logging" => self.with_logging(&context).await,
            "test_tool_with_progress" => self.with_progress(&context).await,
            "test_error_handling" => {
                tool_failure("This tool intentionally returns an error for testing")
            }
            "test_sampling" => self.sampling(&request, &context).await?,
            "test_elicitation" => {
                let message = string_arg(args, "message")?.to_owned();
                self.elicit(
                    &context,
                    &message,
                    elicitation_schema(),
                    "User response: ",
                    &request,
                )
                .await?
            }
            "test_elicitation_sep1034_defaults" => {
                self.elicit(
                    &context,
                    "Test client default value handling - please accept with defaults",
                    sep1034_schema(),
                    "Elicitation completed: ",
                    &request,
                )
                .await?
            }
            "test_elicitation_sep1330_enums" => {
                self.elicit(
                    &context,
                    "Test enum schema variants - please choose",
                    sep1330_schema(),
                    "Elicitation completed: ",
                    &request,
                )
                .await?
            }
            "json_schema_2020_12_tool" => {
                let args = args.cloned().unwrap_or_default();
                text_result(format!("Received: {}", Value::Object(args)))
            }
            "test_reconnection" => self.reconnection(&context).await,
            "test_trigger_resource_update" => self.trigger_update().await,
            other => {
                return Err(McpError::invalid_params(
                    format!("Unknown tool: {other}"),
                    Some(json!({ "name": other })),
                ));
            }
        })
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(STATIC_TEXT_URI, "static-text")
                .with_description("A static text resource")
                .with_mime_type("text/plain"),
            Resource::new(STATIC_BINARY_URI, "static-binary")
                .with_description("A static binary resource (a PNG)")
                .with_mime_type("image/png"),
            Resource::new(WATCHED_URI, "watched-resource")
                .with_description("A resource clients can subscribe to")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(TEMPLATE_URI, "template-data")
                .with_description("Data for an id")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri.as_str();
        let contents = match uri {
            STATIC_TEXT_URI => {
                ResourceContents::text("This is the content of the static text resource.", uri)
                    .with_mime_type("text/plain")
            }
            STATIC_BINARY_URI => {
                ResourceContents::blob(PNG_BASE64, uri).with_mime_type("image/png")
            }
            WATCHED_URI => ResourceContents::text("Watched resource content.", uri)
                .with_mime_type("text/plain"),
            _ => {
                let id = uri
                    .strip_prefix("test://template/")
                    .and_then(|rest| rest.strip_suffix("/data"))
                    .filter(|id| !id.is_empty() && !id.contains('/'))
                    .ok_or_else(|| not_found(uri))?;
                let text = json!({
                    "id": id,
                    "templateTest": true,
                    "data": format!("Data for ID: {id}"),
                })
                .to_string();
                ResourceContents::text(text, uri).with_mime_type("application/json")
            }
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let mut state = lock(&self.state);
        state.subscriptions.insert(request.uri);
        state.subscriber = Some(context.peer);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        lock(&self.state).subscriptions.remove(&request.uri);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let args = request.arguments.as_ref();
        let messages = match request.name.as_str() {
            "test_simple_prompt" => vec![PromptMessage::new_text(
                Role::User,
                "This is a simple prompt for testing.",
            )],
            "test_prompt_with_arguments" => {
                let arg1 = string_arg(args, "arg1")?;
                let arg2 = string_arg(args, "arg2")?;
                vec![PromptMessage::new_text(
                    Role::User,
                    format!("Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"),
                )]
            }
            "test_prompt_with_embedded_resource" => {
                let uri = string_arg(args, "resourceUri")?;
                vec![
                    PromptMessage::new(
                        Role::User,
                        embedded_text(uri, "text/plain", "Embedded resource content for testing."),
                    ),
                    PromptMessage::new_text(
                        Role::User,
                        "Please process the embedded resource above.",
                    ),
                ]
            }
            "test_prompt_with_image" => vec![
                PromptMessage::new(Role::User, ContentBlock::image(PNG_BASE64, "image/png")),
                PromptMessage::new_text(Role::User, "Please analyze the image above."),
            ],
            other => {
                return Err(McpError::invalid_params(
                    format!("Unknown prompt: {other}"),
                    Some(json!({ "name": other })),
                ));
            }
        };
        Ok(GetPromptResult::new(messages).into())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let candidates: &[&str] = match (
            request.r#ref.as_prompt_name(),
            request.r#ref.as_resource_uri(),
            request.argument.name.as_str(),
        ) {
            (Some("test_prompt_with_arguments"), _, "arg1" | "arg2") => {
                &["paris", "park", "party", "test", "testValue1", "testValue2"]
            }
            (Some("test_prompt_with_embedded_resource"), _, "resourceUri") => {
                &[STATIC_TEXT_URI, STATIC_BINARY_URI, WATCHED_URI]
            }
            (_, Some(TEMPLATE_URI), "id") => &["1", "2", "3", "123"],
            _ => &[],
        };
        let prefix = request.argument.value.as_str();
        let values = candidates
            .iter()
            .filter(|candidate| candidate.starts_with(prefix))
            .map(|candidate| (*candidate).to_owned())
            .collect();
        let info = CompletionInfo::with_all_values(values)
            .map_err(|message| McpError::internal_error(message, None))?;
        Ok(CompleteResult::new(info))
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        lock(&self.state).min_level = request.level;
        Ok(())
    }
}

/// Serves the fixture on stdin/stdout until the client disconnects.
pub async fn run_stdio() -> Result<(), Box<dyn Error + Send + Sync>> {
    let service = ConformanceServer::new()
        .serve(rmcp::transport::stdio())
        .await?;
    service.waiting().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elicitation_schemas_survive_rmcp_types() {
        // The SEP-1034/1330 scenarios check the wire schema field by field: rmcp's typed schema
        // must not drop anything (defaults, oneOf, enumNames, items.anyOf).
        for schema in [elicitation_schema(), sep1034_schema(), sep1330_schema()] {
            let params = form_elicitation("m", schema.clone()).expect("schema parses");
            let wire = serde_json::to_value(&params).expect("serializes");
            let properties = &wire["requestedSchema"]["properties"];
            for (name, property) in schema["properties"].as_object().expect("object") {
                for (key, value) in property.as_object().expect("object") {
                    assert_eq!(
                        &properties[name][key], value,
                        "{name}.{key} changed on the wire: {wire}"
                    );
                }
            }
        }
    }

    #[test]
    fn json_schema_2020_12_keywords_are_kept() {
        let tool = tools()
            .into_iter()
            .find(|tool| tool.name == "json_schema_2020_12_tool")
            .expect("listed");
        let wire = serde_json::to_value(&tool).expect("serializes");
        assert_eq!(wire["inputSchema"]["$schema"], JSON_SCHEMA_2020_12);
        assert!(wire["inputSchema"]["$defs"]["address"].is_object());
        assert_eq!(wire["inputSchema"]["additionalProperties"], false);
    }

    #[test]
    fn log_levels_are_ordered() {
        let levels = [
            LoggingLevel::Debug,
            LoggingLevel::Info,
            LoggingLevel::Notice,
            LoggingLevel::Warning,
            LoggingLevel::Error,
            LoggingLevel::Critical,
            LoggingLevel::Alert,
            LoggingLevel::Emergency,
        ];
        for pair in levels.windows(2) {
            assert!(severity(pair[0]) < severity(pair[1]));
        }
    }
}

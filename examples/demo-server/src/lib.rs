//! A small but real stdio MCP server written with rmcp's macros: the upstream that the reference
//! gateway's built-in default config fronts, and a peer for the end-to-end tests.
//!
//! Run with `cargo run -p demo-server` (MCP over stdin/stdout; logs go to stderr only).
//!
//! What it serves:
//!
//! | kind | name | behaviour |
//! |---|---|---|
//! | tool | `echo {message}` | returns `message` |
//! | tool | `add {a, b}` | returns `a + b` |
//! | tool | `slow_count {n, delay_ms}` | counts to `n`, one `notifications/progress` per step when the request carries a progress token |
//! | tool | `whoami` | the `DEMO_USER` environment variable, or `anonymous` |
//! | tool | `contact_card {name}` | text with a fake e-mail address and phone number (for DLP demos) |
//! | tool | `write_note {id, text}` | stores a note; subscribers of `demo://notes/{id}` get `notifications/resources/updated` |
//! | prompt | `greeting {name}` | a greeting; `completion/complete` suggests names for `name` |
//! | resource | `demo://readme` | a text resource |
//! | template | `demo://notes/{id}` | the note stored under `id` |
//!
//! `resources/subscribe` and `resources/unsubscribe` are supported, and so is `logging/setLevel`.
//!
//! # Example
//!
//! Embedding the server in another binary (the gateway runs it as a hidden subcommand):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! demo_server::run_stdio().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Serving it over any other rmcp transport:
//!
//! ```
//! use rmcp::ServerHandler;
//!
//! let server = demo_server::DemoServer::new();
//! let info = server.get_info();
//! assert_eq!(info.server_info.name, "demo-server");
//! ```
//!
//! # Cargo features
//!
//! This crate has no cargo features.

// Logging, resources/subscribe and friends are deprecated by the 2026-07-28 revision but are what
// 2025-xx clients use; this server speaks both.
#![allow(deprecated)]

use std::collections::{BTreeMap, HashSet};
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, CompleteRequestParams, CompleteResult, CompletionInfo, ContentBlock,
    Implementation, ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ProgressNotificationParam, PromptMessage, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, RequestMetaObject, Resource, ResourceContents, ResourceTemplate,
    ResourceUpdatedNotificationParam, Role, ServerCapabilities, ServerConfig,
    SetLevelRequestParams, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt, prompt, prompt_handler,
    prompt_router, tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// URI of the readme resource.
pub const README_URI: &str = "demo://readme";
/// URI template of the notes resources.
pub const NOTES_TEMPLATE: &str = "demo://notes/{id}";
const NOTES_PREFIX: &str = "demo://notes/";
/// Text of the readme resource.
pub const README_TEXT: &str = "demo-server: a small MCP server for trying the gateway. \
Tools: echo, add, slow_count, whoami, contact_card, write_note.";
/// Names offered by `completion/complete` for the `greeting` prompt's `name` argument.
pub const GREETING_NAMES: &[&str] = &["Ada", "Alan", "Alice", "Bob", "Carol", "Dave", "Grace"];
/// Largest `n` accepted by `slow_count`.
pub const MAX_COUNT: u64 = 10_000;
/// Largest `delay_ms` accepted by `slow_count`.
pub const MAX_DELAY_MS: u64 = 60_000;

/// Arguments of `echo`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct EchoArgs {
    /// The text to send back.
    pub message: String,
}

/// Arguments of `add`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AddArgs {
    /// First addend.
    pub a: f64,
    /// Second addend.
    pub b: f64,
}

/// Arguments of `slow_count`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SlowCountArgs {
    /// How many steps to count (at most 10000).
    pub n: u64,
    /// Delay before each step, in milliseconds (at most 60000; default 100).
    #[serde(default = "default_delay")]
    pub delay_ms: u64,
}

fn default_delay() -> u64 {
    100
}

/// Arguments of `contact_card`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ContactCardArgs {
    /// Whose card to make up.
    pub name: String,
}

/// Arguments of `write_note`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteNoteArgs {
    /// The note's id: it is readable as `demo://notes/{id}`.
    pub id: String,
    /// The note's text.
    pub text: String,
}

/// Arguments of the `greeting` prompt.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct GreetingArgs {
    /// Whom to greet.
    pub name: String,
}

#[derive(Debug, Default)]
struct State {
    notes: BTreeMap<String, String>,
    subscriptions: HashSet<String>,
    peer: Option<Peer<RoleServer>>,
}

/// The demo MCP server. Cheap to clone: clones share notes and subscriptions.
#[derive(Debug, Clone)]
pub struct DemoServer {
    state: Arc<Mutex<State>>,
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

impl Default for DemoServer {
    fn default() -> Self {
        Self::new()
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain data behind: keep serving.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// === impl DemoServer (tools) ===

#[tool_router]
impl DemoServer {
    /// A new server with no notes and no subscriptions.
    pub fn new() -> Self {
        let mut notes = BTreeMap::new();
        notes.insert(
            "welcome".to_owned(),
            "Welcome to the demo notes.".to_owned(),
        );
        Self {
            state: Arc::new(Mutex::new(State {
                notes,
                ..State::default()
            })),
            tool_router: Self::tool_router(),
            prompt_router: Self::prompt_router(),
        }
    }

    /// Echoes its input.
    #[tool(description = "Echo the message back.")]
    async fn echo(&self, Parameters(args): Parameters<EchoArgs>) -> String {
        args.message
    }

    /// Adds two numbers.
    #[tool(description = "Add two numbers and return the sum.")]
    async fn add(&self, Parameters(args): Parameters<AddArgs>) -> String {
        (args.a + args.b).to_string()
    }

    /// Counts slowly, reporting progress.
    #[tool(
        description = "Count from 1 to n, waiting delay_ms before each step; sends a progress notification per step when the request has a progress token."
    )]
    async fn slow_count(
        &self,
        Parameters(args): Parameters<SlowCountArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        ct: tokio_util::sync::CancellationToken,
    ) -> Result<CallToolResult, McpError> {
        if args.n > MAX_COUNT {
            return Err(McpError::invalid_params(
                format!("n must be at most {MAX_COUNT}"),
                None,
            ));
        }
        if args.delay_ms > MAX_DELAY_MS {
            return Err(McpError::invalid_params(
                format!("delay_ms must be at most {MAX_DELAY_MS}"),
                None,
            ));
        }
        let token = meta.get_progress_token();
        for step in 1..=args.n {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(args.delay_ms)) => {}
                () = ct.cancelled() => {
                    return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                        "cancelled after {} of {} steps", step - 1, args.n
                    ))]));
                }
            }
            if let Some(token) = &token {
                let param = ProgressNotificationParam::new(token.clone(), step as f64)
                    .with_total(args.n as f64)
                    .with_message(format!("step {step} of {}", args.n));
                if let Err(error) = peer.notify_progress(param).await {
                    tracing::warn!(%error, "could not send a progress notification");
                }
            }
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "counted to {}",
            args.n
        ))]))
    }

    /// Who the server runs as.
    #[tool(description = "Return the DEMO_USER environment variable, or \"anonymous\".")]
    async fn whoami(&self) -> String {
        std::env::var("DEMO_USER")
            .ok()
            .filter(|user| !user.is_empty())
            .unwrap_or_else(|| "anonymous".to_owned())
    }

    /// A made-up contact card (DLP demos look for its e-mail address and phone number).
    #[tool(
        description = "Return a made-up contact card with an e-mail address and a phone number."
    )]
    async fn contact_card(&self, Parameters(args): Parameters<ContactCardArgs>) -> String {
        contact_card_text(&args.name)
    }

    /// Stores a note and notifies subscribers of its URI.
    #[tool(
        description = "Store a note readable as demo://notes/{id}; subscribers get resources/updated."
    )]
    async fn write_note(
        &self,
        Parameters(args): Parameters<WriteNoteArgs>,
    ) -> Result<String, McpError> {
        if args.id.is_empty() || args.id.contains('/') {
            return Err(McpError::invalid_params(
                "id must be non-empty and contain no '/'",
                None,
            ));
        }
        let uri = format!("{NOTES_PREFIX}{}", args.id);
        let notify = {
            let mut state = lock(&self.state);
            state.notes.insert(args.id.clone(), args.text);
            if state.subscriptions.contains(&uri) {
                state.peer.clone()
            } else {
                None
            }
        };
        if let Some(peer) = notify
            && let Err(error) = peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri.clone()))
                .await
        {
            tracing::warn!(%error, "could not send resources/updated");
        }
        Ok(format!("stored {uri}"))
    }
}

/// The text `contact_card` returns for `name`: a fake e-mail address and phone number.
pub fn contact_card_text(name: &str) -> String {
    let handle: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    let handle = if handle.is_empty() {
        "someone".to_owned()
    } else {
        handle
    };
    format!("Name: {name}\nEmail: {handle}@example.com\nPhone: +1-555-010-4477")
}

// === impl DemoServer (prompts) ===

// The `prompt` macro generates a public `*_prompt_attr` function without docs.
#[allow(missing_docs)]
#[prompt_router]
impl DemoServer {
    /// A greeting prompt.
    #[prompt(name = "greeting", description = "Greet someone by name.")]
    async fn greeting(&self, Parameters(args): Parameters<GreetingArgs>) -> Vec<PromptMessage> {
        vec![PromptMessage::new_text(
            Role::User,
            format!("Please write a short, friendly greeting for {}.", args.name),
        )]
    }
}

fn not_found(uri: &str) -> McpError {
    McpError::resource_not_found(
        format!("no resource {uri}"),
        Some(serde_json::json!({ "uri": uri })),
    )
}

// === impl ServerHandler for DemoServer ===

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for DemoServer {
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
        .with_server_info(Implementation::new("demo-server", env!("CARGO_PKG_VERSION")))
        .with_instructions("A demo MCP server: echo, add, slow_count, whoami, contact_card, write_note; prompt greeting; resources demo://readme and demo://notes/{id}.")
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let mut resources = vec![
            Resource::new(README_URI, "readme")
                .with_description("What this server offers")
                .with_mime_type("text/plain"),
        ];
        let notes: Vec<String> = lock(&self.state).notes.keys().cloned().collect();
        for id in notes {
            resources.push(
                Resource::new(format!("{NOTES_PREFIX}{id}"), format!("note {id}"))
                    .with_description("A stored note")
                    .with_mime_type("text/plain"),
            );
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(NOTES_TEMPLATE, "note")
                .with_description("A note stored with write_note")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri.as_str();
        let text = if uri == README_URI {
            README_TEXT.to_owned()
        } else if let Some(id) = uri.strip_prefix(NOTES_PREFIX) {
            lock(&self.state)
                .notes
                .get(id)
                .cloned()
                .ok_or_else(|| not_found(uri))?
        } else {
            return Err(not_found(uri));
        };
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, uri).with_mime_type("text/plain"),
        ])
        .into())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let uri = request.uri;
        if uri != README_URI && !uri.starts_with(NOTES_PREFIX) {
            return Err(not_found(&uri));
        }
        let mut state = lock(&self.state);
        state.subscriptions.insert(uri);
        state.peer = Some(context.peer);
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        lock(&self.state).subscriptions.remove(&request.uri);
        Ok(())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let values = match request.r#ref.as_prompt_name() {
            Some("greeting") if request.argument.name == "name" => {
                let prefix = request.argument.value.to_lowercase();
                GREETING_NAMES
                    .iter()
                    .filter(|name| name.to_lowercase().starts_with(&prefix))
                    .map(|name| (*name).to_owned())
                    .collect()
            }
            _ => Vec::new(),
        };
        let info = CompletionInfo::with_all_values(values)
            .map_err(|message| McpError::internal_error(message, None))?;
        Ok(CompleteResult::new(info))
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        tracing::info!(level = ?request.level, "client set the log level");
        Ok(())
    }
}

/// Serves the demo server on stdin/stdout until the client disconnects.
///
/// Logs go to stderr through `tracing` (the caller installs a subscriber if it wants them).
pub async fn run_stdio() -> Result<(), Box<dyn Error + Send + Sync>> {
    let service = DemoServer::new().serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_card_has_an_email_and_a_phone_number() {
        let card = contact_card_text("Ada Lovelace");
        assert!(card.contains("Name: Ada Lovelace"));
        assert!(card.contains("Email: adalovelace@example.com"), "{card}");
        assert!(card.contains("Phone: +1-555-010-4477"), "{card}");
        assert!(contact_card_text("!!").contains("someone@example.com"));
    }

    #[test]
    fn tools_and_prompts_are_routed() {
        let server = DemoServer::new();
        let mut tools: Vec<String> = server
            .tool_router
            .list_all()
            .into_iter()
            .map(|tool| tool.name.into_owned())
            .collect();
        tools.sort();
        assert_eq!(
            tools,
            [
                "add",
                "contact_card",
                "echo",
                "slow_count",
                "whoami",
                "write_note"
            ]
        );
        let prompts: Vec<String> = server
            .prompt_router
            .list_all()
            .into_iter()
            .map(|prompt| prompt.name)
            .collect();
        assert_eq!(prompts, ["greeting"]);
    }
}

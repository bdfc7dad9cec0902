//! The way back to the client: what an upstream sends while (or after) serving a request.
//!
//! The HTTP adapter gives every message a [`Downstream`] in its context. When an upstream sends a
//! progress notification, a log message or a server-to-client request (sampling, elicitation,
//! roots) while serving that message, dispatch delivers it through this handle, so it reaches the
//! client on the right stream. Layers that govern content (audit, DLP) wrap the handle before
//! calling inward, so the reverse path passes through them too.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use serde_json::Value;

use crate::message::{BoxError, ErrorData, JsonObject};

/// A message an upstream sends towards the client.
#[derive(Debug, Clone)]
pub struct ServerMessage {
    /// The upstream server that sent it (`None` when the gateway itself speaks).
    pub server: Option<Arc<str>>,
    /// The JSON-RPC method (`notifications/progress`, `sampling/createMessage`, ...).
    pub method: String,
    /// The params, already mapped to the client's view (progress tokens, names).
    pub params: JsonObject,
}

/// The client side of a request: where its reverse-path messages go.
#[async_trait]
pub trait Downstream: Send + Sync + 'static {
    /// Sends a notification to the client. Fails only when the client is gone.
    async fn notify(&self, message: ServerMessage) -> Result<(), BoxError>;

    /// Sends a request to the client (sampling, elicitation, roots) and waits for its answer.
    /// `Err(BoxError)` when the client is gone or cannot be asked (e.g. a stateless client).
    async fn request(&self, message: ServerMessage) -> Result<Result<Value, ErrorData>, BoxError>;
}

impl fmt::Debug for dyn Downstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Downstream")
    }
}

#[async_trait]
impl<D: Downstream + ?Sized> Downstream for Arc<D> {
    async fn notify(&self, message: ServerMessage) -> Result<(), BoxError> {
        (**self).notify(message).await
    }

    async fn request(&self, message: ServerMessage) -> Result<Result<Value, ErrorData>, BoxError> {
        (**self).request(message).await
    }
}

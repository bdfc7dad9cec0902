//! The gateway's client side towards one upstream: what it does with messages the upstream sends.
//!
//! Sampling, roots and logging are deprecated by SEP-2577 but still spoken by 2025 servers, so the
//! gateway keeps relaying them.
#![allow(deprecated)]

use std::sync::{Arc, Weak};

use rmcp::{
    ClientHandler,
    model::{
        ClientCapabilities, ClientConfig, CreateMessageRequestParams, CreateMessageResult,
        CustomNotification, ElicitRequestParams, ElicitResult, Implementation, ListRootsResult,
        LoggingMessageNotificationParam, ProgressNotificationParam,
        ResourceUpdatedNotificationParam,
    },
    service::{InboundStreamOrigin, NotificationContext, RequestContext, RoleClient},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{Shared, inflight::Origin};
use crate::{
    downstream::ServerMessage,
    events::GatewayEvent,
    message::{ErrorData, JsonObject, codes, error},
};

/// Handles what an upstream sends to the gateway: relays it to the right downstream client.
pub struct UpstreamHandler {
    shared: Weak<Shared>,
    config: ClientConfig,
}

impl UpstreamHandler {
    pub(crate) fn new(shared: Weak<Shared>) -> Self {
        let capabilities: ClientCapabilities = serde_json::from_value(serde_json::json!({
            "sampling": {},
            "elicitation": {"form": {}, "url": {}},
            "roots": {"listChanged": true},
        }))
        .unwrap_or_default();
        let mut config = ClientConfig::new(
            capabilities,
            Implementation::new("mcp-gateway", env!("CARGO_PKG_VERSION")),
        );
        config.protocol_version = rmcp::model::ProtocolVersion::LATEST_WITH_INITIALIZE;
        Self { shared, config }
    }

    fn shared(&self) -> Option<Arc<Shared>> {
        self.shared.upgrade()
    }

    fn server(&self) -> Option<Arc<str>> {
        self.shared().map(|s| s.config.name.clone())
    }

    /// The downstream request this upstream request belongs to.
    fn origin(&self, ctx: &RequestContext<RoleClient>) -> Option<Origin> {
        let shared = self.shared()?;
        let id = match ctx.extensions.get::<InboundStreamOrigin>() {
            Some(InboundStreamOrigin::OutboundRequest(id)) => Some(id),
            _ => None,
        };
        shared.inflight.origin(id)
    }

    /// Relays a server-to-client request to the downstream client and decodes its answer.
    async fn relay<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: P,
        ctx: RequestContext<RoleClient>,
    ) -> Result<R, ErrorData> {
        let Some(downstream) = self.origin(&ctx).and_then(|o| o.downstream) else {
            return Err(error(
                codes::METHOD_NOT_FOUND,
                format!("{method}: no client is waiting on this server's request"),
                None,
            ));
        };
        let params = to_object(params)?;
        let message = ServerMessage {
            server: self.server(),
            method: method.to_owned(),
            params,
        };
        let answer = tokio::select! {
            a = downstream.request(message) => a,
            _ = ctx.ct.cancelled() => return Err(error(codes::INTERNAL_ERROR, "cancelled by the server", None)),
        };
        match answer {
            Ok(Ok(value)) => serde_json::from_value(value).map_err(|e| {
                error(
                    codes::INVALID_PARAMS,
                    format!("the client's answer to {method} is malformed: {e}"),
                    None,
                )
            }),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(error(
                codes::METHOD_NOT_FOUND,
                format!("{method}: the client cannot be asked ({e})"),
                None,
            )),
        }
    }

    async fn forward_notification(&self, origin: Option<Origin>, method: &str, params: JsonObject) {
        let message = ServerMessage {
            server: self.server(),
            method: method.to_owned(),
            params,
        };
        match origin.and_then(|o| o.downstream) {
            Some(d) => {
                let _ = d.notify(message).await;
            }
            None => {
                if let Some(s) = self.shared() {
                    s.events.publish(GatewayEvent::Unsolicited(message));
                }
            }
        }
    }

    fn list_changed(&self) {
        if let Some(s) = self.shared() {
            let _ = s.refresh.send(s.config.name.clone());
        }
    }
}

fn to_object<P: Serialize>(params: P) -> Result<JsonObject, ErrorData> {
    match serde_json::to_value(params) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Ok(JsonObject::new()),
        Err(e) => Err(error(
            codes::INTERNAL_ERROR,
            format!("cannot encode params: {e}"),
            None,
        )),
    }
}

impl ClientHandler for UpstreamHandler {
    fn get_info(&self) -> ClientConfig {
        self.config.clone()
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        self.relay("sampling/createMessage", params, context).await
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.relay("elicitation/create", request, context).await
    }

    async fn list_roots(
        &self,
        context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        self.relay("roots/list", JsonObject::new(), context).await
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let Some(shared) = self.shared() else { return };
        let Some(origin) = shared.inflight.by_token(&params.progress_token) else {
            return;
        };
        // The client asked for no progress: rmcp always sends a token upstream, so drop it here.
        let Some(token) = origin.client_token.clone() else {
            return;
        };
        let Ok(mut object) = to_object(&params) else {
            return;
        };
        object.insert("progressToken".into(), token);
        let progress = origin.progress.clone();
        self.forward_notification(Some(origin), "notifications/progress", object)
            .await;
        progress.delivered(params.progress, params.total);
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        context: NotificationContext<RoleClient>,
    ) {
        let origin = match context.extensions.get::<InboundStreamOrigin>() {
            Some(InboundStreamOrigin::OutboundRequest(id)) => {
                self.shared().and_then(|s| s.inflight.origin(Some(id)))
            }
            _ => None,
        };
        let Ok(object) = to_object(&params) else {
            return;
        };
        self.forward_notification(origin, "notifications/message", object)
            .await;
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let Some(shared) = self.shared() else { return };
        let uri = shared.naming.expose_uri(&shared.config.name, &params.uri);
        let Ok(mut object) = to_object(&params) else {
            return;
        };
        object.insert("uri".into(), Value::String(uri.clone()));
        shared.events.publish(GatewayEvent::ResourceUpdated {
            uri,
            message: ServerMessage {
                server: Some(shared.config.name.clone()),
                method: "notifications/resources/updated".into(),
                params: object,
            },
        });
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed();
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed();
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed();
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _context: NotificationContext<RoleClient>,
    ) {
        let params = match notification.params {
            Some(Value::Object(o)) => o,
            _ => JsonObject::new(),
        };
        self.forward_notification(None, &notification.method, params)
            .await;
    }
}

//! Gateway-wide events: what upstreams announce to every client (list changes, resource updates),
//! and what operators want to hear about (upstream outage and recovery).
//!
//! Dispatch publishes; the HTTP adapter forwards to open sessions (GET streams and
//! `subscriptions/listen` streams); audit and alerts may subscribe too.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::downstream::ServerMessage;

/// An event on the gateway's bus.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum GatewayEvent {
    /// The merged tool, prompt or resource list changed; carries the notification to send
    /// (`notifications/tools/list_changed`, ...).
    ListChanged(ServerMessage),
    /// An upstream says a resource changed; only sessions subscribed to `uri` (the client-facing
    /// URI) get the notification.
    ResourceUpdated {
        /// The client-facing URI.
        uri: String,
        /// The notification to send.
        message: ServerMessage,
    },
    /// A message from an upstream that is tied to no request (e.g. a log message on its own
    /// stream): delivered to every session's standalone stream.
    Unsolicited(ServerMessage),
    /// An upstream went down.
    UpstreamDown {
        /// The server.
        server: Arc<str>,
        /// Why, for humans.
        reason: String,
    },
    /// An upstream is serving (again).
    UpstreamUp {
        /// The server.
        server: Arc<str>,
    },
}

/// A cloneable handle to the event bus.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<GatewayEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl EventBus {
    /// A bus that buffers up to `capacity` events for slow subscribers (who then skip ahead).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// Publishes an event; returns quietly when nobody listens.
    pub fn publish(&self, event: GatewayEvent) {
        let _ = self.tx.send(event);
    }

    /// Subscribes to future events.
    pub fn subscribe(&self) -> broadcast::Receiver<GatewayEvent> {
        self.tx.subscribe()
    }
}

//! The fixture over Streamable HTTP: rmcp's `StreamableHttpService` (legacy sessions on) behind
//! hyper, with TCP_NODELAY on accepted sockets, and a session manager that lets
//! `test_reconnection` close its own SSE stream (SEP-1699).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rmcp::RoleServer;
use rmcp::model::{ClientJsonRpcMessage, RequestId, ServerJsonRpcMessage};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;

use crate::{ConformanceServer, RECONNECT_RETRY};

type StreamKey = (SessionId, RequestId);
type StreamMap = Arc<Mutex<HashMap<StreamKey, u64>>>;

/// Why `test_reconnection` could not close its stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconnectError {
    /// The request did not come over HTTP with an `Mcp-Session-Id` header.
    #[error("the request has no Mcp-Session-Id header")]
    NoSession,
    /// No open POST stream is known for this request.
    #[error("no open SSE stream for this request")]
    NoStream,
    /// The session worker refused.
    #[error("session error: {0}")]
    Session(#[source] io::Error),
}

/// rmcp's [`LocalSessionManager`], plus a record of which POST stream carries which JSON-RPC
/// request, so a handler can close the stream of the request it is serving.
#[derive(Debug, Default)]
pub struct ReconnectHandle {
    inner: LocalSessionManager,
    streams: StreamMap,
    /// Woken whenever a client resumes a stream with `Last-Event-ID`.
    resumed: tokio::sync::Notify,
}

fn lock(
    map: &Mutex<HashMap<StreamKey, u64>>,
) -> std::sync::MutexGuard<'_, HashMap<StreamKey, u64>> {
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Forget {
    streams: StreamMap,
    key: Option<StreamKey>,
}

impl Drop for Forget {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(&self.streams).remove(&key);
        }
    }
}

// === impl ReconnectHandle ===

impl ReconnectHandle {
    /// A session manager with no sessions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes the SSE stream that carries `context`'s request (see [`Self::close_stream_of`]),
    /// then waits until the client has resumed a stream with `Last-Event-ID`, at most `patience`.
    ///
    /// rmcp 3.9's session worker drops a request's channel, replay cache included, as soon as
    /// the answer is sent on it, so an answer sent before the client comes back is lost to a
    /// client that honours `retry` (rmcp's own client waits the full [`RECONNECT_RETRY`]; the
    /// conformance suite's client reconnects at once). Answering after the resume works for both.
    pub async fn close_stream_and_await_resume(
        &self,
        context: &RequestContext<RoleServer>,
        patience: std::time::Duration,
    ) -> Result<(), ReconnectError> {
        let resumed = self.resumed.notified();
        tokio::pin!(resumed);
        resumed.as_mut().enable();
        self.close_stream_of(context).await?;
        // A client that never resumes still gets its answer cached after `patience`.
        let _ = tokio::time::timeout(patience, resumed).await;
        Ok(())
    }

    /// Closes the SSE stream that carries `context`'s request, after a priming event that asks
    /// the client to reconnect after [`RECONNECT_RETRY`].
    pub async fn close_stream_of(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<(), ReconnectError> {
        let session: SessionId = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.headers.get("mcp-session-id"))
            .and_then(|value| value.to_str().ok())
            .map(Into::into)
            .ok_or(ReconnectError::NoSession)?;
        let http_request_id = lock(&self.streams)
            .remove(&(session.clone(), context.id.clone()))
            .ok_or(ReconnectError::NoStream)?;
        let handle = self
            .inner
            .sessions
            .read()
            .await
            .get(&session)
            .cloned()
            .ok_or(ReconnectError::NoSession)?;
        handle
            .close_sse_stream(http_request_id, Some(RECONNECT_RETRY))
            .await
            .map_err(|error| ReconnectError::Session(error.into()))
    }
}

impl SessionManager for ReconnectHandle {
    type Error = LocalSessionManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.inner.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        lock(&self.streams).retain(|(session, _), _| session != id);
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        // Same steps as LocalSessionManager::create_stream, recording the stream's id first so
        // the handler can find it.
        let handle = self
            .inner
            .sessions
            .read()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| LocalSessionManagerError::SessionNotFound(id.clone()))?;
        let receiver = handle.establish_request_wise_channel().await?;
        let http_request_id = receiver.http_request_id;
        let mut forget = Forget {
            streams: self.streams.clone(),
            key: None,
        };
        if let (ClientJsonRpcMessage::Request(request), Some(stream)) = (&message, http_request_id)
        {
            let key = (id.clone(), request.id.clone());
            lock(&self.streams).insert(key.clone(), stream);
            forget.key = Some(key);
        }
        handle.push_message(message, http_request_id).await?;
        Ok(
            tokio_stream::wrappers::ReceiverStream::new(receiver.inner).map(move |event| {
                let _keep = &forget;
                event
            }),
        )
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.inner.resume(id, last_event_id).await?;
        self.resumed.notify_waiters();
        Ok(stream)
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        self.inner.restore_session(id).await
    }
}

/// The fixture as a tower service: `POST/GET/DELETE /mcp` (any path is accepted).
pub fn service(
    config: StreamableHttpServerConfig,
) -> StreamableHttpService<ConformanceServer, ReconnectHandle> {
    let sessions = Arc::new(ReconnectHandle::new());
    let for_factory = sessions.clone();
    StreamableHttpService::new(
        move || Ok(ConformanceServer::with_reconnect(for_factory.clone())),
        sessions,
        config,
    )
}

/// The configuration [`serve`] uses: legacy sessions on, loopback `Host` names only.
pub fn config() -> StreamableHttpServerConfig {
    StreamableHttpServerConfig::default().with_legacy_session_mode(true)
}

/// Serves the fixture on `listener` until `shutdown` completes. Sets TCP_NODELAY on every
/// accepted socket.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let config = config();
    let cancel = config.cancellation_token.clone();
    let service = TowerToHyperService::new(service(config));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, %peer, "could not set TCP_NODELAY");
        }
        let service = service.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    cancel.cancel();
    Ok(())
}

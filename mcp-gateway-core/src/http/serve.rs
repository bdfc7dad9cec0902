//! [`serve`]: accept TCP connections and serve HTTP/1.1 with a tower service.

use std::{
    convert::Infallible,
    future::Future,
    io,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use bytes::Bytes;
use http_body::Body;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tower::{Service, ServiceExt};

use crate::message::BoxError;

/// How long [`serve`] waits for in-flight requests after `shutdown` fires.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// How long [`serve`] gives a client to send a request's headers (slowloris defence); an idle
/// keep-alive connection is closed after the same time.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Connections that [`serve`] holds open right now, across every `serve` of this process
/// (exported as a gauge; a fault test checks that it returns to its baseline).
pub fn open_connections() -> usize {
    OPEN_CONNECTIONS.load(Ordering::Relaxed)
}

struct Counted;

impl Counted {
    fn new() -> Self {
        OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How [`serve_with`] serves.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long in-flight requests may run after shutdown ([`DEFAULT_GRACE`]).
    pub grace: Duration,
    /// How long a client may take to send request headers ([`DEFAULT_HEADER_READ_TIMEOUT`]).
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// Serves `svc` on `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish (at most [`DEFAULT_GRACE`]) and returns.
///
/// Every accepted socket gets `TCP_NODELAY` (without it, SSE replies made of several small
/// writes meet the client's delayed ACK: ~44 ms per call), connections are HTTP/1.1 with
/// keep-alive, and each request carries the peer's [`std::net::SocketAddr`] in its extensions.
pub async fn serve<S, B>(
    listener: TcpListener,
    svc: S,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    serve_with(listener, svc, shutdown, ServeOptions::default()).await
}

/// [`serve`] with a chosen grace period for in-flight requests at shutdown.
pub async fn serve_with_grace<S, B>(
    listener: TcpListener,
    svc: S,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let options = ServeOptions {
        grace,
        ..ServeOptions::default()
    };
    serve_with(listener, svc, shutdown, options).await
}

/// [`serve`] with chosen [`ServeOptions`].
pub async fn serve_with<S, B>(
    listener: TcpListener,
    svc: S,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) -> io::Result<()>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and similar: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                let svc = svc.clone();
                let mut stop = stop_rx.clone();
                let counted = Counted::new();
                let header_read_timeout = options.header_read_timeout;
                conns.spawn(async move {
                    let _counted = counted;
                    let hyper_svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                        req.extensions_mut().insert(addr);
                        svc.clone().oneshot(req)
                    });
                    let conn = http1::Builder::new()
                        .keep_alive(true)
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_read_timeout)
                        .serve_connection(TokioIo::new(stream), hyper_svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        res = conn.as_mut() => {
                            if let Err(e) = res {
                                tracing::debug!(error = %e, %addr, "connection ended with an error");
                            }
                        }
                        _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(options.grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            "grace period over: closing the remaining connections"
        );
        conns.abort_all();
    }
    Ok(())
}

//! [`CatalogRelay`]: a loopback endpoint that always reaches a server's catalog instance, so a
//! gateway can list the features of a managed server it cannot run itself (a container image, a
//! command on an SSH host) with an ordinary Streamable HTTP upstream.
//!
//! The gateway's catalog needs one upstream per server to list features from; calls then go to
//! each caller's own instance (the [`crate::ManagedLayer`] picks it). For the local runtime that
//! upstream is one local run of the server's command. For containers and SSH hosts it is this
//! relay: it listens on `127.0.0.1:0`, checks its own random secret (sent by the gateway in the
//! same `x-mcp-bridge-secret` header as an instance's, so a per-instance endpoint replaces it),
//! leases the [`Manager::catalog_instance`] (starting it, or its restarted generation, when
//! needed) and forwards the request with that instance's secret. The instance's address and
//! secret may change on every restart; the relay's never do.
//!
//! ```no_run
//! # async fn run(manager: mcp_managed::Manager) -> Result<(), std::io::Error> {
//! let relay = mcp_managed::relay::CatalogRelay::start(manager, "everything").await?;
//! // An upstream `everything` at relay.url() with header relay.secret_header() lists its tools.
//! # let _ = relay; Ok(()) }
//! ```

use std::{convert::Infallible, fmt, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    bridge::{MAX_BODY, SecretCheck},
    manager::Manager,
    spec::SECRET_HEADER,
};

/// Request headers passed on to the instance (everything else is the relay's business).
const FORWARDED: [header::HeaderName; 2] = [header::CONTENT_TYPE, header::ACCEPT];
const FORWARDED_MCP: [&str; 3] = ["mcp-session-id", "mcp-protocol-version", "last-event-id"];

/// A running relay for one managed server. Stops when dropped.
pub struct CatalogRelay {
    addr: SocketAddr,
    secret: String,
    stop: CancellationToken,
}

impl fmt::Debug for CatalogRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogRelay")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for CatalogRelay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct State {
    manager: Manager,
    server: Arc<str>,
    check: SecretCheck,
}

impl CatalogRelay {
    /// Binds `127.0.0.1:0` and relays to `server`'s catalog instance. Must run inside a tokio
    /// runtime.
    pub async fn start(manager: Manager, server: &str) -> Result<Self, std::io::Error> {
        let other = |m: &str| std::io::Error::other(format!("catalog relay for `{server}`: {m}"));
        manager
            .catalog_instance(server)
            .map_err(|e| other(&e.to_string()))?;
        let mut b = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .map_err(|_| other("no randomness for the secret"))?;
        let secret = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
        let check = SecretCheck::new(&secret).map_err(|_| other("no randomness for the check"))?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            manager,
            server: server.into(),
            check,
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(state, listener, stop.clone()));
        Ok(Self { addr, secret, stop })
    }

    /// The MCP endpoint (`http://127.0.0.1:PORT/mcp`).
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// The header the gateway must send with every request.
    pub fn secret_header(&self) -> (&'static str, &str) {
        (SECRET_HEADER, &self.secret)
    }
}

async fn accept_loop(state: Arc<State>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("catalog relay: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = stop.cancelled() => {}
                r = conn => if let Err(e) = r { tracing::debug!("catalog relay: connection: {e}") },
            }
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let ok = req
        .headers()
        .get(SECRET_HEADER)
        .is_some_and(|v| state.check.check(v.as_bytes()));
    if !ok {
        return text(
            StatusCode::UNAUTHORIZED,
            "missing or wrong shared secret\n".into(),
        );
    }
    let lease = match state.manager.catalog_lease(&state.server).await {
        Ok(l) => l,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n".into()),
    };
    let ep = lease.endpoint();
    match forward(ep, &parts, body).await {
        Ok(res) => res,
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            format!("instance {}/{}: {e}\n", ep.server, ep.instance),
        ),
    }
}

async fn forward(
    ep: &crate::InstanceEndpoint,
    parts: &http::request::Parts,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, mcp_gateway_core::BoxError> {
    let uri: http::Uri = ep.url.parse()?;
    let host = uri
        .authority()
        .ok_or("no host in the instance URL")?
        .to_string();
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(&host),
    )
    .await
    .map_err(|_| "connect timed out")??;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(uri.path())
        .header(header::HOST, &host)
        .header(ep.secret_header.0.clone(), ep.secret_header.1.clone());
    for name in FORWARDED {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    for name in FORWARDED_MCP {
        if let Some(v) = parts.headers.get(name) {
            out = out.header(name, v);
        }
    }
    let res = sender.send_request(out.body(Full::new(body))?).await?;
    let (mut parts, body) = res.into_parts();
    // Hop-by-hop framing is the relay's own.
    for h in [
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::CONNECTION,
    ] {
        parts.headers.remove(h);
    }
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Response::from_parts(parts, Full::new(bytes)))
}

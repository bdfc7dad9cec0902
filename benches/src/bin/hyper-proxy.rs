//! Run with `cargo run --release -p mcp-gateway-benches --bin hyper-proxy -- --upstream
//! http://127.0.0.1:PORT/mcp --port 0`.
//!
//! A bare hyper 1 reverse proxy with no MCP logic: the yardstick "one reverse-proxy hop" of the
//! load bench. Every request (method, path and query, headers, streamed body) goes to one upstream
//! over a pooled keep-alive client; the response (status, headers, streamed body, SSE included)
//! comes back as it arrives. Hop-by-hop headers are dropped and `Host` is set to the upstream's
//! authority, as nginx does by default. TCP_NODELAY on both sides. Prints `listening on
//! http://ADDR` once it accepts connections; stops on Ctrl-C or SIGTERM.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header, uri::Authority};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mcp_gateway_benches::shutdown_signal;

#[derive(Parser, Debug)]
#[command(
    name = "hyper-proxy",
    about = "A bare hyper reverse proxy to one upstream."
)]
struct Args {
    /// The upstream, e.g. `http://127.0.0.1:3001` (a path here is ignored: the request's path is
    /// forwarded unchanged).
    #[arg(long)]
    upstream: String,
    /// Port on 127.0.0.1 (0 = pick a free one; the chosen address is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

struct Proxy {
    client: Client<HttpConnector, Incoming>,
    scheme: http::uri::Scheme,
    authority: Authority,
    host: HeaderValue,
}

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in `Connection` are hop-by-hop too.
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in listed {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // hyper frames bodies itself (chunked or content-length).
    headers.remove(header::TRANSFER_ENCODING);
}

fn bad_gateway(message: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(message))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

impl Proxy {
    async fn forward(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build();
        parts.uri = match uri {
            Ok(uri) => uri,
            Err(e) => return bad_gateway(format!("cannot build the upstream URI: {e}")),
        };
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(header::HOST, self.host.clone());
        parts.version = http::Version::HTTP_11;
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.boxed())
            }
            Err(e) => bad_gateway(format!("upstream request failed: {e}")),
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hyper-proxy: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper-proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let upstream: Uri = args
        .upstream
        .parse()
        .map_err(|e| format!("--upstream `{}`: {e}", args.upstream))?;
    if upstream.scheme_str() != Some("http") {
        return Err(format!("--upstream `{}`: only http:// is supported", args.upstream).into());
    }
    let authority = upstream
        .authority()
        .cloned()
        .ok_or_else(|| format!("--upstream `{}` has no host", args.upstream))?;
    let host = HeaderValue::from_str(authority.as_str())?;

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector);
    let proxy = Arc::new(Proxy {
        client,
        scheme: http::uri::Scheme::HTTP,
        authority,
        host,
    });

    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    eprintln!("hyper-proxy: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("hyper-proxy: cannot set TCP_NODELAY: {e}");
        }
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.forward(request).await) }
            });
            // Errors here are a client going away mid-request: nothing to do.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    Ok(())
}

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mcp_gateway_core::{BoxError, McpRequest, McpResponse, Method};
use serde_json::{Value, json};

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "mcp-audit-{name}-{}-{}",
            std::process::id(),
            mcp_gateway_core::TraceContext::new_root().span_id_hex()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn tool_call(id: i64, name: &str, args: Value) -> McpRequest {
    let mut params = serde_json::Map::new();
    params.insert("name".into(), name.into());
    params.insert("arguments".into(), args);
    McpRequest::new(
        Some(mcp_gateway_core::RequestId::Number(id)),
        Method::ToolsCall,
        params,
    )
}

/// An inner service that echoes the arguments as text content.
pub async fn echo(req: McpRequest) -> Result<McpResponse, BoxError> {
    let text = serde_json::to_string(&req.params.get("arguments")).unwrap_or_default();
    Ok(req.reply(json!({"content": [{"type": "text", "text": text}]})))
}

/// Received HTTP requests: (path, body).
pub type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A tiny HTTP server on 127.0.0.1 that records every request and answers 200 `{}`.
/// Also sends each request on the channel.
pub async fn http_receiver() -> (
    SocketAddr,
    Received,
    tokio::sync::mpsc::UnboundedReceiver<(String, Bytes)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let rec = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let rec = rec.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let rec = rec.clone();
                        let tx = tx.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            rec.lock().unwrap().push((path.clone(), body.clone()));
                            let _ = tx.send((path, body));
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, received, rx)
}

/// Reads every record line of a log directory as JSON.
pub fn records(dir: &std::path::Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "jsonl")
                && p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("audit-")
        })
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

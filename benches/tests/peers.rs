//! The harness's peers, for real: `echo-upstream` and `hyper-proxy` started as processes, driven
//! by the harness's own client in both protocol modes, directly and through the proxy.

use std::{process::Stdio, sync::Arc, time::Duration};

use mcp_gateway_benches::client::{Endpoint, McpClient, Mode};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// Starts a binary and returns it with the URL from its `listening on URL` line.
async fn start(program: &str, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("exited before listening");
            if let Some(url) = line.strip_prefix("listening on ") {
                return url.to_owned();
            }
        }
    })
    .await
    .expect("no `listening on` line");
    (child, url)
}

async fn exercise(url: &str, mode: Mode) {
    let endpoint = Arc::new(Endpoint::resolve(url).await.unwrap());
    let mut client = McpClient::connect(endpoint, mode).await.unwrap();
    match mode {
        Mode::Session => assert!(client.session_id().is_some(), "no session id from {url}"),
        Mode::Stateless => assert!(client.session_id().is_none()),
    }
    for i in 0..50 {
        let message = format!("call {i} {}", "x".repeat(i * 7));
        if let Err(e) = client.call_echo(&message).await {
            panic!("{url} {mode}: call {i}: {e}");
        }
    }
    // Keep-alive held: one connection for the handshake and all 50 calls.
    assert_eq!(client.connects(), 1, "{url} {mode}");
}

#[tokio::test]
async fn echo_upstream_directly_and_through_the_hyper_proxy() {
    let (_upstream, upstream_url) =
        start(env!("CARGO_BIN_EXE_echo-upstream"), &["--port", "0"]).await;
    assert!(upstream_url.ends_with("/mcp"), "{upstream_url}");
    let base = upstream_url.trim_end_matches("/mcp");
    let (_proxy, proxy_url) = start(
        env!("CARGO_BIN_EXE_hyper-proxy"),
        &["--upstream", base, "--port", "0"],
    )
    .await;
    let proxied = format!("{proxy_url}/mcp");
    for url in [upstream_url.as_str(), proxied.as_str()] {
        exercise(url, Mode::Session).await;
        exercise(url, Mode::Stateless).await;
    }
}

#[tokio::test]
async fn the_proxy_answers_502_when_the_upstream_is_gone() {
    let (mut upstream, upstream_url) =
        start(env!("CARGO_BIN_EXE_echo-upstream"), &["--port", "0"]).await;
    let base = upstream_url.trim_end_matches("/mcp").to_owned();
    let (_proxy, proxy_url) = start(
        env!("CARGO_BIN_EXE_hyper-proxy"),
        &["--upstream", &base, "--port", "0"],
    )
    .await;
    upstream.kill().await.unwrap();
    let endpoint = Arc::new(
        Endpoint::resolve(&format!("{proxy_url}/mcp"))
            .await
            .unwrap(),
    );
    let err = McpClient::connect(endpoint, Mode::Session)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "http-status", "{err}");
    assert!(err.to_string().starts_with("HTTP 502"), "{err}");
}

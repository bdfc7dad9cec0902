//! Attacks against the reference gateway binary, each an automated test: server-side request
//! forgery through upstream URLs and resource URIs, token passthrough, session hijack with a
//! stolen session id, confused-deputy OAuth flows, DNS rebinding and foreign origins, request smuggling, oversized and deeply
//! nested payloads, and look-alike Unicode tool names. After each attack the gateway keeps
//! serving.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use mcp_gateway_tests::{
    ChildGuard, HttpPeer, free_port, python, scratch_dir, spawn_gateway, wait_for_http,
    workspace_bin,
};
use mcp_gateway_tests::{create_api_key, gateway_cli};
use serde_json::{Value, json};

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string encodes")
}

fn demo_server() -> String {
    let exe = workspace_bin("mcp-gateway").expect("mcp-gateway is built");
    format!(
        "[[server]]\nname = \"demo\"\ncommand = {}\nargs = [\"demo-server\"]\n",
        q(&exe.to_string_lossy())
    )
}

fn start(label: &str, toml: &str) -> (HttpPeer, std::path::PathBuf) {
    let dir = scratch_dir(label).expect("scratch dir");
    let config = dir.join("gateway.toml");
    std::fs::write(&config, toml.replace("{dir}", &dir.to_string_lossy())).expect("config");
    let gw = spawn_gateway(label, &config, &[]).expect("gateway starts");
    (gw, config)
}

/// One POST; `(status, session id header, JSON-RPC message)`.
fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, Option<String>, Value) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    mcp_gateway_tests::mcp_post(&client, url, headers, body)
}

fn initialize_body() -> String {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "attacker", "version": "1"}}})
    .to_string()
}

fn call_body(id: u64, name: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": name, "arguments": args}})
    .to_string()
}

/// Opens a session (with `auth` headers) and returns its id.
fn session(url: &str, auth: &[(&str, &str)]) -> String {
    let (status, sid, msg) = post(url, auth, &initialize_body());
    assert_eq!(status, 200, "{msg}");
    let sid = sid.expect("a session id");
    let mut h = auth.to_vec();
    h.push(("mcp-session-id", &sid));
    h.push(("mcp-protocol-version", "2025-11-25"));
    let (status, _, _) = post(
        url,
        &h,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    );
    assert_eq!(status, 202);
    sid
}

/// Calls `demo__echo` in a fresh session: the gateway still serves.
fn still_serves(url: &str) {
    let sid = session(url, &[]);
    let (status, _, msg) = post(
        url,
        &[
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "2025-11-25"),
        ],
        &call_body(1, "demo__echo", json!({"message": "still here"})),
    );
    assert_eq!(status, 200, "{msg}");
    assert_eq!(msg["result"]["content"][0]["text"], "still here", "{msg}");
}

#[test]
fn ssrf_link_local_and_metadata_upstreams_are_refused_by_check() {
    let dir = scratch_dir("attacks-ssrf-check").expect("scratch dir");
    for (url, why) in [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fe80::1]:8080/mcp", "link-local"),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "metadata",
        ),
        ("http://[::ffff:169.254.169.254]/mcp", "metadata"),
    ] {
        let config = dir.join("refused.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\n\n[[server]]\nname = \"cloud\"\nurl = {}\n",
                q(url)
            ),
        )
        .expect("config");
        let (code, out, err) = gateway_cli(&config, &["check"]);
        let out = format!("{out}{err}");
        assert_ne!(code, 0, "{url} must be refused: {out}");
        assert!(
            out.contains("line 5") && out.contains(why) && out.contains("allow_link_local"),
            "{url}: {out}"
        );
        // An administrator who really means it can allow it.
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nallow_link_local = true\n\n[[server]]\nname = \"cloud\"\nurl = {}\n",
                q(url)
            ),
        )
        .expect("config");
        let (code, out, err) = gateway_cli(&config, &["check"]);
        let out = format!("{out}{err}");
        assert_eq!(code, 0, "{url} with allow_link_local: {out}");
    }
}

#[test]
fn ssrf_through_resource_uris_is_refused() {
    let (gw, _) = start(
        "attacks-ssrf-uri",
        &format!("listen = \"127.0.0.1:0\"\n\n{}", demo_server()),
    );
    let sid = session(&gw.url, &[]);
    let h = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    for (i, uri) in [
        "demo+http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "demo+http://[fd00:ec2::254]/latest/meta-data/",
        "demo+https://metadata.google.internal./computeMetadata/v1/",
    ]
    .iter()
    .enumerate()
    {
        for method in ["resources/read", "resources/subscribe"] {
            let (status, _, msg) = post(
                &gw.url,
                &h,
                &json!({"jsonrpc": "2.0", "id": i, "method": method, "params": {"uri": uri}})
                    .to_string(),
            );
            assert_eq!(status, 200, "{msg}");
            assert_eq!(msg["error"]["code"], -32602, "{method} {uri}: {msg}");
            let text = msg["error"]["message"].as_str().unwrap_or_default();
            assert!(
                text.contains("resource URI refused"),
                "{method} {uri}: {msg}"
            );
        }
    }
    // An ordinary resource of the same upstream still reads.
    let (_, _, msg) = post(
        &gw.url,
        &h,
        &json!({"jsonrpc": "2.0", "id": 9, "method": "resources/list", "params": {}}).to_string(),
    );
    assert!(msg["result"]["resources"].is_array(), "{msg}");
    still_serves(&gw.url);
}

#[test]
fn a_stolen_session_id_is_useless_to_another_identity() {
    let dir = scratch_dir("attacks-hijack").expect("scratch dir");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n\n[identity]\nmode = \"required\"\n[identity.api_keys]\nfile = {}\n\n{}",
            q(&dir.join("keys.json").to_string_lossy()),
            demo_server()
        ),
    )
    .expect("config");
    let alice = create_api_key(&config, "alice", "t");
    let mallory = create_api_key(&config, "mallory", "t");
    let gw = spawn_gateway("attacks-hijack", &config, &[]).expect("gateway starts");
    let alice_auth = format!("Bearer {alice}");
    let mallory_auth = format!("Bearer {mallory}");
    let sid = session(&gw.url, &[("authorization", &alice_auth)]);
    let call = call_body(1, "demo__echo", json!({"message": "mine"}));
    // Mallory holds the session id but not Alice's identity: the session does not exist for him.
    let (status, _, msg) = post(
        &gw.url,
        &[
            ("authorization", &mallory_auth),
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "2025-11-25"),
        ],
        &call,
    );
    assert_eq!(status, 404, "{msg}");
    // Without any credential: 401, not a hint about the session.
    let (status, _, _) = post(
        &gw.url,
        &[
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "2025-11-25"),
        ],
        &call,
    );
    assert_eq!(status, 401);
    // Alice is not disturbed.
    let (status, _, msg) = post(
        &gw.url,
        &[
            ("authorization", &alice_auth),
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "2025-11-25"),
        ],
        &call,
    );
    assert_eq!(status, 200, "{msg}");
    assert_eq!(msg["result"]["content"][0]["text"], "mine", "{msg}");
}

#[test]
fn the_clients_token_never_reaches_an_upstream() {
    let port = free_port().expect("port");
    let _upstream = ChildGuard::spawn(
        "header-echo-server",
        Command::new(python::interpreter())
            .arg(python::script("header_echo_server.py"))
            .arg(port.to_string()),
    )
    .expect("python upstream starts");
    let upstream_url = format!("http://127.0.0.1:{port}/mcp");
    wait_for_http(&upstream_url, Duration::from_secs(30)).expect("upstream listens");
    let dir = scratch_dir("attacks-passthrough").expect("scratch dir");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n\n[identity]\nmode = \"required\"\n[identity.api_keys]\nfile = {}\n\n[[server]]\nname = \"echo\"\nurl = {}\n",
            q(&dir.join("keys.json").to_string_lossy()),
            q(&upstream_url)
        ),
    )
    .expect("config");
    let key = create_api_key(&config, "alice", "t");
    let gw = spawn_gateway("attacks-passthrough", &config, &[]).expect("gateway starts");
    let auth = format!("Bearer {key}");
    // The client sends its credential every way it might be forwarded.
    let sid = session(&gw.url, &[("authorization", &auth)]);
    let (status, _, msg) = post(
        &gw.url,
        &[
            ("authorization", &auth),
            ("x-api-key", &key),
            ("cookie", &format!("token={key}")),
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "2025-11-25"),
        ],
        &call_body(1, "echo__headers", json!({})),
    );
    assert_eq!(status, 200, "{msg}");
    let text = msg["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no headers in {msg}"));
    let seen: Value = serde_json::from_str(text).expect("headers JSON");
    assert!(
        seen["host"].is_string(),
        "the upstream saw a real request: {seen}"
    );
    assert!(
        !text.contains(&key),
        "the client's API key reached the upstream: {seen}"
    );
    assert!(seen.get("cookie").is_none(), "{seen}");
    assert!(
        seen.get("authorization").is_none(),
        "no authorization was configured for the upstream, so none is sent: {seen}"
    );
}

#[test]
fn dns_rebinding_and_foreign_origins_are_refused() {
    let (gw, _) = start(
        "attacks-rebinding",
        &format!("listen = \"127.0.0.1:0\"\n\n{}", demo_server()),
    );
    let (status, _, _) = post(&gw.url, &[("host", "attacker.example")], &initialize_body());
    assert_eq!(status, 403, "a foreign Host header (DNS rebinding)");
    let (status, _, _) = post(
        &gw.url,
        &[("origin", "http://attacker.example")],
        &initialize_body(),
    );
    assert_eq!(status, 403, "a foreign Origin");
    let (status, _, _) = post(&gw.url, &[("origin", "null")], &initialize_body());
    assert_eq!(status, 403, "an opaque Origin");
    still_serves(&gw.url);
}

/// Sends raw bytes on a fresh connection and reads until the server closes it (or 5 s).
fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn request_smuggling_is_refused_and_the_connection_closed() {
    let (gw, _) = start(
        "attacks-smuggling",
        &format!("listen = \"127.0.0.1:0\"\n\n{}", demo_server()),
    );
    let host = gw.addr.to_string();
    let body = initialize_body();
    // CL.TE: both framings; a front end that trusts Content-Length would see one request, a back
    // end that trusts Transfer-Encoding a second, smuggled one.
    let smuggled = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    let answer = raw_exchange(gw.addr, smuggled.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "the smuggled request got no answer: {answer}"
    );
    // Two different Content-Length values.
    let doubled = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nContent-Length: 2\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_exchange(gw.addr, doubled.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // An obfuscated Transfer-Encoding.
    let obfuscated = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nTransfer-Encoding: xchunked\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_exchange(gw.addr, obfuscated.as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 501"),
        "{answer}"
    );
    still_serves(&gw.url);
}

#[test]
fn oversized_and_deeply_nested_payloads_get_clear_errors() {
    let (gw, _) = start(
        "attacks-payloads",
        &format!(
            "listen = \"127.0.0.1:0\"\nmax_body_bytes = 65536\n\n{}",
            demo_server()
        ),
    );
    let sid = session(&gw.url, &[]);
    let h = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let big = call_body(1, "demo__echo", json!({"message": "x".repeat(70_000)}));
    let (status, _, _) = post(&gw.url, &h, &big);
    assert_eq!(status, 413, "a body over max_body_bytes");
    // 20,000 nested arrays: far past any sane depth, well under the size limit.
    let nested = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{{\"name\":\"demo__echo\",\"arguments\":{{\"message\":{}{}}}}}}}",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let (status, _, msg) = post(&gw.url, &h, &nested);
    assert_eq!(status, 400, "{msg}");
    assert_eq!(msg["error"]["code"], -32700, "a parse error: {msg}");
    // Deep but legal nesting inside arguments is the upstream's business; the gateway survives.
    still_serves(&gw.url);
}

#[test]
fn unicode_look_alike_tool_names_do_not_reach_a_tool() {
    let (gw, _) = start(
        "attacks-unicode",
        &format!("listen = \"127.0.0.1:0\"\n\n{}", demo_server()),
    );
    let sid = session(&gw.url, &[]);
    let h = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let (_, _, missing) = post(
        &gw.url,
        &h,
        &call_body(1, "demo__no_such_tool", json!({"message": "m"})),
    );
    let missing_code = missing["error"]["code"].clone();
    assert!(missing_code.is_i64(), "{missing}");
    for (i, name) in [
        "demo__echo\u{200b}",       // zero-width space
        "demo__\u{0435}cho",        // Cyrillic е
        "demo__ech\u{043e}",        // Cyrillic о
        "demo__echo\u{202e}",       // right-to-left override
        "demo\u{ff3f}\u{ff3f}echo", // fullwidth low lines
        "DEMO__ECHO",
        "demo__echo ",
    ]
    .iter()
    .enumerate()
    {
        let (status, _, msg) = post(
            &gw.url,
            &h,
            &call_body(10 + i as u64, name, json!({"message": "should not run"})),
        );
        assert_eq!(status, 200, "{name:?}: {msg}");
        assert_eq!(
            msg["error"]["code"], missing_code,
            "{name:?} is answered like a missing tool: {msg}"
        );
        assert!(
            msg.get("result").is_none(),
            "{name:?} reached a tool: {msg}"
        );
    }
    still_serves(&gw.url);
}

/// A browser for the OAuth pages: follows nothing by itself, keeps cookies per origin, and sends
/// them back (only to the origin that set them).
struct Browser {
    http: reqwest::blocking::Client,
    cookies: std::collections::BTreeMap<(String, String), String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            cookies: Default::default(),
        }
    }

    fn origin(url: &str) -> String {
        reqwest::Url::parse(url)
            .expect("url")
            .origin()
            .ascii_serialization()
    }

    fn send(&mut self, url: &str, req: reqwest::blocking::RequestBuilder) -> Page {
        let origin = Self::origin(url);
        let jar: Vec<String> = self
            .cookies
            .iter()
            .filter(|((o, _), _)| *o == origin)
            .map(|((_, n), v)| format!("{n}={v}"))
            .collect();
        let req = if jar.is_empty() {
            req
        } else {
            req.header("cookie", jar.join("; "))
        };
        let res = req.send().expect("request");
        for set in res.headers().get_all("set-cookie") {
            let set = set.to_str().expect("cookie text");
            let (pair, attrs) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').expect("name=value");
            let key = (origin.clone(), name.to_owned());
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(&key);
            } else {
                self.cookies.insert(key, value.to_owned());
            }
        }
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let location = headers
            .get("location")
            .map(|l| l.to_str().expect("location").to_owned());
        Page {
            status,
            location,
            headers,
            body: res.text().unwrap_or_default(),
        }
    }

    fn get(&mut self, url: &str) -> Page {
        let req = self.http.get(url);
        self.send(url, req)
    }

    fn post_form(&mut self, url: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Page {
        let body = reqwest::Url::parse_with_params("http://form/", form)
            .expect("form")
            .query()
            .unwrap_or_default()
            .to_owned();
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(url, req)
    }
}

/// A hidden form field of a page.
fn field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} field in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').expect("closing quote")].to_owned()
}

/// A real OpenID provider (oauth2-mock-server: it approves every authorization request at once,
/// like an authorization server that remembers the user's earlier consent).
fn start_idp() -> (ChildGuard, String) {
    use std::io::BufRead as _;
    let mut idp = ChildGuard::spawn(
        "oauth2-mock-server",
        Command::new(mcp_gateway_tests::node().expect("node"))
            .arg(mcp_gateway_tests::repo_root().join("mcp-identity/tests/js/idp.mjs"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped()),
    )
    .expect("idp starts");
    let mut line = String::new();
    std::io::BufReader::new(idp.child_mut().stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("idp ready line");
    let ready: Value = serde_json::from_str(&line).expect("ready JSON");
    let issuer = ready["issuer"].as_str().expect("issuer").to_owned();
    (idp, issuer)
}

/// The MCP security best practices' confused deputy, against the gateway's per-user OAuth to an
/// upstream: Mallory makes the gateway start an authorization for himself and gets Alice's
/// browser to complete it (the authorization server approves at once, as one that remembers her
/// consent does), hoping her upstream grant lands on his gateway identity. The gateway sends
/// users to its own consent page first and takes the callback only from the browser that
/// confirmed there, so every variant fails and only Alice's own flow connects her account.
#[test]
fn confused_deputy_oauth_flows_are_refused() {
    let (_idp, issuer) = start_idp();
    let up_port = free_port().expect("port");
    let _upstream = ChildGuard::spawn(
        "oauth-protected-server",
        Command::new(python::interpreter())
            .arg(python::script("oauth_protected_server.py"))
            .arg(up_port.to_string())
            .arg(&issuer),
    )
    .expect("python upstream starts");
    let upstream_url = format!("http://127.0.0.1:{up_port}/mcp");
    wait_for_http(&upstream_url, Duration::from_secs(30)).expect("upstream listens");

    let gw_port = free_port().expect("port");
    let gw_origin = format!("http://127.0.0.1:{gw_port}");
    let dir = scratch_dir("attacks-deputy").expect("scratch dir");
    let config = dir.join("gateway.toml");
    std::fs::write(
        dir.join("vault.key"),
        "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
    )
    .expect("vault key");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{gw_port}"

[identity]
mode = "required"
[identity.api_keys]
file = {keys}
[identity.vault]
dir = {vault}
key_id = "k1"
key_file = {key}
[identity.oauth_client]
redirect_uri = "{gw_origin}/oauth/callback"
client_name = "gateway under attack"
[identity.upstreams.files]
mode = "oauth"
url = {up}

[[server]]
name = "files"
url = {up}
"#,
            keys = q(&dir.join("keys.json").to_string_lossy()),
            vault = q(&dir.join("vault").to_string_lossy()),
            key = q(&dir.join("vault.key").to_string_lossy()),
            up = q(&upstream_url),
        ),
    )
    .expect("config");
    let alice = format!("Bearer {}", create_api_key(&config, "alice", "t"));
    let mallory = format!("Bearer {}", create_api_key(&config, "mallory", "t"));
    let gw = spawn_gateway("attacks-deputy", &config, &[]).expect("gateway starts");
    let consent = format!("{gw_origin}/oauth/authorize");

    // `files__whoami` in a fresh session of `auth`: the JSON-RPC answer.
    let whoami = |auth: &str| -> Value {
        let sid = session(&gw.url, &[("authorization", auth)]);
        let (_, _, msg) = post(
            &gw.url,
            &[
                ("authorization", auth),
                ("mcp-session-id", &sid),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            &call_body(1, "files__whoami", json!({})),
        );
        msg
    };
    // The authorization link the gateway gives `auth` (it has no grant yet).
    let link = |auth: &str| -> String {
        let msg = whoami(auth);
        assert_eq!(
            msg["error"]["code"], -32040,
            "authorization required: {msg}"
        );
        let url = msg["error"]["data"]["authorizationUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("an authorization URL in {msg}"))
            .to_owned();
        assert!(
            url.starts_with(&format!("{consent}?state=")),
            "users are sent to the gateway's consent page, not to the authorization server: {url}"
        );
        url
    };
    let no_grant = |auth: &str, why: &str| {
        let msg = whoami(auth);
        assert_eq!(msg["error"]["code"], -32040, "{why}: {msg}");
    };

    // Mallory confirms his own authorization in his own browser, which gives him the
    // authorization server URL of his flow.
    let mallory_link = link(&mallory);
    let mut mallory_browser = Browser::new();
    let form = mallory_browser.get(&mallory_link);
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains("mallory"), "{}", form.body);
    assert_eq!(form.headers["x-frame-options"], "DENY");
    assert!(
        form.headers["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("frame-ancestors 'none'")
    );
    let (state, csrf) = (field(&form.body, "state"), field(&form.body, "csrf"));
    let to_as = mallory_browser.post_form(
        &consent,
        &[("state", &state), ("csrf", &csrf), ("decision", "allow")],
        &[("origin", &gw_origin), ("sec-fetch-site", "same-origin")],
    );
    assert_eq!(to_as.status, 303, "{}", to_as.body);
    let as_url = to_as
        .location
        .expect("redirect to the authorization server");
    assert!(as_url.starts_with(&issuer), "{as_url}");

    // 1. He sends Alice the authorization server URL (skipping the consent page). Her
    //    authorization server approves at once and sends her browser to the gateway's callback
    //    with a code for HER grant and HIS state: refused, her browser never confirmed.
    let mut alice_browser = Browser::new();
    let at_as = alice_browser.get(&as_url);
    assert_eq!(at_as.status, 302, "{}", at_as.body);
    let callback = at_as.location.expect("redirect to the callback");
    assert!(callback.starts_with(&format!("{gw_origin}/oauth/callback?")));
    let refused = alice_browser.get(&callback);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("not confirmed"), "{}", refused.body);
    // Even if the callback URL (her code) leaks to him, his state is burnt: nothing completes.
    let late = mallory_browser.get(&callback);
    assert_eq!(late.status, 400, "{}", late.body);
    no_grant(&mallory, "no grant reached Mallory's identity");

    // 2. He makes Alice's browser submit the consent form of a new authorization of his, from
    //    his site (a cross-site auto-submitted form). Browsers mark it; and she has no form
    //    token cookie (SameSite=Strict, only set on the page itself).
    let second = link(&mallory);
    let page = mallory_browser.get(&second);
    let (state2, csrf2) = (field(&page.body, "state"), field(&page.body, "csrf"));
    for headers in [
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ][..],
        &[("origin", "null")][..],
        &[][..],
    ] {
        let r = alice_browser.post_form(
            &consent,
            &[("state", &state2), ("csrf", &csrf2), ("decision", "allow")],
            headers,
        );
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert!(r.location.is_none());
    }
    // A forged callback for a state nobody confirmed, and one for a state that does not exist.
    let forged = alice_browser.get(&format!("{gw_origin}/oauth/callback?code=x&state={state2}"));
    assert_eq!(forged.status, 403, "{}", forged.body);
    let unknown = alice_browser.get(&format!("{gw_origin}/oauth/callback?code=x&state=nope"));
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    no_grant(&mallory, "still no grant for Mallory");

    // 3. Declining cancels: the state is gone afterwards.
    let third = link(&mallory);
    let page = mallory_browser.get(&third);
    let state3 = field(&page.body, "state");
    let declined = mallory_browser.post_form(
        &consent,
        &[
            ("state", &state3),
            ("csrf", &field(&page.body, "csrf")),
            ("decision", "deny"),
        ],
        &[("origin", &gw_origin)],
    );
    assert_eq!(declined.status, 200, "{}", declined.body);
    assert_eq!(mallory_browser.get(&third).status, 400);

    // 4. Alice's own flow, in her own browser: consent page naming her, the authorization
    //    server, the callback with her browser's cookie. Her calls now carry her grant, whose
    //    audience is the upstream (RFC 8707); Mallory still has none.
    let mine = link(&alice);
    let page = alice_browser.get(&mine);
    assert!(page.body.contains("alice"), "{}", page.body);
    let to_as = alice_browser.post_form(
        &consent,
        &[
            ("state", &field(&page.body, "state")),
            ("csrf", &field(&page.body, "csrf")),
            ("decision", "allow"),
        ],
        &[("origin", &gw_origin), ("sec-fetch-site", "same-origin")],
    );
    assert_eq!(to_as.status, 303, "{}", to_as.body);
    let at_as = alice_browser.get(&to_as.location.expect("to the authorization server"));
    let done = alice_browser.get(&at_as.location.expect("to the callback"));
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("files"), "{}", done.body);
    assert_eq!(done.headers["referrer-policy"], "no-referrer");
    let msg = whoami(&alice);
    let claims: Value = serde_json::from_str(
        msg["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("a result: {msg}")),
    )
    .expect("claims JSON");
    assert_eq!(claims["aud"], upstream_url.as_str(), "{claims}");
    assert_eq!(claims["iss"], issuer.as_str(), "{claims}");
    no_grant(&mallory, "Alice's grant is hers alone");
    // The server refuses the gateway's own connection (it needs each user's grant), so its
    // tools reach the catalog through Alice's connection: clients can discover them now.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let sid = session(&gw.url, &[("authorization", &alice)]);
    loop {
        let (_, _, msg) = post(
            &gw.url,
            &[
                ("authorization", &alice),
                ("mcp-session-id", &sid),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            &json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {}}).to_string(),
        );
        let names: Vec<&str> = msg["result"]["tools"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        if names.contains(&"files__whoami") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the per-user server's tools never reached the catalog: {msg}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

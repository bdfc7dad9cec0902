//! Runtimes: where an instance runs. One trait, [`Runtime`]; implementations for a local process
//! (the default: the `mcp-bridge` binary as a child in its own process group), Docker Engine
//! (bollard), and an SSH host (the system `ssh` client runs the generated `docker run` there).
//!
//! Kubernetes has no runtime here: there is no cluster on this machine, so `mcp-managed` renders
//! and validates manifests ([`crate::render::k8s_manifest`]) for an operator or a CD system to
//! apply, and does not talk to an API server.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{
    render::{ContainerPlan, RenderOptions, shell_quote},
    spec::{CONTAINER_PORT, SECRET_ENV},
    types::Resolved,
};

/// What a runtime is asked to start.
#[derive(Clone)]
pub struct Launch {
    /// The resolved spec.
    pub resolved: Resolved,
    /// The instance name (`shared`, `u-alice-1a2b3c4d`, ...).
    pub instance: String,
    /// A unique name for this start (container name, log tag).
    pub unique_name: String,
    /// The shared secret the bridge checks.
    pub secret: String,
    /// Resolved values of the spec's secret env vars.
    pub secret_values: BTreeMap<String, String>,
}

impl fmt::Debug for Launch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Launch")
            .field("server", &self.resolved.spec.name)
            .field("instance", &self.instance)
            .field("unique_name", &self.unique_name)
            .finish_non_exhaustive()
    }
}

/// A started instance, as its runtime knows it.
#[derive(Clone)]
pub struct Handle {
    /// The runtime's id for it (pid, container id).
    pub id: String,
    /// The bridge's base URL (`http://127.0.0.1:PORT`); MCP is at `/mcp`.
    pub base_url: String,
    child: Option<Arc<Mutex<Option<tokio::process::Child>>>>,
    name: String,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("id", &self.id)
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl Handle {
    /// The process id, for the local runtime.
    pub fn pid(&self) -> Option<u32> {
        self.id.parse().ok().filter(|_| self.child.is_some())
    }

    /// The container name, for container runtimes (the unique name otherwise).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A runtime failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The runtime cannot be reached (no Docker daemon, SSH host down).
    #[error("runtime `{runtime}` unreachable: {message}")]
    Unreachable {
        /// Runtime name.
        runtime: &'static str,
        /// Details.
        message: String,
    },
    /// The instance could not be started.
    #[error("could not start `{name}` on `{runtime}`: {message}")]
    Start {
        /// Runtime name.
        runtime: &'static str,
        /// Unique instance name.
        name: String,
        /// Details.
        message: String,
    },
    /// The spec cannot run on this runtime.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// Anything else.
    #[error("runtime `{runtime}`: {message}")]
    Other {
        /// Runtime name.
        runtime: &'static str,
        /// Details.
        message: String,
    },
}

/// Where instances run.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Short name (`local`, `docker`, `ssh`).
    fn name(&self) -> &'static str;

    /// Starts an instance; returns once its bridge accepts connections (not necessarily ready).
    async fn start(&self, launch: &Launch) -> Result<Handle, RuntimeError>;

    /// Stops and removes an instance; stopping a gone instance is not an error.
    async fn stop(&self, handle: &Handle) -> Result<(), RuntimeError>;

    /// Whether the instance is still running.
    async fn alive(&self, handle: &Handle) -> Result<bool, RuntimeError>;
}

impl fmt::Debug for dyn Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Runtime({})", self.name())
    }
}

// === LocalProcess ===

/// Runs the `mcp-bridge` binary as a local child process in its own process group, so stopping
/// the instance ends the server and everything it spawned.
#[derive(Debug, Clone)]
pub struct LocalProcess {
    bridge: PathBuf,
    start_timeout: Duration,
}

impl LocalProcess {
    /// A runtime that runs the bridge at `bridge`.
    pub fn new(bridge: impl Into<PathBuf>) -> Self {
        Self {
            bridge: bridge.into(),
            start_timeout: Duration::from_secs(10),
        }
    }

    /// Looks for `mcp-bridge` in `$MCP_BRIDGE_BIN`, beside the current executable, then in `PATH`.
    pub fn discover() -> Self {
        if let Some(p) = std::env::var_os("MCP_BRIDGE_BIN") {
            return Self::new(p);
        }
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            for d in [Some(dir), dir.parent()].into_iter().flatten() {
                let c = d.join("mcp-bridge");
                if c.is_file() {
                    return Self::new(c);
                }
            }
        }
        Self::new("mcp-bridge")
    }
}

fn kill_group(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

#[async_trait]
impl Runtime for LocalProcess {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn start(&self, launch: &Launch) -> Result<Handle, RuntimeError> {
        let err = |message: String| RuntimeError::Start {
            runtime: "local",
            name: launch.unique_name.clone(),
            message,
        };
        let listen = launch
            .resolved
            .spec
            .address
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut cmd = tokio::process::Command::new(&self.bridge);
        cmd.arg("--listen")
            .arg(listen.to_string())
            .arg("--")
            .args(&launch.resolved.argv)
            .env(SECRET_ENV, &launch.secret)
            .envs(&launch.resolved.spec.env)
            .envs(&launch.secret_values)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e}", self.bridge.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| err("the bridge exited at once".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| err("no stdout from the bridge".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(self.start_timeout, lines.next_line()).await;
        let addr = match line {
            Ok(Ok(Some(l))) => l
                .strip_prefix("mcp-bridge listening on ")
                .and_then(|a| a.trim().parse::<SocketAddr>().ok()),
            _ => None,
        };
        let Some(addr) = addr else {
            kill_group(pid, nix::sys::signal::Signal::SIGKILL);
            let status = child.wait().await.ok();
            return Err(err(format!(
                "the bridge did not start listening (exit status {status:?}; is {} taken?)",
                listen
            )));
        };
        Ok(Handle {
            id: pid.to_string(),
            base_url: format!("http://{addr}"),
            child: Some(Arc::new(Mutex::new(Some(child)))),
            name: launch.unique_name.clone(),
        })
    }

    async fn stop(&self, handle: &Handle) -> Result<(), RuntimeError> {
        let Some(slot) = &handle.child else {
            return Ok(());
        };
        let child = slot.lock().ok().and_then(|mut c| c.take());
        let Some(mut child) = child else {
            return Ok(());
        };
        let Some(pid) = child.id() else {
            // Already reaped; its group may still hold the server.
            if let Ok(pid) = handle.id.parse::<u32>() {
                kill_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
            return Ok(());
        };
        kill_group(pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(3), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        // Whatever is left in the group (a server that ignored SIGTERM) is killed.
        kill_group(pid, nix::sys::signal::Signal::SIGKILL);
        Ok(())
    }

    async fn alive(&self, handle: &Handle) -> Result<bool, RuntimeError> {
        let Some(slot) = &handle.child else {
            return Ok(false);
        };
        let Ok(mut guard) = slot.lock() else {
            return Ok(false);
        };
        Ok(match guard.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        })
    }
}

// === Docker ===

/// Runs instances as containers through the Docker Engine API. The image must hold the bridge at
/// `bridge_in_image` (or set `bridge_from_host` to mount it).
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: bollard::Docker,
    options: RenderOptions,
    connect_host: String,
}

impl DockerRuntime {
    /// Connects to the local daemon (`DOCKER_HOST` or `/var/run/docker.sock`).
    pub fn connect() -> Result<Self, RuntimeError> {
        let docker = bollard::Docker::connect_with_local_defaults().map_err(|e| {
            RuntimeError::Unreachable {
                runtime: "docker",
                message: e.to_string(),
            }
        })?;
        Ok(Self {
            docker,
            options: RenderOptions::default(),
            connect_host: "127.0.0.1".into(),
        })
    }

    /// Connects to a daemon at a unix socket path.
    pub fn connect_socket(path: &str) -> Result<Self, RuntimeError> {
        let docker = bollard::Docker::connect_with_socket(path, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| RuntimeError::Unreachable {
                runtime: "docker",
                message: e.to_string(),
            })?;
        Ok(Self {
            docker,
            options: RenderOptions::default(),
            connect_host: "127.0.0.1".into(),
        })
    }

    /// Render options (bridge location in the image, extra labels).
    #[must_use]
    pub fn options(mut self, options: RenderOptions) -> Self {
        self.options = options;
        self
    }

    /// The Docker client.
    pub fn client(&self) -> &bollard::Docker {
        &self.docker
    }

    /// Ids of containers this crate started (label `mcp.managed/server`), running or not.
    pub async fn managed_containers(&self) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([("label", vec!["mcp.managed/server"])]);
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| docker_err(&e))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }
}

fn docker_err(e: &bollard::errors::Error) -> RuntimeError {
    match e {
        bollard::errors::Error::HyperResponseError { .. }
        | bollard::errors::Error::HyperLegacyError { .. }
        | bollard::errors::Error::RequestTimeoutError
        | bollard::errors::Error::IOError { .. }
        | bollard::errors::Error::SocketNotFoundError(_) => RuntimeError::Unreachable {
            runtime: "docker",
            message: e.to_string(),
        },
        _ => RuntimeError::Other {
            runtime: "docker",
            message: e.to_string(),
        },
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn start(&self, launch: &Launch) -> Result<Handle, RuntimeError> {
        use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
        let mut opts = self.options.clone();
        opts.instance = Some(launch.instance.clone());
        let mut plan = ContainerPlan::new(&launch.resolved, &opts)?;
        plan.name = launch.unique_name.clone();
        let env: Vec<String> = plan
            .env
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None if k == SECRET_ENV => format!("{k}={}", launch.secret),
                None => format!(
                    "{k}={}",
                    launch
                        .secret_values
                        .get(k)
                        .map(String::as_str)
                        .unwrap_or("")
                ),
            })
            .collect();
        let port_key = format!("{CONTAINER_PORT}/tcp");
        let (host_ip, host_port) = match plan.publish {
            Some(a) => (a.ip().to_string(), a.port().to_string()),
            None => ("127.0.0.1".to_string(), String::new()),
        };
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(host_ip),
                    host_port: Some(host_port),
                }]),
            )])),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                "rw,noexec,nosuid,size=64m".to_string(),
            )])),
            nano_cpus: plan.cpus.map(|c| (c * 1e9) as i64),
            memory: plan.memory_mb.map(|m| (m * 1024 * 1024) as i64),
            pids_limit: plan.pids.map(i64::from),
            network_mode: plan.network.clone(),
            binds: plan
                .bridge_mount
                .as_ref()
                .map(|m| vec![format!("{m}:{}:ro", plan.entrypoint)]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(plan.image.clone()),
            entrypoint: Some(vec![plan.entrypoint.clone()]),
            cmd: Some(plan.cmd.clone()),
            env: Some(env),
            labels: Some(plan.labels.clone().into_iter().collect()),
            exposed_ports: Some(vec![port_key.clone()]),
            host_config: Some(host_config),
            ..Default::default()
        };
        let err = |message: String| RuntimeError::Start {
            runtime: "docker",
            name: plan.name.clone(),
            message,
        };
        let create = bollard::query_parameters::CreateContainerOptionsBuilder::new()
            .name(&plan.name)
            .build();
        let created = self
            .docker
            .create_container(Some(create), body)
            .await
            .map_err(|e| match docker_err(&e) {
                u @ RuntimeError::Unreachable { .. } => u,
                _ => err(e.to_string()),
            })?;
        let id = created.id;
        let handle = Handle {
            id: id.clone(),
            base_url: String::new(),
            child: None,
            name: plan.name.clone(),
        };
        if let Err(e) = self.docker.start_container(&id, None).await {
            let _ = self.stop(&handle).await;
            return Err(err(e.to_string()));
        }
        let inspect = match self.docker.inspect_container(&id, None).await {
            Ok(i) => i,
            Err(e) => {
                let _ = self.stop(&handle).await;
                return Err(err(e.to_string()));
            }
        };
        let port = inspect
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|p| p.get(&port_key).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse::<u16>().ok());
        let Some(port) = port else {
            let running = inspect.state.and_then(|s| s.running).unwrap_or(false);
            let _ = self.stop(&handle).await;
            return Err(err(if running {
                "no published port".into()
            } else {
                "the container exited at once".into()
            }));
        };
        Ok(Handle {
            base_url: format!("http://{}:{port}", self.connect_host),
            ..handle
        })
    }

    async fn stop(&self, handle: &Handle) -> Result<(), RuntimeError> {
        let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(&handle.id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(docker_err(&e)),
        }
    }

    async fn alive(&self, handle: &Handle) -> Result<bool, RuntimeError> {
        match self.docker.inspect_container(&handle.id, None).await {
            Ok(i) => Ok(i.state.and_then(|s| s.running).unwrap_or(false)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(docker_err(&e)),
        }
    }
}

// === SSH ===

/// Runs the generated `docker run` command on a host over SSH (the system `ssh` client, key
/// authentication, `BatchMode`), verifies the container runs, and removes it on stop. The shared
/// secret and secret env values travel on ssh's stdin and are read by the remote shell's `read`
/// builtin, so they appear in no process list on either side.
#[derive(Debug, Clone)]
pub struct SshRuntime {
    /// `user@host` or `host`.
    pub destination: String,
    /// SSH port.
    pub port: u16,
    /// Private key file.
    pub identity: PathBuf,
    /// Known-hosts file; `None` accepts new host keys (`StrictHostKeyChecking=accept-new`).
    pub known_hosts: Option<PathBuf>,
    /// The host name or address the gateway reaches published ports at.
    pub connect_host: String,
    /// Render options (bridge location in the image).
    pub options: RenderOptions,
}

impl SshRuntime {
    fn ssh(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ssh");
        c.arg("-p")
            .arg(self.port.to_string())
            .arg("-i")
            .arg(&self.identity)
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]);
        match &self.known_hosts {
            Some(k) => {
                c.arg("-o")
                    .arg(format!("UserKnownHostsFile={}", k.display()))
                    .args(["-o", "StrictHostKeyChecking=yes"]);
            }
            None => {
                c.args(["-o", "StrictHostKeyChecking=accept-new"]);
            }
        }
        c.arg(&self.destination).arg("--");
        c
    }

    async fn run(&self, script: &str, stdin: &str) -> Result<String, RuntimeError> {
        let mut child = self
            .ssh()
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::Unreachable {
                runtime: "ssh",
                message: format!("cannot run ssh: {e}"),
            })?;
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin.as_bytes()).await;
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .map_err(|_| RuntimeError::Unreachable {
                runtime: "ssh",
                message: "timed out".into(),
            })?
            .map_err(|e| RuntimeError::Unreachable {
                runtime: "ssh",
                message: e.to_string(),
            })?;
        if out.status.code() == Some(255) {
            return Err(RuntimeError::Unreachable {
                runtime: "ssh",
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        if !out.status.success() {
            return Err(RuntimeError::Other {
                runtime: "ssh",
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[async_trait]
impl Runtime for SshRuntime {
    fn name(&self) -> &'static str {
        "ssh"
    }

    async fn start(&self, launch: &Launch) -> Result<Handle, RuntimeError> {
        let mut opts = self.options.clone();
        opts.instance = Some(launch.instance.clone());
        let mut plan = ContainerPlan::new(&launch.resolved, &opts)?;
        plan.name = launch.unique_name.clone();
        let name = shell_quote(&plan.name).into_owned();
        let mut script = String::from("set -e; ");
        let mut stdin = format!("{}\n", launch.secret);
        script.push_str(&format!("IFS= read -r {SECRET_ENV}; export {SECRET_ENV}; "));
        for k in launch.resolved.spec.secrets.keys() {
            script.push_str(&format!("IFS= read -r {k}; export {k}; "));
            let v = launch
                .secret_values
                .get(k)
                .map(String::as_str)
                .unwrap_or("");
            // `read` stops at a newline: secret values are single-line.
            stdin.push_str(&v.replace('\n', " "));
            stdin.push('\n');
        }
        let argv: Vec<String> = plan
            .docker_argv()
            .iter()
            .map(|w| shell_quote(w).into_owned())
            .collect();
        script.push_str(&argv.join(" "));
        script.push_str(&format!(
            " >/dev/null; docker inspect -f '{{{{.State.Running}}}}' {name}; docker port {name} {CONTAINER_PORT}/tcp"
        ));
        let out = self.run(&script, &stdin).await.map_err(|e| match e {
            RuntimeError::Other { message, .. } => RuntimeError::Start {
                runtime: "ssh",
                name: plan.name.clone(),
                message,
            },
            other => other,
        })?;
        let handle = Handle {
            id: plan.name.clone(),
            base_url: String::new(),
            child: None,
            name: plan.name.clone(),
        };
        let mut lines = out.lines();
        let running = lines.next().map(str::trim) == Some("true");
        let port = lines
            .filter_map(|l| l.trim().rsplit_once(':'))
            .find_map(|(_, p)| p.parse::<u16>().ok());
        match (running, port) {
            (true, Some(port)) => Ok(Handle {
                base_url: format!("http://{}:{port}", self.connect_host),
                ..handle
            }),
            _ => {
                let _ = self.stop(&handle).await;
                Err(RuntimeError::Start {
                    runtime: "ssh",
                    name: plan.name,
                    message: format!("the container is not running on the host ({out:?})"),
                })
            }
        }
    }

    async fn stop(&self, handle: &Handle) -> Result<(), RuntimeError> {
        let script = format!(
            "docker rm -f -v {} >/dev/null 2>&1 || true",
            shell_quote(&handle.name)
        );
        self.run(&script, "").await.map(|_| ())
    }

    async fn alive(&self, handle: &Handle) -> Result<bool, RuntimeError> {
        let script = format!(
            "docker inspect -f '{{{{.State.Running}}}}' {} 2>/dev/null || echo false",
            shell_quote(&handle.name)
        );
        Ok(self.run(&script, "").await?.trim() == "true")
    }
}

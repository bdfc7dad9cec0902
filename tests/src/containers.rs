//! Docker and SSH for the managed-deployment tests: the local `dockerd` (started when it is
//! installed but not running), test images built `FROM scratch` (nothing can be pulled here)
//! holding workspace binaries and the libraries `ldd` lists, label queries for orphan checks,
//! and an `sshd` on 127.0.0.1 with keys generated for the test.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use crate::{Error, Result, io};

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(io(format!("running {cmd:?}")))?;
    if !out.status.success() {
        return Err(Error::Peer(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn docker_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Makes sure a Docker daemon answers: starts `dockerd` (detached, like a system service, log in
/// `/tmp/dockerd.log`) when none does. `Err` says why Docker cannot run at all (not installed, or
/// the daemon does not come up): the only reason a Docker test may skip.
pub fn ensure_dockerd() -> Result<(), String> {
    static STARTED: Mutex<()> = Mutex::new(());
    let _one_at_a_time = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if docker_answers() {
        return Ok(());
    }
    let log = std::fs::File::create("/tmp/dockerd.log")
        .map_err(|e| format!("cannot create /tmp/dockerd.log: {e}"))?;
    let err_log = log
        .try_clone()
        .map_err(|e| format!("cannot clone the log file: {e}"))?;
    let status = Command::new("setsid")
        .args(["-f", "dockerd"])
        .stdout(log)
        .stderr(err_log)
        .status()
        .map_err(|e| {
            format!("cannot run dockerd ({e}); scripts/install-test-deps.sh installs it")
        })?;
    if !status.success() {
        return Err(format!("dockerd did not start: {status}"));
    }
    for _ in 0..120 {
        if docker_answers() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err("dockerd did not come up within 60 s; see /tmp/dockerd.log".into())
}

/// Copies `bin` (stripped) to `dest` under `root`, and every library `ldd` lists at its own path.
fn copy_with_libs(bin: &Path, dest: &str, root: &Path) -> Result<()> {
    let target = root.join(dest.trim_start_matches('/'));
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    std::fs::copy(bin, &target).map_err(io(format!("copying {}", bin.display())))?;
    // Debug binaries are large; the image does not need their symbols.
    let _ = Command::new("strip").arg(&target).status();
    let ldd = sh(Command::new("ldd").arg(bin))?;
    for line in ldd.lines() {
        let path = match line.split("=>").nth(1) {
            Some(rest) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let t = root.join(path.trim_start_matches('/'));
        if let Some(dir) = t.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        std::fs::copy(path, &t).map_err(io(format!("copying {path}")))?;
    }
    Ok(())
}

/// Builds (once per test process) the image `tag` `FROM scratch` holding the given binaries at
/// the given paths, with their libraries and an empty `/tmp`.
pub fn scratch_image(tag: &str, files: &[(PathBuf, &str)]) -> Result<()> {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|t| t == tag) {
        return Ok(());
    }
    let ctx = std::env::temp_dir().join(format!(
        "mcp-e2e-image-{}-{}",
        std::process::id(),
        built.len()
    ));
    let _ = std::fs::remove_dir_all(&ctx);
    let root = ctx.join("rootfs");
    std::fs::create_dir_all(root.join("tmp")).map_err(io("creating the image root"))?;
    for (bin, dest) in files {
        copy_with_libs(bin, dest, &root)?;
    }
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/mcp-bridge\"]\n",
    )
    .map_err(io("writing the Dockerfile"))?;
    let result = sh(Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(&ctx));
    let _ = std::fs::remove_dir_all(&ctx);
    result?;
    built.push(tag.to_owned());
    Ok(())
}

/// Ids of containers (running or not) carrying the label `key=value`.
pub fn containers_with_label(key: &str, value: &str) -> Vec<String> {
    sh(Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label={key}={value}")))
    .unwrap_or_default()
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Force-removes containers carrying the label (cleanup after a failed test).
pub fn remove_containers_with_label(key: &str, value: &str) {
    for id in containers_with_label(key, value) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &id])
            .output();
    }
}

/// `docker inspect -f FORMAT ID`, trimmed.
pub fn inspect(id: &str, format: &str) -> Result<String> {
    Ok(
        sh(Command::new("docker").args(["inspect", "-f", format, id]))?
            .trim()
            .to_owned(),
    )
}

/// `docker kill ID`.
pub fn kill(id: &str) -> Result<()> {
    sh(Command::new("docker").args(["kill", id])).map(drop)
}

/// An `sshd` on 127.0.0.1 (key authentication only) with a host key, a client key and a
/// known-hosts file generated for the test. Stopped and its directory removed on drop.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    /// Holds `client_key`, `known_hosts`, the config and the host key.
    pub dir: PathBuf,
    /// The port it listens on.
    pub port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Sshd {
    /// Starts it; returns once the port accepts connections.
    pub fn start() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mcp-e2e-sshd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io("creating the sshd dir"))?;
        std::fs::create_dir_all("/run/sshd").map_err(io("creating /run/sshd"))?;
        for k in ["host_key", "client_key"] {
            sh(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(k)))?;
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))
            .map_err(io("writing authorized_keys"))?;
        let port = crate::free_port()?;
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             StrictModes no\nUsePAM no\nPidFile {d}/sshd.pid\nSetEnv PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).map_err(io("writing sshd_config"))?;
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub"))
            .map_err(io("reading the host key"))?;
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_pub}"),
        )
        .map_err(io("writing known_hosts"))?;
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .spawn()
            .map_err(io(
                "starting /usr/sbin/sshd (scripts/install-test-deps.sh installs it)",
            ))?;
        let sshd = Self { child, dir, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("sshd on 127.0.0.1:{port}"),
                    timeout: Duration::from_secs(10),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sshd)
    }
}

//! `[[managed]]` entries of the gateway's TOML file, and building a [`Manager`] from them.
//!
//! ```toml
//! [[managed]]
//! sharing = "per_identity"          # shared | per_identity | per_team
//! idle_timeout_secs = 600
//! max_instances = 50
//! access = { teams = ["eng"] }      # who may use the server (empty: everybody)
//! runtime = { type = "local" }      # local | docker | ssh
//! [managed.spec]
//! name = "time"
//! kind = "command"
//! command = "python3"
//! args = ["-m", "mcp_server_time"]
//! [managed.instances.ops]          # a named instance with its own access list
//! teams = ["ops"]
//! ```

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use mcp_gateway_core::EventBus;
use serde::{Deserialize, Serialize};

use crate::{
    manager::{AccessList, Manager, ServerSettings, Sharing},
    render::RenderOptions,
    runtime::{DockerRuntime, LocalProcess, Runtime, SshRuntime},
    spec::InstanceSpec,
    types::InstanceTypes,
};

/// One `[[managed]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What to run.
    pub spec: InstanceSpec,
    /// Where to run it.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Shared or dedicated.
    #[serde(default = "shared")]
    pub sharing: Sharing,
    /// Dedicated instances are reaped after this many seconds without traffic.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// Cap on dedicated instances of this server.
    #[serde(default = "default_max")]
    pub max_instances: usize,
    /// Who may use the server (empty: everybody).
    #[serde(default)]
    pub access: AccessList,
    /// Named instances and who may use each.
    #[serde(default)]
    pub instances: BTreeMap<String, AccessList>,
}

fn shared() -> Sharing {
    Sharing::Shared
}
fn default_idle() -> u64 {
    600
}
fn default_max() -> usize {
    50
}

/// Where a server's instances run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuntimeConfig {
    /// The `mcp-bridge` binary as a local child process.
    #[default]
    Local,
    /// Local, with an explicit bridge binary path.
    LocalBridge {
        /// Path of `mcp-bridge`.
        bridge: PathBuf,
    },
    /// Docker Engine.
    Docker {
        /// Unix socket (default: `DOCKER_HOST` or `/var/run/docker.sock`).
        #[serde(default)]
        socket: Option<String>,
        /// Where the bridge is in the image (default `/mcp-bridge`).
        #[serde(default)]
        bridge_in_image: Option<String>,
        /// A host path of the bridge to mount into stock images.
        #[serde(default)]
        bridge_from_host: Option<String>,
    },
    /// The generated docker command, run on a host over SSH.
    Ssh {
        /// `user@host`.
        destination: String,
        /// Port (22).
        #[serde(default = "ssh_port")]
        port: u16,
        /// Private key.
        identity: PathBuf,
        /// Known hosts file (none: accept new keys).
        #[serde(default)]
        known_hosts: Option<PathBuf>,
        /// Where the gateway reaches published ports (default: the destination's host).
        #[serde(default)]
        connect_host: Option<String>,
        /// Where the bridge is in the image.
        #[serde(default)]
        bridge_in_image: Option<String>,
    },
}

fn ssh_port() -> u16 {
    22
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A spec is invalid.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// A runtime cannot be set up.
    #[error("managed server `{server}`: {source}")]
    Runtime {
        /// The server.
        server: String,
        /// Why.
        #[source]
        source: crate::runtime::RuntimeError,
    },
    /// Something else is wrong.
    #[error("managed server `{server}`: {message}")]
    Invalid {
        /// The server.
        server: String,
        /// What.
        message: String,
    },
}

impl RuntimeConfig {
    /// Builds the runtime.
    pub fn build(&self) -> Result<Arc<dyn Runtime>, crate::runtime::RuntimeError> {
        let opts = |b: &Option<String>, h: &Option<String>| RenderOptions {
            bridge_in_image: b.clone().unwrap_or_else(|| "/mcp-bridge".into()),
            bridge_from_host: h.clone(),
            ..Default::default()
        };
        Ok(match self {
            Self::Local => Arc::new(LocalProcess::discover()),
            Self::LocalBridge { bridge } => Arc::new(LocalProcess::new(bridge)),
            Self::Docker {
                socket,
                bridge_in_image,
                bridge_from_host,
            } => {
                let d = match socket {
                    Some(s) => DockerRuntime::connect_socket(s)?,
                    None => DockerRuntime::connect()?,
                };
                Arc::new(d.options(opts(bridge_in_image, bridge_from_host)))
            }
            Self::Ssh {
                destination,
                port,
                identity,
                known_hosts,
                connect_host,
                bridge_in_image,
            } => Arc::new(SshRuntime {
                destination: destination.clone(),
                port: *port,
                identity: identity.clone(),
                known_hosts: known_hosts.clone(),
                connect_host: connect_host.clone().unwrap_or_else(|| {
                    destination
                        .rsplit_once('@')
                        .map_or(destination.as_str(), |(_, h)| h)
                        .to_string()
                }),
                options: opts(bridge_in_image, &None),
            }),
        })
    }
}

impl Config {
    /// Parses one entry from TOML text (mostly for tests and tools).
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Whether instances run on this machine as local processes (the gateway can then list the
    /// server's features from one local run of its command; otherwise it lists them through a
    /// [`crate::relay::CatalogRelay`]).
    pub fn runs_locally(&self) -> bool {
        matches!(
            self.runtime,
            RuntimeConfig::Local | RuntimeConfig::LocalBridge { .. }
        )
    }

    /// Checks the entry against the type registry and its own settings.
    pub fn validate(&self, types: &InstanceTypes) -> Result<(), ConfigError> {
        types.resolve(&self.spec)?;
        let invalid = |message: String| ConfigError::Invalid {
            server: self.spec.name.clone(),
            message,
        };
        if self.idle_timeout_secs == 0 {
            return Err(invalid("idle_timeout_secs must be positive".into()));
        }
        if self.max_instances == 0 {
            return Err(invalid("max_instances must be at least 1".into()));
        }
        for n in self.instances.keys() {
            if !crate::spec::is_dns_label(n, 40) {
                return Err(invalid(format!(
                    "instance name {n:?} is not a DNS label (a-z, 0-9, `-`)"
                )));
            }
        }
        if let RuntimeConfig::Ssh { destination, .. } = &self.runtime
            && (destination.is_empty()
                || destination.starts_with('-')
                || destination
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(invalid(format!(
                "ssh destination {destination:?} is not usable"
            )));
        }
        Ok(())
    }

    /// The manager settings for this entry (builds the runtime).
    pub fn settings(&self) -> Result<ServerSettings, ConfigError> {
        let runtime = self
            .runtime
            .build()
            .map_err(|source| ConfigError::Runtime {
                server: self.spec.name.clone(),
                source,
            })?;
        let mut s = ServerSettings::new(self.spec.clone(), runtime)
            .sharing(self.sharing)
            .access(self.access.clone())
            .idle_timeout(Duration::from_secs(self.idle_timeout_secs))
            .max_instances(self.max_instances);
        for (n, acl) in &self.instances {
            s = s.named(n.clone(), acl.clone());
        }
        Ok(s)
    }
}

/// Builds a [`Manager`] (and so a [`crate::ManagedLayer`]) for all `[[managed]]` entries, with
/// outage and recovery events published on `events`. Must run inside a tokio runtime.
pub fn build_manager(configs: &[Config], events: EventBus) -> Result<Manager, ConfigError> {
    let types = InstanceTypes::default();
    let mut b = Manager::builder().types(types.clone()).events(events);
    for c in configs {
        c.validate(&types)?;
        b = b.server(c.settings()?);
    }
    Ok(b.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
sharing = "per_identity"
idle_timeout_secs = 600
max_instances = 50
access = { teams = ["eng"] }
runtime = { type = "local" }
[spec]
name = "time"
kind = "command"
command = "python3"
args = ["-m", "mcp_server_time"]
[instances.ops]
teams = ["ops"]
"#;
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.sharing, Sharing::PerIdentity);
        assert_eq!(c.instances["ops"].teams, ["ops"]);
        c.validate(&InstanceTypes::default()).unwrap();
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused_clearly() {
        let e = Config::from_toml(
            "[spec]\nname = \"x\"\nkind = \"command\"\ncommand = \"a\"\nbogus = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = Config::from_toml(
            "runtime = { type = \"kube\" }\n[spec]\nname = \"x\"\nkind = \"command\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("kube"), "{e}");
        let c = Config::from_toml("[spec]\nname = \"x\"\nkind = \"nope\"\n").unwrap();
        let e = c
            .validate(&InstanceTypes::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown kind `nope`"), "{e}");
        let c = Config::from_toml(
            "max_instances = 0\n[spec]\nname = \"x\"\nkind = \"command\"\ncommand = \"a\"\n",
        )
        .unwrap();
        let e = c
            .validate(&InstanceTypes::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_instances"), "{e}");
    }
}

//! # mcp-managed
//!
//! Run stdio MCP servers as governed HTTP instances, shared or one per user.
//!
//! - [`InstanceSpec`] describes a server (kind, package/image/command, args, env, secrets, limits,
//!   network policy, labels, address, health probe); [`InstanceTypes`] maps a kind to a command
//!   template, an image and a health contract.
//! - [`render`] turns a spec into a `docker run` command, a Kubernetes manifest and a compose
//!   file, quoted for any value.
//! - The `mcp-bridge` binary ([`bridge`]) runs a stdio server and serves it over Streamable HTTP
//!   behind a shared secret.
//! - [`Runtime`]s start instances: [`LocalProcess`] (default), [`DockerRuntime`], [`SshRuntime`].
//! - [`Manager`] runs shared and dedicated instances: selection, access lists, start on first use,
//!   health monitor, restart with backoff, outage/recovery events, idle reaping, caps, recreate,
//!   rolling update, drain, teardown.
//! - [`relay::CatalogRelay`] gives a gateway one stable endpoint to list a server's features
//!   from when it cannot run the server's command itself (containers, SSH hosts).
//! - [`ManagedLayer`] resolves the instance for each request and hands dispatch an
//!   [`InstanceEndpoint`] (URL and secret header).
//!
//! ```
//! use mcp_managed::{InstanceSpec, InstanceTypes, render};
//!
//! let mut spec = InstanceSpec::new("time", "uvx");
//! spec.package = Some("mcp-server-time".into());
//! spec.args = vec!["--local-timezone".into(), "Europe/Paris".into()];
//! let resolved = InstanceTypes::default().resolve(&spec).unwrap();
//! assert_eq!(resolved.argv, ["uvx", "mcp-server-time", "--local-timezone", "Europe/Paris"]);
//! let cmd = render::docker_run(&resolved, &Default::default()).unwrap();
//! assert!(cmd.contains("--cap-drop ALL") && cmd.contains("--env MCP_BRIDGE_SECRET "));
//!
//! // A bad spec says which field is wrong.
//! spec.env.insert("BAD;NAME".into(), "x".into());
//! let err = InstanceTypes::default().resolve(&spec).unwrap_err();
//! assert_eq!(err.field(), "env.BAD;NAME");
//! ```
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | everything is always built |

pub mod admin;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod layer;
pub mod manager;
pub mod relay;
pub mod render;
pub mod runtime;
pub mod spec;
pub mod types;

pub use config::{Config, ConfigError, RuntimeConfig, build_manager};
pub use layer::{
    INSTANCE_HEADER, InstanceSelection, Managed, ManagedEndpoints, ManagedLayer, ResponseFuture,
};
pub use manager::{
    AccessList, EnvSecrets, InstanceEndpoint, InstanceInfo, InstanceState, Lease, ManagedError,
    Manager, ManagerBuilder, SecretSource, ServerSettings, Sharing, Timing,
};
pub use runtime::{DockerRuntime, Handle, Launch, LocalProcess, Runtime, RuntimeError, SshRuntime};
pub use spec::{InstanceSpec, SECRET_ENV, SECRET_HEADER, SpecError};
pub use types::{InstanceType, InstanceTypes, Resolved};

//! CLI entry points the reference gateway mounts: `mcp-gateway managed command <server>
//! [--format docker|k8s|compose]` prints the generated deployment text for a `[[managed]]` entry.

use std::{collections::BTreeMap, io::Write};

use base64::Engine as _;

use crate::{
    config::Config,
    render::{self, RenderOptions},
    types::InstanceTypes,
};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// A `docker run` command.
    #[default]
    Docker,
    /// A Kubernetes manifest (Secret, Deployment, Service, NetworkPolicy when egress is off).
    K8s,
    /// A compose file.
    Compose,
}

/// `managed command <server>`: print the generated deployment for a managed server.
#[derive(Debug, Clone, clap::Args)]
pub struct CommandArgs {
    /// The managed server's name.
    pub server: String,
    /// What to generate.
    #[arg(long, value_enum, default_value_t = Format::Docker)]
    pub format: Format,
    /// Instance name (for per-user or named instances).
    #[arg(long)]
    pub instance: Option<String>,
    /// Kubernetes namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Mount the bridge from this host path instead of expecting it in the image.
    #[arg(long)]
    pub bridge_from_host: Option<String>,
}

/// Why a CLI command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// No such server.
    #[error("no managed server `{0}` in the configuration (known: {1})")]
    UnknownServer(String, String),
    /// The spec cannot be rendered.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// An option is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs `managed command`: writes the docker command, Kubernetes manifest or compose file for
/// `args.server` to `out`.
pub fn command(
    args: &CommandArgs,
    configs: &[Config],
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let Some(cfg) = configs.iter().find(|c| c.spec.name == args.server) else {
        let known: Vec<&str> = configs.iter().map(|c| c.spec.name.as_str()).collect();
        return Err(CliError::UnknownServer(
            args.server.clone(),
            known.join(", "),
        ));
    };
    let resolved = InstanceTypes::default().resolve(&cfg.spec)?;
    if let Some(i) = &args.instance
        && !crate::spec::is_dns_label(i, 40)
    {
        return Err(CliError::Invalid(format!(
            "--instance {i:?} is not a DNS label"
        )));
    }
    if let Some(n) = &args.namespace
        && !crate::spec::is_dns_label(n, 63)
    {
        return Err(CliError::Invalid(format!(
            "--namespace {n:?} is not a DNS label"
        )));
    }
    let opts = RenderOptions {
        instance: args.instance.clone(),
        namespace: args.namespace.clone(),
        bridge_from_host: args.bridge_from_host.clone(),
        ..Default::default()
    };
    let text = match args.format {
        Format::Docker => render::docker_run(&resolved, &opts)?,
        Format::Compose => render::compose(&resolved, &opts)?,
        Format::K8s => {
            let mut b = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
                .map_err(|_| CliError::Invalid("no randomness for the bridge secret".into()))?;
            let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            let objects = render::k8s_objects(&resolved, &opts, &secret, &BTreeMap::new())?;
            render::validate_k8s(&objects).map_err(CliError::Invalid)?;
            render::k8s_manifest(&resolved, &opts, &secret, &BTreeMap::new())?
        }
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Vec<Config> {
        vec![Config::from_toml(
            "[spec]\nname = \"time\"\nkind = \"image\"\nimage = \"mcp/time:1\"\ncommand = \"/server\"\n",
        )
        .unwrap()]
    }

    #[test]
    fn prints_each_format() {
        for (f, needle) in [
            (Format::Docker, "docker run"),
            (Format::K8s, "kind: \"Deployment\""),
            (Format::Compose, "services:"),
        ] {
            let mut out = Vec::new();
            let args = CommandArgs {
                server: "time".into(),
                format: f,
                instance: None,
                namespace: None,
                bridge_from_host: None,
            };
            command(&args, &cfg(), &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(needle), "{f:?}: {text}");
        }
    }

    #[test]
    fn unknown_server_names_the_known_ones() {
        let args = CommandArgs {
            server: "nope".into(),
            format: Format::Docker,
            instance: None,
            namespace: None,
            bridge_from_host: None,
        };
        let e = command(&args, &cfg(), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`nope`") && e.contains("time"), "{e}");
    }

    #[test]
    fn the_documented_example_renders_in_every_format() {
        #[derive(serde::Deserialize)]
        struct File {
            managed: Vec<Config>,
        }
        let file: File = toml::from_str(include_str!("../docs/example.toml")).unwrap();
        for f in [Format::Docker, Format::K8s, Format::Compose] {
            let args = CommandArgs {
                server: "everything".into(),
                format: f,
                instance: Some("oncall".into()),
                namespace: Some("mcp".into()),
                bridge_from_host: None,
            };
            let mut out = Vec::new();
            command(&args, &file.managed, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("server-everything"), "{f:?}");
            assert!(
                !text.contains("EVERYTHING_API_TOKEN"),
                "secret references stay out"
            );
        }
    }
}

//! `mcp-gateway kill-switch list|set|lift`: kill switches of a running gateway, through its admin
//! endpoint (`/admin/kill-switches`) with the admin token.

use std::net::SocketAddr;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};

use crate::config::Settings;

/// Arguments of `mcp-gateway kill-switch`.
#[derive(Args, Debug)]
pub(crate) struct KillSwitchArgs {
    #[command(subcommand)]
    action: KillAction,
    /// The running gateway's base URL, e.g. `http://127.0.0.1:8080` (default: from `listen`).
    #[arg(long, global = true)]
    url: Option<String>,
    /// The environment variable holding the admin token (default: `[admin] token_env`).
    #[arg(long, global = true)]
    token_env: Option<String>,
}

#[derive(Subcommand, Debug)]
enum KillAction {
    /// Print the active kill switches.
    List,
    /// Set a kill switch: effective on the next message of every session, open ones included.
    Set(TargetArgs),
    /// Lift a kill switch.
    Lift(TargetArgs),
}

/// What to cut off: exactly one of `--gateway`, `--client`, `--identity`, `--server`
/// (with `--tool` for one tool of that server).
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("scope").required(true).args(["gateway", "client", "identity", "server"])))]
struct TargetArgs {
    /// The whole gateway.
    #[arg(long)]
    gateway: bool,
    /// A client, by its `clientInfo.name`.
    #[arg(long)]
    client: Option<String>,
    /// An identity, by its subject.
    #[arg(long)]
    identity: Option<String>,
    /// An upstream server (with `--tool`: one of its tools).
    #[arg(long)]
    server: Option<String>,
    /// A tool of `--server`, by its name on the upstream.
    #[arg(long, requires = "server")]
    tool: Option<String>,
}

impl TargetArgs {
    /// The admin API's kill target (`mcp_policy::KillTarget` as JSON).
    fn target(&self) -> Result<Value, AdminCliError> {
        if self.gateway {
            return Ok(json!({"scope": "gateway"}));
        }
        if let Some(c) = &self.client {
            return Ok(json!({"scope": "client", "name": c}));
        }
        if let Some(i) = &self.identity {
            return Ok(json!({"scope": "identity", "subject": i}));
        }
        match (&self.server, &self.tool) {
            (Some(s), Some(t)) => Ok(json!({"scope": "tool", "server": s, "tool": t})),
            (Some(s), None) => Ok(json!({"scope": "server", "server": s})),
            (None, _) => Err(AdminCliError::Usage(
                "say what to cut off: --gateway, --client, --identity or --server [--tool]".into(),
            )),
        }
    }
}

/// Errors of the admin client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminCliError {
    /// Missing URL or token.
    #[error("{0}")]
    Usage(String),
    /// The request failed.
    #[error("{url}: {source}")]
    Http {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The gateway refused.
    #[error("{url}: HTTP {status}: {body}")]
    Refused {
        /// Where.
        url: String,
        /// The status.
        status: u16,
        /// The answer.
        body: String,
    },
}

fn base_url(args: &KillSwitchArgs, settings: &Settings) -> Result<String, AdminCliError> {
    if let Some(u) = &args.url {
        return Ok(u.trim_end_matches('/').to_owned());
    }
    let listen: SocketAddr = settings.listen;
    if listen.port() == 0 {
        return Err(AdminCliError::Usage(
            "the configuration listens on port 0: give the gateway's address with --url".into(),
        ));
    }
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else if listen.is_ipv6() {
        format!("[{}]", listen.ip())
    } else {
        listen.ip().to_string()
    };
    Ok(format!("http://{host}:{}", listen.port()))
}

fn token(args: &KillSwitchArgs, settings: &Settings) -> Result<String, AdminCliError> {
    let name = args
        .token_env
        .clone()
        .or_else(|| settings.admin.as_ref().and_then(|a| a.token_env.clone()))
        .ok_or_else(|| {
            AdminCliError::Usage(
                "no admin token: set [admin] token_env in the configuration or pass --token-env"
                    .into(),
            )
        })?;
    std::env::var(&name)
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AdminCliError::Usage(format!("the admin token variable {name} is not set")))
}

/// Runs `kill-switch`; prints the gateway's answer (`{"active": [...]}`) as one JSON line.
pub(crate) async fn kill_switch(
    args: &KillSwitchArgs,
    settings: &Settings,
    out: &mut impl std::io::Write,
) -> Result<(), AdminCliError> {
    let url = format!("{}/admin/kill-switches", base_url(args, settings)?);
    let token = token(args, settings)?;
    let client = reqwest::Client::new();
    let req = match &args.action {
        KillAction::List => client.get(&url),
        KillAction::Set(t) => client.post(&url).body(t.target()?.to_string()),
        KillAction::Lift(t) => client.delete(&url).body(t.target()?.to_string()),
    };
    let http = |source| AdminCliError::Http {
        url: url.clone(),
        source,
    };
    let res = req
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .send()
        .await
        .map_err(http)?;
    let status = res.status();
    let body = res.text().await.map_err(http)?;
    if !status.is_success() {
        return Err(AdminCliError::Refused {
            url,
            status: status.as_u16(),
            body,
        });
    }
    let _ = writeln!(out, "{}", body.trim());
    Ok(())
}

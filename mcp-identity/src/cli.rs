//! Command-line entry points for the reference gateway to mount:
//! `mcp-gateway api-key create|revoke|list` and `mcp-gateway vault keygen|put|delete|list|reencrypt`.
//!
//! Each takes its input/output handles so the binary (and tests) decide where they go.

use std::{
    io::{Read, Write},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Subcommand};

use crate::{
    apikey::{ApiKeyStore, NewApiKey},
    config::Config,
    vault::{FileStore, Vault},
};

/// A CLI failure, printed by the binary.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(String);

impl CliError {
    fn new(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// `api-key …`
#[derive(Debug, Clone, Args)]
pub struct ApiKeyArgs {
    /// The key store (default: `[identity.api_keys] file` of the config).
    #[arg(long, global = true)]
    pub file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: ApiKeyCommand,
}

/// `api-key` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ApiKeyCommand {
    /// Creates a key for an agent and prints it once.
    Create {
        /// The agent's name (the identity's subject).
        #[arg(long)]
        agent: String,
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
        /// Teams (repeatable).
        #[arg(long = "team")]
        teams: Vec<String>,
        /// Roles (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Scopes (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime in days.
        #[arg(long)]
        ttl_days: Option<u64>,
    },
    /// Revokes a key by id.
    Revoke {
        /// The key id (the 16 hex digits after `mgw_`).
        id: String,
    },
    /// Lists keys (never secrets).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

fn key_store(args: &ApiKeyArgs, config: Option<&Config>) -> Result<ApiKeyStore, CliError> {
    let (file, gw) = match (&args.file, config.and_then(|c| c.api_keys.as_ref())) {
        (Some(f), k) => (
            f.clone(),
            k.map_or_else(|| "mcp-gateway".to_owned(), |k| k.gateway_id.clone()),
        ),
        (None, Some(k)) => (k.file.clone(), k.gateway_id.clone()),
        (None, None) => {
            return Err(CliError::new(
                "no key store: pass --file or configure [identity.api_keys] file",
            ));
        }
    };
    ApiKeyStore::open(file, gw).map_err(CliError::new)
}

/// Runs `api-key …`.
pub fn run_api_key(
    args: &ApiKeyArgs,
    config: Option<&Config>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let store = key_store(args, config)?;
    match &args.command {
        ApiKeyCommand::Create {
            agent,
            description,
            teams,
            roles,
            scopes,
            ttl_days,
        } => {
            let (key, rec) = store
                .create(NewApiKey {
                    agent: agent.clone(),
                    description: description.clone(),
                    teams: teams.clone(),
                    roles: roles.clone(),
                    scopes: scopes.clone(),
                    ttl: ttl_days.map(|d| Duration::from_secs(d * 86_400)),
                })
                .map_err(CliError::new)?;
            writeln!(out, "created API key {} for agent `{}`", rec.id, rec.agent)
                .map_err(CliError::new)?;
            writeln!(out, "{key}").map_err(CliError::new)?;
            writeln!(out, "store it now: it is not shown again").map_err(CliError::new)?;
        }
        ApiKeyCommand::Revoke { id } => {
            let rec = store.revoke(id).map_err(CliError::new)?;
            writeln!(out, "revoked API key {} (agent `{}`)", rec.id, rec.agent)
                .map_err(CliError::new)?;
        }
        ApiKeyCommand::List { json } => {
            let list = store.list().map_err(CliError::new)?;
            if *json {
                let v: Vec<serde_json::Value> = list
                    .iter()
                    .map(|r| {
                        serde_json::json!({"id": r.id, "agent": r.agent, "description": r.description,
                            "teams": r.teams, "roles": r.roles, "scopes": r.scopes,
                            "created_at": r.created_at, "expires_at": r.expires_at, "revoked_at": r.revoked_at})
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v)).map_err(CliError::new)?;
            } else {
                writeln!(out, "{:<16}  {:<24}  {:<8}  teams", "id", "agent", "status")
                    .map_err(CliError::new)?;
                for r in list {
                    let status = if r.revoked_at.is_some() {
                        "revoked"
                    } else if r.expires_at.is_some_and(|e| e <= crate::jwt::now_secs()) {
                        "expired"
                    } else {
                        "active"
                    };
                    writeln!(
                        out,
                        "{:<16}  {:<24}  {:<8}  {}",
                        r.id,
                        r.agent,
                        status,
                        r.teams.join(",")
                    )
                    .map_err(CliError::new)?;
                }
            }
        }
    }
    Ok(())
}

/// `vault …` (needs `[identity.vault]` in the config, and its key).
#[derive(Debug, Clone, Args)]
pub struct VaultArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: VaultCommand,
}

/// `vault` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum VaultCommand {
    /// Prints a fresh random key (base64, 32 bytes) for `key_env`/`key_file`.
    Keygen,
    /// Stores a secret read from standard input (trailing newline removed).
    Put {
        /// The record name, e.g. `github-service-token`.
        name: String,
    },
    /// Deletes a record.
    Delete {
        /// The record name.
        name: String,
    },
    /// Lists record names and the key id each is sealed with (never values).
    List,
    /// Re-encrypts every record with the active key (after adding a new key and moving the old
    /// one to `old_keys`).
    Reencrypt,
}

fn open_vault(config: Option<&Config>) -> Result<Vault, CliError> {
    let c = config.ok_or_else(|| CliError::new("a config with [identity.vault] is needed"))?;
    let v = c
        .vault
        .as_ref()
        .ok_or_else(|| CliError::new("the config has no [identity.vault]"))?;
    // Build only the vault: a config section with just the vault.
    let only = Config {
        mode: crate::Mode::Permissive,
        vault: Some(v.clone()),
        ..Config::default()
    };
    let built = only.build().map_err(CliError::new)?;
    built.vault.ok_or_else(|| CliError::new("vault not built"))
}

/// Runs `vault …`.
pub fn run_vault(
    args: &VaultArgs,
    config: Option<&Config>,
    input: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match &args.command {
        VaultCommand::Keygen => {
            writeln!(
                out,
                "{}",
                crate::vault::generate_key().map_err(CliError::new)?
            )
            .map_err(CliError::new)?;
        }
        VaultCommand::Put { name } => {
            let vault = open_vault(config)?;
            let mut buf = Vec::new();
            input.read_to_end(&mut buf).map_err(CliError::new)?;
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            if buf.is_empty() {
                return Err(CliError::new("empty secret on standard input"));
            }
            vault.put(name, &buf).map_err(CliError::new)?;
            writeln!(out, "stored `{name}` (key {})", vault.active_key_id())
                .map_err(CliError::new)?;
        }
        VaultCommand::Delete { name } => {
            let vault = open_vault(config)?;
            let existed = vault.delete(name).map_err(CliError::new)?;
            writeln!(
                out,
                "{}",
                if existed { "deleted" } else { "no such record" }
            )
            .map_err(CliError::new)?;
        }
        VaultCommand::List => {
            let c = config
                .and_then(|c| c.vault.as_ref())
                .ok_or_else(|| CliError::new("the config has no [identity.vault]"))?;
            let store = FileStore::open(&c.dir).map_err(CliError::new)?;
            let mut names = crate::vault::SecretStore::list(&store).map_err(CliError::new)?;
            names.sort();
            for n in names {
                let key = crate::vault::SecretStore::get(&store, &n)
                    .ok()
                    .flatten()
                    .map(|r| r.key_id)
                    .unwrap_or_default();
                writeln!(out, "{n}\t{key}").map_err(CliError::new)?;
            }
        }
        VaultCommand::Reencrypt => {
            let vault = open_vault(config)?;
            let n = vault.reencrypt_all().map_err(CliError::new)?;
            writeln!(
                out,
                "re-encrypted {n} records with key {}",
                vault.active_key_id()
            )
            .map_err(CliError::new)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }

    #[derive(Subcommand)]
    enum Top {
        ApiKey(ApiKeyArgs),
        Vault(VaultArgs),
    }

    fn run(args: &[&str], config: Option<&Config>, stdin: &[u8]) -> Result<String, CliError> {
        let cli = Cli::try_parse_from(std::iter::once("mcp-gateway").chain(args.iter().copied()))
            .map_err(CliError::new)?;
        let mut out = Vec::new();
        match cli.cmd {
            Top::ApiKey(a) => run_api_key(&a, config, &mut out)?,
            Top::Vault(v) => run_vault(&v, config, &mut &stdin[..], &mut out)?,
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn api_key_create_list_revoke() {
        let file =
            std::env::temp_dir().join(format!("mcp-identity-cli-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let f = file.to_str().unwrap();
        let out = run(
            &[
                "api-key", "create", "--file", f, "--agent", "ci", "--team", "ops", "--team", "dev",
            ],
            None,
            b"",
        )
        .unwrap();
        let key = out.lines().nth(1).unwrap().to_owned();
        assert!(key.starts_with("mgw_"));
        let store = ApiKeyStore::open(&file, "mcp-gateway").unwrap();
        assert_eq!(store.authenticate(&key).unwrap().teams, ["ops", "dev"]);
        let id = key[4..20].to_owned();
        let list = run(&["api-key", "list", "--file", f], None, b"").unwrap();
        assert!(list.contains(&id) && list.contains("active"));
        assert!(!list.contains(&key[21..]), "secret printed by list");
        run(&["api-key", "revoke", &id, "--file", f], None, b"").unwrap();
        let json = run(&["api-key", "list", "--json", "--file", f], None, b"").unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v[0]["revoked_at"].is_u64());
        assert!(
            run(
                &["api-key", "revoke", "0000000000000000", "--file", f],
                None,
                b""
            )
            .is_err()
        );
        assert!(
            run(&["api-key", "list"], None, b"")
                .unwrap_err()
                .to_string()
                .contains("--file")
        );
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn vault_put_list_reencrypt() {
        let dir =
            std::env::temp_dir().join(format!("mcp-identity-cli-vault-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = run(&["vault", "keygen"], None, b"").unwrap();
        std::fs::write(dir.join("k1"), key.trim()).unwrap();
        let cfg = Config::from_toml(&format!(
            "mode = \"permissive\"\n[vault]\ndir = \"{0}/v\"\nkey_id = \"k1\"\nkey_file = \"{0}/k1\"",
            dir.display()
        ))
        .unwrap();
        let out = run(&["vault", "put", "gh"], Some(&cfg), b"s3cret\n").unwrap();
        assert!(out.contains("stored `gh`"));
        let list = run(&["vault", "list"], Some(&cfg), b"").unwrap();
        assert_eq!(list, "gh\tk1\n");
        assert!(run(&["vault", "put", "x"], Some(&cfg), b"\n").is_err());
        let vault = open_vault(Some(&cfg)).unwrap();
        assert_eq!(vault.get_string("gh").unwrap().unwrap(), "s3cret");
        assert!(
            run(&["vault", "reencrypt"], Some(&cfg), b"")
                .unwrap()
                .contains("re-encrypted 0")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

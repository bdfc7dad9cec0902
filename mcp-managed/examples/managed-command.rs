//! Run with `cargo run -p mcp-managed --example managed-command -- CONFIG.toml SERVER [--format docker|k8s|compose]`.
//!
//! The `managed command` CLI entry point on its own: reads `[[managed]]` entries from a TOML file
//! and prints the generated deployment for one of them (the reference gateway mounts the same
//! function as `mcp-gateway managed command <server>`).

use std::process::ExitCode;

use clap::Parser;
use mcp_managed::{Config, cli};

#[derive(Debug, Parser)]
struct Args {
    /// A TOML file with `[[managed]]` entries.
    config: std::path::PathBuf,
    #[command(flatten)]
    command: cli::CommandArgs,
}

#[derive(serde::Deserialize)]
struct File {
    #[serde(default)]
    managed: Vec<Config>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let text = match std::fs::read_to_string(&args.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", args.config.display());
            return ExitCode::FAILURE;
        }
    };
    let file: File = match toml::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", args.config.display());
            return ExitCode::FAILURE;
        }
    };
    match cli::command(&args.command, &file.managed, &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

//! `weft-control-plane`: compiles resources into per-proxy snapshots.
//!
//! This build is a skeleton: `serve` loads and validates `--config` with the
//! same loader the proxy uses, then says plainly that serving the discovery
//! stream is not implemented yet.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "weft-control-plane", version, about = "Weft control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the discovery stream, certificate authority and injector.
    Serve {
        /// Resource files or folders (the same YAML the proxy accepts).
        #[arg(long, env = "WEFT_CONFIG")]
        config: Vec<PathBuf>,
        /// Read resources from Kubernetes.
        #[arg(long, env = "WEFT_KUBERNETES")]
        kubernetes: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config, kubernetes } => {
            if !config.is_empty() {
                match weft_proxy::config::load_paths(&config) {
                    Ok(set) => eprintln!("config ok: {} files", set.sources.len()),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            if kubernetes {
                eprintln!("--kubernetes: not implemented in this build");
            }
            eprintln!("weft-control-plane: serving snapshots to proxies is not implemented in this build yet");
            ExitCode::from(2)
        }
    }
}

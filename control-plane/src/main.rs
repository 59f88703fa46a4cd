//! `weft-control-plane`: compiles resources into per-proxy snapshots.
//!
//! This build is a skeleton: `serve` loads and validates `--config` with the
//! same loader the proxy uses, then says plainly that serving the discovery
//! stream is not implemented yet.

mod ca;

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
        /// Directory holding the mesh CA (`ca.pem`, `ca-key.pem`); generated
        /// there on first start.
        #[arg(long, env = "WEFT_CA_DIR")]
        ca_dir: Option<PathBuf>,
        /// Trust domain of the mesh, used when generating a new CA.
        #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "weft.local")]
        trust_domain: String,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve {
            config,
            kubernetes,
            ca_dir,
            trust_domain,
        } => {
            if let Some(dir) = &ca_dir {
                match ca::load_or_generate(dir, &trust_domain) {
                    Ok((_, true)) => eprintln!("ca: generated a new root in {}", dir.display()),
                    Ok((_, false)) => eprintln!("ca: loaded root from {}", dir.display()),
                    Err(e) => {
                        eprintln!("ca: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
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

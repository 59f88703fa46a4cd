//! `weft-proxy`: the command line. Everything else lives in the library.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use weft_proxy::iptables::{self, InterceptOptions};

#[derive(Parser)]
#[command(name = "weft-proxy", version, about = "Weft sidecar proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Run(Box<weft_proxy::run::RunArgs>),
    /// Validate resource files offline; errors name file:line:column and field path.
    /// Fields the standard-channel Gateway API CRDs would drop are warnings (exit 0).
    Check {
        /// Files or folders of *.yaml.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Explain which route, rule and backend a request would take, why the
    /// other rules of its host do not, and every effective setting with its
    /// origin. Exit 0 on a match, 1 when nothing matches, 2 on bad input.
    Explain(Box<weft_proxy::explain::ExplainArgs>),
    /// Install (or remove) the transparent-interception rules (IPv4 and IPv6) in this
    /// network namespace.
    Iptables(IptablesArgs),
}

#[derive(clap::Args)]
struct IptablesArgs {
    #[arg(long, env = "WEFT_OUTBOUND_PORT", default_value_t = 15001)]
    outbound_port: u16,
    #[arg(long, env = "WEFT_INBOUND_PORT", default_value_t = 15006)]
    inbound_port: u16,
    /// The probe listener's port: inbound to it is never intercepted.
    #[arg(long, env = "WEFT_PROBE_PORT", default_value_t = 15020)]
    probe_port: u16,
    /// The uid the proxy runs as: its own traffic is not redirected.
    #[arg(long, env = "WEFT_PROXY_UID", required_unless_present = "uninstall")]
    proxy_uid: Option<u32>,
    #[arg(long, env = "WEFT_PROXY_GID")]
    proxy_gid: Option<u32>,
    #[arg(long, env = "WEFT_EXCLUDE_INBOUND_PORTS", value_delimiter = ',')]
    exclude_inbound_ports: Vec<u16>,
    #[arg(long, env = "WEFT_EXCLUDE_OUTBOUND_PORTS", value_delimiter = ',')]
    exclude_outbound_ports: Vec<u16>,
    #[arg(long, env = "WEFT_EXCLUDE_OUTBOUND_CIDRS", value_delimiter = ',')]
    exclude_outbound_cidrs: Vec<String>,
    /// Leave inbound traffic alone.
    #[arg(long, env = "WEFT_NO_INTERCEPT_INBOUND")]
    no_intercept_inbound: bool,
    /// Print the commands instead of running them.
    #[arg(long, env = "WEFT_DRY_RUN")]
    dry_run: bool,
    /// Remove the rules instead.
    #[arg(long, env = "WEFT_UNINSTALL")]
    uninstall: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => ExitCode::from(weft_proxy::run::run(*args).clamp(0, 255) as u8),
        Command::Check { paths } => check(&paths),
        Command::Explain(args) => {
            ExitCode::from(weft_proxy::explain::explain(*args).clamp(0, 255) as u8)
        }
        Command::Iptables(a) => run_iptables(a),
    }
}

fn check(paths: &[PathBuf]) -> ExitCode {
    match weft_mesh::config::load_paths(paths) {
        Ok(set) => {
            let n = set.http_routes.len()
                + set.grpc_routes.len()
                + set.backends.len()
                + set.traffic_policies.len()
                + set.authorization_policies.len()
                + set.mesh_configs.len();
            // Warnings do not fail the check: the files are valid for Weft.
            let warnings = weft_proxy::check::warnings(&set.sources);
            for w in &warnings {
                eprintln!("{w}");
            }
            let noted = match warnings.len() {
                0 => String::new(),
                1 => ", 1 warning".to_owned(),
                k => format!(", {k} warnings"),
            };
            println!("ok: {n} resources in {} files{noted}", set.sources.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s)", errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn run_iptables(a: IptablesArgs) -> ExitCode {
    let mut out = std::io::stdout();
    let result = if a.uninstall {
        iptables::uninstall(a.dry_run, &mut out)
    } else {
        let mut opts = InterceptOptions::new(a.proxy_uid.unwrap_or(0));
        opts.outbound_port = a.outbound_port;
        opts.inbound_port = a.inbound_port;
        opts.probe_port = a.probe_port;
        opts.proxy_gid = a.proxy_gid;
        opts.exclude_inbound_ports = a.exclude_inbound_ports;
        opts.exclude_outbound_ports = a.exclude_outbound_ports;
        opts.exclude_outbound_cidrs = a.exclude_outbound_cidrs;
        opts.intercept_inbound = !a.no_intercept_inbound;
        iptables::install(&opts, a.dry_run, &mut out)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-proxy iptables: {e}");
            ExitCode::FAILURE
        }
    }
}

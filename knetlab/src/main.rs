//! `knetlab`: a Kubernetes-style cluster network in network namespaces, probed with real
//! packets. The commands are in the library ([`knetlab::cli`]); `cargo xtask` runs the
//! same ones.

use std::process::ExitCode;

use clap::Parser;
use knetlab::cli::{self, Command, Global, Invocation};

/// knetlab: a Kubernetes-style cluster network in network namespaces, probed with real
/// packets. Building clusters needs root (sudo).
#[derive(Parser)]
#[command(name = "knetlab", version, after_help = cli::EXAMPLES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    harness::netns::init();
    let cli = Cli::parse();
    knetlab::logging::init(cli.global.verbose);
    ExitCode::from(cli::run(&cli.global, cli.command, Invocation::KNETLAB))
}

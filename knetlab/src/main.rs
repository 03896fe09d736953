//! `knetlab`: a Kubernetes-style cluster network in network namespaces, probed with real
//! packets. The commands are in the library ([`knetlab::cli`]); `cargo xtask` runs the
//! same ones.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use knetlab::cli::{self, Command, Global, Invocation};
use knetlab::commands;

/// knetlab: a Kubernetes-style cluster network in network namespaces, probed with real
/// packets. Building clusters needs root (sudo).
#[derive(Parser)]
#[command(name = "knetlab", version, after_help = cli::EXAMPLES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Top,
}

/// The shared commands, and `test` (which `cargo xtask test` runs its own way).
#[derive(Subcommand)]
enum Top {
    #[command(flatten)]
    Shared(Command),
    /// Run every scenario in the given files and directories: a line per scenario, a
    /// summary, `--junit FILE` for CI.
    #[command(after_help = commands::test::AFTER_HELP)]
    Test(commands::test::Args),
}

fn main() -> ExitCode {
    harness::netns::init();
    let cli = Cli::parse();
    knetlab::logging::init(cli.global.verbose);
    ExitCode::from(match cli.command {
        Top::Shared(c) => cli::run(&cli.global, c, Invocation::KNETLAB),
        Top::Test(args) => cli::run_test(&cli.global, args, Invocation::KNETLAB),
    })
}

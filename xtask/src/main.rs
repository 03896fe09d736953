//! knetlab's command line, run as `cargo xtask ...`: run a scenario and print its
//! reachability matrix, list scenarios, sweep what killed runs left, run the test suite,
//! and benchmark. Exit codes: 0 all asserted cells match, 1 a mismatch, 2 bad input or a
//! setup failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod scenario_files;

/// knetlab: a Kubernetes-style cluster network in network namespaces, probed with real packets.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a scenario's cluster, probe it, print the matrix and tear it down.
    Scenario(commands::scenario::Args),
    /// List the scenarios with their one-line summaries.
    List,
    /// Remove everything earlier runs left behind (namespaces and CNI state), found by
    /// knetlab's prefix only.
    Clean {
        /// Also remove clusters whose run is still alive (e.g. kept with --keep).
        #[arg(long)]
        force: bool,
    },
    /// Run the whole test suite (installs missing system packages first when root).
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Measure bring-up, probing and teardown, and write BENCHMARKS.md.
    Bench(commands::bench::Args),
    /// An interactive shell inside a namespace of a cluster kept with `--keep`.
    Shell(commands::shell::Args),
    /// Run one command inside a namespace of a kept cluster: `exec x/a -- ip -br addr`.
    Exec(commands::exec::Args),
    /// Remove a cluster kept with `--keep` (CNI DEL, then its namespaces).
    Down(commands::down::Args),
    /// Run scenarios many times (some killed, then `clean`) and check the host after each.
    Soak(commands::soak::Args),
}

fn main() -> ExitCode {
    harness::netns::init();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Scenario(args) => commands::scenario::main(args),
        Command::List => commands::list::main(),
        Command::Clean { force } => commands::clean::main(force),
        Command::Test { cargo_args } => commands::test::main(&cargo_args),
        Command::Bench(args) => commands::bench::main(args),
        Command::Shell(args) => commands::shell::main(args),
        Command::Exec(args) => commands::exec::main(args),
        Command::Down(args) => commands::down::main(args),
        Command::Soak(args) => commands::soak::main(args),
    };
    ExitCode::from(code)
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

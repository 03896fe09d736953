//! The user commands as clap definitions, and [`run`], which carries one out and returns
//! the process's exit code: 0 all asserted cells match, 1 a mismatch, 2 bad input or a
//! setup failure (a command run with `exec`/`shell` passes its own code on). `cargo xtask`
//! flattens [`Command`] and [`Global`] into its own parser, so both run the same code.

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Subcommand;

use crate::commands;
use crate::scenarios::Catalog;

/// Examples for `knetlab --help`.
pub const EXAMPLES: &str = "\
Examples:
  knetlab list                                    the built-in scenarios
  sudo knetlab check ./k8s/                       your manifests: build, probe, print
  helm template app ./chart | sudo knetlab check -
  sudo knetlab diff k8s-main/ k8s-pr/             the cells a change opens or closes
  sudo knetlab test ci/ --junit report.xml        run scenario files, JUnit for CI
  sudo knetlab scenario default-deny              build, probe, print the matrix, tear down
  sudo knetlab scenario ./my-cluster.yaml --json  a scenario file of yours, as JSON
  sudo knetlab scenario default-deny --explain x/a y/b:80/TCP
  sudo knetlab scenario pod-network --keep        leave the cluster up, then:
  sudo knetlab exec x/a -- ip -br addr            run a command in a pod
  sudo knetlab shell n1                           a shell in a node
  sudo knetlab down                               remove the kept cluster
  sudo knetlab clean                              remove what killed runs left

Exit codes: 0 every asserted cell matched, 1 a mismatch, 2 bad input or a setup failure.
Logs: warnings on stderr; -v for debug events, or RUST_LOG (e.g. RUST_LOG=harness=trace).";

/// Options every command takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Global {
    /// More log output on stderr: -v debug events, -vv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The directory scenario names are looked up in (default: $KNETLAB_SCENARIOS, the
    /// source tree when run inside it, else the scenarios built into the binary).
    #[arg(long, value_name = "DIR", global = true)]
    pub scenarios: Option<PathBuf>,
}

/// The user commands.
#[derive(Subcommand)]
pub enum Command {
    /// Build a scenario's cluster, probe it, print the matrix and tear it down.
    Scenario(commands::scenario::Args),
    /// Check your own manifests (files, directories, or - for stdin) with no scenario
    /// file: build, probe every pod and Service port from every pod, print the matrices.
    #[command(after_help = commands::check::AFTER_HELP)]
    Check(commands::check::Args),
    /// What a change to the manifests changes: run OLD and NEW, print the cells whose
    /// verdict differs, with the objects behind each and the oracle's reasons.
    #[command(after_help = commands::diff::AFTER_HELP)]
    Diff(commands::diff::Args),
    /// List the scenarios with their one-line summaries (and say where they come from).
    List,
    /// Remove everything earlier runs left behind (namespaces and CNI state), found by
    /// knetlab's prefix only.
    Clean {
        /// Also remove clusters whose run is still alive (e.g. kept with --keep).
        #[arg(long)]
        force: bool,
    },
    /// An interactive shell inside a namespace of a cluster kept with `--keep`.
    Shell(commands::shell::Args),
    /// Run one command inside a namespace of a kept cluster: `exec x/a -- ip -br addr`.
    Exec(commands::exec::Args),
    /// Remove a cluster kept with `--keep` (CNI DEL, then its namespaces).
    Down(commands::down::Args),
}

/// How the commands were started: what hints print as the command to type, and whether
/// scenario names always mean the source tree's files (`cargo xtask`).
#[derive(Debug, Clone, Copy)]
pub struct Invocation {
    pub program: &'static str,
    pub always_source_tree: bool,
}

impl Invocation {
    pub const KNETLAB: Invocation = Invocation {
        program: "knetlab",
        always_source_tree: false,
    };
    pub const XTASK: Invocation = Invocation {
        program: "cargo xtask",
        always_source_tree: true,
    };
}

static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// The command users type to run knetlab (`knetlab` or `cargo xtask`), for hints.
pub fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("knetlab")
}

/// Carries out `command` and returns the exit code.
pub fn run(global: &Global, command: Command, how: Invocation) -> u8 {
    let _ = PROGRAM.set(how.program);
    let catalog = || {
        Catalog::locate(global.scenarios.as_deref(), how.always_source_tree).inspect_err(|e| {
            eprintln!("error: {e}");
        })
    };
    match command {
        Command::Scenario(args) => match catalog() {
            Ok(c) => commands::scenario::main(&c, args),
            Err(_) => 2,
        },
        Command::Check(args) => commands::check::main(args),
        Command::Diff(args) => commands::diff::main(args),
        Command::List => match catalog() {
            Ok(c) => commands::list::main(&c),
            Err(_) => 2,
        },
        Command::Clean { force } => commands::clean::main(force),
        Command::Shell(args) => commands::shell::main(args),
        Command::Exec(args) => commands::exec::main(args),
        Command::Down(args) => commands::down::main(args),
    }
}

/// `test PATH...`, kept out of [`Command`] because `cargo xtask test` is the developer
/// suite: the `knetlab` binary adds it as its own subcommand, and `cargo xtask test`
/// forwards here when given scenario paths.
pub fn run_test(global: &Global, args: commands::test::Args, how: Invocation) -> u8 {
    let _ = PROGRAM.set(how.program);
    match Catalog::locate(global.scenarios.as_deref(), how.always_source_tree) {
        Ok(c) => commands::test::main(&c, args),
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        global: Global,
        #[command(subcommand)]
        command: Command,
    }

    #[test]
    fn the_commands_parse_with_the_global_options_anywhere() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "knetlab",
            "scenario",
            "default-deny",
            "--json",
            "-vv",
            "--scenarios",
            "/tmp",
        ])
        .unwrap();
        assert_eq!(cli.global.verbose, 2);
        assert_eq!(
            cli.global.scenarios.as_deref(),
            Some(std::path::Path::new("/tmp"))
        );
        assert!(
            matches!(cli.command, Command::Scenario(a) if a.json && a.scenario == "default-deny")
        );
        let cli =
            Cli::try_parse_from(["knetlab", "exec", "x/a", "--", "ip", "-br", "addr"]).unwrap();
        assert!(matches!(cli.command, Command::Exec(a) if a.command == ["ip", "-br", "addr"]));
    }
}

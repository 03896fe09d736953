//! knetlab's developer tasks, run as `cargo xtask ...`: the test suite and the benchmarks.
//! The user commands (scenario, check, diff, list, clean, shell, exec, down; `test` with
//! scenario paths) are the `knetlab` binary's; `cargo xtask` accepts them too and runs the same code (`knetlab::cli`), with
//! scenario names taken from the source tree. Exit codes: 0 all asserted cells match, 1
//! a mismatch, 2 bad input or a setup failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use knetlab::cli::{Global, Invocation};

mod commands;

/// knetlab's developer tasks, and the user commands of the `knetlab` binary.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about, long_about = None, after_help = knetlab::cli::EXAMPLES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    User(knetlab::cli::Command),
    /// Run the whole test suite (installs missing system packages first when root); with
    /// scenario paths, run those scenarios instead, as `knetlab test PATH...` does.
    Test {
        /// Scenario files or directories: run them (`knetlab test`) instead of the suite.
        #[arg(value_name = "PATH")]
        paths: Vec<String>,
        /// With PATHs: write JUnit XML to FILE.
        #[arg(long, value_name = "FILE", requires = "paths")]
        junit: Option<PathBuf>,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Measure bring-up, probing and teardown, and write BENCHMARKS.md.
    Bench(commands::bench::Args),
    /// Run scenarios many times (some killed, then `clean`) and check the host after each.
    Soak(commands::soak::Args),
    /// Compare the oracle with the kernel on N seeded random cases (policies or Services).
    Differential(commands::differential::Args),
}

fn main() -> ExitCode {
    harness::netns::init();
    let cli = Cli::parse();
    knetlab::logging::init(cli.global.verbose);
    let code = match cli.command {
        Command::User(c) => knetlab::cli::run(&cli.global, c, Invocation::XTASK),
        Command::Test {
            paths,
            junit,
            cargo_args,
        } if !paths.is_empty() => {
            if !cargo_args.is_empty() {
                eprintln!("error: cargo test arguments (after --) do not apply to scenario paths");
                2
            } else {
                knetlab::cli::run_test(
                    &cli.global,
                    knetlab::commands::test::Args { paths, junit },
                    Invocation::XTASK,
                )
            }
        }
        Command::Test { cargo_args, .. } => commands::test::main(&cargo_args),
        Command::Bench(args) => commands::bench::main(args),
        Command::Soak(args) => commands::soak::main(args),
        Command::Differential(args) => commands::differential::main(args),
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks the whole command line at once: two options of one name (a global one
    /// and a subcommand's) would otherwise panic only when a user types that command.
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

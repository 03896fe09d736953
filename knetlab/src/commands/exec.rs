//! `knetlab exec NODE|NS/POD [--prefix P] -- CMD...`: runs one command inside a
//! namespace of a kept cluster (see [`super::shell`] for how the run is found) and exits
//! with the command's exit code (128 + the signal when a signal ended it).

use harness::system::Tool;
use std::process::{Command, ExitStatus};

#[derive(clap::Args)]
pub struct Args {
    /// Where: a node (`n1` or `node/n1`), a pod (`ns/pod`), `fabric`, `router` or
    /// `host/NAME`.
    pub target: String,
    /// The kept run (needed when several are up).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The exit code to pass on from a finished child.
pub fn status_code(status: std::io::Result<ExitStatus>, what: &str) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => u8::try_from(c).unwrap_or(1),
            (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
            (None, None) => 1,
        },
        Err(e) => {
            eprintln!("error: cannot run {what}: {e}");
            // What shells answer for a command they cannot run.
            127
        }
    }
}

pub fn main(args: Args) -> u8 {
    if !harness::netns::have_privileges() {
        eprintln!("error: entering a network namespace needs root: run it with sudo");
        return 2;
    }
    let ns = match super::shell::find_run(args.prefix.as_deref())
        .and_then(|run| super::shell::namespace(&run, &args.target))
    {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let status = Command::new(Tool::Ip.binary())
        .args(["netns", "exec", &ns])
        .args(&args.command)
        .status();
    status_code(
        status,
        &format!("ip netns exec {ns} {}", args.command.join(" ")),
    )
}

//! `knetlab down [--prefix P]`: removes a cluster left up with `--keep`: its cached
//! CNI attachments are DELeted through the plugins (inside their node namespaces), then
//! its namespaces and state directory go (`harness::sweep::clean_prefix`, the
//! same sweep `clean` and a crashed run use). With several kept runs, `--prefix` says
//! which; a run whose process is still going is left alone.

use harness::sweep;

#[derive(clap::Args)]
pub struct Args {
    /// The kept run (needed when several are up). Any run prefix whose owner is gone
    /// is accepted, also one without a kept-run file.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
}

pub fn main(args: Args) -> u8 {
    if !harness::netns::have_privileges() {
        eprintln!("error: down removes network namespaces and needs root: run it with sudo");
        return 2;
    }
    let prefix = match (&args.prefix, super::shell::find_run(args.prefix.as_deref())) {
        (_, Ok(run)) => run.prefix,
        // A run kept before kept-run files existed, or whose file is gone.
        (Some(p), Err(_))
            if sim::plan::is_prefix(p)
                && !harness::netns::list_run(p).unwrap_or_default().is_empty() =>
        {
            p.clone()
        }
        (_, Err(e)) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if let Some(pid) = sweep::live_owner(&sweep::state_dir(&prefix)) {
        eprintln!(
            "error: run {prefix} is still going (process {pid}); stop it first (Ctrl-C tears it down)"
        );
        return 2;
    }
    let report = sweep::clean_prefix(&prefix);
    println!("{report}");
    if report.is_ok() { 0 } else { 2 }
}

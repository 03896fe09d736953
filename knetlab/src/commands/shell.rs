//! `knetlab shell NODE|NS/POD [--prefix P]`: an interactive shell inside one
//! namespace of a cluster left up with `--keep`, with a prompt that names where it is.
//! Kept runs are found by the file they leave in their state directory
//! (`harness::sweep::KEPT_FILE`); with several, `--prefix` picks one.
//! The shell runs through `ip netns exec`, which also shows the namespace's own `/sys`
//! and its `/etc/netns/NAME` files (the pods' resolv.conf), as `--keep` tells people.

use harness::system::Tool;
use std::process::Command;

use harness::sweep::{KeptRun, kept_runs};

#[derive(clap::Args)]
pub struct Args {
    /// Where: a node (`n1` or `node/n1`), a pod (`ns/pod`), `fabric`, `router` or
    /// `host/NAME`.
    pub target: String,
    /// The kept run (needed when several are up).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
}

/// The kept run meant: the one with `prefix`, or the only one.
pub fn find_run(prefix: Option<&str>) -> Result<KeptRun, String> {
    pick(kept_runs(), prefix)
}

fn pick(runs: Vec<KeptRun>, prefix: Option<&str>) -> Result<KeptRun, String> {
    let list = |runs: &[KeptRun]| {
        runs.iter()
            .map(|r| format!("  --prefix {}  ({})", r.prefix, r.scenario))
            .collect::<Vec<_>>()
            .join("\n")
    };
    match prefix {
        Some(p) => {
            let found = runs.iter().find(|r| r.prefix == p).cloned();
            found.ok_or_else(|| {
                if runs.is_empty() {
                    format!(
                        "no kept cluster has prefix {p} (none is up: run a scenario with --keep)"
                    )
                } else {
                    format!(
                        "no kept cluster has prefix {p}; these are up:\n{}",
                        list(&runs)
                    )
                }
            })
        }
        None => match runs.len() {
            0 => Err(format!(
                "no kept cluster is up: run `{} scenario NAME --keep` first",
                crate::cli::program()
            )),
            1 => Ok(runs.into_iter().next().expect("one")),
            _ => Err(format!(
                "{} kept clusters are up; say which with --prefix:\n{}",
                runs.len(),
                list(&runs)
            )),
        },
    }
}

/// The namespace of `target` in `run`, or an error listing what there is.
pub fn namespace(run: &KeptRun, target: &str) -> Result<String, String> {
    run.namespace_of(target).map(str::to_string).ok_or_else(|| {
        format!(
            "{target:?} is not in the kept cluster {} ({}); pick one of: {}",
            run.prefix,
            run.scenario,
            run.targets().join(" ")
        )
    })
}

/// `ip netns exec NS bash --norc -i` with a prompt naming the target.
pub fn shell_command(run: &KeptRun, target: &str) -> Result<Command, String> {
    let ns = namespace(run, target)?;
    let mut cmd = Command::new(Tool::Ip.binary());
    cmd.args(["netns", "exec", &ns, "bash", "--norc", "-i"])
        .env(
            "PS1",
            format!("[knetlab {} {target}] \\w\\$ ", run.scenario),
        )
        .env("KNETLAB_NETNS", &ns);
    Ok(cmd)
}

pub fn main(args: Args) -> u8 {
    if !harness::netns::have_privileges() {
        eprintln!("error: entering a network namespace needs root: run it with sudo");
        return 2;
    }
    let run = match find_run(args.prefix.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut cmd = match shell_command(&run, &args.target) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    eprintln!(
        "a shell in {} of {} ({}); `exit` to leave",
        args.target, run.scenario, run.prefix
    );
    crate::commands::exec::status_code(cmd.status(), "bash")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(prefix: &str) -> KeptRun {
        KeptRun {
            scenario: "pod-network".into(),
            prefix: prefix.into(),
            nodes: [("n1".to_string(), format!("{prefix}-node-n1"))].into(),
            pods: [(
                "x/a".to_string(),
                (format!("{prefix}-pod-x.a"), "10.244.1.2".parse().unwrap()),
            )]
            .into(),
            others: [("fabric".to_string(), format!("{prefix}-fabric"))].into(),
        }
    }

    #[test]
    fn the_shell_enters_the_targets_namespace_with_a_prompt_naming_it() {
        let r = run("kl000001");
        let cmd = shell_command(&r, "x/a").unwrap();
        assert_eq!(cmd.get_program(), Tool::Ip.binary());
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            ["netns", "exec", "kl000001-pod-x.a", "bash", "--norc", "-i"]
        );
        let ps1 = cmd
            .get_envs()
            .find(|(k, _)| *k == "PS1")
            .and_then(|(_, v)| v)
            .unwrap();
        assert_eq!(ps1, "[knetlab pod-network x/a] \\w\\$ ");
        for (target, ns) in [
            ("n1", "kl000001-node-n1"),
            ("node/n1", "kl000001-node-n1"),
            ("fabric", "kl000001-fabric"),
        ] {
            assert_eq!(namespace(&r, target).unwrap(), ns);
        }
        let e = namespace(&r, "y/b").unwrap_err();
        assert!(e.contains("pick one of: n1 x/a fabric"), "{e}");
    }

    #[test]
    fn several_kept_runs_need_a_prefix() {
        assert!(pick(vec![], None).unwrap_err().contains("no kept cluster"));
        assert_eq!(
            pick(vec![run("kl000001")], None).unwrap().prefix,
            "kl000001"
        );
        let two = vec![run("kl000001"), run("kl000002")];
        let e = pick(two.clone(), None).unwrap_err();
        assert!(e.contains("--prefix kl000002  (pod-network)"), "{e}");
        assert_eq!(
            pick(two.clone(), Some("kl000002")).unwrap().prefix,
            "kl000002"
        );
        assert!(pick(two, Some("kl000003")).is_err());
    }
}

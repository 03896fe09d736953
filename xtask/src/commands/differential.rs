//! `cargo xtask differential`: runs N seeded random cases on live clusters and compares
//! every probed cell with the oracle (the engine is `harness::differential`, shared with
//! `harness/tests/differential.rs`). Every disagreement is printed as it is found (seed,
//! the case as a scenario file, the cell, measured against the oracle with its reason),
//! then a summary with the wall time. Exit code 0 when every cell agrees, 1 when some
//! disagree, 2 when the run could not be made.

use harness::differential::{policy, seeds, services};
use sim::scenario::DenyStyle;

/// Which random cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// NetworkPolicies and namespace/pod labels over the standard model (3 namespaces of
    /// 3 pods on 2 nodes), enforced by the iptables engine; 594 cells per case.
    Policy,
    /// Service sets (selectors, named targetPorts, session affinity, internal and
    /// external traffic policies, ClusterIP, NodePort and LoadBalancer) through
    /// kube-proxy's iptables mode, probed from pods and from a host outside.
    Services,
}

/// Oracle against the kernel on N seeded random cases.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  sudo cargo xtask differential --kind policy --cases 2000
  sudo cargo xtask differential --kind services --cases 200 --seed 5000
  sudo cargo xtask differential --kind policy --seed 1234 --cases 1   # one case again

A case is made from its seed alone, so a disagreement is reproduced with --seed S
--cases 1; each printed case is also a scenario file for `cargo xtask scenario FILE`,
which shows the oracle's reasons for every cell.")]
pub struct Args {
    /// What to generate.
    #[arg(long, value_enum, default_value = "policy")]
    kind: Kind,
    /// How many cases.
    #[arg(long, default_value_t = 300)]
    cases: u64,
    /// The first case's seed; the cases are seeds S, S+1, ... S+N-1.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Policy cases: deny with DROP instead of REJECT (every denied probe then waits
    /// out its deadline, so the run is much slower).
    #[arg(long)]
    drop: bool,
    /// Policy cases: keep conntrack between cases (a UDP probe may then ride on a flow
    /// an earlier case allowed, as established flows do when a policy changes).
    #[arg(long)]
    no_flush: bool,
}

pub fn main(args: Args) -> u8 {
    if !harness::netns::have_privileges() {
        eprintln!("error: differential builds network namespaces and needs root: run it with sudo");
        return 2;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return 2;
        }
    };
    let seeds = seeds(args.seed, args.cases);
    runtime.block_on(async {
        match args.kind {
            Kind::Policy => {
                let settings = policy::Settings {
                    seeds,
                    deny: if args.drop {
                        DenyStyle::Drop
                    } else {
                        DenyStyle::Reject
                    },
                    flush: !args.no_flush,
                };
                match policy::run_cases(&settings).await {
                    Ok((f, total)) => {
                        println!("{}", policy::report(&f, &settings, total));
                        if f.failing.is_empty() {
                            0
                        } else {
                            println!(
                                "disagreeing seeds: {:?}",
                                f.failing.keys().collect::<Vec<_>>()
                            );
                            1
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        2
                    }
                }
            }
            Kind::Services => match services::run_cases(&seeds).await {
                Ok((f, total)) => {
                    println!("{}", f.report(total));
                    for (batch, e) in &f.failed_batches {
                        println!("failed batch {batch:?}: {e}");
                    }
                    if !f.disagreements.is_empty() {
                        println!("disagreeing seeds: {:?}", f.failing_seeds());
                    }
                    if f.ok() { 0 } else { 1 }
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    2
                }
            },
        }
    })
}

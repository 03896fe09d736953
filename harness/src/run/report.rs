//! What a run reports: the measured steps, timings, rules as installed, notes, and
//! what `--keep` left up.

use std::net::Ipv4Addr;

use sim::matrix::{Cell, StepResult};
use sim::objects::PodRef;

use crate::probe::throughput::ThroughputCheck;

/// Wall-clock times of a run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timings {
    pub bring_up_ms: f64,
    pub probe_ms: f64,
    pub teardown_ms: f64,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub scenario: String,
    pub prefix: String,
    pub steps: Vec<StepResult>,
    pub timings: Timings,
    /// Normalised description of what was built (after the first step), for snapshots.
    pub built: String,
    /// Problems during teardown (the run's verdict still stands, but they are shown).
    pub teardown_errors: Vec<String>,
    /// Names of what was left up with `--keep`.
    pub kept: Option<Kept>,
    /// For `--explain`: per step, the oracle's full reasoning and the measured cell.
    pub explanations: Vec<Explained>,
    /// Per step: how long applying, syncing and probing took, and the time to enforce.
    pub step_timings: Vec<StepTimings>,
    /// Per step, per node: the enforcer's rules as installed (normalised).
    pub rules: Vec<Vec<(String, String)>>,
    /// What the CNI chain did besides wiring (CHECK, notes on known plugin bugs).
    pub cni: CniReport,
    /// Per step: the scenario's `throughput:` checks measured in it.
    pub throughput: Vec<Vec<ThroughputCheck>>,
    /// With [`RunOptions::capture`]: what was on the wire (see [`crate::capture`]).
    pub capture_summary: Option<String>,
    /// Per step, per node: the service proxy's rules as installed (normalised, as
    /// `iptables-save` prints kube-proxy's part); empty when the scenario has no Services
    /// (then no proxy runs).
    pub proxy_rules: Vec<Vec<(String, String)>>,
    /// Things the run did not do or only partly did, in words (for example Service types
    /// whose rules are installed but cannot be probed yet).
    pub notes: Vec<String>,
    /// Per step: the cluster's objects as the run held them when the step was probed
    /// (pods with the addresses the CNI plugin gave), for the report's picture.
    pub objects: Vec<sim::objects::ClusterObjects>,
    /// With `--trace`: per step, the traced probe's story.
    pub traces: Vec<super::Traced>,
    /// With `cluster.dns`: per step, the records served, what each `dns/` cell's client
    /// resolved, and the pods' service environment variables. Empty without.
    pub dns: Vec<crate::dns::DnsStep>,
    /// Per step with an ingress controller: what it did and the `http:` checks.
    pub ingress: Vec<crate::ingress::checks::IngressStep>,
}

/// Where one step's time went.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StepTimings {
    /// From the start of the change until every node's rules were loaded.
    pub apply_ms: f64,
    /// Of that, the policy engine's sync (all nodes, in parallel).
    pub sync_ms: f64,
    /// Of that, the service proxy's sync (all nodes, in parallel; 0 without Services).
    pub proxy_sync_ms: f64,
    /// What the service proxy wrote: nodes written to, and the restore text's size
    /// summed over them (a partial sync writes only the Services that changed).
    pub proxy_nodes_written: usize,
    pub proxy_restore_bytes: usize,
    /// Probe rounds of this step.
    pub probe_ms: f64,
    /// The first round alone: every cell of the step measured once.
    pub first_round_ms: f64,
    pub rounds: usize,
    /// From the start of the change to the end of the first probe round in which every
    /// cell showed the oracle's verdict: knetlab's "time to enforce". `None` if no round
    /// agreed.
    pub enforce_ms: Option<f64>,
}

/// The oracle's walkthrough for one cell in one step, with what was measured.
#[derive(Debug, Clone)]
pub struct Explained {
    pub step: String,
    pub text: String,
    pub cell: Option<Cell>,
}

/// What `--keep` left behind and how to get in.
#[derive(Debug, Clone)]
pub struct Kept {
    pub nodes: Vec<(String, String)>,
    pub pods: Vec<(PodRef, String, Ipv4Addr)>,
    /// The fabric, the router and the external hosts: (what, namespace).
    pub others: Vec<(String, String)>,
}

impl Kept {
    /// What `cargo xtask shell|exec|down` find later (see [`crate::sweep::KeptRun`]).
    pub fn state(&self, scenario: &str, prefix: &str) -> crate::sweep::KeptRun {
        crate::sweep::KeptRun {
            scenario: scenario.to_string(),
            prefix: prefix.to_string(),
            nodes: self.nodes.iter().cloned().collect(),
            pods: self
                .pods
                .iter()
                .map(|(p, ns, ip)| (p.to_string(), (ns.clone(), *ip)))
                .collect(),
            others: self
                .others
                .iter()
                .map(|(what, ns)| {
                    // `host/NAME (ADDR)` is entered as `host/NAME`.
                    let name = what.split(" (").next().unwrap_or(what).to_string();
                    (name, ns.clone())
                })
                .collect(),
        }
    }
}

impl RunReport {
    pub fn ok(&self) -> bool {
        self.steps.iter().all(StepResult::ok)
            && self.throughput.iter().flatten().all(ThroughputCheck::ok)
            && self
                .ingress
                .iter()
                .flat_map(|s| &s.checks)
                .all(crate::ingress::checks::HttpCheck::ok)
    }
}

/// The CNI chain beyond addresses: CHECK after every ADD round, and notes.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CniReport {
    /// Attachments CHECKed (two per pod) and the time CHECK took, over all steps.
    pub checked: usize,
    pub check_ms: f64,
    /// Known plugin bugs CHECK stepped over (one line per plugin and issue), networks
    /// not checked, and pod settings the chain ignores.
    pub notes: Vec<String>,
}

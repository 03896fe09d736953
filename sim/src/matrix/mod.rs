//! Reachability matrices: what each probe measured, what was expected, what the oracle
//! predicted, and the Cyclonus-style truth tables (`.` reachable, `X` not) and diffs that
//! show them. Pure data and text; the harness fills the measurements in.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::peers::Peer;
use crate::protocol::PortProto;

mod table;

pub use table::{LEGEND, LEGEND_MIXED, Tally, render_spread, render_step, render_tables, tally};

/// What one probe observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The right pod answered.
    Allowed,
    /// Delivered, but nothing listened: a TCP RST or ICMP port unreachable from the pod.
    Refused,
    /// No answer by the deadline.
    Dropped,
    /// An ICMP error from a filter on the way (admin-prohibited).
    Rejected,
    /// The harness failed to measure (never a verdict).
    Error,
}

impl Outcome {
    /// allow / deny, or `None` when nothing was measured.
    pub fn verdict(self) -> Option<Verdict> {
        match self {
            Outcome::Allowed => Some(Verdict::Allow),
            Outcome::Refused | Outcome::Dropped | Outcome::Rejected => Some(Verdict::Deny),
            Outcome::Error => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused => "refused",
            Outcome::Dropped => "dropped",
            Outcome::Rejected => "rejected",
            Outcome::Error => "error",
        }
    }
}

/// Reachable or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn from_allowed(allowed: bool) -> Self {
        if allowed {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }
}

/// The measurement of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Measurement {
    pub outcome: Outcome,
    /// Who answered (`ns/name` as the server said it), if anyone did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    /// The client address the server saw, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_source: Option<Ipv4Addr>,
    /// Extra words: the error, or what arrived instead of an answer.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Time from the first packet to the outcome, in microseconds.
    pub elapsed_us: u64,
}

/// One cell of a step's matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub from: Peer,
    /// The server: a pod or an external host.
    pub to: Peer,
    pub port: PortProto,
    /// The client's own address (the pod's IP, or the node's underlay address).
    pub client_ip: Option<Ipv4Addr>,
    /// From the scenario's `expect`; `None` when not asserted (e.g. self cells).
    pub expected: Option<Verdict>,
    /// Whether this cell is checked against `expected` (self cells only with `loopback: check`).
    pub asserted: bool,
    pub measured: Measurement,
    /// The oracle's prediction and its reasoning, when an oracle ran. For a Service
    /// cell whose backends disagree ("mixed"), `None`: see [`ServiceCell`].
    pub oracle: Option<Verdict>,
    pub reason: Option<String>,
    /// When the server is a Service (`svc/NS/NAME:PORT`): its backends as the oracle
    /// sees them and how the probes spread over them. `measured` is then one of the
    /// probes (the first that shows a problem, else the first).
    pub service: Option<ServiceCell>,
}

/// The Service side of a cell: kube-proxy picks a backend per new connection, so a
/// cell is a set of probes, each answered by one backend or by none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ServiceCell {
    /// Every backend the connection may land on (`ns/pod`, `host/NAME` or `ip:port`)
    /// with the oracle's verdict for it. Empty when kube-proxy rejects or drops the
    /// connection (no endpoints).
    pub backends: Vec<(String, Verdict)>,
    pub spread: Spread,
    /// The oracle says the Service has `sessionAffinity: ClientIP`: kube-proxy keeps the
    /// client on the backend it first got, so every answer must come from one backend.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub affinity: bool,
}

/// How the probes of one cell came out: who answered how often, and how many probes
/// nobody answered, by outcome.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Spread {
    pub answered: BTreeMap<String, usize>,
    pub unanswered: BTreeMap<Outcome, usize>,
}

impl Spread {
    /// Counts one probe.
    pub fn add(&mut self, m: &Measurement) {
        match (&m.answered_by, m.outcome) {
            (Some(who), Outcome::Allowed) => *self.answered.entry(who.clone()).or_default() += 1,
            (_, outcome) => *self.unanswered.entry(outcome).or_default() += 1,
        }
    }

    /// Whether one entry node sent the client to more than one backend. kube-proxy keeps
    /// ClientIP affinity per node, so a client entering at several nodes (a load
    /// balancer's ECMP, answers named `n1 -> ns/pod`) may be pinned on each; the
    /// differential test found such a cell counted as broken affinity.
    pub fn pinned_apart(&self) -> bool {
        let mut per_entry: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
        for who in self.answered.keys() {
            let (entry, backend) = who.split_once(" -> ").unwrap_or(("", who));
            per_entry.entry(entry).or_default().insert(backend);
        }
        per_entry.values().any(|b| b.len() > 1)
    }

    pub fn probes(&self) -> usize {
        self.answered.values().sum::<usize>() + self.unanswered.values().sum::<usize>()
    }

    /// Probes some backend answered.
    pub fn reached(&self) -> usize {
        self.answered.values().sum()
    }
}

impl ServiceCell {
    /// The problem with the probes of this cell, if any, given the cell's verdicts: an
    /// answer from a backend the oracle says is denied, any answer where every backend is
    /// denied (`want` = Deny), any unanswered probe where every backend allows (`want` =
    /// Allow). A mixed cell (`want` = None) only checks the answers.
    fn problem(&self, want: Option<Verdict>, what: &str) -> Option<String> {
        let n = self.spread.probes();
        if let Some(errors) = self.spread.unanswered.get(&Outcome::Error) {
            return Some(format!("{errors} of {n} probes could not be measured"));
        }
        if self.affinity && self.spread.pinned_apart() {
            let who: Vec<String> = self
                .spread
                .answered
                .iter()
                .map(|(b, c)| format!("{b} {c}"))
                .collect();
            return Some(format!(
                "sessionAffinity ClientIP should pin the client to one backend, but {} answered its {n} probes ({})",
                self.spread.answered.len(),
                who.join(", ")
            ));
        }
        for (who, count) in &self.spread.answered {
            match self.backends.iter().find(|(b, _)| b == who) {
                None => return Some(format!("answered by {who}, which is not a backend")),
                Some((_, Verdict::Deny)) => {
                    return Some(format!(
                        "{who} answered {count} of {n} probes, but the oracle says policy denies that backend"
                    ));
                }
                Some((_, Verdict::Allow)) => {}
            }
        }
        let reached = self.spread.reached();
        match want {
            Some(Verdict::Allow) if reached < n => Some(format!(
                "{what} says allow, but {} of {n} probes got no answer ({})",
                n - reached,
                self.unanswered_words()
            )),
            Some(Verdict::Deny) if reached > 0 => Some(format!(
                "{what} says deny, but {reached} of {n} probes were answered"
            )),
            _ => None,
        }
    }

    fn unanswered_words(&self) -> String {
        let parts: Vec<String> = self
            .spread
            .unanswered
            .iter()
            .map(|(o, c)| format!("{c} {}", o.as_str()))
            .collect();
        parts.join(", ")
    }
}

impl Cell {
    pub fn is_self(&self) -> bool {
        matches!(&self.from, Peer::Pod(_)) && self.from == self.to
    }

    /// Whether the server saw another source address than the client's own (NAT).
    pub fn translated_source(&self) -> Option<Ipv4Addr> {
        match (self.client_ip, self.measured.seen_source) {
            (Some(own), Some(seen)) if own != seen => Some(seen),
            _ => None,
        }
    }

    /// Whether what was measured is what the oracle predicts (the probe loop waits for
    /// this in every cell: the time to enforce). A mixed Service cell agrees when every
    /// answer came from a backend predicted to allow.
    pub fn agrees_with_oracle(&self) -> bool {
        match &self.service {
            Some(svc) => svc.problem(self.oracle, "the oracle").is_none(),
            None => self.measured.outcome.verdict() == self.oracle,
        }
    }

    /// A problem with this cell, if any: measured against expected, measured against
    /// oracle, or a measurement error.
    pub fn mismatch(&self) -> Option<String> {
        if let Some(svc) = &self.service {
            if self.asserted
                && let Some(exp) = self.expected
                && let Some(p) = svc.problem(Some(exp), "the scenario")
            {
                return Some(p);
            }
            return svc.problem(self.oracle, "the oracle");
        }
        let verdict = self.measured.outcome.verdict();
        if self.measured.outcome == Outcome::Error {
            return Some(format!("measurement error: {}", self.measured.detail));
        }
        if self.asserted {
            if let Some(exp) = self.expected
                && Some(exp) != verdict
            {
                return Some(format!(
                    "expected {}, measured {}",
                    verdict_word(exp),
                    self.measured.outcome.as_str()
                ));
            }
            if let Some(or) = self.oracle
                && Some(or) != verdict
            {
                return Some(format!(
                    "oracle says {}, measured {}",
                    verdict_word(or),
                    self.measured.outcome.as_str()
                ));
            }
        }
        None
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
    }
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepResult {
    pub name: String,
    pub cells: Vec<Cell>,
    /// The hostNetwork pods among the cells' ends, with the node whose network they are:
    /// tables and reports show them as `ns/name (host NODE)` ([`StepResult::label`]).
    pub host_network: BTreeMap<Peer, String>,
}

impl StepResult {
    /// How tables and reports name a probe end: a hostNetwork pod with its node.
    pub fn label(&self, peer: &Peer) -> String {
        match self.host_network.get(peer) {
            Some(node) => format!("{peer} (host {node})"),
            None => peer.to_string(),
        }
    }

    pub fn ok(&self) -> bool {
        self.cells.iter().all(|c| c.mismatch().is_none())
    }

    pub fn mismatches(&self) -> impl Iterator<Item = (&Cell, String)> {
        self.cells
            .iter()
            .filter_map(|c| c.mismatch().map(|m| (c, m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Differential services seed 149: through a load balancer the client entered at n1
    /// and n2 and each node pinned it (to the same pod): not broken affinity.
    #[test]
    fn affinity_is_kept_per_entry_node() {
        let spread = |answers: &[(&str, usize)]| Spread {
            answered: answers.iter().map(|(w, n)| (w.to_string(), *n)).collect(),
            unanswered: BTreeMap::new(),
        };
        assert!(!spread(&[("n1 -> default/p2", 3), ("n2 -> default/p2", 1)]).pinned_apart());
        assert!(!spread(&[("n1 -> default/p1", 3), ("n2 -> default/p2", 1)]).pinned_apart());
        assert!(spread(&[("n1 -> default/p1", 3), ("n1 -> default/p2", 1)]).pinned_apart());
        assert!(spread(&[("x/b", 1), ("x/c", 1)]).pinned_apart());
        assert!(!spread(&[("x/b", 2)]).pinned_apart());
    }
}

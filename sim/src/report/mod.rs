//! The report people look at: a self-contained static HTML page (`--report DIR`, see
//! [`html`]) with the topology drawn as SVG ([`topology`]), each step's matrix as a
//! coloured grid whose cells explain themselves when clicked, the step's policies and
//! services and each node's installed rules; the same topology as Graphviz ([`dot`]); JUnit XML for CI ([`junit`]);
//! and a step's changes in words ([`changes`], also what `--pause` says). Everything here
//! is rendering: the harness fills a [`ReportData`] from a finished run.

pub mod changes;
pub mod dot;
pub mod html;
pub mod junit;
pub mod topology;

use crate::matrix::StepResult;
use crate::objects::ClusterObjects;

pub use topology::Topology;

/// Everything the page shows, filled by the harness after a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportData {
    pub scenario: String,
    pub summary: String,
    pub description: String,
    /// Whether every asserted cell matched (the run's verdict).
    pub ok: bool,
    pub steps: Vec<StepData>,
    /// The run's notes (things it did not do, CNI notes), shown at the end.
    pub notes: Vec<String>,
}

/// One step of the page.
#[derive(Debug, Clone, PartialEq)]
pub struct StepData {
    pub name: String,
    /// The step's changes in words ([`changes::describe`]).
    pub changes: Vec<String>,
    /// The cluster as it stood when the step was probed.
    pub topology: Topology,
    pub result: StepResult,
    /// `(ns/name, spec as JSON)` of every NetworkPolicy and Service of the step.
    pub policies: Vec<(String, String)>,
    pub services: Vec<(String, String)>,
    /// Per node: the policy engine's and the service proxy's rules as installed.
    pub rules: Vec<(String, String)>,
    pub proxy_rules: Vec<(String, String)>,
    /// One line on how long the step took to enforce, if known.
    pub timing: Option<String>,
    /// More of the step, each a titled text shown as it is: the `--trace` story, the
    /// cluster DNS's records and answers, the Ingress checks.
    pub extras: Vec<(String, String)>,
}

/// `(title, text)` entries of a listing.
pub type Listing = Vec<(String, String)>;

/// The NetworkPolicies and Services of `objects`, each as `(ns/name, spec as JSON)`,
/// sorted by namespace and name.
pub fn objects_text(objects: &ClusterObjects) -> (Listing, Listing) {
    let json = |v: Result<String, serde_json::Error>| v.unwrap_or_else(|e| format!("({e})"));
    let policies = objects
        .network_policies
        .iter()
        .map(|((ns, name), p)| {
            (
                format!("{ns}/{name}"),
                json(serde_json::to_string_pretty(&p.spec)),
            )
        })
        .collect();
    let services = objects
        .services
        .iter()
        .map(|((ns, name), s)| {
            (
                format!("{ns}/{name}"),
                json(serde_json::to_string_pretty(&s.spec)),
            )
        })
        .collect();
    (policies, services)
}

/// Escapes text for HTML and SVG (element content and quoted attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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

/// The policies and Services of `objects`, each as `(title, spec as JSON)`. Policies
/// are listed in evaluation order: with cluster-wide policies, the Admin tier by
/// priority, then the NetworkPolicy tier, then the Baseline tier, each title naming its
/// tier; NetworkPolicies and Services sorted by namespace and name.
pub fn objects_text(objects: &ClusterObjects) -> (Listing, Listing) {
    let json = |v: Result<String, serde_json::Error>| v.unwrap_or_else(|e| format!("({e})"));
    let (tiered, _) = crate::cluster_policy::from_objects::policies(objects);
    let tier_prefix = if tiered.is_empty() {
        ""
    } else {
        "NetworkPolicy tier: "
    };
    let network_policies = objects.network_policies.iter().map(|((ns, name), p)| {
        (
            format!("{tier_prefix}{ns}/{name}"),
            json(serde_json::to_string_pretty(&p.spec)),
        )
    });
    let mut ordered: Vec<&crate::cluster_policy::ClusterPolicy> = tiered.iter().collect();
    ordered.sort_by_key(|p| (p.tier, p.priority, p.id()));
    let tier_entry = |p: &&crate::cluster_policy::ClusterPolicy| {
        let kind = match p.kind {
            crate::cluster_policy::SourceKind::ClusterNetworkPolicy => {
                crate::objects::Kind::ClusterNetworkPolicy
            }
            crate::cluster_policy::SourceKind::AdminNetworkPolicy => {
                crate::objects::Kind::AdminNetworkPolicy
            }
            crate::cluster_policy::SourceKind::BaselineAdminNetworkPolicy => {
                crate::objects::Kind::BaselineAdminNetworkPolicy
            }
        };
        let spec = objects
            .cluster_policies
            .get(&(kind, p.name.clone()))
            .and_then(|o| o.manifest.get("spec"))
            .map(serde_json::to_string_pretty);
        (
            format!("{} tier: {} (priority {})", p.tier, p.id(), p.priority),
            json(spec.unwrap_or(Ok(String::new()))),
        )
    };
    let admin = ordered
        .iter()
        .filter(|p| p.tier == crate::cluster_policy::Tier::Admin)
        .map(tier_entry);
    let baseline = ordered
        .iter()
        .filter(|p| p.tier == crate::cluster_policy::Tier::Baseline)
        .map(tier_entry);
    let policies = admin.chain(network_policies).chain(baseline).collect();
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

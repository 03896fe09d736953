//! Required pod affinity and anti-affinity, as the scheduler's InterPodAffinity filter
//! decides them: a term selects pods (labelSelector, plus matchLabelKeys and
//! mismatchLabelKeys) in some namespaces (`namespaces` and `namespaceSelector`, or the
//! pod's own namespace when both are absent), and two nodes are in the same topology
//! domain when they have the same value of the term's `topologyKey` label.
//!
//! Any topologyKey is modelled, from the node labels: `kubernetes.io/hostname` (every
//! node has its own) spreads per node, a `topology.kubernetes.io/zone` label declared on
//! nodes spreads per zone. A node without the key is in no domain: affinity cannot be
//! satisfied there, anti-affinity always is.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Labels by namespace name, as the API server holds them (with
/// `kubernetes.io/metadata.name`), for `namespaceSelector`.
pub type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

/// A pod already bound, and its node's labels.
pub(crate) struct Placed<'a> {
    pub pod: &'a Pod,
    pub node_labels: &'a BTreeMap<String, String>,
}

/// Why a node fails the inter-pod affinity filter, in the scheduler's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Refusal {
    AffinityUnmet,
    AntiAffinityViolated,
    ExistingAntiAffinityViolated,
}

impl Refusal {
    pub fn words(self) -> &'static str {
        match self {
            Refusal::AffinityUnmet => "didn't match pod affinity rules",
            Refusal::AntiAffinityViolated => "didn't match pod anti-affinity rules",
            Refusal::ExistingAntiAffinityViolated => {
                "didn't satisfy existing pods anti-affinity rules"
            }
        }
    }
}

/// Whether `pod` may join a node with `node_labels`, given the pods already placed.
pub(crate) fn check(
    pod: &Pod,
    node_labels: &BTreeMap<String, String>,
    placed: &[Placed<'_>],
    namespaces: &NamespaceLabels,
) -> Result<(), Refusal> {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let required_affinity = affinity
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();
    let required_anti = required_anti_terms(pod);

    for term in required_affinity {
        let Some(domain) = node_labels.get(&term.topology_key) else {
            return Err(Refusal::AffinityUnmet);
        };
        let matching: Vec<&Placed> = placed
            .iter()
            .filter(|p| term_selects(term, pod, p.pod, namespaces))
            .collect();
        let in_domain = matching
            .iter()
            .any(|p| p.node_labels.get(&term.topology_key) == Some(domain));
        // The first pod of a group that wants to be with its own kind may go anywhere,
        // or no such group could ever start.
        let first_of_its_group = matching.is_empty() && term_selects(term, pod, pod, namespaces);
        if !(in_domain || first_of_its_group) {
            return Err(Refusal::AffinityUnmet);
        }
    }
    for term in required_anti {
        if shares_domain(term, node_labels, placed, |p| {
            term_selects(term, pod, p, namespaces)
        }) {
            return Err(Refusal::AntiAffinityViolated);
        }
    }
    for p in placed {
        for term in required_anti_terms(p.pod) {
            let same_domain = match node_labels.get(&term.topology_key) {
                Some(domain) => p.node_labels.get(&term.topology_key) == Some(domain),
                None => false,
            };
            if same_domain && term_selects(term, p.pod, pod, namespaces) {
                return Err(Refusal::ExistingAntiAffinityViolated);
            }
        }
    }
    Ok(())
}

/// A pod's required anti-affinity terms.
fn required_anti_terms(pod: &Pod) -> &[PodAffinityTerm] {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

/// Whether one of `pod`'s required anti-affinity terms selects none of `pods` (`pod`
/// among them): it keeps nothing apart, which in a manifest meant to spread replicas is
/// usually a labelSelector that the template's labels do not match.
pub(crate) fn anti_term_selects_nothing(
    pod: &Pod,
    pods: &[Pod],
    namespaces: &NamespaceLabels,
) -> bool {
    required_anti_terms(pod)
        .iter()
        .any(|term| !pods.iter().any(|p| term_selects(term, pod, p, namespaces)))
}

/// Whether a placed pod that `selects` picks is in the node's domain of the term's key.
fn shares_domain(
    term: &PodAffinityTerm,
    node_labels: &BTreeMap<String, String>,
    placed: &[Placed<'_>],
    selects: impl Fn(&Pod) -> bool,
) -> bool {
    let Some(domain) = node_labels.get(&term.topology_key) else {
        return false;
    };
    placed
        .iter()
        .any(|p| p.node_labels.get(&term.topology_key) == Some(domain) && selects(p.pod))
}

/// Whether `owner`'s term selects `candidate`: namespace first, then labels.
fn term_selects(
    term: &PodAffinityTerm,
    owner: &Pod,
    candidate: &Pod,
    namespaces: &NamespaceLabels,
) -> bool {
    let candidate_ns = namespace(candidate);
    let listed = term.namespaces.as_deref().unwrap_or_default();
    let ns_ok = match &term.namespace_selector {
        None if listed.is_empty() => candidate_ns == namespace(owner),
        None => listed.iter().any(|n| n == candidate_ns),
        Some(sel) => {
            listed.iter().any(|n| n == candidate_ns)
                || crate::selector::matches(
                    sel,
                    &namespaces.get(candidate_ns).cloned().unwrap_or_default(),
                )
        }
    };
    // A term without a labelSelector selects no pod.
    ns_ok
        && term.label_selector.as_ref().is_some_and(|sel| {
            crate::selector::matches(&effective_selector(term, sel, owner), &labels(candidate))
        })
}

/// The labelSelector with `matchLabelKeys` (key In the owner's value) and
/// `mismatchLabelKeys` (key NotIn the owner's value) added, as the API server merges them.
fn effective_selector(term: &PodAffinityTerm, sel: &LabelSelector, owner: &Pod) -> LabelSelector {
    let owner_labels = labels(owner);
    let mut extra = Vec::new();
    for (keys, operator) in [
        (&term.match_label_keys, "In"),
        (&term.mismatch_label_keys, "NotIn"),
    ] {
        for key in keys.iter().flatten() {
            if let Some(v) = owner_labels.get(key) {
                extra.push(LabelSelectorRequirement {
                    key: key.clone(),
                    operator: operator.into(),
                    values: Some(vec![v.clone()]),
                });
            }
        }
    }
    if extra.is_empty() {
        return sel.clone();
    }
    let mut merged = sel.clone();
    merged
        .match_expressions
        .get_or_insert_with(Vec::new)
        .extend(extra);
    merged
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

fn labels(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

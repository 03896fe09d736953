//! Same tier, same priority, overlapping subjects: the API leaves the order between
//! such policies to the implementation, so the result for a connection both match is
//! undefined. This finds those pairs over the cluster's pods and words a warning that
//! names both policies.

use crate::cluster_policy::evaluate::matching::selects;
use crate::cluster_policy::model::ClusterPolicy;
use crate::cluster_policy::view::ClusterView;

/// One warning per pair of policies with the same tier and priority that both select
/// at least one pod of `view` (the first such pod is named as an example).
pub fn same_priority_overlaps(policies: &[ClusterPolicy], view: &ClusterView) -> Vec<String> {
    let mut warnings = Vec::new();
    for (i, a) in policies.iter().enumerate() {
        for b in &policies[i + 1..] {
            if a.tier != b.tier || a.priority != b.priority {
                continue;
            }
            let shared = view
                .pods
                .iter()
                .find(|p| selects(a, p, view) && selects(b, p, view));
            if let Some(pod) = shared {
                warnings.push(format!(
                    "{} and {} are both in the {} tier at priority {} and both select pod {}/{} \
                     (and maybe more): for a connection both match, which one applies is \
                     undefined; give them different priorities",
                    a.id(),
                    b.id(),
                    a.tier,
                    a.priority,
                    pod.namespace,
                    pod.name
                ));
            }
        }
    }
    warnings
}

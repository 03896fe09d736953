//! Whether a pod may run on a node by the node's labels and name: `nodeSelector` (every
//! pair) AND required node affinity (`nodeSelectorTerms` ORed; in a term, every
//! `matchExpressions` and `matchFields` requirement ANDed). Operators In, NotIn, Exists,
//! DoesNotExist, Gt and Lt, as the scheduler's NodeAffinity filter applies them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// The only field `matchFields` may test.
const NODE_NAME_FIELD: &str = "metadata.name";

/// Whether the pod's nodeSelector and required node affinity admit the node.
pub fn admits(spec: &PodSpec, node_name: &str, node_labels: &BTreeMap<String, String>) -> bool {
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| node_labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    selector_ok
        && required.is_none_or(|r| terms_match(&r.node_selector_terms, node_name, node_labels))
}

/// `nodeSelectorTerms`: any term matches. An empty term matches no node (the API
/// server's rule), so an empty list does not either.
pub fn terms_match(
    terms: &[NodeSelectorTerm],
    node_name: &str,
    node_labels: &BTreeMap<String, String>,
) -> bool {
    terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs
            .iter()
            .all(|r| requirement_matches(r, node_labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| {
                r.key == NODE_NAME_FIELD
                    && matches!(r.operator.as_str(), "In" | "NotIn")
                    && requirement_matches(r, Some(node_name))
            })
    })
}

/// One requirement against the value the node has for its key (`None`: no such label).
/// In, NotIn, Exists and DoesNotExist mean what they mean in label selectors, so
/// [`crate::selector`] decides them; Gt and Lt are node selectors' own.
fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        // Gt and Lt take exactly one integer and compare the label as an integer; a label
        // that is not one matches neither.
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if req.operator == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => {
            let selector = LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: req.key.clone(),
                    operator: req.operator.clone(),
                    values: req.values.clone(),
                }]),
            };
            let labels: BTreeMap<String, String> = value
                .map(|v| (req.key.clone(), v.to_string()))
                .into_iter()
                .collect();
            crate::selector::matches(&selector, &labels)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn with_terms(terms: serde_json::Value) -> PodSpec {
        spec(serde_json::json!({
            "containers": [],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": terms
            }}}
        }))
    }

    #[test]
    fn node_selector_needs_every_pair() {
        let s = spec(
            serde_json::json!({"containers": [], "nodeSelector": {"disk": "ssd", "zone": "a"}}),
        );
        assert!(admits(&s, "n1", &labels(&[("disk", "ssd"), ("zone", "a")])));
        assert!(!admits(&s, "n1", &labels(&[("disk", "ssd")])));
    }

    #[test]
    fn operators() {
        let node = labels(&[("zone", "a"), ("cpus", "8")]);
        let case = |expr: serde_json::Value| {
            admits(
                &with_terms(serde_json::json!([{"matchExpressions": [expr]}])),
                "n1",
                &node,
            )
        };
        assert!(case(
            serde_json::json!({"key": "zone", "operator": "In", "values": ["a", "b"]})
        ));
        assert!(!case(
            serde_json::json!({"key": "zone", "operator": "In", "values": ["b"]})
        ));
        assert!(case(
            serde_json::json!({"key": "zone", "operator": "NotIn", "values": ["b"]})
        ));
        assert!(case(
            serde_json::json!({"key": "gpu", "operator": "NotIn", "values": ["x"]})
        ));
        assert!(!case(
            serde_json::json!({"key": "zone", "operator": "NotIn", "values": ["a"]})
        ));
        assert!(case(
            serde_json::json!({"key": "zone", "operator": "Exists"})
        ));
        assert!(!case(
            serde_json::json!({"key": "gpu", "operator": "Exists"})
        ));
        assert!(case(
            serde_json::json!({"key": "gpu", "operator": "DoesNotExist"})
        ));
        assert!(case(
            serde_json::json!({"key": "cpus", "operator": "Gt", "values": ["4"]})
        ));
        assert!(!case(
            serde_json::json!({"key": "cpus", "operator": "Gt", "values": ["8"]})
        ));
        assert!(case(
            serde_json::json!({"key": "cpus", "operator": "Lt", "values": ["16"]})
        ));
        assert!(!case(
            serde_json::json!({"key": "zone", "operator": "Lt", "values": ["16"]})
        ));
        assert!(!case(
            serde_json::json!({"key": "zone", "operator": "Bogus", "values": ["a"]})
        ));
    }

    #[test]
    fn terms_are_ored_and_requirements_anded() {
        let s = with_terms(serde_json::json!([
            {"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]},
                {"key": "disk", "operator": "In", "values": ["ssd"]}
            ]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]}
        ]));
        assert!(admits(&s, "n1", &labels(&[("zone", "a"), ("disk", "ssd")])));
        assert!(!admits(&s, "n1", &labels(&[("zone", "a")])));
        assert!(admits(&s, "n9", &labels(&[])));
        assert!(!admits(
            &with_terms(serde_json::json!([{}])),
            "n1",
            &labels(&[])
        ));
    }
}

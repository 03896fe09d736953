//! A label selector that refuses unknown fields (k8s-openapi's `LabelSelector` ignores
//! them, and a misspelt `matchLabel` would then select everything), with the checks the
//! API server makes on its requirements.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde::Deserialize;

use crate::cluster_policy::error::ClusterPolicyError;

/// `matchLabels` and `matchExpressions`, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    #[serde(default)]
    pub match_labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub match_expressions: Option<Vec<Requirement>>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

impl Selector {
    /// The selector checked as the API server checks one (known operator; values for
    /// `In`/`NotIn` and none for `Exists`/`DoesNotExist`), as k8s-openapi's type so
    /// [`crate::selector`] evaluates it.
    pub fn to_label_selector(&self, path: &str) -> Result<LabelSelector, ClusterPolicyError> {
        let mut exprs = Vec::new();
        for (i, req) in self.match_expressions.iter().flatten().enumerate() {
            let at = format!("{path}.matchExpressions[{i}]");
            let values = req.values.as_deref().unwrap_or_default();
            match req.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(ClusterPolicyError::invalid(
                        format!("{at}.values"),
                        format!("must be specified when `operator` is {}", req.operator),
                    ));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(ClusterPolicyError::invalid(
                        format!("{at}.values"),
                        format!("may not be specified when `operator` is {}", req.operator),
                    ));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(ClusterPolicyError::invalid(
                        format!("{at}.operator"),
                        format!(
                            "{other:?} is not a valid selector operator (In, NotIn, Exists, DoesNotExist)"
                        ),
                    ));
                }
            }
            exprs.push(LabelSelectorRequirement {
                key: req.key.clone(),
                operator: req.operator.clone(),
                values: req.values.clone(),
            });
        }
        Ok(LabelSelector {
            match_labels: self.match_labels.clone(),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        })
    }
}

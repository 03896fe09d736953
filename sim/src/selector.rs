//! Label selectors (`matchLabels` and `matchExpressions`): THE one place in knetlab where a
//! selector is evaluated against a label map, and where it is put into words for
//! explanations. Policies, the oracle and the rule renderer all call [`matches`], so a
//! subtle rule (a `NotIn` matching an object without the key, say) is decided once.
//!
//! Invalid selectors (an unknown operator, `In` without values) are rejected when a
//! scenario is parsed; should one slip through, it matches nothing (failing closed, as an
//! API server would refuse the object) and never panics.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Whether `labels` satisfy `sel`: every `matchLabels` pair AND every `matchExpressions`
/// requirement. The empty selector (`{}`) matches everything.
pub fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && sel
            .match_expressions
            .iter()
            .flatten()
            .all(|req| requirement_matches(req, labels))
}

/// One `matchExpressions` entry.
fn requirement_matches(req: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&req.key);
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        // `In` with no values is invalid (the API server refuses it): it matches nothing.
        "In" => value.is_some_and(|v| values.contains(v)),
        // `NotIn` also matches objects that lack the key (Kubernetes semantics).
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

/// Whether the selector is empty (`{}`, or only empty lists): it selects everything.
pub fn is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// The selector in words: `pod=a`, `app in (web, api)`, `tier not in (db)`,
/// `app exists`, `app does not exist`, joined by `, ` (all must hold), or
/// `everything ({})` for the empty selector.
pub fn describe(sel: &LabelSelector) -> String {
    if is_empty(sel) {
        return "everything ({})".into();
    }
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for req in sel.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default().join(", ");
        parts.push(match req.operator.as_str() {
            "In" => format!("{} in ({values})", req.key),
            "NotIn" => format!("{} not in ({values})", req.key),
            "Exists" => format!("{} exists", req.key),
            "DoesNotExist" => format!("{} does not exist", req.key),
            other => format!("{} <invalid operator {other:?}: matches nothing>", req.key),
        });
    }
    parts.join(", ")
}

/// A text equal for two selectors exactly when they hold the same requirements, however
/// written: `matchLabels` pairs count as `In` with one value, and requirements and values
/// are sorted and deduplicated. Rules whose peers select alike share one ipset by it.
pub fn canonical(sel: &LabelSelector) -> String {
    let mut reqs: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k} In [{v}]"))
        .collect();
    for req in sel.match_expressions.iter().flatten() {
        let mut values: Vec<&str> = req.values.iter().flatten().map(String::as_str).collect();
        values.sort_unstable();
        values.dedup();
        reqs.push(format!(
            "{} {} [{}]",
            req.key,
            req.operator,
            values.join(",")
        ));
    }
    reqs.sort_unstable();
    reqs.dedup();
    reqs.join(";")
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

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn sel(ml: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: (!ml.is_empty()).then(|| labels(ml)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(matches(&LabelSelector::default(), &labels(&[])));
        assert!(matches(&LabelSelector::default(), &labels(&[("a", "b")])));
        let explicit_empty = LabelSelector {
            match_labels: Some(BTreeMap::new()),
            match_expressions: Some(vec![]),
        };
        assert!(matches(&explicit_empty, &labels(&[])));
        assert_eq!(describe(&explicit_empty), "everything ({})");
    }

    #[test]
    fn match_labels_needs_every_pair() {
        let s = sel(&[("app", "web"), ("tier", "fe")], vec![]);
        assert!(matches(
            &s,
            &labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])
        ));
        assert!(!matches(&s, &labels(&[("app", "web")])));
        assert!(!matches(&s, &labels(&[("app", "web"), ("tier", "be")])));
    }

    #[test]
    fn in_operator() {
        let s = sel(&[], vec![req("app", "In", &["web", "api"])]);
        assert!(matches(&s, &labels(&[("app", "api")])));
        assert!(!matches(&s, &labels(&[("app", "db")])));
        assert!(!matches(&s, &labels(&[])));
    }

    #[test]
    fn not_in_matches_missing_key() {
        let s = sel(&[], vec![req("app", "NotIn", &["db"])]);
        assert!(matches(&s, &labels(&[])));
        assert!(matches(&s, &labels(&[("app", "web")])));
        assert!(!matches(&s, &labels(&[("app", "db")])));
    }

    #[test]
    fn exists_and_does_not_exist() {
        let e = sel(&[], vec![req("app", "Exists", &[])]);
        let d = sel(&[], vec![req("app", "DoesNotExist", &[])]);
        assert!(matches(&e, &labels(&[("app", "")])));
        assert!(!matches(&e, &labels(&[("other", "x")])));
        assert!(matches(&d, &labels(&[("other", "x")])));
        assert!(!matches(&d, &labels(&[("app", "x")])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = sel(&[("ns", "x")], vec![req("pod", "In", &["a", "b"])]);
        assert!(matches(&s, &labels(&[("ns", "x"), ("pod", "a")])));
        assert!(!matches(&s, &labels(&[("ns", "y"), ("pod", "a")])));
        assert!(!matches(&s, &labels(&[("ns", "x"), ("pod", "c")])));
    }

    #[test]
    fn invalid_operator_or_empty_in_matches_nothing() {
        let bad = sel(&[], vec![req("app", "Foo", &["x"])]);
        assert!(!matches(&bad, &labels(&[("app", "x")])));
        assert!(describe(&bad).contains("invalid operator"));
        let empty_in = sel(&[], vec![req("app", "In", &[])]);
        assert!(!matches(&empty_in, &labels(&[("app", "x")])));
    }

    #[test]
    fn describes_in_words() {
        assert_eq!(describe(&sel(&[("pod", "a")], vec![])), "pod=a");
        assert_eq!(
            describe(&sel(
                &[("ns", "x")],
                vec![
                    req("app", "In", &["web", "api"]),
                    req("tier", "NotIn", &["db"]),
                    req("k", "Exists", &[]),
                    req("j", "DoesNotExist", &[]),
                ]
            )),
            "ns=x, app in (web, api), tier not in (db), k exists, j does not exist"
        );
        assert_eq!(describe(&LabelSelector::default()), "everything ({})");
    }

    #[test]
    fn canonical_ignores_how_a_selector_is_written() {
        let a = sel(
            &[("app", "web")],
            vec![req("tier", "In", &["b", "a", "a"]), req("x", "Exists", &[])],
        );
        let b = sel(
            &[],
            vec![
                req("x", "Exists", &[]),
                req("tier", "In", &["a", "b"]),
                req("app", "In", &["web"]),
            ],
        );
        assert_eq!(canonical(&a), canonical(&b));
        // One value more, or another operator, is another selector.
        let c = sel(&[("app", "web")], vec![req("tier", "In", &["a", "b", "c"])]);
        let d = sel(&[("app", "web")], vec![req("tier", "NotIn", &["a", "b"])]);
        assert_ne!(canonical(&a), canonical(&c));
        assert_ne!(canonical(&c), canonical(&d));
        assert_eq!(canonical(&LabelSelector::default()), "");
    }
}

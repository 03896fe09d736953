//! Scenario files with cluster-wide policies: ClusterNetworkPolicy (v1alpha2) and the
//! v1alpha1 AdminNetworkPolicy / BaselineAdminNetworkPolicy are read in manifests and
//! steps, their mistakes are reported at file, line, column and field, and the notes
//! say what the reader must know (v1alpha1 mapped, same-priority overlaps, tiers
//! ignored by `policy: none`).

mod common;

use common::{assert_error, parse_err, parse_ok, pos};
use sim::objects::Kind;
use sim::scenario::Change;

const HEAD: &str = "name: t\nsummary: a test\ncluster: {nodes: 2}\nmodel: {namespaces: [x, y], pods: [a, b], ports: [80], protocols: [TCP]}\n";

fn cnp(name: &str, priority: u32, action: &str) -> String {
    format!(
        "  - apiVersion: policy.networking.k8s.io/v1alpha2
    kind: ClusterNetworkPolicy
    metadata: {{name: {name}}}
    spec:
      tier: Admin
      priority: {priority}
      subject:
        namespaces: {{matchLabels: {{ns: x}}}}
      ingress:
        - name: r
          action: {action}
          from:
            - namespaces: {{matchLabels: {{ns: y}}}}
"
    )
}

#[test]
fn a_cluster_network_policy_is_read_into_the_first_step() {
    let text = format!("{HEAD}manifests:\n{}", cnp("deny-y", 10, "Deny"));
    let s = parse_ok(&text);
    let kinds: Vec<Kind> = s.steps[0]
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Apply(raw) => Some(raw.kind),
            _ => None,
        })
        .collect();
    assert!(kinds.contains(&Kind::ClusterNetworkPolicy), "{kinds:?}");
    assert!(s.notes.is_empty(), "{:?}", s.notes);
}

#[test]
fn a_bad_priority_is_reported_at_its_value() {
    let text = format!("{HEAD}manifests:\n{}", cnp("p", 1001, "Deny"));
    let e = parse_err(&text);
    assert_error(
        &e,
        pos(&text, "1001", 0),
        "manifests[0].spec.priority",
        "between 0 and 1000",
    );
}

#[test]
fn an_unknown_action_is_reported_at_its_value() {
    let text = format!("{HEAD}manifests:\n{}", cnp("p", 10, "Allow"));
    let e = parse_err(&text);
    assert_eq!(e.path, "manifests[0].spec.ingress[0].action", "{e}");
    assert_eq!(e.location, Some(pos(&text, "Allow", 0)), "{e}");
}

#[test]
fn an_unknown_field_is_reported_at_its_key() {
    let text = format!("{HEAD}manifests:\n{}", cnp("p", 10, "Deny"))
        .replace("      tier: Admin\n", "      tier: Admin\n      prio: 3\n");
    let e = parse_err(&text);
    assert_eq!(e.location, Some(pos(&text, "prio:", 0)), "{e}");
    assert!(e.message.contains("prio"), "{e}");
}

#[test]
fn domain_names_are_refused_with_a_clear_error() {
    let text = format!(
        "{HEAD}manifests:
  - apiVersion: policy.networking.k8s.io/v1alpha2
    kind: ClusterNetworkPolicy
    metadata: {{name: dns}}
    spec:
      tier: Admin
      priority: 10
      subject: {{namespaces: {{}}}}
      egress:
        - action: Accept
          to:
            - domainNames: [\"*.example.com\"]
"
    );
    let e = parse_err(&text);
    assert_eq!(
        e.path, "manifests[0].spec.egress[0].to[0].domainNames",
        "{e}"
    );
    assert_eq!(
        e.location,
        Some(pos(&text, "[\"*.example.com\"]", 0)),
        "{e}"
    );
    assert!(e.message.contains("knetlab does not model this"), "{e}");
}

#[test]
fn v1alpha1_forms_are_read_with_a_note_that_they_were_mapped() {
    let text = format!(
        "{HEAD}manifests:
  - apiVersion: policy.networking.k8s.io/v1alpha1
    kind: AdminNetworkPolicy
    metadata: {{name: old}}
    spec:
      priority: 5
      subject: {{namespaces: {{matchLabels: {{ns: x}}}}}}
      ingress:
        - name: r
          action: Allow
          from: [{{namespaces: {{matchLabels: {{ns: y}}}}}}]
  - apiVersion: policy.networking.k8s.io/v1alpha1
    kind: BaselineAdminNetworkPolicy
    metadata: {{name: default}}
    spec:
      subject: {{namespaces: {{}}}}
      ingress:
        - action: Deny
          from: [{{namespaces: {{}}}}]
"
    );
    let s = parse_ok(&text);
    assert_eq!(s.notes.len(), 2, "{:?}", s.notes);
    // Notes of the first step carry no step name.
    assert!(
        s.notes.iter().all(|n| !n.starts_with("step ")),
        "{:?}",
        s.notes
    );
}

#[test]
fn same_priority_overlap_is_a_warning_naming_both_policies() {
    let text = format!(
        "{HEAD}manifests:\n{}{}",
        cnp("one", 10, "Deny"),
        cnp("two", 10, "Accept")
    );
    let s = parse_ok(&text);
    assert!(
        s.notes
            .iter()
            .any(|n| n.starts_with("warning:") && n.contains("cnp/one") && n.contains("cnp/two")),
        "{:?}",
        s.notes
    );
}

#[test]
fn policy_none_says_it_ignores_the_tiers() {
    let text = format!("{HEAD}manifests:\n{}", cnp("deny-y", 10, "Deny"))
        .replace("cluster: {nodes: 2}", "cluster: {nodes: 2, policy: none}");
    let s = parse_ok(&text);
    assert!(
        s.notes.iter().any(|n| n.contains("ignored")),
        "{:?}",
        s.notes
    );
}

#[test]
fn steps_apply_and_delete_cluster_policies() {
    let text = format!(
        "{HEAD}steps:\n  - name: add\n    apply:\n{}  - name: remove\n    delete:\n      - {{kind: ClusterNetworkPolicy, name: deny-y}}\n",
        cnp("deny-y", 10, "Deny")
            .replace("\n  ", "\n      ")
            .replacen("  - ", "      - ", 1)
    );
    let s = parse_ok(&text);
    assert_eq!(s.steps.len(), 3);
    assert!(matches!(
        &s.steps[2].changes[0],
        Change::Delete { kind: Kind::ClusterNetworkPolicy, namespace, name }
            if namespace.is_empty() && name == "deny-y"
    ));
}

#[test]
fn a_cluster_scoped_delete_with_a_namespace_is_refused() {
    let text = format!(
        "{HEAD}manifests:\n{}steps:\n  - name: remove\n    delete:\n      - {{kind: ClusterNetworkPolicy, namespace: x, name: deny-y}}\n",
        cnp("deny-y", 10, "Deny")
    );
    let e = parse_err(&text);
    assert_eq!(e.path, "steps[0].delete[0].namespace", "{e}");
    assert!(e.message.contains("cluster-scoped"), "{e}");
}

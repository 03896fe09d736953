//! AdminNetworkPolicy and BaselineAdminNetworkPolicy (v1alpha1) checked as their CRDs
//! check them and mapped onto the two tiers of the v1alpha2 model: an ANP of priority
//! N is an Admin-tier policy of priority N, `Allow` is `Accept`; the singleton BANP
//! (named `default`) is a Baseline-tier policy of priority 1000, so it comes after any
//! v1alpha2 Baseline policy. Fields of older revisions (`sameLabels`,
//! `notSameLabels`, `namespaces.namespaceSelector`, `pods.namespaces`) are refused
//! by name.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cluster_policy::api::v1alpha1::{
    AdminNetworkPolicy, NamespacedPod, NamespacesSelector, Peer as ApiPeer, PortMatch as ApiPort,
    Rule as ApiRule,
};
use crate::cluster_policy::error::ClusterPolicyError;
use crate::cluster_policy::model::{
    Action, ClusterPolicy, Peer, PortMatch, Rule, SourceKind, Subject, Tier,
};
use crate::cluster_policy::validate::{Parsed, checks};

/// Rules per direction, peers per rule, ports per rule: 100 each in v1alpha1.
const MAX_ITEMS: usize = 100;

/// The priority a BaselineAdminNetworkPolicy takes in the Baseline tier.
pub const BASELINE_PRIORITY: u16 = 1000;

/// Validate an AdminNetworkPolicy or BaselineAdminNetworkPolicy and map it.
pub fn validate(anp: &AdminNetworkPolicy) -> Result<Parsed, ClusterPolicyError> {
    let name = super::object_name(&anp.metadata)?;
    let baseline = anp.kind == "BaselineAdminNetworkPolicy";
    let spec = &anp.spec;
    let (kind, tier, priority) = if baseline {
        if spec.priority.is_some() {
            return Err(ClusterPolicyError::Shape {
                path: "spec.priority".into(),
                message: "unknown field `priority` (a BaselineAdminNetworkPolicy has none)".into(),
            });
        }
        if name != "default" {
            return Err(ClusterPolicyError::invalid(
                "metadata.name",
                format!(
                    "Only one baseline admin network policy with metadata.name=\"default\" can be created in the cluster, not {name:?}"
                ),
            ));
        }
        (
            SourceKind::BaselineAdminNetworkPolicy,
            Tier::Baseline,
            BASELINE_PRIORITY,
        )
    } else {
        let Some(p) = spec.priority else {
            return Err(ClusterPolicyError::invalid(
                "spec.priority",
                "Required value",
            ));
        };
        (
            SourceKind::AdminNetworkPolicy,
            Tier::Admin,
            super::priority(p, "spec.priority")?,
        )
    };
    let subject = {
        let s = &spec.subject;
        checks::exactly_one(
            &[
                ("namespaces", s.namespaces.is_some()),
                ("pods", s.pods.is_some()),
            ],
            "spec.subject",
        )?;
        match (&s.namespaces, &s.pods) {
            (Some(ns), _) => Subject::Namespaces(namespaces(ns, "spec.subject.namespaces")?),
            (None, Some(p)) => {
                let (namespaces, pods) = namespaced_pod(p, "spec.subject.pods")?;
                Subject::Pods { namespaces, pods }
            }
            (None, None) => {
                return Err(ClusterPolicyError::invalid(
                    "spec.subject",
                    "exactly one of namespaces, pods must be set",
                ));
            }
        }
    };
    checks::at_most(&spec.ingress, MAX_ITEMS, "spec.ingress")?;
    checks::at_most(&spec.egress, MAX_ITEMS, "spec.egress")?;
    let ingress = spec
        .ingress
        .iter()
        .enumerate()
        .map(|(i, r)| rule(r, baseline, false, &format!("spec.ingress[{i}]")))
        .collect::<Result<_, _>>()?;
    let egress = spec
        .egress
        .iter()
        .enumerate()
        .map(|(i, r)| rule(r, baseline, true, &format!("spec.egress[{i}]")))
        .collect::<Result<_, _>>()?;
    let policy = ClusterPolicy {
        kind,
        name,
        tier,
        priority,
        subject,
        ingress,
        egress,
    };
    let note = format!(
        "{} {} ({}/v1alpha1) is read as a ClusterNetworkPolicy in the {tier} tier at priority \
         {priority}; its Allow rules are Accept rules",
        anp.kind,
        policy.id(),
        super::GROUP
    );
    Ok(Parsed {
        policy,
        notes: vec![note],
    })
}

fn rule(
    r: &ApiRule<ApiPeer>,
    baseline: bool,
    egress: bool,
    path: &str,
) -> Result<Rule, ClusterPolicyError> {
    checks::rule_name(&r.name, path)?;
    let action = match (r.action.as_str(), baseline) {
        ("Allow", _) => Action::Accept,
        ("Deny", _) => Action::Deny,
        ("Pass", false) => Action::Pass,
        (other, _) => {
            let allowed = if baseline {
                "\"Allow\", \"Deny\""
            } else {
                "\"Allow\", \"Deny\", \"Pass\""
            };
            return Err(ClusterPolicyError::invalid(
                format!("{path}.action"),
                format!("Unsupported value: {other:?}: supported values: {allowed}"),
            ));
        }
    };
    let (field, wrong) = if egress {
        ("to", "from")
    } else {
        ("from", "to")
    };
    let (list, other) = if egress {
        (&r.to, &r.from)
    } else {
        (&r.from, &r.to)
    };
    if other.is_some() {
        return Err(ClusterPolicyError::Shape {
            path: format!("{path}.{wrong}"),
            message: format!("unknown field `{wrong}`"),
        });
    }
    let list = list.as_deref().unwrap_or_default();
    let peers_path = format!("{path}.{field}");
    checks::one_to(list, MAX_ITEMS, &peers_path)?;
    let peers: Vec<Peer> = list
        .iter()
        .enumerate()
        .map(|(j, p)| peer(p, egress, &format!("{peers_path}[{j}]")))
        .collect::<Result<_, _>>()?;
    let ports = match &r.ports {
        None => None,
        Some(list) => {
            checks::one_to(list, MAX_ITEMS, &format!("{path}.ports"))?;
            Some(
                list.iter()
                    .enumerate()
                    .map(|(k, p)| port(p, &format!("{path}.ports[{k}]")))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        }
    };
    if egress {
        super::named_ports_need_pods(&peers, ports.as_deref(), path)?;
    }
    Ok(Rule {
        name: r.name.clone(),
        action,
        peers,
        ports,
    })
}

fn peer(p: &ApiPeer, egress: bool, path: &str) -> Result<Peer, ClusterPolicyError> {
    let mut fields = vec![
        ("namespaces", p.namespaces.is_some()),
        ("pods", p.pods.is_some()),
    ];
    if egress {
        fields.extend([
            ("nodes", p.nodes.is_some()),
            ("networks", p.networks.is_some()),
            ("domainNames", p.domain_names.is_some()),
        ]);
    } else {
        for (name, set) in [
            ("nodes", p.nodes.is_some()),
            ("networks", p.networks.is_some()),
            ("domainNames", p.domain_names.is_some()),
        ] {
            if set {
                return Err(ClusterPolicyError::Shape {
                    path: format!("{path}.{name}"),
                    message: format!(
                        "unknown field `{name}` (ingress peers are namespaces or pods)"
                    ),
                });
            }
        }
    }
    checks::exactly_one(&fields, path)?;
    if let Some(ns) = &p.namespaces {
        return Ok(Peer::Namespaces(namespaces(
            ns,
            &format!("{path}.namespaces"),
        )?));
    }
    if let Some(pods) = &p.pods {
        let (namespaces, pods) = namespaced_pod(pods, &format!("{path}.pods"))?;
        return Ok(Peer::Pods { namespaces, pods });
    }
    if let Some(nodes) = &p.nodes {
        return Ok(Peer::Nodes(
            nodes.to_label_selector(&format!("{path}.nodes"))?,
        ));
    }
    if let Some(nets) = &p.networks {
        return Ok(Peer::Networks(checks::networks(
            nets,
            &format!("{path}.networks"),
        )?));
    }
    Err(checks::domain_names(&format!("{path}.domainNames")))
}

/// A namespace selector; the older revisions' forms are refused by name.
fn namespaces(ns: &NamespacesSelector, path: &str) -> Result<LabelSelector, ClusterPolicyError> {
    for (field, set) in [
        ("sameLabels", ns.same_labels.is_some()),
        ("notSameLabels", ns.not_same_labels.is_some()),
        ("namespaceSelector", ns.namespace_selector.is_some()),
    ] {
        if set {
            return Err(ClusterPolicyError::unsupported(
                format!("{path}.{field}"),
                format!(
                    "`{field}` belongs to an older revision of the AdminNetworkPolicy API; \
                     write `namespaces` as a plain label selector"
                ),
            ));
        }
    }
    ns.selector().to_label_selector(path)
}

fn namespaced_pod(
    p: &NamespacedPod,
    path: &str,
) -> Result<(LabelSelector, LabelSelector), ClusterPolicyError> {
    if p.namespaces.is_some() {
        return Err(ClusterPolicyError::unsupported(
            format!("{path}.namespaces"),
            "`pods.namespaces` belongs to an older revision of the AdminNetworkPolicy API; \
             use `pods.namespaceSelector`",
        ));
    }
    Ok((
        p.namespace_selector
            .to_label_selector(&format!("{path}.namespaceSelector"))?,
        p.pod_selector
            .to_label_selector(&format!("{path}.podSelector"))?,
    ))
}

fn port(p: &ApiPort, path: &str) -> Result<PortMatch, ClusterPolicyError> {
    checks::exactly_one(
        &[
            ("portNumber", p.port_number.is_some()),
            ("namedPort", p.named_port.is_some()),
            ("portRange", p.port_range.is_some()),
        ],
        path,
    )?;
    if let Some(n) = &p.port_number {
        let at = format!("{path}.portNumber");
        let protocol = checks::protocol(n.protocol.as_deref(), &format!("{at}.protocol"))?;
        let port = checks::port(n.port, &format!("{at}.port"))?;
        return Ok(PortMatch::Range {
            protocol,
            start: port,
            end: port,
        });
    }
    if let Some(r) = &p.port_range {
        let at = format!("{path}.portRange");
        let protocol = checks::protocol(r.protocol.as_deref(), &format!("{at}.protocol"))?;
        return checks::port_range(protocol, r.start, r.end, &at);
    }
    checks::named_port(
        p.named_port.as_deref().unwrap_or_default(),
        &format!("{path}.namedPort"),
    )
}

//! ClusterNetworkPolicy (v1alpha2) checked as the CRD's schema and CEL rules check it,
//! and turned into the [`ClusterPolicy`] model.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cluster_policy::api::v1alpha2::{
    ClusterNetworkPolicy, EgressPeer, IngressPeer, NamespacedPod, ProtocolMatch,
};
use crate::cluster_policy::error::ClusterPolicyError;
use crate::cluster_policy::model::{
    Action, ClusterPolicy, Peer, PortMatch, Rule, SourceKind, Subject, Tier,
};
use crate::cluster_policy::validate::checks;
use crate::protocol::Protocol;

/// Rules per direction, peers per rule, protocols per rule: 25 each.
const MAX_ITEMS: usize = 25;

/// Validate a ClusterNetworkPolicy.
pub fn validate(cnp: &ClusterNetworkPolicy) -> Result<ClusterPolicy, ClusterPolicyError> {
    let name = super::object_name(&cnp.metadata)?;
    let spec = &cnp.spec;
    let tier = match spec.tier.as_str() {
        "Admin" => Tier::Admin,
        "Baseline" => Tier::Baseline,
        other => {
            return Err(ClusterPolicyError::invalid(
                "spec.tier",
                format!("Unsupported value: {other:?}: supported values: \"Admin\", \"Baseline\""),
            ));
        }
    };
    let priority = super::priority(spec.priority, "spec.priority")?;
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
            (Some(ns), _) => Subject::Namespaces(ns.to_label_selector("spec.subject.namespaces")?),
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
    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().enumerate() {
        let path = format!("spec.ingress[{i}]");
        checks::rule_name(&r.name, &path)?;
        checks::one_to(&r.from, MAX_ITEMS, &format!("{path}.from"))?;
        let peers = r
            .from
            .iter()
            .enumerate()
            .map(|(j, p)| ingress_peer(p, &format!("{path}.from[{j}]")))
            .collect::<Result<_, _>>()?;
        ingress.push(Rule {
            name: r.name.clone(),
            action: action(&r.action, &path)?,
            peers,
            ports: protocols(r.protocols.as_deref(), &path)?,
        });
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().enumerate() {
        let path = format!("spec.egress[{i}]");
        checks::rule_name(&r.name, &path)?;
        checks::one_to(&r.to, MAX_ITEMS, &format!("{path}.to"))?;
        let peers: Vec<Peer> =
            r.to.iter()
                .enumerate()
                .map(|(j, p)| egress_peer(p, &format!("{path}.to[{j}]")))
                .collect::<Result<_, _>>()?;
        let ports = protocols(r.protocols.as_deref(), &path)?;
        super::named_ports_need_pods(&peers, ports.as_deref(), &path)?;
        egress.push(Rule {
            name: r.name.clone(),
            action: action(&r.action, &path)?,
            peers,
            ports,
        });
    }
    Ok(ClusterPolicy {
        kind: SourceKind::ClusterNetworkPolicy,
        name,
        tier,
        priority,
        subject,
        ingress,
        egress,
    })
}

fn action(value: &str, path: &str) -> Result<Action, ClusterPolicyError> {
    match value {
        "Accept" => Ok(Action::Accept),
        "Deny" => Ok(Action::Deny),
        "Pass" => Ok(Action::Pass),
        other => Err(ClusterPolicyError::invalid(
            format!("{path}.action"),
            format!(
                "Unsupported value: {other:?}: supported values: \"Accept\", \"Deny\", \"Pass\""
            ),
        )),
    }
}

/// The namespace and pod selectors of a `pods` subject or peer.
fn namespaced_pod(
    p: &NamespacedPod,
    path: &str,
) -> Result<(LabelSelector, LabelSelector), ClusterPolicyError> {
    Ok((
        p.namespace_selector
            .to_label_selector(&format!("{path}.namespaceSelector"))?,
        p.pod_selector
            .to_label_selector(&format!("{path}.podSelector"))?,
    ))
}

fn ingress_peer(p: &IngressPeer, path: &str) -> Result<Peer, ClusterPolicyError> {
    checks::exactly_one(
        &[
            ("namespaces", p.namespaces.is_some()),
            ("pods", p.pods.is_some()),
        ],
        path,
    )?;
    egress_peer(
        &EgressPeer {
            namespaces: p.namespaces.clone(),
            pods: p.pods.clone(),
            ..EgressPeer::default()
        },
        path,
    )
}

fn egress_peer(p: &EgressPeer, path: &str) -> Result<Peer, ClusterPolicyError> {
    checks::exactly_one(
        &[
            ("namespaces", p.namespaces.is_some()),
            ("pods", p.pods.is_some()),
            ("nodes", p.nodes.is_some()),
            ("networks", p.networks.is_some()),
            ("domainNames", p.domain_names.is_some()),
        ],
        path,
    )?;
    if let Some(ns) = &p.namespaces {
        return Ok(Peer::Namespaces(
            ns.to_label_selector(&format!("{path}.namespaces"))?,
        ));
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

fn protocols(
    list: Option<&[ProtocolMatch]>,
    rule_path: &str,
) -> Result<Option<Vec<PortMatch>>, ClusterPolicyError> {
    let Some(list) = list else { return Ok(None) };
    let path = format!("{rule_path}.protocols");
    checks::one_to(list, MAX_ITEMS, &path)?;
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        checks::exactly_one(
            &[
                ("tcp", m.tcp.is_some()),
                ("udp", m.udp.is_some()),
                ("sctp", m.sctp.is_some()),
                ("destinationNamedPort", m.destination_named_port.is_some()),
            ],
            &at,
        )?;
        let (protocol, ports, field) = match (&m.tcp, &m.udp, &m.sctp) {
            (Some(p), _, _) => (Protocol::Tcp, p, "tcp"),
            (_, Some(p), _) => (Protocol::Udp, p, "udp"),
            (_, _, Some(p)) => (Protocol::Sctp, p, "sctp"),
            _ => {
                let name = m.destination_named_port.as_deref().unwrap_or_default();
                out.push(checks::named_port(
                    name,
                    &format!("{at}.destinationNamedPort"),
                )?);
                continue;
            }
        };
        let at = format!("{at}.{field}");
        // `MinProperties=1` on tcp/udp/sctp: `tcp: {}` is refused.
        let Some(port) = &ports.destination_port else {
            return Err(ClusterPolicyError::invalid(
                &at,
                "should have at least 1 properties (destinationPort)",
            ));
        };
        let at = format!("{at}.destinationPort");
        checks::exactly_one(
            &[
                ("number", port.number.is_some()),
                ("range", port.range.is_some()),
            ],
            &at,
        )?;
        out.push(match (&port.number, &port.range) {
            (Some(n), _) => {
                let n = checks::port(*n, &format!("{at}.number"))?;
                PortMatch::Range {
                    protocol,
                    start: n,
                    end: n,
                }
            }
            (None, Some(r)) => {
                checks::port_range(protocol, r.start, r.end, &format!("{at}.range"))?
            }
            (None, None) => {
                return Err(ClusterPolicyError::invalid(
                    &at,
                    "exactly one of number, range must be set",
                ));
            }
        });
    }
    Ok(Some(out))
}

//! The `from[]` / `to[]` peers of a policy rule, resolved against the cluster: pod
//! selectors, namespace selectors (alone or ANDed in one peer) and `ipBlock`s.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::objects::PodRef;
use crate::selector;

use super::{ClusterView, Endpoint};

/// One peer of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPeer {
    /// Position in the rule's `from` / `to` list.
    pub index: usize,
    pub kind: PeerKind,
}

/// What a peer matches.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerKind {
    /// `podSelector` and/or `namespaceSelector`: a set of pods, matched by identity.
    Pods {
        /// `None` = every pod of the selected namespaces.
        pod_selector: Option<LabelSelector>,
        /// `None` = the policy's own namespace only.
        namespace_selector: Option<LabelSelector>,
        /// The policy's namespace (where `podSelector` alone looks).
        policy_namespace: String,
        /// The pods the peer selects now, sorted.
        pods: BTreeSet<PodRef>,
    },
    /// `ipBlock`: any address in `cidr` and in none of `except`, pod IPs included.
    IpBlock(IpBlockMatch),
    /// A peer the API server would refuse (no selector and no ipBlock, a CIDR that does
    /// not parse, an IPv6 block in this IPv4 cluster): it matches nothing.
    Nothing(String),
}

/// An `ipBlock` with its CIDRs parsed and masked (see the module doc of `policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpBlockMatch {
    /// The CIDR as written.
    pub written: String,
    /// The CIDR with host bits cleared.
    pub cidr: Ipv4Net,
    /// The `except` entries with host bits cleared, in the order written.
    pub except: Vec<Ipv4Net>,
}

impl IpBlockMatch {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }

    /// The except entry that removes `ip`, if one does (and the CIDR covers it).
    pub fn excepted_by(&self, ip: Ipv4Addr) -> Option<Ipv4Net> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        self.except.iter().copied().find(|e| e.contains(&ip))
    }
}

impl fmt::Display for IpBlockMatch {
    /// `ipBlock 172.17.0.0/16 except 172.17.1.0/24`, noting a masked CIDR.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ipBlock {}", self.cidr)?;
        if self.written != self.cidr.to_string() {
            write!(f, " (written {}, host bits masked)", self.written)?;
        }
        if !self.except.is_empty() {
            let ex: Vec<String> = self.except.iter().map(|e| e.to_string()).collect();
            write!(f, " except {}", ex.join(", "))?;
        }
        Ok(())
    }
}

/// Parses a CIDR the way the API server accepts it (host bits allowed) and masks it.
fn parse_cidr(s: &str) -> Result<Ipv4Net, String> {
    match s.trim().parse::<IpNet>() {
        Ok(IpNet::V4(n)) => Ok(n.trunc()),
        Ok(IpNet::V6(_)) => Err(format!(
            "{s} is an IPv6 block and this cluster is IPv4-only"
        )),
        Err(_) => Err(format!("{s:?} is not a CIDR")),
    }
}

fn ip_block(block: &IPBlock) -> Result<IpBlockMatch, String> {
    let cidr = parse_cidr(&block.cidr)?;
    let except = block
        .except
        .iter()
        .flatten()
        // An except that does not parse would, if skipped, open what the author closed:
        // the whole peer matches nothing instead.
        .map(|e| parse_cidr(e).map_err(|why| format!("except {why}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(IpBlockMatch {
        written: block.cidr.clone(),
        cidr,
        except,
    })
}

impl ResolvedPeer {
    /// Resolves one `from[]` / `to[]` entry of a policy in `policy_namespace`.
    pub(super) fn resolve(
        index: usize,
        spec: &NetworkPolicyPeer,
        policy_namespace: &str,
        cluster: &ClusterView,
    ) -> Self {
        let kind = match spec {
            NetworkPolicyPeer {
                ip_block: Some(block),
                pod_selector: None,
                namespace_selector: None,
            } => match ip_block(block) {
                Ok(b) => PeerKind::IpBlock(b),
                Err(why) => PeerKind::Nothing(why),
            },
            NetworkPolicyPeer {
                ip_block: Some(_), ..
            } => PeerKind::Nothing("ipBlock cannot be combined with a selector in one peer".into()),
            NetworkPolicyPeer {
                pod_selector: None,
                namespace_selector: None,
                ..
            } => PeerKind::Nothing("an empty peer (no selector, no ipBlock)".into()),
            NetworkPolicyPeer {
                pod_selector,
                namespace_selector,
                ..
            } => {
                let selected = cluster
                    .pods
                    .values()
                    // A hostNetwork pod's traffic is its node's: selectors skip it.
                    .filter(|pod| !pod.host_network)
                    .filter(|pod| {
                        let ns_ok = match namespace_selector {
                            None => pod.pod.namespace == policy_namespace,
                            Some(sel) => {
                                selector::matches(sel, cluster.namespace_labels(&pod.pod.namespace))
                            }
                        };
                        ns_ok
                            && pod_selector
                                .as_ref()
                                .is_none_or(|sel| selector::matches(sel, &pod.labels))
                    })
                    .map(|pod| pod.pod.clone())
                    .collect();
                PeerKind::Pods {
                    pod_selector: pod_selector.clone(),
                    namespace_selector: namespace_selector.clone(),
                    policy_namespace: policy_namespace.to_string(),
                    pods: selected,
                }
            }
        };
        Self { index, kind }
    }

    /// Whether the other end of a connection is this peer. Pod selectors match pods by
    /// identity; ipBlocks match addresses, a pod's IP included.
    pub fn matches(&self, other: &Endpoint) -> bool {
        match &self.kind {
            PeerKind::Pods { pods, .. } => match other {
                Endpoint::Pod(p) => pods.contains(&p.pod),
                Endpoint::Address(_) => false,
            },
            PeerKind::IpBlock(block) => other.ip().is_some_and(|ip| block.contains(ip)),
            PeerKind::Nothing(_) => false,
        }
    }
}

impl fmt::Display for PeerKind {
    /// `pods with pod=b in x`, `every pod in namespaces with ns=y`,
    /// `pods with pod=b in namespaces with ns=y`, `ipBlock 10.0.0.0/24`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerKind::Pods {
                pod_selector,
                namespace_selector,
                policy_namespace,
                ..
            } => {
                let pods = match pod_selector {
                    Some(s) if !selector::is_empty(s) => {
                        format!("pods with {}", selector::describe(s))
                    }
                    _ => "every pod".to_string(),
                };
                let namespaces = match namespace_selector {
                    None => format!("in {policy_namespace}"),
                    Some(s) if selector::is_empty(s) => "in every namespace".into(),
                    Some(s) => format!("in namespaces with {}", selector::describe(s)),
                };
                write!(f, "{pods} {namespaces}")
            }
            PeerKind::IpBlock(b) => b.fmt(f),
            PeerKind::Nothing(why) => write!(f, "nothing ({why})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_masked() {
        let b = ip_block(&IPBlock {
            cidr: "172.17.3.4/16".into(),
            except: Some(vec!["172.17.1.9/24".into()]),
        })
        .unwrap();
        assert_eq!(b.cidr.to_string(), "172.17.0.0/16");
        assert_eq!(b.except[0].to_string(), "172.17.1.0/24");
        assert!(b.contains("172.17.0.1".parse().unwrap()));
        assert!(!b.contains("172.17.1.200".parse().unwrap()));
        assert!(b.to_string().contains("host bits masked"));
    }

    #[test]
    fn zero_prefix_covers_everything() {
        let b = ip_block(&IPBlock {
            cidr: "0.0.0.0/0".into(),
            except: None,
        })
        .unwrap();
        assert!(b.contains("10.244.1.2".parse().unwrap()));
        assert!(b.contains("255.255.255.255".parse().unwrap()));
    }

    #[test]
    fn bad_blocks_are_rejected() {
        for (cidr, except) in [
            ("fd00::/8", None),
            ("10.0.0.0/33", None),
            ("nonsense", None),
            ("10.0.0.0/8", Some(vec!["bad".to_string()])),
        ] {
            assert!(
                ip_block(&IPBlock {
                    cidr: cidr.into(),
                    except
                })
                .is_err(),
                "{cidr}"
            );
        }
    }
}

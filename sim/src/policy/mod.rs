//! NetworkPolicy semantics, resolved against the cluster: the single source of truth for
//! what the `networking.k8s.io/v1` API means in knetlab. The oracle asks it whether a
//! connection is allowed and why; the rule renderers read the same resolved sets (selected
//! pods, peer pods, ip blocks, port matchers) to write kernel rules. Nothing else
//! interprets a `NetworkPolicy`.
//!
//! What is decided here, once:
//! - `policyTypes` defaulting: omitted (or empty) means `[Ingress]`, plus `Egress` when
//!   the `egress` list is non-empty. A pod is isolated in a direction when some policy of
//!   its namespace selects it and lists that direction; then only the union of the rules
//!   of those policies allows anything.
//! - Peers: `podSelector` alone = pods of the policy's namespace; `namespaceSelector`
//!   alone = every pod of the matching namespaces; both in one peer = AND; separate peers
//!   = OR; a missing or empty `from` / `to` = any peer, outside the cluster included.
//!   Selector peers match pods by identity; `ipBlock` matches addresses, pod IPs included.
//! - `ipBlock` CIDRs with host bits set (`10.0.0.1/24`) are accepted and masked
//!   (`10.0.0.0/24`), as the API server accepts them (it parses them sloppily); the
//!   explanation names the masked form. `except` entries are masked the same way.
//!   IPv6 blocks match nothing (the cluster is IPv4-only).
//! - Ports: `protocol` defaults to TCP; no `port` = every port of that protocol; named
//!   ports resolve on the DESTINATION pod (for egress rules too), name and protocol
//!   both matching, and open nothing where no container declares them (or where the
//!   destination is not a pod); `endPort` gives `port..=endPort`. A rule without `ports`
//!   (or with `ports: []`) allows every port and protocol.
//! - Anything the API server would refuse (an unknown protocol, a peer with nothing in
//!   it, a CIDR that does not parse) is not an error here: it matches nothing, so a
//!   mistake never opens traffic, and it is named in explanations.
//! - hostNetwork pods (the reference's "ignore them in selectors", kube-router's choice)
//!   are never selected: no policy's `podSelector` isolates them and no selector peer
//!   matches them. Their traffic is their node's, at the node's address, which only
//!   `ipBlock` peers (or rules without peers) match; a named port opens nothing on them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::objects::{
    ClusterObjects, DeclaredPort, NAMESPACE_NAME_LABEL, PodRef, declared_ports, host_network,
    pod_ip, pod_labels, pod_node,
};
use crate::protocol::PortProto;
use crate::selector;

mod peers;
mod ports;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

pub use peers::{IpBlockMatch, PeerKind, ResolvedPeer};
pub use ports::{PortEntry, PortMatcher, PortSpan};

/// Which way traffic goes relative to the pod a policy selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// `ingress` / `egress`, as the spec's field names.
    pub fn field(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// `Ingress` / `Egress`, as written in `policyTypes`.
    pub fn policy_type(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }

    /// `from` / `to`: the field holding a rule's peers.
    pub fn peers_field(self) -> &'static str {
        match self {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field())
    }
}

/// A pod as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub pod: PodRef,
    /// Known once the CNI plugin gave it one.
    pub ip: Option<Ipv4Addr>,
    pub node: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Declared container ports (for named ports).
    pub ports: Vec<DeclaredPort>,
    /// `spec.hostNetwork`: the pod is its node to the network (its IP is the node's)
    /// and no selector ever matches it.
    pub host_network: bool,
}

/// The other end of a connection, as a rule's peers are matched against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// A pod of the cluster.
    Pod(&'a PodInfo),
    /// Any other address (a node, a host outside the cluster).
    Address(Ipv4Addr),
}

impl Endpoint<'_> {
    pub fn ip(&self) -> Option<Ipv4Addr> {
        match self {
            Endpoint::Pod(p) => p.ip,
            Endpoint::Address(a) => Some(*a),
        }
    }

    pub fn pod(&self) -> Option<&PodInfo> {
        match self {
            Endpoint::Pod(p) => Some(p),
            Endpoint::Address(_) => None,
        }
    }
}

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Pod(p) => write!(f, "{}", p.pod),
            Endpoint::Address(a) => write!(f, "{a}"),
        }
    }
}

/// The pods and namespace labels peers are resolved against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ClusterView {
    pods: BTreeMap<PodRef, PodInfo>,
    /// Every namespace that exists or holds a pod, with its labels, which always include
    /// `kubernetes.io/metadata.name`.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl ClusterView {
    fn new(objects: &ClusterObjects) -> Self {
        let pods: BTreeMap<PodRef, PodInfo> = objects
            .pods
            .iter()
            .map(|(r, p)| {
                let info = PodInfo {
                    pod: r.clone(),
                    ip: pod_ip(p),
                    node: pod_node(p).map(str::to_string),
                    labels: pod_labels(p),
                    ports: declared_ports(p),
                    host_network: host_network(p),
                };
                (r.clone(), info)
            })
            .collect();
        let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let names = objects
            .namespaces
            .keys()
            .chain(pods.keys().map(|p| &p.namespace));
        for name in names {
            namespaces.entry(name.clone()).or_insert_with(|| {
                let mut labels = objects.namespace_labels(name);
                labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
                labels
            });
        }
        Self { pods, namespaces }
    }

    fn namespace_labels(&self, name: &str) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.namespaces.get(name).unwrap_or(&EMPTY)
    }
}

/// `policyTypes` after defaulting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyTypes {
    pub ingress: bool,
    pub egress: bool,
    /// Whether `policyTypes` was omitted and these are the defaults.
    pub defaulted: bool,
}

impl PolicyTypes {
    pub fn has(&self, dir: Direction) -> bool {
        match dir {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }
}

/// One rule (`ingress[i]` or `egress[i]`) of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRule {
    pub direction: Direction,
    /// Position in the policy's `ingress` / `egress` list.
    pub index: usize,
    /// `None` = `from` / `to` missing or empty: every peer, outside the cluster included.
    pub peers: Option<Vec<ResolvedPeer>>,
    /// `None` = `ports` missing or empty: every port and protocol.
    pub ports: Option<Vec<PortEntry>>,
}

/// Which peer of a rule matched the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerCheck {
    /// The rule has no `from` / `to`: everyone matches.
    AnyPeer,
    /// The first peer (by index) that matches.
    Peer(usize),
    NoMatch,
}

/// Which `ports` entry of a rule matched the probed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortCheck {
    /// The rule has no `ports`: every port and protocol.
    AllPorts,
    /// The first entry (by index) that opens the port, and what it opens there.
    Entry {
        index: usize,
        span: PortSpan,
    },
    NoMatch,
}

/// A rule checked against one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleCheck {
    pub peer: PeerCheck,
    pub port: PortCheck,
}

impl RuleCheck {
    pub fn allows(&self) -> bool {
        self.peer != PeerCheck::NoMatch && self.port != PortCheck::NoMatch
    }
}

impl ResolvedRule {
    fn new(
        direction: Direction,
        index: usize,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
        namespace: &str,
        cluster: &ClusterView,
    ) -> Self {
        let peers = peers.filter(|p| !p.is_empty()).map(|list| {
            list.iter()
                .enumerate()
                .map(|(i, p)| ResolvedPeer::resolve(i, p, namespace, cluster))
                .collect()
        });
        let ports = ports.filter(|p| !p.is_empty()).map(|list| {
            list.iter()
                .enumerate()
                .map(|(i, p)| PortEntry::from_spec(i, p))
                .collect()
        });
        Self {
            direction,
            index,
            peers,
            ports,
        }
    }

    /// `ingress[0]`.
    pub fn label(&self) -> String {
        format!("{}[{}]", self.direction.field(), self.index)
    }

    /// `ingress[0].from[1]`.
    pub fn peer_label(&self, peer: usize) -> String {
        format!("{}.{}[{peer}]", self.label(), self.direction.peers_field())
    }

    /// `ingress[0].ports[1]`.
    pub fn port_label(&self, entry: usize) -> String {
        format!("{}.ports[{entry}]", self.label())
    }

    /// The first peer that matches the other end of the connection.
    pub fn check_peer(&self, other: &Endpoint) -> PeerCheck {
        match &self.peers {
            None => PeerCheck::AnyPeer,
            Some(peers) => peers
                .iter()
                .find(|p| p.matches(other))
                .map_or(PeerCheck::NoMatch, |p| PeerCheck::Peer(p.index)),
        }
    }

    /// The first `ports` entry that opens `port` on the destination (`None` when the
    /// destination is not a pod: named ports then open nothing).
    pub fn check_port(&self, dest: Option<&PodInfo>, port: PortProto) -> PortCheck {
        let Some(entries) = &self.ports else {
            return PortCheck::AllPorts;
        };
        let declared = dest.map(|d| d.ports.as_slice());
        entries
            .iter()
            .find_map(|e| {
                e.on(declared)
                    .filter(|s| s.contains(port))
                    .map(|span| PortCheck::Entry {
                        index: e.index,
                        span,
                    })
            })
            .unwrap_or(PortCheck::NoMatch)
    }

    /// What this rule opens on one destination: `None` = every port and protocol,
    /// otherwise the spans of its entries there (named ports resolved on `dest`,
    /// entries that open nothing there left out).
    pub fn ports_on(&self, dest: Option<&PodInfo>) -> Option<Vec<PortSpan>> {
        let entries = self.ports.as_ref()?;
        let declared = dest.map(|d| d.ports.as_slice());
        Some(entries.iter().filter_map(|e| e.on(declared)).collect())
    }

    /// Whether some `ports` entry is a named port (what it opens then depends on the
    /// destination pod).
    pub fn has_named_ports(&self) -> bool {
        self.ports.iter().flatten().any(PortEntry::is_named)
    }

    /// Groups destination pods by what this rule opens on each (named ports make that
    /// differ from pod to pod): `None` = every port and protocol; an empty list = nothing.
    /// Renderers write one match per group; destinations outside the cluster get
    /// `ports_on(None)`.
    pub fn port_groups<'p>(
        &self,
        dests: impl IntoIterator<Item = &'p PodInfo>,
    ) -> BTreeMap<Option<Vec<PortSpan>>, Vec<PodRef>> {
        let mut groups: BTreeMap<Option<Vec<PortSpan>>, Vec<PodRef>> = BTreeMap::new();
        for dest in dests {
            let spans = self.ports_on(Some(dest)).map(|mut v| {
                v.sort();
                v.dedup();
                v
            });
            groups.entry(spans).or_default().push(dest.pod.clone());
        }
        for pods in groups.values_mut() {
            pods.sort();
        }
        groups
    }

    /// Checks the rule against a connection whose other end is `other` (the source for
    /// ingress, the destination for egress), to the pod `dest`, on `port`.
    pub fn check(&self, other: &Endpoint, dest: Option<&PodInfo>, port: PortProto) -> RuleCheck {
        RuleCheck {
            peer: self.check_peer(other),
            port: self.check_port(dest, port),
        }
    }
}

/// One policy, resolved against the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPolicy {
    pub namespace: String,
    pub name: String,
    /// `spec.podSelector` (missing = `{}`).
    pub pod_selector: LabelSelector,
    /// The pods of `namespace` that `pod_selector` selects, sorted.
    pub selected: BTreeSet<PodRef>,
    pub policy_types: PolicyTypes,
    pub ingress: Vec<ResolvedRule>,
    pub egress: Vec<ResolvedRule>,
}

impl ResolvedPolicy {
    fn new(np: &NetworkPolicy, cluster: &ClusterView) -> Self {
        let namespace = np
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = np.metadata.name.clone().unwrap_or_default();
        let spec = np.spec.clone().unwrap_or_default();
        let pod_selector = spec.pod_selector.clone().unwrap_or_default();
        let selected = cluster
            .pods
            .values()
            .filter(|p| {
                !p.host_network
                    && p.pod.namespace == namespace
                    && selector::matches(&pod_selector, &p.labels)
            })
            .map(|p| p.pod.clone())
            .collect();
        let listed = spec.policy_types.as_deref().unwrap_or_default();
        let policy_types = if listed.is_empty() {
            PolicyTypes {
                ingress: true,
                egress: spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
                defaulted: true,
            }
        } else {
            PolicyTypes {
                ingress: listed.iter().any(|t| t == "Ingress"),
                egress: listed.iter().any(|t| t == "Egress"),
                defaulted: false,
            }
        };
        let ingress = spec
            .ingress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                ResolvedRule::new(
                    Direction::Ingress,
                    i,
                    r.from.as_deref(),
                    r.ports.as_deref(),
                    &namespace,
                    cluster,
                )
            })
            .collect();
        let egress = spec
            .egress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                ResolvedRule::new(
                    Direction::Egress,
                    i,
                    r.to.as_deref(),
                    r.ports.as_deref(),
                    &namespace,
                    cluster,
                )
            })
            .collect();
        Self {
            namespace,
            name,
            pod_selector,
            selected,
            policy_types,
            ingress,
            egress,
        }
    }

    /// `ns/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn selects(&self, pod: &PodRef) -> bool {
        self.selected.contains(pod)
    }

    /// Whether this policy isolates `pod` in `dir`.
    pub fn isolates(&self, pod: &PodRef, dir: Direction) -> bool {
        self.policy_types.has(dir) && self.selects(pod)
    }

    /// The rules of one direction as written (they count only when
    /// `policy_types.has(dir)`; see [`ResolvedPolicy::effective_rules`]).
    pub fn rules(&self, dir: Direction) -> &[ResolvedRule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The rules that take effect in `dir`: none when `policyTypes` leaves `dir` out
    /// (such rules are ignored, as the API says).
    pub fn effective_rules(&self, dir: Direction) -> &[ResolvedRule] {
        if self.policy_types.has(dir) {
            self.rules(dir)
        } else {
            &[]
        }
    }

    /// The pod selector in words with its scope: `pod=a in x`, `every pod in x`.
    pub fn describe_selector(&self) -> String {
        if selector::is_empty(&self.pod_selector) {
            format!("every pod in {}", self.namespace)
        } else {
            format!(
                "pods with {} in {}",
                selector::describe(&self.pod_selector),
                self.namespace
            )
        }
    }
}

/// One policy checked against a connection: each effective rule and what matched.
#[derive(Debug, Clone)]
pub struct PolicyCheck<'a> {
    pub policy: &'a ResolvedPolicy,
    pub rules: Vec<(&'a ResolvedRule, RuleCheck)>,
}

impl PolicyCheck<'_> {
    pub fn allows(&self) -> bool {
        self.rules.iter().any(|(_, c)| c.allows())
    }
}

/// One end's verdict for a connection.
#[derive(Debug, Clone)]
pub enum SideVerdict<'a> {
    /// No policy isolates the pod in this direction: allowed.
    NotIsolated,
    /// The policies isolating the pod (sorted by namespace/name), each checked; the
    /// connection is allowed when any rule of any of them allows it (their union).
    Isolated(Vec<PolicyCheck<'a>>),
}

impl SideVerdict<'_> {
    pub fn allowed(&self) -> bool {
        match self {
            SideVerdict::NotIsolated => true,
            SideVerdict::Isolated(checks) => checks.iter().any(PolicyCheck::allows),
        }
    }
}

/// Every policy of the cluster, resolved, with the pods and namespaces it was resolved
/// against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedPolicies {
    /// Sorted by namespace, then name.
    pub policies: Vec<ResolvedPolicy>,
    cluster: ClusterView,
}

/// Resolves every policy of the cluster against its current pods and namespaces.
pub fn resolve(objects: &ClusterObjects) -> ResolvedPolicies {
    let cluster = ClusterView::new(objects);
    // `network_policies` is a BTreeMap keyed by (namespace, name): already sorted.
    let policies = objects
        .network_policies
        .values()
        .map(|np| ResolvedPolicy::new(np, &cluster))
        .collect();
    ResolvedPolicies { policies, cluster }
}

impl ResolvedPolicies {
    /// Every pod of the cluster, as policies see it.
    pub fn pods(&self) -> &BTreeMap<PodRef, PodInfo> {
        &self.cluster.pods
    }

    pub fn pod(&self, pod: &PodRef) -> Option<&PodInfo> {
        self.cluster.pods.get(pod)
    }

    /// A namespace's labels (with `kubernetes.io/metadata.name`); empty if unknown.
    pub fn namespace_labels(&self, name: &str) -> &BTreeMap<String, String> {
        self.cluster.namespace_labels(name)
    }

    /// The pod whose IP this is, if any.
    pub fn pod_by_ip(&self, ip: Ipv4Addr) -> Option<&PodInfo> {
        self.cluster.pods.values().find(|p| p.ip == Some(ip))
    }

    /// The known IPs of these pods, sorted and without duplicates (pods without an IP
    /// yet are left out: no packet can carry one).
    pub fn ips_of<'p>(&self, pods: impl IntoIterator<Item = &'p PodRef>) -> Vec<Ipv4Addr> {
        let mut ips: Vec<Ipv4Addr> = pods.into_iter().filter_map(|p| self.pod(p)?.ip).collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// The pods whose IP an ipBlock covers (for egress named ports, which resolve on
    /// destination pods inside the block); hostNetwork pods are their node, not pods.
    pub fn pods_in_block(&self, block: &IpBlockMatch) -> Vec<&PodInfo> {
        self.cluster
            .pods
            .values()
            .filter(|p| !p.host_network && p.ip.is_some_and(|ip| block.contains(ip)))
            .collect()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&ResolvedPolicy> {
        self.policies
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// The policies that isolate `pod` in `dir`, sorted by namespace/name.
    pub fn isolating<'a>(
        &'a self,
        pod: &'a PodRef,
        dir: Direction,
    ) -> impl Iterator<Item = &'a ResolvedPolicy> + 'a {
        self.policies.iter().filter(move |p| p.isolates(pod, dir))
    }

    /// Decides one end of a connection on `port`: for `Ingress`, whether `subject` may
    /// receive it from `other`; for `Egress`, whether `subject` may send it to `other`.
    /// Named ports resolve on the destination: `subject` for ingress, `other` for egress.
    pub fn evaluate<'a>(
        &'a self,
        dir: Direction,
        subject: &'a PodInfo,
        other: &Endpoint,
        port: PortProto,
    ) -> SideVerdict<'a> {
        let dest = match dir {
            Direction::Ingress => Some(subject),
            Direction::Egress => other.pod(),
        };
        let checks: Vec<PolicyCheck<'a>> = self
            .isolating(&subject.pod, dir)
            .map(|policy| PolicyCheck {
                policy,
                rules: policy
                    .effective_rules(dir)
                    .iter()
                    .map(|r| (r, r.check(other, dest, port)))
                    .collect(),
            })
            .collect();
        if checks.is_empty() {
            SideVerdict::NotIsolated
        } else {
            SideVerdict::Isolated(checks)
        }
    }
}

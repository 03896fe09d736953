//! Which endpoints each kind of traffic to a service port may reach, as one node's
//! kube-proxy decides it (`pkg/proxy/topology.go`, `CategorizeEndpoints`, and the
//! traffic-policy flags of `syncProxyRules`): ready endpoints, or when none is ready the
//! serving and terminating ones (connections drain during a rollout); the node-local
//! list for `internalTrafficPolicy` / `externalTrafficPolicy: Local`; and which chains
//! follow from that. One implementation for the three proxy modes and the oracle.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::{Endpoint, ServicePort};

/// `ip:port` as Go's `net.JoinHostPort` writes an IPv4 endpoint, kept on the stack
/// (at most `255.255.255.255:65535`, 21 bytes).
#[derive(Clone, Copy)]
pub(in crate::kube_proxy) struct HostPort {
    buf: [u8; 21],
    len: u8,
    /// Length of the address part.
    ip_len: u8,
}

impl HostPort {
    fn new(ip: Ipv4Addr, port: u16) -> Self {
        let mut hp = HostPort {
            buf: [0; 21],
            len: 0,
            ip_len: 0,
        };
        for (k, octet) in ip.octets().into_iter().enumerate() {
            if k > 0 {
                hp.push(b'.');
            }
            hp.push_decimal(u32::from(octet));
        }
        hp.ip_len = hp.len;
        hp.push(b':');
        hp.push_decimal(u32::from(port));
        hp
    }

    fn push(&mut self, b: u8) {
        self.buf[usize::from(self.len)] = b;
        self.len += 1;
    }

    fn push_decimal(&mut self, n: u32) {
        let mut digits = [0u8; 5];
        let mut count = 0;
        let mut n = n;
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for k in (0..count).rev() {
            self.push(digits[k]);
        }
    }

    pub(in crate::kube_proxy) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }

    pub(in crate::kube_proxy) fn ip(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.ip_len)]).unwrap_or_default()
    }
}

/// An endpoint as kube-proxy's endpoints map holds it.
pub(in crate::kube_proxy) struct Ep<'a> {
    pub(in crate::kube_proxy) src: &'a Endpoint,
    /// `ip:port` (`BaseEndpointInfo.String()`).
    pub(in crate::kube_proxy) text: HostPort,
    pub(in crate::kube_proxy) local: bool,
}

impl Ep<'_> {
    fn ready(&self) -> bool {
        self.src.ready
    }
    fn serving_terminating(&self) -> bool {
        self.src.serving && self.src.terminating
    }
}

/// One entry per `ip:port` (a local copy wins, as in kube-proxy's slice cache), sorted
/// by that string (kube-proxy's `byEndpoint`).
pub(in crate::kube_proxy) fn endpoint_list<'a>(sp: &'a ServicePort, node: &str) -> Vec<Ep<'a>> {
    let mut eps: Vec<Ep<'a>> = sp
        .endpoints
        .iter()
        .map(|e| Ep {
            src: e,
            text: HostPort::new(e.ip, e.port),
            local: e.node.as_deref() == Some(node),
        })
        .collect();
    eps.sort_by(|a, b| {
        a.text
            .as_str()
            .cmp(b.text.as_str())
            .then(b.local.cmp(&a.local))
    });
    eps.dedup_by(|later, kept| later.text.as_str() == kept.text.as_str());
    eps
}

/// Vectors reused from one service port to the next.
#[derive(Default)]
pub(in crate::kube_proxy) struct Scratch {
    /// Indexes into the endpoint list: used with the Cluster policy, with the Local
    /// policy, and reachable from this node (the union).
    pub(in crate::kube_proxy) cluster: Vec<usize>,
    pub(in crate::kube_proxy) local: Vec<usize>,
    pub(in crate::kube_proxy) reachable: Vec<usize>,
    /// SEP chain names, indexed like the endpoint list (empty when not reachable).
    pub(in crate::kube_proxy) seps: Vec<String>,
}

/// `CategorizeEndpoints` (no topology hints): fills the cluster, local and reachable
/// lists of `scratch` and says whether the service has usable endpoints anywhere.
pub(in crate::kube_proxy) fn categorize(
    eps: &[Ep<'_>],
    uses_cluster: bool,
    uses_local: bool,
    scratch: &mut Scratch,
) -> bool {
    let pick = |out: &mut Vec<usize>, f: &dyn Fn(&Ep<'_>) -> bool| {
        out.clear();
        out.extend(eps.iter().enumerate().filter(|(_, e)| f(e)).map(|(i, _)| i));
    };
    let Scratch {
        cluster,
        local,
        reachable,
        ..
    } = scratch;
    cluster.clear();
    local.clear();
    let mut has_any = false;
    if uses_cluster {
        pick(cluster, &|e| e.ready());
        // No ready endpoint anywhere: fall back to serving, terminating ones so that
        // connections drain during a rollout.
        if cluster.is_empty() {
            pick(cluster, &|e| e.serving_terminating());
        }
        has_any = !cluster.is_empty();
    }
    if !uses_local {
        reachable.clone_from(cluster);
        return has_any;
    }
    let mut local_ready = false;
    let mut local_serving_terminating = false;
    for e in eps {
        if e.ready() {
            has_any = true;
            local_ready |= e.local;
        } else if e.serving_terminating() {
            has_any = true;
            local_serving_terminating |= e.local;
        }
    }
    let mut use_serving_terminating = false;
    if local_ready {
        pick(local, &|e| e.local && e.ready());
    } else if local_serving_terminating {
        use_serving_terminating = true;
        pick(local, &|e| e.local && e.serving_terminating());
    }
    if !uses_cluster {
        reachable.clone_from(local);
    } else if !use_serving_terminating {
        // Every ready endpoint is in `cluster`, so it contains all of `local`.
        reachable.clone_from(cluster);
    } else {
        let set: BTreeSet<usize> = cluster.iter().chain(local.iter()).copied().collect();
        reachable.clear();
        reachable.extend(set);
    }
    has_any
}

/// [`categorize_endpoints`]'s answer: kube-proxy's `CategorizeEndpoints` for one
/// service port as one node sees it, shared by every proxy mode and the oracle so that
/// all of them pick the same endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategorizedEndpoints<'a> {
    /// One per `ip:port` (a local copy wins), sorted by that string: kube-proxy's order.
    pub endpoints: Vec<&'a Endpoint>,
    /// Indexes into `endpoints`: used with the Cluster policy, with the Local policy,
    /// and reachable from this node (the union, what gets an endpoint chain).
    pub cluster: Vec<usize>,
    pub local: Vec<usize>,
    pub reachable: Vec<usize>,
    /// The service has usable endpoints somewhere (not necessarily on this node).
    pub has_endpoints: bool,
    /// The traffic policies the lists were chosen for.
    pub policies: TrafficPolicies,
}

impl<'a> CategorizedEndpoints<'a> {
    /// The chains the port's traffic goes through ([`TrafficPolicies::chains`]).
    pub fn chains(&self) -> ChainChoice {
        self.policies.chains(
            self.has_endpoints,
            !self.cluster.is_empty(),
            !self.local.is_empty(),
        )
    }

    /// The endpoints the Cluster policy uses (ready ones, or if none is ready anywhere
    /// the serving and terminating ones), in kube-proxy's order.
    pub fn cluster_endpoints(&self) -> Vec<&'a Endpoint> {
        self.cluster.iter().map(|&i| self.endpoints[i]).collect()
    }

    /// The endpoints the Local policy uses: the same choice among this node's endpoints.
    pub fn local_endpoints(&self) -> Vec<&'a Endpoint> {
        self.local.iter().map(|&i| self.endpoints[i]).collect()
    }

    /// Where traffic to the cluster IP may go: the local list with
    /// `internalTrafficPolicy: Local`, else the cluster list.
    pub fn internal_endpoints(&self) -> Vec<&'a Endpoint> {
        if self.policies.internal_local {
            self.local_endpoints()
        } else {
            self.cluster_endpoints()
        }
    }

    /// Where traffic from outside (node port, load-balancer address, external IP) may go
    /// once KUBE-EXT sends it on: the local list with `externalTrafficPolicy: Local`,
    /// else the cluster list.
    pub fn external_endpoints(&self) -> Vec<&'a Endpoint> {
        if self.policies.external_local {
            self.local_endpoints()
        } else {
            self.cluster_endpoints()
        }
    }
}

/// `CategorizeEndpoints` for `sp` as node `node`'s kube-proxy sees it, with the
/// traffic-policy flags worked out as `syncProxyRules` does ([`TrafficPolicies::of`]).
pub fn categorize_endpoints<'a>(sp: &'a ServicePort, node: &str) -> CategorizedEndpoints<'a> {
    let eps = endpoint_list(sp, node);
    let policies = TrafficPolicies::of(sp);
    let mut scratch = Scratch::default();
    let has_endpoints = categorize(
        &eps,
        policies.uses_cluster_endpoints(),
        policies.uses_local_endpoints(),
        &mut scratch,
    );
    CategorizedEndpoints {
        endpoints: eps.iter().map(|e| e.src).collect(),
        cluster: scratch.cluster,
        local: scratch.local,
        reachable: scratch.reachable,
        has_endpoints,
        policies,
    }
}

/// A service port's traffic policies as `syncProxyRules` reads them: which traffic uses
/// the node-local endpoint list rather than the cluster-wide one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficPolicies {
    /// Reachable through a node port, an external IP or a load-balancer address.
    pub externally_accessible: bool,
    /// `internalTrafficPolicy: Local`: cluster-IP traffic uses this node's endpoints.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local` on an externally accessible port: traffic from
    /// outside uses this node's endpoints (and keeps its source address).
    pub external_local: bool,
}

impl TrafficPolicies {
    /// The policies of `sp` (`externalTrafficPolicy` counts only for a port reachable
    /// from outside).
    pub fn of(sp: &ServicePort) -> Self {
        let externally_accessible = sp.externally_accessible();
        Self {
            externally_accessible,
            internal_local: sp.internal_policy_local,
            external_local: sp.external_policy_local && externally_accessible,
        }
    }

    /// Some traffic uses the cluster-wide list.
    pub fn uses_cluster_endpoints(self) -> bool {
        !self.internal_local || self.externally_accessible
    }

    /// Some traffic uses the node-local list.
    pub fn uses_local_endpoints(self) -> bool {
        self.internal_local || self.external_local
    }

    /// The chains a port with these policies gets, given whether it has usable
    /// endpoints anywhere (`has_endpoints`), and whether the cluster and local lists are
    /// non-empty: `syncProxyRules`' choice, the same in every mode.
    pub fn chains(self, has_endpoints: bool, has_cluster: bool, has_local: bool) -> ChainChoice {
        ChainChoice {
            has_endpoints,
            internal_local: self.internal_local,
            has_internal: has_endpoints && (!self.internal_local || has_local),
            external_local: self.external_local,
            has_external: has_endpoints && (!self.external_local || has_local),
            uses_cluster_chain: has_cluster && self.uses_cluster_endpoints(),
            uses_local_chain: has_local && self.uses_local_endpoints(),
            uses_ext_chain: has_endpoints && self.externally_accessible,
        }
    }
}

/// Which chains one service port's traffic goes through on one node, in the terms of the
/// iptables mode (the nftables mode has the same chains under other names; IPVS the same
/// choice of real servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainChoice {
    /// Usable endpoints exist somewhere: without them traffic is rejected.
    pub has_endpoints: bool,
    /// Cluster-IP traffic goes to the local chain (SVL) rather than the cluster one (SVC).
    pub internal_local: bool,
    /// ...and that chain has endpoints (else: REJECT without any, DROP without local).
    pub has_internal: bool,
    /// Traffic from outside goes on from KUBE-EXT to the local chain rather than SVC.
    pub external_local: bool,
    /// ...and that chain has endpoints.
    pub has_external: bool,
    /// The cluster chain (SVC) exists.
    pub uses_cluster_chain: bool,
    /// The local chain (SVL) exists.
    pub uses_local_chain: bool,
    /// The external chain (EXT) exists.
    pub uses_ext_chain: bool,
}

/// The endpoints a connection to the port's ClusterIP, made on node `node` (by one of
/// its pods or by the node itself), can be DNATed to: the internal list of
/// [`categorize_endpoints`]. Empty means the connection is refused (no endpoints:
/// REJECT) or dropped (Local without local endpoints: DROP); see [`ClusterIpFate`].
/// In kube-proxy's order (by `ip:port` text).
pub fn cluster_ip_backends<'a>(port: &'a ServicePort, node: &str) -> Vec<&'a Endpoint> {
    categorize_endpoints(port, node).internal_endpoints()
}

/// What happens to a new connection to a ClusterIP port, seen from one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterIpFate<'a> {
    /// DNATed to one of these, chosen at random (or pinned by ClientIP affinity).
    Backends(Vec<&'a Endpoint>),
    /// No usable endpoint anywhere: filter KUBE-SERVICES REJECTs it
    /// (`icmp-port-unreachable`, sent by the node).
    Rejected,
    /// `internalTrafficPolicy: Local` and no usable endpoint on this node: filter
    /// KUBE-SERVICES DROPs it (the client waits out its deadline).
    DroppedNoLocal,
}

/// The fate of a connection to `port`'s ClusterIP made on `node`.
pub fn cluster_ip_fate<'a>(port: &'a ServicePort, node: &str) -> ClusterIpFate<'a> {
    let cat = categorize_endpoints(port, node);
    let chains = cat.chains();
    if chains.has_internal {
        ClusterIpFate::Backends(cat.internal_endpoints())
    } else if chains.has_endpoints && chains.internal_local {
        ClusterIpFate::DroppedNoLocal
    } else {
        ClusterIpFate::Rejected
    }
}

//! The address and name plan of a virtual cluster: which namespace is called what, which
//! node gets which underlay address and pod subnet. One place renders every name, so the
//! harness, `clean` and the snapshots agree, and the same scenario always gives the same
//! plan apart from the run's unique prefix.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::cluster::{ClusterConfig, NetworkMode};
use crate::objects::PodRef;

/// Every object a run creates starts with `kl` + six characters of `[0-9a-z]` + `-`.
pub const PREFIX_TAG: &str = "kl";
const PREFIX_RANDOM_LEN: usize = 6;

/// The underlay network on the fabric bridge: node i has `.10+i`.
pub const UNDERLAY: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(192, 168, 200, 0), 24) {
    Ok(n) => n,
    Err(_) => panic!("constant"),
};
const UNDERLAY_HOST_OFFSET: u32 = 10;
/// The largest node count the underlay /24 holds after the offset.
pub const MAX_NODES: usize = 240;

/// Whether `name` is a run prefix (`kl` + 6 of `[0-9a-z]`), without the trailing `-`.
pub fn is_prefix(name: &str) -> bool {
    name.len() == PREFIX_TAG.len() + PREFIX_RANDOM_LEN
        && name.starts_with(PREFIX_TAG)
        && name[PREFIX_TAG.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// The run prefix a namespace name carries, if it is one of ours.
pub fn prefix_of(netns_name: &str) -> Option<&str> {
    let (prefix, rest) = netns_name.split_once('-')?;
    (is_prefix(prefix) && !rest.is_empty()).then_some(prefix)
}

/// Builds a prefix from a number (the harness feeds it pid and time).
pub fn prefix_from_seed(mut seed: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = String::from(PREFIX_TAG);
    for _ in 0..PREFIX_RANDOM_LEN {
        s.push(ALPHABET[(seed % 36) as usize] as char);
        seed /= 36;
    }
    s
}

/// Why a cluster cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "podCIDR {cidr} has room for {room} node subnets of /24, but the cluster has {nodes} nodes"
    )]
    PodCidrTooSmall {
        cidr: Ipv4Net,
        room: usize,
        nodes: usize,
    },
    #[error("the cluster has {0} nodes; the underlay holds at most {MAX_NODES}")]
    TooManyNodes(usize),
}

/// One node's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub name: String,
    /// 1-based position in the cluster.
    pub index: usize,
    /// The node's network namespace.
    pub netns: String,
    /// The node's address on the underlay (its `eth0`).
    pub underlay_ip: Ipv4Addr,
    /// The MAC of the node's `eth0`, fixed so snapshots and ARP tables are stable.
    pub underlay_mac: [u8; 6],
    /// The fabric-side veth of this node's underlay link.
    pub fabric_port: String,
    /// The node's pod subnet (host-local's range; the bridge takes its first address).
    pub pod_subnet: Ipv4Net,
    /// The bridge (`cni0`) address, the pods' default gateway.
    pub gateway: Ipv4Addr,
}

/// The router in front of the nodes: on the underlay at `.1`, with the external hosts
/// behind it (issue: ipBlock lessons need real hosts outside the cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPlan {
    pub netns: String,
    pub underlay_ip: Ipv4Addr,
    pub underlay_mac: [u8; 6],
    /// The fabric-side veth of the router's underlay link.
    pub fabric_port: String,
}

/// One host outside the cluster, wired to the router by its own veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    pub name: String,
    pub netns: String,
    pub address: Ipv4Addr,
    /// The router-side veth towards this host.
    pub router_port: String,
}

/// The address every router port towards a host carries (each host's gateway), so a
/// host needs no subnet of its own: it has its address as a /32 and a default route
/// to this link-local next hop.
pub const ROUTER_HOST_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// A node's VXLAN tunnel endpoint (VTEP) in `vxlan` mode, flannel style: one device per
/// node, a fixed MAC so every other node can hold a static FDB and ARP entry for it, and
/// the network address of the node's pod subnet as a /32 on the device, which the other
/// nodes use as the next hop (`10.244.2.0/24 via 10.244.2.0 dev vxlan.1 onlink`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepPlan {
    /// The device's name (flannel calls it `flannel.1`: `.VNI`).
    pub device: String,
    pub vni: u32,
    /// The UDP destination port (IANA's VXLAN port).
    pub port: u16,
    /// The device's MAC: `0e:6b:6c:00:HI:LO` with the node's index.
    pub mac: [u8; 6],
    /// The outer source address: the node's underlay address.
    pub local: Ipv4Addr,
    /// The device's address (a /32): the network address of the node's pod subnet.
    pub address: Ipv4Addr,
    /// The device's MTU: the underlay's 1500 minus the 50 bytes of outer Ethernet, IPv4,
    /// UDP and VXLAN headers.
    pub mtu: u32,
}

/// The VXLAN network identifier every node uses (flannel's default).
pub const VXLAN_VNI: u32 = 1;
/// IANA's VXLAN port (the kernel's own default is the pre-standard 8472).
pub const VXLAN_PORT: u16 = 4789;
/// The underlay's MTU (veths default to 1500).
pub const UNDERLAY_MTU: u32 = 1500;
/// Outer Ethernet (14) + IPv4 (20) + UDP (8) + VXLAN (8) header bytes.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Names and addresses of one run of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The run's unique prefix (`kl` + 6 characters).
    pub prefix: String,
    /// How nodes reach each other's pod subnets (`cluster.network`).
    pub network: NetworkMode,
    pub nodes: Vec<NodePlan>,
    pub pod_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    /// Present when the scenario declares hosts outside the cluster.
    pub router: Option<RouterPlan>,
    pub hosts: Vec<HostPlan>,
    /// The CNI chain (`cluster.cni`): the harness writes each node's list from it.
    pub cni: crate::cluster::CniConfig,
}

impl Plan {
    pub fn new(prefix: &str, cluster: &ClusterConfig) -> Result<Plan, PlanError> {
        let n = cluster.nodes.len();
        if n > MAX_NODES {
            return Err(PlanError::TooManyNodes(n));
        }
        let nodes = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, name)| node_plan(prefix, cluster.pod_cidr, i + 1, name, n))
            .collect::<Result<Vec<_>, _>>()?;
        let router = (!cluster.external_hosts.is_empty()).then(|| RouterPlan {
            netns: format!("{prefix}-router"),
            underlay_ip: Ipv4Addr::from(u32::from(UNDERLAY.network()) + 1),
            underlay_mac: [0x02, 0x6b, 0x6c, 0xff, 0x00, 0x01],
            fabric_port: "ul0".into(),
        });
        let hosts = cluster
            .external_hosts
            .iter()
            .enumerate()
            .map(|(i, h)| HostPlan {
                name: h.name.clone(),
                netns: format!("{prefix}-host-{}", h.name),
                address: h.address,
                router_port: format!("h{}", i + 1),
            })
            .collect();
        Ok(Plan {
            router,
            hosts,
            prefix: prefix.to_string(),
            network: cluster.network,
            nodes,
            pod_cidr: cluster.pod_cidr.trunc(),
            service_cidr: cluster.service_cidr.trunc(),
            cni: cluster.cni.clone(),
        })
    }

    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Plans a node that joins the running cluster (a step's `nodeJoin`): it gets the
    /// next index, and with it the namespace, underlay address, MAC, fabric port, pod
    /// subnet and VTEP it would have had if the scenario had listed it last. Nodes never
    /// leave, so the same joins in the same order always give the same plan. A node the
    /// plan already has is returned as it is.
    pub fn join_node(&mut self, name: &str) -> Result<&NodePlan, PlanError> {
        if let Some(i) = self.nodes.iter().position(|n| n.name == name) {
            return Ok(&self.nodes[i]);
        }
        let index = self.nodes.len() + 1;
        let node = node_plan(&self.prefix, self.pod_cidr, index, name, index)?;
        self.nodes.push(node);
        Ok(&self.nodes[index - 1])
    }

    pub fn host(&self, name: &str) -> Option<&HostPlan> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The node's VXLAN tunnel endpoint, in `vxlan` mode (`None` in `host-gw` mode).
    pub fn vtep(&self, node: &NodePlan) -> Option<VtepPlan> {
        match self.network {
            NetworkMode::HostGw => None,
            NetworkMode::Vxlan => Some(VtepPlan {
                device: format!("vxlan.{VXLAN_VNI}"),
                vni: VXLAN_VNI,
                port: VXLAN_PORT,
                mac: [
                    0x0e,
                    0x6b,
                    0x6c,
                    0x00,
                    (node.index >> 8) as u8,
                    node.index as u8,
                ],
                local: node.underlay_ip,
                address: node.pod_subnet.network(),
                mtu: UNDERLAY_MTU - VXLAN_OVERHEAD,
            }),
        }
    }

    /// The MTU pods get: the tunnel's in `vxlan` mode, so pods never send what the
    /// tunnel must fragment or refuse; `None` (the plugin's default, 1500) in `host-gw`.
    pub fn pod_mtu(&self) -> Option<u32> {
        self.nodes.first().and_then(|n| self.vtep(n)).map(|v| v.mtu)
    }

    /// The address a node's own traffic to a pod carries as its source: its bridge
    /// address for its own pods, its VTEP address for pods behind the tunnel (the kernel
    /// picks the outgoing device's address), and its underlay address otherwise.
    pub fn node_source_for(&self, node: &NodePlan, dst: Ipv4Addr) -> Ipv4Addr {
        if node.pod_subnet.contains(&dst) {
            return node.gateway;
        }
        match self.vtep(node) {
            Some(v) if self.nodes.iter().any(|o| o.pod_subnet.contains(&dst)) => v.address,
            _ => node.underlay_ip,
        }
    }

    /// The fabric (underlay) namespace.
    pub fn fabric_netns(&self) -> String {
        format!("{}-fabric", self.prefix)
    }

    /// The pod's namespace. Kubernetes namespace names have no dots, so `ns.pod` is
    /// unambiguous.
    pub fn pod_netns(&self, pod: &PodRef) -> String {
        format!("{}-pod-{}.{}", self.prefix, pod.namespace, pod.name)
    }

    /// The CNI container id for a pod (CNI allows `[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
    pub fn container_id(&self, pod: &PodRef) -> String {
        format!("{}-{}.{}", self.prefix, pod.namespace, pod.name)
    }

    /// The directory that holds this run's CNI configs, IPAM state and result cache.
    pub fn state_dir(&self) -> String {
        format!("{}/{}", STATE_ROOT, self.prefix)
    }
}

/// Node `index` (1-based) of a cluster of `count` nodes: the `index`-th /24 of the pod
/// CIDR (subnet 0 is left unused so that node i has subnet i), `.10+index` on the
/// underlay, a MAC and fabric port numbered after it.
fn node_plan(
    prefix: &str,
    pod_cidr: Ipv4Net,
    index: usize,
    name: &str,
    count: usize,
) -> Result<NodePlan, PlanError> {
    if index > MAX_NODES {
        return Err(PlanError::TooManyNodes(count.max(index)));
    }
    let room = if pod_cidr.prefix_len() > 24 {
        0
    } else {
        (1usize << (24 - pod_cidr.prefix_len())).saturating_sub(1)
    };
    let too_small = || PlanError::PodCidrTooSmall {
        cidr: pod_cidr,
        room,
        nodes: count.max(index),
    };
    if room < index {
        return Err(too_small());
    }
    let subnet = pod_cidr
        .trunc()
        .subnets(24)
        .map_err(|_| too_small())?
        .nth(index)
        .ok_or_else(too_small)?;
    let host = u32::from(UNDERLAY.network()) + UNDERLAY_HOST_OFFSET + index as u32;
    Ok(NodePlan {
        name: name.to_string(),
        index,
        netns: format!("{prefix}-node-{name}"),
        underlay_ip: Ipv4Addr::from(host),
        underlay_mac: [0x02, 0x6b, 0x6c, 0x00, (index >> 8) as u8, index as u8],
        fabric_port: format!("ul{index}"),
        gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
        pod_subnet: subnet,
    })
}

/// Where runs keep their files (under /run: gone after a reboot, like the namespaces).
pub const STATE_ROOT: &str = "/run/knetlab";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{DenyStyle, NetworkMode, PolicyEngineKind, ProxyKind};

    fn cluster(nodes: usize, pod_cidr: &str) -> ClusterConfig {
        ClusterConfig {
            nodes: (1..=nodes).map(|i| format!("n{i}")).collect(),
            pod_cidr: pod_cidr.parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            network: NetworkMode::HostGw,
            policy: PolicyEngineKind::Iptables,
            deny: DenyStyle::Reject,
            proxy: ProxyKind::Iptables,
            external_hosts: vec![],
            cni: Default::default(),
        }
    }

    #[test]
    fn node_i_gets_the_ith_slash_24() {
        let plan = Plan::new("kl000000", &cluster(2, "10.244.0.0/16")).unwrap();
        assert_eq!(plan.nodes[0].pod_subnet.to_string(), "10.244.1.0/24");
        assert_eq!(plan.nodes[1].pod_subnet.to_string(), "10.244.2.0/24");
        assert_eq!(plan.nodes[1].gateway.to_string(), "10.244.2.1");
        assert_eq!(plan.nodes[0].underlay_ip.to_string(), "192.168.200.11");
        assert_eq!(plan.nodes[0].netns, "kl000000-node-n1");
        assert_eq!(plan.pod_netns(&PodRef::new("x", "a")), "kl000000-pod-x.a");
    }

    #[test]
    fn too_small_pod_cidr_is_an_error() {
        let err = Plan::new("kl000000", &cluster(2, "10.244.0.0/23")).unwrap_err();
        assert_eq!(
            err,
            PlanError::PodCidrTooSmall {
                cidr: "10.244.0.0/23".parse().unwrap(),
                room: 1,
                nodes: 2
            }
        );
        assert!(Plan::new("kl000000", &cluster(1, "10.244.0.0/25")).is_err());
    }

    #[test]
    fn vxlan_mode_plans_a_vtep_per_node() {
        let mut c = cluster(2, "10.244.0.0/16");
        let hostgw = Plan::new("kl000000", &c).unwrap();
        assert_eq!(hostgw.network, NetworkMode::HostGw);
        assert_eq!(hostgw.vtep(&hostgw.nodes[0]), None);
        assert_eq!(hostgw.pod_mtu(), None);
        c.network = NetworkMode::Vxlan;
        let plan = Plan::new("kl000000", &c).unwrap();
        assert_eq!(plan.network, NetworkMode::Vxlan);
        let v2 = plan.vtep(&plan.nodes[1]).unwrap();
        assert_eq!(v2.device, "vxlan.1");
        assert_eq!((v2.vni, v2.port, v2.mtu), (1, 4789, 1450));
        assert_eq!(v2.mac, [0x0e, 0x6b, 0x6c, 0, 0, 2]);
        assert_eq!(v2.local.to_string(), "192.168.200.12");
        assert_eq!(v2.address.to_string(), "10.244.2.0");
        assert_ne!(plan.vtep(&plan.nodes[0]).unwrap().mac, v2.mac);
        assert_eq!(plan.pod_mtu(), Some(1450));
        let n1 = &plan.nodes[0];
        let src = |d: &str| plan.node_source_for(n1, d.parse().unwrap()).to_string();
        assert_eq!(src("10.244.1.7"), "10.244.1.1");
        assert_eq!(src("10.244.2.7"), "10.244.1.0");
        assert_eq!(src("192.168.200.12"), "192.168.200.11");
        let src = |d: &str| {
            hostgw
                .node_source_for(&hostgw.nodes[0], d.parse().unwrap())
                .to_string()
        };
        assert_eq!(src("10.244.2.7"), "192.168.200.11");
    }

    #[test]
    fn a_joining_node_gets_what_it_would_have_had_if_listed() {
        let mut c = cluster(2, "10.244.0.0/16");
        c.network = NetworkMode::Vxlan;
        let mut joined = Plan::new("kl000000", &c).unwrap();
        let n3 = joined.join_node("n3").unwrap().clone();
        c.nodes.push("n3".into());
        let listed = Plan::new("kl000000", &c).unwrap();
        assert_eq!(joined, listed);
        assert_eq!(n3.index, 3);
        assert_eq!(n3.netns, "kl000000-node-n3");
        assert_eq!(n3.pod_subnet.to_string(), "10.244.3.0/24");
        assert_eq!(n3.underlay_ip.to_string(), "192.168.200.13");
        assert_eq!(n3.fabric_port, "ul3");
        assert_eq!(joined.vtep(&n3).unwrap().mac, [0x0e, 0x6b, 0x6c, 0, 0, 3]);
        // Joining again changes nothing.
        joined.join_node("n3").unwrap();
        assert_eq!(joined, listed);
        // No room left: a /23 holds one node subnet.
        let mut small = Plan::new("kl000000", &cluster(1, "10.244.0.0/23")).unwrap();
        assert_eq!(
            small.join_node("n2").unwrap_err(),
            PlanError::PodCidrTooSmall {
                cidr: "10.244.0.0/23".parse().unwrap(),
                room: 1,
                nodes: 2
            }
        );
        assert_eq!(small.nodes.len(), 1);
    }

    #[test]
    fn prefixes_are_recognised() {
        let p = prefix_from_seed(123_456_789);
        assert!(is_prefix(&p), "{p}");
        assert_eq!(prefix_of(&format!("{p}-fabric")), Some(p.as_str()));
        assert_eq!(prefix_of("klabc-fabric"), None);
        assert_eq!(prefix_of("other-ns"), None);
        assert_eq!(prefix_of(&format!("{p}-")), None);
    }
}

//! What happens to a Service between `kubectl apply` and the first proxy sync: the API
//! server fills in defaults and allocates a cluster IP and node ports, and a
//! load-balancer controller (MetalLB, a cloud's) writes an address into the status.
//!
//! Real clusters pick cluster IPs and node ports at random; knetlab picks them by fixed
//! rules, so every run of a scenario (and every snapshot) shows the same addresses:
//!
//! - **cluster IP**: the lowest free address of `serviceCIDR` from the 10th host address
//!   upward (`10.96.0.10`, `10.96.0.11`, ... for the default `10.96.0.0/12`), then the
//!   2nd to 9th; the 1st (`10.96.0.1`) belongs to the `default/kubernetes` Service and is
//!   never handed out, nor are the network and broadcast addresses;
//! - **node ports**: the lowest free port of 30000-32767; ports of one Service with the
//!   same `port` number (53/TCP and 53/UDP, say) share one node port, as the API server
//!   does; node ports are unique across Services whatever their protocol;
//! - **health-check node port** (LoadBalancer with `externalTrafficPolicy: Local`): the
//!   lowest free node port after the Service's own;
//! - **load-balancer address**: the lowest address of `cluster.loadBalancerPool` no other
//!   Service holds (the pool's network and broadcast addresses are skipped for pools of
//!   /30 and larger). `spec.loadBalancerIP` asks for one address of the pool, and a
//!   manifest may write `status.loadBalancer.ingress[].ip` itself (an address an outside
//!   controller assigned). Without a pool the address stays pending, as on a cluster
//!   with no load-balancer controller (the ClusterIP and NodePorts still work). Two Services may ask for the same address if their
//!   protocol/port pairs do not overlap (MetalLB's shared IPs): the way two services of
//!   a data-centre gateway share one public address.
//!
//! "Free" is decided against the Services that exist when the Service is created, so
//! allocation follows creation order. An update keeps what the Service had (the API
//! server's `patchAllocatedValues`): its cluster IP (which cannot change), its node ports
//! by port name, its health-check port and its load-balancer address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServiceSpec, ServiceStatus,
};
use serde_json::{Value, json};

use super::validate::{NODE_PORT_MAX, NODE_PORT_MIN};
use super::{
    FieldError, ServiceType, load_balancer_ips, node_ports, port_protocol, service_key,
    service_type, written_cluster_ip,
};
use crate::cluster::ClusterConfig;
use crate::objects::service::defaults;
use crate::plan;
use crate::protocol::PortProto;

/// The host number (offset in `serviceCIDR`) of the `default/kubernetes` Service.
pub const KUBERNETES_SERVICE_HOST: u32 = 1;

/// The host number dynamic allocation starts from.
pub const FIRST_DYNAMIC_HOST: u32 = 10;

/// The address ranges allocation works with.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRanges {
    pub service_cidr: Ipv4Net,
    /// `cluster.loadBalancerPool`; without it, LoadBalancer services need an address in
    /// their status.
    pub load_balancer_pool: Option<Ipv4Net>,
    /// Ranges no load-balancer address may come from, with their names for messages:
    /// the podCIDR, the underlay, the router's link-local range, the external hosts'
    /// addresses, and addresses that are never unicast.
    pub reserved: Vec<(Ipv4Net, String)>,
}

impl ServiceRanges {
    pub fn new(cluster: &ClusterConfig, load_balancer_pool: Option<Ipv4Net>) -> Self {
        let net = |s: &str| s.parse::<Ipv4Net>().expect("constant CIDR");
        let mut reserved = vec![
            (
                cluster.pod_cidr,
                format!("the podCIDR {}", cluster.pod_cidr),
            ),
            (
                plan::UNDERLAY,
                format!("the nodes' underlay network {}", plan::UNDERLAY),
            ),
            (
                net("169.254.0.0/16"),
                "the link-local range the router uses 169.254.0.0/16".into(),
            ),
            (
                net("0.0.0.0/8"),
                "the range 0.0.0.0/8 (\"this network\")".into(),
            ),
            (net("127.0.0.0/8"), "the loopback range 127.0.0.0/8".into()),
            (net("224.0.0.0/4"), "the multicast range 224.0.0.0/4".into()),
            (net("240.0.0.0/4"), "the reserved range 240.0.0.0/4".into()),
        ];
        for h in &cluster.external_hosts {
            reserved.push((
                Ipv4Net::from(h.address),
                format!("external host {}'s address {}", h.name, h.address),
            ));
        }
        Self {
            service_cidr: cluster.service_cidr,
            load_balancer_pool,
            reserved,
        }
    }

    /// What an address or range overlaps that it must not: the serviceCIDR or a
    /// reserved range.
    pub fn conflict(&self, net: Ipv4Net) -> Option<String> {
        let overlaps =
            |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
        if overlaps(&self.service_cidr, &net) {
            return Some(format!("the serviceCIDR {}", self.service_cidr));
        }
        self.reserved
            .iter()
            .find(|(r, _)| overlaps(r, &net))
            .map(|(_, what)| what.clone())
    }
}

/// The protocol/port pairs a Service serves.
fn served(svc: &Service) -> BTreeSet<PortProto> {
    super::ports(svc)
        .iter()
        .filter_map(|p| {
            Some(PortProto::new(
                port_protocol(p),
                u16::try_from(p.port).ok()?,
            ))
        })
        .collect()
}

fn owner(key: &(String, String)) -> String {
    format!("{}/{}", key.0, key.1)
}

/// Defaults `svc` and allocates what it lacks, given the Services that exist now
/// (`services`, keyed `(namespace, name)`; the Service's own old version, if this is an
/// update, is among them). Returns the Service as the API server would store it after
/// the load-balancer controller has run, or the first problem, at its field.
pub fn allocate(
    services: &BTreeMap<(String, String), Service>,
    ranges: &ServiceRanges,
    svc: Service,
) -> Result<Service, FieldError> {
    let mut svc = svc;
    defaults(&mut svc);
    let key = service_key(&svc);
    let previous = services.get(&key);
    let others: Vec<(&(String, String), &Service)> =
        services.iter().filter(|(k, _)| **k != key).collect();

    let ip = allocate_cluster_ip(&svc, previous, &others, ranges)?;
    let (nodes, health) = allocate_node_ports(&svc, previous, &others)?;
    let lb = allocate_load_balancer(&svc, previous, &others, ranges)?;

    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    let written = ip.map_or_else(|| "None".to_string(), |ip| ip.to_string());
    spec.cluster_ip = Some(written.clone());
    spec.cluster_ips = Some(vec![written]);
    for (p, n) in spec.ports.iter_mut().flatten().zip(nodes) {
        p.node_port = n.map(i32::from);
    }
    spec.health_check_node_port = health.map(i32::from);
    match lb {
        LbChoice::NotLoadBalancer | LbChoice::Pending => {
            // Status is the controllers' to write: nothing of a load balancer is left.
            if let Some(s) = svc.status.as_mut() {
                s.load_balancer = None;
            }
        }
        LbChoice::AsWritten => {}
        LbChoice::Assign(ips) => {
            let status = svc.status.get_or_insert_with(ServiceStatus::default);
            status.load_balancer = Some(LoadBalancerStatus {
                ingress: Some(
                    ips.iter()
                        .map(|ip| LoadBalancerIngress {
                            ip: Some(ip.to_string()),
                            ip_mode: Some("VIP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            });
        }
    }
    Ok(svc)
}

/// `None` = headless.
fn allocate_cluster_ip(
    svc: &Service,
    previous: Option<&Service>,
    others: &[(&(String, String), &Service)],
    ranges: &ServiceRanges,
) -> Result<Option<Ipv4Addr>, FieldError> {
    let path = if svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some()
    {
        "spec.clusterIP"
    } else {
        "spec.clusterIPs[0]"
    };
    let before: Option<Option<Ipv4Addr>> = previous.map(super::cluster_ip);
    let immutable = |had: Option<Ipv4Addr>| {
        let had = had.map_or("None (headless)".to_string(), |ip| ip.to_string());
        FieldError::value(
            path,
            format!(
                "spec.clusterIP cannot change: this Service already has cluster IP {had}; delete it and create it again in a later step"
            ),
        )
    };
    let cidr = ranges.service_cidr;
    match written_cluster_ip(svc) {
        Some("None") => match before {
            Some(Some(ip)) => Err(immutable(Some(ip))),
            _ => Ok(None),
        },
        Some(text) => {
            let ip = super::validate::ipv4(text).map_err(|m| FieldError::value(path, m))?;
            if let Some(had) = before
                && had != Some(ip)
            {
                return Err(immutable(had));
            }
            if !cidr.contains(&ip) {
                return Err(FieldError::value(
                    path,
                    format!("cluster IP {ip} is not inside the serviceCIDR {cidr}"),
                ));
            }
            if ip == cidr.network() || ip == cidr.broadcast() {
                return Err(FieldError::value(
                    path,
                    format!("{ip} is the serviceCIDR's network or broadcast address"),
                ));
            }
            if ip == host(cidr, KUBERNETES_SERVICE_HOST) {
                return Err(FieldError::value(
                    path,
                    format!("cluster IP {ip} belongs to the default/kubernetes Service"),
                ));
            }
            if let Some((k, _)) = others
                .iter()
                .find(|(_, s)| super::cluster_ip(s) == Some(ip))
            {
                return Err(FieldError::value(
                    path,
                    format!("cluster IP {ip} is already Service {}'s", owner(k)),
                ));
            }
            Ok(Some(ip))
        }
        None => match before {
            // An update without clusterIP keeps what the Service had.
            Some(had) => Ok(had),
            None => {
                let used: BTreeSet<Ipv4Addr> = others
                    .iter()
                    .filter_map(|(_, s)| super::cluster_ip(s))
                    .collect();
                let size = 1u64 << (32 - cidr.prefix_len());
                let last = u32::try_from(size.saturating_sub(1)).unwrap_or(u32::MAX);
                (FIRST_DYNAMIC_HOST..last)
                    .chain(KUBERNETES_SERVICE_HOST + 1..FIRST_DYNAMIC_HOST.min(last))
                    .map(|h| host(cidr, h))
                    .find(|ip| !used.contains(ip))
                    .map(Some)
                    .ok_or_else(|| {
                        FieldError::key(
                            "spec",
                            format!("the serviceCIDR {cidr} has no free cluster IP left"),
                        )
                    })
            }
        },
    }
}

fn host(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(n))
}

/// The node port of each port (in order) and the health-check node port.
#[allow(clippy::type_complexity)]
fn allocate_node_ports(
    svc: &Service,
    previous: Option<&Service>,
    others: &[(&(String, String), &Service)],
) -> Result<(Vec<Option<u16>>, Option<u16>), FieldError> {
    let ty = service_type(svc);
    let spec = svc.spec.as_ref();
    let ports = super::ports(svc);
    let mut taken: BTreeMap<u16, String> = BTreeMap::new();
    for (k, s) in others {
        for n in node_ports(s) {
            taken.entry(n).or_insert_with(|| owner(k));
        }
    }
    let needs = ty == ServiceType::NodePort
        || (ty == ServiceType::LoadBalancer
            && spec.and_then(|s| s.allocate_load_balancer_node_ports) != Some(false));
    // The ports this Service asks for, checked first so that no automatic choice takes
    // one a later port names.
    let mut mine: BTreeSet<u16> = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        if let Some(n) = p.node_port.and_then(|n| u16::try_from(n).ok()) {
            if let Some(o) = taken.get(&n) {
                return Err(FieldError::value(
                    format!("spec.ports[{i}].nodePort"),
                    format!("node port {n} is already used by Service {o}"),
                ));
            }
            mine.insert(n);
        }
    }
    let hc_needs = ty == ServiceType::LoadBalancer && super::external_policy_local(svc);
    let hc_given = spec
        .and_then(|s| s.health_check_node_port)
        .and_then(|n| u16::try_from(n).ok());
    if let Some(n) = hc_given {
        if let Some(o) = taken.get(&n) {
            return Err(FieldError::value(
                "spec.healthCheckNodePort",
                format!("node port {n} is already used by Service {o}"),
            ));
        }
        if mine.contains(&n) {
            return Err(FieldError::value(
                "spec.healthCheckNodePort",
                format!("node port {n} is already one of this Service's ports"),
            ));
        }
    }
    let prev_by_name: BTreeMap<&str, u16> = previous
        .into_iter()
        .flat_map(super::ports)
        .filter_map(|p| Some((super::port_name(p), u16::try_from(p.node_port?).ok()?)))
        .collect();
    // The ports the old version holds are released only once the update is done, so a
    // new choice does not take them (asking for one, or keeping it, is fine).
    let held: BTreeSet<u16> = previous
        .map(node_ports)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let free = |mine: &BTreeSet<u16>| {
        (NODE_PORT_MIN..=NODE_PORT_MAX)
            .filter_map(|n| u16::try_from(n).ok())
            .find(|n| {
                !taken.contains_key(n)
                    && !mine.contains(n)
                    && !held.contains(n)
                    && Some(*n) != hc_given
            })
    };
    let exhausted = |path: String| {
        FieldError::key(
            path,
            format!("no node port is free in {NODE_PORT_MIN}-{NODE_PORT_MAX}"),
        )
    };
    let mut out: Vec<Option<u16>> = ports
        .iter()
        .map(|p| p.node_port.and_then(|n| u16::try_from(n).ok()))
        .collect();
    if needs {
        for i in 0..ports.len() {
            if out[i].is_some() {
                continue;
            }
            let p = &ports[i];
            let same_number = || {
                ports
                    .iter()
                    .zip(&out)
                    .find(|(q, n)| q.port == p.port && n.is_some())
                    .and_then(|(_, n)| *n)
            };
            let kept = prev_by_name
                .get(super::port_name(p))
                .copied()
                .filter(|n| !mine.contains(n) && !taken.contains_key(n) && Some(*n) != hc_given);
            let n = match kept.or_else(same_number) {
                Some(n) => n,
                None => free(&mine).ok_or_else(|| exhausted(format!("spec.ports[{i}]")))?,
            };
            mine.insert(n);
            out[i] = Some(n);
        }
    }
    let health = if hc_needs {
        match hc_given {
            Some(n) => Some(n),
            None => {
                let kept = previous
                    .and_then(|p| p.spec.as_ref()?.health_check_node_port)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| !mine.contains(n) && !taken.contains_key(n));
                match kept {
                    Some(n) => Some(n),
                    None => Some(free(&mine).ok_or_else(|| exhausted("spec".into()))?),
                }
            }
        }
    } else {
        None
    };
    Ok((out, health))
}

enum LbChoice {
    NotLoadBalancer,
    /// No load-balancer controller (no pool): the address stays pending, as on a
    /// cluster without one; the ClusterIP and NodePorts work.
    Pending,
    /// The manifest wrote its status itself.
    AsWritten,
    Assign(Vec<Ipv4Addr>),
}

fn allocate_load_balancer(
    svc: &Service,
    previous: Option<&Service>,
    others: &[(&(String, String), &Service)],
    ranges: &ServiceRanges,
) -> Result<LbChoice, FieldError> {
    if service_type(svc) != ServiceType::LoadBalancer {
        return Ok(LbChoice::NotLoadBalancer);
    }
    let mine = served(svc);
    // May `ip` be this Service's, given the other Services' addresses and ports?
    let shareable = |path: &str, ip: Ipv4Addr| -> Result<(), FieldError> {
        for (k, s) in others {
            if !load_balancer_ips(s).contains(&ip) {
                continue;
            }
            if let Some(clash) = served(s).intersection(&mine).next() {
                return Err(FieldError::value(
                    path,
                    format!(
                        "load-balancer address {ip} already serves {clash} for Service {}; two Services may share an address only on different ports",
                        owner(k)
                    ),
                ));
            }
        }
        Ok(())
    };
    let pool = ranges.load_balancer_pool;
    let requested = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .map(super::validate::ipv4)
        .transpose()
        .map_err(|m| FieldError::value("spec.loadBalancerIP", m))?;
    let written = load_balancer_ips(svc);
    if !written.is_empty() {
        for (i, ip) in written.iter().enumerate() {
            let path = format!("status.loadBalancer.ingress[{i}].ip");
            if let Some(what) = ranges.conflict(Ipv4Net::from(*ip)) {
                return Err(FieldError::value(
                    &path,
                    format!("load-balancer address {ip} is inside {what}"),
                ));
            }
            shareable(&path, *ip)?;
        }
        if let Some(r) = requested
            && !written.contains(&r)
        {
            return Err(FieldError::value(
                "spec.loadBalancerIP",
                format!(
                    "spec.loadBalancerIP {r} is not among the addresses status.loadBalancer gives ({})",
                    written
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        return Ok(LbChoice::AsWritten);
    }
    if let Some(ip) = requested {
        let path = "spec.loadBalancerIP";
        match pool {
            None => return Ok(LbChoice::Pending),
            Some(pool) if !pool.contains(&ip) => {
                return Err(FieldError::value(
                    path,
                    format!("{ip} is not inside cluster.loadBalancerPool {pool}"),
                ));
            }
            Some(_) => {}
        }
        shareable(path, ip)?;
        return Ok(LbChoice::Assign(vec![ip]));
    }
    // An update keeps the address the controller gave before.
    if let Some(p) = previous
        && service_type(p) == ServiceType::LoadBalancer
    {
        let had = load_balancer_ips(p);
        if !had.is_empty() {
            return Ok(LbChoice::Assign(had));
        }
    }
    let Some(pool) = pool else {
        return Ok(LbChoice::Pending);
    };
    let used: BTreeSet<Ipv4Addr> = others
        .iter()
        .flat_map(|(_, s)| load_balancer_ips(s))
        .collect();
    let skip_ends = pool.prefix_len() <= 30;
    pool.hosts()
        .chain(
            [pool.network(), pool.broadcast()]
                .into_iter()
                .filter(|_| !skip_ends),
        )
        .find(|ip| !used.contains(ip))
        .map(|ip| LbChoice::Assign(vec![ip]))
        .ok_or_else(|| {
            FieldError::value(
                "spec.type",
                format!("cluster.loadBalancerPool {pool} has no free address left"),
            )
        })
}

/// Writes what [`allocate`] chose into the manifest as written (its JSON), leaving
/// everything else, placeholders included, untouched: `spec.clusterIP`,
/// `spec.clusterIPs`, the `nodePort`s and `healthCheckNodePort` it lacked, and
/// `status.loadBalancer.ingress` unless the manifest wrote it. Decoding the result later
/// gives the allocated Service without allocating again.
pub fn record(value: &mut Value, allocated: &Service) {
    let Some(root) = value.as_object_mut() else {
        return;
    };
    let Some(spec) = &allocated.spec else {
        return;
    };
    let v_spec = root.entry("spec").or_insert_with(|| json!({}));
    if !v_spec.is_object() {
        *v_spec = json!({});
    }
    let v_spec = v_spec.as_object_mut().expect("made an object");
    if let Some(ip) = &spec.cluster_ip {
        v_spec.insert("clusterIP".into(), json!(ip));
        v_spec.insert("clusterIPs".into(), json!([ip]));
    }
    if let Some(Value::Array(v_ports)) = v_spec.get_mut("ports") {
        for (vp, p) in v_ports.iter_mut().zip(spec.ports.iter().flatten()) {
            if let (Some(obj), Some(n)) = (vp.as_object_mut(), p.node_port)
                && obj
                    .get("nodePort")
                    .is_none_or(|v| v.is_null() || *v == json!(0))
            {
                obj.insert("nodePort".into(), json!(n));
            }
        }
    }
    if let Some(n) = spec.health_check_node_port
        && v_spec
            .get("healthCheckNodePort")
            .is_none_or(|v| v.is_null() || *v == json!(0))
    {
        v_spec.insert("healthCheckNodePort".into(), json!(n));
    }
    let ips = load_balancer_ips(allocated);
    let has_written = root
        .get("status")
        .and_then(|s| s.pointer("/loadBalancer/ingress"))
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !ips.is_empty() && !has_written {
        let status = root.entry("status").or_insert_with(|| json!({}));
        if !status.is_object() {
            *status = json!({});
        }
        let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
        status
            .as_object_mut()
            .expect("made an object")
            .insert("loadBalancer".into(), json!({"ingress": ingress}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::{DEFAULT_AFFINITY_TIMEOUT, cluster_ip, load_balancer_ips};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn ranges(service_cidr: &str, pool: Option<&str>) -> ServiceRanges {
        ServiceRanges {
            service_cidr: service_cidr.parse().unwrap(),
            load_balancer_pool: pool.map(|p| p.parse().unwrap()),
            reserved: vec![("10.244.0.0/16".parse().unwrap(), "the podCIDR".into())],
        }
    }

    fn svc(name: &str, spec: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "x"}, "spec": spec}))
            .unwrap()
    }

    /// Allocates the Services in order into one map, as creation would.
    fn create(
        r: &ServiceRanges,
        list: Vec<Service>,
    ) -> Result<BTreeMap<(String, String), Service>, FieldError> {
        let mut all = BTreeMap::new();
        for s in list {
            let s = allocate(&all, r, s)?;
            all.insert(crate::services::service_key(&s), s);
        }
        Ok(all)
    }

    #[test]
    fn tiny_service_cidr_wraps_to_the_low_addresses_then_runs_out() {
        // A /28 has hosts 1-14: .1 is the kubernetes Service's; 10-14, then 2-9.
        let r = ranges("10.96.0.0/28", None);
        let list: Vec<Service> = (0..13)
            .map(|i| svc(&format!("s{i}"), json!({"ports": [{"port": 80}]})))
            .collect();
        let all = create(&r, list.clone()).unwrap();
        let ips: Vec<u8> = (0..13)
            .map(|i| {
                cluster_ip(&all[&("x".into(), format!("s{i}"))])
                    .unwrap()
                    .octets()[3]
            })
            .collect();
        assert_eq!(ips, [10, 11, 12, 13, 14, 2, 3, 4, 5, 6, 7, 8, 9]);
        let mut more = list;
        more.push(svc("s13", json!({"ports": [{"port": 80}]})));
        let e = create(&r, more).unwrap_err();
        assert!(e.message.contains("no free cluster IP"), "{e}");
    }

    #[test]
    fn the_pool_skips_its_ends_and_runs_out() {
        let r = ranges("10.96.0.0/12", Some("203.0.113.0/30"));
        let lb = |n: &str| svc(n, json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
        let all = create(&r, vec![lb("a"), lb("b")]).unwrap();
        assert_eq!(
            load_balancer_ips(&all[&("x".into(), "a".into())]),
            [Ipv4Addr::new(203, 0, 113, 1)]
        );
        assert_eq!(
            load_balancer_ips(&all[&("x".into(), "b".into())]),
            [Ipv4Addr::new(203, 0, 113, 2)]
        );
        let e = create(&r, vec![lb("a"), lb("b"), lb("c")]).unwrap_err();
        assert_eq!(e.path, "spec.type");
        assert!(e.message.contains("no free address left"), "{e}");
        // A /32 pool is its one address.
        let r = ranges("10.96.0.0/12", Some("203.0.113.9/32"));
        let all = create(&r, vec![lb("a")]).unwrap();
        assert_eq!(
            load_balancer_ips(&all[&("x".into(), "a".into())]),
            [Ipv4Addr::new(203, 0, 113, 9)]
        );
    }

    #[test]
    fn updates_keep_what_was_allocated() {
        let r = ranges("10.96.0.0/12", Some("203.0.113.0/24"));
        let first = svc(
            "a",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                   "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}),
        );
        let all = create(&r, vec![first]).unwrap();
        let before = &all[&("x".into(), "a".into())];
        assert_eq!(node_ports(before), [30000, 30001, 30002]);
        assert_eq!(
            before.spec.as_ref().unwrap().health_check_node_port,
            Some(30002)
        );
        // The same manifest again, ports swapped: node ports follow the names.
        let again = svc(
            "a",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                   "ports": [{"name": "https", "port": 443}, {"name": "http", "port": 80}]}),
        );
        let after = allocate(&all, &r, again).unwrap();
        let ports = crate::services::ports(&after);
        assert_eq!(ports[0].node_port, Some(30001));
        assert_eq!(ports[1].node_port, Some(30000));
        assert_eq!(
            after.spec.as_ref().unwrap().health_check_node_port,
            Some(30002)
        );
        assert_eq!(cluster_ip(&after), cluster_ip(before));
        assert_eq!(load_balancer_ips(&after), load_balancer_ips(before));
        // Becoming a ClusterIP service drops the node ports and the address.
        let plain = svc("a", json!({"ports": [{"name": "http", "port": 80}]}));
        let after = allocate(&all, &r, plain).unwrap();
        assert!(node_ports(&after).is_empty());
        assert!(load_balancer_ips(&after).is_empty());
        assert_eq!(cluster_ip(&after), cluster_ip(before));
    }

    #[test]
    fn no_node_ports_when_the_load_balancer_does_without() {
        let r = ranges("10.96.0.0/12", Some("203.0.113.0/24"));
        let s = svc(
            "a",
            json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}),
        );
        let all = create(&r, vec![s]).unwrap();
        assert!(node_ports(&all[&("x".into(), "a".into())]).is_empty());
    }

    #[test]
    fn defaults_are_the_api_servers_and_idempotent() {
        let mut s = svc(
            "a",
            json!({"sessionAffinity": "ClientIP", "externalIPs": ["198.51.100.1"],
                   "ports": [{"port": 80, "targetPort": 0}, {"name": "b", "port": 81, "targetPort": "web"}]}),
        );
        defaults(&mut s);
        let once = s.clone();
        defaults(&mut s);
        assert_eq!(s, once);
        let spec = s.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        let ports = spec.ports.unwrap();
        assert_eq!(ports[0].target_port, Some(IntOrString::Int(80)));
        assert_eq!(
            ports[1].target_port,
            Some(IntOrString::String("web".into()))
        );
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(
            spec.session_affinity_config
                .unwrap()
                .client_ip
                .unwrap()
                .timeout_seconds,
            Some(DEFAULT_AFFINITY_TIMEOUT)
        );
        // externalIPs make it reachable from outside: it gets an external policy.
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
    }

    #[test]
    fn record_writes_only_the_allocations() {
        let r = ranges("10.96.0.0/12", Some("203.0.113.0/24"));
        let mut value = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "namespace": "x"},
            "spec": {"type": "LoadBalancer", "externalIPs": ["${ip:x/a}"],
                     "ports": [{"port": 80}, {"name": "b", "port": 81, "nodePort": 31000}]}});
        let decoded: Service = serde_json::from_value(json!({"metadata": {"name": "a", "namespace": "x"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"name": "b", "port": 81, "nodePort": 31000}]}}))
            .unwrap();
        let allocated = allocate(&BTreeMap::new(), &r, decoded).unwrap();
        record(&mut value, &allocated);
        assert_eq!(
            value,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "a", "namespace": "x"},
                "spec": {"type": "LoadBalancer", "externalIPs": ["${ip:x/a}"],
                         "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                         "ports": [{"port": 80, "nodePort": 30000}, {"name": "b", "port": 81, "nodePort": 31000}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}})
        );
    }
}

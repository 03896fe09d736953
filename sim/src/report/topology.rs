//! The cluster's topology as one plain model, and its layout as an SVG picture: the fabric
//! (underlay bridge), the router and external hosts behind it, the nodes with their
//! underlay, bridge and VTEP addresses, the pods on each node with their addresses and
//! labels, the VXLAN tunnels between nodes in `vxlan` mode, and Services as virtual IPs
//! with a line to each backend. The HTML report and the Graphviz output
//! ([`super::dot`]) both draw this model, so they never disagree about what was built.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::cluster::NetworkMode;
use crate::objects::{ClusterObjects, PodRef, pod_ip, pod_labels, pod_node};
use crate::plan::{Plan, UNDERLAY};
use crate::services;

use super::esc;

/// Everything the picture shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub network: NetworkMode,
    /// The fabric (underlay) bridge and its network.
    pub fabric_bridge: String,
    pub underlay: Ipv4Net,
    /// The router's underlay address, when the scenario has external hosts.
    pub router: Option<Ipv4Addr>,
    pub hosts: Vec<HostView>,
    pub nodes: Vec<NodeView>,
    pub services: Vec<ServiceView>,
    /// Node pairs joined by a VXLAN tunnel (every pair, flannel style), in `vxlan` mode.
    pub tunnels: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    pub name: String,
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    /// The pods' bridge (`cni0` unless the CNI list names another) and its address.
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub pod_subnet: Ipv4Net,
    /// `(device, address)` of the node's VXLAN tunnel endpoint, in `vxlan` mode.
    pub vtep: Option<(String, Ipv4Addr)>,
    /// The node's underlay link is down in this step (`nodeDown`).
    pub down: bool,
    pub pods: Vec<PodView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub pod: PodRef,
    pub ip: Option<Ipv4Addr>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    /// `ClusterIP`, `NodePort` or `LoadBalancer`, and `(headless)` when it has no VIP.
    pub kind: String,
    pub cluster_ip: Option<Ipv4Addr>,
    /// `80/TCP`, with `->8080` when the target port differs, and node ports.
    pub ports: Vec<String>,
    /// Backend pods (by name) and addresses of backends that are not pods.
    pub backends: Vec<PodRef>,
    pub other_backends: Vec<Ipv4Addr>,
}

impl ServiceView {
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl Topology {
    /// The topology of the cluster `plan` describes holding `objects`, with the nodes in
    /// `down_nodes` cut off. `bridge` is the pods' bridge name on every node and
    /// `fabric_bridge` the underlay bridge's (both decided by the harness).
    pub fn build(
        plan: &Plan,
        objects: &ClusterObjects,
        bridge: &str,
        fabric_bridge: &str,
        down_nodes: &BTreeSet<String>,
    ) -> Topology {
        let mut nodes: Vec<NodeView> = plan
            .nodes
            .iter()
            .map(|n| NodeView {
                name: n.name.clone(),
                underlay_ip: n.underlay_ip,
                bridge: bridge.to_string(),
                gateway: n.gateway,
                pod_subnet: n.pod_subnet,
                vtep: plan.vtep(n).map(|v| (v.device, v.address)),
                down: down_nodes.contains(&n.name),
                pods: vec![],
            })
            .collect();
        for (r, pod) in &objects.pods {
            let Some(node) = pod_node(pod).and_then(|n| nodes.iter_mut().find(|v| v.name == n))
            else {
                continue;
            };
            node.pods.push(PodView {
                pod: r.clone(),
                ip: pod_ip(pod),
                labels: pod_labels(pod),
            });
        }
        let services = objects
            .services
            .values()
            .map(|svc| {
                let (namespace, name) = services::service_key(svc);
                let eps = services::endpoints::compute(objects, svc);
                let mut backends: Vec<PodRef> =
                    eps.addresses.iter().filter_map(|a| a.pod.clone()).collect();
                backends.sort();
                backends.dedup();
                let mut other_backends: Vec<Ipv4Addr> = eps
                    .addresses
                    .iter()
                    .filter(|a| a.pod.is_none())
                    .map(|a| a.ip)
                    .collect();
                other_backends.sort();
                other_backends.dedup();
                let ports = services::ports(svc)
                    .iter()
                    .map(|p| {
                        let mut s = format!("{}/{}", p.port, services::port_protocol(p));
                        if let Some(t) = &p.target_port {
                            let t = match t {
                                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => {
                                    i.to_string()
                                }
                                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => {
                                    s.clone()
                                }
                            };
                            if t != p.port.to_string() {
                                s += &format!("->{t}");
                            }
                        }
                        if let Some(np) = p.node_port {
                            s += &format!(" nodePort {np}");
                        }
                        s
                    })
                    .collect();
                let mut kind = services::service_type(svc).as_str().to_string();
                if services::is_headless(svc) {
                    kind += " (headless)";
                }
                ServiceView {
                    namespace,
                    name,
                    kind,
                    cluster_ip: services::cluster_ip(svc),
                    ports,
                    backends,
                    other_backends,
                }
            })
            .collect();
        let tunnels = match plan.network {
            NetworkMode::Vxlan => {
                let names: Vec<&String> = plan.nodes.iter().map(|n| &n.name).collect();
                let mut t = vec![];
                for (i, a) in names.iter().enumerate() {
                    for b in &names[i + 1..] {
                        t.push(((*a).clone(), (*b).clone()));
                    }
                }
                t
            }
            NetworkMode::HostGw => vec![],
        };
        Topology {
            network: plan.network,
            fabric_bridge: fabric_bridge.to_string(),
            underlay: UNDERLAY,
            router: plan.router.as_ref().map(|r| r.underlay_ip),
            hosts: plan
                .hosts
                .iter()
                .map(|h| HostView {
                    name: h.name.clone(),
                    address: h.address,
                })
                .collect(),
            nodes: {
                nodes.sort_by_key(|n| {
                    plan.nodes
                        .iter()
                        .position(|p| p.name == n.name)
                        .unwrap_or(usize::MAX)
                });
                nodes
            },
            services,
            tunnels,
        }
    }

    pub fn network_word(&self) -> &'static str {
        match self.network {
            NetworkMode::HostGw => "host-gw",
            NetworkMode::Vxlan => "vxlan",
        }
    }
}

/// `app=web, tier=db`, or empty.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// Layout, in SVG user units. Text is monospace 12px (about 7.2 units per character).
const MARGIN: i64 = 20;
const NODE_W: i64 = 260;
const NODE_GAP: i64 = 40;
const NODE_HEAD: i64 = 78;
const POD_H: i64 = 40;
const POD_GAP: i64 = 8;
const HOST_W: i64 = 200;
const HOST_H: i64 = 40;
const SVC_W: i64 = 260;
const SVC_H: i64 = 56;
const CHAR_W: f64 = 7.2;

/// Cuts `s` to what fits in `width` units, with `…` when cut.
fn fit(s: &str, width: i64) -> String {
    let max = ((width as f64) / CHAR_W).floor() as usize;
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A text element (escaped), with the full text as a tooltip when cut.
fn text(out: &mut String, x: i64, y: i64, class: &str, s: &str, width: i64) {
    let shown = fit(s, width);
    if shown == s {
        let _ = writeln!(
            out,
            r#"<text x="{x}" y="{y}" class="{class}">{}</text>"#,
            esc(s)
        );
    } else {
        let _ = writeln!(
            out,
            r#"<text x="{x}" y="{y}" class="{class}">{}<title>{}</title></text>"#,
            esc(&shown),
            esc(s)
        );
    }
}

/// The topology as an SVG element (no size unit: it scales to its container). Every pod
/// is a `<g class="pod" data-pod="NS/NAME">`, so the page's script can highlight the two
/// ends of a matrix cell.
pub fn svg(t: &Topology) -> String {
    let n = t.nodes.len().max(1) as i64;
    let nodes_w = n * NODE_W + (n - 1) * NODE_GAP;
    let hosts_w = t.hosts.len() as i64 * (HOST_W + NODE_GAP) - NODE_GAP;
    let svc_cols = (nodes_w / (SVC_W + NODE_GAP)).max(1);
    let width = 2 * MARGIN + nodes_w.max(hosts_w).max(SVC_W + 2 * NODE_GAP);
    let mut out = String::new();
    let mut body = String::new();
    let mut y = MARGIN;

    // External hosts and the router, on top.
    let mut router_at: Option<(i64, i64)> = None;
    if let Some(router_ip) = t.router {
        let hx0 = MARGIN + (width - 2 * MARGIN - hosts_w.max(0)) / 2;
        for (i, h) in t.hosts.iter().enumerate() {
            let x = hx0 + i as i64 * (HOST_W + NODE_GAP);
            let _ = writeln!(
                body,
                r#"<g class="host" data-host="{}"><rect x="{x}" y="{y}" width="{HOST_W}" height="{HOST_H}" rx="6"/>"#,
                esc(&h.name)
            );
            text(
                &mut body,
                x + 8,
                y + 16,
                "name",
                &format!("host/{}", h.name),
                HOST_W - 16,
            );
            text(
                &mut body,
                x + 8,
                y + 32,
                "addr",
                &h.address.to_string(),
                HOST_W - 16,
            );
            let _ = writeln!(
                body,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}" class="wire"/></g>"#,
                x + HOST_W / 2,
                y + HOST_H,
                width / 2,
                y + HOST_H + 30
            );
        }
        y += HOST_H + 30;
        let rx = width / 2 - HOST_W / 2;
        let _ = writeln!(
            body,
            r#"<g class="router"><rect x="{rx}" y="{y}" width="{HOST_W}" height="{HOST_H}" rx="6"/>"#
        );
        text(&mut body, rx + 8, y + 16, "name", "router", HOST_W - 16);
        text(
            &mut body,
            rx + 8,
            y + 32,
            "addr",
            &router_ip.to_string(),
            HOST_W - 16,
        );
        body.push_str("</g>\n");
        router_at = Some((width / 2, y + HOST_H));
        y += HOST_H + 30;
    }

    // The fabric bar.
    let fabric_y = y;
    let _ = writeln!(
        body,
        r#"<g class="fabric"><rect x="{MARGIN}" y="{y}" width="{}" height="28" rx="4"/>"#,
        width - 2 * MARGIN
    );
    text(
        &mut body,
        MARGIN + 10,
        y + 18,
        "name",
        &format!(
            "fabric: bridge {} on the underlay {} ({} network)",
            t.fabric_bridge,
            t.underlay,
            t.network_word()
        ),
        width - 2 * MARGIN - 20,
    );
    body.push_str("</g>\n");
    if let Some((rx, ry)) = router_at {
        let _ = writeln!(
            body,
            r#"<line x1="{rx}" y1="{ry}" x2="{rx}" y2="{fabric_y}" class="wire"/>"#
        );
    }
    y += 28;

    // Tunnels: arcs below the fabric, between the nodes' VTEPs.
    let tunnel_band = if t.tunnels.is_empty() {
        0
    } else {
        30 + 14 * t.tunnels.len() as i64
    };
    let node_y = y + 40 + tunnel_band;
    let node_x =
        |i: usize| MARGIN + (width - 2 * MARGIN - nodes_w) / 2 + i as i64 * (NODE_W + NODE_GAP);
    let max_pods = t.nodes.iter().map(|n| n.pods.len()).max().unwrap_or(0) as i64;
    let node_h = NODE_HEAD + max_pods * (POD_H + POD_GAP) + POD_GAP;
    let mut pod_at: BTreeMap<&PodRef, (i64, i64)> = BTreeMap::new();
    for (i, node) in t.nodes.iter().enumerate() {
        let x = node_x(i);
        let class = if node.down { "node down" } else { "node" };
        let _ = writeln!(
            body,
            r#"<line x1="{}" y1="{y}" x2="{}" y2="{node_y}" class="wire{}"/>"#,
            x + NODE_W / 2,
            x + NODE_W / 2,
            if node.down { " cut" } else { "" }
        );
        let _ = writeln!(
            body,
            r#"<g class="{class}" data-node="{}"><rect x="{x}" y="{node_y}" width="{NODE_W}" height="{node_h}" rx="8"/>"#,
            esc(&node.name)
        );
        let w = NODE_W - 16;
        let mut title = format!("node {}", node.name);
        if node.down {
            title += " (underlay link down)";
        }
        text(&mut body, x + 8, node_y + 16, "name", &title, w);
        text(
            &mut body,
            x + 8,
            node_y + 32,
            "addr",
            &format!("eth0 {}", node.underlay_ip),
            w,
        );
        text(
            &mut body,
            x + 8,
            node_y + 48,
            "addr",
            &format!(
                "{} {}/{}",
                node.bridge,
                node.gateway,
                node.pod_subnet.prefix_len()
            ),
            w,
        );
        let vtep_line = match &node.vtep {
            Some((dev, addr)) => format!("{dev} {addr} (VTEP)"),
            None => format!("pods {}", node.pod_subnet),
        };
        text(&mut body, x + 8, node_y + 64, "addr", &vtep_line, w);
        for (j, pod) in node.pods.iter().enumerate() {
            let px = x + 10;
            let py = node_y + NODE_HEAD + j as i64 * (POD_H + POD_GAP);
            let pw = NODE_W - 20;
            let _ = writeln!(
                body,
                r#"<g class="pod" data-pod="{}"><rect x="{px}" y="{py}" width="{pw}" height="{POD_H}" rx="5"/>"#,
                esc(&pod.pod.to_string())
            );
            let ip = pod
                .ip
                .map(|i| i.to_string())
                .unwrap_or_else(|| "no address".into());
            text(
                &mut body,
                px + 6,
                py + 15,
                "name",
                &format!("{}  {ip}", pod.pod),
                pw - 12,
            );
            let labels = labels_text(&pod.labels);
            text(
                &mut body,
                px + 6,
                py + 31,
                "labels",
                if labels.is_empty() {
                    "(no labels)"
                } else {
                    &labels
                },
                pw - 12,
            );
            body.push_str("</g>\n");
            pod_at.insert(&pod.pod, (px + pw / 2, py + POD_H));
        }
        body.push_str("</g>\n");
    }
    for (k, (a, b)) in t.tunnels.iter().enumerate() {
        let ia = t.nodes.iter().position(|n| &n.name == a);
        let ib = t.nodes.iter().position(|n| &n.name == b);
        let (Some(ia), Some(ib)) = (ia, ib) else {
            continue;
        };
        let xa = node_x(ia) + NODE_W / 2 - 30;
        let xb = node_x(ib) + NODE_W / 2 - 30;
        let top = y + 28 + 14 * k as i64;
        let _ = writeln!(
            body,
            r#"<path class="tunnel" d="M{xa},{node_y} C{xa},{top} {xb},{top} {xb},{node_y}"><title>VXLAN tunnel {a} - {b} (VNI {}, UDP {})</title></path>"#,
            crate::plan::VXLAN_VNI,
            crate::plan::VXLAN_PORT
        );
    }
    if !t.tunnels.is_empty() {
        text(
            &mut body,
            MARGIN + 10,
            y + 14,
            "tunnel-label",
            &format!(
                "VXLAN tunnels (VNI {}, UDP {}) between the nodes' VTEPs",
                crate::plan::VXLAN_VNI,
                crate::plan::VXLAN_PORT
            ),
            width - 2 * MARGIN,
        );
    }
    y = node_y + node_h + 50;

    // Services below the nodes, with dashed lines up to their backends.
    if !t.services.is_empty() {
        for (k, svc) in t.services.iter().enumerate() {
            let col = k as i64 % svc_cols;
            let row = k as i64 / svc_cols;
            let sx = MARGIN + col * (SVC_W + NODE_GAP);
            let sy = y + row * (SVC_H + 30);
            for b in &svc.backends {
                if let Some((bx, by)) = pod_at.get(b) {
                    let _ = writeln!(
                        body,
                        r#"<line x1="{}" y1="{sy}" x2="{bx}" y2="{by}" class="backend"/>"#,
                        sx + SVC_W / 2
                    );
                }
            }
            let _ = writeln!(
                body,
                r#"<g class="service" data-service="{}"><rect x="{sx}" y="{sy}" width="{SVC_W}" height="{SVC_H}" rx="14"/>"#,
                esc(&svc.id())
            );
            let w = SVC_W - 20;
            text(
                &mut body,
                sx + 10,
                sy + 16,
                "name",
                &format!("svc/{} {}", svc.id(), svc.kind),
                w,
            );
            let vip = match svc.cluster_ip {
                Some(ip) => format!("VIP {ip}"),
                None => "no virtual IP".to_string(),
            };
            text(
                &mut body,
                sx + 10,
                sy + 32,
                "addr",
                &format!("{vip}  {}", svc.ports.join(", ")),
                w,
            );
            let mut backends: Vec<String> = svc.backends.iter().map(|b| b.to_string()).collect();
            backends.extend(svc.other_backends.iter().map(|ip| ip.to_string()));
            let backends = if backends.is_empty() {
                "no endpoints".to_string()
            } else {
                format!("-> {}", backends.join(" "))
            };
            text(&mut body, sx + 10, sy + 48, "labels", &backends, w);
            body.push_str("</g>\n");
        }
        let rows = (t.services.len() as i64 + svc_cols - 1) / svc_cols;
        y += rows * (SVC_H + 30);
    }
    let height = y + MARGIN;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="topology" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="cluster topology">"#
    );
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The objects after a scenario's first step, with made-up pod addresses.
    fn first_step(name: &str) -> (Plan, ClusterObjects) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios")
            .join(format!("{name}.yaml"));
        let s = crate::scenario::load(&path).unwrap();
        let plan = Plan::new("kl000000", &s.cluster).unwrap();
        let mut objects = ClusterObjects::new(s.cluster.nodes.clone());
        for c in &s.steps[0].changes {
            c.apply_to(&mut objects, &|_| None).unwrap();
        }
        let pods: Vec<PodRef> = objects.pods.keys().cloned().collect();
        for (i, p) in pods.iter().enumerate() {
            objects.set_pod_ip(p, Ipv4Addr::new(10, 244, 9, 2 + i as u8));
        }
        (plan, objects)
    }

    #[test]
    fn every_pod_sits_on_its_node_and_services_point_at_their_backends() {
        let (plan, objects) = first_step("service-clusterip");
        let t = Topology::build(&plan, &objects, "cni0", "br0", &BTreeSet::new());
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(
            t.nodes.iter().map(|n| n.pods.len()).sum::<usize>(),
            objects.pods.len()
        );
        for n in &t.nodes {
            for p in &n.pods {
                assert_eq!(pod_node(&objects.pods[&p.pod]), Some(n.name.as_str()));
                assert!(p.ip.is_some());
            }
        }
        let svc = &t.services[0];
        assert_eq!(svc.id(), "default/nginx");
        assert_eq!(svc.kind, "ClusterIP");
        assert!(svc.cluster_ip.is_some());
        assert_eq!(svc.backends.len(), 3, "{svc:?}");
        assert!(t.tunnels.is_empty(), "host-gw has no tunnels");
    }

    #[test]
    fn vxlan_clusters_have_a_tunnel_between_every_pair_of_nodes() {
        let (plan, objects) = first_step("overlay-vxlan");
        let down: BTreeSet<String> = ["n2".to_string()].into();
        let t = Topology::build(&plan, &objects, "cni0", "br0", &down);
        let n = t.nodes.len();
        assert_eq!(t.tunnels.len(), n * (n - 1) / 2);
        assert_eq!(
            t.nodes[1].vtep.as_ref().map(|v| v.1.to_string()).as_deref(),
            Some("10.244.2.0")
        );
        assert!(t.nodes[1].down && !t.nodes[0].down);
        let s = svg(&t);
        assert_eq!(s.matches("<g class=\"pod\"").count(), objects.pods.len());
    }
}

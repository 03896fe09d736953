//! Text views of the Services and their backends, deterministic for snapshots: what
//! `kubectl get services -A -o wide` and `kubectl get endpoints -A` print (without the
//! AGE column, and without kubectl's "+ N more..." cut after three endpoints), then every
//! EndpointSlice with each endpoint's node, readiness and pod, which `kubectl` only shows
//! with `-o yaml`.

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::endpoints::{self, MANAGED_BY_LABEL};
use super::{ServiceType, external_ips, load_balancer_ips, port_protocol, service_type};
use crate::objects::ClusterObjects;

/// All three views, separated by blank lines.
pub fn render(objects: &ClusterObjects) -> String {
    format!(
        "{}\n{}\n{}",
        services_table(objects),
        endpoints_table(objects),
        slices_text(objects)
    )
}

/// Columns separated by three spaces, as kubectl's tab writer pads them.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                let pad = widths[c] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `kubectl get services -A -o wide`.
pub fn services_table(objects: &ClusterObjects) -> String {
    let mut rows = vec![
        [
            "NAMESPACE",
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "SELECTOR",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for ((ns, name), svc) in &objects.services {
        rows.push(vec![
            ns.clone(),
            name.clone(),
            service_type(svc).as_str().to_string(),
            svc.spec
                .as_ref()
                .and_then(|s| s.cluster_ip.clone())
                .unwrap_or_else(|| "<none>".into()),
            external_ip_column(svc),
            ports_column(svc),
            selector_column(svc),
        ]);
    }
    table(&rows)
}

fn external_ip_column(svc: &Service) -> String {
    let mut ips: Vec<String> = Vec::new();
    let lb = service_type(svc) == ServiceType::LoadBalancer;
    if lb {
        ips.extend(load_balancer_ips(svc).iter().map(ToString::to_string));
    }
    ips.extend(external_ips(svc).iter().map(ToString::to_string));
    match (ips.is_empty(), lb) {
        (false, _) => ips.join(","),
        (true, true) => "<pending>".into(),
        (true, false) => "<none>".into(),
    }
}

fn ports_column(svc: &Service) -> String {
    let ports: Vec<String> = super::ports(svc)
        .iter()
        .map(|p| match p.node_port {
            Some(n) => format!("{}:{n}/{}", p.port, port_protocol(p)),
            None => format!("{}/{}", p.port, port_protocol(p)),
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

fn selector_column(svc: &Service) -> String {
    match svc.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(sel) if !sel.is_empty() => sel
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

/// `kubectl get endpoints -A`: the ready `IP:PORT`s of every Endpoints object (a
/// selector-less Service without one has no row, as in a real cluster).
pub fn endpoints_table(objects: &ClusterObjects) -> String {
    let mut rows = vec![
        ["NAMESPACE", "NAME", "ENDPOINTS"]
            .map(String::from)
            .to_vec(),
    ];
    for svc in objects.services.values() {
        let computed = endpoints::compute(objects, svc);
        if let Some(ep) = computed.to_endpoints(svc) {
            rows.push(vec![
                computed.namespace.clone(),
                computed.name.clone(),
                endpoints_column(&ep),
            ]);
        }
    }
    table(&rows)
}

/// kubectl's `formatEndpoints`: per subset, per port, per ready address; port-less
/// subsets list bare addresses.
fn endpoints_column(ep: &Endpoints) -> String {
    let mut list = Vec::new();
    for ss in ep.subsets.iter().flatten() {
        let addresses = ss.addresses.as_deref().unwrap_or_default();
        match ss.ports.as_deref() {
            None | Some([]) => list.extend(addresses.iter().map(|a| a.ip.clone())),
            Some(ports) => {
                for p in ports {
                    list.extend(addresses.iter().map(|a| format!("{}:{}", a.ip, p.port)));
                }
            }
        }
    }
    if list.is_empty() {
        "<none>".into()
    } else {
        list.join(",")
    }
}

/// Every EndpointSlice: a header line (name, controller, ports), then one line per
/// endpoint, sorted by node: `NODE  IP  ready|not ready  POD`.
pub fn slices_text(objects: &ClusterObjects) -> String {
    let blocks: Vec<String> = objects
        .services
        .values()
        .flat_map(|svc| endpoints::compute(objects, svc).slices(svc))
        .map(|slice| slice_text(&slice))
        .collect();
    if blocks.is_empty() {
        return "ENDPOINTSLICES\n(none)\n".into();
    }
    format!("ENDPOINTSLICES\n{}", blocks.join("\n"))
}

fn slice_text(slice: &EndpointSlice) -> String {
    let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
    let name = slice.metadata.name.as_deref().unwrap_or_default();
    let controller = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map_or("", String::as_str);
    let ports: Vec<String> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let number = p.port.map_or("?".into(), |n| n.to_string());
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            match p.name.as_deref() {
                Some(n) if !n.is_empty() => format!("{n}={number}/{proto}"),
                _ => format!("{number}/{proto}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    let mut out = format!("{ns}/{name}   ports {ports}   managed by {controller}\n");
    // Slices list endpoints by address; show them by node (a stable sort keeps the
    // address order within a node).
    let mut rows: Vec<Vec<String>> = slice
        .endpoints
        .iter()
        .map(|e| {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let pod = e.target_ref.as_ref().map_or_else(
                || "-".to_string(),
                |r| {
                    format!(
                        "{}/{}",
                        r.namespace.as_deref().unwrap_or_default(),
                        r.name.as_deref().unwrap_or_default()
                    )
                },
            );
            vec![
                e.node_name.clone().unwrap_or_else(|| "-".into()),
                e.addresses.join(","),
                if ready { "ready" } else { "not ready" }.to_string(),
                pod,
            ]
        })
        .collect();
    rows.sort_by(|a, b| a[0].cmp(&b[0]));
    if rows.is_empty() {
        out.push_str("  (no endpoints)\n");
        return out;
    }
    for line in table(&rows).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

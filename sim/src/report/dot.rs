//! The topology as Graphviz (`dot -Tsvg`), for people who want to draw it themselves:
//! the same [`Topology`] the HTML report draws, one cluster subgraph per node.

use std::fmt::Write as _;

use super::topology::{Topology, labels_text};

/// A DOT string literal (quotes, backslashes and newlines escaped).
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `digraph` named after the scenario.
pub fn dot(name: &str, t: &Topology) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "digraph {} {{", q(name));
    let _ = writeln!(
        o,
        "  graph [rankdir=TB, fontname=\"monospace\", compound=true];"
    );
    let _ = writeln!(
        o,
        "  node [shape=box, style=rounded, fontname=\"monospace\", fontsize=10];"
    );
    let _ = writeln!(
        o,
        "  edge [fontname=\"monospace\", fontsize=9, arrowhead=none];"
    );
    let _ = writeln!(
        o,
        "  fabric [label={}, shape=box, style=filled, fillcolor=\"#dde6f0\"];",
        q(&format!(
            "fabric bridge {}\nunderlay {}\n{} network",
            t.fabric_bridge,
            t.underlay,
            t.network_word()
        ))
    );
    if let Some(ip) = t.router {
        let _ = writeln!(o, "  router [label={}];", q(&format!("router\n{ip}")));
        let _ = writeln!(o, "  router -> fabric;");
        for h in &t.hosts {
            let id = q(&format!("host/{}", h.name));
            let _ = writeln!(
                o,
                "  {id} [label={}, shape=box3d];",
                q(&format!("host/{}\n{}", h.name, h.address))
            );
            let _ = writeln!(o, "  {id} -> router;");
        }
    }
    for n in &t.nodes {
        let _ = writeln!(
            o,
            "  subgraph {} {{",
            q(&format!("cluster_node_{}", n.name))
        );
        let mut label = format!("node {}", n.name);
        if n.down {
            label += " (underlay link down)";
        }
        let _ = writeln!(o, "    label={};", q(&label));
        let mut node_label = format!(
            "node/{}\neth0 {}\n{} {}/{}",
            n.name,
            n.underlay_ip,
            n.bridge,
            n.gateway,
            n.pod_subnet.prefix_len()
        );
        if let Some((dev, addr)) = &n.vtep {
            node_label += &format!("\n{dev} {addr} (VTEP)");
        }
        let id = q(&format!("node/{}", n.name));
        let _ = writeln!(o, "    {id} [label={}, shape=box];", q(&node_label));
        for p in &n.pods {
            let ip =
                p.ip.map(|i| i.to_string())
                    .unwrap_or_else(|| "no address".into());
            let mut label = format!("{}\n{ip}", p.pod);
            let labels = labels_text(&p.labels);
            if !labels.is_empty() {
                label += &format!("\n{labels}");
            }
            let pid = q(&p.pod.to_string());
            let _ = writeln!(o, "    {pid} [label={}];", q(&label));
            let _ = writeln!(o, "    {id} -> {pid} [label={}];", q(&n.bridge));
        }
        let _ = writeln!(o, "  }}");
        let style = if n.down {
            ", style=dashed, color=red"
        } else {
            ""
        };
        let _ = writeln!(o, "  fabric -> {id} [label=\"eth0\"{style}];");
    }
    for (a, b) in &t.tunnels {
        let _ = writeln!(
            o,
            "  {} -> {} [label={}, style=dashed, color=\"#7a4fb0\", constraint=false];",
            q(&format!("node/{a}")),
            q(&format!("node/{b}")),
            q(&format!(
                "VXLAN VNI {} UDP {}",
                crate::plan::VXLAN_VNI,
                crate::plan::VXLAN_PORT
            ))
        );
    }
    for s in &t.services {
        let id = q(&format!("svc/{}", s.id()));
        let vip = s
            .cluster_ip
            .map(|ip| format!("VIP {ip}"))
            .unwrap_or_else(|| "no virtual IP".into());
        let _ = writeln!(
            o,
            "  {id} [label={}, shape=ellipse, style=dashed];",
            q(&format!(
                "svc/{} {}\n{vip}\n{}",
                s.id(),
                s.kind,
                s.ports.join(", ")
            ))
        );
        for b in &s.backends {
            let _ = writeln!(
                o,
                "  {id} -> {} [style=dotted, arrowhead=normal];",
                q(&b.to_string())
            );
        }
        for ip in &s.other_backends {
            let _ = writeln!(
                o,
                "  {id} -> {} [style=dotted, arrowhead=normal];",
                q(&ip.to_string())
            );
        }
    }
    let _ = writeln!(o, "}}");
    o
}

//! `nodeport/NODE:PORT`, `lb/[NS/]NAME:PORT` and `extip/NS/NAME:PORT` as probe targets
//! (issue 4, "Probing services"): read, and every mistake reported at its file, line,
//! column and field path.

mod common;
use common::*;

use sim::scenario::Peer;

const HEAD: &str = "name: t\nsummary: a test\ncluster:\n  nodes: 2\n  loadBalancerPool: 203.0.113.0/28\n  externalHosts: [{name: pc, address: 172.17.0.10}]\n";

/// Two Services called `web` in x and y: x/web a LoadBalancer with node port 30080 and
/// an external IP, y/web a plain LoadBalancer.
fn services() -> String {
    let svc = |ns: &str, extra: &str| {
        format!(
            "  - apiVersion: v1\n    kind: Service\n    metadata: {{name: web, namespace: {ns}}}\n    spec: {{type: LoadBalancer, selector: {{pod: a}}, ports: [{{port: 80, targetPort: 80{extra}}}]{}}}\n",
            if ns == "x" {
                ", externalIPs: [192.0.2.100]"
            } else {
                ""
            }
        )
    };
    format!(
        "model: {{namespaces: [x, y], pods: [a], ports: [80], protocols: [TCP]}}\nmanifests:\n{}{}",
        svc("x", ", nodePort: 30080"),
        svc("y", "")
    )
}

fn with_probe(to: &str) -> String {
    format!(
        "{HEAD}{}probe:\n  from: [host/pc]\n  to: [{to}]\n",
        services()
    )
}

#[test]
fn outside_targets_are_read() {
    let s = parse_ok(&with_probe(
        "nodeport/n2:30080, lb/x/web:80, lb/y/web:80, extip/x/web:80",
    ));
    let to = s.probe.to.unwrap();
    assert_eq!(
        to[0],
        Peer::NodePort {
            node: "n2".into(),
            port: 30080
        }
    );
    assert_eq!(to[1].to_string(), "lb/x/web:80");
    assert!(to.iter().all(Peer::is_external_service));
}

#[test]
fn outside_target_mistakes_point_at_the_target() {
    for (target, message) in [
        ("nodeport/n3:30080", "node n3 does not exist"),
        (
            "nodeport/n1:30081",
            "no Service has node port 30081 at any step",
        ),
        (
            "lb/web:80",
            "is ambiguous: load-balancer Services called web exist in x, y",
        ),
        ("lb/x/web:81", "names no Service of type LoadBalancer"),
        ("extip/y/web:80", "names no Service with externalIPs"),
        ("lb/web", "is not a load-balancer target"),
    ] {
        let text = with_probe(target);
        let e = parse_err(&text);
        assert_error(&e, pos(&text, target, 0), "probe.to[0]", message);
    }
    // Only a target: not a client.
    let text = format!(
        "{HEAD}{}probe:\n  from: [lb/x/web:80]\n  to: [x/a]\n",
        services()
    );
    let e = parse_err(&text);
    assert_eq!(e.path, "probe.from[0]", "{e}");
    assert!(e.message.contains("can only be probed"), "{e}");
}

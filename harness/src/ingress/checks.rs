//! The `http:` checks of one step: what the oracle predicts (the routing decision of
//! [`sim::ingress::IngressModel::route`], then NetworkPolicy on the client's hop to the
//! controller and on the controller's hop to each backend pod, from
//! [`sim::oracle::predict`]) and what a real request through nginx got.

use std::collections::BTreeSet;

use serde::Serialize;
use sim::ingress::{HttpCheckSpec, IngressModel, controller};
use sim::matrix::Verdict;
use sim::objects::{ClusterObjects, PodRef};
use sim::oracle::{OracleContext, predict};
use sim::protocol::{PortProto, Protocol};
use sim::scenario::{DenyStyle, Peer};

use super::client::Response;

/// What the controller did in one step, and the `http:` checks measured in it.
#[derive(Debug, Clone, Serialize)]
pub struct IngressStep {
    pub step: String,
    /// `started`, `reloaded` or `unchanged`, and how long nginx took to serve the new
    /// configuration.
    pub controller: &'static str,
    pub controller_ms: f64,
    /// The nginx configuration (IPs as `${ip:NS/POD}`, the directory as `$DIR`).
    pub config: String,
    /// `ns/name` → the address written to `status.loadBalancer.ingress[0].ip`.
    pub addresses: Vec<(String, String)>,
    /// The controller's notes (conversions, ignored classes, generated certificates).
    pub notes: Vec<String>,
    pub checks: Vec<HttpCheck>,
}

/// One `http:` check in one step.
#[derive(Debug, Clone, Serialize)]
pub struct HttpCheck {
    pub from: String,
    pub url: String,
    /// Where the request went: a node address and the NodePort.
    pub via: String,
    pub status: Option<u16>,
    pub backend: Option<String>,
    pub location: Option<String>,
    pub error: Option<String>,
    pub ms: f64,
    /// The statuses the oracle allows (several when some backends are denied and
    /// others not); empty = no answer at all.
    pub predicted_status: Vec<u16>,
    /// The pods that may answer a 200.
    pub predicted_backends: Vec<String>,
    pub why: String,
    pub expected_status: Option<u16>,
    pub expected_backend: Option<String>,
    /// Measured matches the oracle.
    pub agrees: bool,
    /// Measured matches the scenario's `expect` (true when it has none).
    pub as_expected: bool,
}

impl HttpCheck {
    pub fn ok(&self) -> bool {
        self.agrees && self.as_expected
    }
}

/// The oracle's view of one check: statuses, backends and why.
pub fn predict_check(
    spec: &HttpCheckSpec,
    model: &IngressModel,
    ctx: &OracleContext,
    deny: DenyStyle,
    entry: Option<&Peer>,
) -> (Vec<u16>, Vec<String>, String) {
    let controller = Peer::Pod(controller::pod_ref());
    let ingress_port = match spec.scheme {
        sim::ingress::Scheme::Http => controller::HTTP_PORT,
        sim::ingress::Scheme::Https => controller::HTTPS_PORT,
    };
    // The client reaches the controller through its NodePort on `entry` (a
    // `nodeport/NODE:PORT` peer): kube-proxy's DNAT and, entering another node than the
    // controller's, its masquerade decide what the controller's policies see. Without an
    // entry, the hop is judged as a direct connection to the pod.
    let denied_hop = match entry {
        Some(np) => {
            let hop = sim::oracle::predict_external(
                ctx,
                &spec.from,
                np,
                PortProto::new(
                    Protocol::Tcp,
                    match np {
                        Peer::NodePort { port, .. } => *port,
                        _ => ingress_port,
                    },
                ),
            );
            (hop.verdict == Some(Verdict::Deny)).then(|| hop.short())
        }
        None => {
            let hop = predict(
                ctx,
                &spec.from,
                &controller,
                PortProto::new(Protocol::Tcp, ingress_port),
            );
            (hop.verdict == Verdict::Deny).then(|| hop.short())
        }
    };
    if let Some(why) = denied_hop {
        return (
            vec![],
            vec![],
            format!("{} cannot reach the controller: {why}", spec.from),
        );
    }
    let route = model.route(spec.scheme, &spec.host, &spec.path);
    if route.status != 200 {
        return (vec![route.status], vec![], route.why);
    }
    let mut statuses = BTreeSet::new();
    let mut backends = Vec::new();
    let mut denied = Vec::new();
    for u in &route.upstreams {
        let Some(pod) = &u.pod else {
            statuses.insert(200);
            continue;
        };
        let p = predict(
            ctx,
            &controller,
            &Peer::Pod(pod.clone()),
            PortProto::new(Protocol::Tcp, u.port),
        );
        match p.verdict {
            Verdict::Allow => {
                statuses.insert(200);
                backends.push(pod.to_string());
            }
            Verdict::Deny => {
                // nginx fails to connect: refused/unreachable → 502; a silent drop runs
                // into proxy_connect_timeout → 504.
                statuses.insert(match deny {
                    DenyStyle::Reject => 502,
                    DenyStyle::Drop => 504,
                });
                denied.push(format!("{pod} ({})", p.short()));
            }
        }
    }
    let mut why = route.why;
    if !denied.is_empty() {
        why += &format!(
            "; the controller's connection is denied to {}",
            denied.join(", ")
        );
    }
    (statuses.into_iter().collect(), backends, why)
}

/// Whether `backend` (`ns/name` of a pod, or of a Service) covers the pod that answered.
pub fn backend_matches(objects: &ClusterObjects, expected: &str, answered: &str) -> bool {
    if expected == answered {
        return true;
    }
    let Some((ns, name)) = expected.split_once('/') else {
        return false;
    };
    let Some(svc) = objects.services.get(&(ns.to_string(), name.to_string())) else {
        return false;
    };
    let Some((ans_ns, ans_name)) = answered.split_once('/') else {
        return false;
    };
    let answered = PodRef::new(ans_ns, ans_name);
    sim::services::endpoints::compute(objects, svc)
        .addresses
        .iter()
        .any(|a| a.pod.as_ref() == Some(&answered))
}

/// Puts the measurement, the prediction and the expectation together.
pub fn judge(
    spec: &HttpCheckSpec,
    objects: &ClusterObjects,
    via: String,
    got: Response,
    predicted: (Vec<u16>, Vec<String>, String),
) -> HttpCheck {
    let (predicted_status, predicted_backends, why) = predicted;
    let agrees = match got.status {
        None => predicted_status.is_empty(),
        Some(s) => {
            predicted_status.contains(&s)
                && (s != 200
                    || predicted_backends.is_empty()
                    || got
                        .backend
                        .as_ref()
                        .is_some_and(|b| predicted_backends.contains(b)))
        }
    };
    let as_expected = spec.status.is_none_or(|s| got.status == Some(s))
        && spec.backend.as_ref().is_none_or(|b| {
            got.backend
                .as_ref()
                .is_some_and(|a| backend_matches(objects, b, a))
        });
    HttpCheck {
        from: spec.from.to_string(),
        url: spec.url.clone(),
        via,
        status: got.status,
        backend: got.backend,
        location: got.location,
        error: got.error,
        ms: got.ms,
        predicted_status,
        predicted_backends,
        why,
        expected_status: spec.status,
        expected_backend: spec.backend.clone(),
        agrees,
        as_expected,
    }
}

/// The text report of one step (for `cargo xtask scenario` and the snapshots): timings
/// left out, so it is stable.
pub fn render_step(s: &IngressStep) -> String {
    let mut out = String::new();
    for (ing, addr) in &s.addresses {
        out += &format!("Ingress {ing}: status.loadBalancer.ingress[0].ip = {addr}\n");
    }
    for n in &s.notes {
        out += &format!("note: {n}\n");
    }
    for c in &s.checks {
        let got = match (c.status, &c.backend, &c.error) {
            (Some(st), Some(b), _) => format!("{st} from {b}"),
            (Some(st), None, _) => match &c.location {
                Some(l) => format!("{st} → {l}"),
                None => st.to_string(),
            },
            (None, _, Some(e)) => format!("no answer ({e})"),
            (None, _, None) => "no answer".into(),
        };
        let mark = if c.ok() { "ok" } else { "WRONG" };
        let predicted = if c.predicted_status.is_empty() {
            "no answer".to_string()
        } else {
            c.predicted_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        };
        out += &format!(
            "{mark:5} {} GET {} → {got}; oracle: {predicted}",
            c.from, c.url
        );
        if !c.predicted_backends.is_empty() {
            out += &format!(" from {}", c.predicted_backends.join(" | "));
        }
        out += &format!(" ({})\n", c.why);
        if !c.as_expected {
            out += &format!(
                "      expected: status {} backend {}\n",
                c.expected_status
                    .map_or("any".to_string(), |s| s.to_string()),
                c.expected_backend.as_deref().unwrap_or("any")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use super::*;

    /// The objects of `ingress-networkpolicy` after `steps` steps, pods addressed.
    fn objects(steps: usize) -> (sim::scenario::Scenario, ClusterObjects) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios/ingress-networkpolicy.yaml");
        let s = sim::scenario::load(&path).unwrap();
        let mut o = ClusterObjects::new(s.cluster.nodes.clone());
        for step in &s.steps[..steps] {
            for c in &step.changes {
                c.apply_to(&mut o, &|_| None).unwrap();
            }
            let pods: Vec<PodRef> = o.pods.keys().cloned().collect();
            for (i, p) in pods.iter().enumerate() {
                o.set_pod_ip(p, Ipv4Addr::new(10, 244, 1, 2 + i as u8));
            }
        }
        (s, o)
    }

    #[test]
    fn policy_on_the_controller_hop_decides_200_502_or_504() {
        let nodes = BTreeMap::new();
        let hosts: BTreeMap<String, Ipv4Addr> =
            [("laptop".to_string(), Ipv4Addr::new(172, 17, 0, 10))].into();
        for (steps, deny, want) in [
            (1, DenyStyle::Reject, vec![200]),
            (2, DenyStyle::Reject, vec![502]),
            (2, DenyStyle::Drop, vec![504]),
        ] {
            let (s, o) = objects(steps);
            let ctx = OracleContext::new(&o, s.cluster.policy, &nodes).with_hosts(hosts.clone());
            let model = IngressModel::new(&o);
            let (status, backends, why) = predict_check(&s.http[0], &model, &ctx, deny, None);
            assert_eq!(status, want, "{why}");
            if want == [200] {
                assert_eq!(backends, vec!["shop/web".to_string()]);
            } else {
                assert!(why.contains("denied to shop/web"), "{why}");
            }
        }
    }

    #[test]
    fn a_service_backend_covers_its_pods() {
        let (_, o) = objects(1);
        assert!(backend_matches(&o, "shop/web", "shop/web"));
        assert!(!backend_matches(&o, "default/client", "shop/web"));
    }
}

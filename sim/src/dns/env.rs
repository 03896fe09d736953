//! The service environment variables a kubelet injects into a pod's containers
//! (kubernetes `pkg/kubelet/envvars.FromServices`, kube-proxy-and-policy-internals.md
//! §6.3): for every Service with a cluster IP in the pod's namespace, plus the
//! `default/kubernetes` Service when there is one, **as they were when the pod
//! started**. A Service created later is not seen until the pod is recreated: that is
//! why DNS, not these variables, is the way to find services.
//!
//! knetlab has no API server and so no `kubernetes` Service unless a scenario writes one:
//! without it there are no `KUBERNETES_*` variables.
//!
//! When a pod "starts": a step is one `kubectl apply`, and a kubelet starts containers
//! well after the API server stored the whole batch, so a pod sees the Services that
//! exist at the end of the step that creates it (not those of later steps).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;

use crate::objects::{ClusterObjects, PodRef};
use crate::services;

/// One variable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

impl std::fmt::Display for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

/// The master Service every pod also gets (`kubelet --master-service-namespace`).
const MASTER_SERVICE: (&str, &str) = ("default", "kubernetes");

/// `my-svc` → `MY_SVC` (kubelet's `makeEnvVariableName`).
pub fn env_name(s: &str) -> String {
    s.to_ascii_uppercase().replace('-', "_")
}

/// The variables of one Service, in the kubelet's order; none for a Service without a
/// cluster IP (headless) or without ports.
pub fn service_vars(svc: &Service) -> Vec<EnvVar> {
    let Some(ip) = services::cluster_ip(svc) else {
        return vec![];
    };
    let ports = services::ports(svc);
    let Some(first) = ports.first() else {
        return vec![];
    };
    let (_, name) = services::service_key(svc);
    let prefix = env_name(&name);
    let var = |name: String, value: String| EnvVar { name, value };
    let mut out = vec![
        var(format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        var(format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for p in ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push(var(
                format!("{prefix}_SERVICE_PORT_{}", env_name(n)),
                p.port.to_string(),
            ));
        }
    }
    out.extend(link_vars(&prefix, ip, svc));
    out
}

/// The Docker-link variables: `_PORT` for the first port, then per port
/// `_PORT_<port>_<PROTO>` and its `_PROTO`, `_PORT`, `_ADDR`.
fn link_vars(prefix: &str, ip: Ipv4Addr, svc: &Service) -> Vec<EnvVar> {
    let mut out = Vec::new();
    for (i, p) in services::ports(svc).iter().enumerate() {
        let proto = services::port_protocol(p);
        let url = format!("{}://{ip}:{}", proto.lower(), p.port);
        if i == 0 {
            out.push(EnvVar {
                name: format!("{prefix}_PORT"),
                value: url.clone(),
            });
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.as_str());
        out.push(EnvVar {
            name: pp.clone(),
            value: url,
        });
        out.push(EnvVar {
            name: format!("{pp}_PROTO"),
            value: proto.lower().to_string(),
        });
        out.push(EnvVar {
            name: format!("{pp}_PORT"),
            value: p.port.to_string(),
        });
        out.push(EnvVar {
            name: format!("{pp}_ADDR"),
            value: ip.to_string(),
        });
    }
    out
}

/// The variables of a pod in `namespace` started while `objects` held these Services:
/// the namespace's Services with a cluster IP, sorted by name, then `default/kubernetes`
/// if it exists and no Service of the namespace has that name.
pub fn pod_vars(objects: &ClusterObjects, namespace: &str) -> Vec<EnvVar> {
    let mut out = Vec::new();
    for ((ns, _), svc) in &objects.services {
        if ns == namespace {
            out.extend(service_vars(svc));
        }
    }
    let (mns, mname) = MASTER_SERVICE;
    let shadowed = objects
        .services
        .contains_key(&(namespace.to_string(), mname.to_string()));
    if !shadowed && let Some(svc) = objects.services.get(&(mns.into(), mname.into())) {
        out.extend(service_vars(svc));
    }
    out
}

/// The pods' variables after each step: `(step name, pod → variables)`, one entry per
/// step, holding every pod that exists then with the variables it got when it was
/// created (the step that created it, see the module doc). `steps` are the cluster's
/// objects at the end of each step, in order.
pub fn timeline<'a>(
    steps: impl IntoIterator<Item = (&'a str, &'a ClusterObjects)>,
) -> Vec<(String, BTreeMap<PodRef, Vec<EnvVar>>)> {
    let mut env: BTreeMap<PodRef, Vec<EnvVar>> = BTreeMap::new();
    let mut seen: Vec<PodRef> = Vec::new();
    let mut out = Vec::new();
    for (name, objects) in steps {
        env.retain(|p, _| objects.pods.contains_key(p));
        for p in objects.pods.keys() {
            if !seen.contains(p) || !env.contains_key(p) {
                env.insert(p.clone(), pod_vars(objects, &p.namespace));
            }
        }
        seen = objects.pods.keys().cloned().collect();
        out.push((name.to_string(), env.clone()));
    }
    out
}

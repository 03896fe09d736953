//! The ingress-nginx controller's own objects, as its `deploy.yaml` would create them: the
//! `ingress-nginx` namespace, the controller pod and the `ingress-nginx-controller`
//! NodePort Service in front of it. The scenario parser adds them to the first step of a
//! scenario that has an Ingress (unless the scenario declares them itself), so they are
//! real objects everywhere: the pod is wired by the CNI, kube-proxy writes the NodePort
//! rules, NetworkPolicies select the pod and its namespace like any other.

use serde_json::{Value, json};

use crate::objects::PodRef;

pub const NAMESPACE: &str = "ingress-nginx";
pub const POD: &str = "ingress-nginx-controller";
pub const SERVICE: &str = "ingress-nginx-controller";
/// The node ports external clients use (fixed, so scenarios and outputs are stable).
pub const HTTP_NODE_PORT: u16 = 30080;
pub const HTTPS_NODE_PORT: u16 = 30443;
/// The ports nginx listens on in the pod.
pub const HTTP_PORT: u16 = 80;
pub const HTTPS_PORT: u16 = 443;

/// The controller pod, `ingress-nginx/ingress-nginx-controller`.
pub fn pod_ref() -> PodRef {
    PodRef::new(NAMESPACE, POD)
}

/// The labels deploy.yaml gives the controller pod (what policies select it by).
pub fn pod_labels() -> Value {
    json!({
        "app.kubernetes.io/name": "ingress-nginx",
        "app.kubernetes.io/instance": "ingress-nginx",
        "app.kubernetes.io/component": "controller",
    })
}

/// The manifests to add, in apply order: namespace, pod, Service. `declared(kind, ns,
/// name)` says whether the scenario already has that object (then it is left out).
pub fn manifests(declared: &dyn Fn(&str, &str, &str) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    if !declared("Namespace", "", NAMESPACE) {
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/name": "ingress-nginx"}},
        }));
    }
    if !declared("Pod", NAMESPACE, POD) {
        // No containerPorts: nginx itself listens on 80 and 443 in the pod (knetlab's
        // probe servers would take the ports of declared ones); the Service's numeric
        // targetPorts reach it all the same.
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": POD, "namespace": NAMESPACE, "labels": pod_labels()},
            "spec": {"containers": [{
                "name": "controller",
                "image": "registry.k8s.io/ingress-nginx/controller:v1.12.1",
            }]},
        }));
    }
    if !declared("Service", NAMESPACE, SERVICE) {
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {
                "type": "NodePort",
                "selector": pod_labels(),
                "ports": [
                    {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT, "nodePort": HTTP_NODE_PORT},
                    {"name": "https", "port": HTTPS_PORT, "targetPort": HTTPS_PORT, "nodePort": HTTPS_NODE_PORT},
                ],
            },
        }));
    }
    out
}

/// Whether a manifest (as JSON) is an Ingress of any API version.
pub fn is_ingress(value: &Value) -> bool {
    value.get("kind").and_then(Value::as_str) == Some("Ingress")
}

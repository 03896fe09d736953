//! The pods and Services a scenario gets without writing them: the cluster DNS
//! (`cluster.dns`: the `kube-system/kube-dns` pod and Service) and the ingress-nginx
//! controller (when some step has an Ingress), added to the first step as if the
//! scenario had declared them.

use serde_json::{Value, json};

use super::build::Pending;
use super::header::Document;
use super::source::Source;
use crate::cluster::ClusterDns;
use crate::objects::Kind;

/// Adds the ingress-nginx controller's namespace, pod and NodePort Service to the first
/// step when some step has an Ingress (see [`crate::ingress::controller`]).
pub(super) fn ingress_controller(src: &Source, doc: &Document, pending: &mut Vec<Pending>) {
    let has_ingress = pending.iter().any(|p| p.kind == Kind::Ingress)
        || doc
            .steps
            .iter()
            .flatten()
            .flat_map(|s| s.apply.iter().flatten())
            .any(crate::ingress::controller::is_ingress);
    if !has_ingress {
        return;
    }
    let declared = |kind: &str, ns: &str, name: &str| {
        pending.iter().any(|p| {
            p.kind.as_str() == kind
                && p.value.pointer("/metadata/name") == Some(&json!(name))
                && (ns.is_empty() || p.value.pointer("/metadata/namespace") == Some(&json!(ns)))
        })
    };
    let added: Vec<Pending> = crate::ingress::controller::manifests(&declared)
        .into_iter()
        .map(|value| Pending {
            src: src.clone(),
            path: String::new(),
            kind: match value.get("kind").and_then(Value::as_str) {
                Some("Namespace") => Kind::Namespace,
                Some("Pod") => Kind::Pod,
                _ => Kind::Service,
            },
            value,
        })
        .collect();
    pending.extend(added);
}

/// Adds what `cluster.dns` asks for to the initial objects, as kubeadm would have
/// created them: the `kube-system` namespace (unless declared), the `kube-system/kube-dns`
/// pod (last of the pods, so every other pod is scheduled as without it) and the
/// `kube-dns` Service at the configured address (first of the Services, so no other
/// Service is allocated that address). Errors about them point at `cluster.dns`.
pub(super) fn cluster_dns(src: &Source, dns: &ClusterDns, pending: &mut Vec<Pending>) {
    use crate::dns::{APP_LABEL, NAMESPACE, POD_NAME, SERVICE_NAME};
    let path = "cluster.dns".to_string();
    let declares_ns = pending.iter().any(|p| {
        p.kind == Kind::Namespace && p.value.pointer("/metadata/name") == Some(&json!(NAMESPACE))
    });
    if !declares_ns {
        pending.push(Pending {
            src: src.clone(),
            path: path.clone(),
            value: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            kind: Kind::Namespace,
        });
    }
    let labels = json!({APP_LABEL.0: APP_LABEL.1});
    pending.push(Pending {
        src: src.clone(),
        path: path.clone(),
        value: json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": POD_NAME, "namespace": NAMESPACE, "labels": labels},
            "spec": {"containers": [{"name": "coredns", "image": "knetlab/cluster-dns",
                "ports": [
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}]}]},
        }),
        kind: Kind::Pod,
    });
    let first_service = pending
        .iter()
        .position(|p| p.kind == Kind::Service)
        .unwrap_or(pending.len());
    pending.insert(
        first_service,
        Pending {
            src: src.clone(),
            path,
            value: json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": SERVICE_NAME, "namespace": NAMESPACE, "labels": labels},
                "spec": {"clusterIP": dns.cluster_ip.to_string(), "selector": labels, "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]},
            }),
            kind: Kind::Service,
        },
    );
}

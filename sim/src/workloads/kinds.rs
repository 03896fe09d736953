//! What knetlab does with a manifest's kind, decided from `apiVersion` and `kind`: expand
//! it into pods (workload controllers), accept and list it once in the notes (kinds that
//! cannot change the pod network), refuse it (kinds that do change the network but are
//! not modelled), or leave it to the object decoder (the kinds it reads itself, and
//! anything else, which the decoder reports as unknown).

use crate::workloads::error::WorkloadError;

/// The workload controllers knetlab expands into pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    ReplicationController,
}

impl WorkloadKind {
    /// Every controller knetlab expands.
    pub const ALL: [WorkloadKind; 7] = WORKLOADS;

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::ReplicationController => "ReplicationController",
        }
    }

    /// The apiVersion Kubernetes 1.33 serves the kind as.
    pub fn api_version(self) -> &'static str {
        match self {
            WorkloadKind::Deployment
            | WorkloadKind::ReplicaSet
            | WorkloadKind::StatefulSet
            | WorkloadKind::DaemonSet => "apps/v1",
            WorkloadKind::Job | WorkloadKind::CronJob => "batch/v1",
            WorkloadKind::ReplicationController => "v1",
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What knetlab does with a manifest of some `apiVersion` and `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindClass {
    /// A controller: expanded into the pods it would create ([`crate::workloads::expand`]).
    Workload(WorkloadKind),
    /// Accepted and listed once in the notes: it cannot change who reaches whom.
    NoNetworkEffect,
    /// It changes the pod network and knetlab does not model it: an error (or, later, a
    /// loud warning with `--ignore-unsupported`).
    Unsupported {
        /// What the kind does to the network, for the message.
        what: &'static str,
    },
    /// Not decided here: the object decoder reads it (Namespace, Pod, NetworkPolicy,
    /// Service, Endpoints, Ingress, Secret) or reports it as unknown.
    Decoder,
}

const WORKLOADS: [WorkloadKind; 7] = [
    WorkloadKind::Deployment,
    WorkloadKind::ReplicaSet,
    WorkloadKind::StatefulSet,
    WorkloadKind::DaemonSet,
    WorkloadKind::Job,
    WorkloadKind::CronJob,
    WorkloadKind::ReplicationController,
];

/// Built-in kinds that cannot change the pod network, by API group (`""` is core).
const NO_NETWORK_EFFECT: &[(&str, &str)] = &[
    ("", "ServiceAccount"),
    ("", "ConfigMap"),
    ("", "PersistentVolumeClaim"),
    ("", "PersistentVolume"),
    ("", "LimitRange"),
    ("", "ResourceQuota"),
    ("", "Event"),
    ("", "PodTemplate"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("storage.k8s.io", "StorageClass"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("policy", "PodDisruptionBudget"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("scheduling.k8s.io", "PriorityClass"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("coordination.k8s.io", "Lease"),
    ("events.k8s.io", "Event"),
    ("networking.k8s.io", "IngressClass"),
];

/// Kinds that change the pod network, which knetlab does not model, by API group.
const UNSUPPORTED: &[(&str, &str, &str)] = &[
    (
        "cilium.io",
        "CiliumNetworkPolicy",
        "Cilium's network policy",
    ),
    (
        "cilium.io",
        "CiliumClusterwideNetworkPolicy",
        "Cilium's cluster-wide network policy",
    ),
    (
        "projectcalico.org",
        "NetworkPolicy",
        "Calico's network policy",
    ),
    (
        "crd.projectcalico.org",
        "NetworkPolicy",
        "Calico's network policy",
    ),
    (
        "projectcalico.org",
        "GlobalNetworkPolicy",
        "Calico's cluster-wide network policy",
    ),
    (
        "crd.projectcalico.org",
        "GlobalNetworkPolicy",
        "Calico's cluster-wide network policy",
    ),
    (
        "k8s.cni.cncf.io",
        "MultiNetworkPolicy",
        "policy on secondary networks",
    ),
    (
        "gateway.networking.k8s.io",
        "Gateway",
        "Gateway API routing",
    ),
    (
        "gateway.networking.k8s.io",
        "HTTPRoute",
        "Gateway API routing",
    ),
    (
        "gateway.networking.k8s.io",
        "GRPCRoute",
        "Gateway API routing",
    ),
    (
        "gateway.networking.k8s.io",
        "TLSRoute",
        "Gateway API routing",
    ),
    (
        "gateway.networking.k8s.io",
        "TCPRoute",
        "Gateway API routing",
    ),
    (
        "gateway.networking.k8s.io",
        "UDPRoute",
        "Gateway API routing",
    ),
];

/// The cluster-wide policy tiers of `policy.networking.k8s.io`: the object decoder reads
/// them (and explains a version it does not serve), so they are never taken for custom
/// resources without network effect.
const DECODED_POLICY_TIERS: &[&str] = &[
    "AdminNetworkPolicy",
    "BaselineAdminNetworkPolicy",
    "ClusterNetworkPolicy",
];

/// What knetlab does with a manifest of this `apiVersion` and `kind`.
pub fn classify(api_version: &str, kind: &str) -> KindClass {
    if let Some(w) = WORKLOADS
        .iter()
        .find(|w| w.api_version() == api_version && w.as_str() == kind)
    {
        return KindClass::Workload(*w);
    }
    let group = api_group(api_version);
    if group == "policy.networking.k8s.io" && DECODED_POLICY_TIERS.contains(&kind) {
        return KindClass::Decoder;
    }
    if let Some((_, _, what)) = UNSUPPORTED
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
    {
        return KindClass::Unsupported { what };
    }
    if NO_NETWORK_EFFECT
        .iter()
        .any(|(g, k)| *g == group && *k == kind)
        || is_custom_group(group)
    {
        return KindClass::NoNetworkEffect;
    }
    KindClass::Decoder
}

/// The error for a kind [`classify`] calls [`KindClass::Unsupported`]; `None` otherwise.
pub fn unsupported_error(api_version: &str, kind: &str) -> Option<WorkloadError> {
    match classify(api_version, kind) {
        KindClass::Unsupported { what } => Some(WorkloadError::UnsupportedKind {
            api_version: api_version.into(),
            kind: kind.into(),
            what: what.into(),
        }),
        _ => None,
    }
}

/// `apps/v1` → `apps`, `v1` → `` (core).
fn api_group(api_version: &str) -> &str {
    api_version
        .rsplit_once('/')
        .map_or("", |(group, _version)| group)
}

/// A custom resource's group: not core, not a built-in group (`apps`, `batch`, ...,
/// `*.k8s.io`), and not one of the network-changing groups listed above. `*.x-k8s.io`
/// groups are CRDs by convention (`cluster.x-k8s.io`). Everything in
/// `gateway.networking.k8s.io` and `policy.networking.k8s.io` is a CRD too; the kinds
/// of those groups not listed as unsupported (GatewayClass, ReferenceGrant) only
/// describe, so they count as custom resources without network effect.
fn is_custom_group(group: &str) -> bool {
    const BUILT_IN: &[&str] = &["", "apps", "batch", "autoscaling", "policy", "extensions"];
    const CRD_GROUPS_UNDER_K8S_IO: &[&str] =
        &["gateway.networking.k8s.io", "policy.networking.k8s.io"];
    if CRD_GROUPS_UNDER_K8S_IO.contains(&group) || group.ends_with(".x-k8s.io") {
        return true;
    }
    !(BUILT_IN.contains(&group) || group == "k8s.io" || group.ends_with(".k8s.io"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_expanded_only_under_their_served_api_version() {
        assert_eq!(
            classify("apps/v1", "Deployment"),
            KindClass::Workload(WorkloadKind::Deployment)
        );
        assert_eq!(
            classify("batch/v1", "CronJob"),
            KindClass::Workload(WorkloadKind::CronJob)
        );
        assert_eq!(
            classify("v1", "ReplicationController"),
            KindClass::Workload(WorkloadKind::ReplicationController)
        );
        // Removed APIs are the decoder's to explain.
        assert_eq!(
            classify("extensions/v1beta1", "Deployment"),
            KindClass::Decoder
        );
        assert_eq!(classify("batch/v1beta1", "CronJob"), KindClass::Decoder);
    }

    #[test]
    fn kinds_without_network_effect_are_noted() {
        for (a, k) in [
            ("v1", "ServiceAccount"),
            ("v1", "ConfigMap"),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
            ("v1", "PersistentVolumeClaim"),
            ("storage.k8s.io/v1", "StorageClass"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("policy/v1", "PodDisruptionBudget"),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            ("scheduling.k8s.io/v1", "PriorityClass"),
            (
                "admissionregistration.k8s.io/v1",
                "MutatingWebhookConfiguration",
            ),
            ("cert-manager.io/v1", "Certificate"),
            ("monitoring.coreos.com/v1", "ServiceMonitor"),
            ("cluster.x-k8s.io/v1beta1", "Cluster"),
            ("gateway.networking.k8s.io/v1", "GatewayClass"),
        ] {
            assert_eq!(classify(a, k), KindClass::NoNetworkEffect, "{a} {k}");
        }
    }

    #[test]
    fn network_changing_kinds_are_refused_by_name() {
        for (a, k) in [
            ("cilium.io/v2", "CiliumNetworkPolicy"),
            ("cilium.io/v2", "CiliumClusterwideNetworkPolicy"),
            ("projectcalico.org/v3", "NetworkPolicy"),
            ("crd.projectcalico.org/v1", "GlobalNetworkPolicy"),
            ("k8s.cni.cncf.io/v1beta1", "MultiNetworkPolicy"),
            ("gateway.networking.k8s.io/v1", "HTTPRoute"),
            ("gateway.networking.k8s.io/v1", "Gateway"),
            ("gateway.networking.k8s.io/v1alpha2", "TCPRoute"),
        ] {
            assert!(
                matches!(classify(a, k), KindClass::Unsupported { .. }),
                "{a} {k}"
            );
        }
        let err = unsupported_error("cilium.io/v2", "CiliumNetworkPolicy").unwrap();
        assert!(err.to_string().contains("CiliumNetworkPolicy"));
        assert_eq!(err.path(), "kind");
        assert!(unsupported_error("v1", "ConfigMap").is_none());
    }

    #[test]
    fn the_decoders_kinds_and_unknown_built_ins_stay_with_the_decoder() {
        for (a, k) in [
            ("v1", "Namespace"),
            ("v1", "Pod"),
            ("networking.k8s.io/v1", "NetworkPolicy"),
            ("v1", "Service"),
            ("v1", "Endpoints"),
            ("networking.k8s.io/v1", "Ingress"),
            ("v1", "Secret"),
            ("v1", "Nod"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
            ("policy.networking.k8s.io/v1alpha1", "AdminNetworkPolicy"),
            (
                "policy.networking.k8s.io/v1alpha1",
                "BaselineAdminNetworkPolicy",
            ),
            ("policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy"),
            // A version the decoder does not read is its to explain, never ignored.
            ("policy.networking.k8s.io/v1alpha1", "ClusterNetworkPolicy"),
        ] {
            assert_eq!(classify(a, k), KindClass::Decoder, "{a} {k}");
        }
    }
}

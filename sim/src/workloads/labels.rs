//! The labels (and one annotation) controllers put on the pods they create, on top of
//! the template's: what selectors, `kubectl get -l` and the pod dumps show.

/// A Deployment's ReplicaSet: the template's hash.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// A StatefulSet's (`<name>-<hash>`) or DaemonSet's (`<hash>`) template revision.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
/// A StatefulSet pod's own name, so a Service can select one replica.
pub const STATEFULSET_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
/// A StatefulSet pod's ordinal (Kubernetes ≥ 1.28).
pub const POD_INDEX: &str = "apps.kubernetes.io/pod-index";
/// A Job's uid and name on its pods.
pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The older, unprefixed spellings of the Job's labels, still set.
pub const LEGACY_JOB_CONTROLLER_UID: &str = "controller-uid";
pub const LEGACY_JOB_NAME: &str = "job-name";
/// An Indexed Job's pod's index (label and annotation).
pub const JOB_COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

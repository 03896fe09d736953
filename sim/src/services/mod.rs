//! Services before any proxy sees them: what the API server and the controllers around it
//! do with `v1/Service` and `v1/Endpoints`. Everything here is a pure function over the
//! plain Kubernetes objects of [`crate::objects::ClusterObjects`]:
//!
//! - [`validate`]: the API server's checks on a Service or Endpoints manifest, and a plain
//!   "not supported yet" for the few fields knetlab does not model;
//! - [`alloc`]: the API server's defaulting and allocation (cluster IP, node ports, the
//!   health-check node port) and a load-balancer controller's address assignment,
//!   deterministic, written into the Service itself (`spec.clusterIP`,
//!   `spec.ports[].nodePort`, `status.loadBalancer`), so downstream code reads the object
//!   as `kubectl get svc -o yaml` would show it;
//! - [`endpoints`]: which pods back which service port, as the endpoints and
//!   EndpointSlice controllers compute it, shaped as `v1/Endpoints` and EndpointSlices,
//!   and rendered as text for snapshots;
//! - [`targets`]: what a `nodeport/`, `lb/` or `extip/` probe target names.
//!
//! The Service readers re-exported here read a Service that went through
//! [`crate::objects::service::defaults`] (every stored Service has); on an undefaulted one they fall back to the API server's defaults.

use crate::objects::ClusterObjects;
use crate::protocol::PortProto;

pub mod alloc;
pub mod endpoints;
pub mod render;
pub mod targets;
pub mod validate;

// How to read a stored Service's fields belongs to the objects (the API server's
// defaulting needs it); re-exported here, where every Service helper is looked for.
pub(crate) use crate::objects::service::written_cluster_ip;
pub use crate::objects::service::{
    DEFAULT_AFFINITY_TIMEOUT, ServiceType, cluster_ip, external_ips, external_policy_local,
    externally_accessible, internal_policy_local, is_headless, load_balancer_ips, node_ports,
    port_name, port_protocol, ports, selector, service_key, service_type,
};

/// A Service field the API server (or knetlab) refuses, relative to the object's root
/// (`spec.ports[1].targetPort`); the scenario parser turns it into file, line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Relative field path; empty for the whole object.
    pub path: String,
    /// Whether the mistake is the field being there at all (point at its key) rather
    /// than its value.
    pub at_key: bool,
    pub message: String,
}

impl FieldError {
    pub(crate) fn value(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            at_key: false,
            message: message.into(),
        }
    }

    pub(crate) fn key(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            at_key: true,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "field `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// The `PROTO/port`s a probe target `svc/NS/NAME:PORT` stands for: one per port of the
/// Service numbered `port` (53/TCP and 53/UDP, say), sorted. Empty when the Service or
/// the port does not exist (at this point of the scenario).
pub fn probe_ports(
    objects: &ClusterObjects,
    namespace: &str,
    name: &str,
    port: u16,
) -> Vec<PortProto> {
    let mut out: Vec<PortProto> = objects
        .services
        .get(&(namespace.to_string(), name.to_string()))
        .map(|svc| {
            ports(svc)
                .iter()
                .filter(|p| p.port == i32::from(port))
                .map(|p| PortProto::new(port_protocol(p), port))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

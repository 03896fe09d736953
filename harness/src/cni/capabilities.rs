//! What a runtime passes the CNI chain for one pod, by capability name (libcni's
//! `CapabilityArgs`), built from the pod the way the kubelet and containerd build it:
//! - `portMappings`: every container port with a `hostPort`, as
//!   `{hostPort, containerPort, protocol (lower case), hostIP}`;
//! - `bandwidth`: the `kubernetes.io/{ingress,egress}-bandwidth` annotations in bits per
//!   second, each with a burst. Kubernetes has no burst annotation, and containerd and
//!   CRI-O both pass `math.MaxUint32` bits; knetlab does the same unless the scenario sets
//!   `cluster.cni.burst`. That runtime burst is big enough that the first ~190 MB a
//!   shaped pod sends leave at full speed (kubernetes/kubernetes#90838).
//!
//! A capability is only present when the pod uses it, so plugins see no empty values.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};
use sim::podnet::{self, RUNTIME_BURST_BITS};
use sim::scenario::Scenario;
use sim::scenario::cni::has_capability;

/// The capability names the reference plugins declare.
pub const PORT_MAPPINGS: &str = "portMappings";
pub const BANDWIDTH: &str = "bandwidth";

/// The pod's capability args. `burst` is the scenario's `cluster.cni.burst` (bits);
/// `None` passes the runtimes' value.
pub fn capability_args(pod: &Pod, burst: Option<u64>) -> Result<Map<String, Value>> {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let mut args = Map::new();
    let ports = podnet::port_mappings(pod).with_context(|| format!("pod {name}"))?;
    if !ports.is_empty() {
        let list: Vec<Value> = ports
            .iter()
            .map(|m| {
                let mut v = json!({
                    "hostPort": m.host_port,
                    "containerPort": m.container_port,
                    "protocol": m.protocol.lower(),
                });
                if let Some(ip) = m.host_ip {
                    v["hostIP"] = json!(ip.to_string());
                }
                v
            })
            .collect();
        args.insert(PORT_MAPPINGS.into(), Value::Array(list));
    }
    let bw = podnet::bandwidth(pod).with_context(|| format!("pod {name}"))?;
    if !bw.is_empty() {
        let burst = burst.unwrap_or(RUNTIME_BURST_BITS);
        let mut v = Map::new();
        if let Some(rate) = bw.ingress_bps {
            v.insert("ingressRate".into(), json!(rate));
            v.insert("ingressBurst".into(), json!(burst));
        }
        if let Some(rate) = bw.egress_bps {
            v.insert("egressRate".into(), json!(rate));
            v.insert("egressBurst".into(), json!(burst));
        }
        args.insert(BANDWIDTH.into(), Value::Object(v));
    }
    Ok(args)
}

/// Notes on pod settings the scenario's own CNI list ignores: bandwidth annotations or
/// host ports when no plugin declares the capability. A real cluster ignores them
/// silently; knetlab says so.
pub fn unused_settings(scenario: &Scenario) -> Vec<String> {
    let cni = &scenario.cluster.cni;
    let Some(list) = &cni.conflist else {
        return vec![];
    };
    let origin = cni.origin.as_deref().unwrap_or("the scenario");
    let mut out = vec![];
    for (wanted, cap, what) in [
        (cni.pods_want_bandwidth, BANDWIDTH, "bandwidth annotations"),
        (cni.pods_want_host_ports, PORT_MAPPINGS, "host ports"),
    ] {
        if wanted && !has_capability(list, cap) {
            out.push(format!(
                "some pods have {what}, but no plugin of the CNI list in {origin} declares capabilities.{cap}: the runtime passes them and nothing acts on them"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn annotations_and_host_ports_become_runtime_config() {
        let p = pod(json!({
            "metadata": {"name": "a", "annotations": {"kubernetes.io/egress-bandwidth": "10M"}},
            "spec": {"containers": [{"name": "c", "ports": [
                {"containerPort": 80},
                {"containerPort": 8080, "hostPort": 30080},
                {"containerPort": 53, "hostPort": 30053, "protocol": "UDP", "hostIP": "192.168.200.11"}
            ]}]}
        }));
        let args = capability_args(&p, None).unwrap();
        assert_eq!(
            args[PORT_MAPPINGS],
            json!([
                {"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"},
                {"hostPort": 30053, "containerPort": 53, "protocol": "udp", "hostIP": "192.168.200.11"}
            ])
        );
        assert_eq!(
            args[BANDWIDTH],
            json!({"egressRate": 10_000_000, "egressBurst": 4_294_967_295u64})
        );
        let small = capability_args(&p, Some(1_000_000)).unwrap();
        assert_eq!(small[BANDWIDTH]["egressBurst"], 1_000_000);
        let plain =
            pod(json!({"metadata": {"name": "b"}, "spec": {"containers": [{"name": "c"}]}}));
        assert!(capability_args(&plain, None).unwrap().is_empty());
    }
}

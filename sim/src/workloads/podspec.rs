//! Whole PodSpecs are accepted (probes, volumes, securityContext, lifecycle hooks, env
//! from fieldRef, init containers); this says, as notes, where a spec will not behave as
//! its author may expect in knetlab: init containers serve nothing, and a probe aimed at
//! a port no container declares.

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Notes about a pod spec, each starting with `subject` (`Deployment default/web`).
pub fn pod_spec_notes(subject: &str, spec: &PodSpec) -> Vec<String> {
    let mut notes = Vec::new();
    for init in spec.init_containers.iter().flatten() {
        let ports = port_list(init);
        if ports.is_empty() {
            continue;
        }
        let sidecar = init.restart_policy.as_deref() == Some("Always");
        notes.push(if sidecar {
            format!(
                "{subject}: sidecar init container {:?} declares {ports}; knetlab serves the ports of `containers` only, so these are not served",
                init.name
            )
        } else {
            format!(
                "{subject}: init container {:?} declares {ports}; init containers finish before the pod starts and serve nothing",
                init.name
            )
        });
    }
    let declared: Vec<i32> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten().map(|p| p.container_port))
        .collect();
    for container in &spec.containers {
        for (probe_kind, probe) in [
            ("readinessProbe", &container.readiness_probe),
            ("livenessProbe", &container.liveness_probe),
            ("startupProbe", &container.startup_probe),
        ] {
            let Some(port) = probe.as_ref().and_then(probe_port) else {
                continue;
            };
            if let Some(problem) = undeclared(container, &declared, &port) {
                notes.push(format!(
                    "{subject}: the {probe_kind} of container {:?} {problem}",
                    container.name
                ));
            }
        }
    }
    notes
}

/// The port a probe connects to (`httpGet`, `tcpSocket` or `grpc`); exec probes have none.
fn probe_port(probe: &Probe) -> Option<IntOrString> {
    if let Some(h) = &probe.http_get {
        return Some(h.port.clone());
    }
    if let Some(t) = &probe.tcp_socket {
        return Some(t.port.clone());
    }
    probe.grpc.as_ref().map(|g| IntOrString::Int(g.port))
}

/// Why a probe's port is not served, if it is not: a named port resolves in the probe's
/// own container (as the kubelet resolves it); a number may be any container's.
fn undeclared(container: &Container, declared: &[i32], port: &IntOrString) -> Option<String> {
    match port {
        IntOrString::String(name) => {
            let known = container
                .ports
                .iter()
                .flatten()
                .any(|p| p.name.as_deref() == Some(name.as_str()));
            (!known).then(|| {
                format!(
                    "names port {name:?}, which the container does not declare: the kubelet cannot resolve it, so the probe fails"
                )
            })
        }
        IntOrString::Int(n) => (!declared.contains(n))
            .then(|| format!("probes port {n}, which no container declares, so nothing serves it")),
    }
}

/// `80/TCP, 53/UDP` (`ports 80/TCP` for the message), or empty.
fn port_list(container: &Container) -> String {
    let ports: Vec<String> = container
        .ports
        .iter()
        .flatten()
        .map(|p| {
            format!(
                "{}/{}",
                p.container_port,
                p.protocol.as_deref().unwrap_or("TCP")
            )
        })
        .collect();
    match ports.len() {
        0 => String::new(),
        1 => format!("port {}", ports[0]),
        _ => format!("ports {}", ports.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_whole_pod_spec_is_accepted_quietly() {
        let s = spec(serde_json::json!({
            "initContainers": [{"name": "migrate", "image": "m"}],
            "containers": [{
                "name": "web",
                "image": "nginx",
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                "livenessProbe": {"tcpSocket": {"port": 8080}},
                "startupProbe": {"exec": {"command": ["true"]}},
                "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}},
                "securityContext": {"runAsNonRoot": true},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "securityContext": {"fsGroup": 1000}
        }));
        assert_eq!(pod_spec_notes("Pod default/p", &s), Vec::<String>::new());
    }

    #[test]
    fn init_container_ports_and_stray_probes_are_noted() {
        let s = spec(serde_json::json!({
            "initContainers": [
                {"name": "setup", "ports": [{"containerPort": 9000}]},
                {"name": "proxy", "restartPolicy": "Always", "ports": [{"containerPort": 15001}]}
            ],
            "containers": [
                {"name": "web", "ports": [{"containerPort": 80}],
                 "readinessProbe": {"httpGet": {"port": "http"}},
                 "livenessProbe": {"grpc": {"port": 9090}}},
                {"name": "side", "ports": [{"name": "http", "containerPort": 8080}],
                 "readinessProbe": {"tcpSocket": {"port": 80}}}
            ]
        }));
        let notes = pod_spec_notes("Deployment default/web", &s);
        assert_eq!(notes.len(), 4, "{notes:#?}");
        assert!(notes[0].contains("init container \"setup\" declares port 9000/TCP"));
        assert!(notes[1].contains("sidecar init container \"proxy\""));
        assert!(notes[2].contains("readinessProbe of container \"web\" names port \"http\""));
        assert!(notes[3].contains("livenessProbe of container \"web\" probes port 9090"));
    }
}

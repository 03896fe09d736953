//! What a pod asks of the CNI chain beyond an address, read from its spec the way the
//! kubelet and a container runtime read it: the `kubernetes.io/ingress-bandwidth` and
//! `kubernetes.io/egress-bandwidth` annotations (for the `bandwidth` plugin) and the
//! containers' `hostPort`s (for `portmap`). The parser uses this to reject bad values at
//! their line; the harness to build each pod's CNI `runtimeConfig`.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;

use crate::protocol::Protocol;

/// The annotation limiting traffic into the pod, in bits per second.
pub const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
/// The annotation limiting traffic out of the pod, in bits per second.
pub const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

/// The kubelet's bounds for a bandwidth annotation (`pkg/util/bandwidth`): 1k to 1P.
const MIN_BANDWIDTH: u64 = 1_000;
const MAX_BANDWIDTH: u64 = 1_000_000_000_000_000;

/// The burst containerd and CRI-O pass with every rate (`math.MaxUint32` bits: Kubernetes
/// has no burst annotation). The bandwidth plugin turns it into a token bucket that
/// starts full, so the first ~190 MB leave unshaped (kubernetes/kubernetes#90838).
pub const RUNTIME_BURST_BITS: u64 = u32::MAX as u64;

/// A pod's bandwidth limits, in bits per second (each `None` when not annotated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bandwidth {
    pub ingress_bps: Option<u64>,
    pub egress_bps: Option<u64>,
}

impl Bandwidth {
    pub fn is_empty(&self) -> bool {
        self.ingress_bps.is_none() && self.egress_bps.is_none()
    }
}

/// One host port of a pod: what portmap forwards from the node to the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// `hostIP`: the node address the port is bound to (`None`: every address).
    pub host_ip: Option<Ipv4Addr>,
}

/// A bad annotation or port, naming where it is (an annotation key or a field path
/// relative to the pod, e.g. `spec.containers[0].ports[1].hostPort`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PodNetError {
    /// The annotation key, or the path of the field inside the pod.
    pub at: PodNetField,
    pub message: String,
}

/// Where a [`PodNetError`] points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodNetField {
    Annotation(String),
    /// `(container index, port index, field name)`.
    Port(usize, usize, &'static str),
}

/// The pod's bandwidth annotations, checked as the kubelet checks them
/// (`ExtractPodBandwidthResources`): a Kubernetes quantity between 1k and 1P.
pub fn bandwidth(pod: &Pod) -> Result<Bandwidth, PodNetError> {
    let annotations = pod.metadata.annotations.as_ref();
    let one = |key: &str| -> Result<Option<u64>, PodNetError> {
        let Some(text) = annotations.and_then(|a| a.get(key)) else {
            return Ok(None);
        };
        let err = |message: String| PodNetError {
            at: PodNetField::Annotation(key.to_string()),
            message,
        };
        let v = parse_quantity(text).map_err(|m| err(format!("{key}: {m}")))?;
        if v < MIN_BANDWIDTH {
            return Err(err(format!(
                "{key}: {text:?} is unreasonably small (< 1kbit)"
            )));
        }
        if v > MAX_BANDWIDTH {
            return Err(err(format!(
                "{key}: {text:?} is unreasonably large (> 1Pbit)"
            )));
        }
        Ok(Some(v))
    };
    Ok(Bandwidth {
        ingress_bps: one(INGRESS_BANDWIDTH)?,
        egress_bps: one(EGRESS_BANDWIDTH)?,
    })
}

/// The pod's host ports in declaration order, as the kubelet hands them to the runtime
/// (containers' ports with a `hostPort` above 0). Checks what the API server checks: the
/// port range, and no `hostPort`/protocol/`hostIP` twice in one pod. A hostNetwork pod
/// has none: it gets no CNI call (so no portmap) and listens on the node itself.
pub fn port_mappings(pod: &Pod) -> Result<Vec<PortMapping>, PodNetError> {
    let Some(spec) = &pod.spec else {
        return Ok(vec![]);
    };
    if spec.host_network == Some(true) {
        return Ok(vec![]);
    }
    let mut out: Vec<PortMapping> = Vec::new();
    for (ci, c) in spec.containers.iter().enumerate() {
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            let Some(host) = p.host_port.filter(|h| *h != 0) else {
                continue;
            };
            let err = |field: &'static str, message: String| PodNetError {
                at: PodNetField::Port(ci, pi, field),
                message,
            };
            let host_port = u16::try_from(host).ok().filter(|h| *h > 0).ok_or_else(|| {
                err(
                    "hostPort",
                    format!("hostPort {host} is not a port (1-65535)"),
                )
            })?;
            let container_port = u16::try_from(p.container_port)
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| {
                    err(
                        "containerPort",
                        format!("containerPort {} is not a port (1-65535)", p.container_port),
                    )
                })?;
            let protocol = p
                .protocol
                .as_deref()
                .unwrap_or("TCP")
                .parse::<Protocol>()
                .map_err(|m| err("protocol", m))?;
            let host_ip = match p.host_ip.as_deref().filter(|s| !s.is_empty()) {
                None => None,
                Some(text) => Some(text.parse::<Ipv4Addr>().map_err(|_| {
                    err("hostIP", format!("hostIP {text:?} is not an IPv4 address"))
                })?)
                .filter(|ip| !ip.is_unspecified()),
            };
            let m = PortMapping {
                host_port,
                container_port,
                protocol,
                host_ip,
            };
            if out.iter().any(|o| {
                o.host_port == m.host_port && o.protocol == m.protocol && o.host_ip == m.host_ip
            }) {
                return Err(err(
                    "hostPort",
                    format!("hostPort {host_port}/{protocol} is declared twice in this pod"),
                ));
            }
            out.push(m);
        }
    }
    Ok(out)
}

/// Parses a Kubernetes quantity (`10M`, `1.5Gi`, `500k`, `1e6`) and returns its value
/// rounded up to a whole number, as `resource.Quantity.Value()` does.
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a quantity (for example 10M, 512k or 1Gi)");
    let s = text.trim();
    if s.is_empty() || s.len() != text.len() {
        return Err(bad());
    }
    let (negative, s) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    // The number: digits with at most one decimal point, then the suffix.
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(bad());
    }
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(format!("{text:?} has too many digits"));
    }
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| bad())?
    };
    if negative && mantissa != 0 {
        return Err(format!("{text:?} is negative"));
    }
    let scale = frac_part.len() as i32;
    // value = mantissa * 2^bin * 10^(dec - scale)
    let (bin, dec): (u32, i32) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        other => {
            let exp = other
                .strip_prefix(['e', 'E'])
                .and_then(|e| e.parse::<i32>().ok())
                .filter(|e| e.abs() <= 40)
                .ok_or_else(bad)?;
            (0, exp)
        }
    };
    let too_large = || format!("{text:?} is too large");
    let num = mantissa.checked_shl(bin).filter(|v| v >> bin == mantissa);
    let mut num = num.ok_or_else(too_large)?;
    let exp = dec - scale;
    let mut den: u128 = 1;
    if exp >= 0 {
        num = num
            .checked_mul(10u128.checked_pow(exp as u32).ok_or_else(too_large)?)
            .ok_or_else(too_large)?;
    } else {
        den = 10u128.checked_pow((-exp) as u32).ok_or_else(too_large)?;
    }
    let value = num.div_ceil(den);
    u64::try_from(value).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        for (text, want) in [
            ("10M", 10_000_000),
            ("10", 10),
            ("1k", 1_000),
            ("1Ki", 1_024),
            ("1.5M", 1_500_000),
            ("1.5Gi", 1_610_612_736),
            ("100m", 1), // rounded up, as Quantity.Value() does
            ("1e6", 1_000_000),
            ("2E3", 2_000),
            ("1E", 1_000_000_000_000_000_000),
            (".5k", 500),
            ("+7", 7),
            ("0", 0),
            ("1P", 1_000_000_000_000_000),
        ] {
            assert_eq!(parse_quantity(text), Ok(want), "{text}");
        }
        for bad in [
            "", "M", "10 M", "10MB", "1.2.3", "-5", "ten", "1e", "10mi", " 10M", "1e999",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_quantity("100Ei").is_err(), "larger than u64");
    }

    #[test]
    fn bandwidth_annotations_are_checked_like_the_kubelet() {
        let p = pod(json!({"metadata": {"name": "a", "annotations": {
            INGRESS_BANDWIDTH: "10M", EGRESS_BANDWIDTH: "1Gi"}}}));
        assert_eq!(
            bandwidth(&p).unwrap(),
            Bandwidth {
                ingress_bps: Some(10_000_000),
                egress_bps: Some(1 << 30)
            }
        );
        let none = pod(json!({"metadata": {"name": "a"}}));
        assert!(bandwidth(&none).unwrap().is_empty());
        for (v, words) in [
            ("500", "unreasonably small"),
            ("2P", "unreasonably large"),
            ("fast", "not a quantity"),
        ] {
            let p = pod(json!({"metadata": {"name": "a", "annotations": {EGRESS_BANDWIDTH: v}}}));
            let e = bandwidth(&p).unwrap_err();
            assert!(e.message.contains(words), "{v}: {e}");
            assert_eq!(e.at, PodNetField::Annotation(EGRESS_BANDWIDTH.into()));
        }
    }

    #[test]
    fn host_ports_become_port_mappings() {
        let p = pod(json!({"metadata": {"name": "a"}, "spec": {"containers": [
        {"name": "c", "ports": [
            {"containerPort": 80},
            {"containerPort": 8080, "hostPort": 30080},
            {"containerPort": 53, "hostPort": 30053, "protocol": "UDP", "hostIP": "192.168.200.11"}
        ]}]}}));
        assert_eq!(
            port_mappings(&p).unwrap(),
            vec![
                PortMapping {
                    host_port: 30080,
                    container_port: 8080,
                    protocol: Protocol::Tcp,
                    host_ip: None
                },
                PortMapping {
                    host_port: 30053,
                    container_port: 53,
                    protocol: Protocol::Udp,
                    host_ip: Some(Ipv4Addr::new(192, 168, 200, 11))
                },
            ]
        );
        let twice = pod(json!({"metadata": {"name": "a"}, "spec": {"containers": [
            {"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]},
            {"name": "d", "ports": [{"containerPort": 81, "hostPort": 8080}]}]}}));
        let e = port_mappings(&twice).unwrap_err();
        assert_eq!(e.at, PodNetField::Port(1, 0, "hostPort"));
        let range = pod(json!({"metadata": {"name": "a"}, "spec": {"containers": [
            {"name": "c", "ports": [{"containerPort": 80, "hostPort": 70000}]}]}}));
        assert!(
            port_mappings(&range)
                .unwrap_err()
                .message
                .contains("not a port")
        );
    }
}

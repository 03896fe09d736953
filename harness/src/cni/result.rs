//! What CNI plugins print: the CNI 1.0 result (interfaces, IPs, routes, DNS) on success
//! and the error object (`{"code", "msg", "details"}`) on failure. Fields knetlab does not
//! model are kept in `extra`, so a result passed on as `prevResult` loses nothing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A CNI 1.0 result, as the bridge, host-local and loopback plugins print it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An interface the plugin created or used; `sandbox` is set for the ones inside the pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An address given to an interface (`interface` indexes [`CniResult::interfaces`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    /// The address with its prefix length, e.g. `10.244.1.2/24`.
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A route the plugin installed in the pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// DNS settings (the plugins knetlab runs leave this empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The error object a plugin prints on stdout when it fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginError {
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl CniResult {
    /// The first IPv4 address given to a pod-side interface called `ifname`, with its
    /// gateway. Falls back to the first IPv4 address on a sandbox interface when the
    /// plugin did not say which interface an address belongs to.
    pub fn ipv4_of(&self, ifname: &str) -> Option<(Ipv4Net, Option<Ipv4Addr>)> {
        let on_sandbox = |ip: &IpConfig, want_name: bool| {
            ip.interface
                .and_then(|i| self.interfaces.get(i))
                .is_some_and(|iface| {
                    iface.sandbox.is_some() && (!want_name || iface.name == ifname)
                })
        };
        let v4 = |ip: &IpConfig| match (ip.address, ip.gateway) {
            (IpNet::V4(a), Some(IpAddr::V4(g))) => Some((a, Some(g))),
            (IpNet::V4(a), _) => Some((a, None)),
            _ => None,
        };
        self.ips
            .iter()
            .filter(|ip| on_sandbox(ip, true))
            .find_map(v4)
            .or_else(|| {
                self.ips
                    .iter()
                    .filter(|ip| on_sandbox(ip, false))
                    .find_map(v4)
            })
    }

    /// The interfaces the plugin made outside the pod (the bridge and the host-side veth).
    pub fn host_interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.interfaces.iter().filter(|i| i.sandbox.is_none())
    }

    /// The host-side interfaces of the first plugin of a chain (the bridge and the pod's
    /// veth): the ones listed before its first sandbox interface. Chained plugins append
    /// theirs after it (bandwidth's `ifb`, which is no bridge port).
    pub fn wiring_interfaces(&self) -> impl Iterator<Item = &Interface> {
        let first_sandbox = self
            .interfaces
            .iter()
            .position(|i| i.sandbox.is_some())
            .unwrap_or(self.interfaces.len());
        self.interfaces[..first_sandbox]
            .iter()
            .filter(|i| i.sandbox.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What /usr/lib/cni/bridge 1.1.1 printed on this machine (this-machine.md §2).
    const BRIDGE_RESULT: &str = r#"{
        "cniVersion": "1.0.0",
        "interfaces": [
            { "name": "cni0", "mac": "ea:d1:76:20:16:ca" },
            { "name": "vethfae7aece", "mac": "86:5a:f9:04:ea:db" },
            { "name": "eth0", "mac": "66:80:37:72:66:c0", "sandbox": "/var/run/netns/fz-p1" }
        ],
        "ips": [ { "interface": 2, "address": "10.244.1.2/24", "gateway": "10.244.1.1" } ],
        "routes": [ { "dst": "0.0.0.0/0" } ],
        "dns": {}
    }"#;

    #[test]
    fn bridge_result_parses_and_names_the_pod_address() {
        let r: CniResult = serde_json::from_str(BRIDGE_RESULT).unwrap();
        let (addr, gw) = r.ipv4_of("eth0").unwrap();
        assert_eq!(addr.to_string(), "10.244.1.2/24");
        assert_eq!(gw, Some(Ipv4Addr::new(10, 244, 1, 1)));
        let host: Vec<&str> = r.host_interfaces().map(|i| i.name.as_str()).collect();
        assert_eq!(host, ["cni0", "vethfae7aece"]);
        let mut chained = r.clone();
        chained.interfaces.push(Interface {
            name: "bwpe3d126b67ffe".into(),
            mac: String::new(),
            mtu: None,
            sandbox: None,
            extra: Default::default(),
        });
        let wiring: Vec<&str> = chained
            .wiring_interfaces()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(wiring, ["cni0", "vethfae7aece"]);
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
        assert!(r.ipv4_of("lo").is_some(), "falls back to a sandbox address");
    }

    #[test]
    fn results_round_trip_without_losing_unknown_fields() {
        let mut v: Value = serde_json::from_str(BRIDGE_RESULT).unwrap();
        v["interfaces"][0]["socketPath"] = "/x".into();
        v["future"] = serde_json::json!({"a": 1});
        let r: CniResult = serde_json::from_value(v.clone()).unwrap();
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["future"], v["future"]);
        assert_eq!(back["interfaces"][0]["socketPath"], "/x");
        assert_eq!(back["ips"], v["ips"]);
    }

    #[test]
    fn loopback_result_with_ipv6_parses() {
        let r: CniResult = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"lo","mac":"00:00:00:00:00:00","sandbox":"/var/run/netns/p"}],
                "ips":[{"interface":0,"address":"127.0.0.1/8"},{"interface":0,"address":"::1/128"}],"dns":{}}"#,
        )
        .unwrap();
        assert_eq!(r.ipv4_of("lo").unwrap().0.to_string(), "127.0.0.1/8");
        assert_eq!(r.ipv4_of("lo").unwrap().1, None);
    }

    #[test]
    fn plugin_errors_parse() {
        let e: PluginError =
            serde_json::from_str(r#"{"code":999,"msg":"Required prevResult missing"}"#).unwrap();
        assert_eq!(e.code, 999);
        assert_eq!(e.details, "");
    }
}

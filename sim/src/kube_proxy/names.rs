//! The names kube-proxy's iptables mode gives its chains, computed byte for byte the way
//! kube-proxy computes them (`pkg/proxy/iptables/proxier.go`, `portProtoHash` and
//! `servicePortEndpointChainName`), so that `KUBE-SVC-…` and `KUBE-SEP-…` in a simulated
//! node are the names a student will later meet on a real node for the same service.
//!
//! The hash is the first 16 characters of `base32(sha256(input))` (RFC 4648 alphabet,
//! padding never reached), where the input is the service port name (`ns/name:port`, or
//! `ns/name` for an unnamed port), then the lower-case protocol, then for endpoint chains
//! the endpoint as Go's `net.JoinHostPort` writes it (`10.0.0.1:80`, `[fd00::1]:80`), all
//! concatenated without separators. It is the same hash function kube-router's names use,
//! so [`crate::render::names::hash16`] is shared.

use std::net::IpAddr;

use crate::protocol::Protocol;
use crate::render::names::hash16;

/// nat and filter: one rule per service IP, jumped to from PREROUTING/OUTPUT (nat) and
/// FORWARD/OUTPUT for new connections (filter).
pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
/// filter: REJECT/DROP for external IPs, load-balancer IPs and NodePorts without endpoints.
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
/// nat: one rule per NodePort; filter: ACCEPT for health-check node ports.
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
/// nat: MASQUERADE for marked packets.
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
/// nat: sets the masquerade mark.
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
/// filter: forwarding of marked and established traffic.
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
/// filter: drops load-balancer traffic `loadBalancerSourceRanges` did not admit.
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
/// mangle, nat, filter: the empty chain whose disappearance tells kube-proxy that someone
/// flushed iptables.
pub const KUBE_PROXY_CANARY: &str = "KUBE-PROXY-CANARY";
/// filter: kubelet's anti-martian chain, which kube-proxy duplicates.
pub const KUBE_FIREWALL: &str = "KUBE-FIREWALL";

/// "Cluster" traffic-policy dispatch chain of a service port.
pub const SVC_PREFIX: &str = "KUBE-SVC-";
/// "Local" traffic-policy dispatch chain (node-local endpoints only).
pub const SVL_PREFIX: &str = "KUBE-SVL-";
/// External destinations (NodePort, external IPs, load-balancer IPs).
pub const EXT_PREFIX: &str = "KUBE-EXT-";
/// `loadBalancerSourceRanges` filter.
pub const FW_PREFIX: &str = "KUBE-FW-";
/// One endpoint: hairpin mark and DNAT.
pub const SEP_PREFIX: &str = "KUBE-SEP-";

/// The prefixes of the per-service chains kube-proxy deletes when stale
/// (`isServiceChainName`).
pub const SERVICE_CHAIN_PREFIXES: [&str; 5] =
    [SVC_PREFIX, SVL_PREFIX, SEP_PREFIX, FW_PREFIX, EXT_PREFIX];

/// `ServicePortName.String()`: `namespace/name`, plus `:port` only when the port has a
/// name.
pub fn service_port_name(namespace: &str, name: &str, port_name: Option<&str>) -> String {
    match port_name.filter(|p| !p.is_empty()) {
        Some(port) => format!("{namespace}/{name}:{port}"),
        None => format!("{namespace}/{name}"),
    }
}

/// `portProtoHash`: the 16-character suffix shared by a service port's SVC, SVL, EXT and
/// FW chains.
pub fn port_proto_hash(service_port_name: &str, protocol: Protocol) -> String {
    hash16(&[service_port_name, protocol.lower()])
}

/// `KUBE-SVC-<hash>`.
pub fn cluster_policy_chain(service_port_name: &str, protocol: Protocol) -> String {
    format!(
        "{SVC_PREFIX}{}",
        port_proto_hash(service_port_name, protocol)
    )
}

/// `KUBE-SVL-<hash>`.
pub fn local_policy_chain(service_port_name: &str, protocol: Protocol) -> String {
    format!(
        "{SVL_PREFIX}{}",
        port_proto_hash(service_port_name, protocol)
    )
}

/// `KUBE-EXT-<hash>`.
pub fn external_chain(service_port_name: &str, protocol: Protocol) -> String {
    format!(
        "{EXT_PREFIX}{}",
        port_proto_hash(service_port_name, protocol)
    )
}

/// `KUBE-FW-<hash>` (24 characters: the prefix is one shorter).
pub fn firewall_chain(service_port_name: &str, protocol: Protocol) -> String {
    format!(
        "{FW_PREFIX}{}",
        port_proto_hash(service_port_name, protocol)
    )
}

/// `KUBE-SEP-<hash>` of one endpoint; `endpoint` is `ip:port` as [`join_host_port`]
/// writes it.
pub fn endpoint_chain(service_port_name: &str, protocol: Protocol, endpoint: &str) -> String {
    format!(
        "{SEP_PREFIX}{}",
        hash16(&[service_port_name, protocol.lower(), endpoint])
    )
}

/// Go's `net.JoinHostPort`: `ip:port`, with IPv6 addresses in brackets.
pub fn join_host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// Whether a nat chain is a per-service chain kube-proxy owns and may delete when stale.
pub fn is_service_chain_name(name: &str) -> bool {
    SERVICE_CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use data_encoding::BASE32;
    use sha2::{Digest, Sha256};
    use std::net::Ipv4Addr;

    /// Every row of the reference's hash table (§1.4): the exact input bytes and the chain
    /// name. The first five are verbatim in kube-proxy's own golden tests.
    #[test]
    fn chain_names_match_the_published_vectors() {
        let tcp = Protocol::Tcp;
        let udp = Protocol::Udp;
        let ep = |ip: [u8; 4], port| join_host_port(IpAddr::from(Ipv4Addr::from(ip)), port);

        let svc1 = service_port_name("ns1", "svc1", Some("p80"));
        assert_eq!(svc1, "ns1/svc1:p80");
        assert_eq!(
            cluster_policy_chain(&svc1, tcp),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            endpoint_chain(&svc1, tcp, &ep([10, 180, 0, 1], 80)),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );

        let svc5 = service_port_name("ns5", "svc5", Some("p80"));
        assert_eq!(
            cluster_policy_chain(&svc5, tcp),
            "KUBE-SVC-NUKIZ6OKUXPJNT4C"
        );
        assert_eq!(external_chain(&svc5, tcp), "KUBE-EXT-NUKIZ6OKUXPJNT4C");
        assert_eq!(firewall_chain(&svc5, tcp), "KUBE-FW-NUKIZ6OKUXPJNT4C");
        assert_eq!(local_policy_chain(&svc5, tcp), "KUBE-SVL-NUKIZ6OKUXPJNT4C");

        let svc4 = service_port_name("ns4", "svc4", Some("p80"));
        assert_eq!(
            endpoint_chain(&svc4, tcp, &ep([10, 180, 0, 4], 80)),
            "KUBE-SEP-UKSFD7AGPMPPLUHC"
        );
        assert_eq!(
            endpoint_chain(&svc4, tcp, &ep([10, 180, 0, 5], 80)),
            "KUBE-SEP-C6EBXVWJJZMIWKLZ"
        );

        let nginx = service_port_name("default", "nginx-service", Some("http"));
        assert_eq!(
            cluster_policy_chain(&nginx, tcp),
            "KUBE-SVC-6IM33IEVEEV7U3GP"
        );
        assert_eq!(
            endpoint_chain(&nginx, tcp, &ep([10, 244, 1, 5], 80)),
            "KUBE-SEP-XZBMABGU65WCSBQV"
        );
        assert_eq!(
            endpoint_chain(&nginx, tcp, &ep([10, 244, 2, 7], 80)),
            "KUBE-SEP-ZAFOM24KKU3TSBE6"
        );

        // An unnamed port drops the colon: the input is `default/nginx-servicetcp`.
        let unnamed = service_port_name("default", "nginx-service", None);
        assert_eq!(unnamed, "default/nginx-service");
        assert_eq!(
            service_port_name("default", "nginx-service", Some("")),
            unnamed
        );
        assert_eq!(
            cluster_policy_chain(&unnamed, tcp),
            "KUBE-SVC-V2OKYYMBY3REGZOG"
        );

        let api = service_port_name("default", "kubernetes", Some("https"));
        assert_eq!(cluster_policy_chain(&api, tcp), "KUBE-SVC-NPX46M4PTMTKRN6Y");
        let dns = service_port_name("kube-system", "kube-dns", Some("dns"));
        assert_eq!(cluster_policy_chain(&dns, udp), "KUBE-SVC-TCOU7JCQXEZGVUNU");
        let dns_tcp = service_port_name("kube-system", "kube-dns", Some("dns-tcp"));
        assert_eq!(
            cluster_policy_chain(&dns_tcp, tcp),
            "KUBE-SVC-ERIFXISQEP7F7OF4"
        );

        // IPv6 endpoints are bracketed before hashing.
        let v6: IpAddr = "fd00:10:180::1".parse().unwrap();
        assert_eq!(join_host_port(v6, 80), "[fd00:10:180::1]:80");
        assert_eq!(
            endpoint_chain(&svc1, tcp, &join_host_port(v6, 80)),
            "KUBE-SEP-OGYCNMB4EMRUSJ6N"
        );
    }

    /// The encoder vector of §1.4: the full base32 text, of which the hash is a prefix.
    #[test]
    fn base32_encoder_vector() {
        let full = BASE32.encode(&Sha256::digest(b"ns1/svc1:p80tcp"));
        assert_eq!(
            full,
            "XPGD46QRK7WJZT7ONRPOTZ5VR35MJ4TXQWCF6RBTQMVGOUHJFHOQ===="
        );
        assert_eq!(port_proto_hash("ns1/svc1:p80", Protocol::Tcp), full[..16]);
    }

    #[test]
    fn names_fit_iptables_and_are_recognised() {
        let spn = service_port_name(
            "a-very-long-namespace-name",
            "and-a-long-service",
            Some("x"),
        );
        for name in [
            cluster_policy_chain(&spn, Protocol::Sctp),
            local_policy_chain(&spn, Protocol::Sctp),
            external_chain(&spn, Protocol::Sctp),
            endpoint_chain(&spn, Protocol::Sctp, "10.0.0.1:1"),
        ] {
            assert_eq!(name.len(), 25);
            assert!(is_service_chain_name(&name));
        }
        assert_eq!(firewall_chain(&spn, Protocol::Sctp).len(), 24);
        assert!(!is_service_chain_name(KUBE_SERVICES));
        assert!(!is_service_chain_name(KUBE_MARK_MASQ));
        assert!(!is_service_chain_name("KUBE-SEPX"));
        // The protocol is part of the hash.
        assert_ne!(
            cluster_policy_chain(&spn, Protocol::Tcp),
            cluster_policy_chain(&spn, Protocol::Udp)
        );
    }
}

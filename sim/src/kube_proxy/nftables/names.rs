//! The names kube-proxy's nftables mode gives its per-service chains and affinity sets
//! (`servicePortChainNameBase`, `servicePortEndpointChainNameBase`, `hashAndTruncate`):
//! 8 characters of the same sha256/base32 hash the iptables names use, then the readable
//! name, so a chain's name says which Service port (and endpoint) it serves.

use std::net::IpAddr;

use super::AFFINITY_PREFIX;
use crate::protocol::Protocol;
use crate::render::names::hash16;

/// knftables' `NameLengthMax` less the longest prefix (`chainNameBaseLengthMax`).
const CHAIN_NAME_BASE_MAX: usize = 256 - 16;

/// `hashAndTruncate`: the first 8 characters of base32(sha256(name)), a dash, the name
/// (cut to fit with `...` if it ever had to be).
pub fn hash_and_truncate(name: &str) -> String {
    let hash = hash16(&[name]);
    let mut out = format!("{}-{name}", &hash[..8]);
    if out.len() > CHAIN_NAME_BASE_MAX {
        let mut cut = CHAIN_NAME_BASE_MAX - 3;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// `servicePortChainNameBase`: `HASH-ns/name/proto/portName` (an unnamed port leaves
/// the last part empty). Prefix it with `service-`, `local-`, `external-`, `firewall-`.
pub fn service_port_chain_base(
    namespace: &str,
    name: &str,
    protocol: Protocol,
    port_name: Option<&str>,
) -> String {
    hash_and_truncate(&format!(
        "{namespace}/{name}/{}/{}",
        protocol.lower(),
        port_name.unwrap_or("")
    ))
}

/// `servicePortEndpointChainNameBase`: `HASH-ns/name/proto/portName__ip/port` (IPv6
/// colons become dots). Prefix it with `endpoint-` or `affinity-`.
pub fn endpoint_chain_base(
    namespace: &str,
    name: &str,
    protocol: Protocol,
    port_name: Option<&str>,
    ip: IpAddr,
    port: u16,
) -> String {
    let ip = ip.to_string().replace(':', ".");
    hash_and_truncate(&format!(
        "{namespace}/{name}/{}/{}__{ip}/{port}",
        protocol.lower(),
        port_name.unwrap_or("")
    ))
}

/// kube-proxy's `isServiceChainName`: per-service chains are the ones with a `/`.
pub fn is_service_chain_name(name: &str) -> bool {
    name.contains('/')
}

/// kube-proxy's `isAffinitySetName`.
pub fn is_affinity_set_name(name: &str) -> bool {
    name.starts_with(AFFINITY_PREFIX)
}

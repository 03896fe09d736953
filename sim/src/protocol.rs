//! Transport protocols and `PROTO/port` pairs, the unit in which matrices are drawn.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A Kubernetes transport protocol (`TCP`, `UDP`, `SCTP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// The name Kubernetes uses (`TCP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// The lower-case form iptables and kube-proxy hashes use (`tcp`).
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(format!(
                "unknown protocol {other:?} (expected TCP, UDP or SCTP)"
            )),
        }
    }
}

/// A protocol and port, written `TCP/80`. Orders by protocol, then port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortProto {
    pub protocol: Protocol,
    pub port: u16,
}

impl PortProto {
    pub fn new(protocol: Protocol, port: u16) -> Self {
        Self { protocol, port }
    }
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

impl FromStr for PortProto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, port) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not PROTO/port (for example TCP/80)"))?;
        let protocol = proto.parse()?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{port:?} is not a port number (1-65535)"))?;
        Ok(Self { protocol, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_proto_round_trips() {
        let p: PortProto = "UDP/81".parse().unwrap();
        assert_eq!(p, PortProto::new(Protocol::Udp, 81));
        assert_eq!(p.to_string(), "UDP/81");
        assert!("tcp/80".parse::<PortProto>().is_err());
        assert!("TCP/0".parse::<PortProto>().is_err());
        assert!("TCP80".parse::<PortProto>().is_err());
    }
}

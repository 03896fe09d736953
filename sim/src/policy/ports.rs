//! The `ports[]` of a policy rule, resolved: protocol defaulting, numeric ports, `endPort`
//! ranges and named ports, which are looked up on the destination pod.

use std::fmt;

use k8s_openapi::api::networking::v1::NetworkPolicyPort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::objects::DeclaredPort;
use crate::protocol::{PortProto, Protocol};

/// One `ports[]` entry of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEntry {
    /// Position in the rule's `ports` list.
    pub index: usize,
    pub matcher: PortMatcher,
}

/// What one `ports[]` entry opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMatcher {
    /// No `port`: every port of the protocol (`{}` is TCP on every port).
    AllPorts(Protocol),
    /// `port` (with `first == last`) or `port..=endPort`.
    Range {
        protocol: Protocol,
        first: u16,
        last: u16,
    },
    /// A named port, resolved on each destination pod against its container ports; it
    /// opens the port only where a container port has this name AND this protocol.
    Named { protocol: Protocol, name: String },
    /// Something the API server would refuse (an unknown protocol, port 0, `endPort`
    /// below `port`...): it opens nothing.
    Invalid(String),
}

/// A protocol and a set of ports on it, as a rule opens them on one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpan {
    pub protocol: Protocol,
    /// `None` = every port; otherwise `first..=last`.
    pub range: Option<(u16, u16)>,
}

impl PortSpan {
    pub fn contains(&self, port: PortProto) -> bool {
        self.protocol == port.protocol
            && self
                .range
                .is_none_or(|(first, last)| (first..=last).contains(&port.port))
    }
}

impl fmt::Display for PortSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.range {
            None => write!(f, "{} (every port)", self.protocol),
            Some((a, b)) if a == b => write!(f, "{}/{a}", self.protocol),
            Some((a, b)) => write!(f, "{}/{a}-{b}", self.protocol),
        }
    }
}

impl PortEntry {
    /// Reads one `ports[]` entry. Never fails: what the API server would refuse becomes
    /// [`PortMatcher::Invalid`], which opens nothing.
    pub fn from_spec(index: usize, spec: &NetworkPolicyPort) -> Self {
        Self {
            index,
            matcher: matcher_from_spec(spec),
        }
    }

    /// The ports this entry opens on a destination whose declared container ports are
    /// `dest_ports` (`None` when the destination is not a pod: named ports open nothing
    /// there). A named port resolves to the first declared port with that name and
    /// protocol.
    pub fn on(&self, dest_ports: Option<&[DeclaredPort]>) -> Option<PortSpan> {
        match &self.matcher {
            PortMatcher::AllPorts(protocol) => Some(PortSpan {
                protocol: *protocol,
                range: None,
            }),
            PortMatcher::Range {
                protocol,
                first,
                last,
            } => Some(PortSpan {
                protocol: *protocol,
                range: Some((*first, *last)),
            }),
            PortMatcher::Named { protocol, name } => dest_ports?
                .iter()
                .find(|d| d.name.as_deref() == Some(name) && d.port.protocol == *protocol)
                .map(|d| PortSpan {
                    protocol: *protocol,
                    range: Some((d.port.port, d.port.port)),
                }),
            PortMatcher::Invalid(_) => None,
        }
    }

    /// Whether this entry opens `port` on that destination.
    pub fn allows(&self, dest_ports: Option<&[DeclaredPort]>, port: PortProto) -> bool {
        self.on(dest_ports).is_some_and(|s| s.contains(port))
    }

    /// The protocol this entry is about, when it is valid.
    pub fn protocol(&self) -> Option<Protocol> {
        match &self.matcher {
            PortMatcher::AllPorts(p) => Some(*p),
            PortMatcher::Range { protocol, .. } | PortMatcher::Named { protocol, .. } => {
                Some(*protocol)
            }
            PortMatcher::Invalid(_) => None,
        }
    }

    /// Whether the entry is a named port (resolved per destination pod).
    pub fn is_named(&self) -> bool {
        matches!(self.matcher, PortMatcher::Named { .. })
    }
}

impl fmt::Display for PortEntry {
    /// `TCP/80`, `TCP/8000-9000`, `TCP/http (named)`, `UDP (every port)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.matcher {
            PortMatcher::AllPorts(p) => write!(f, "{p} (every port)"),
            PortMatcher::Range {
                protocol,
                first,
                last,
            } => PortSpan {
                protocol: *protocol,
                range: Some((*first, *last)),
            }
            .fmt(f),
            PortMatcher::Named { protocol, name } => write!(f, "{protocol}/{name} (named port)"),
            PortMatcher::Invalid(why) => write!(f, "invalid ({why}; opens nothing)"),
        }
    }
}

fn matcher_from_spec(spec: &NetworkPolicyPort) -> PortMatcher {
    let protocol = match spec.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(p) => match p.parse::<Protocol>() {
            Ok(p) => p,
            Err(e) => return PortMatcher::Invalid(e),
        },
    };
    let port_number = |n: i32| u16::try_from(n).ok().filter(|n| *n != 0);
    match &spec.port {
        // `endPort` without `port` is refused by the API server; reading the entry as
        // "every port of the protocol" would open more than the author can have meant.
        None if spec.end_port.is_some() => {
            PortMatcher::Invalid("endPort without a numeric port".into())
        }
        None => PortMatcher::AllPorts(protocol),
        Some(IntOrString::Int(n)) => {
            let Some(first) = port_number(*n) else {
                return PortMatcher::Invalid(format!("port {n} is not 1-65535"));
            };
            let last = match spec.end_port {
                None => first,
                Some(e) => match port_number(e) {
                    Some(last) if last >= first => last,
                    _ => {
                        return PortMatcher::Invalid(format!(
                            "endPort {e} is not between port {first} and 65535"
                        ));
                    }
                },
            };
            PortMatcher::Range {
                protocol,
                first,
                last,
            }
        }
        Some(IntOrString::String(s)) => {
            if spec.end_port.is_some() {
                PortMatcher::Invalid(format!("endPort needs a numeric port, not {s:?}"))
            } else if let Ok(n) = s.parse::<i32>() {
                // The API server treats a numeric string as the number.
                matcher_from_spec(&NetworkPolicyPort {
                    port: Some(IntOrString::Int(n)),
                    ..spec.clone()
                })
            } else {
                PortMatcher::Named {
                    protocol,
                    name: s.clone(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(protocol: Option<&str>, port: Option<IntOrString>, end: Option<i32>) -> PortEntry {
        PortEntry::from_spec(
            0,
            &NetworkPolicyPort {
                protocol: protocol.map(Into::into),
                port,
                end_port: end,
            },
        )
    }

    fn tcp(n: u16) -> PortProto {
        PortProto::new(Protocol::Tcp, n)
    }

    #[test]
    fn empty_entry_is_tcp_every_port() {
        let e = entry(None, None, None);
        assert_eq!(e.matcher, PortMatcher::AllPorts(Protocol::Tcp));
        assert!(e.allows(None, tcp(1)));
        assert!(!e.allows(None, PortProto::new(Protocol::Udp, 1)));
        assert_eq!(e.to_string(), "TCP (every port)");
    }

    #[test]
    fn invalid_entries_open_nothing() {
        for e in [
            entry(Some("ICMP"), Some(IntOrString::Int(80)), None),
            entry(None, Some(IntOrString::Int(0)), None),
            entry(None, Some(IntOrString::Int(70000)), None),
            entry(None, Some(IntOrString::Int(90)), Some(80)),
            entry(None, None, Some(80)),
            entry(None, Some(IntOrString::String("http".into())), Some(80)),
        ] {
            assert!(matches!(e.matcher, PortMatcher::Invalid(_)), "{e:?}");
            for p in 1..=100 {
                assert!(!e.allows(None, tcp(p)));
            }
        }
    }

    #[test]
    fn numeric_string_is_a_number() {
        let e = entry(None, Some(IntOrString::String("80".into())), None);
        assert!(e.allows(None, tcp(80)));
        assert!(!e.is_named());
    }

    #[test]
    fn named_port_opens_nothing_off_pod() {
        let e = entry(None, Some(IntOrString::String("http".into())), None);
        assert!(e.on(None).is_none());
        let declared = [DeclaredPort {
            name: Some("http".into()),
            port: tcp(8080),
        }];
        assert!(e.allows(Some(&declared), tcp(8080)));
        assert!(!e.allows(Some(&declared), tcp(80)));
        assert_eq!(e.to_string(), "TCP/http (named port)");
    }
}

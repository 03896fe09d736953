//! One iptables rule of the enforcer, built part by part and written in the order
//! `iptables-save` prints its parts, so the text loaded is the text read back; and the
//! small spellings rules share (deny target, protocol name, port span).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::cluster::DenyStyle;
use crate::policy::PortSpan;
use crate::protocol::Protocol;

use super::super::names::save_quote;
use super::super::ruleset;

/// One rule, written in the order `iptables-save` prints its parts, so the text we load
/// is the text we read back.
#[derive(Debug, Clone, Default)]
pub(super) struct Rule {
    src: Option<Ipv4Addr>,
    dst: Option<Ipv4Addr>,
    proto: Option<&'static str>,
    comment: Option<String>,
    matches: Vec<String>,
    target: String,
    /// `-g` (go to) rather than `-j`: the target chain's end returns to the chain that
    /// jumped to this one, not here.
    goto: bool,
}

impl Rule {
    pub(super) fn new() -> Self {
        Self::default()
    }
    pub(super) fn src(mut self, ip: Ipv4Addr) -> Self {
        self.src = Some(ip);
        self
    }
    pub(super) fn dst(mut self, ip: Ipv4Addr) -> Self {
        self.dst = Some(ip);
        self
    }
    pub(super) fn proto(mut self, p: &'static str) -> Self {
        self.proto = Some(p);
        self
    }
    pub(super) fn comment(mut self, c: impl Into<String>) -> Self {
        self.comment = Some(c.into());
        self
    }
    pub(super) fn m(mut self, m: impl Into<String>) -> Self {
        self.matches.push(m.into());
        self
    }
    pub(super) fn jump(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self.goto = false;
        self
    }
    pub(super) fn goto(mut self, chain: impl Into<String>) -> Self {
        self.target = chain.into();
        self.goto = true;
        self
    }

    /// The rule without `-A CHAIN`.
    pub(super) fn spec(&self) -> String {
        let mut s = String::new();
        if let Some(ip) = self.src {
            let _ = write!(s, " -s {ip}/32");
        }
        if let Some(ip) = self.dst {
            let _ = write!(s, " -d {ip}/32");
        }
        if let Some(p) = self.proto {
            let _ = write!(s, " -p {p}");
        }
        if let Some(c) = &self.comment {
            // The comment match holds at most 255 bytes.
            let c = ruleset::truncate_bytes(c, 255);
            let _ = write!(s, " -m comment --comment {}", save_quote(c));
        }
        for m in &self.matches {
            let _ = write!(s, " {m}");
        }
        let flag = if self.goto { "-g" } else { "-j" };
        let _ = write!(s, " {flag} {}", self.target);
        s.trim_start().to_string()
    }

    pub(super) fn line(&self, chain: &str) -> String {
        format!("-A {chain} {}", self.spec())
    }
}

/// What a pod chain does with traffic no policy allowed.
pub(super) fn deny_target(deny: DenyStyle) -> &'static str {
    match deny {
        // Not kube-router's plain REJECT (port-unreachable, which reads as a closed port):
        // admin-prohibited gives the client EHOSTUNREACH, "a filter said no".
        DenyStyle::Reject => "REJECT --reject-with icmp-admin-prohibited",
        DenyStyle::Drop => "DROP",
    }
}

/// The protocol as iptables names it.
pub(super) fn proto_name(p: Protocol) -> &'static str {
    p.lower()
}

/// `-p PROTO` plus `-m PROTO --dport N[:M]` for one span (no port match for "every port").
pub(super) fn with_span(rule: Rule, span: Option<&PortSpan>) -> Rule {
    match span {
        None => rule,
        Some(s) => {
            let p = proto_name(s.protocol);
            let rule = rule.proto(p);
            match s.range {
                None => rule,
                Some((a, b)) if a == b => rule.m(format!("-m {p} --dport {a}")),
                Some((a, b)) => rule.m(format!("-m {p} --dport {a}:{b}")),
            }
        }
    }
}

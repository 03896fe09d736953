//! How iptables prints rules back (`iptables-save`, nft backend, v1.8): the words of a
//! rule put in the order and spelling `iptables-save` uses, so that what kube-proxy wrote
//! can be compared with what a node holds.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::render::names::save_quote;

/// What `iptables-save` prints for a probability kube-proxy wrote: the kernel keeps
/// `lround(p * 2^31)` (31-bit fixed point) and iptables prints that back divided by 2^31
/// with 11 decimals (`0.3333333333` → `0.33333333349`).
pub fn saved_probability(written: &str) -> Option<String> {
    let p: f64 = written.trim().parse().ok()?;
    if !(0.0..=1.0).contains(&p) {
        return None;
    }
    const SCALE: f64 = 2_147_483_648.0;
    // `f64::round` rounds half away from zero, like C's lround.
    let fixed = (p * SCALE).round();
    Some(format!("{:.11}", fixed / SCALE))
}

/// A word of a rule line; `quoted` words came in double quotes and are never options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Word {
    pub(super) text: String,
    pub(super) quoted: bool,
}

/// Splits a restore line into words the way iptables-restore does: on blanks, with
/// double quotes grouping (and `\"` escaping a quote inside them).
pub(super) fn split_words(line: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_quotes && matches!(chars.peek(), Some('"') | Some('\\')) => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                in_quotes = !in_quotes;
                quoted = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if !cur.is_empty() || quoted {
                    words.push(Word {
                        text: std::mem::take(&mut cur),
                        quoted,
                    });
                }
                quoted = false;
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() || quoted {
        words.push(Word { text: cur, quoted });
    }
    words
}

/// One `--option values…` of a match or target.
#[derive(Debug, Clone)]
pub(super) struct Opt {
    inverted: bool,
    name: String,
    values: Vec<Word>,
}

impl Opt {
    fn value(&self) -> &str {
        self.values.first().map(|w| w.text.as_str()).unwrap_or("")
    }
}

/// A `-m NAME` match or the `-j NAME` target with its options.
#[derive(Debug, Clone)]
pub(super) struct Module {
    name: String,
    opts: Vec<Opt>,
}

/// A rule spec (everything after `-A CHAIN`) taken apart.
#[derive(Debug, Clone, Default)]
pub(super) struct Spec {
    source: Option<(bool, String)>,
    destination: Option<(bool, String)>,
    in_iface: Option<(bool, String)>,
    out_iface: Option<(bool, String)>,
    protocol: Option<(bool, String)>,
    matches: Vec<Module>,
    target: Option<Module>,
    goto: bool,
}

/// A bare `!` (it inverts what follows; a quoted "!" is a value).
pub(super) fn is_negation(w: &Word) -> bool {
    !w.quoted && w.text == "!"
}

pub(super) fn is_option(w: &Word) -> bool {
    !w.quoted && w.text.starts_with('-') && w.text.len() > 1
}

pub(super) fn parse_spec(words: &[Word]) -> Spec {
    enum Cur {
        None,
        Match(usize),
        Target,
    }
    let mut spec = Spec::default();
    let mut cur = Cur::None;
    let mut inverted = false;
    let mut i = 0;
    let next = |i: usize| words.get(i + 1).map(|w| w.text.clone()).unwrap_or_default();
    while i < words.len() {
        let w = &words[i];
        if is_negation(w) {
            inverted = true;
            i += 1;
            continue;
        }
        let header = match (w.quoted, w.text.as_str()) {
            (false, "-s" | "--source" | "--src") => Some(&mut spec.source),
            (false, "-d" | "--destination" | "--dst") => Some(&mut spec.destination),
            (false, "-i" | "--in-interface") => Some(&mut spec.in_iface),
            (false, "-o" | "--out-interface") => Some(&mut spec.out_iface),
            (false, "-p" | "--protocol") => Some(&mut spec.protocol),
            _ => None,
        };
        if let Some(slot) = header {
            *slot = Some((inverted, next(i)));
            inverted = false;
            i += 2;
            continue;
        }
        match (w.quoted, w.text.as_str()) {
            (false, "-m" | "--match") => {
                spec.matches.push(Module {
                    name: next(i),
                    opts: Vec::new(),
                });
                cur = Cur::Match(spec.matches.len() - 1);
                i += 2;
            }
            (false, "-j" | "--jump" | "-g" | "--goto") => {
                spec.goto = matches!(w.text.as_str(), "-g" | "--goto");
                spec.target = Some(Module {
                    name: next(i),
                    opts: Vec::new(),
                });
                cur = Cur::Target;
                i += 2;
            }
            _ => {
                let mut j = i + 1;
                let mut values = Vec::new();
                while j < words.len() && !is_option(&words[j]) && !is_negation(&words[j]) {
                    values.push(words[j].clone());
                    j += 1;
                }
                let opt = Opt {
                    inverted,
                    name: w.text.clone(),
                    values,
                };
                inverted = false;
                match cur {
                    Cur::Match(m) => spec.matches[m].opts.push(opt),
                    Cur::Target => {
                        if let Some(t) = spec.target.as_mut() {
                            t.opts.push(opt)
                        }
                    }
                    Cur::None => {
                        // An option before any `-m`: iptables loads the protocol's match
                        // implicitly (`-p tcp --dport 80`).
                        let name = spec
                            .protocol
                            .as_ref()
                            .map(|(_, p)| p.to_ascii_lowercase())
                            .unwrap_or_default();
                        spec.matches.push(Module {
                            name,
                            opts: vec![opt],
                        });
                        cur = Cur::Match(spec.matches.len() - 1);
                    }
                }
                i = j;
            }
        }
    }
    spec
}

/// `-s`/`-d` as iptables prints them: address/prefix, the address masked.
pub(super) fn saved_address(value: &str) -> String {
    if let Ok(net) = value.parse::<Ipv4Net>() {
        return net.trunc().to_string();
    }
    if let Ok(ip) = value.parse::<Ipv4Addr>() {
        return format!("{ip}/32");
    }
    if let Some((addr, mask)) = value.split_once('/')
        && let (Ok(addr), Ok(mask)) = (addr.parse::<Ipv4Addr>(), mask.parse::<Ipv4Addr>())
    {
        let bits = u32::from(mask);
        if bits.leading_ones() + bits.trailing_zeros() == 32
            && let Ok(net) = Ipv4Net::new(addr, bits.leading_ones() as u8)
        {
            return net.trunc().to_string();
        }
    }
    value.to_string()
}

pub(super) fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `VALUE[/MASK]` → (value, mask), mask defaulting to all ones.
pub(super) fn parse_mark(s: &str) -> Option<(u32, u32)> {
    match s.split_once('/') {
        Some((v, m)) => Some((parse_u32(v)?, parse_u32(m)?)),
        None => Some((parse_u32(s)?, u32::MAX)),
    }
}

pub(super) fn push_inv(out: &mut String, inverted: bool) {
    if inverted {
        out.push_str(" !");
    }
}

/// Options printed as given (modules we have no special knowledge of).
pub(super) fn save_generic(out: &mut String, opts: &[Opt]) {
    for o in opts {
        push_inv(out, o.inverted);
        let _ = write!(out, " {}", o.name);
        for v in &o.values {
            if v.quoted {
                let _ = write!(out, " {}", save_quote(&v.text));
            } else {
                let _ = write!(out, " {}", v.text);
            }
        }
    }
}

/// Options in a fixed order (`order` lists option names with their aliases, the first
/// being the printed name); the rest follow as given.
pub(super) fn save_ordered(out: &mut String, opts: &[Opt], order: &[&[&str]]) {
    let mut used = vec![false; opts.len()];
    for names in order {
        for (k, o) in opts.iter().enumerate() {
            if !used[k] && names.contains(&o.name.as_str()) {
                used[k] = true;
                push_inv(out, o.inverted);
                let _ = write!(out, " {}", names[0]);
                for v in &o.values {
                    let _ = write!(out, " {}", v.text);
                }
            }
        }
    }
    let rest: Vec<Opt> = opts
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(o, _)| o.clone())
        .collect();
    save_generic(out, &rest);
}

pub(super) const CT_STATES: [&str; 7] = [
    "INVALID",
    "NEW",
    "RELATED",
    "ESTABLISHED",
    "UNTRACKED",
    "SNAT",
    "DNAT",
];

pub(super) fn save_match(out: &mut String, m: &Module) {
    let _ = write!(out, " -m {}", m.name);
    match m.name.as_str() {
        "comment" => {
            for o in &m.opts {
                let _ = write!(out, " --comment {}", save_quote(o.value()));
            }
        }
        "tcp" | "udp" | "sctp" | "udplite" | "dccp" => save_ordered(
            out,
            &m.opts,
            &[
                &["--sport", "--source-port"],
                &["--dport", "--destination-port"],
            ],
        ),
        "mark" => {
            for o in &m.opts {
                push_inv(out, o.inverted);
                match parse_mark(o.value()) {
                    Some((v, mask)) if mask == u32::MAX => {
                        let _ = write!(out, " --mark {v:#x}");
                    }
                    Some((v, mask)) => {
                        let _ = write!(out, " --mark {v:#x}/{mask:#x}");
                    }
                    None => {
                        let _ = write!(out, " {} {}", o.name, o.value());
                    }
                }
            }
        }
        "conntrack" => {
            for o in &m.opts {
                push_inv(out, o.inverted);
                if o.name == "--ctstate" {
                    let given: Vec<String> = o
                        .value()
                        .split(',')
                        .map(|s| s.to_ascii_uppercase())
                        .collect();
                    let mut states: Vec<&str> = CT_STATES
                        .iter()
                        .copied()
                        .filter(|s| given.iter().any(|g| g == s))
                        .collect();
                    // Anything unknown is kept at the end rather than lost.
                    let unknown: Vec<&str> = given
                        .iter()
                        .map(String::as_str)
                        .filter(|g| !CT_STATES.contains(g))
                        .collect();
                    states.extend(unknown);
                    let _ = write!(out, " --ctstate {}", states.join(","));
                } else {
                    let _ = write!(out, " {}", o.name);
                    for v in &o.values {
                        let _ = write!(out, " {}", v.text);
                    }
                }
            }
        }
        "addrtype" => save_ordered(out, &m.opts, &[&["--src-type"], &["--dst-type"]]),
        "statistic" => {
            let mode = m.opts.iter().find(|o| o.name == "--mode").map(Opt::value);
            if mode == Some("random") {
                let _ = write!(out, " --mode random");
                for o in m.opts.iter().filter(|o| o.name == "--probability") {
                    push_inv(out, o.inverted);
                    let p = saved_probability(o.value()).unwrap_or_else(|| o.value().to_string());
                    let _ = write!(out, " --probability {p}");
                }
            } else {
                save_generic(out, &m.opts);
            }
        }
        "recent" => save_recent(out, &m.opts),
        _ => save_generic(out, &m.opts),
    }
}

/// libxt_recent's save order: the action, `--seconds`, `--reap`, `--hitcount`, `--rttl`,
/// `--name`, `--mask` (default all ones), `--rsource`/`--rdest` (default source).
pub(super) fn save_recent(out: &mut String, opts: &[Opt]) {
    let find = |n: &str| opts.iter().find(|o| o.name == n);
    let has = |n: &str| find(n).is_some();
    if opts.iter().any(|o| o.inverted) {
        out.push_str(" !");
    }
    for action in ["--set", "--rcheck", "--update", "--remove"] {
        if has(action) {
            let _ = write!(out, " {action}");
        }
    }
    if let Some(o) = find("--seconds") {
        let _ = write!(out, " --seconds {}", o.value());
    }
    if has("--reap") {
        out.push_str(" --reap");
    }
    if let Some(o) = find("--hitcount") {
        let _ = write!(out, " --hitcount {}", o.value());
    }
    if has("--rttl") {
        out.push_str(" --rttl");
    }
    let name = find("--name").map(Opt::value).unwrap_or("DEFAULT");
    let mask = find("--mask").map(Opt::value).unwrap_or("255.255.255.255");
    let side = if has("--rdest") {
        "--rdest"
    } else {
        "--rsource"
    };
    let _ = write!(out, " --name {name} --mask {mask} {side}");
}

/// REJECT's `--reject-with` names as iptables prints them, with the aliases it accepts.
pub(super) fn reject_name(with: &str) -> &str {
    match with {
        "icmp-net-unreachable" | "net-unreach" => "icmp-net-unreachable",
        "icmp-host-unreachable" | "host-unreach" => "icmp-host-unreachable",
        "icmp-proto-unreachable" | "proto-unreach" => "icmp-proto-unreachable",
        "icmp-port-unreachable" | "port-unreach" => "icmp-port-unreachable",
        "icmp-net-prohibited" | "net-prohib" => "icmp-net-prohibited",
        "icmp-host-prohibited" | "host-prohib" => "icmp-host-prohibited",
        "icmp-admin-prohibited" | "admin-prohib" => "icmp-admin-prohibited",
        "tcp-reset" | "tcp-rst" => "tcp-reset",
        other => other,
    }
}

pub(super) fn save_target(out: &mut String, t: &Module, goto: bool) {
    let _ = write!(out, " {} {}", if goto { "-g" } else { "-j" }, t.name);
    match t.name.as_str() {
        "MARK" => {
            for o in &t.opts {
                let xmark = parse_mark(o.value()).map(|(v, m)| match o.name.as_str() {
                    "--or-mark" => (v, v),
                    "--xor-mark" => (v, 0),
                    "--and-mark" => (0, !v),
                    "--set-mark" => (v, if m == u32::MAX { u32::MAX } else { v | m }),
                    _ => (v, m),
                });
                match xmark {
                    Some((v, m)) => {
                        let _ = write!(out, " --set-xmark {v:#x}/{m:#x}");
                    }
                    None => save_generic(out, std::slice::from_ref(o)),
                }
            }
        }
        "REJECT" => {
            let with = t
                .opts
                .iter()
                .find(|o| o.name == "--reject-with")
                .map(Opt::value)
                .unwrap_or("icmp-port-unreachable");
            let _ = write!(out, " --reject-with {}", reject_name(with));
        }
        "MASQUERADE" => save_ordered(
            out,
            &t.opts,
            &[&["--to-ports"], &["--random"], &["--random-fully"]],
        ),
        _ => save_generic(out, &t.opts),
    }
}

/// The rule spec in `iptables-save` form, and its jump target.
pub(super) fn saved_spec(words: &[Word]) -> (String, Option<String>) {
    let spec = parse_spec(words);
    let mut out = String::new();
    for (flag, field, addr) in [
        ("-s", &spec.source, true),
        ("-d", &spec.destination, true),
        ("-i", &spec.in_iface, false),
        ("-o", &spec.out_iface, false),
        ("-p", &spec.protocol, false),
    ] {
        if let Some((inv, value)) = field {
            let value = if addr {
                saved_address(value)
            } else if flag == "-p" {
                value.to_ascii_lowercase()
            } else {
                value.clone()
            };
            if addr && value == "0.0.0.0/0" && !inv {
                continue; // matches everything: iptables does not print it
            }
            push_inv(&mut out, *inv);
            let _ = write!(out, " {flag} {value}");
        }
    }
    for m in &spec.matches {
        save_match(&mut out, m);
    }
    let target = spec.target.as_ref().map(|t| t.name.clone());
    if let Some(t) = &spec.target {
        save_target(&mut out, t, spec.goto);
    }
    (out, target)
}

/// A rule line (`-A CHAIN …` as kube-proxy writes it for `iptables-restore`, or as
/// `iptables-save` printed it) in the form `iptables-save` prints: `-s`/`-d` first with a
/// prefix length, then `-p`, then the matches in their order with their options in the
/// module's order, comments quoted when not a bare word, marks in short hex with
/// `--set-xmark`, probabilities with 11 decimals, `recent` with its defaults spelled out,
/// REJECT with its `--reject-with`. Idempotent; lines that are not rules come back as
/// they were.
pub fn normalise_rule(line: &str) -> String {
    let words = split_words(line);
    match words.first().map(|w| w.text.as_str()) {
        Some("-A" | "--append") if words.len() >= 2 => {
            let (spec, _) = saved_spec(&words[2..]);
            format!("-A {}{spec}", words[1].text)
        }
        _ => line.to_string(),
    }
}

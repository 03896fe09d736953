//! `${ip:NS/POD}` (the pod's IPv4 address) and `${cidr:NS/POD}` (`IP/32`) in a
//! manifest's strings: finding them (to check that the pods exist by then) and
//! substituting the addresses when the manifest is applied.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::Value;

use super::source::Source;
use super::yaml::{join_index, join_key};
use crate::error::ScenarioError;
use crate::objects::PodRef;
use crate::peers::Peer;

/// The pods whose addresses a manifest uses, sorted and without repeats. References
/// that are not well formed are left out (the parser reports them).
pub(super) fn referenced_pods(value: &Value) -> Vec<PodRef> {
    let mut out = BTreeSet::new();
    walk_strings(value, &mut |s| {
        if let Ok(refs) = placeholders(s) {
            out.extend(refs.into_iter().map(|p| p.pod));
        }
    });
    out.into_iter().collect()
}

/// One placeholder in a string: its byte range, the pod, and whether it wants `/32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placeholder {
    range: std::ops::Range<usize>,
    pod: PodRef,
    cidr: bool,
}

/// Finds the placeholders of a string. Other `${...}` text is left alone.
pub(super) fn placeholders(s: &str) -> Result<Vec<Placeholder>, String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = s[from..].find("${").map(|i| i + from) {
        let body = &s[i + 2..];
        let (cidr, rest) = if let Some(r) = body.strip_prefix("ip:") {
            (false, r)
        } else if let Some(r) = body.strip_prefix("cidr:") {
            (true, r)
        } else {
            from = i + 2;
            continue;
        };
        let Some(end) = rest.find('}') else {
            return Err(format!("`{}` has no closing `}}`", &s[i..]));
        };
        let target = &rest[..end];
        let pod = match target.parse::<Peer>() {
            Ok(Peer::Pod(p)) => p,
            _ => {
                return Err(format!(
                    "`{target}` is not a pod: write ${{ip:NS/POD}} or ${{cidr:NS/POD}}"
                ));
            }
        };
        let stop = i + 2 + (body.len() - rest.len()) + end + 1;
        out.push(Placeholder {
            range: i..stop,
            pod,
            cidr,
        });
        from = stop;
    }
    Ok(out)
}

/// Every well-formed placeholder of a manifest: the field path of its string, the pod,
/// and the placeholder as written.
pub(super) fn placeholder_uses(value: &Value, path: &str) -> Vec<(String, PodRef, String)> {
    let mut out = Vec::new();
    collect_uses(value, path, &mut out);
    out
}

fn collect_uses(value: &Value, path: &str, out: &mut Vec<(String, PodRef, String)>) {
    match value {
        Value::String(s) => {
            for p in placeholders(s).unwrap_or_default() {
                out.push((path.to_string(), p.pod, s[p.range].to_string()));
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                collect_uses(v, &join_index(path, i), out);
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                collect_uses(v, &join_key(path, k), out);
            }
        }
        _ => {}
    }
}

fn walk_strings(value: &Value, f: &mut dyn FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|v| walk_strings(v, f)),
        Value::Object(m) => m.values().for_each(|v| walk_strings(v, f)),
        _ => {}
    }
}

/// Replaces every placeholder with the pod's address; an error names the string's field.
pub(super) fn substitute(
    src: &Source,
    path: &str,
    value: &Value,
    pod_ip: &dyn Fn(&PodRef) -> Option<Ipv4Addr>,
) -> Result<Value, ScenarioError> {
    Ok(match value {
        Value::String(s) => {
            let found = placeholders(s).map_err(|e| src.at_value(path, e))?;
            let mut out = String::with_capacity(s.len());
            let mut last = 0;
            for p in found {
                let ip = pod_ip(&p.pod).ok_or_else(|| {
                    src.at_value(
                        path,
                        format!(
                            "pod {} has no IP address at this point, so `{}` cannot be filled in",
                            p.pod,
                            &s[p.range.clone()]
                        ),
                    )
                })?;
                out.push_str(&s[last..p.range.start]);
                out.push_str(&ip.to_string());
                if p.cidr {
                    out.push_str("/32");
                }
                last = p.range.end;
            }
            out.push_str(&s[last..]);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, v)| substitute(src, &join_index(path, i), v, pod_ip))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), substitute(src, &join_key(path, k), v, pod_ip)?)))
                .collect::<Result<_, ScenarioError>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_placeholders() {
        let p = placeholders("a ${ip:x/a} b ${cidr:y/b}${HOME}").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].pod, PodRef::new("x", "a"));
        assert!(!p[0].cidr);
        assert_eq!(
            &"a ${ip:x/a} b ${cidr:y/b}${HOME}"[p[1].range.clone()],
            "${cidr:y/b}"
        );
        assert!(p[1].cidr);
        assert!(placeholders("${ip:x/a").is_err());
        assert!(placeholders("${ip:node/n1}").is_err());
        assert!(placeholders("${ip:xa}").is_err());
    }

    #[test]
    fn referenced_pods_are_sorted_and_unique() {
        let v = serde_json::json!({"a": ["${cidr:y/b}", {"c": "${ip:x/a}-${ip:y/b}"}], "d": "${ip:bad}"});
        assert_eq!(
            referenced_pods(&v),
            vec![PodRef::new("x", "a"), PodRef::new("y", "b")]
        );
    }
}

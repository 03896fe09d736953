//! Checks both API versions make the same way: list limits, "exactly one of", port
//! numbers and ranges, CIDRs, rule names, and the refusal of `domainNames`.

use ipnet::IpNet;

use crate::cluster_policy::error::ClusterPolicyError;
use crate::cluster_policy::model::PortMatch;
use crate::protocol::Protocol;

/// At most `max` items (`+kubebuilder:validation:MaxItems`).
pub(super) fn at_most<T>(items: &[T], max: usize, path: &str) -> Result<(), ClusterPolicyError> {
    if items.len() > max {
        return Err(ClusterPolicyError::invalid(
            path,
            format!("must have at most {max} items, not {}", items.len()),
        ));
    }
    Ok(())
}

/// Between one and `max` items (`MinItems=1`, `MaxItems`).
pub(super) fn one_to<T>(items: &[T], max: usize, path: &str) -> Result<(), ClusterPolicyError> {
    if items.is_empty() {
        return Err(ClusterPolicyError::invalid(
            path,
            "must have at least 1 item",
        ));
    }
    at_most(items, max, path)
}

/// Exactly one of the named fields is set (`MinProperties=1`, `MaxProperties=1`).
pub(super) fn exactly_one(set: &[(&str, bool)], path: &str) -> Result<(), ClusterPolicyError> {
    let names: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
    let chosen: Vec<&str> = set.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
    if chosen.len() == 1 {
        return Ok(());
    }
    let what = if chosen.is_empty() {
        "none is set".to_string()
    } else {
        format!("{} are all set", chosen.join(", "))
    };
    Err(ClusterPolicyError::invalid(
        path,
        format!("exactly one of {} must be set; {what}", names.join(", ")),
    ))
}

/// A rule's `name`: at most 100 characters.
pub(super) fn rule_name(name: &str, path: &str) -> Result<(), ClusterPolicyError> {
    if name.chars().count() > 100 {
        return Err(ClusterPolicyError::invalid(
            format!("{path}.name"),
            "may not be longer than 100 characters",
        ));
    }
    Ok(())
}

/// A port number, 1–65535.
pub(super) fn port(value: i64, path: &str) -> Result<u16, ClusterPolicyError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            ClusterPolicyError::invalid(path, format!("must be between 1 and 65535, not {value}"))
        })
}

/// A port range: both ends valid and `start < end` (the CRD's CEL rule).
pub(super) fn port_range(
    protocol: Protocol,
    start: i64,
    end: i64,
    path: &str,
) -> Result<PortMatch, ClusterPolicyError> {
    let s = port(start, &format!("{path}.start"))?;
    let e = port(end, &format!("{path}.end"))?;
    if s >= e {
        return Err(ClusterPolicyError::invalid(
            path,
            format!("Start port must be less than End port ({start} >= {end})"),
        ));
    }
    Ok(PortMatch::Range {
        protocol,
        start: s,
        end: e,
    })
}

/// A named port: a non-empty IANA service name (at most 15 characters).
pub(super) fn named_port(name: &str, path: &str) -> Result<PortMatch, ClusterPolicyError> {
    if name.is_empty() || name.len() > 15 {
        return Err(ClusterPolicyError::invalid(
            path,
            format!("{name:?} is not a port name (1 to 15 characters)"),
        ));
    }
    Ok(PortMatch::Named(name.to_string()))
}

/// `networks`: 1–25 CIDRs, each parsing (`isCIDR`).
pub(super) fn networks(cidrs: &[String], path: &str) -> Result<Vec<IpNet>, ClusterPolicyError> {
    one_to(cidrs, 25, path)?;
    cidrs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.parse::<IpNet>().map_err(|_| {
                ClusterPolicyError::invalid(
                    format!("{path}[{i}]"),
                    format!("Invalid CIDR format provided: {c:?}"),
                )
            })
        })
        .collect()
}

/// `domainNames` peers need the implementation to follow DNS answers; knetlab cannot
/// predict them, and ignoring the peer would widen or narrow the policy silently.
pub(super) fn domain_names(path: &str) -> ClusterPolicyError {
    ClusterPolicyError::unsupported(
        path,
        "domainNames peers match the addresses DNS gives for those names at run time",
    )
}

/// A v1alpha1 protocol name (`TCP`, `UDP`, `SCTP`; absent means TCP).
pub(super) fn protocol(value: Option<&str>, path: &str) -> Result<Protocol, ClusterPolicyError> {
    match value {
        None => Ok(Protocol::Tcp),
        Some(p) => p
            .parse()
            .map_err(|e: String| ClusterPolicyError::invalid(path, e)),
    }
}

//! The name rules the Kubernetes API server enforces (apimachinery's `validation`
//! package): DNS-1123 labels and subdomains for object names, qualified names and label
//! values for labels, IANA service names for container ports. Each check returns why a
//! name is wrong, so the error can say it. Also the looser rule for a name a probe asks
//! the cluster DNS for.

const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;
const SVC_NAME_MAX: usize = 15;

fn dns_label_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 label (namespace names, container names, node names).
pub fn dns_label(s: &str) -> Result<(), String> {
    if s.len() > LABEL_MAX {
        return Err(format!("{s:?} is longer than {LABEL_MAX} characters"));
    }
    if !dns_label_chars_ok(s) {
        return Err(format!(
            "{s:?} is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// A DNS-1035 label (Service names): a DNS-1123 label that starts with a letter, because
/// a Service's name becomes part of environment variable and DNS names.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    dns_label(s)?;
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "{s:?} is not a DNS-1035 label (a Service name must start with a lower-case letter)"
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain (pod and policy names; label-key prefixes).
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > SUBDOMAIN_MAX {
        return Err(format!("{s:?} is longer than {SUBDOMAIN_MAX} characters"));
    }
    if !s.split('.').all(dns_label_chars_ok) {
        return Err(format!(
            "{s:?} is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters; `what` names it.
fn name_part(s: &str, what: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    let ok = !b.is_empty()
        && b.len() <= LABEL_MAX
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter()
            .all(|c| alnum(c) || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid {what} (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        ))
    }
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name.
pub fn label_key(s: &str) -> Result<(), String> {
    let name = match s.split_once('/') {
        Some((prefix, name)) => {
            dns_subdomain(prefix).map_err(|e| format!("label key {s:?}: prefix {e}"))?;
            name
        }
        None => s,
    };
    name_part(name, "label key name")
}

/// A label value: empty, or a name.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        Ok(())
    } else {
        name_part(s, "label value")
    }
}

/// An IANA service name (container port names, named policy ports).
pub fn iana_svc_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let err = |why: &str| Err(format!("port name {s:?} {why}"));
    if b.is_empty() || b.len() > SVC_NAME_MAX {
        return err("must be 1 to 15 characters long");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return err("may contain only lower-case letters, digits and '-'");
    }
    if !b.iter().any(|c| c.is_ascii_lowercase()) {
        return err("must contain at least one letter");
    }
    if b[0] == b'-' || b[b.len() - 1] == b'-' || s.contains("--") {
        return err("may not start or end with '-' or contain '--'");
    }
    Ok(())
}

/// Checks a name a probe asks the cluster DNS for: dot-separated labels of letters,
/// digits, `-` and `_` (SRV owner names), 1-63 characters each, 253 in all, optionally
/// absolute (a trailing dot).
pub fn check_dns_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() || bare.len() > 253 {
        return Err("a DNS name has 1 to 253 characters".into());
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("label {label:?} must have 1 to 63 characters"));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "label {label:?} may only hold letters, digits, '-' and '_'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns_label("x").is_ok());
        assert!(dns_label("a-1").is_ok());
        assert!(dns_label("A").is_err());
        assert!(dns_label("-a").is_err());
        assert!(dns_label("a.b").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns1035_label("web-1").is_ok());
        assert!(dns1035_label("1web").is_err());
        assert!(dns1035_label("Web").is_err());
        assert!(dns_subdomain("a.b-c").is_ok());
        assert!(dns_subdomain("a..b").is_err());
        assert!(label_key("app.kubernetes.io/name").is_ok());
        assert!(label_key("kubernetes.io/metadata.name").is_ok());
        assert!(label_key("Team_1").is_ok());
        assert!(label_key("/x").is_err());
        assert!(label_key("a/b/c").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("blue.1").is_ok());
        assert!(label_value("a b").is_err());
        assert!(iana_svc_name("serve-80-tcp").is_ok());
        assert!(iana_svc_name("serve-10000-sctp").is_err());
        assert!(iana_svc_name("80").is_err());
        assert!(iana_svc_name("a--b").is_err());
    }
}

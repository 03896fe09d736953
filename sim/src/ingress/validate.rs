//! What an Ingress (and the TLS Secret it names) must satisfy before the controller
//! renders it into nginx.conf: the API server's rules (`pkg/apis/networking/validation`)
//! plus ingress-nginx's own path validation (`strict-validate-path-type`, on by default
//! since v1.12). Each check returns why a value is wrong; the scenario parser places the
//! message at the field (file:line:col). ingress-nginx's history (CVE-2021-25742,
//! CVE-2023-5043, CVE-2025-1974) is configuration injected through these fields.
//!
//! Paths: every pathType must start with `/`; `Exact` and `Prefix` may not contain `//`,
//! `/./`, `/../`, `%2f`, `%2F` nor end in `/..` or `/.` (API server), and may hold only
//! letters, digits, `.`, `_`, `-` and `/` (ingress-nginx: `^/[[:alnum:]._\-/]*$`).
//! `ImplementationSpecific` is a regular expression in ingress-nginx only with its
//! `use-regex` annotation, which knetlab does not honour: knetlab routes it as `Prefix`,
//! so it gets the same rules (a regex or an nginx token there would mean something other
//! than what knetlab routes). Paths are at most [`PATH_MAX`] characters: nginx refuses a
//! configuration token longer than its 4 KiB buffer.

use std::net::IpAddr;

use crate::names;

/// The longest path accepted.
pub const PATH_MAX: usize = 1024;

/// `spec.rules[].host` and `spec.tls[].hosts[]`: a DNS-1123 subdomain, optionally with
/// one leading `*.` wildcard label, never an IP address.
pub fn host(h: &str) -> Result<(), String> {
    if h.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "bad host {h:?}: must be a DNS name, not an IP address"
        ));
    }
    let plain = h.strip_prefix("*.").unwrap_or(h);
    names::dns_subdomain(plain).map_err(|e| {
        format!("bad host {h:?}: {e} (a wildcard is only allowed as the whole first label, `*.`)")
    })
}

/// `spec.rules[].http.paths[].path` for its `pathType` (see the module's rules).
pub fn path(path_type: &str, path: &str) -> Result<(), String> {
    let shown = shorten(path);
    if !path.starts_with('/') {
        return Err(format!("path {shown} must be absolute (start with /)"));
    }
    if path.len() > PATH_MAX {
        return Err(format!(
            "path of {} characters is longer than {PATH_MAX} (nginx refuses longer tokens)",
            path.len()
        ));
    }
    for seq in ["//", "/./", "/../", "%2f", "%2F"] {
        if path.contains(seq) {
            return Err(format!("path {shown} must not contain {seq:?}"));
        }
    }
    for suffix in ["/..", "/."] {
        if path.ends_with(suffix) {
            return Err(format!("path {shown} must not end with {suffix:?}"));
        }
    }
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        let why = if path_type == "ImplementationSpecific" {
            " (knetlab routes ImplementationSpecific as Prefix and does not support regex paths, ingress-nginx's use-regex annotation)"
        } else {
            ""
        };
        return Err(format!(
            "path {shown} has the character {bad:?}: {path_type} paths may hold only letters, digits, '.', '_', '-' and '/', as ingress-nginx's path validation allows{why}"
        ));
    }
    Ok(())
}

/// A backend's `service.port.name`: an IANA service name.
pub fn port_name(name: &str) -> Result<(), String> {
    names::iana_svc_name(name)
}

/// A backend's `service.name`: a DNS-1035 label.
pub fn service_name(name: &str) -> Result<(), String> {
    names::dns1035_label(name).map_err(|e| format!("bad Service name: {e}"))
}

/// `spec.tls[].secretName` and `spec.ingressClassName`: DNS-1123 subdomains.
pub fn object_name(what: &str, name: &str) -> Result<(), String> {
    names::dns_subdomain(name).map_err(|e| format!("bad {what}: {e}"))
}

/// The annotation the parser sets on a converted `v1beta1` Ingress: only its values.
pub fn converted_annotation(value: &str) -> Result<(), String> {
    if super::v1beta1::OLD_API_VERSIONS.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{} is set by knetlab when it converts an old Ingress; {} is not one of {}",
            super::CONVERTED_ANNOTATION,
            shorten(value),
            super::v1beta1::OLD_API_VERSIONS.join(", ")
        ))
    }
}

/// The `tls.crt` and `tls.key` of a `kubernetes.io/tls` Secret: PEM, as the controller
/// checks before it writes them out: only PEM blocks (`-----BEGIN X-----`, base64 lines,
/// the matching `-----END X-----`), at least one `CERTIFICATE` in the certificate and
/// exactly one private key in the key.
pub fn tls_pem(crt: &str, key: &str) -> Result<(), String> {
    let labels = pem_labels(crt).map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    if !labels.iter().any(|l| l == "CERTIFICATE") {
        return Err("tls.crt holds no CERTIFICATE block".into());
    }
    let labels = pem_labels(key).map_err(|e| format!("tls.key is not PEM: {e}"))?;
    if labels.len() != 1 || !labels[0].ends_with("PRIVATE KEY") {
        return Err(format!(
            "tls.key must hold exactly one private key block, not {}",
            if labels.is_empty() {
                "none".to_string()
            } else {
                labels.join(", ")
            }
        ));
    }
    Ok(())
}

/// The labels of the PEM blocks in `text`, which must hold nothing else (blank lines
/// aside).
fn pem_labels(text: &str) -> Result<Vec<String>, String> {
    let mut labels = Vec::new();
    let mut open: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        let n = i + 1;
        match open {
            None if line.trim().is_empty() => {}
            None => {
                let label = line
                    .strip_prefix("-----BEGIN ")
                    .and_then(|l| l.strip_suffix("-----"))
                    .ok_or_else(|| format!("line {n} is outside a -----BEGIN ...----- block"))?;
                if label.is_empty() || !label.bytes().all(|b| b.is_ascii_uppercase() || b == b' ') {
                    return Err(format!("line {n} has a bad block label"));
                }
                open = Some(label);
            }
            Some(label) => {
                if let Some(end) = line
                    .strip_prefix("-----END ")
                    .and_then(|l| l.strip_suffix("-----"))
                {
                    if end != label {
                        return Err(format!("line {n} ends {end:?}, not {label:?}"));
                    }
                    labels.push(label.to_string());
                    open = None;
                } else if line.is_empty()
                    || !line
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
                {
                    return Err(format!("line {n} is not base64"));
                }
            }
        }
    }
    if let Some(label) = open {
        return Err(format!("the {label} block has no END line"));
    }
    Ok(labels)
}

/// A value for an error message: quoted, escaped, and cut short when long.
fn shorten(s: &str) -> String {
    const SHOWN: usize = 80;
    if s.chars().count() <= SHOWN {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(SHOWN).collect();
        format!("{head:?}… ({} characters)", s.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_api_server_and_ingress_nginx() {
        for ok in ["/", "/foo", "/foo/bar-baz_1.2", "/a..b", "/Foo"] {
            for ty in ["Exact", "Prefix", "ImplementationSpecific"] {
                assert_eq!(path(ty, ok), Ok(()), "{ty} {ok}");
            }
        }
        let bad = [
            "foo",
            "/x { return 200 pwned; } location /y",
            "/foo;}",
            "/a\nb",
            "/$host",
            "/#x",
            "/\"x",
            "/'x",
            "/a/../b",
            "/a/..",
            "/a/.",
            "//a",
            "/%2fetc",
            "/a\0b",
            "/a b",
            "/foo.*",
            "/~x",
        ];
        for b in bad {
            for ty in ["Exact", "Prefix", "ImplementationSpecific"] {
                assert!(path(ty, b).is_err(), "{ty} {b:?} was accepted");
            }
        }
        assert!(path("Prefix", &format!("/{}", "a".repeat(PATH_MAX))).is_err());
        let e = path("ImplementationSpecific", "/x{").unwrap_err();
        assert!(e.contains("use-regex"), "{e}");
    }

    #[test]
    fn hosts_are_dns_names_with_an_optional_wildcard() {
        assert!(host("foo.bar.com").is_ok());
        assert!(host("*.bar.com").is_ok());
        for bad in [
            "1.2.3.4",
            "::1",
            "foo.*.com",
            "*",
            "a;b",
            "foo.bar.com { }",
            "Foo.com",
            "a\nb",
            "",
        ] {
            assert!(host(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(host(&"a.".repeat(200)).is_err());
    }

    #[test]
    fn names_and_annotations() {
        assert!(port_name("http").is_ok());
        assert!(port_name("http;").is_err());
        assert!(service_name("web").is_ok());
        assert!(service_name("web}").is_err());
        assert!(object_name("secretName", "tls-cert").is_ok());
        assert!(object_name("secretName", "../../etc/passwd").is_err());
        assert!(converted_annotation("extensions/v1beta1").is_ok());
        assert!(converted_annotation("x\n}").is_err());
    }

    #[test]
    fn tls_secrets_hold_pem() {
        let crt = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMIIE+/=\n-----END PRIVATE KEY-----\n";
        assert_eq!(tls_pem(crt, key), Ok(()));
        let ec = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----";
        assert_eq!(tls_pem(crt, ec), Ok(()));
        assert!(tls_pem("garbage", key).is_err());
        assert!(tls_pem(crt, "").is_err());
        assert!(tls_pem(&format!("{crt}ssl_ciphers x;\n"), key).is_err());
        assert!(tls_pem(crt, &format!("{key}{key}")).is_err());
        assert!(
            tls_pem(
                "-----BEGIN CERTIFICATE-----\nMI\0B\n-----END CERTIFICATE-----",
                key
            )
            .is_err()
        );
        assert!(tls_pem("-----BEGIN CERTIFICATE-----\nMIIB\n", key).is_err());
    }
}

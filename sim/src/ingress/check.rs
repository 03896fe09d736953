//! The scenario's `http:` checks: an HTTP(S) request from a host outside the cluster (or a
//! pod) through the ingress controller, with the status and backend it should get. The
//! parser fills [`HttpCheckSpec`]; the harness measures it in every step it applies to,
//! and [`super::IngressModel::route`] (with the NetworkPolicy oracle for the controller's
//! hop to the backend) predicts it.

use crate::peers::Peer;

use super::Scheme;

/// One `http:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheckSpec {
    /// The client: `host/NAME` or `ns/pod`.
    pub from: Peer,
    /// As written (`http://foo.bar.com/foo`).
    pub url: String,
    pub scheme: Scheme,
    /// The Host header and, over HTTPS, the SNI name.
    pub host: String,
    /// The request path with its query (`/foo?x=1`), `/` when the URL has none.
    pub path: String,
    /// The steps it is measured in; `None` = every step.
    pub steps: Option<Vec<String>>,
    /// `expect.status`.
    pub status: Option<u16>,
    /// `expect.backend`: `ns/name` of the pod that must answer, or of a Service one of
    /// whose pods must answer.
    pub backend: Option<String>,
}

impl HttpCheckSpec {
    /// Whether the check runs in the step called `step`.
    pub fn runs_in(&self, step: &str) -> bool {
        self.steps
            .as_ref()
            .is_none_or(|s| s.iter().any(|n| n == step))
    }
}

/// Splits `http://host/path` or `https://host/path` into scheme, host and path; the
/// message says what is wrong otherwise.
pub fn parse_url(url: &str) -> Result<(Scheme, String, String), String> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return Err(format!(
            "{url:?} is not an http:// or https:// URL (for example http://foo.bar.com/foo)"
        ));
    };
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if host.contains(':') {
        return Err(format!(
            "{url:?} names a port; leave it out: the request goes to the ingress controller's NodePort ({} for http, {} for https) on a node",
            super::controller::HTTP_NODE_PORT,
            super::controller::HTTPS_NODE_PORT
        ));
    }
    if host.contains('@') || path.contains(' ') || path.contains('#') {
        return Err(format!(
            "{url:?} is not a plain URL (no user, spaces or fragment)"
        ));
    }
    Ok((scheme, host.to_ascii_lowercase(), path))
}

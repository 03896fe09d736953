//! Ingress as ingress-nginx sees it: the `networking.k8s.io/v1` Ingress objects of the
//! cluster merged into one routing table of virtual servers (one per host, plus the
//! catch-all `_`), each with its locations, TLS certificate and default backend. Pure:
//! the same table answers [`IngressModel::route`] (which backend an HTTP request reaches,
//! or why it gets a 404, 503 or redirect) and renders the nginx configuration the
//! controller pod runs ([`render`]), so the oracle and the proxy cannot drift apart.
//!
//! What ingress-nginx does and this copies:
//! - Host rules: an exact host wins over a wildcard (`*.bar.com`; nginx lets it cover any
//!   number of labels, where the Ingress API says one), and a
//!   request whose Host matches no rule goes to the catch-all server, whose root is the
//!   default backend (an Ingress with `defaultBackend` and no rules), else a 404.
//! - Paths: `Exact` matches the path only; `Prefix` matches whole path elements (`/foo`
//!   matches `/foo` and `/foo/bar`, not `/foobar`), rendered as `location = /foo` plus
//!   `location /foo/`; `ImplementationSpecific` is treated as `Prefix`, as the brief
//!   asks (ingress-nginx renders it as a plain nginx prefix). nginx itself gives exact
//!   locations precedence over prefixes and picks the longest prefix, and so does
//!   [`IngressModel::route`].
//! - A host's root falls back to the `defaultBackend` of the Ingress that first names the
//!   host, else to the controller's default backend (404).
//! - Backends are the Service's ready endpoints (pod IPs and target ports), not its
//!   cluster IP; a Service that is missing, lacks the port or has no ready endpoint gives
//!   503. Two Ingresses claiming the same host and path: the first in (namespace, name)
//!   order wins (ingress-nginx takes the oldest; scenario objects have no age).
//! - TLS hosts listen on 443 with their Secret's certificate and redirect plain HTTP to
//!   HTTPS with a 308 (`ssl-redirect`, on by default).
//! - `ingressClassName` other than `nginx` makes the controller ignore the Ingress.
//!
//! The parser checks every value that reaches nginx.conf or a file first, as the API
//! server and ingress-nginx do ([`validate`]); the renderer quotes what it writes
//! ([`render::token`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::IngressBackend;

use crate::objects::{ClusterObjects, PodRef};
use crate::services::{self, endpoints};

pub mod check;
pub mod controller;
pub mod render;
pub mod v1beta1;
pub mod validate;

pub use check::HttpCheckSpec;

#[cfg(test)]
mod tests;

/// The annotation the parser puts on an Ingress it converted from `extensions/v1beta1`.
pub const CONVERTED_ANNOTATION: &str = "knetlab.io/converted-from";
/// The IngressClass this controller serves (and Ingresses without a class).
pub const INGRESS_CLASS: &str = "nginx";
/// The catch-all server's name, as nginx writes it.
pub const CATCH_ALL: &str = "_";

/// How a path rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    Exact,
    Prefix,
}

/// A Service port an Ingress sends traffic to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    /// `number` or `name` of the service port.
    pub port: PortRef,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.port {
            PortRef::Number(n) => write!(f, "{}/{}:{n}", self.namespace, self.name),
            PortRef::Name(n) => write!(f, "{}/{}:{n}", self.namespace, self.name),
        }
    }
}

/// One backend address of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Upstream {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub pod: Option<PodRef>,
}

/// Where a location sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Service with at least one ready endpoint.
    Service {
        service: ServiceRef,
        upstreams: Vec<Upstream>,
    },
    /// A Service the controller cannot use (missing, no such port, no ready endpoint):
    /// nginx answers 503.
    Unavailable { service: ServiceRef, why: String },
    /// No backend at all: the controller's default backend answers 404.
    NotFound,
}

/// One `location` of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Normalised: no trailing slash except for `/`.
    pub path: String,
    pub kind: PathKind,
    pub target: Target,
    /// `ns/name` of the Ingress that defined it (empty for the controller's default).
    pub ingress: String,
    /// The root fallback (`defaultBackend` or the controller's 404), not a path rule.
    pub is_default: bool,
}

/// One virtual server: a host (or `_`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    /// Sorted: exact locations first, then prefixes longest first, then by path.
    pub locations: Vec<Location>,
    /// `ns/secret` whose certificate this host presents, when an Ingress lists the host
    /// under `tls` (the Secret may be missing: see [`IngressModel::certificates`]).
    pub tls_secret: Option<(String, String)>,
}

/// A certificate the controller needs: from a `kubernetes.io/tls` Secret, or (when the
/// Secret is missing) one the harness generates for the hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub namespace: String,
    pub secret: String,
    /// The hosts the Ingresses list with it, sorted.
    pub hosts: Vec<String>,
    /// `Some((cert PEM, key PEM))` from the Secret; `None`: generate a self-signed one.
    pub pem: Option<(String, String)>,
}

/// The merged routing table of every Ingress this controller serves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngressModel {
    /// By host; `_` is the catch-all.
    pub servers: BTreeMap<String, Server>,
    /// The Ingresses served, `ns/name`, sorted.
    pub ingresses: Vec<String>,
    /// What the controller did that the user should know (conversions, ignored classes,
    /// conflicts), sorted.
    pub notes: Vec<String>,
    pub certificates: Vec<Certificate>,
}

/// What an HTTP request gets, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// 200 (a backend answers), 308 (to HTTPS), 404 or 503.
    pub status: u16,
    /// The Service and its ready endpoints when `status` is 200.
    pub service: Option<ServiceRef>,
    pub upstreams: Vec<Upstream>,
    /// The server and location that matched: `foo.bar.com` + `Prefix /foo`.
    pub server: String,
    pub location: Option<String>,
    /// In words, for the report.
    pub why: String,
}

/// HTTP or HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// `PathKind` of a `pathType` (`ImplementationSpecific` and unknown values as Prefix).
pub fn path_kind(path_type: &str) -> PathKind {
    match path_type {
        "Exact" => PathKind::Exact,
        _ => PathKind::Prefix,
    }
}

/// A path as ingress-nginx keys it: `/` when empty, no trailing slash otherwise.
pub fn normalise_path(path: Option<&str>) -> String {
    let p = path.unwrap_or("/");
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Whether `location` (normalised) of `kind` matches the request path.
pub fn path_matches(kind: PathKind, location: &str, path: &str) -> bool {
    match kind {
        PathKind::Exact => location == path,
        PathKind::Prefix => {
            location == "/"
                || path == location
                || path
                    .strip_prefix(location)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
    }
}

/// Whether a `*.bar.com` host pattern covers `host`. The Ingress API says a wildcard
/// stands for exactly one label, but ingress-nginx writes it as nginx's `server_name
/// *.bar.com`, which matches any number of labels (`a.b.bar.com` too); this follows what
/// the controller does.
pub fn wildcard_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|h| h.strip_suffix('.'))
            .is_some_and(|labels| !labels.is_empty()),
        None => false,
    }
}

impl IngressModel {
    /// Builds the table from the cluster's Ingresses, Services, pods and Secrets.
    pub fn new(objects: &ClusterObjects) -> Self {
        let mut model = IngressModel::default();
        let mut notes = std::collections::BTreeSet::new();
        model.servers.insert(
            CATCH_ALL.into(),
            Server {
                host: CATCH_ALL.into(),
                locations: vec![default_location(Target::NotFound, "")],
                tls_secret: None,
            },
        );
        let mut catch_all_owner: Option<String> = None;
        let mut tls: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for ((ns, name), ing) in &objects.ingresses {
            let id = format!("{ns}/{name}");
            if let Some(from) = ing
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CONVERTED_ANNOTATION))
            {
                notes.insert(format!(
                    "Ingress {id} was written as {from}, which Kubernetes removed in 1.22; knetlab read it as networking.k8s.io/v1 (serviceName/servicePort became service.name/service.port, paths without pathType became ImplementationSpecific)"
                ));
            }
            let spec = ing.spec.clone().unwrap_or_default();
            if let Some(class) = spec.ingress_class_name.as_deref()
                && class != INGRESS_CLASS
            {
                notes.insert(format!(
                    "Ingress {id} asks for ingressClassName {class:?}; the ingress-nginx controller serves {INGRESS_CLASS:?} (and Ingresses without a class), so it ignores this one"
                ));
                continue;
            }
            model.ingresses.push(id.clone());
            let default_target = spec
                .default_backend
                .as_ref()
                .map(|b| target(objects, ns, b));
            let rules = spec.rules.clone().unwrap_or_default();
            if rules.is_empty()
                && let Some(t) = &default_target
            {
                match &catch_all_owner {
                    Some(owner) => {
                        notes.insert(format!(
                            "Ingress {id} has a defaultBackend and no rules, like {owner}; the catch-all server keeps {owner}'s"
                        ));
                    }
                    None => {
                        let server = model.servers.get_mut(CATCH_ALL).expect("made above");
                        server.locations[0] = default_location(t.clone(), &id);
                        catch_all_owner = Some(id.clone());
                    }
                }
            }
            for rule in &rules {
                let host = rule
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| CATCH_ALL.into());
                let server = model.servers.entry(host.clone()).or_insert_with(|| Server {
                    host: host.clone(),
                    // The host's root: the defaultBackend of the Ingress that first
                    // names the host, else the controller's 404.
                    locations: vec![default_location(
                        default_target.clone().unwrap_or(Target::NotFound),
                        if default_target.is_some() { &id } else { "" },
                    )],
                    tls_secret: None,
                });
                for p in rule.http.iter().flat_map(|h| &h.paths) {
                    let kind = path_kind(&p.path_type);
                    let path = match kind {
                        PathKind::Prefix => normalise_path(p.path.as_deref()),
                        // An exact path is matched as written.
                        PathKind::Exact => p.path.clone().unwrap_or_else(|| "/".into()),
                    };
                    let t = target(objects, ns, &p.backend);
                    let loc = Location {
                        path: path.clone(),
                        kind,
                        target: t,
                        ingress: id.clone(),
                        is_default: false,
                    };
                    if let Some(old) = server
                        .locations
                        .iter_mut()
                        .find(|l| l.path == path && l.kind == kind)
                    {
                        if old.is_default {
                            // A rule for `/` replaces the root fallback.
                            *old = loc;
                        } else {
                            notes.insert(format!(
                                "Ingress {id} routes {host} {} {path} too; {} defined it first and keeps it",
                                kind_name(kind),
                                old.ingress
                            ));
                        }
                    } else {
                        server.locations.push(loc);
                    }
                }
            }
            for t in spec.tls.iter().flatten() {
                let Some(secret) = t.secret_name.clone().filter(|s| !s.is_empty()) else {
                    notes.insert(format!(
                        "Ingress {id} has a tls entry without secretName; its hosts get the controller's default certificate"
                    ));
                    continue;
                };
                for h in t.hosts.iter().flatten() {
                    tls.entry((ns.clone(), secret.clone()))
                        .or_default()
                        .push(h.clone());
                    if let Some(server) = model.servers.get_mut(h)
                        && server.tls_secret.is_none()
                    {
                        server.tls_secret = Some((ns.clone(), secret.clone()));
                    }
                }
            }
        }
        for server in model.servers.values_mut() {
            sort_locations(&mut server.locations);
        }
        for ((ns, secret), mut hosts) in tls {
            hosts.sort();
            hosts.dedup();
            let pem = objects
                .secrets
                .get(&(ns.clone(), secret.clone()))
                .and_then(tls_pem);
            if pem.is_none() {
                notes.insert(format!(
                    "Secret {ns}/{secret} (TLS for {}) is not in the scenario: the controller serves a self-signed certificate generated for those hosts",
                    hosts.join(", ")
                ));
            }
            model.certificates.push(Certificate {
                namespace: ns,
                secret,
                hosts,
                pem,
            });
        }
        model.notes = notes.into_iter().collect();
        model
    }

    /// Whether any Ingress is served (a controller without one only answers 404).
    pub fn is_empty(&self) -> bool {
        self.ingresses.is_empty()
    }

    /// Whether some host is served over TLS (the controller then listens on 443).
    pub fn has_tls(&self) -> bool {
        self.servers.values().any(|s| s.tls_secret.is_some())
    }

    /// The server a Host header reaches: the exact host, else the longest wildcard that
    /// covers it, else the catch-all.
    pub fn server_for(&self, host: &str) -> &Server {
        let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
        if let Some(s) = self.servers.get(&host) {
            return s;
        }
        self.servers
            .values()
            .filter(|s| wildcard_matches(&s.host, &host))
            .max_by_key(|s| s.host.len())
            .unwrap_or(&self.servers[CATCH_ALL])
    }

    /// What an HTTP(S) request for `host` and `path` gets from the controller, and why.
    pub fn route(&self, scheme: Scheme, host: &str, path: &str) -> Route {
        let server = self.server_for(host);
        let path = path.split(['?', '#']).next().unwrap_or("/");
        let path = if path.is_empty() { "/" } else { path };
        let server_desc = if server.host == CATCH_ALL {
            format!("no Ingress rule names host {host:?}, so the catch-all server answers")
        } else if server.host == host {
            format!("host {host} matches the rule for {}", server.host)
        } else {
            format!("host {host} matches the wildcard rule {}", server.host)
        };
        if scheme == Scheme::Http
            && let Some((ns, secret)) = &server.tls_secret
        {
            return Route {
                status: 308,
                service: None,
                upstreams: vec![],
                server: server.host.clone(),
                location: None,
                why: format!(
                    "{server_desc}; it is a TLS host (Secret {ns}/{secret}) and ingress-nginx redirects plain HTTP to https://{host}{path} (308)"
                ),
            };
        }
        // Locations are sorted exact first, then longest prefix first: the first that
        // matches is nginx's choice.
        let Some(loc) = server
            .locations
            .iter()
            .find(|l| path_matches(l.kind, &l.path, path))
        else {
            return Route {
                status: 404,
                service: None,
                upstreams: vec![],
                server: server.host.clone(),
                location: None,
                why: format!("{server_desc}; no path rule matches {path}"),
            };
        };
        let loc_desc = if loc.is_default {
            if loc.ingress.is_empty() {
                format!("no path rule matches {path}: the controller's default backend")
            } else {
                format!(
                    "no path rule matches {path}: the defaultBackend of Ingress {}",
                    loc.ingress
                )
            }
        } else {
            format!(
                "path {path} matches {} {} of Ingress {}",
                kind_name(loc.kind),
                loc.path,
                loc.ingress
            )
        };
        let location = Some(format!("{} {}", kind_name(loc.kind), loc.path));
        match &loc.target {
            Target::Service { service, upstreams } => Route {
                status: 200,
                service: Some(service.clone()),
                upstreams: upstreams.clone(),
                server: server.host.clone(),
                location,
                why: format!(
                    "{server_desc}; {loc_desc} → Service {service} ({})",
                    upstreams
                        .iter()
                        .map(|u| match &u.pod {
                            Some(p) => format!("{p}:{}", u.port),
                            None => format!("{}:{}", u.ip, u.port),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            Target::Unavailable { service, why } => Route {
                status: 503,
                service: Some(service.clone()),
                upstreams: vec![],
                server: server.host.clone(),
                location,
                why: format!("{server_desc}; {loc_desc} → Service {service}, but {why} (503)"),
            },
            Target::NotFound => Route {
                status: 404,
                service: None,
                upstreams: vec![],
                server: server.host.clone(),
                location,
                why: format!("{server_desc}; {loc_desc} (404)"),
            },
        }
    }
}

pub(crate) fn kind_name(kind: PathKind) -> &'static str {
    match kind {
        PathKind::Exact => "Exact",
        PathKind::Prefix => "Prefix",
    }
}

fn default_location(target: Target, ingress: &str) -> Location {
    Location {
        path: "/".into(),
        kind: PathKind::Prefix,
        target,
        ingress: ingress.into(),
        is_default: true,
    }
}

/// Exact first, then prefixes longest first, then by path: the order nginx effectively
/// tries them in.
fn sort_locations(locations: &mut [Location]) {
    locations.sort_by(|a, b| {
        a.kind
            .cmp(&b.kind)
            .then(b.path.len().cmp(&a.path.len()))
            .then(a.path.cmp(&b.path))
    });
}

/// The Service an Ingress backend names, resolved to its ready endpoints.
fn target(objects: &ClusterObjects, namespace: &str, backend: &IngressBackend) -> Target {
    let Some(svc_backend) = &backend.service else {
        // `resource` backends (object storage and the like) have nothing to proxy to.
        return Target::NotFound;
    };
    let port = match &svc_backend.port {
        Some(p) => match (p.number, &p.name) {
            (Some(n), _) => PortRef::Number(u16::try_from(n).unwrap_or(0)),
            (None, Some(name)) => PortRef::Name(name.clone()),
            (None, None) => PortRef::Number(0),
        },
        None => PortRef::Number(0),
    };
    let service = ServiceRef {
        namespace: namespace.to_string(),
        name: svc_backend.name.clone(),
        port,
    };
    let Some(svc) = objects
        .services
        .get(&(namespace.to_string(), svc_backend.name.clone()))
    else {
        return Target::Unavailable {
            why: format!("Service {namespace}/{} does not exist", svc_backend.name),
            service,
        };
    };
    let sp = services::ports(svc).iter().find(|p| match &service.port {
        PortRef::Number(n) => p.port == i32::from(*n),
        PortRef::Name(n) => p.name.as_deref() == Some(n.as_str()),
    });
    let Some(sp) = sp else {
        return Target::Unavailable {
            why: format!("the Service has no port {}", port_text(&service.port)),
            service,
        };
    };
    let eps = endpoints::compute(objects, svc).for_port(sp);
    let mut upstreams: Vec<Upstream> = eps
        .iter()
        .filter(|e| e.ready)
        .map(|e| Upstream {
            ip: e.ip,
            port: e.port,
            pod: e.pod.clone(),
        })
        .collect();
    upstreams.sort();
    upstreams.dedup();
    if upstreams.is_empty() {
        return Target::Unavailable {
            why: "it has no ready endpoint".into(),
            service,
        };
    }
    Target::Service { service, upstreams }
}

fn port_text(p: &PortRef) -> String {
    match p {
        PortRef::Number(n) => n.to_string(),
        PortRef::Name(n) => format!("{n:?}"),
    }
}

/// The PEM certificate and key of a `kubernetes.io/tls` Secret (`data` or `stringData`).
pub fn tls_pem(secret: &k8s_openapi::api::core::v1::Secret) -> Option<(String, String)> {
    let get = |k: &str| -> Option<String> {
        if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(k)) {
            return Some(v.clone());
        }
        let bytes = secret.data.as_ref()?.get(k)?;
        String::from_utf8(bytes.0.clone()).ok()
    };
    Some((get("tls.crt")?, get("tls.key")?))
}

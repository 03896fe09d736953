//! Decoding manifests into `k8s-openapi` objects, strictly.
//!
//! A manifest is dispatched on `apiVersion` + `kind`; the kinds knetlab reads (Namespace,
//! Pod, NetworkPolicy, Service, Endpoints) are decoded into `k8s-openapi` types, every
//! other real kind is a clear "not supported yet" and anything else an unknown kind:
//! never silently ignored. Services and Endpoints are checked by
//! [`crate::services::validate`].
//! `k8s-openapi` drops fields it does not know, so, like `kubectl apply --validate=strict`,
//! we serialize the decoded object back and report any key of the input that did not
//! survive the round trip as an unknown field, at its line and column, with the closest
//! field the type does know. Then the API server's own checks on names, labels, ports,
//! selectors and IP blocks run, so a manifest that the parser accepts is one a real
//! cluster would accept too.
//!
//! Manifests may use `${ip:NS/POD}` and `${cidr:NS/POD}` in any string; they are
//! substituted when the manifest is applied ([`super::placeholders`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::IpNet;
use k8s_openapi::Resource;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{
    Ingress, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ScenarioError;
use crate::ingress::validate;
use crate::objects::{Kind, Object, PodRef};
use crate::protocol::Protocol;
use crate::services::{self, FieldError};
use crate::workloads::WorkloadKind;

mod controller;

pub(crate) use controller::{Manifest, classify, controller};

use super::RawObject;
use super::fields::{self, Seg};
use super::placeholders::substitute;
use super::source::Source;
use super::yaml::{join_index, join_key};
use crate::names;

/// Substitutes pod addresses into a manifest and decodes it strictly.
pub(super) fn decode_object(
    raw: &RawObject,
    pod_ip: &dyn Fn(&PodRef) -> Option<Ipv4Addr>,
) -> Result<Object, ScenarioError> {
    let src = Source {
        file: raw.file.clone(),
        positions: raw.positions.clone(),
    };
    let value = substitute(&src, &raw.path, &raw.value, pod_ip)?;
    decode_value(&src, &raw.path, &value)
}

/// Decodes one manifest (already substituted) found at `path` in `src`.
pub(crate) fn decode_value(
    src: &Source,
    path: &str,
    value: &Value,
) -> Result<Object, ScenarioError> {
    let object = match manifest_kind(src, path, value)? {
        Kind::Namespace => Object::Namespace(strict::<Namespace>(src, path, value)?),
        Kind::Pod => Object::Pod(strict::<Pod>(src, path, value)?),
        Kind::NetworkPolicy => Object::NetworkPolicy(strict::<NetworkPolicy>(src, path, value)?),
        Kind::Service => Object::Service(strict::<Service>(src, path, value)?),
        Kind::Endpoints => Object::Endpoints(strict::<Endpoints>(src, path, value)?),
        Kind::Ingress => Object::Ingress(ingress_any_version(src, path, value)?),
        Kind::Secret => Object::Secret(strict::<Secret>(src, path, value)?),
        Kind::ClusterNetworkPolicy
        | Kind::AdminNetworkPolicy
        | Kind::BaselineAdminNetworkPolicy => {
            super::decode_tiers::cluster_policy(src, path, value)?
        }
    };
    let v = Check { src, base: path };
    match &object {
        Object::Namespace(ns) => v.metadata(&ns.metadata, Kind::Namespace)?,
        Object::Pod(pod) => {
            v.metadata(&pod.metadata, Kind::Pod)?;
            v.pod(pod)?;
        }
        Object::NetworkPolicy(np) => {
            v.metadata(&np.metadata, Kind::NetworkPolicy)?;
            v.policy(np)?;
        }
        Object::Service(svc) => {
            v.metadata(&svc.metadata, Kind::Service)?;
            services::validate::service(svc).map_err(|e| v.field_err(e))?;
        }
        Object::Endpoints(ep) => {
            v.metadata(&ep.metadata, Kind::Endpoints)?;
            services::validate::endpoints(ep).map_err(|e| v.field_err(e))?;
        }
        Object::Ingress(ing) => {
            v.metadata(&ing.metadata, Kind::Ingress)?;
            v.ingress(ing)?;
        }
        Object::Secret(secret) => {
            v.metadata(&secret.metadata, Kind::Secret)?;
            v.secret(secret)?;
        }
        Object::ClusterPolicy(p) => v.labels("metadata.labels", Some(&p.labels))?,
    }
    Ok(object)
}

/// A `networking.k8s.io/v1` Ingress strictly, or an old `v1beta1` one converted (see
/// [`crate::ingress::v1beta1`]).
fn ingress_any_version(src: &Source, path: &str, value: &Value) -> Result<Ingress, ScenarioError> {
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    if api_version.is_some_and(|a| crate::ingress::v1beta1::OLD_API_VERSIONS.contains(&a)) {
        let old: crate::ingress::v1beta1::OldIngress = src.deserialize(path, value)?;
        return Ok(crate::ingress::v1beta1::to_v1(old));
    }
    strict::<Ingress>(src, path, value)
}

// ---------------------------------------------------------------------------------------
// Kinds

/// Kinds Kubernetes 1.33 serves that knetlab does not read yet (workload controllers and
/// the kinds without network effect are decided by [`crate::workloads::classify`] first).
fn not_yet_supported() -> Vec<(&'static str, &'static str)> {
    use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery, networking::v1 as net};
    macro_rules! kinds {
        ($($t:ty),* $(,)?) => { vec![$((<$t as Resource>::API_VERSION, <$t as Resource>::KIND)),*] };
    }
    kinds![
        core::Node,
        discovery::EndpointSlice,
        net::IPAddress,
        net::ServiceCIDR,
    ]
}

fn supported() -> [(&'static str, &'static str, Kind); 12] {
    [
        (Namespace::API_VERSION, Namespace::KIND, Kind::Namespace),
        (Pod::API_VERSION, Pod::KIND, Kind::Pod),
        (
            NetworkPolicy::API_VERSION,
            NetworkPolicy::KIND,
            Kind::NetworkPolicy,
        ),
        (Service::API_VERSION, Service::KIND, Kind::Service),
        (Endpoints::API_VERSION, Endpoints::KIND, Kind::Endpoints),
        (Ingress::API_VERSION, Ingress::KIND, Kind::Ingress),
        // The old forms of Ingress, converted when decoded.
        ("extensions/v1beta1", Ingress::KIND, Kind::Ingress),
        ("networking.k8s.io/v1beta1", Ingress::KIND, Kind::Ingress),
        (Secret::API_VERSION, Secret::KIND, Kind::Secret),
        (
            "policy.networking.k8s.io/v1alpha2",
            "ClusterNetworkPolicy",
            Kind::ClusterNetworkPolicy,
        ),
        (
            "policy.networking.k8s.io/v1alpha1",
            "AdminNetworkPolicy",
            Kind::AdminNetworkPolicy,
        ),
        (
            "policy.networking.k8s.io/v1alpha1",
            "BaselineAdminNetworkPolicy",
            Kind::BaselineAdminNetworkPolicy,
        ),
    ]
}

/// "Namespace, Pod, NetworkPolicy, Service and Endpoints", for messages.
fn supported_list() -> String {
    let mut kinds: Vec<&str> = supported().iter().map(|(_, k, _)| *k).collect();
    kinds.dedup();
    match kinds.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => kinds.join(""),
    }
}

/// Reads `apiVersion` and `kind` and says which kind knetlab reads the manifest as.
pub(crate) fn manifest_kind(
    src: &Source,
    path: &str,
    value: &Value,
) -> Result<Kind, ScenarioError> {
    let Some(map) = value.as_object() else {
        return Err(src.at_value(
            path,
            "a manifest must be a mapping with apiVersion, kind, metadata and spec",
        ));
    };
    let field = |name: &str| -> Result<&str, ScenarioError> {
        let p = join_key(path, name);
        match map.get(name) {
            None | Some(Value::Null) => {
                Err(src.at_key(path, format!("the manifest has no `{name}`")))
            }
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(src.at_value(&p, format!("`{name}` must be a string"))),
        }
    };
    let api_version = field("apiVersion")?;
    let kind = field("kind")?;
    let kind_path = join_key(path, "kind");
    if let Some((_, _, k)) = supported()
        .into_iter()
        .find(|(a, k, _)| *a == api_version && *k == kind)
    {
        return Ok(k);
    }
    let others = not_yet_supported();
    if others.iter().any(|(a, k)| *a == api_version && *k == kind) {
        return Err(src.at_value(
            &kind_path,
            format!(
                "kind {kind} ({api_version}) is not supported yet; knetlab reads {}",
                supported_list()
            ),
        ));
    }
    // A real kind under another apiVersion: an old, removed API or a CNI's own CRD.
    let workloads = WorkloadKind::ALL.map(|w| (w.api_version(), w.as_str()));
    let all: Vec<(&str, &str)> = supported()
        .iter()
        .map(|(a, k, _)| (*a, *k))
        .chain(workloads)
        .chain(others.iter().copied())
        .collect();
    if let Some((served, _)) = all.iter().find(|(_, k)| *k == kind) {
        let ours = supported().iter().any(|(_, k, _)| *k == kind)
            || workloads.iter().any(|(_, k)| *k == kind);
        let message = if ours {
            format!(
                "Kubernetes 1.33 serves {kind} as apiVersion {served}, not {api_version}; write `apiVersion: {served}`"
            )
        } else {
            format!(
                "kind {kind} is not supported yet (and Kubernetes 1.33 serves it as apiVersion {served}, not {api_version})"
            )
        };
        return Err(src.at_value(&join_key(path, "apiVersion"), message));
    }
    let names: BTreeSet<&str> = all.iter().map(|(_, k)| *k).collect();
    let message = match fields::closest(kind, names.iter().copied()) {
        Some(k) => format!("unknown kind {kind}; did you mean {k}?"),
        None => format!(
            "unknown kind {kind} ({api_version}); knetlab reads {}",
            supported_list()
        ),
    };
    Err(src.at_value(&kind_path, message))
}

// ---------------------------------------------------------------------------------------
// Strict decoding

/// Decodes `T` and reports keys the type does not know (they would be silently dropped).
fn strict<T: DeserializeOwned + Serialize>(
    src: &Source,
    path: &str,
    value: &Value,
) -> Result<T, ScenarioError> {
    let object: T = src.deserialize(path, value)?;
    let back = serde_json::to_value(&object)
        .map_err(|e| src.at_value(path, format!("cannot re-encode the manifest: {e}")))?;
    let mut unknown = Vec::new();
    round_trip_losses(value, &back, path, &mut Vec::new(), &mut unknown);
    // Report the first one in the file.
    let first = unknown
        .into_iter()
        .min_by_key(|(p, _, _)| src.positions.key(p).map(|l| (l.line, l.column)));
    match first {
        Some((p, segs, key)) => {
            let known = fields::known_fields::<T>(&segs);
            Err(src.at_key(&p, fields::unknown_field_message(&key, known)))
        }
        None => Ok(object),
    }
}

/// Collects `(path, parent segments, key)` of every non-null input key missing from the
/// round-tripped value.
fn round_trip_losses(
    input: &Value,
    output: &Value,
    path: &str,
    segs: &mut Vec<Seg>,
    out: &mut Vec<(String, Vec<Seg>, String)>,
) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                let p = join_key(path, k);
                match o.get(k) {
                    None => out.push((p, segs.clone(), k.clone())),
                    Some(ov) => {
                        segs.push(Seg::Key(k.clone()));
                        round_trip_losses(v, ov, &p, segs, out);
                        segs.pop();
                    }
                }
            }
        }
        (Value::Array(i), Value::Array(o)) if i.len() == o.len() => {
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                segs.push(Seg::Item);
                round_trip_losses(iv, ov, &join_index(path, n), segs, out);
                segs.pop();
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// The API server's validation

struct Check<'a> {
    src: &'a Source,
    base: &'a str,
}

type Res = Result<(), ScenarioError>;

pub(super) fn rel(a: &str, b: &str) -> String {
    if b.starts_with('[') {
        format!("{a}{b}")
    } else {
        join_key(a, b)
    }
}

impl Check<'_> {
    fn value_err(&self, rel_path: &str, message: impl Into<String>) -> ScenarioError {
        self.src.at_value(&rel(self.base, rel_path), message)
    }

    fn key_err(&self, rel_path: &str, message: impl Into<String>) -> ScenarioError {
        self.src.at_key(&rel(self.base, rel_path), message)
    }

    /// A [`FieldError`] of the services checks, placed in the file.
    fn field_err(&self, e: FieldError) -> ScenarioError {
        field_error(self.src, self.base, e)
    }

    fn metadata(&self, meta: &ObjectMeta, kind: Kind) -> Res {
        let Some(name) = meta.name.as_deref() else {
            let why = if meta.generate_name.is_some() {
                "metadata.name is required (generateName is not supported)"
            } else {
                "metadata.name is required"
            };
            return Err(self.key_err("metadata", why));
        };
        let checked = match kind {
            Kind::Namespace => names::dns_label(name),
            Kind::Service => names::dns1035_label(name),
            _ => names::dns_subdomain(name),
        };
        checked.map_err(|e| {
            self.value_err("metadata.name", format!("bad {} name: {e}", kind.as_str()))
        })?;
        if kind != Kind::Namespace
            && let Some(ns) = meta.namespace.as_deref()
        {
            names::dns_label(ns).map_err(|e| {
                self.value_err("metadata.namespace", format!("bad namespace name: {e}"))
            })?;
        }
        self.labels("metadata.labels", meta.labels.as_ref())
    }

    fn labels(&self, path: &str, labels: Option<&BTreeMap<String, String>>) -> Res {
        for (k, v) in labels.into_iter().flatten() {
            let p = join_key(path, k);
            names::label_key(k).map_err(|e| self.key_err(&p, e))?;
            names::label_value(v).map_err(|e| self.value_err(&p, e))?;
        }
        Ok(())
    }

    fn pod(&self, pod: &Pod) -> Res {
        let Some(spec) = &pod.spec else {
            return Err(self.key_err("", "a Pod needs a spec with at least one container"));
        };
        if spec.containers.is_empty() {
            return Err(self.value_err("spec.containers", "a Pod needs at least one container"));
        }
        let ready = services::endpoints::READY_ANNOTATION;
        if let Some(v) = pod.metadata.annotations.as_ref().and_then(|a| a.get(ready))
            && v != "true"
            && v != "false"
        {
            return Err(self.value_err(
                &format!("metadata.annotations.{ready}"),
                format!("{ready} is \"true\" or \"false\" (whether the pod is ready to serve its Services), not {v:?}"),
            ));
        }
        let mut container_names = BTreeSet::new();
        let mut port_names = BTreeSet::new();
        for (i, c) in spec.containers.iter().enumerate() {
            let cp = format!("spec.containers[{i}]");
            names::dns_label(&c.name).map_err(|e| {
                self.value_err(&format!("{cp}.name"), format!("bad container name: {e}"))
            })?;
            if c.image.as_deref().is_none_or(str::is_empty) {
                // The API server requires it, although knetlab never pulls it.
                return Err(self.key_err(&cp, format!("container {:?} needs an image", c.name)));
            }
            if !container_names.insert(c.name.as_str()) {
                return Err(self.value_err(
                    &format!("{cp}.name"),
                    format!("two containers are called {:?}", c.name),
                ));
            }
            for (j, p) in c.ports.iter().flatten().enumerate() {
                let pp = format!("{cp}.ports[{j}]");
                if !(1..=65535).contains(&p.container_port) {
                    return Err(self.value_err(
                        &format!("{pp}.containerPort"),
                        format!(
                            "containerPort {} is not a port number (1-65535)",
                            p.container_port
                        ),
                    ));
                }
                self.protocol(&format!("{pp}.protocol"), p.protocol.as_deref())?;
                // A hostNetwork pod listens on the node itself: its host port is its
                // container port (the API server refuses anything else).
                if spec.host_network == Some(true)
                    && let Some(h) = p.host_port.filter(|h| *h != 0 && *h != p.container_port)
                {
                    return Err(self.value_err(
                        &format!("{pp}.hostPort"),
                        format!(
                            "hostPort {h} must match containerPort {} when hostNetwork is true (the pod listens on the node itself)",
                            p.container_port
                        ),
                    ));
                }
                if let Some(name) = &p.name {
                    names::iana_svc_name(name)
                        .map_err(|e| self.value_err(&format!("{pp}.name"), e))?;
                    if !port_names.insert(name.as_str()) {
                        return Err(self.value_err(
                            &format!("{pp}.name"),
                            format!("two container ports of this pod are called {name:?}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn protocol(&self, path: &str, protocol: Option<&str>) -> Res {
        match protocol {
            None => Ok(()),
            Some(p) => p
                .parse::<Protocol>()
                .map(|_| ())
                .map_err(|e| self.value_err(path, e)),
        }
    }

    /// The API server's checks on an Ingress that matter for routing: path types, paths,
    /// backends naming a Service port by number or name, TLS hosts.
    fn ingress(&self, ing: &Ingress) -> Res {
        let Some(spec) = &ing.spec else {
            return Err(self.key_err(
                "spec",
                "an Ingress needs a spec with rules or a defaultBackend",
            ));
        };
        let converted = ing
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(crate::ingress::CONVERTED_ANNOTATION));
        let backend = |p: &str, b: &k8s_openapi::api::networking::v1::IngressBackend| -> Res {
            match (&b.service, &b.resource) {
                (Some(svc), None) => {
                    validate::service_name(&svc.name)
                        .map_err(|e| self.value_err(&format!("{p}.service.name"), e))?;
                    let port = svc.port.as_ref();
                    match port.map(|p| (p.number, p.name.as_deref())) {
                        Some((Some(n), None)) if (1..=65535).contains(&n) => Ok(()),
                        Some((Some(n), None)) => Err(self.value_err(
                            &format!("{p}.service.port.number"),
                            format!("{n} is not a port number (1-65535)"),
                        )),
                        Some((None, Some(name))) => validate::port_name(name)
                            .map_err(|e| self.value_err(&format!("{p}.service.port.name"), e)),
                        _ => Err(self.key_err(
                            &format!("{p}.service"),
                            "service.port needs exactly one of number or name",
                        )),
                    }
                }
                (None, Some(_)) => Ok(()),
                _ => Err(self.key_err(p, "a backend names exactly one of service or resource")),
            }
        };
        if let Some(b) = &spec.default_backend {
            // A converted v1beta1 `backend` sits at spec.backend in the file.
            backend(
                if converted {
                    "spec.backend"
                } else {
                    "spec.defaultBackend"
                },
                b,
            )?;
        }
        for (k, v) in ing.metadata.annotations.iter().flatten() {
            if k == crate::ingress::CONVERTED_ANNOTATION {
                validate::converted_annotation(v)
                    .map_err(|e| self.value_err(&join_key("metadata.annotations", k), e))?;
            }
        }
        if let Some(class) = spec.ingress_class_name.as_deref() {
            validate::object_name("ingressClassName", class)
                .map_err(|e| self.value_err("spec.ingressClassName", e))?;
        }
        let rules = spec.rules.as_deref().unwrap_or_default();
        if rules.is_empty() && spec.default_backend.is_none() {
            return Err(self.key_err("spec", "an Ingress needs rules or a defaultBackend"));
        }
        for (i, r) in rules.iter().enumerate() {
            let rp = format!("spec.rules[{i}]");
            if let Some(h) = r.host.as_deref() {
                validate::host(h).map_err(|e| self.value_err(&format!("{rp}.host"), e))?;
            }
            for (j, p) in r.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let pp = format!("{rp}.http.paths[{j}]");
                if !matches!(
                    p.path_type.as_str(),
                    "Exact" | "Prefix" | "ImplementationSpecific"
                ) {
                    return Err(self.value_err(
                        &format!("{pp}.pathType"),
                        format!("unknown pathType {:?} (expected Exact, Prefix or ImplementationSpecific)", p.path_type),
                    ));
                }
                match p.path.as_deref() {
                    Some(path) => validate::path(&p.path_type, path)
                        .map_err(|e| self.value_err(&format!("{pp}.path"), e))?,
                    None if p.path_type != "ImplementationSpecific" => {
                        return Err(
                            self.key_err(&pp, format!("a {} path needs `path`", p.path_type))
                        );
                    }
                    _ => {}
                }
                backend(&format!("{pp}.backend"), &p.backend)?;
            }
        }
        for (i, t) in spec.tls.iter().flatten().enumerate() {
            if let Some(secret) = t.secret_name.as_deref().filter(|s| !s.is_empty()) {
                validate::object_name("secretName", secret)
                    .map_err(|e| self.value_err(&format!("spec.tls[{i}].secretName"), e))?;
            }
            for (j, h) in t.hosts.iter().flatten().enumerate() {
                validate::host(h)
                    .map_err(|e| self.value_err(&format!("spec.tls[{i}].hosts[{j}]"), e))?;
            }
        }
        Ok(())
    }

    /// A `kubernetes.io/tls` Secret must hold `tls.crt` and `tls.key`, both PEM.
    fn secret(&self, secret: &Secret) -> Res {
        if secret.type_.as_deref() == Some("kubernetes.io/tls") {
            let Some((crt, key)) = crate::ingress::tls_pem(secret) else {
                return Err(self.key_err(
                    "",
                    "a kubernetes.io/tls Secret needs tls.crt and tls.key (PEM) in data (base64) or stringData",
                ));
            };
            let field = if secret.string_data.is_some() {
                "stringData"
            } else {
                "data"
            };
            validate::tls_pem(&crt, &key).map_err(|e| self.key_err(field, e))?;
        }
        Ok(())
    }

    fn policy(&self, np: &NetworkPolicy) -> Res {
        let Some(spec) = &np.spec else {
            return Ok(());
        };
        if let Some(sel) = &spec.pod_selector {
            self.selector("spec.podSelector", sel)?;
        }
        let mut seen = BTreeSet::new();
        for (i, t) in spec.policy_types.iter().flatten().enumerate() {
            let p = format!("spec.policyTypes[{i}]");
            if t != "Ingress" && t != "Egress" {
                return Err(self.value_err(
                    &p,
                    format!("unknown policy type {t:?} (expected Ingress or Egress)"),
                ));
            }
            if !seen.insert(t) {
                return Err(self.value_err(&p, format!("{t} is listed twice")));
            }
        }
        for (i, rule) in spec.ingress.iter().flatten().enumerate() {
            let rp = format!("spec.ingress[{i}]");
            self.ports(&rp, rule.ports.as_deref())?;
            self.peers(&format!("{rp}.from"), rule.from.as_deref())?;
        }
        for (i, rule) in spec.egress.iter().flatten().enumerate() {
            let rp = format!("spec.egress[{i}]");
            self.ports(&rp, rule.ports.as_deref())?;
            self.peers(&format!("{rp}.to"), rule.to.as_deref())?;
        }
        Ok(())
    }

    fn ports(&self, rule_path: &str, ports: Option<&[NetworkPolicyPort]>) -> Res {
        for (j, port) in ports.into_iter().flatten().enumerate() {
            let pp = format!("{rule_path}.ports[{j}]");
            self.protocol(&format!("{pp}.protocol"), port.protocol.as_deref())?;
            let number = match &port.port {
                None => None,
                Some(IntOrString::Int(n)) => {
                    if !(1..=65535).contains(n) {
                        return Err(self.value_err(
                            &format!("{pp}.port"),
                            format!("{n} is not a port number (1-65535)"),
                        ));
                    }
                    Some(*n)
                }
                Some(IntOrString::String(name)) => {
                    names::iana_svc_name(name)
                        .map_err(|e| self.value_err(&format!("{pp}.port"), e))?;
                    None
                }
            };
            if let Some(end) = port.end_port {
                let ep = format!("{pp}.endPort");
                let Some(start) = number else {
                    return Err(self.value_err(&ep, "endPort needs a numeric port"));
                };
                if end < start || end > 65535 {
                    return Err(self.value_err(
                        &ep,
                        format!("endPort {end} must be between port {start} and 65535"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn peers(&self, path: &str, peers: Option<&[NetworkPolicyPeer]>) -> Res {
        for (j, peer) in peers.into_iter().flatten().enumerate() {
            let pp = format!("{path}[{j}]");
            let selectors = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
            match (&peer.ip_block, selectors) {
                (Some(_), true) => {
                    return Err(self.value_err(
                        &pp,
                        "a peer may not combine ipBlock with podSelector or namespaceSelector",
                    ));
                }
                (None, false) => {
                    return Err(self.value_err(
                        &pp,
                        "a peer needs podSelector, namespaceSelector or ipBlock",
                    ));
                }
                _ => {}
            }
            if let Some(sel) = &peer.pod_selector {
                self.selector(&format!("{pp}.podSelector"), sel)?;
            }
            if let Some(sel) = &peer.namespace_selector {
                self.selector(&format!("{pp}.namespaceSelector"), sel)?;
            }
            if let Some(block) = &peer.ip_block {
                let cp = format!("{pp}.ipBlock.cidr");
                let cidr: IpNet = block.cidr.parse().map_err(|_| {
                    self.value_err(
                        &cp,
                        format!("{:?} is not a CIDR (for example 10.0.0.0/24)", block.cidr),
                    )
                })?;
                for (k, e) in block.except.iter().flatten().enumerate() {
                    let ep = format!("{pp}.ipBlock.except[{k}]");
                    let except: IpNet = e.parse().map_err(|_| {
                        self.value_err(
                            &ep,
                            format!("{e:?} is not a CIDR (for example 10.0.1.0/24)"),
                        )
                    })?;
                    if !cidr.contains(&except) || except.prefix_len() <= cidr.prefix_len() {
                        return Err(self.value_err(
                            &ep,
                            format!("{except} must be a strict subset of cidr {cidr}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn selector(&self, path: &str, sel: &LabelSelector) -> Res {
        self.labels(&join_key(path, "matchLabels"), sel.match_labels.as_ref())?;
        for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
            let rp = format!("{path}.matchExpressions[{i}]");
            names::label_key(&req.key).map_err(|e| self.value_err(&format!("{rp}.key"), e))?;
            let values = req.values.as_deref().unwrap_or_default();
            match req.operator.as_str() {
                "In" | "NotIn" => {
                    if values.is_empty() {
                        return Err(self.key_err(
                            &rp,
                            format!("operator {} needs a non-empty `values` list", req.operator),
                        ));
                    }
                    for (k, v) in values.iter().enumerate() {
                        names::label_value(v)
                            .map_err(|e| self.value_err(&format!("{rp}.values[{k}]"), e))?;
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if !values.is_empty() {
                        return Err(self.value_err(
                            &format!("{rp}.values"),
                            format!("operator {} takes no values", req.operator),
                        ));
                    }
                }
                other => {
                    return Err(self.value_err(
                        &format!("{rp}.operator"),
                        format!("unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Places a [`FieldError`] (a path relative to the manifest at `base`) in the file.
pub(crate) fn field_error(src: &Source, base: &str, e: FieldError) -> ScenarioError {
    let path = if e.path.is_empty() {
        base.to_string()
    } else {
        rel(base, &e.path)
    };
    if e.at_key {
        src.at_key(&path, e.message)
    } else {
        src.at_value(&path, e.message)
    }
}

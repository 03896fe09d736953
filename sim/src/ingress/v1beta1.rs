//! The `extensions/v1beta1` (and `networking.k8s.io/v1beta1`) Ingress of older material,
//! read from the manifest itself (k8s-openapi no longer has the type) and converted to
//! `networking.k8s.io/v1` the way the API server's conversion did: `serviceName` +
//! `servicePort` become `service.name` + `service.port.number|name`, `backend` becomes
//! `defaultBackend`, a path without `pathType` becomes `ImplementationSpecific`. The
//! result carries [`super::CONVERTED_ANNOTATION`] so the run can say it converted it.
//! Unknown fields and wrong types are reported at their line and column like the rest of
//! the parser (the structs deny unknown fields and the parser deserializes them with positions).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_json::Value;

/// The API versions that served Ingress before `networking.k8s.io/v1`.
pub const OLD_API_VERSIONS: [&str; 2] = ["extensions/v1beta1", "networking.k8s.io/v1beta1"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct OldIngress {
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: ObjectMeta,
    spec: Option<OldSpec>,
    #[allow(dead_code)]
    status: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OldSpec {
    backend: Option<OldBackend>,
    ingress_class_name: Option<String>,
    rules: Option<Vec<OldRule>>,
    tls: Option<Vec<v1::IngressTLS>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OldBackend {
    service_name: String,
    service_port: IntOrString,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OldRule {
    host: Option<String>,
    http: Option<OldHttp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OldHttp {
    paths: Vec<OldPath>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OldPath {
    path: Option<String>,
    path_type: Option<String>,
    backend: OldBackend,
}

fn backend(b: OldBackend) -> v1::IngressBackend {
    let port = match b.service_port {
        IntOrString::Int(n) => v1::ServiceBackendPort {
            number: Some(n),
            name: None,
        },
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => v1::ServiceBackendPort {
                number: Some(n),
                name: None,
            },
            Err(_) => v1::ServiceBackendPort {
                number: None,
                name: Some(s),
            },
        },
    };
    v1::IngressBackend {
        resource: None,
        service: Some(v1::IngressServiceBackend {
            name: b.service_name,
            port: Some(port),
        }),
    }
}

/// Converts an old-form Ingress (deserialized by the parser, which places its errors in
/// the file) to `networking.k8s.io/v1`.
pub(crate) fn to_v1(old: OldIngress) -> v1::Ingress {
    let api_version = old.api_version.clone();
    let mut metadata = old.metadata;
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(super::CONVERTED_ANNOTATION.into(), api_version);
    let spec = old.spec.map(|s| v1::IngressSpec {
        default_backend: s.backend.map(backend),
        ingress_class_name: s.ingress_class_name,
        rules: s.rules.map(|rules| {
            rules
                .into_iter()
                .map(|r| v1::IngressRule {
                    host: r.host,
                    http: r.http.map(|h| v1::HTTPIngressRuleValue {
                        paths: h
                            .paths
                            .into_iter()
                            .map(|p| v1::HTTPIngressPath {
                                path: p.path,
                                path_type: p
                                    .path_type
                                    .unwrap_or_else(|| "ImplementationSpecific".into()),
                                backend: backend(p.backend),
                            })
                            .collect(),
                    }),
                })
                .collect()
        }),
        tls: s.tls,
    });
    v1::Ingress {
        metadata,
        spec,
        status: None,
    }
}

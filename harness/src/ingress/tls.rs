//! The HTTPS probe's TLS client settings (rustls with the ring provider). The controller
//! serves self-signed certificates (the scenario's own Secrets, or ones knetlab made), so
//! no certificate authority vouches for them: like `curl -k`, the handshake goes on
//! whatever the chain, but the handshake signatures are verified, and [`ServedCheck`]
//! notes whether the certificate served names the host asked for (SNI) and whether it is
//! a well-formed self-signed certificate.

use std::sync::{Arc, Mutex};

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::ParsedCertificate;
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore};

/// What the handshake showed about the certificate the controller served.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServedCertificate {
    /// The certificate's subjectAltName names the requested host.
    pub matches_host: bool,
    /// It verifies as its own issuer (a self-signed certificate a client could pin).
    pub self_signed: bool,
    /// Why either check failed, in rustls's words.
    pub problems: Vec<String>,
}

/// Records what [`ServedCertificate`] says during the handshake.
#[derive(Debug)]
pub struct ServedCheck {
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<ServedCertificate>>,
}

impl ServedCheck {
    /// What the last handshake served, once it has run.
    pub fn served(&self) -> Option<ServedCertificate> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// rustls's ring provider. rustls 0.23.48 deprecates it for lacking post-quantum key
/// exchange, which a probe of a lab's nginx does not need; the alternative, aws-lc-rs,
/// would add a long C build to a fresh machine's first run.
#[allow(deprecated)]
fn provider() -> CryptoProvider {
    ring::default_provider()
}

/// A client configuration that records the served certificate, and the record.
pub fn client_config() -> Result<(ClientConfig, Arc<ServedCheck>), String> {
    let provider = Arc::new(provider());
    let check = Arc::new(ServedCheck {
        provider: provider.clone(),
        seen: Mutex::new(None),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client settings: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(check.clone())
        .with_no_client_auth();
    Ok((config, check))
}

/// Judges the certificate `end_entity` served for `host`.
fn judge(
    end_entity: &CertificateDer<'_>,
    host: &ServerName<'_>,
    now: UnixTime,
    provider: &CryptoProvider,
) -> ServedCertificate {
    let mut served = ServedCertificate::default();
    let parsed = match ParsedCertificate::try_from(end_entity) {
        Ok(p) => p,
        Err(e) => {
            served.problems.push(format!("unreadable certificate: {e}"));
            return served;
        }
    };
    match verify_server_name(&parsed, host) {
        Ok(()) => served.matches_host = true,
        Err(e) => served.problems.push(e.to_string()),
    }
    let mut itself = RootCertStore::empty();
    let added = itself.add(end_entity.clone().into_owned());
    match added.and_then(|()| {
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &itself,
            &[],
            now,
            provider.signature_verification_algorithms.all,
        )
    }) {
        Ok(()) => served.self_signed = true,
        Err(e) => served.problems.push(e.to_string()),
    }
    served
}

impl ServerCertVerifier for ServedCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let served = judge(end_entity, server_name, now, &self.provider);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(served);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_names_its_hosts_and_signs_itself() {
        let (crt, _key) =
            super::super::certificate::self_signed("bar.foo.com", &["bar.foo.com".to_string()])
                .unwrap();
        let der = der_of(&crt);
        let provider = provider();
        let now = UnixTime::now();
        let host = ServerName::try_from("bar.foo.com").unwrap();
        let s = judge(&der, &host, now, &provider);
        assert!(s.matches_host && s.self_signed, "{s:?}");
        let other = ServerName::try_from("foo.bar.com").unwrap();
        let s = judge(&der, &other, now, &provider);
        assert!(!s.matches_host && s.self_signed, "{s:?}");
        assert_eq!(s.problems.len(), 1, "{s:?}");
    }

    /// The DER inside one PEM certificate.
    fn der_of(pem: &str) -> CertificateDer<'static> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }
}

//! Self-signed certificates for the controller: for an Ingress's TLS Secret the scenario
//! does not give, and nginx's default ("fake") certificate. Made with rcgen (EC P-256,
//! quick to make), valid from 1975 to 4096 (rcgen's defaults: a lab's certificate should
//! never expire mid-workshop).

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

/// The PEM certificate and PEM private key of a new self-signed certificate with subject
/// `O=knetlab, CN=cn` and `hosts` as its DNS subjectAltNames.
pub fn self_signed(cn: &str, hosts: &[String]) -> Result<(String, String), rcgen::Error> {
    let mut params = CertificateParams::new(hosts.to_vec())?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "knetlab");
    subject.push(DnType::CommonName, cn);
    params.distinguished_name = subject;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

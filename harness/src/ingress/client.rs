//! HTTP(S) requests through the ingress controller from inside a client's namespace (an
//! external host or a pod), to the controller's NodePort on a node address, with the
//! scenario's Host header and, over HTTPS, its SNI name. Plain HTTP is a small HTTP/1.1
//! exchange over a tokio socket created in the client's namespace. HTTPS is the same
//! exchange inside TLS (rustls, see [`super::tls`]) on such a socket, with the host as
//! SNI; it accepts the self-signed certificate, which is the scenario's own, and notes
//! whether it names the host. Either way the answer is parsed into a status code and the
//! backend pod, named by the body our pod servers send (see `probe::server`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sim::ingress::Scheme;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use super::tls::{self, ServedCertificate};
use crate::netns::Netns;

/// How long one request may take: above nginx's upstream connect timeout (2 s), so a
/// backend that drops the controller's SYN shows as nginx's 504, not as our timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(6);

/// One request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub client: &'a Netns,
    pub scheme: Scheme,
    /// Host header and SNI.
    pub host: &'a str,
    pub path: &'a str,
    /// Where to connect: a node address and the NodePort.
    pub addr: SocketAddrV4,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Response {
    /// `None` when no HTTP answer came (see `error`).
    pub status: Option<u16>,
    /// `ns/pod` that answered (from the body of a 200 from our pod servers).
    pub backend: Option<String>,
    /// The `Location` of a redirect.
    pub location: Option<String>,
    /// Over HTTPS: what the certificate the controller served showed.
    pub certificate: Option<ServedCertificate>,
    pub error: Option<String>,
    pub ms: f64,
}

/// The request text: HTTP/1.1, one request, connection closed after it.
pub fn request_text(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: knetlab\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
}

/// Sends the request and reads the answer.
pub async fn get(req: &Request<'_>) -> Response {
    let t = Instant::now();
    let raw = match req.scheme {
        Scheme::Http => tokio::time::timeout(REQUEST_TIMEOUT, plain(req))
            .await
            .map(|r| r.map(|bytes| (bytes, None))),
        Scheme::Https => tokio::time::timeout(REQUEST_TIMEOUT, https(req)).await,
    };
    let ms = (t.elapsed().as_secs_f64() * 1e5).round() / 100.0;
    match raw {
        Ok(Ok((bytes, certificate))) => {
            let mut r = parse(&bytes);
            r.ms = ms;
            r.certificate = certificate;
            r
        }
        Ok(Err(e)) => Response {
            error: Some(e),
            ms,
            ..Default::default()
        },
        Err(_) => Response {
            error: Some(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
            ms,
            ..Default::default()
        },
    }
}

/// A TCP connection to the request's address from a socket made in the client's
/// namespace.
async fn connect(req: &Request<'_>) -> Result<TcpStream, String> {
    let sock = req.client.enter(TcpSocket::new_v4).map_err(|e| {
        format!(
            "create a TCP socket in namespace {}: {e}",
            req.client.name()
        )
    })?;
    sock.connect(SocketAddr::V4(req.addr))
        .await
        .map_err(|e| format!("connect to {}: {e}", req.addr))
}

async fn plain(req: &Request<'_>) -> Result<Vec<u8>, String> {
    let mut stream = connect(req).await?;
    stream
        .write_all(request_text(req.host, req.path).as_bytes())
        .await
        .map_err(|e| format!("send the request to {}: {e}", req.addr))?;
    read_answer(&mut stream, req).await
}

/// The request over TLS with the host as SNI, and what the served certificate showed.
async fn https(req: &Request<'_>) -> Result<(Vec<u8>, Option<ServedCertificate>), String> {
    let (config, check) = tls::client_config()?;
    let name = ServerName::try_from(req.host.to_string())
        .map_err(|e| format!("{:?} cannot be sent as a TLS server name: {e}", req.host))?;
    let tcp = connect(req).await?;
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {} (SNI {}): {e}", req.addr, req.host))?;
    stream
        .write_all(request_text(req.host, req.path).as_bytes())
        .await
        .map_err(|e| format!("send the request to {} over TLS: {e}", req.addr))?;
    let answer = read_answer(&mut stream, req).await?;
    let served = check.served();
    if let Some(s) = served.as_ref().filter(|s| !s.matches_host) {
        tracing::debug!(
            "{} served a certificate for SNI {} that does not name it: {}",
            req.addr,
            req.host,
            s.problems.join("; ")
        );
    }
    Ok((answer, served))
}

/// Reads until the server closes. A peer that closes without TLS's close_notify (which
/// rustls reports as an unexpected end) still gave its whole answer with
/// `Connection: close`.
async fn read_answer(
    stream: &mut (impl AsyncRead + Unpin),
    req: &Request<'_>,
) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    match stream.read_to_end(&mut buf).await {
        Ok(_) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(buf),
        Err(e) => Err(format!("read the answer from {}: {e}", req.addr)),
    }
}

/// Parses an HTTP/1.x answer: status line, headers, body.
pub fn parse(bytes: &[u8]) -> Response {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok());
    let mut backend = None;
    let mut location = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "x-knetlab-backend" => backend = Some(v.trim().to_string()),
                "location" => location = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    if status == Some(200) && backend.is_none() {
        // The body is our server's reply line: `ns/pod client-ip`.
        backend = body
            .split_whitespace()
            .next()
            .filter(|b| b.contains('/'))
            .map(str::to_string);
    }
    Response {
        error: status.is_none().then(|| {
            format!(
                "not an HTTP answer: {:?}",
                text.chars().take(60).collect::<String>()
            )
        }),
        status,
        backend,
        location,
        certificate: None,
        ms: 0.0,
    }
}

/// The address of the node the request goes to.
pub fn node_addr(node_ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(node_ip, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nX-Knetlab-Backend: x/a\r\n\r\nx/a 10.0.0.1\n",
        );
        assert_eq!(r.status, Some(200));
        assert_eq!(r.backend.as_deref(), Some("x/a"));
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\ny/b 10.0.0.2\n");
        assert_eq!(r.backend.as_deref(), Some("y/b"));
        let r =
            parse(b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://a.com/x\r\n\r\n<html>");
        assert_eq!(
            (r.status, r.location.as_deref()),
            (Some(308), Some("https://a.com/x"))
        );
        assert_eq!(r.backend, None);
        let r = parse(b"x/a 10.0.0.1\n");
        assert_eq!(r.status, None);
        assert!(r.error.is_some());
        assert!(
            request_text("foo.bar.com", "/foo")
                .starts_with("GET /foo HTTP/1.1\r\nHost: foo.bar.com\r\n")
        );
    }
}

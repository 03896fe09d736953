//! The cluster DNS server: hickory's `Server` on a UDP socket and a TCP listener bound to
//! port 53 inside the `kube-system/kube-dns` pod's namespace (created there by this
//! process, like the probe servers), answering from a [`Zone`] that is swapped whole
//! after every step. Authoritative for the cluster domain: records, NOERROR with no data,
//! or NXDOMAIN, the latter two with the zone's SOA so resolvers may cache the negative
//! answer as CoreDNS lets them. Any other zone is REFUSED with a log line: a real
//! cluster DNS forwards it upstream, and knetlab has no internet.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData as WireData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use sim::dns::{Lookup, RData, TTL, Zone};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

use crate::netns::Netns;

/// The line logged for every question outside the cluster domain.
pub const NO_UPSTREAM: &str = "no upstream: knetlab has no internet";

/// What the server has answered so far (for reports and tests).
#[derive(Debug, Default)]
pub struct Counters {
    pub answered: AtomicU64,
    pub nxdomain: AtomicU64,
    pub refused: AtomicU64,
}

struct Handler {
    zone: Arc<RwLock<Arc<Zone>>>,
    counters: Arc<Counters>,
}

/// A running cluster DNS server. [`DnsServer::shutdown`] stops it and closes its
/// sockets; dropping it does too (the server's tasks are aborted with it).
pub struct DnsServer {
    zone: Arc<RwLock<Arc<Zone>>>,
    counters: Arc<Counters>,
    server: hickory_server::Server<Handler>,
    /// Where it listens, for messages.
    pub netns_name: String,
}

impl DnsServer {
    /// Binds UDP and TCP `0.0.0.0:53` inside `ns` and starts answering from `zone`.
    pub fn start(ns: &Netns, zone: Zone) -> Result<DnsServer> {
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 53));
        let udp = ns
            .enter(|| std::net::UdpSocket::bind(addr))
            .with_context(|| format!("bind UDP {addr} in namespace {}", ns.name()))?;
        udp.set_nonblocking(true)
            .context("make the DNS UDP socket non-blocking")?;
        let udp = UdpSocket::from_std(udp).context("register the DNS UDP socket with tokio")?;
        let tcp = ns
            .enter(TcpSocket::new_v4)
            .with_context(|| format!("create a TCP socket in namespace {}", ns.name()))?;
        tcp.set_reuseaddr(true).context("set SO_REUSEADDR")?;
        tcp.bind(addr)
            .with_context(|| format!("bind TCP {addr} in namespace {}", ns.name()))?;
        let tcp: TcpListener = tcp
            .listen(128)
            .with_context(|| format!("listen on TCP {addr} in namespace {}", ns.name()))?;
        let zone = Arc::new(RwLock::new(Arc::new(zone)));
        let counters = Arc::new(Counters::default());
        let mut server = hickory_server::Server::new(Handler {
            zone: zone.clone(),
            counters: counters.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
        Ok(DnsServer {
            zone,
            counters,
            server,
            netns_name: ns.name().to_string(),
        })
    }

    /// Replaces the records at once: a question is answered wholly from the old zone or
    /// wholly from the new one.
    pub fn set_zone(&self, zone: Zone) {
        let mut z = self.zone.write().unwrap_or_else(|e| e.into_inner());
        *z = Arc::new(zone);
    }

    /// The zone served now.
    pub fn zone(&self) -> Arc<Zone> {
        self.zone.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Stops answering and waits until the server's tasks (and so its sockets) are gone.
    pub async fn shutdown(mut self) -> Result<()> {
        self.server
            .shutdown_gracefully()
            .await
            .map_err(|e| anyhow::anyhow!("stop the DNS server in {}: {e}", self.netns_name))
    }
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(s).ok()
}

/// One of our records on the wire.
fn wire(owner: &Name, r: &RData) -> Option<Record> {
    let data = match r {
        RData::A(ip) => WireData::A(A(*ip)),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => WireData::SRV(SRV::new(*priority, *weight, *port, name(target)?)),
        RData::Txt(t) => WireData::TXT(TXT::new(vec![t.clone()])),
    };
    Some(Record::from_rdata(owner.clone(), TTL, data))
}

/// The zone's SOA, as CoreDNS writes it (`ns.dns.<zone>`, `hostmaster.<zone>`).
fn soa(origin: &str) -> Option<Record> {
    let data = SOA::new(
        name(&format!("ns.dns.{origin}"))?,
        name(&format!("hostmaster.{origin}"))?,
        1,
        7200,
        1800,
        86400,
        TTL,
    );
    Some(Record::from_rdata(name(origin)?, TTL, WireData::SOA(data)))
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let failed = |metadata: Metadata| {
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        };
        let info = match request.request_info() {
            Ok(i) => i,
            Err(_) => {
                let resp = builder.error_msg(&request.metadata, ResponseCode::FormErr);
                return response_handle
                    .send_response(resp)
                    .await
                    .unwrap_or_else(|_| failed(metadata));
            }
        };
        let qname = info.query.name().to_string();
        let qtype = info.query.query_type();
        let kind = match qtype {
            RecordType::ANY => "ANY".to_string(),
            t => t.to_string(),
        };
        let zone = self.zone.read().unwrap_or_else(|e| e.into_inner()).clone();
        let owner = info.query.original().name().clone();
        let lookup = zone.lookup(&qname, &kind);
        let (code, answers, authority): (ResponseCode, Vec<Record>, Vec<Record>) = match lookup {
            Lookup::Records(rs) => {
                self.counters.answered.fetch_add(1, Ordering::Relaxed);
                (
                    ResponseCode::NoError,
                    rs.iter().filter_map(|r| wire(&owner, r)).collect(),
                    vec![],
                )
            }
            Lookup::NoData => {
                self.counters.answered.fetch_add(1, Ordering::Relaxed);
                (
                    ResponseCode::NoError,
                    vec![],
                    soa(&zone.origin).into_iter().collect(),
                )
            }
            Lookup::NxDomain => {
                self.counters.nxdomain.fetch_add(1, Ordering::Relaxed);
                (
                    ResponseCode::NXDomain,
                    vec![],
                    soa(&zone.origin).into_iter().collect(),
                )
            }
            Lookup::NotOurs => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "cluster DNS: {qname} {kind} from {}: {NO_UPSTREAM}",
                    request.src()
                );
                let resp = builder.error_msg(&request.metadata, ResponseCode::Refused);
                return response_handle
                    .send_response(resp)
                    .await
                    .unwrap_or_else(|_| failed(metadata));
            }
        };
        metadata.authoritative = true;
        metadata.response_code = code;
        let resp = builder.build(metadata, answers.iter(), [], authority.iter(), []);
        response_handle
            .send_response(resp)
            .await
            .unwrap_or_else(|_| failed(metadata))
    }
}

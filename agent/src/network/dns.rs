//! The resolver every task container is given (hickory-server): service names answer with the
//! service's stable address, unknown names under `.shoal` are NXDOMAIN at once, a known name
//! asked for a type it lacks (AAAA) is NOERROR with no answer (musl gives up on NXDOMAIN), and
//! every other name is forwarded to the node's upstream resolvers.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Message, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::metrics::NetMetrics;
use super::table::{Resolution, Table};

/// Time to live of service answers: short, since tasks come and go (the address does not).
const TTL: u32 = 5;
/// How long an upstream resolver gets to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The resolver of the containers of one namespace.
#[derive(Clone)]
pub struct Resolver {
    /// The routing table, shared with the proxies.
    pub table: Arc<RwLock<Arc<Table>>>,
    /// Namespace of the container's service (short names resolve in it).
    pub namespace: String,
    /// Where other names go.
    pub upstream: Arc<Vec<SocketAddr>>,
    /// Counters.
    pub metrics: NetMetrics,
}

fn servfail(req: &Metadata) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(req);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

impl Resolver {
    fn resolve(&self, name: &str) -> Resolution {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner()).clone();
        table.resolve(name, &self.namespace)
    }

    /// Sends the query as received to each upstream in turn; the first answer wins.
    async fn forward(&self, raw: &[u8]) -> Option<Message> {
        for up in self.upstream.iter() {
            let bind: SocketAddr = if up.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.send_to(raw, up).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            match tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf)).await {
                Ok(Ok(n)) => match Message::from_vec(&buf[..n]) {
                    Ok(m) => return Some(m),
                    Err(e) => {
                        tracing::debug!(upstream = %up, error = %e, "unreadable upstream answer")
                    }
                },
                _ => tracing::debug!(upstream = %up, "upstream resolver did not answer"),
            }
        }
        self.metrics.error("dns_upstream");
        None
    }
}

#[async_trait::async_trait]
impl RequestHandler for Resolver {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut rh: R,
    ) -> ResponseInfo {
        let b = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            let r = b.error_msg(&request.metadata, ResponseCode::FormErr);
            return rh
                .send_response(r)
                .await
                .unwrap_or_else(|_| servfail(&request.metadata));
        };
        let qname = info.query.name().to_string();
        let name = qname.trim_end_matches('.').to_ascii_lowercase();
        let mut md = Metadata::response_from_request(info.metadata);
        md.recursion_available = true;
        let mut answers = Vec::new();
        let mut authorities = Vec::new();
        let mut additionals = Vec::new();
        match self.resolve(&name) {
            Resolution::Service(ip) => {
                md.authoritative = true;
                if info.query.query_type() == RecordType::A {
                    let owner = Name::from(info.query.name().clone());
                    answers.push(Record::from_rdata(owner, TTL, RData::A(A(ip))));
                }
            }
            Resolution::NoSuchName => {
                md.authoritative = true;
                md.response_code = ResponseCode::NXDomain;
            }
            Resolution::Foreign => match self.forward(request.as_slice()).await {
                Some(m) => {
                    md.response_code = m.metadata.response_code;
                    md.authoritative = m.metadata.authoritative;
                    answers = m.answers;
                    authorities = m.authorities;
                    additionals = m.additionals;
                }
                None => md.response_code = ResponseCode::ServFail,
            },
        }
        let r = b.build(
            md,
            answers.iter(),
            authorities.iter(),
            std::iter::empty(),
            additionals.iter(),
        );
        rh.send_response(r)
            .await
            .unwrap_or_else(|_| servfail(&request.metadata))
    }
}

/// The upstream resolvers of the host: the `nameserver` lines of `resolv.conf` (port 53).
/// Loopback ones are kept: forwarded queries leave from the agent, in the host's namespace.
pub fn upstream_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            let ip: std::net::IpAddr = w.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn nameservers_are_read_from_resolv_conf() {
        let ups = super::upstream_from_resolv_conf(
            "# comment\nnameserver 10.0.0.2\nsearch example.com\nnameserver ::1\noptions ndots:2\n",
        );
        assert_eq!(
            ups,
            vec!["10.0.0.2:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }
}

//! The node's address: the one other hosts reach its tasks on, advertised in its node record
//! and in its tasks' Consul registrations. Detected as the source address of the default route,
//! else the first non-loopback interface address; a loopback address is refused when the store
//! or Consul is on another host, unless the operator gave it explicitly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// Why the node address cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    /// Only a loopback address was found while the cluster is reached over the network.
    #[error(
        "the node address {address} is a loopback address, which other hosts cannot reach, \
         but {remote} is not on this host: give --address with this host's address \
         (--address {address} to keep it anyway)"
    )]
    LoopbackWithRemoteCluster {
        /// The address found.
        address: String,
        /// The store or Consul host that is not local.
        remote: String,
    },
}

/// How the node address was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSource {
    /// `--address`.
    Flag,
    /// The source address of the default route.
    DefaultRoute,
    /// The first non-loopback address of this interface.
    Interface(String),
    /// Nothing else found.
    Loopback,
}

impl std::fmt::Display for AddressSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressSource::Flag => f.write_str("--address"),
            AddressSource::DefaultRoute => f.write_str("the default route's source address"),
            AddressSource::Interface(name) => write!(f, "the first address of interface {name}"),
            AddressSource::Loopback => f.write_str("no other address found"),
        }
    }
}

/// The source address the kernel picks for the default route (IPv4, else IPv6): a UDP
/// socket "connected" to a documentation address sends nothing but gets a local address.
pub fn default_route_address() -> Option<IpAddr> {
    let probes: [(IpAddr, SocketAddr); 2] = [
        (
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 9)),
        ),
        (
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9)),
        ),
    ];
    probes.into_iter().find_map(|(any, target)| {
        let socket = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
        socket.connect(target).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        usable(ip).then_some(ip)
    })
}

/// The first non-loopback, non-link-local address of an interface that is up.
pub fn first_interface_address() -> Option<(String, IpAddr)> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    let mut found: Vec<(String, IpAddr)> = addrs
        .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        .filter_map(|a| {
            let addr = a.address?;
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(addr.as_sockaddr_in6()?.ip())
            };
            usable(ip).then_some((a.interface_name, ip))
        })
        .collect();
    // IPv4 first, as operators expect to see it.
    found.sort_by_key(|(_, ip)| ip.is_ipv6());
    found.into_iter().next()
}

fn usable(ip: IpAddr) -> bool {
    !ip.is_loopback()
        && !ip.is_unspecified()
        && match ip {
            IpAddr::V4(v4) => !v4.is_link_local(),
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
        }
}

/// The node address: `flag` when given, else detected, else 127.0.0.1.
pub fn choose(flag: Option<&str>) -> (String, AddressSource) {
    if let Some(a) = flag {
        return (a.to_string(), AddressSource::Flag);
    }
    if let Some(ip) = default_route_address() {
        return (ip.to_string(), AddressSource::DefaultRoute);
    }
    if let Some((name, ip)) = first_interface_address() {
        return (ip.to_string(), AddressSource::Interface(name));
    }
    ("127.0.0.1".into(), AddressSource::Loopback)
}

/// Refuses a loopback `address` that was not given explicitly while one of `remotes` (hosts
/// of the store and of Consul) is not on this host.
pub fn check(
    address: &str,
    source: &AddressSource,
    remotes: &[String],
) -> Result<(), AddressError> {
    if *source == AddressSource::Flag || !is_loopback_host(address) {
        return Ok(());
    }
    match remotes.iter().find(|h| !is_loopback_host(h)) {
        Some(remote) => Err(AddressError::LoopbackWithRemoteCluster {
            address: address.to_string(),
            remote: remote.clone(),
        }),
        None => Ok(()),
    }
}

/// Whether `host` (a name or an address, IPv6 possibly in brackets) is this host's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The hosts of a store URL (`etcd://h1:2379,h2:2379`, `consul://h:8500?token=…`); none for
/// `file://` (the embedded store is local).
pub fn url_hosts(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    if scheme == "file" {
        return Vec::new();
    }
    let rest = rest.split(['?', '/']).next().unwrap_or("");
    rest.split(',')
        .filter(|s| !s.is_empty())
        .map(|hp| host_of(hp.rsplit('@').next().unwrap_or(hp)))
        .collect()
}

/// The host of `HOST:PORT`, `[V6]:PORT`, `HOST` or an `http(s)://HOST:PORT` URL.
pub fn host_of(addr: &str) -> String {
    let addr = addr.split_once("://").map_or(addr, |(_, r)| r);
    let addr = addr.split('/').next().unwrap_or(addr);
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h.to_string(),
        _ => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_store_urls_and_addresses() {
        assert_eq!(
            url_hosts("etcd://10.0.0.5:2379,10.0.0.6:2379"),
            ["10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(url_hosts("consul://127.0.0.1:8500?token=x"), ["127.0.0.1"]);
        assert!(url_hosts("file:///var/lib/shoal").is_empty());
        assert_eq!(host_of("https://consul.example:8501"), "consul.example");
        assert_eq!(host_of("[::1]:8500"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("127.0.0.5"));
        assert!(is_loopback_host("::1"));
        assert!(!is_loopback_host("10.0.0.5"));
    }

    #[test]
    fn loopback_is_refused_only_when_detected_and_the_cluster_is_remote() {
        let remote = vec!["127.0.0.1".to_string(), "10.0.0.5".to_string()];
        let local = vec!["localhost".to_string()];
        assert_eq!(
            check("127.0.0.1", &AddressSource::Loopback, &remote),
            Err(AddressError::LoopbackWithRemoteCluster {
                address: "127.0.0.1".into(),
                remote: "10.0.0.5".into()
            })
        );
        assert!(check("127.0.0.1", &AddressSource::Flag, &remote).is_ok());
        assert!(check("127.0.0.1", &AddressSource::Loopback, &local).is_ok());
        assert!(check("10.0.0.7", &AddressSource::DefaultRoute, &remote).is_ok());
    }

    #[test]
    fn a_detected_address_is_never_loopback() {
        let (address, source) = choose(None);
        println!("detected node address {address} ({source})");
        assert!(
            !is_loopback_host(&address) || source == AddressSource::Loopback,
            "{address} from {source}"
        );
        assert_eq!(
            choose(Some("10.1.2.3")),
            ("10.1.2.3".into(), AddressSource::Flag)
        );
    }
}

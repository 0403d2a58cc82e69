//! Who the client of a request is, and what each client holds. The client is the peer's address or, when
//! the peer is a trusted proxy (`trusted_proxies`), the address its `X-Forwarded-For` names
//! ([`client_address`]). Connections are counted from accept to close, in all (`limits.max_connections`)
//! and per peer address (`limits.max_connections_per_client`, not for a trusted proxy, which carries every
//! client): a connection past either is closed at once, before it costs a task or a buffer. Requests are
//! counted per client from their head to their answer (`limits.max_requests_per_client`, [`Requests`]). So
//! no client can use up the process's file descriptors or crowd out the store.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use http::HeaderMap;

use crate::config::TrustedProxies;

/// The header in which each proxy appends the address it was connected from.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client of a request from `peer`: the peer itself, unless it is one of the `trusted` proxies; then
/// the first address in `X-Forwarded-For` that is not a trusted proxy, walking from the right (each proxy
/// appends the address it was connected from; every such header counts, in order, each a comma-separated
/// list).
///
/// Where the walk cannot go on (no header, an entry that is not an address, or nothing but trusted proxies
/// in it) the client is the last hop it resolved: the peer, or the farthest trusted proxy named. It never
/// goes left of the first untrusted entry: a client behind the proxy can write anything there, but its own
/// address, which the proxy appends, comes first from the right.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted.contains(client) {
        return client;
    }
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(list) = value.to_str() else { return client };
        for entry in list.rsplit(',') {
            let Some(hop) = parse_hop(entry) else { return client };
            client = hop;
            if !trusted.contains(hop) {
                return hop;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address and a port as some proxies write it
/// (`203.0.113.7:41234`, `[2001:db8::1]:41234`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let address = entry.parse::<IpAddr>().or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip())).ok()?;
    Some(address.to_canonical())
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections` are open.
    MaxConnections,
    /// This client address has `limits.max_connections_per_client` open.
    PerClient,
}

impl Refused {
    /// The `reason` label of `hookgate_connections_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::PerClient => "per_client",
        }
    }
}

/// The open connections of one listener.
pub struct Connections {
    max: usize,
    per_client: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_client: Tally,
}

/// One admitted connection: counted until dropped.
pub struct Admitted {
    connections: Arc<Connections>,
    /// The peer it is counted under, unless it is a trusted proxy's.
    client: Option<IpAddr>,
}

impl Connections {
    /// Room for `max` connections in all and `per_client` from one address.
    pub fn new(max: usize, per_client: usize) -> Arc<Connections> {
        Arc::new(Connections { max, per_client, open: Mutex::new(Open::default()) })
    }

    /// Counts a new connection from `peer`, or says why it must be closed. A trusted proxy's connections
    /// count toward `max` only: it carries every client, whose requests are capped one by one instead.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, trusted_proxy: bool) -> Result<Admitted, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.max {
            return Err(Refused::MaxConnections);
        }
        if !trusted_proxy && !open.by_client.take(peer, 1, self.per_client as u64) {
            return Err(Refused::PerClient);
        }
        open.total += 1;
        Ok(Admitted { connections: Arc::clone(self), client: (!trusted_proxy).then_some(peer) })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if let Some(client) = self.client {
            open.by_client.give_back(client, 1);
        }
    }
}

/// The client a request is counted under, put in its extensions by the per-client cap for the steps after.
#[derive(Debug, Clone, Copy)]
pub struct Client(pub IpAddr);

/// Requests in flight per client address, each counted from its head to its answer:
/// `limits.max_requests_per_client`, read as each request arrives (a reload changes it for the next).
/// Only clients with a request in flight have an entry.
#[derive(Default)]
pub struct Requests {
    in_flight: Mutex<Tally>,
}

/// One request in flight: counted against its client until dropped.
pub struct InFlight {
    requests: Arc<Requests>,
    client: IpAddr,
}

impl Requests {
    /// No request in flight yet.
    pub fn new() -> Arc<Requests> {
        Arc::new(Requests::default())
    }

    /// Counts a request from `client`, or `None` when `client` has `max` in flight already.
    pub fn admit(self: &Arc<Self>, client: IpAddr, max: usize) -> Option<InFlight> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.take(client, 1, max as u64).then(|| InFlight { requests: Arc::clone(self), client })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = self.requests.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.give_back(self.client, 1);
    }
}

/// What each client address holds (connections, requests, bytes): the count every per-client cap reads.
/// Only clients holding something have an entry, however many addresses come and go.
#[derive(Default)]
pub struct Tally(HashMap<IpAddr, u64>);

impl Tally {
    /// Adds `n` for `client` unless that would take it past `max`; says whether it did.
    pub fn take(&mut self, client: IpAddr, n: u64, max: u64) -> bool {
        let held = self.0.entry(client).or_insert(0);
        if *held + n > max {
            if *held == 0 {
                self.0.remove(&client);
            }
            return false;
        }
        *held += n;
        true
    }

    /// Gives back `n` that `client` took; its entry goes when it holds nothing.
    pub fn give_back(&mut self, client: IpAddr, n: u64) {
        if let Some(held) = self.0.get_mut(&client) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                self.0.remove(&client);
            }
        }
    }

    /// How many clients hold something.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no client holds anything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusting(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    /// The client of a request from `peer` with these `X-Forwarded-For` headers, behind `trusted`.
    fn client(peer: &str, forwarded_for: &[&str], trusted: &TrustedProxies) -> IpAddr {
        let mut headers = HeaderMap::new();
        for value in forwarded_for {
            headers.append(X_FORWARDED_FOR, value.parse().unwrap());
        }
        client_address(ip(peer), &headers, trusted)
    }

    #[test]
    fn counts_per_client_and_in_all_and_frees_on_drop() {
        let connections = Connections::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = (ip("127.0.0.2"), ip("127.0.0.3"));
        let first = connections.admit(a, false).unwrap();
        let _second = connections.admit(a, false).unwrap();
        assert_eq!(connections.admit(a, false).err(), Some(Refused::PerClient));
        let _third = connections.admit(b, false).unwrap();
        assert_eq!(connections.admit(b, false).err(), Some(Refused::MaxConnections));
        drop(first);
        assert!(connections.admit(a, false).is_ok(), "a closed connection frees its place");
        assert!(connections.open.lock().unwrap().by_client.len() <= 2);
    }

    #[test]
    fn a_trusted_proxys_connections_count_only_in_all() {
        let connections = Connections::new(4, 1);
        let proxy = ip("10.0.0.1");
        let held: Vec<Admitted> = (0..4).map(|_| connections.admit(proxy, true).unwrap()).collect();
        assert_eq!(connections.admit(proxy, true).err(), Some(Refused::MaxConnections));
        drop(held);
        assert!(connections.open.lock().unwrap().by_client.is_empty());
        assert_eq!(connections.open.lock().unwrap().total, 0);
    }

    #[test]
    fn requests_in_flight_are_capped_per_client_until_answered() {
        let requests = Requests::new();
        let (a, b) = (ip("127.0.0.2"), ip("127.0.0.3"));
        let first = requests.admit(a, 2).unwrap();
        let second = requests.admit(a, 2).unwrap();
        assert!(requests.admit(a, 2).is_none(), "the third from one address is refused");
        assert!(requests.admit(b, 2).is_some(), "another address has its own count");
        assert!(requests.admit(a, 3).is_some(), "a cap raised by a reload applies to the next request");
        drop(first);
        assert!(requests.admit(a, 2).is_some(), "an answered request frees its place");
        drop(second);
        assert!(requests.in_flight.lock().unwrap().is_empty(), "no entry is left for a client with nothing in flight");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let none = TrustedProxies::default();
        assert_eq!(client("203.0.113.7", &["198.51.100.1"], &none), ip("203.0.113.7"));
        let trusted = trusting(&["10.0.0.0/8"]);
        assert_eq!(client("203.0.113.7", &["10.0.0.5", "198.51.100.1"], &trusted), ip("203.0.113.7"));
        assert_eq!(client("::ffff:203.0.113.7", &[], &trusted), ip("203.0.113.7"), "an IPv4 peer seen on [::]");
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted = trusting(&["10.0.0.0/8", "192.168.1.1/32"]);
        assert_eq!(client("10.0.0.1", &["203.0.113.7"], &trusted), ip("203.0.113.7"));
        // Two proxies: the Ingress appended the load balancer's address after the client's.
        assert_eq!(client("10.0.0.1", &["203.0.113.7, 10.2.3.4"], &trusted), ip("203.0.113.7"));
        // A spoofed entry left of the client's real address is never reached.
        assert_eq!(client("10.0.0.1", &["6.6.6.6, 10.9.9.9, 203.0.113.7"], &trusted), ip("203.0.113.7"));
        // Several headers are one list, in order.
        assert_eq!(client("10.0.0.1", &["198.51.100.1", "203.0.113.7, 192.168.1.1"], &trusted), ip("203.0.113.7"));
        assert_eq!(client("10.0.0.1", &["198.51.100.1", "10.0.0.2"], &trusted), ip("198.51.100.1"));
        assert_eq!(client("::ffff:10.0.0.1", &[" 2001:db8::7 "], &trusted), ip("2001:db8::7"));
        assert_eq!(client("10.0.0.1", &["203.0.113.7:41234"], &trusted), ip("203.0.113.7"), "with a port");
        assert_eq!(client("10.0.0.1", &["[2001:db8::7]:41234"], &trusted), ip("2001:db8::7"));
    }

    #[test]
    fn where_the_walk_cannot_go_on_the_client_is_the_last_hop_resolved() {
        let trusted = trusting(&["10.0.0.0/8"]);
        assert_eq!(client("10.0.0.1", &[], &trusted), ip("10.0.0.1"), "no header: the proxy itself");
        assert_eq!(client("10.0.0.1", &["10.0.0.7, 10.0.0.8"], &trusted), ip("10.0.0.7"), "every entry trusted");
        assert_eq!(client("10.0.0.1", &["203.0.113.7, unknown"], &trusted), ip("10.0.0.1"), "not an address");
        assert_eq!(client("10.0.0.1", &["203.0.113.7, garbage, 10.0.0.9"], &trusted), ip("10.0.0.9"));
        assert_eq!(client("10.0.0.1", &["203.0.113.7,"], &trusted), ip("10.0.0.1"), "an empty entry");
        assert_eq!(client("10.0.0.1", &[""], &trusted), ip("10.0.0.1"));
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, http::HeaderValue::from_bytes(b"203.0.113.7\xff").unwrap());
        assert_eq!(client_address(ip("10.0.0.1"), &headers, &trusted), ip("10.0.0.1"), "not UTF-8");
    }
}

//! Connections, counted from accept to close: in all (`limits.max_connections`) and per client address
//! (`limits.max_connections_per_client`). A connection past either is closed at once, before it costs a
//! task or a buffer, so that no client can use up the process's file descriptors or crowd out the store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

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
    by_client: HashMap<IpAddr, usize>,
}

/// One admitted connection: counted until dropped.
pub struct Admitted {
    connections: Arc<Connections>,
    client: IpAddr,
}

impl Connections {
    /// Room for `max` connections in all and `per_client` from one address.
    pub fn new(max: usize, per_client: usize) -> Arc<Connections> {
        Arc::new(Connections { max, per_client, open: Mutex::new(Open::default()) })
    }

    /// Counts a new connection from `client`, or says why it must be closed.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.max {
            return Err(Refused::MaxConnections);
        }
        let from_client = open.by_client.entry(client).or_insert(0);
        if *from_client >= self.per_client {
            return Err(Refused::PerClient);
        }
        *from_client += 1;
        open.total += 1;
        Ok(Admitted { connections: Arc::clone(self), client })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if let Some(count) = open.by_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_client_and_in_all_and_frees_on_drop() {
        let connections = Connections::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let first = connections.admit(a).unwrap();
        let _second = connections.admit(a).unwrap();
        assert_eq!(connections.admit(a).err(), Some(Refused::PerClient));
        let _third = connections.admit(b).unwrap();
        assert_eq!(connections.admit(b).err(), Some(Refused::MaxConnections));
        drop(first);
        assert!(connections.admit(a).is_ok(), "a closed connection frees its place");
        assert!(connections.open.lock().unwrap().by_client.len() <= 2);
    }
}

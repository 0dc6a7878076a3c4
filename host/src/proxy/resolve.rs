//! Hostname targets, re-resolved on an interval (`dns-refresh`): each new connection goes to
//! the next of the addresses the name had at the last resolution, so every A/AAAA record takes
//! a share, and a change closes the idle connections to the old ones. Until the first
//! resolution (or after failed ones with nothing known), connections resolve the name
//! themselves.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use http::uri::Authority;

/// The addresses a hostname target resolved to last.
#[derive(Debug, Default)]
pub struct Addresses {
    list: ArcSwap<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Addresses {
    /// The address for the next connection (round robin), if the name was resolved.
    pub fn next(&self) -> Option<SocketAddr> {
        let list = self.list.load();
        if list.is_empty() {
            return None;
        }
        Some(list[self.next.fetch_add(1, Ordering::Relaxed) % list.len()])
    }

    /// Keeps a new resolution (sorted, without duplicates); true when it differs from the last.
    pub fn set(&self, mut addresses: Vec<SocketAddr>) -> bool {
        addresses.sort_unstable();
        addresses.dedup();
        if **self.list.load() == addresses {
            return false;
        }
        self.list.store(Arc::new(addresses));
        true
    }

    /// The addresses now, for logs.
    pub fn current(&self) -> Arc<Vec<SocketAddr>> {
        self.list.load_full()
    }
}

/// Whether a target names a host to resolve (not an IP address).
pub fn is_hostname(target: &Authority) -> bool {
    target
        .host()
        .trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .is_err()
}

/// Resolves `target` with the system's resolver.
pub async fn resolve(target: &Authority) -> std::io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host(target.as_str()).await?.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_take_turns_over_the_addresses_and_changes_are_noticed() {
        let addresses = Addresses::default();
        assert_eq!(addresses.next(), None);
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert!(addresses.set(vec![b, a, b]));
        assert!(!addresses.set(vec![a, b]), "the same set in another order");
        let picks: Vec<_> = (0..4).filter_map(|_| addresses.next()).collect();
        assert_eq!(picks, [a, b, a, b]);
        assert!(addresses.set(vec![a]));
        assert_eq!(addresses.next(), Some(a));
    }

    #[test]
    fn ip_literals_are_not_resolved() {
        assert!(!is_hostname(&"127.0.0.1:80".parse().unwrap()));
        assert!(!is_hostname(&"[::1]:80".parse().unwrap()));
        assert!(is_hostname(&"api.internal:80".parse().unwrap()));
    }
}

//! Load-balancing policies: which of an upstream's usable targets a request goes to.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Authority;

use crate::config::{Balance, HashOn};

/// Points each unit of weight puts on the hash ring: enough that a target's share of keys
/// stays within a few percent of its weight's share.
const RING_POINTS_PER_WEIGHT: u32 = 160;

/// The balancing state of one upstream.
pub enum Balancer {
    /// Power of two choices on requests in flight per weight.
    LeastRequest,
    /// Each usable target in turn.
    RoundRobin(AtomicUsize),
    /// A smooth weighted schedule of target indices, walked in turn.
    Weighted {
        /// The schedule, as long as the sum of the weights (capped).
        schedule: Vec<usize>,
        /// Where the next request starts looking.
        next: AtomicUsize,
    },
    /// Weighted random.
    Random,
    /// A consistent hash ring: (point, target), sorted by point.
    Hash {
        /// What is hashed.
        on: HashOn,
        /// The ring.
        ring: Vec<(u64, usize)>,
    },
}

impl Balancer {
    /// The state for `balance` over `targets` with `weights`.
    pub fn new(balance: &Balance, targets: &[Authority], weights: &[u32]) -> Self {
        match balance {
            Balance::LeastRequest => Self::LeastRequest,
            Balance::RoundRobin => Self::RoundRobin(AtomicUsize::new(0)),
            Balance::WeightedRoundRobin => Self::Weighted {
                schedule: smooth_schedule(weights),
                next: AtomicUsize::new(0),
            },
            Balance::Random => Self::Random,
            Balance::Hash(on) => {
                let mut ring: Vec<(u64, usize)> = targets
                    .iter()
                    .zip(weights)
                    .enumerate()
                    .flat_map(|(index, (target, weight))| {
                        (0..RING_POINTS_PER_WEIGHT * weight)
                            .map(move |point| (hash(format!("{target}#{point}").as_bytes()), index))
                    })
                    .collect();
                ring.sort_unstable();
                Self::Hash {
                    on: on.clone(),
                    ring,
                }
            }
        }
    }

    /// What a hashing balancer hashes, if it hashes.
    pub fn hash_on(&self) -> Option<&HashOn> {
        match self {
            Self::Hash { on, .. } => Some(on),
            _ => None,
        }
    }

    /// Chooses among `usable` (target indices, not empty), given each target's weight and
    /// requests in flight, and the request's hash key when the policy hashes.
    pub fn choose(
        &self,
        usable: &[usize],
        weights: &[u32],
        in_flight: impl Fn(usize) -> usize,
        key: Option<u64>,
    ) -> usize {
        if usable.len() == 1 {
            return usable[0];
        }
        match self {
            Self::LeastRequest => {
                let a = usable[rand::random_range(0..usable.len())];
                let mut b = usable[rand::random_range(0..usable.len() - 1)];
                if b == a {
                    b = usable[usable.len() - 1];
                }
                // Fewer in flight per unit of weight wins: a/wa <= b/wb.
                let (la, lb) = (in_flight(a) as u64, in_flight(b) as u64);
                if la * u64::from(weights[b]) <= lb * u64::from(weights[a]) {
                    a
                } else {
                    b
                }
            }
            Self::RoundRobin(next) => usable[next.fetch_add(1, Ordering::Relaxed) % usable.len()],
            Self::Weighted { schedule, next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                (0..schedule.len())
                    .map(|k| schedule[(start + k) % schedule.len()])
                    .find(|target| usable.contains(target))
                    .unwrap_or(usable[0])
            }
            Self::Random => weighted_random(usable, weights),
            Self::Hash { ring, .. } => match key {
                Some(key) => {
                    let start = ring.partition_point(|(point, _)| *point < key);
                    (0..ring.len())
                        .map(|k| ring[(start + k) % ring.len()].1)
                        .find(|target| usable.contains(target))
                        .unwrap_or(usable[0])
                }
                None => weighted_random(usable, weights),
            },
        }
    }
}

fn weighted_random(usable: &[usize], weights: &[u32]) -> usize {
    let total: u32 = usable.iter().map(|&t| weights[t]).sum();
    let mut pick = rand::random_range(0..total.max(1));
    for &target in usable {
        if pick < weights[target] {
            return target;
        }
        pick -= weights[target];
    }
    usable[usable.len() - 1]
}

/// Nginx's smooth weighted round robin, unrolled into one cycle: each target appears as
/// often as its weight, spread out (weights 5,1,1 give a a b a c a a, not a a a a a b c).
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total.min(10_000) {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i)))
            .expect("at least one target");
        current[best] -= total;
        schedule.push(best);
    }
    schedule
}

/// FNV-1a, 64-bit, with MurmurHash3's finalizer so that similar inputs (`host#1`, `host#2`)
/// land far apart: stable across processes and versions, so every gateway replica puts a
/// key on the same target.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h = bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: usize) -> Vec<Authority> {
        (0..n)
            .map(|i| format!("10.0.0.{i}:80").parse().unwrap())
            .collect()
    }

    #[test]
    fn the_smooth_schedule_interleaves_by_weight() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[1, 1]), [0, 1]);
    }

    #[test]
    fn adding_a_target_moves_only_its_share_of_keys() {
        let on = HashOn::ClientIp;
        let three = Balancer::new(&Balance::Hash(on.clone()), &targets(3), &[1, 1, 1]);
        let four = Balancer::new(&Balance::Hash(on), &targets(4), &[1, 1, 1, 1]);
        let keys: Vec<u64> = (0..10_000u32).map(|k| hash(&k.to_le_bytes())).collect();
        let mut moved = 0;
        for &key in &keys {
            let before = three.choose(&[0, 1, 2], &[1, 1, 1], |_| 0, Some(key));
            let after = four.choose(&[0, 1, 2, 3], &[1, 1, 1, 1], |_| 0, Some(key));
            if before != after {
                assert_eq!(after, 3, "a key moved between two old targets");
                moved += 1;
            }
        }
        // The new target takes about a quarter; every other key stays where it was.
        assert!(
            (2_000..3_000).contains(&moved),
            "{moved} of 10000 keys moved"
        );
    }

    #[test]
    fn least_request_prefers_the_idle_target() {
        let balancer = Balancer::LeastRequest;
        let busy = |t: usize| if t == 0 { 10 } else { 0 };
        let picks = (0..1000)
            .filter(|_| balancer.choose(&[0, 1], &[1, 1], busy, None) == 0)
            .count();
        assert_eq!(picks, 0);
    }
}

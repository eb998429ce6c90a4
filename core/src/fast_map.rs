//! The hash map of the per-packet lookups.
//!
//! std's SipHash took about 1.6 % of the two engines' CPU on a bulk flow (perf, Linux
//! offloads): a packet out looks up its destination's device by address, the device's link,
//! and the link by index; a datagram in, its link by index. foldhash is several times faster
//! on such small keys and still seeds itself randomly per process. The keys are chosen by this
//! device (link indices, the addresses its user gave) or are hashes of public keys, so a
//! remote peer cannot pick keys that collide.

/// A `HashMap` with foldhash's fast, randomly seeded hasher (make one with `default()`).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

//! The data path must not allocate per packet: counted with a global allocator that tallies
//! allocations made on the test's own thread while measuring.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

mod common;

use socialvpn_core::dataplane::{NET_BUFFER, TUN_BUFFER};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Instant;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only thread-locals.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(Cell::get)
}

#[test]
fn outbound_and_inbound_paths_do_not_allocate() {
    let mut pair = common::Pair::new();
    let packet = pair.outbound_udp(1200);
    let mut buf = vec![0u8; TUN_BUFFER];
    let mut sinks = common::Sizes::default();
    let now = Instant::now();
    // Pre-seal inbound datagrams (that allocates in the friend's side, not ours).
    let mut inbound: Vec<(Vec<u8>, usize)> = (0..1000)
        .map(|_| {
            let mut d = vec![0u8; NET_BUFFER];
            let n = pair.inbound_datagram(1200, &mut d);
            (d, n)
        })
        .collect();
    // Warm up once: the first packet on a link may tick its timers.
    buf[..packet.len()].copy_from_slice(&packet);
    pair.dp
        .handle_tun_packet(now, &mut buf, packet.len(), &mut sinks);

    let mut in_place = common::InPlace::default();
    let (dp, endpoint) = (&mut pair.dp, pair.peer_endpoint);
    let n = allocations_during(|| {
        for _ in 0..1000 {
            buf[..packet.len()].copy_from_slice(&packet);
            dp.handle_tun_packet(now, &mut buf, packet.len(), &mut sinks);
        }
        // As the engine sends: encrypted in place into the socket's batch.
        for _ in 0..1000 {
            buf[..packet.len()].copy_from_slice(&packet);
            dp.handle_tun_packet(now, &mut buf, packet.len(), &mut in_place);
        }
        for (d, n) in inbound.iter_mut() {
            let mut tun = common::Sizes::default();
            dp.handle_net_datagram(
                now,
                endpoint,
                &d[..*n],
                &mut common::Sizes::default(),
                &mut tun,
            );
            assert_eq!(tun.written, 1200);
        }
    });
    assert_eq!(dp.counters().drops.total(), 0, "{:?}", dp.counters());
    assert!(sinks.sent >= 1000 * 1200);
    assert_eq!(in_place.built, 1000, "encrypted in place");
    assert!(in_place.sent >= 1000 * 1200);
    assert_eq!(n, 0, "{n} heap allocations on the data path");
}

#[test]
fn the_counter_sees_allocations() {
    let n = allocations_during(|| {
        std::hint::black_box(vec![0u8; 64]);
    });
    assert_eq!(n, 1);
}

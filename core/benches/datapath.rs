//! Per-packet cost of the data path: translate+encapsulate (tun → network) and
//! decapsulate+translate (network → tun), for small and full-size packets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use socialvpn_core::dataplane::{NET_BUFFER, TUN_BUFFER};
use std::time::Instant;

fn outbound(c: &mut Criterion) {
    let mut group = c.benchmark_group("tun_to_net");
    for len in [64usize, 1360] {
        let mut pair = common::Pair::new();
        let packet = pair.outbound_udp(len);
        let mut buf = vec![0u8; TUN_BUFFER];
        let mut sinks = common::Sizes::default();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("{len}B"), |b| {
            b.iter(|| {
                buf[..packet.len()].copy_from_slice(&packet);
                pair.dp
                    .handle_tun_packet(Instant::now(), &mut buf, packet.len(), &mut sinks);
            })
        });
    }
    group.finish();
}

fn inbound(c: &mut Criterion) {
    let mut group = c.benchmark_group("net_to_tun");
    for len in [64usize, 1360] {
        let mut pair = common::Pair::new();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("{len}B"), |b| {
            b.iter_custom(|iters| {
                // Seal the datagrams first, untimed: each carries a fresh counter, since
                // replays are rejected.
                let mut sealed = vec![0u8; NET_BUFFER * iters as usize];
                let lens: Vec<usize> = sealed
                    .chunks_mut(NET_BUFFER)
                    .map(|chunk| pair.inbound_datagram(len, chunk))
                    .collect();
                let mut sinks = common::Sizes::default();
                let endpoint = pair.peer_endpoint;
                let start = Instant::now();
                for (chunk, n) in sealed.chunks(NET_BUFFER).zip(&lens) {
                    let mut tun = common::Sizes::default();
                    pair.dp.handle_net_datagram(
                        start,
                        endpoint,
                        &chunk[..*n],
                        &mut sinks,
                        &mut tun,
                    );
                }
                let elapsed = start.elapsed();
                assert_eq!(pair.dp.counters().drops.total(), 0);
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, outbound, inbound);
criterion_main!(benches);

//! An authentic datagram larger than the engine's buffers is dropped and counted, whoever
//! calls the data plane (found by the peer_to_tun fuzz target: boringtun panicked).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

mod common;

use boringtun::noise::TunnResult;
use socialvpn_core::dataplane::NET_BUFFER;
use socialvpn_core::DropReason;
use std::time::Instant;

#[test]
fn oversized_authentic_datagram_is_dropped_not_a_panic() {
    let mut pair = common::Pair::new();
    let plain = vec![0x45u8; NET_BUFFER + 200];
    let mut out = vec![0u8; plain.len() + 64];
    let TunnResult::WriteToNetwork(datagram) = pair.peer.encapsulate(&plain, &mut out) else {
        panic!("session not up");
    };
    let datagram = datagram.to_vec();
    assert!(datagram.len() > NET_BUFFER);
    let mut sinks = common::Sizes::default();
    let mut tun = common::Sizes::default();
    let endpoint = pair.peer_endpoint;
    pair.dp
        .handle_net_datagram(Instant::now(), endpoint, &datagram, &mut sinks, &mut tun);
    assert_eq!(pair.dp.counters().drops.get(DropReason::Oversized), 1);
    assert_eq!(tun.written, 0);
}

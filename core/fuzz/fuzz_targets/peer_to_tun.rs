//! Datagrams from a friend into the data plane: raw bytes, or arbitrary plaintext (IP
//! packet, UID header, anything) inside an authentic WireGuard session.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use boringtun::noise::TunnResult;
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;
use std::time::Instant;

static PAIR: Mutex<Option<common::Pair>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = PAIR.lock().unwrap_or_else(|e| e.into_inner());
    let pair = guard.get_or_insert_with(common::Pair::new);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (from, now) = (pair.peer_endpoint, Instant::now());
    let mut sinks = common::Sizes::default();
    let mut tun = common::Sizes::default();
    if mode & 1 == 0 {
        pair.dp
            .handle_net_datagram(now, from, rest, &mut sinks, &mut tun);
        return;
    }
    let mut out = vec![0u8; rest.len() + 64];
    if let TunnResult::WriteToNetwork(datagram) = pair.peer.encapsulate(rest, &mut out) {
        let datagram = datagram.to_vec();
        pair.dp
            .handle_net_datagram(now, from, &datagram, &mut sinks, &mut tun);
    }
});

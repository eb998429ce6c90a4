//! Datagrams from a friend into the data plane: raw bytes, or arbitrary plaintext (IP
//! packet, UID header, anything) inside an authentic WireGuard session.
#![no_main]

#[path = "common.rs"]
mod common;

use boringtun::noise::TunnResult;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

static FIXTURE: Mutex<Option<common::Fixture>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    let fixture = guard.get_or_insert_with(common::Fixture::new);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let from = SocketAddr::from(common::PEER_ADDR);
    let now = Instant::now();
    if mode & 1 == 0 {
        fixture
            .dp
            .handle_net_datagram(now, from, rest, &mut common::Discard, &mut common::Discard);
        return;
    }
    let mut out = vec![0u8; rest.len() + 64];
    if let TunnResult::WriteToNetwork(datagram) = fixture.peer.encapsulate(rest, &mut out) {
        let datagram = datagram.to_vec();
        fixture
            .dp
            .handle_net_datagram(now, from, &datagram, &mut common::Discard, &mut common::Discard);
    }
});

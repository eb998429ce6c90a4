//! Arbitrary bytes from the tun fd (either framing) into the data plane.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use socialvpn_core::dataplane::TUN_BUFFER;
use socialvpn_core::Framing;
use std::sync::Mutex;
use std::time::Instant;

static PAIR: Mutex<Option<common::Pair>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = PAIR.lock().unwrap_or_else(|e| e.into_inner());
    let pair = guard.get_or_insert_with(common::Pair::new);
    let Some((&mode, frame)) = data.split_first() else {
        return;
    };
    let framing = if mode & 1 == 0 {
        Framing::RawIp
    } else {
        Framing::AfHeader
    };
    let mut buf = vec![0u8; TUN_BUFFER + 4];
    let n = frame.len().min(buf.len());
    buf[..n].copy_from_slice(&frame[..n]);
    let before = pair.dp.counters();
    let mut sinks = common::Sizes::default();
    match framing.decode(&buf[..n]) {
        Ok(offset) => {
            pair.dp
                .handle_tun_packet(Instant::now(), &mut buf[offset..], n - offset, &mut sinks)
        }
        Err(reason) => pair.dp.count_tun_drop(n, reason),
    }
    // Every frame read is counted, whatever happens to it.
    assert_eq!(pair.dp.counters().tun_rx.packets, before.tun_rx.packets + 1);
});

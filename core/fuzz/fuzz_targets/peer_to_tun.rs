//! Datagrams from a friend into the data plane: raw bytes; arbitrary plaintext (IP packet,
//! UID header, anything) inside an authentic WireGuard session; or, on purpose, well-formed
//! IPv4/IPv6 packets of any protocol and addressing with a valid UID header, which must take
//! the translated unicast (or broadcast) path all the way to the tun.
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
    if mode & 3 == 3 {
        let Some(plain) = well_formed(pair, rest) else {
            return;
        };
        let mut out = vec![0u8; plain.len() + 64];
        let TunnResult::WriteToNetwork(datagram) = pair.peer.encapsulate(&plain, &mut out) else {
            panic!("the friend's session is down");
        };
        let datagram = datagram.to_vec();
        let before = pair.dp.counters().tun_tx.packets;
        pair.dp
            .handle_net_datagram(now, from, &datagram, &mut sinks, &mut tun);
        if std::env::var_os("SVPN_FUZZ_DEBUG").is_some() {
            eprintln!("well-formed: {} bytes delivered", plain.len());
        }
        assert_eq!(
            pair.dp.counters().tun_tx.packets,
            before + 1,
            "a well-formed packet for us did not reach the tun: {:?}",
            pair.dp.counters().drops
        );
        return;
    }
    let mut out = vec![0u8; rest.len() + 64];
    if let TunnResult::WriteToNetwork(datagram) = pair.peer.encapsulate(rest, &mut out) {
        let datagram = datagram.to_vec();
        pair.dp
            .handle_net_datagram(now, from, &datagram, &mut sinks, &mut tun);
    }
});

/// A valid IP packet from the friend to us, of the protocol, addresses (within what the
/// friend may use), TTL and payload `input` picks, followed by the UID header (to us, or to
/// everyone).
fn well_formed(pair: &common::Pair, input: &[u8]) -> Option<Vec<u8>> {
    use etherparse::PacketBuilder;
    let (&pick, rest) = input.split_first()?;
    let (head, payload) = rest.split_at(rest.len().min(8));
    // Within the MTU: larger packets are dropped as oversized, rightly.
    let payload = &payload[..payload.len().min(1200)];
    let mut h = [0u8; 8];
    h[..head.len()].copy_from_slice(head);
    let own_uid = pair.dp.uid();
    let builder = if pick & 1 == 0 {
        // The friend's own numbering: any unicast addresses of the shared space.
        let src = [100, 64 | (h[0] & 0x3f), h[1], h[2].max(1)];
        let dst = [100, 64 | (h[3] & 0x3f), h[4], h[5].max(1)];
        PacketBuilder::ipv4(src, dst, h[6])
    } else {
        let src = socialvpn_core::subnet::ula_address(&pair.peer_uid).octets();
        let dst = socialvpn_core::subnet::ula_address(&own_uid).octets();
        PacketBuilder::ipv6(src, dst, h[6])
    };
    let mut packet = Vec::new();
    let ports = (
        u16::from_be_bytes([h[0], h[7]]),
        u16::from_be_bytes([h[7], h[1]]),
    );
    let written = match (pick >> 1) % 3 {
        0 => builder.udp(ports.0, ports.1).write(&mut packet, payload),
        1 => builder
            .tcp(ports.0, ports.1, u32::from(h[2]), 1024)
            .syn()
            .write(&mut packet, payload),
        _ if pick & 1 == 0 => builder
            .icmpv4_echo_request(1, 2)
            .write(&mut packet, payload),
        _ => builder
            .icmpv6_echo_request(1, 2)
            .write(&mut packet, payload),
    };
    written.ok()?;
    let dst_uid = if pick & 0x80 != 0 && pick & 1 == 0 {
        socialvpn_core::Uid::BROADCAST
    } else {
        own_uid
    };
    let ip_len = packet.len();
    packet.resize(
        ip_len + socialvpn_core::packet::uid_header::UID_HEADER_LEN,
        0,
    );
    socialvpn_core::packet::uid_header::write(&mut packet[ip_len..], &pair.peer_uid, &dst_uid);
    Some(packet)
}

//! Per-user IPv4 translation, applied on receive.
//!
//! Each user sees a friend at an address of their own choosing, so a packet arriving from a
//! friend gets its source replaced by the address this user gave the sender, and its
//! destination by this device's own address (or this user's subnet broadcast). Checksums are
//! patched incrementally: the IPv4 header always, TCP and UDP only in a packet that carries
//! their header (a fragment at offset 0), UDP's "no checksum" zero left alone. ICMP's checksum
//! does not cover the outer addresses; but an ICMP error (unreachable, time exceeded,
//! parameter problem) quotes the header of a packet *we* sent, as the friend received it, so
//! the quoted addresses are put back into our view too, or our stack could not match the
//! error to its socket (path-MTU discovery depends on it).

use super::checksum::{update_2, update_addresses};
use std::net::Ipv4Addr;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_CHECKSUM_AT: usize = 16;
const UDP_CHECKSUM_AT: usize = 6;

/// Rewrites source and destination of the IPv4 packet `p`.
///
/// `p` must have passed [`super::ip::parse`] and be cut to the packet's total length.
pub fn rewrite_ipv4(p: &mut [u8], new_src: Ipv4Addr, new_dst: Ipv4Addr) {
    let old_src = [p[12], p[13], p[14], p[15]];
    let old_dst = [p[16], p[17], p[18], p[19]];
    let (new_src, new_dst) = (new_src.octets(), new_dst.octets());
    if old_src == new_src && old_dst == new_dst {
        return;
    }
    p[12..16].copy_from_slice(&new_src);
    p[16..20].copy_from_slice(&new_dst);
    patch(p, 10, |c| {
        update_addresses(c, old_src, new_src, old_dst, new_dst)
    });

    let fragment_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    if fragment_offset != 0 {
        return;
    }
    let header_len = usize::from(p[0] & 0x0f) * 4;
    let l4 = header_len;
    match p[9] {
        PROTO_TCP if p.len() >= l4 + TCP_CHECKSUM_AT + 2 => {
            patch(p, l4 + TCP_CHECKSUM_AT, |c| {
                update_addresses(c, old_src, new_src, old_dst, new_dst)
            });
        }
        PROTO_UDP if p.len() >= l4 + UDP_CHECKSUM_AT + 2 => {
            patch(p, l4 + UDP_CHECKSUM_AT, |c| {
                if c == 0 {
                    // The sender did not compute one: it stays absent.
                    return 0;
                }
                match update_addresses(c, old_src, new_src, old_dst, new_dst) {
                    // A computed zero is sent as all ones (RFC 768).
                    0 => 0xffff,
                    other => other,
                }
            });
        }
        PROTO_ICMP => rewrite_icmp_error(p, l4, (old_src, new_src), (old_dst, new_dst)),
        _ => {}
    }
}

/// Puts the packet quoted in an ICMP error back into our view: its source was the outer
/// destination (us) and its destination the outer source (the friend).
fn rewrite_icmp_error(
    p: &mut [u8],
    icmp: usize,
    (old_src, new_src): ([u8; 4], [u8; 4]),
    (old_dst, new_dst): ([u8; 4], [u8; 4]),
) {
    const ICMP_UNREACHABLE: u8 = 3;
    const ICMP_TIME_EXCEEDED: u8 = 11;
    const ICMP_PARAMETER_PROBLEM: u8 = 12;
    const ICMP_HEADER: usize = 8;
    let inner = icmp + ICMP_HEADER;
    if p.len() < inner + 20
        || !matches!(
            p[icmp],
            ICMP_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
        )
        || p[inner] >> 4 != 4
    {
        return;
    }
    let inner_header_len = usize::from(p[inner] & 0x0f) * 4;
    let quoted_src = [p[inner + 12], p[inner + 13], p[inner + 14], p[inner + 15]];
    let quoted_dst = [p[inner + 16], p[inner + 17], p[inner + 18], p[inner + 19]];
    if inner_header_len < 20 || quoted_src != old_dst || quoted_dst != old_src {
        return;
    }
    // Each rewritten 16-bit word inside the ICMP message also changes the ICMP checksum.
    let icmp_checksum_at = icmp + 2;
    let rewrite_word = |p: &mut [u8], at: usize, new: u16| {
        let old = u16::from_be_bytes([p[at], p[at + 1]]);
        p[at..at + 2].copy_from_slice(&new.to_be_bytes());
        patch(p, icmp_checksum_at, |c| update_2(c, old, new));
    };
    let (inner_new_src, inner_new_dst) = (new_dst, new_src);
    for (at, bytes) in [(inner + 12, inner_new_src), (inner + 16, inner_new_dst)] {
        rewrite_word(p, at, u16::from_be_bytes([bytes[0], bytes[1]]));
        rewrite_word(p, at + 2, u16::from_be_bytes([bytes[2], bytes[3]]));
    }
    let update = |c: u16| update_addresses(c, quoted_src, inner_new_src, quoted_dst, inner_new_dst);
    let inner_checksum = update(u16::from_be_bytes([p[inner + 10], p[inner + 11]]));
    rewrite_word(p, inner + 10, inner_checksum);
    // The quoted transport checksum, where the quote reaches it.
    let l4 = inner + inner_header_len;
    let quoted_fragment = u16::from_be_bytes([p[inner + 6], p[inner + 7]]) & 0x1fff;
    let at = match p[inner + 9] {
        PROTO_TCP => l4 + TCP_CHECKSUM_AT,
        PROTO_UDP => l4 + UDP_CHECKSUM_AT,
        _ => return,
    };
    if quoted_fragment != 0 || p.len() < at + 2 {
        return;
    }
    let old = u16::from_be_bytes([p[at], p[at + 1]]);
    if p[inner + 9] == PROTO_UDP && old == 0 {
        return;
    }
    let new = match update(old) {
        0 if p[inner + 9] == PROTO_UDP => 0xffff,
        other => other,
    };
    rewrite_word(p, at, new);
}

#[inline]
fn patch(p: &mut [u8], at: usize, f: impl FnOnce(u16) -> u16) {
    let updated = f(u16::from_be_bytes([p[at], p[at + 1]]));
    p[at..at + 2].copy_from_slice(&updated.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, Ipv4Header, PacketBuilder, TcpHeader, UdpHeader};
    use proptest::prelude::*;

    /// Checks every checksum with etherparse's own implementation, not ours.
    fn assert_checksums_valid(p: &[u8]) {
        let (ip, rest) = Ipv4Header::from_slice(p).unwrap();
        assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "ipv4 header");
        let payload_len = usize::from(ip.total_len) - ip.header_len();
        let rest = &rest[..payload_len];
        if ip.is_fragmenting_payload() && u16::from(ip.fragment_offset) != 0 {
            return;
        }
        if ip.more_fragments {
            // The transport checksum covers the reassembled datagram; checked separately.
            return;
        }
        match ip.protocol {
            IpNumber::TCP => {
                let (tcp, payload) = TcpHeader::from_slice(rest).unwrap();
                assert_eq!(
                    tcp.checksum,
                    tcp.calc_checksum_ipv4(&ip, payload).unwrap(),
                    "tcp"
                );
            }
            IpNumber::UDP => {
                let (udp, payload) = UdpHeader::from_slice(rest).unwrap();
                if udp.checksum != 0 {
                    assert_eq!(
                        udp.checksum,
                        udp.calc_checksum_ipv4(&ip, payload).unwrap(),
                        "udp"
                    );
                }
            }
            _ => {}
        }
    }

    fn addr() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from)
    }

    #[derive(Debug, Clone)]
    enum Kind {
        Tcp,
        Udp,
        UdpNoChecksum,
        Icmp,
    }

    fn build(
        kind: &Kind,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        payload: &[u8],
        ports: (u16, u16),
    ) -> Vec<u8> {
        let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64);
        let mut out = Vec::new();
        match kind {
            Kind::Tcp => b
                .tcp(ports.0, ports.1, 12345, 4000)
                .syn()
                .write(&mut out, payload)
                .unwrap(),
            Kind::Udp | Kind::UdpNoChecksum => {
                b.udp(ports.0, ports.1).write(&mut out, payload).unwrap()
            }
            Kind::Icmp => b
                .icmpv4_echo_request(7, 9)
                .write(&mut out, payload)
                .unwrap(),
        }
        if let Kind::UdpNoChecksum = kind {
            out[26] = 0;
            out[27] = 0;
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn checksums_stay_valid(
            kind in prop_oneof![Just(Kind::Tcp), Just(Kind::Udp), Just(Kind::UdpNoChecksum), Just(Kind::Icmp)],
            src in addr(), dst in addr(), new_src in addr(), new_dst in addr(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            ports in (any::<u16>(), any::<u16>()),
        ) {
            let mut p = build(&kind, src, dst, &payload, ports);
            let original = p.clone();
            rewrite_ipv4(&mut p, new_src, new_dst);
            assert_checksums_valid(&p);
            let (ip, _) = Ipv4Header::from_slice(&p).unwrap();
            prop_assert_eq!(Ipv4Addr::from(ip.source), new_src);
            prop_assert_eq!(Ipv4Addr::from(ip.destination), new_dst);
            if let Kind::UdpNoChecksum = kind {
                prop_assert_eq!(&p[26..28], &[0, 0]);
            }
            if let Kind::Icmp = kind {
                prop_assert_eq!(&p[20..], &original[20..]);
            }
            // Translating back restores the exact original bytes.
            rewrite_ipv4(&mut p, src, dst);
            prop_assert_eq!(p, original);
        }

        #[test]
        fn fragments_keep_checksums_valid(
            src in addr(), dst in addr(), new_src in addr(), new_dst in addr(),
            payload in proptest::collection::vec(any::<u8>(), 16..200),
            offset_words in 1u16..0x1fff,
        ) {
            // First fragment: the TCP checksum covers the whole datagram, so check it on the
            // "reassembled" packet (same header, full payload) translated the same way.
            let whole = build(&Kind::Udp, src, dst, &payload, (5353, 5353));
            let mut whole_translated = whole.clone();
            rewrite_ipv4(&mut whole_translated, new_src, new_dst);
            let mut first = whole.clone();
            first[6] |= 0x20; // more fragments
            let first_len = 20 + 8 + 8;
            first.truncate(first_len);
            first[2..4].copy_from_slice(&(first_len as u16).to_be_bytes());
            fix_ip_checksum(&mut first);
            rewrite_ipv4(&mut first, new_src, new_dst);
            assert_checksums_valid(&first);
            prop_assert_eq!(&first[26..28], &whole_translated[26..28]);

            // A later fragment has no transport header: only the IP header changes.
            let mut later = whole.clone();
            later[6..8].copy_from_slice(&offset_words.to_be_bytes());
            fix_ip_checksum(&mut later);
            let before = later.clone();
            rewrite_ipv4(&mut later, new_src, new_dst);
            assert_checksums_valid(&later);
            prop_assert_eq!(&later[20..], &before[20..]);
        }
    }

    fn fix_ip_checksum(p: &mut [u8]) {
        let (mut ip, _) = Ipv4Header::from_slice(p).unwrap();
        ip.header_checksum = ip.calc_header_checksum();
        let bytes = ip.to_bytes();
        p[..bytes.len()].copy_from_slice(&bytes);
    }

    proptest! {
        /// A packet we send, translated at the friend, bounces as an ICMP error that quotes
        /// it; translated back at our end, the quote must be exactly what we sent.
        #[test]
        fn icmp_errors_quote_our_own_view(
            a_own in addr(), b_at_a in addr(), a_at_b in addr(), b_own in addr(),
            tcp in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            quote_len in 28usize..100,
            icmp_type in prop_oneof![Just(3u8), Just(11u8), Just(12u8)],
        ) {
            let kind = if tcp { Kind::Tcp } else { Kind::Udp };
            let sent = build(&kind, a_own, b_at_a, &payload, (1000, 2000));
            let mut at_b = sent.clone();
            rewrite_ipv4(&mut at_b, a_at_b, b_own);
            // B's stack answers from b_own to a_at_b, quoting the packet as it received it.
            // A quote that ends inside the TCP checksum cannot be restored (half of it is
            // missing); real stacks quote 8 transport bytes or as much as fits.
            let quote_len = if tcp && quote_len == 37 { 38 } else { quote_len };
            let quote = &at_b[..quote_len.min(at_b.len())];
            let mut error = Vec::new();
            let icmp = etherparse::Icmpv4Type::Unknown { type_u8: icmp_type, code_u8: 0, bytes5to8: [0; 4] };
            PacketBuilder::ipv4(b_own.octets(), a_at_b.octets(), 64)
                .icmpv4(icmp)
                .write(&mut error, quote)
                .unwrap();
            rewrite_ipv4(&mut error, b_at_a, a_own);
            assert_checksums_valid(&error);
            let icmp_bytes = &error[20..];
            let (header, quoted) = etherparse::Icmpv4Header::from_slice(icmp_bytes).unwrap();
            let mut recomputed = header.clone();
            recomputed.update_checksum(quoted);
            prop_assert_eq!(header.checksum, recomputed.checksum, "icmp checksum");
            prop_assert_eq!(quoted, &sent[..quote.len()]);
        }
    }

    #[test]
    fn udp_checksum_that_becomes_zero_is_sent_as_ones() {
        // Search a translation whose incremental result is 0 and check it is emitted as 0xffff
        // and still verifies.
        let payload = [0u8; 4];
        let src = Ipv4Addr::new(100, 64, 0, 2);
        let dst = Ipv4Addr::new(100, 64, 0, 1);
        let p = build(&Kind::Udp, src, dst, &payload, (1, 2));
        let mut found = false;
        for last in 0..=u16::MAX {
            let new_src = Ipv4Addr::new(100, 65, (last >> 8) as u8, last as u8);
            let mut q = p.clone();
            rewrite_ipv4(&mut q, new_src, dst);
            if q[26..28] == [0xff, 0xff] {
                assert_checksums_valid(&q);
                found = true;
                break;
            }
            assert_ne!(&q[26..28], &[0, 0]);
        }
        assert!(found, "no translation produced an all-ones UDP checksum");
    }
}

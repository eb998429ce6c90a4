//! Validation and classification of IP packets read from the tun fd or decrypted from a peer.

use super::checksum;
use crate::counters::DropReason;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const IPV4_MIN_HEADER: usize = 20;
pub const IPV6_HEADER: usize = 40;

/// Addresses of a validated packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpAddrs {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

/// A validated packet: its addresses and its length according to its own header (any bytes
/// after that in the buffer are not part of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpInfo {
    pub addrs: IpAddrs,
    pub len: usize,
}

/// Checks that `packet` is a well-formed IPv4 or IPv6 packet and returns its addresses.
///
/// Trailing bytes beyond the header's own length are allowed (and ignored by callers); a
/// header claiming more bytes than present is `Truncated`.
pub fn parse(packet: &[u8]) -> Result<IpInfo, DropReason> {
    let first = *packet.first().ok_or(DropReason::Truncated)?;
    match first >> 4 {
        4 => parse_v4(packet),
        6 => parse_v6(packet),
        _ => Err(DropReason::NotIp),
    }
}

fn parse_v4(p: &[u8]) -> Result<IpInfo, DropReason> {
    if p.len() < IPV4_MIN_HEADER {
        return Err(DropReason::Truncated);
    }
    let header_len = usize::from(p[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER || header_len > p.len() {
        return Err(DropReason::BadHeaderLength);
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if total < header_len {
        return Err(DropReason::BadTotalLength);
    }
    if total > p.len() {
        return Err(DropReason::Truncated);
    }
    Ok(IpInfo {
        addrs: IpAddrs::V4 {
            src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
            dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        },
        len: total,
    })
}

fn parse_v6(p: &[u8]) -> Result<IpInfo, DropReason> {
    if p.len() < IPV6_HEADER {
        return Err(DropReason::Truncated);
    }
    let total = IPV6_HEADER + usize::from(u16::from_be_bytes([p[4], p[5]]));
    if total > p.len() {
        return Err(DropReason::Truncated);
    }
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&p[at..at + 16]);
        Ipv6Addr::from(a)
    };
    Ok(IpInfo {
        addrs: IpAddrs::V6 {
            src: addr(8),
            dst: addr(24),
        },
        len: total,
    })
}

/// True for IPv4 destinations that every friend device receives: 224.0.0.0/4 and the limited
/// broadcast 255.255.255.255. Subnet broadcast depends on the subnet and is the router's call.
pub fn is_ipv4_group(dst: Ipv4Addr) -> bool {
    dst.is_multicast() || dst.is_broadcast()
}

const PROTO_IGMP: u8 = 2;
const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ICMPV6: u8 = 58;

/// True for the device stack's own link-level control messages: IGMP, and ICMPv6 multicast
/// listener (130-132, 143) and router/neighbour discovery (133-137) messages. `packet` must
/// have passed [`parse`].
pub fn is_link_control(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(9) == Some(&PROTO_IGMP),
        Some(6) => {
            let mut next = packet.get(6).copied();
            let mut at = IPV6_HEADER;
            if next == Some(NEXT_HOP_BY_HOP) {
                // MLD reports carry a router-alert hop-by-hop option first.
                next = packet.get(at).copied();
                at += packet
                    .get(at + 1)
                    .map_or(usize::MAX / 2, |l| (usize::from(*l) + 1) * 8);
            }
            next == Some(NEXT_ICMPV6)
                && packet.get(at).is_some_and(|t| matches!(t, 130..=137 | 143))
        }
        _ => false,
    }
}

const PROTO_TCP: u8 = 6;

/// True for a TCP segment that carries data (not a bare ACK, SYN or FIN): the one kind of
/// packet whose loss tells its sender to slow down without costing anyone else. A drop of a
/// call's audio, a DNS answer or a ping would only hurt. IPv6 packets with extension headers
/// and IPv4 fragments are not looked into (false). `packet` must have passed [`parse`].
pub fn is_tcp_data(packet: &[u8]) -> bool {
    let (header_len, payload_end) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= IPV4_MIN_HEADER => {
            let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
            if packet[9] != PROTO_TCP || fragment != 0 {
                return false;
            }
            let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            (usize::from(packet[0] & 0x0f) * 4, total)
        }
        Some(6) if packet.len() >= IPV6_HEADER => {
            if packet[6] != PROTO_TCP {
                return false;
            }
            let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            (IPV6_HEADER, IPV6_HEADER + payload)
        }
        _ => return false,
    };
    let Some(&offset) = packet.get(header_len + 12) else {
        return false;
    };
    let tcp_header = usize::from(offset >> 4) * 4;
    payload_end.min(packet.len()) > header_len + tcp_header
}

/// The two ECN bits (RFC 3168): the low bits of IPv4's TOS byte and of IPv6's traffic class.
const ECN_MASK: u8 = 0b11;
/// "Congestion experienced".
const ECN_CE: u8 = 0b11;

/// Marks the packet "congestion experienced" if its sender negotiated ECN (ECT(0), ECT(1) or
/// already CE), updating IPv4's header checksum. Returns false, leaving the packet as it
/// was, for a packet that is not ECN-capable (or too short to be IP): congestion can then
/// only be signalled by dropping it.
pub fn mark_ce(packet: &mut [u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= IPV4_MIN_HEADER => {
            let tos = packet[1];
            if tos & ECN_MASK == 0 {
                return false;
            }
            let marked = tos | ECN_CE;
            let old = u16::from_be_bytes([packet[0], tos]);
            let new = u16::from_be_bytes([packet[0], marked]);
            let sum = u16::from_be_bytes([packet[10], packet[11]]);
            packet[1] = marked;
            packet[10..12].copy_from_slice(&checksum::update_2(sum, old, new).to_be_bytes());
            true
        }
        Some(6) if packet.len() >= IPV6_HEADER => {
            // Traffic class: the low nibble of byte 0 and the high nibble of byte 1; its ECN
            // bits are bits 4-5 of byte 1.
            let ecn = (packet[1] >> 4) & ECN_MASK;
            if ecn == 0 {
                return false;
            }
            packet[1] |= ECN_CE << 4;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(total: u16, ihl: u8) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(total).max(20)];
        p[0] = 0x40 | ihl;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[12..16].copy_from_slice(&[100, 64, 0, 2]);
        p[16..20].copy_from_slice(&[100, 64, 0, 3]);
        p
    }

    #[test]
    fn valid_v4() {
        let info = parse(&v4(28, 5)).unwrap();
        assert_eq!(info.len, 28);
        assert_eq!(
            info.addrs,
            IpAddrs::V4 {
                src: Ipv4Addr::new(100, 64, 0, 2),
                dst: Ipv4Addr::new(100, 64, 0, 3)
            }
        );
    }

    #[test]
    fn malformed_v4() {
        assert_eq!(parse(&[]), Err(DropReason::Truncated));
        assert_eq!(parse(&[0x45; 10]), Err(DropReason::Truncated));
        assert_eq!(parse(&v4(28, 4)), Err(DropReason::BadHeaderLength));
        assert_eq!(parse(&v4(28, 15)), Err(DropReason::BadHeaderLength));
        assert_eq!(parse(&v4(12, 5)[..20]), Err(DropReason::BadTotalLength));
        let mut short = v4(28, 5);
        short.truncate(24);
        assert_eq!(parse(&short), Err(DropReason::Truncated));
        assert_eq!(parse(&[0x15; 40]), Err(DropReason::NotIp));
    }

    #[test]
    fn link_control_is_recognised() {
        let mut igmp = v4(28, 5);
        igmp[9] = 2;
        assert!(is_link_control(&igmp));
        assert!(!is_link_control(&v4(28, 5)));
        // ICMPv6 router solicitation, directly and behind a hop-by-hop header (MLD report).
        let mut rs = vec![0u8; 48];
        rs[0] = 0x60;
        rs[6] = 58;
        rs[40] = 133;
        assert!(is_link_control(&rs));
        let mut mld = vec![0u8; 56];
        mld[0] = 0x60;
        mld[6] = 0;
        mld[40] = 58;
        mld[41] = 0;
        mld[48] = 143;
        assert!(is_link_control(&mld));
        // An echo request is not.
        rs[40] = 128;
        assert!(!is_link_control(&rs));
    }

    #[test]
    fn v6_lengths() {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[5] = 8;
        assert_eq!(parse(&p).unwrap().len, 48);
        p[5] = 9;
        assert_eq!(parse(&p), Err(DropReason::Truncated));
        assert_eq!(parse(&p[..39]), Err(DropReason::Truncated));
    }

    #[test]
    fn only_tcp_segments_with_data_count_as_tcp_data() {
        // IPv4 + a 20-byte TCP header (data offset 5), with and without 4 bytes of data.
        let tcp4 = |data: usize| {
            let mut p = v4(40 + data as u16, 5);
            p[9] = PROTO_TCP;
            p[32] = 5 << 4;
            p
        };
        assert!(is_tcp_data(&tcp4(4)));
        assert!(!is_tcp_data(&tcp4(0)));
        // Options make the header longer: 12 bytes of options and nothing else is a bare ACK.
        let mut with_options = tcp4(12);
        with_options[32] = 8 << 4;
        assert!(!is_tcp_data(&with_options));
        // UDP, and a later fragment of a TCP packet, are not looked into.
        let mut udp = tcp4(4);
        udp[9] = 17;
        assert!(!is_tcp_data(&udp));
        let mut fragment = tcp4(4);
        fragment[7] = 1;
        assert!(!is_tcp_data(&fragment));
        // IPv6 with TCP directly after the header.
        let mut p = vec![0u8; 64];
        p[0] = 0x60;
        p[5] = 24;
        p[6] = PROTO_TCP;
        p[52] = 5 << 4;
        assert!(is_tcp_data(&p));
        p[5] = 20;
        assert!(!is_tcp_data(&p[..60]));
        // Too short for its TCP header.
        assert!(!is_tcp_data(&tcp4(4)[..30]));
    }

    /// The IPv4 header checksum computed from scratch.
    fn header_sum(p: &[u8]) -> u16 {
        let mut h = p[..20].to_vec();
        h[10..12].fill(0);
        checksum::finish(checksum::accumulate(0, &h))
    }

    #[test]
    fn only_ecn_capable_packets_are_marked_and_v4_checksums_stay_right() {
        for (tos, marked) in [
            (0x00, None),
            (0x02, Some(0x03)),
            (0xb9, Some(0xbb)),
            (0x03, Some(0x03)),
            (0xb8, None),
        ] {
            let mut p = v4(28, 5);
            p[1] = tos;
            let sum = header_sum(&p);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            let before = p.clone();
            assert_eq!(mark_ce(&mut p), marked.is_some(), "tos {tos:#x}");
            match marked {
                Some(m) => assert_eq!(p[1], m),
                None => assert_eq!(p, before),
            }
            assert_eq!(
                u16::from_be_bytes([p[10], p[11]]),
                header_sum(&p),
                "tos {tos:#x}"
            );
        }
        // IPv6: traffic class 0xb8 (DSCP EF, not ECT) is left alone; with ECT(0) it is marked.
        let mut p = vec![0u8; 48];
        p[0] = 0x6b;
        p[1] = 0x80;
        assert!(!mark_ce(&mut p));
        assert_eq!(&p[..2], &[0x6b, 0x80]);
        p[1] = 0xa0;
        assert!(mark_ce(&mut p));
        assert_eq!(&p[..2], &[0x6b, 0xb0]);
        // Too short to be IP: untouched.
        assert!(!mark_ce(&mut [0x45, 0x02]));
        assert!(!mark_ce(&mut []));
    }
}

//! Validation and classification of IP packets read from the tun fd or decrypted from a peer.

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
}

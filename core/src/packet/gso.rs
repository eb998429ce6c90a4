//! Linux tun offloads: the `virtio_net_hdr` in front of each frame of a tun opened with
//! `IFF_VNET_HDR`. With TSO enabled the kernel hands over TCP "super-packets" of up to 64 KB
//! (one read instead of dozens) and leaves checksums to us; this module finishes the checksum
//! or cuts the super-packet into wire-sized segments, each a complete IP packet with valid
//! checksums, as the kernel's own software GSO would.

use crate::counters::DropReason;
use crate::packet::checksum::{accumulate, finish};

/// Length of the legacy `virtio_net_hdr` (no `num_buffers`): the tun default.
pub const VNET_HDR_LEN: usize = 10;

pub(crate) const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
pub(crate) const GSO_TCPV4: u8 = 1;
pub(crate) const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

pub(crate) const TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The header of one tun frame (host byte order, as the tun uses by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers in front of each segment's payload (a hint for the kernel).
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header as the tun reads it.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (at, v) in [
            (2, self.hdr_len),
            (4, self.gso_size),
            (6, self.csum_start),
            (8, self.csum_offset),
        ] {
            b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// Whether the frame is a super-packet to cut into segments.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

/// Finishes a checksum the kernel left partial (`NEEDS_CSUM`): the field holds the
/// pseudo-header sum; the checksum covers everything from `csum_start`.
pub fn complete_checksum(hdr: &VnetHdr, packet: &mut [u8]) -> Result<(), DropReason> {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > packet.len() {
        return Err(DropReason::Truncated);
    }
    let sum = finish(accumulate(0, &packet[start..]));
    packet[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Cuts a TCP super-packet into segments of `gso_size` payload bytes. Each segment is
/// written to the front of `out` (which must hold the headers plus `gso_size`, and whatever
/// room the caller needs after it) and handed to `emit(out, len)` before the next is built.
/// Returns the number of segments.
pub fn segment_tcp(
    hdr: &VnetHdr,
    packet: &[u8],
    out: &mut [u8],
    mut emit: impl FnMut(&mut [u8], usize),
) -> Result<usize, DropReason> {
    let v4 = match hdr.gso_type & !GSO_ECN {
        GSO_TCPV4 => true,
        GSO_TCPV6 => false,
        // UDP offloads are never enabled on our tun.
        _ => return Err(DropReason::NotIp),
    };
    let ip_len = if v4 {
        let ihl = usize::from(packet.first().ok_or(DropReason::Truncated)? & 0x0f) * 4;
        if ihl < 20 || packet.len() < ihl || packet[0] >> 4 != 4 || packet[9] != TCP {
            return Err(DropReason::BadHeaderLength);
        }
        ihl
    } else {
        // The kernel's TSO for IPv6 carries no extension headers.
        if packet.len() < 40 || packet[0] >> 4 != 6 || packet[6] != TCP {
            return Err(DropReason::BadHeaderLength);
        }
        40
    };
    let tcp_len = usize::from(packet.get(ip_len + 12).ok_or(DropReason::Truncated)? >> 4) * 4;
    let headers = ip_len + tcp_len;
    let mss = usize::from(hdr.gso_size);
    if tcp_len < 20 || packet.len() <= headers || mss == 0 || out.len() < headers + mss {
        return Err(DropReason::Truncated);
    }
    let payload = &packet[headers..];
    let seq = u32::from_be_bytes([
        packet[ip_len + 4],
        packet[ip_len + 5],
        packet[ip_len + 6],
        packet[ip_len + 7],
    ]);
    let ip_id = u16::from_be_bytes([packet[4], packet[5]]);
    let flags = packet[ip_len + 13];
    let count = payload.len().div_ceil(mss);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let len = headers + chunk.len();
        out[..headers].copy_from_slice(&packet[..headers]);
        out[headers..len].copy_from_slice(chunk);
        let last = i + 1 == count;
        if v4 {
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            out[4..6].copy_from_slice(&ip_id.wrapping_add(i as u16).to_be_bytes());
            out[10..12].fill(0);
            let sum = finish(accumulate(0, &out[..ip_len]));
            out[10..12].copy_from_slice(&sum.to_be_bytes());
        } else {
            out[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        }
        let tcp = ip_len;
        let segment_seq = seq.wrapping_add((i * mss) as u32);
        out[tcp + 4..tcp + 8].copy_from_slice(&segment_seq.to_be_bytes());
        // FIN and PSH belong to the last segment, CWR to the first.
        let mut segment_flags = flags;
        if !last {
            segment_flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            segment_flags &= !TCP_CWR;
        }
        out[tcp + 13] = segment_flags;
        out[tcp + 16..tcp + 18].fill(0);
        let pseudo = pseudo_header_sum(&out[..ip_len], v4, (len - ip_len) as u32);
        let sum = finish(accumulate(pseudo, &out[tcp..len]));
        out[tcp + 16..tcp + 18].copy_from_slice(&sum.to_be_bytes());
        emit(out, len);
    }
    Ok(count)
}

/// The TCP pseudo-header's sum for the IP header `ip` (IPv4 or IPv6 without extensions).
pub fn pseudo_header_sum(ip: &[u8], v4: bool, tcp_len: u32) -> u64 {
    let addrs = if v4 { &ip[12..20] } else { &ip[8..40] };
    accumulate(0, addrs) + u64::from(TCP) + u64::from(tcp_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    fn hdr(gso_type: u8, gso_size: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            gso_size,
            csum_start: 0,
            csum_offset: 16,
            ..VnetHdr::default()
        }
    }

    fn tcp_packet(v4: bool, payload: &[u8], fin_psh: bool) -> Vec<u8> {
        let builder = if v4 {
            PacketBuilder::ipv4([100, 64, 0, 1], [100, 64, 0, 2], 64)
        } else {
            PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
        };
        let mut tcp = builder.tcp(4000, 5001, 1_000_000, 65000);
        if fin_psh {
            tcp = tcp.fin().psh();
        }
        let tcp = tcp.cwr().ack(77);
        let mut out = Vec::new();
        tcp.write(&mut out, payload).unwrap();
        out
    }

    /// Every segment is a valid packet (etherparse checks the checksums against ours).
    fn check_segments(v4: bool) {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let packet = tcp_packet(v4, &payload, true);
        let mut out = vec![0u8; 1500];
        let mut seen = Vec::new();
        let n = segment_tcp(
            &hdr(if v4 { GSO_TCPV4 } else { GSO_TCPV6 }, 1300),
            &packet,
            &mut out,
            |buf, len| seen.push(buf[..len].to_vec()),
        )
        .unwrap();
        assert_eq!(n, 4);
        let mut rebuilt = Vec::new();
        for (i, seg) in seen.iter().enumerate() {
            let sliced = SlicedPacket::from_ip(seg).unwrap();
            let TransportSlice::Tcp(tcp) = sliced.transport.unwrap() else {
                panic!("not TCP")
            };
            assert_eq!(tcp.sequence_number(), 1_000_000 + 1300 * i as u32);
            assert_eq!(tcp.fin(), i == 3);
            assert_eq!(tcp.psh(), i == 3);
            assert_eq!(tcp.cwr(), i == 0);
            let expected = if v4 {
                let ip = sliced.net.as_ref().unwrap();
                let etherparse::NetSlice::Ipv4(ip4) = ip else {
                    panic!()
                };
                assert_eq!(
                    ip4.header().header_checksum(),
                    ip4.header().to_header().calc_header_checksum()
                );
                tcp.to_header()
                    .calc_checksum_ipv4(&ip4.header().to_header(), tcp.payload())
                    .unwrap()
            } else {
                let etherparse::NetSlice::Ipv6(ip6) = sliced.net.as_ref().unwrap() else {
                    panic!()
                };
                tcp.to_header()
                    .calc_checksum_ipv6(&ip6.header().to_header(), tcp.payload())
                    .unwrap()
            };
            assert_eq!(tcp.checksum(), expected, "segment {i}");
            rebuilt.extend_from_slice(tcp.payload());
        }
        assert_eq!(rebuilt, payload);
    }

    #[test]
    fn tcp_super_packets_become_valid_segments() {
        check_segments(true);
        check_segments(false);
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut packet = tcp_packet(true, b"hello, world", false);
        let good = packet.clone();
        // What the kernel leaves: the pseudo-header sum, not complemented.
        let pseudo = pseudo_header_sum(&packet[..20], true, (packet.len() - 20) as u32);
        let mut folded = pseudo;
        while folded > 0xffff {
            folded = (folded & 0xffff) + (folded >> 16);
        }
        packet[36..38].copy_from_slice(&(folded as u16).to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_NONE,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        complete_checksum(&h, &mut packet).unwrap();
        assert_eq!(packet, good);
    }

    #[test]
    fn malformed_frames_are_refused_not_panics() {
        let mut out = vec![0u8; 1500];
        let tcp = tcp_packet(true, &[7; 3000], false);
        let h = hdr(GSO_TCPV4, 1300);
        for cut in [0, 1, 19, 20, 33, 40] {
            assert!(
                segment_tcp(&h, &tcp[..cut], &mut out, |_, _| {}).is_err(),
                "cut {cut}"
            );
        }
        assert!(segment_tcp(&hdr(GSO_TCPV4, 0), &tcp, &mut out, |_, _| {}).is_err());
        assert!(segment_tcp(&hdr(3, 1300), &tcp, &mut out, |_, _| {}).is_err());
        assert!(segment_tcp(&h, &tcp, &mut [0u8; 100], |_, _| {}).is_err());
        let bad = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 60000,
            ..VnetHdr::default()
        };
        assert!(complete_checksum(&bad, &mut tcp.clone()).is_err());
        assert_eq!(VnetHdr::parse(&[0; 9]), None);
    }
}

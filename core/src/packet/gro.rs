//! Receive-side coalescing: consecutive TCP segments of one flow, decrypted from one batch of
//! datagrams, are joined into one large packet written with one `write` and handed to the
//! kernel's TCP as one unit (what GRO does for a NIC). Anything that cannot join is written as
//! it is, in order.
//!
//! - On a Linux tun with `IFF_VNET_HDR` ([`Output::Gso`]) the joined packet is a GSO
//!   super-packet: the `virtio_net_hdr` gives its segment size and leaves the checksum partial,
//!   so the kernel can cut it again if it forwards it.
//! - On a tun without offloads — a phone's `VpnService` fd, a Linux tun without the header —
//!   ([`Output::Plain`]) it is one plain IP packet larger than the MTU, every checksum complete.
//!   The kernel takes it whole: a tun does not hold what it receives to the MTU, and TCP takes
//!   segments of any size. This is only sound because every TCP packet the engine writes is
//!   addressed to this device (IPv4 unicast is rewritten to our own address, IPv6 must already
//!   be addressed to our own ULA; TCP to a broadcast or group address the kernel discards), so
//!   it is delivered, never forwarded out of a smaller link. Each such write saves the kernel
//!   a receive path per segment, and the receiver's TCP acknowledges once per packet, so the
//!   sender's engine carries fewer ACKs too. A utun (iOS) is not given such packets: whether
//!   its kernel takes one above the MTU is not known here.

use crate::packet::checksum::{accumulate, finish};
use crate::packet::gso::{
    pseudo_header_sum, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, TCP, TCP_PSH, VNET_HDR_LEN,
};
use std::io;

const TCP_ACK: u8 = 0x10;
/// Largest IP packet the kernel accepts from the tun.
pub const MAX_SUPER: usize = 65_535;

/// What a joined packet is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A GSO super-packet behind a `virtio_net_hdr` (a Linux tun with `IFF_VNET_HDR`).
    Gso,
    /// A plain IP packet with complete checksums (a tun without offloads, whose kernel
    /// delivers it to this device).
    Plain,
}

/// Where frames go: a `virtio_net_hdr` and an IP packet carrying `segments` of the packets
/// pushed (one, or those joined). In [`Output::Plain`] the header is all zero and a tun
/// without offloads writes the packet alone.
pub trait FrameSink {
    fn write_frame(
        &mut self,
        vnet: &[u8; VNET_HDR_LEN],
        packet: &[u8],
        segments: usize,
    ) -> io::Result<()>;
}

/// The flow being gathered: its header layout and where the next segment must start.
struct Flow {
    v4: bool,
    ip_len: usize,
    headers: usize,
    mss: usize,
    next_seq: u32,
    segments: usize,
    /// A short or PSH segment ended it: nothing more may join.
    closed: bool,
}

pub struct Coalescer {
    buf: Box<[u8]>,
    len: usize,
    flow: Option<Flow>,
    output: Output,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            buf: vec![0u8; MAX_SUPER].into_boxed_slice(),
            len: 0,
            flow: None,
            output: Output::Gso,
        }
    }
}

/// The parts of a TCP segment that decide whether it may join a flow.
struct Segment {
    v4: bool,
    ip_len: usize,
    headers: usize,
    seq: u32,
    flags: u8,
}

fn parse(packet: &[u8]) -> Option<Segment> {
    let v4 = match packet.first()? >> 4 {
        4 => {
            // No IP options, not a fragment (MF clear, offset zero), TCP.
            if packet.len() < 20 || packet[0] & 0x0f != 5 || packet[9] != TCP {
                return None;
            }
            if u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0 {
                return None;
            }
            if usize::from(u16::from_be_bytes([packet[2], packet[3]])) != packet.len() {
                return None;
            }
            true
        }
        6 => {
            if packet.len() < 40 || packet[6] != TCP {
                return None;
            }
            if usize::from(u16::from_be_bytes([packet[4], packet[5]])) + 40 != packet.len() {
                return None;
            }
            false
        }
        _ => return None,
    };
    let ip_len = if v4 { 20 } else { 40 };
    let tcp_len = usize::from(packet.get(ip_len + 12)? >> 4) * 4;
    let headers = ip_len + tcp_len;
    if tcp_len < 20 || packet.len() < headers {
        return None;
    }
    let t = &packet[ip_len..];
    Some(Segment {
        v4,
        ip_len,
        headers,
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        flags: t[13],
    })
}

impl Coalescer {
    /// What the packets joined from now on are written as (a new tunnel may want the
    /// other). Call between batches: what is held must have been flushed.
    pub fn set_output(&mut self, output: Output) {
        debug_assert!(self.flow.is_none(), "output changed with segments held");
        self.output = output;
    }

    /// The segments held for the next flush.
    #[cfg(test)]
    pub fn held_segments(&self) -> usize {
        self.flow.as_ref().map_or(0, |flow| flow.segments)
    }

    /// Takes one complete IP packet (checksums valid) for the tun. An error is the sink's,
    /// for what was held or for this packet; this packet is taken even when writing what was
    /// held failed.
    pub fn push(&mut self, packet: &[u8], sink: &mut impl FrameSink) -> io::Result<()> {
        let segment = parse(packet);
        if let Some(seg) = &segment {
            if self.joins(seg, packet) {
                self.append(seg, packet);
                return Ok(());
            }
        }
        let held = self.flush(sink);
        let this = self.start(segment, packet, sink);
        held.and(this)
    }

    /// Starts a flow with `packet`, or writes it as it is.
    fn start(
        &mut self,
        segment: Option<Segment>,
        packet: &[u8],
        sink: &mut impl FrameSink,
    ) -> io::Result<()> {
        match segment {
            // Pure data segments start a flow; everything else goes straight out.
            Some(seg)
                if packet.len() > seg.headers
                    && seg.flags & !TCP_PSH == TCP_ACK
                    && packet.len() <= self.buf.len() =>
            {
                self.buf[..packet.len()].copy_from_slice(packet);
                self.len = packet.len();
                self.flow = Some(Flow {
                    v4: seg.v4,
                    ip_len: seg.ip_len,
                    headers: seg.headers,
                    mss: packet.len() - seg.headers,
                    next_seq: seg.seq.wrapping_add((packet.len() - seg.headers) as u32),
                    segments: 1,
                    closed: seg.flags & TCP_PSH != 0,
                });
                Ok(())
            }
            _ => sink.write_frame(&[0; VNET_HDR_LEN], packet, 1),
        }
    }

    fn joins(&self, seg: &Segment, packet: &[u8]) -> bool {
        let Some(flow) = &self.flow else {
            return false;
        };
        let payload = packet.len() - seg.headers;
        let held = &self.buf[..self.len];
        !flow.closed
            && seg.v4 == flow.v4
            && seg.headers == flow.headers
            && seg.seq == flow.next_seq
            && seg.flags & !TCP_PSH == TCP_ACK
            && payload > 0
            && payload <= flow.mss
            && self.len + payload <= self.buf.len()
            && same_ip(flow.v4, held, packet)
            // Ports, ack, data offset, window: equal; the options too (timestamps included).
            && held[flow.ip_len..flow.ip_len + 4] == packet[seg.ip_len..seg.ip_len + 4]
            && held[flow.ip_len + 8..flow.ip_len + 13] == packet[seg.ip_len + 8..seg.ip_len + 13]
            && held[flow.ip_len + 14..flow.ip_len + 16] == packet[seg.ip_len + 14..seg.ip_len + 16]
            && held[flow.ip_len + 20..flow.headers] == packet[seg.ip_len + 20..seg.headers]
    }

    fn append(&mut self, seg: &Segment, packet: &[u8]) {
        let payload = &packet[seg.headers..];
        self.buf[self.len..self.len + payload.len()].copy_from_slice(payload);
        self.len += payload.len();
        if let Some(flow) = self.flow.as_mut() {
            flow.next_seq = flow.next_seq.wrapping_add(payload.len() as u32);
            flow.segments += 1;
            if payload.len() < flow.mss || seg.flags & TCP_PSH != 0 {
                flow.closed = true;
            }
            if seg.flags & TCP_PSH != 0 {
                self.buf[flow.ip_len + 13] |= TCP_PSH;
            }
        }
    }

    /// Writes what is gathered: a lone segment as it came, several as one large packet.
    pub fn flush(&mut self, sink: &mut impl FrameSink) -> io::Result<()> {
        let Some(flow) = self.flow.take() else {
            return Ok(());
        };
        let len = std::mem::take(&mut self.len);
        let packet = &mut self.buf[..len];
        if flow.segments == 1 {
            return sink.write_frame(&[0; VNET_HDR_LEN], packet, 1);
        }
        let ip = flow.ip_len;
        if flow.v4 {
            packet[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            packet[10..12].fill(0);
            let sum = finish(accumulate(0, &packet[..ip]));
            packet[10..12].copy_from_slice(&sum.to_be_bytes());
        } else {
            packet[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        }
        if self.output == Output::Plain {
            // A full checksum over the joined data. The segments' own checksums are not
            // carried over: the AEAD already authenticated every byte, and the GSO output
            // (left partial, so never checked on local delivery) trusts them no more.
            packet[ip + 16..ip + 18].fill(0);
            let pseudo = pseudo_header_sum(&packet[..ip], flow.v4, (len - ip) as u32);
            let sum = finish(accumulate(pseudo, &packet[ip..]));
            packet[ip + 16..ip + 18].copy_from_slice(&sum.to_be_bytes());
            return sink.write_frame(&[0; VNET_HDR_LEN], packet, flow.segments);
        }
        // CHECKSUM_PARTIAL: the field holds the pseudo-header sum (folded, not complemented),
        // the kernel does the rest where it is needed.
        let pseudo = !finish(pseudo_header_sum(&packet[..ip], flow.v4, (len - ip) as u32));
        packet[ip + 16..ip + 18].copy_from_slice(&pseudo.to_be_bytes());
        let vnet = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if flow.v4 { GSO_TCPV4 } else { GSO_TCPV6 },
            hdr_len: flow.headers as u16,
            gso_size: flow.mss as u16,
            csum_start: ip as u16,
            // The TCP checksum's offset in the TCP header.
            csum_offset: 16,
        };
        sink.write_frame(&vnet.to_bytes(), packet, flow.segments)
    }
}

/// Same addresses, and the fields the kernel's GRO also insists on (TOS, TTL, DF; traffic
/// class, flow label, hop limit).
fn same_ip(v4: bool, a: &[u8], b: &[u8]) -> bool {
    if v4 {
        a[1] == b[1] && a[6] & 0x40 == b[6] & 0x40 && a[8] == b[8] && a[12..20] == b[12..20]
    } else {
        a[0..4] == b[0..4] && a[7] == b[7] && a[8..40] == b[8..40]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::gso::segment_tcp;
    use etherparse::PacketBuilder;

    #[derive(Default)]
    struct Frames(Vec<([u8; VNET_HDR_LEN], Vec<u8>)>);

    impl FrameSink for Frames {
        fn write_frame(
            &mut self,
            vnet: &[u8; VNET_HDR_LEN],
            packet: &[u8],
            _segments: usize,
        ) -> io::Result<()> {
            self.0.push((*vnet, packet.to_vec()));
            Ok(())
        }
    }

    fn segment(v4: bool, seq: u32, payload: &[u8], psh: bool, port: u16) -> Vec<u8> {
        let b = if v4 {
            PacketBuilder::ipv4([100, 64, 0, 9], [100, 64, 0, 1], 64)
        } else {
            PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
        };
        let mut t = b.tcp(port, 5201, seq, 500).ack(1);
        if psh {
            t = t.psh();
        }
        let mut out = Vec::new();
        t.write(&mut out, payload).unwrap();
        out
    }

    /// `data` as consecutive segments of 1 000 bytes from `seq`, the last one with PSH.
    fn segments_of(v4: bool, data: &[u8], seq: u32) -> Vec<Vec<u8>> {
        let last = data.len().div_ceil(1000) - 1;
        data.chunks(1000)
            .enumerate()
            .map(|(i, chunk)| segment(v4, seq + 1000 * i as u32, chunk, i == last, 4000))
            .collect()
    }

    /// Joined segments, cut again as the kernel would, give back the same packets.
    fn round_trip(v4: bool) {
        let mut c = Coalescer::default();
        let mut sink = Frames::default();
        let data: Vec<u8> = (0..4000u32).map(|i| (i % 253) as u8).collect();
        let originals = segments_of(v4, &data, 7);
        for p in &originals {
            c.push(p, &mut sink).unwrap();
        }
        c.flush(&mut sink).unwrap();
        assert_eq!(sink.0.len(), 1, "not joined");
        let (vnet, packet) = &sink.0[0];
        let hdr = VnetHdr::parse(vnet).unwrap();
        assert!(hdr.is_gso());
        let mut out = vec![0u8; 1500];
        let mut cut = Vec::new();
        segment_tcp(&hdr, packet, &mut out, |b, n| cut.push(b[..n].to_vec())).unwrap();
        assert_eq!(cut.len(), originals.len());
        for (i, (got, want)) in cut.iter().zip(&originals).enumerate() {
            // Cutting numbers IPv4 ids upwards (as the kernel does); our originals all had 0.
            let same = |a: &[u8], b: &[u8]| {
                if v4 {
                    a[..4] == b[..4] && a[6..10] == b[6..10] && a[12..] == b[12..]
                } else {
                    a == b
                }
            };
            assert!(same(got, want), "segment {i} differs");
        }
    }

    #[test]
    fn consecutive_segments_join_and_split_back() {
        round_trip(true);
        round_trip(false);
    }

    #[test]
    fn what_cannot_join_goes_out_in_order() {
        let mut c = Coalescer::default();
        let mut sink = Frames::default();
        let a = segment(true, 1, &[1; 100], false, 4000);
        let gap = segment(true, 500, &[2; 100], false, 4000); // not contiguous
        let other = segment(true, 600, &[3; 100], false, 4001); // other flow
        let syn = {
            let mut out = Vec::new();
            PacketBuilder::ipv4([100, 64, 0, 9], [100, 64, 0, 1], 64)
                .tcp(4000, 5201, 1, 500)
                .syn()
                .write(&mut out, &[])
                .unwrap();
            out
        };
        let udp = {
            let mut out = Vec::new();
            PacketBuilder::ipv4([100, 64, 0, 9], [100, 64, 0, 1], 64)
                .udp(1, 2)
                .write(&mut out, &[9; 10])
                .unwrap();
            out
        };
        for p in [&a, &gap, &other, &syn, &udp] {
            c.push(p, &mut sink).unwrap();
        }
        c.flush(&mut sink).unwrap();
        let got: Vec<&Vec<u8>> = sink.0.iter().map(|(_, p)| p).collect();
        assert_eq!(got, vec![&a, &gap, &other, &syn, &udp]);
        assert!(sink.0.iter().all(|(v, _)| *v == [0; VNET_HDR_LEN]));
    }

    /// The Internet checksum over `data` with `sum` added is all ones when it is valid.
    fn sums_to_ones(sum: u64, data: &[u8]) -> bool {
        finish(accumulate(sum, data)) == 0
    }

    /// A plain join is one IP packet a kernel takes as it would the segments: lengths, the
    /// IPv4 header checksum and the full TCP checksum valid, the payloads in order.
    fn plain_join(v4: bool) {
        let mut c = Coalescer::default();
        c.set_output(Output::Plain);
        let mut sink = Frames::default();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for p in &segments_of(v4, &data, 9_000) {
            c.push(p, &mut sink).unwrap();
        }
        assert_eq!(c.held_segments(), 40);
        c.flush(&mut sink).unwrap();
        assert_eq!(c.held_segments(), 0);
        assert_eq!(sink.0.len(), 1, "not joined");
        let (vnet, packet) = &sink.0[0];
        assert_eq!(*vnet, [0; VNET_HDR_LEN], "a plain packet has no header");
        let ip = if v4 { 20 } else { 40 };
        let headers = ip + 20;
        assert_eq!(packet.len(), headers + data.len());
        assert_eq!(&packet[headers..], &data[..]);
        if v4 {
            assert_eq!(
                u16::from_be_bytes([packet[2], packet[3]]) as usize,
                packet.len()
            );
            assert!(sums_to_ones(0, &packet[..20]), "IPv4 header checksum");
        } else {
            let payload_len = u16::from_be_bytes([packet[4], packet[5]]) as usize;
            assert_eq!(payload_len, packet.len() - 40);
        }
        let pseudo = pseudo_header_sum(&packet[..ip], v4, (packet.len() - ip) as u32);
        assert!(sums_to_ones(pseudo, &packet[ip..]), "TCP checksum");
        // The first segment's sequence number, the last one's PSH.
        assert_eq!(packet[ip + 4..ip + 8], 9_000u32.to_be_bytes());
        assert_ne!(packet[ip + 13] & TCP_PSH, 0);
    }

    #[test]
    fn segments_join_into_one_plain_packet_with_valid_checksums() {
        plain_join(true);
        plain_join(false);
    }

    #[test]
    fn a_plain_join_stops_at_the_largest_ip_packet() {
        let mut c = Coalescer::default();
        c.set_output(Output::Plain);
        let mut sink = Frames::default();
        for i in 0..100u32 {
            c.push(
                &segment(true, 1 + 1400 * i, &[5; 1400], false, 4000),
                &mut sink,
            )
            .unwrap();
        }
        c.flush(&mut sink).unwrap();
        let sizes: Vec<usize> = sink.0.iter().map(|(_, p)| p.len()).collect();
        assert!(sizes.iter().all(|&n| n <= MAX_SUPER), "{sizes:?}");
        assert_eq!(sizes.iter().map(|n| n - 40).sum::<usize>(), 140_000);
        assert_eq!(sizes.len(), 3, "{sizes:?}");
        for (_, p) in &sink.0 {
            let pseudo = pseudo_header_sum(&p[..20], true, (p.len() - 20) as u32);
            assert!(sums_to_ones(pseudo, &p[20..]));
        }
    }

    #[test]
    fn a_short_segment_closes_the_flow() {
        let mut c = Coalescer::default();
        let mut sink = Frames::default();
        let first = segment(true, 1, &[1; 100], false, 4000);
        let short = segment(true, 101, &[2; 50], false, 4000);
        let after = segment(true, 151, &[3; 100], false, 4000);
        for p in [&first, &short, &after] {
            c.push(p, &mut sink).unwrap();
        }
        c.flush(&mut sink).unwrap();
        assert_eq!(sink.0.len(), 2);
        assert_eq!(sink.0[1].1, after);
    }
}

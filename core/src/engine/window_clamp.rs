//! A bound on what a local TCP sender may put into the tun's ring: the receive window of the
//! ACKs written to it.
//!
//! A tun has no back-pressure, and on a phone's fd its ring holds 500 single packets
//! (ARCHITECTURE "Loss under load"). A local sender may have its whole congestion window in
//! flight, and BBR adds to that window whatever arrived in bursts of ACKs (its "ACK
//! aggregation"): on a busy device, where this engine or the far end is off the CPU for a
//! millisecond now and then, that came to 600–1 300 packets, more than the ring holds. The
//! part of the flight not yet read from the ring is bounded here instead: each bare ACK
//! written to the tun offers at most the flow's share of `LIMIT` beyond the highest sequence
//! number this engine has read from the tun for that flow, so the ring holds no more of it
//! than that. The ACK is not delayed (the sender's round-trip times and rates stay true),
//! and the window never closes: what was read is acknowledged one day, and each
//! acknowledgement offers the share again beyond it. The flight on the network (a long
//! path's bandwidth-delay product) is not bounded: it was read already.
//!
//! A flow's window is rewritten only when both of its SYNs were seen (its scale is known),
//! and only lowered; a flow that lost its table slot (to newer flows) is left alone. Data
//! segments from the far end carry windows too and are not rewritten (an offloading tun
//! takes them with partial checksums): a flow that sends both ways at full speed is bounded
//! only by its ACKs.

use crate::packet::checksum;
use foldhash::fast::SeedableRandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// Flows remembered: a table indexed by a hash of addresses and ports, where a flow takes
/// its own slot or one of the next `WAYS - 1`.
const FLOWS: usize = 256;
const WAYS: usize = 4;
const _: () = assert!(FLOWS.is_power_of_two());
/// Bytes beyond what was read that the windows of all sending flows offer together at most.
/// Below what the ring holds, with room for others' packets; measured with `bench/ab` on the
/// phone's fd (ARCHITECTURE "Loss under load", step 10): 384 KB cost a seventh of the
/// throughput (a window's edge moves on only when the next ACK comes back, a round trip
/// after the read), 512 KB none.
const LIMIT: u32 = 512 * 1024;
/// Ring entries one flow may fill (of the 500 a tun's ring holds): its windows offer at most
/// this many of its largest packets read (a raw fd's ring fills by packets, not bytes:
/// a flow of small segments fills it sooner).
const RING_ENTRIES: u32 = 384;
/// A flow counts as sending while data of it was read in this period or the one before.
const EPOCH: Duration = Duration::from_millis(2);
/// What a window offers beyond what was read at least, however many flows share the ring.
const FLOOR: u32 = 16 * 1024;
/// The largest packet rewritten (a bare ACK: IPv6 + TCP with 40 bytes of options is 100).
pub(super) const CLAMPED_BYTES: usize = 128;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;

/// What is known of one flow, seen from the tun: "local" is the side behind it.
#[derive(Clone, Copy, Default)]
struct Flow {
    /// 0: a free slot.
    hash: u64,
    /// The sequence number after the last byte of the flow read from the tun.
    read_end: u32,
    /// The largest payload of the flow read from the tun (a ring entry's worth).
    largest: u32,
    /// The window scale the remote side announced (None: it announced none).
    remote_shift: Option<u8>,
    /// Whether the local side announced a scale.
    local_scales: bool,
    remote_syn: bool,
    local_syn: bool,
    /// The period in which data of the flow was last read, and in which it was last seen at
    /// all (the slot of the flow seen longest ago is the one given to a new flow).
    sent_in: u32,
    seen_in: u32,
}

impl Flow {
    /// The scale of the remote side's windows, once both SYNs were seen.
    fn shift(&self) -> Option<u8> {
        if !(self.remote_syn && self.local_syn) {
            return None;
        }
        // A scale applies when both sides announce one (RFC 7323, 2.2); at most 14.
        Some(match self.remote_shift {
            Some(shift) if self.local_scales => shift.min(14),
            _ => 0,
        })
    }
}

pub(super) struct WindowClamp {
    flows: Box<[Flow]>,
    /// Bytes beyond the highest one read that the windows of all sending flows may offer
    /// together.
    limit: u32,
    hasher: SeedableRandomState,
    /// The current period (`EPOCH`), when it began, and the flows with data read in it and
    /// in the one before.
    epoch: u32,
    epoch_start: Option<Instant>,
    sending_now: u32,
    sending_before: u32,
    /// ACKs rewritten since `take_clamped` was last asked.
    clamped: u64,
}

impl WindowClamp {
    /// A clamp for the engine's life, across tunnels (a new fd carries the same flows).
    pub(super) fn new() -> WindowClamp {
        WindowClamp::with_limit(LIMIT)
    }

    fn with_limit(limit: u32) -> WindowClamp {
        WindowClamp {
            flows: vec![Flow::default(); FLOWS].into_boxed_slice(),
            limit,
            hasher: SeedableRandomState::random(),
            epoch: 1,
            epoch_start: None,
            sending_now: 0,
            sending_before: 0,
            clamped: 0,
        }
    }

    /// The slot of the flow with this hash.
    fn find(&self, hash: u64) -> Option<usize> {
        let base = slot(hash);
        (0..WAYS)
            .map(|way| (base + way) % FLOWS)
            .find(|&at| self.flows[at].hash == hash)
    }

    /// The slot for a flow whose SYN was seen: its own (`fresh`: a new connection starts
    /// over), a free one, or that of the flow seen longest ago.
    fn place(&mut self, hash: u64, fresh: bool) -> &mut Flow {
        let base = slot(hash);
        let mut chosen = base;
        let mut oldest = 0;
        for at in (0..WAYS).map(|way| (base + way) % FLOWS) {
            let flow = &self.flows[at];
            if flow.hash == hash && !fresh {
                chosen = at;
                break;
            }
            if flow.hash == hash || flow.hash == 0 {
                oldest = u32::MAX;
                chosen = at;
            }
            let age = self.epoch.wrapping_sub(flow.seen_in);
            if age > oldest {
                oldest = age;
                chosen = at;
            }
        }
        let epoch = self.epoch;
        let flow = &mut self.flows[chosen];
        if flow.hash != hash || fresh {
            *flow = Flow {
                hash,
                ..Flow::default()
            };
        }
        flow.seen_in = epoch;
        flow
    }

    /// Starts a new period when the last is over.
    fn tick(&mut self, now: Instant) {
        match self.epoch_start {
            Some(start) if now.saturating_duration_since(start) < EPOCH => {}
            Some(start) => {
                // After a quiet period nothing is sending.
                self.sending_before = if now < start + 2 * EPOCH {
                    self.sending_now
                } else {
                    0
                };
                self.sending_now = 0;
                self.epoch = self.epoch.wrapping_add(1);
                self.epoch_start = Some(now);
            }
            None => self.epoch_start = Some(now),
        }
    }

    /// A packet read from the tun (local to remote; a super-packet of an offloading tun
    /// counts whole).
    pub(super) fn note_read(&mut self, now: Instant, packet: &[u8]) {
        let Some(segment) = Segment::parse(packet) else {
            return;
        };
        self.tick(now);
        let hash = segment.flow(true, &self.hasher);
        let seq = segment.seq();
        let flags = segment.flags();
        if flags & SYN != 0 {
            let flow = self.place(hash, flags & ACK == 0);
            flow.local_syn = true;
            flow.local_scales = segment.window_scale().is_some();
            flow.read_end = seq.wrapping_add(1);
            return;
        }
        let Some(at) = self.find(hash) else {
            return;
        };
        let epoch = self.epoch;
        let flow = &mut self.flows[at];
        if flags & (FIN | RST) != 0 {
            // The local side sends no more: nothing left to bound.
            *flow = Flow::default();
            return;
        }
        flow.seen_in = epoch;
        if !flow.local_syn {
            return;
        }
        let payload = segment.payload_len() as u32;
        if payload > 0 && flow.sent_in != epoch {
            flow.sent_in = epoch;
            self.sending_now += 1;
        }
        flow.largest = flow.largest.max(payload);
        let end = seq.wrapping_add(payload);
        if is_after(end, flow.read_end) {
            flow.read_end = end;
        }
    }

    /// A packet on its way to the tun (remote to local). A bare ACK whose window offers more
    /// than the flow's share beyond what was read is rewritten into `out`: its length. SYNs
    /// are noted.
    pub(super) fn clamp(&mut self, packet: &[u8], out: &mut [u8; CLAMPED_BYTES]) -> Option<usize> {
        let segment = Segment::parse(packet)?;
        let hash = segment.flow(false, &self.hasher);
        let flags = segment.flags();
        if flags & SYN != 0 {
            let flow = self.place(hash, flags & ACK == 0);
            flow.remote_syn = true;
            flow.remote_shift = segment.window_scale();
            return None;
        }
        let at = self.find(hash)?;
        if flags & RST != 0 {
            self.flows[at] = Flow::default();
            return None;
        }
        let flow = &self.flows[at];
        if !segment.is_bare_ack() || packet.len() > CLAMPED_BYTES {
            return None;
        }
        let shift = flow.shift()?;
        // Acknowledged beyond what was read: the flow went another way; left alone.
        let unread = flow.read_end.wrapping_sub(segment.ack());
        if unread > u32::MAX / 2 {
            return None;
        }
        let sending = self.sending_now.max(self.sending_before).max(1);
        let share = self
            .limit
            .min(RING_ENTRIES.saturating_mul(flow.largest.max(1)))
            / sending;
        let offered = u64::from(segment.window()) << shift;
        let allowed = u64::from(unread) + u64::from(share.max(FLOOR));
        if allowed >= offered {
            return None;
        }
        // Below the offered field (a u16), and never 0: a window that closes needs probes.
        let field = (allowed >> shift).max(1) as u16;
        let out = &mut out[..packet.len()];
        out.copy_from_slice(packet);
        let at = segment.tcp;
        let old = segment.window();
        out[at + 14..at + 16].copy_from_slice(&field.to_be_bytes());
        let sum = u16::from_be_bytes([out[at + 16], out[at + 17]]);
        out[at + 16..at + 18].copy_from_slice(&checksum::update_2(sum, old, field).to_be_bytes());
        self.clamped += 1;
        Some(packet.len())
    }

    /// ACKs rewritten since the last call, for the node's counters.
    pub(super) fn take_clamped(&mut self) -> u64 {
        std::mem::take(&mut self.clamped)
    }
}

/// A flow's place in the table: the hash's top bits. Below `FLOWS`.
fn slot(hash: u64) -> usize {
    (hash >> (64 - FLOWS.trailing_zeros())) as usize
}

/// `a` is later than `b` in sequence space (less than half of it ahead).
fn is_after(a: u32, b: u32) -> bool {
    let ahead = a.wrapping_sub(b);
    ahead != 0 && ahead <= u32::MAX / 2
}

/// A TCP segment in an IPv4 packet (not a fragment) or straight after an IPv6 header.
struct Segment<'a> {
    packet: &'a [u8],
    /// Both addresses, source first.
    addresses: std::ops::Range<usize>,
    /// Where the TCP header starts, and where the IP packet ends (its stated length).
    tcp: usize,
    end: usize,
}

impl<'a> Segment<'a> {
    fn parse(packet: &'a [u8]) -> Option<Segment<'a>> {
        let first = *packet.first()?;
        let (tcp, end, addresses) = match first >> 4 {
            4 => {
                let header = usize::from(first & 0x0f) * 4;
                // Not TCP, or a fragment (MF set or an offset).
                if packet.len() < 20
                    || header < 20
                    || packet[9] != 6
                    || u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0
                {
                    return None;
                }
                let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
                (header, total, 12..20)
            }
            6 => {
                if packet.len() < 40 || packet[6] != 6 {
                    return None;
                }
                let total = 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
                (40, total, 8..40)
            }
            _ => return None,
        };
        if end > packet.len() || end < tcp + 20 {
            return None;
        }
        let data_offset = usize::from(packet[tcp + 12] >> 4) * 4;
        if data_offset < 20 || tcp + data_offset > end {
            return None;
        }
        Some(Segment {
            packet,
            addresses,
            tcp,
            end,
        })
    }

    /// A bare ACK: no data, no SYN, FIN, RST or URG (options such as SACK allowed).
    fn is_bare_ack(&self) -> bool {
        let flags = self.flags();
        flags & ACK != 0 && flags & (FIN | SYN | RST | URG) == 0 && self.payload_len() == 0
    }

    fn flags(&self) -> u8 {
        self.packet[self.tcp + 13]
    }

    fn header_len(&self) -> usize {
        usize::from(self.packet[self.tcp + 12] >> 4) * 4
    }

    fn payload_len(&self) -> usize {
        self.end - self.tcp - self.header_len()
    }

    fn word(&self, at: usize) -> u32 {
        let b = &self.packet[self.tcp + at..self.tcp + at + 4];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    fn seq(&self) -> u32 {
        self.word(4)
    }

    fn ack(&self) -> u32 {
        self.word(8)
    }

    fn window(&self) -> u16 {
        u16::from_be_bytes([self.packet[self.tcp + 14], self.packet[self.tcp + 15]])
    }

    /// A hash of the flow's addresses and ports, the same both ways: `outbound` is a packet
    /// from the local side (read from the tun), whose source is hashed as the destination.
    fn flow(&self, outbound: bool, hasher: &impl BuildHasher) -> u64 {
        let addresses = &self.packet[self.addresses.clone()];
        let (src, dst) = addresses.split_at(addresses.len() / 2);
        let ports = &self.packet[self.tcp..self.tcp + 4];
        let (sport, dport) = ports.split_at(2);
        let parts = if outbound {
            [dst, src, dport, sport]
        } else {
            [src, dst, sport, dport]
        };
        // Seeded per process, and mixed in all bits: flows of one host differ only in their
        // last bytes (ports a few apart), which FNV-1a's top bits did not tell apart.
        let mut state = hasher.build_hasher();
        for part in parts {
            state.write(part);
        }
        state.finish()
    }

    /// The window scale option's shift, if the segment has one.
    fn window_scale(&self) -> Option<u8> {
        let options = &self.packet[self.tcp + 20..self.tcp + self.header_len()];
        let mut at = 0;
        while at < options.len() {
            match options[at] {
                0 => return None,
                1 => at += 1,
                kind => {
                    let len = usize::from(*options.get(at + 1)?);
                    if len < 2 || at + len > options.len() {
                        return None;
                    }
                    if kind == 3 && len == 3 {
                        return Some(options[at + 2]);
                    }
                    at += len;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: [u8; 4] = [100, 64, 0, 1];
    const REMOTE: [u8; 4] = [100, 80, 0, 2];
    const SCALE: u8 = 7;

    /// An IPv4 TCP segment with valid checksums; `outbound`: from the local side.
    fn segment(
        outbound: bool,
        port: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: usize,
    ) -> Vec<u8> {
        segment_with(
            outbound,
            port,
            flags,
            seq,
            ack,
            payload,
            0xffff,
            flags & SYN != 0,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn segment_with(
        outbound: bool,
        port: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: usize,
        window: u16,
        scale: bool,
    ) -> Vec<u8> {
        let options = if scale { 4 } else { 0 };
        let tcp_len = 20 + options + payload;
        let mut p = vec![0u8; 20 + tcp_len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        let (src, dst, sport, dport) = if outbound {
            (LOCAL, REMOTE, port, 443)
        } else {
            (REMOTE, LOCAL, 443, port)
        };
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = (((20 + options) / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&window.to_be_bytes());
        if scale {
            t[20..24].copy_from_slice(&[1, 3, 3, SCALE]);
        }
        let sum = tcp_sum(&p);
        p[36..38].copy_from_slice(&sum.to_be_bytes());
        p
    }

    /// The TCP checksum field a packet needs (0 in its field: computes it; the packet's own:
    /// 0 when it is valid).
    fn tcp_sum(p: &[u8]) -> u16 {
        let tcp = &p[20..];
        let mut pseudo = Vec::from(&p[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        checksum::finish(checksum::accumulate(checksum::accumulate(0, &pseudo), tcp))
    }

    fn window_of(p: &[u8]) -> u64 {
        u64::from(u16::from_be_bytes([p[34], p[35]])) << SCALE
    }

    /// A connection from the local side, `read` bytes of it read from the tun in segments of
    /// 1 000.
    fn connected(clamp: &mut WindowClamp, now: Instant, port: u16, read: u32) {
        clamp.note_read(now, &segment(true, port, SYN, 999, 0, 0));
        let mut out = [0u8; CLAMPED_BYTES];
        assert_eq!(
            clamp.clamp(&segment(false, port, SYN | ACK, 5, 1000, 0), &mut out),
            None
        );
        for at in (0..read).step_by(1000) {
            clamp.note_read(now, &segment(true, port, ACK, 1000 + at, 6, 1000));
        }
    }

    #[test]
    fn an_ack_offers_no_more_than_the_limit_beyond_what_was_read() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(100_000);
        connected(&mut clamp, now, 40000, 300_000);
        let ack = segment(false, 40000, ACK, 6, 201_000, 0);
        let mut out = [0u8; CLAMPED_BYTES];
        let len = clamp.clamp(&ack, &mut out).expect("lowered");
        let written = &out[..len];
        // Read up to 301 000, acknowledged up to 201 000: 100 000 unread, 100 000 beyond.
        let offered = window_of(written);
        assert!((199_872..=200_000).contains(&offered), "{offered}");
        assert_eq!(tcp_sum(written), 0, "the checksum still holds");
        assert_eq!(&written[..34], &ack[..34], "nothing else changed");
        assert_eq!(clamp.take_clamped(), 1);
        assert_eq!(clamp.take_clamped(), 0);
        // A window below the bound is left as it is.
        let small = segment_with(false, 40000, ACK, 6, 201_000, 0, 100, false);
        assert_eq!(clamp.clamp(&small, &mut out), None);
    }

    #[test]
    fn the_window_never_closes() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(100_000);
        connected(&mut clamp, now, 40001, 50_000);
        // Everything read is acknowledged: the limit is still offered.
        let ack = segment(false, 40001, ACK, 6, 51_000, 0);
        let mut out = [0u8; CLAMPED_BYTES];
        let len = clamp.clamp(&ack, &mut out).expect("lowered");
        assert!(window_of(&out[..len]) >= 99_900);
        // Acknowledged beyond what this engine read (another path): left alone.
        let ahead = segment(false, 40001, ACK, 6, 80_000, 0);
        assert_eq!(clamp.clamp(&ahead, &mut out), None);
    }

    #[test]
    fn flows_sending_together_share_the_limit() {
        let now = Instant::now();
        // Below 384 ring entries of the flows' 1 000 bytes.
        let mut clamp = WindowClamp::with_limit(300_000);
        for port in [40010, 40011, 40012, 40013] {
            connected(&mut clamp, now, port, 10_000);
        }
        let mut out = [0u8; CLAMPED_BYTES];
        let len = clamp
            .clamp(&segment(false, 40012, ACK, 6, 11_000, 0), &mut out)
            .unwrap();
        let offered = window_of(&out[..len]);
        assert!((74_800..=75_000).contains(&offered), "a quarter: {offered}");
        // Two periods later only one of them still sends: it has the whole limit again.
        let later = now + 2 * EPOCH;
        clamp.note_read(later, &segment(true, 40010, ACK, 11_000, 6, 1000));
        let later = later + EPOCH;
        clamp.note_read(later, &segment(true, 40010, ACK, 12_000, 6, 1000));
        let len = clamp
            .clamp(&segment(false, 40010, ACK, 6, 13_000, 0), &mut out)
            .unwrap();
        assert!(window_of(&out[..len]) >= 299_800);
    }

    #[test]
    fn a_flow_of_small_segments_gets_fewer_bytes() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(1_000_000);
        clamp.note_read(now, &segment(true, 40020, SYN, 999, 0, 0));
        let mut out = [0u8; CLAMPED_BYTES];
        clamp.clamp(&segment(false, 40020, SYN | ACK, 5, 1000, 0), &mut out);
        clamp.note_read(now, &segment(true, 40020, ACK, 1000, 6, 100));
        let len = clamp
            .clamp(&segment(false, 40020, ACK, 6, 1100, 0), &mut out)
            .unwrap();
        // 384 ring entries of 100 bytes.
        let offered = window_of(&out[..len]);
        assert!((38_272..=38_400).contains(&offered), "{offered}");
    }

    #[test]
    fn windows_are_left_alone_until_both_syns_were_seen() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(10_000);
        let mut out = [0u8; CLAMPED_BYTES];
        // A flow that began before the engine: no SYN seen, its scale unknown.
        clamp.note_read(now, &segment(true, 40030, ACK, 1000, 6, 1000));
        assert_eq!(
            clamp.clamp(&segment(false, 40030, ACK, 6, 1000, 0), &mut out),
            None
        );
        // The local SYN only.
        clamp.note_read(now, &segment(true, 40031, SYN, 999, 0, 0));
        clamp.note_read(now, &segment(true, 40031, ACK, 1000, 6, 1000));
        assert_eq!(
            clamp.clamp(&segment(false, 40031, ACK, 6, 1000, 0), &mut out),
            None
        );
        // A reset ends what was known of a flow.
        connected(&mut clamp, now, 40032, 50_000);
        assert!(clamp
            .clamp(&segment(false, 40032, ACK, 6, 1000, 0), &mut out)
            .is_some());
        clamp.clamp(&segment(false, 40032, RST, 6, 0, 0), &mut out);
        assert_eq!(
            clamp.clamp(&segment(false, 40032, ACK, 6, 1000, 0), &mut out),
            None
        );
    }

    #[test]
    fn without_scaling_on_both_sides_the_window_is_in_bytes() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(20_000);
        let mut out = [0u8; CLAMPED_BYTES];
        // The local side announced no scale: the remote's does not apply.
        let syn = segment_with(true, 40040, SYN, 999, 0, 0, 0xffff, false);
        clamp.note_read(now, &syn);
        clamp.clamp(&segment(false, 40040, SYN | ACK, 5, 1000, 0), &mut out);
        clamp.note_read(now, &segment(true, 40040, ACK, 1000, 6, 1000));
        let ack = segment_with(false, 40040, ACK, 6, 1000, 0, 60_000, false);
        let len = clamp.clamp(&ack, &mut out).unwrap();
        let field = u16::from_be_bytes([out[34], out[35]]);
        assert_eq!(field, 21_000, "1 000 unread + 20 000, unscaled");
        assert_eq!(tcp_sum(&out[..len]), 0);
    }

    #[test]
    fn what_is_not_a_bare_ack_of_tcp_passes_untouched() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(10_000);
        connected(&mut clamp, now, 40050, 50_000);
        let mut out = [0u8; CLAMPED_BYTES];
        // Data from the far end, a FIN, UDP, a fragment, a truncated packet, garbage.
        assert_eq!(
            clamp.clamp(&segment(false, 40050, ACK, 6, 1000, 10), &mut out),
            None
        );
        assert_eq!(
            clamp.clamp(&segment(false, 40050, ACK | FIN, 6, 1000, 0), &mut out),
            None
        );
        let mut udp = segment(false, 40050, ACK, 6, 1000, 0);
        udp[9] = 17;
        assert_eq!(clamp.clamp(&udp, &mut out), None);
        let mut fragment = segment(false, 40050, ACK, 6, 1000, 0);
        fragment[6] = 0x20;
        assert_eq!(clamp.clamp(&fragment, &mut out), None);
        let whole = segment(false, 40050, ACK, 6, 1000, 0);
        for len in 0..whole.len() {
            assert_eq!(clamp.clamp(&whole[..len], &mut out), None, "{len} bytes");
            clamp.note_read(now, &whole[..len]);
        }
        assert_eq!(clamp.clamp(&[0xff; 60], &mut out), None);
    }

    #[test]
    fn many_flows_keep_their_slots_while_the_table_has_room() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(100_000);
        clamp.hasher = SeedableRandomState::fixed();
        let ports = 41000..41064;
        for port in ports.clone() {
            connected(&mut clamp, now, port, 10_000);
        }
        let mut out = [0u8; CLAMPED_BYTES];
        let clamped = ports
            .filter(|&port| {
                clamp
                    .clamp(&segment(false, port, ACK, 6, 1000, 0), &mut out)
                    .is_some()
            })
            .count();
        assert_eq!(clamped, 64, "64 flows in 256 slots of 4 ways");
    }
}

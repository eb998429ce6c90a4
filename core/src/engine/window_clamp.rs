//! A bound on what a local TCP sender may put into the tun's ring: the receive window of the
//! ACKs written to it.
//!
//! A tun has no back-pressure, and on a phone's fd its ring holds 500 single packets
//! (ARCHITECTURE "Loss under load"). A local sender may have its whole congestion window in
//! flight, and BBR adds to that window whatever arrived in bursts of ACKs (its "ACK
//! aggregation"): on a busy device, where this engine or the far end is off the CPU for a
//! millisecond now and then, that came to 600–1 300 packets, more than the ring holds. The
//! part of the flight not yet read from the ring is bounded here instead: each ACK written to
//! the tun (a bare one, or a small segment of data) offers at most the flow's share of
//! `LIMIT` beyond the highest sequence number this engine has read from the tun for that
//! flow. The ACK is not delayed (the sender's round-trip times and rates stay true), and the
//! window never closes: what was read is acknowledged one day, and each acknowledgement offers
//! the share again beyond it. The flight on the network (a long path's bandwidth-delay
//! product) is not bounded: it was read already.
//!
//! A flow's window is rewritten only when both of its SYNs were seen (its scale is known),
//! and only lowered; never below an edge offered before (no shrinking), and a duplicate ACK
//! gets the window its first copy got. A flow that lost its table slot (to newer flows), or
//! whose SYNs came before the engine, is left alone. Segments larger than `CLAMPED_BYTES`
//! (data the far end sends in bulk) go as they came: a flow that sends both ways at full
//! speed is bounded only by its ACKs, and sees their windows as a shrink after the data's.

use crate::packet::checksum;
use foldhash::fast::SeedableRandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// Flows remembered: a table indexed by a hash of addresses and ports, where a flow takes
/// its own slot or one of the next `WAYS - 1`.
const FLOWS: usize = 256;
const WAYS: usize = 4;
const _: () = assert!(FLOWS.is_power_of_two());
/// Bytes beyond what was read that the windows of all sending flows offer together at most
/// (but see `FLOOR`). Below what the ring holds, with room for others' packets; measured
/// with `bench/ab` on the phone's fd (ARCHITECTURE "Loss under load", step 10): 384 KB cost
/// a seventh of the throughput (a window's edge moves on only when the next ACK comes back,
/// a round trip after the read), 512 KB none.
const LIMIT: u32 = 512 * 1024;
/// Ring entries one flow may fill (of the 500 a tun's ring holds): its windows offer at most
/// this many of its largest packets read (a raw fd's ring fills by packets, not bytes:
/// a flow of small segments fills it sooner).
const RING_ENTRIES: u32 = 384;
/// A flow counts as sending while at least `BULK` bytes of it were read in one period of
/// reads (`EPOCH` long), in the current one or the one before: a flow that sends only a
/// request or a keepalive now and then does not take a share from the bulk flows.
const EPOCH: Duration = Duration::from_millis(2);
const BULK: u32 = 4096;
/// What a window offers beyond what was read at least, however many flows share the ring
/// (with more than 32 flows sending, their floors together exceed `LIMIT`).
const FLOOR: u32 = 16 * 1024;
/// The largest packet rewritten: a bare ACK (IPv6 + TCP with 40 bytes of options is 100) or
/// a small segment of data, such as an HTTP/2 peer's WINDOW_UPDATE during an upload.
pub(super) const CLAMPED_BYTES: usize = 256;

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
    /// The right edge (acknowledgement + window) of the last window the local side was
    /// offered: a window is never lowered below it (RFC 9293, 3.8.6.2.2: no shrinking).
    edge: Option<u32>,
    /// The last ACK rewritten or not: its number and window field as they came, and the
    /// field written. A duplicate ACK gets the same window again, or the sender would not
    /// count it as a duplicate (RFC 5681, 2) and lose its fast retransmit.
    last: Option<(u32, u16, u16)>,
    /// The period whose bytes `period_bytes` counts, and the last period in which the flow
    /// counted as sending (0: none; periods are numbered from 1).
    period: u32,
    period_bytes: u32,
    sent_in: u32,
    /// The period in which the flow was last seen either way (the slot of the flow seen
    /// longest ago is the one given to a new flow).
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

    /// Notes the right edge a segment with this acknowledgement and window field offers.
    fn offered(&mut self, ack: u32, field: u16, shift: u8) {
        let edge = ack.wrapping_add(u32::from(field) << shift);
        if self.edge.is_none_or(|last| is_after(edge, last)) {
            self.edge = Some(edge);
        }
    }
}

pub(super) struct WindowClamp {
    flows: Box<[Flow]>,
    /// Bytes beyond the highest one read that the windows of the sending flows may offer
    /// together (each at least `FLOOR`).
    limit: u32,
    hasher: SeedableRandomState,
    /// The current period of reads (`EPOCH`) and when it began; the flows that counted as
    /// sending in it, those of them that did not in the one before, and those that did in
    /// the one before.
    epoch: u32,
    epoch_start: Option<Instant>,
    sending_now: u32,
    joined_now: u32,
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
            joined_now: 0,
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
    /// over), else the first free one, else that of the flow seen longest ago.
    fn place(&mut self, hash: u64, fresh: bool) -> &mut Flow {
        let base = slot(hash);
        let mut own = None;
        let mut free = None;
        let (mut oldest, mut oldest_age) = (base, 0);
        for at in (0..WAYS).map(|way| (base + way) % FLOWS) {
            let flow = &self.flows[at];
            if flow.hash == hash {
                own = Some(at);
                break;
            }
            if flow.hash == 0 {
                free = free.or(Some(at));
                continue;
            }
            let age = self.epoch.wrapping_sub(flow.seen_in);
            if age > oldest_age {
                (oldest, oldest_age) = (at, age);
            }
        }
        let epoch = self.epoch;
        let flow = &mut self.flows[own.or(free).unwrap_or(oldest)];
        if own.is_none() || fresh {
            *flow = Flow {
                hash,
                ..Flow::default()
            };
        }
        flow.seen_in = epoch;
        flow
    }

    /// Starts a new period of reads when the last is over. Periods pass only with reads: a
    /// flow that sent before the engine lost the CPU still counts when it reads again.
    fn tick(&mut self, now: Instant) {
        match self.epoch_start {
            Some(start) if now.saturating_duration_since(start) < EPOCH => {}
            Some(_) => {
                self.sending_before = self.sending_now;
                self.sending_now = 0;
                self.joined_now = 0;
                self.epoch = next(self.epoch);
                self.epoch_start = Some(now);
            }
            None => self.epoch_start = Some(now),
        }
    }

    /// Flows that count as sending: in this period or the one before.
    fn sending(&self) -> u32 {
        (self.sending_before + self.joined_now).max(1)
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
        if flow.period != epoch {
            flow.period = epoch;
            flow.period_bytes = 0;
        }
        flow.period_bytes = flow.period_bytes.saturating_add(payload);
        if flow.period_bytes >= BULK && flow.sent_in != epoch {
            if flow.sent_in != previous(epoch) {
                self.joined_now += 1;
            }
            flow.sent_in = epoch;
            self.sending_now += 1;
        }
        flow.largest = flow.largest.max(payload);
        let end = seq.wrapping_add(payload);
        if is_after(end, flow.read_end) {
            flow.read_end = end;
        }
    }

    /// A packet on its way to the tun (remote to local). An ACK of at most `CLAMPED_BYTES`
    /// whose window offers more than the flow's share beyond what was read is rewritten into
    /// `out`: its length. SYNs are noted.
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
        let sending = self.sending();
        let (limit, epoch) = (self.limit, self.epoch);
        let flow = &mut self.flows[at];
        flow.seen_in = epoch;
        let shift = flow.shift()?;
        // Larger segments carry data the far end sends in bulk (a copy of each would be the
        // price) and go as they came; their windows may offer more than the next ACK's.
        if flags & ACK == 0 || flags & (FIN | URG) != 0 || packet.len() > CLAMPED_BYTES {
            return None;
        }
        let (ack, real) = (segment.ack(), segment.window());
        let field = match flow.last {
            Some((last_ack, last_real, field)) if (last_ack, last_real) == (ack, real) => field,
            _ => {
                // Read but not yet acknowledged; acknowledged beyond what was read: the flow
                // went another way, and is left alone.
                let read_unacked = flow.read_end.wrapping_sub(ack);
                if read_unacked > u32::MAX / 2 {
                    return None;
                }
                let share = limit.min(RING_ENTRIES.saturating_mul(flow.largest.max(1))) / sending;
                let mut allowed = u64::from(read_unacked) + u64::from(share.max(FLOOR));
                // Not below an edge offered before.
                if let Some(edge) = flow.edge {
                    let ahead = edge.wrapping_sub(ack);
                    if ahead <= u32::MAX / 2 {
                        allowed = allowed.max(u64::from(ahead));
                    }
                }
                let offered = u64::from(real) << shift;
                // Rounded up to the scale: never below `allowed`, never above `real`; at
                // least 1, as `allowed` is at least `FLOOR` (16 KB) and the shift at most 14.
                if allowed >= offered {
                    real
                } else {
                    allowed.div_ceil(1 << shift) as u16
                }
            }
        };
        flow.last = Some((ack, real, field));
        flow.offered(ack, field, shift);
        if field == real {
            return None;
        }
        let out = &mut out[..packet.len()];
        out.copy_from_slice(packet);
        let at = segment.tcp;
        out[at + 14..at + 16].copy_from_slice(&field.to_be_bytes());
        let sum = u16::from_be_bytes([out[at + 16], out[at + 17]]);
        out[at + 16..at + 18].copy_from_slice(&checksum::update_2(sum, real, field).to_be_bytes());
        self.clamped += 1;
        Some(packet.len())
    }

    /// ACKs rewritten since the last call, for the node's counters.
    pub(super) fn take_clamped(&mut self) -> u64 {
        std::mem::take(&mut self.clamped)
    }
}

/// The period after `epoch` (0 is none).
fn next(epoch: u32) -> u32 {
    epoch.checked_add(1).unwrap_or(1)
}

/// The period before `epoch`.
fn previous(epoch: u32) -> u32 {
    if epoch == 1 {
        u32::MAX
    } else {
        epoch - 1
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

    const SCALE: u8 = 7;

    /// A TCP segment with valid checksums, between a local port and a remote's 443.
    #[derive(Clone, Copy)]
    struct Seg {
        v6: bool,
        /// Four bytes of IPv4 options (IHL 6).
        ip_options: bool,
        /// From the local side (read from the tun).
        outbound: bool,
        port: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: usize,
        window: u16,
        /// A window scale option (`SCALE`).
        scale: bool,
    }

    impl Seg {
        fn new(outbound: bool, port: u16, flags: u8, seq: u32, ack: u32, payload: usize) -> Seg {
            Seg {
                v6: false,
                ip_options: false,
                outbound,
                port,
                flags,
                seq,
                ack,
                payload,
                window: 0xffff,
                scale: flags & SYN != 0,
            }
        }

        fn ip_len(&self) -> usize {
            match (self.v6, self.ip_options) {
                (true, _) => 40,
                (false, true) => 24,
                (false, false) => 20,
            }
        }

        fn build(&self) -> Vec<u8> {
            let options = if self.scale { 4 } else { 0 };
            let tcp_len = 20 + options + self.payload;
            let ip = self.ip_len();
            let mut p = vec![0u8; ip + tcp_len];
            let (local, remote): (&[u8], &[u8]) = if self.v6 {
                (
                    &[0xfd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                    &[0xfd, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                )
            } else {
                (&[100, 64, 0, 1], &[100, 80, 0, 2])
            };
            let (src, dst, sport, dport) = if self.outbound {
                (local, remote, self.port, 443)
            } else {
                (remote, local, 443, self.port)
            };
            if self.v6 {
                p[0] = 0x60;
                p[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
                p[6] = 6;
                p[7] = 64;
                p[8..24].copy_from_slice(src);
                p[24..40].copy_from_slice(dst);
            } else {
                p[0] = 0x40 | (ip / 4) as u8;
                p[2..4].copy_from_slice(&((ip + tcp_len) as u16).to_be_bytes());
                p[8] = 64;
                p[9] = 6;
                p[12..16].copy_from_slice(src);
                p[16..20].copy_from_slice(dst);
            }
            let t = &mut p[ip..];
            t[0..2].copy_from_slice(&sport.to_be_bytes());
            t[2..4].copy_from_slice(&dport.to_be_bytes());
            t[4..8].copy_from_slice(&self.seq.to_be_bytes());
            t[8..12].copy_from_slice(&self.ack.to_be_bytes());
            t[12] = (((20 + options) / 4) as u8) << 4;
            t[13] = self.flags;
            t[14..16].copy_from_slice(&self.window.to_be_bytes());
            if self.scale {
                t[20..24].copy_from_slice(&[1, 3, 3, SCALE]);
            }
            let sum = tcp_sum(&p, ip);
            p[ip + 16..ip + 18].copy_from_slice(&sum.to_be_bytes());
            p
        }
    }

    fn segment(
        outbound: bool,
        port: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: usize,
    ) -> Vec<u8> {
        Seg::new(outbound, port, flags, seq, ack, payload).build()
    }

    /// The TCP checksum field a packet with its TCP header at `ip` needs (its own field 0:
    /// computes it; the packet's own: 0 when it is valid).
    fn tcp_sum(p: &[u8], ip: usize) -> u16 {
        let tcp = &p[ip..];
        let mut pseudo = if p[0] >> 4 == 6 {
            Vec::from(&p[8..40])
        } else {
            Vec::from(&p[12..20])
        };
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        checksum::finish(checksum::accumulate(checksum::accumulate(0, &pseudo), tcp))
    }

    /// The window a segment offers, scaled (its TCP header at `ip`).
    fn window_at(p: &[u8], ip: usize) -> u64 {
        u64::from(u16::from_be_bytes([p[ip + 14], p[ip + 15]])) << SCALE
    }

    fn window_of(p: &[u8]) -> u64 {
        window_at(p, 20)
    }

    /// A connection from the local side whose first byte is `isn + 1`, `read` bytes of it
    /// read from the tun in segments of 1 000 (at `now`).
    fn connected_at(clamp: &mut WindowClamp, now: Instant, port: u16, isn: u32, read: u32) {
        clamp.note_read(now, &segment(true, port, SYN, isn, 0, 0));
        let mut out = [0u8; CLAMPED_BYTES];
        let syn_ack = segment(false, port, SYN | ACK, 5, isn.wrapping_add(1), 0);
        assert_eq!(clamp.clamp(&syn_ack, &mut out), None);
        send(clamp, now, port, isn.wrapping_add(1), read);
    }

    fn connected(clamp: &mut WindowClamp, now: Instant, port: u16, read: u32) {
        connected_at(clamp, now, port, 999, read);
    }

    /// `bytes` of a flow read from the tun from `seq` on, in segments of 1 000.
    fn send(clamp: &mut WindowClamp, now: Instant, port: u16, seq: u32, bytes: u32) {
        for at in (0..bytes).step_by(1000) {
            clamp.note_read(
                now,
                &segment(true, port, ACK, seq.wrapping_add(at), 6, 1000),
            );
        }
    }

    /// The window of the ACK `ack` of the flow on `port` as written to the tun.
    fn written_window(clamp: &mut WindowClamp, port: u16, ack: u32) -> Option<u64> {
        let mut out = [0u8; CLAMPED_BYTES];
        let len = clamp.clamp(&segment(false, port, ACK, 6, ack, 0), &mut out)?;
        assert_eq!(tcp_sum(&out[..len], 20), 0, "the checksum still holds");
        Some(window_of(&out[..len]))
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
        // Read up to 301 000, acknowledged up to 201 000: 100 000 in flight, 100 000 beyond;
        // rounded up to the scale.
        let offered = window_of(written);
        assert!((200_000..200_128).contains(&offered), "{offered}");
        assert_eq!(tcp_sum(written, 20), 0, "the checksum still holds");
        assert_eq!(&written[..34], &ack[..34], "nothing else changed");
        assert_eq!(clamp.take_clamped(), 1);
        assert_eq!(clamp.take_clamped(), 0);
        // A window below the bound is left as it is.
        let mut small = Seg::new(false, 40000, ACK, 6, 202_000, 0);
        small.window = 100;
        assert_eq!(clamp.clamp(&small.build(), &mut out), None);
    }

    #[test]
    fn the_window_never_closes() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(100_000);
        connected(&mut clamp, now, 40001, 50_000);
        // Everything read is acknowledged: the limit is still offered.
        assert!(written_window(&mut clamp, 40001, 51_000).expect("lowered") >= 100_000);
        // Acknowledged beyond what this engine read (another path): left alone.
        assert_eq!(written_window(&mut clamp, 40001, 80_000), None);
    }

    #[test]
    fn a_duplicate_ack_offers_the_same_window_and_no_edge_moves_back() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(100_000);
        connected(&mut clamp, now, 40002, 100_000);
        let first = written_window(&mut clamp, 40002, 51_000).expect("lowered");
        // More is read; the far end repeats its ACK (a segment was lost): same window.
        send(&mut clamp, now, 40002, 101_000, 20_000);
        assert_eq!(written_window(&mut clamp, 40002, 51_000), Some(first));
        // Three more flows start sending: the share is a quarter now, but the next ACK's
        // edge does not move back from the one offered.
        for port in [40003, 40004, 40005] {
            connected(&mut clamp, now, port, 10_000);
        }
        let later = now + EPOCH;
        send(&mut clamp, later, 40003, 11_000, 5_000);
        let next = written_window(&mut clamp, 40002, 52_000).expect("lowered");
        assert!(52_000 + next >= 51_000 + first, "{next} after {first}");
    }

    #[test]
    fn flows_sending_together_share_the_limit() {
        let now = Instant::now();
        // Below 384 ring entries of the flows' 1 000 bytes.
        let mut clamp = WindowClamp::with_limit(300_000);
        for port in [40010, 40011, 40012, 40013] {
            connected(&mut clamp, now, port, 10_000);
        }
        let quarter = written_window(&mut clamp, 40012, 11_000).expect("lowered");
        assert!((75_000..75_128).contains(&quarter), "a quarter: {quarter}");
        // The engine is off the CPU for 10 ms; then one flow is read: the four still count.
        let later = now + 5 * EPOCH;
        send(&mut clamp, later, 40010, 11_000, 5_000);
        let share = written_window(&mut clamp, 40010, 16_000).expect("lowered");
        assert!(
            (75_000..75_128).contains(&share),
            "still a quarter: {share}"
        );
        // A period later only that one still sends: it has the whole limit again. A flow
        // that sends less than a bulk flow in a period does not count.
        let later = later + EPOCH;
        send(&mut clamp, later, 40010, 16_000, 5_000);
        send(&mut clamp, later, 40011, 11_000, 2_000);
        let whole = written_window(&mut clamp, 40010, 21_000).expect("lowered");
        assert!((300_000..300_128).contains(&whole), "{whole}");
    }

    #[test]
    fn a_flow_of_small_segments_gets_fewer_bytes() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(1_000_000);
        clamp.note_read(now, &segment(true, 40020, SYN, 999, 0, 0));
        let mut out = [0u8; CLAMPED_BYTES];
        clamp.clamp(&segment(false, 40020, SYN | ACK, 5, 1000, 0), &mut out);
        clamp.note_read(now, &segment(true, 40020, ACK, 1000, 6, 100));
        // 384 ring entries of 100 bytes.
        let offered = written_window(&mut clamp, 40020, 1100).expect("lowered");
        assert!((38_400..38_528).contains(&offered), "{offered}");
    }

    #[test]
    fn windows_are_left_alone_until_both_syns_were_seen() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(10_000);
        // A flow that began before the engine: no SYN seen, its scale unknown.
        clamp.note_read(now, &segment(true, 40030, ACK, 1000, 6, 1000));
        assert_eq!(written_window(&mut clamp, 40030, 1000), None);
        // The local SYN only.
        clamp.note_read(now, &segment(true, 40031, SYN, 999, 0, 0));
        clamp.note_read(now, &segment(true, 40031, ACK, 1000, 6, 1000));
        assert_eq!(written_window(&mut clamp, 40031, 1000), None);
        // A reset from the far end ends what was known of a flow.
        connected(&mut clamp, now, 40032, 50_000);
        assert!(written_window(&mut clamp, 40032, 1000).is_some());
        let mut out = [0u8; CLAMPED_BYTES];
        clamp.clamp(&segment(false, 40032, RST, 6, 0, 0), &mut out);
        assert_eq!(written_window(&mut clamp, 40032, 2000), None);
    }

    #[test]
    fn a_local_fin_ends_the_flow_and_a_new_connection_starts_over() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(50_000);
        connected(&mut clamp, now, 40033, 300_000);
        clamp.note_read(now, &segment(true, 40033, ACK | FIN, 301_000, 6, 0));
        assert_eq!(written_window(&mut clamp, 40033, 200_000), None);
        // The same addresses and ports again, far away in sequence space, across its wrap.
        connected_at(&mut clamp, now, 40033, u32::MAX - 2_500, 10_000);
        let offered = written_window(&mut clamp, 40033, 2_000).expect("lowered");
        // Read up to 7 500 past the wrap, acknowledged up to 2 000: 5 500 in flight, and
        // half the limit beyond (the closed flow still counts as sending in this period).
        assert!((30_500..30_628).contains(&offered), "{offered}");
    }

    #[test]
    fn without_scaling_on_both_sides_the_window_is_in_bytes() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(20_000);
        let mut out = [0u8; CLAMPED_BYTES];
        // The local side announced no scale: the remote's does not apply.
        let mut syn = Seg::new(true, 40040, SYN, 999, 0, 0);
        syn.scale = false;
        clamp.note_read(now, &syn.build());
        clamp.clamp(&segment(false, 40040, SYN | ACK, 5, 1000, 0), &mut out);
        clamp.note_read(now, &segment(true, 40040, ACK, 1000, 6, 1000));
        let mut ack = Seg::new(false, 40040, ACK, 6, 1000, 0);
        ack.window = 60_000;
        let len = clamp.clamp(&ack.build(), &mut out).unwrap();
        let field = u16::from_be_bytes([out[34], out[35]]);
        assert_eq!(field, 21_000, "1 000 in flight + 20 000, unscaled");
        assert_eq!(tcp_sum(&out[..len], 20), 0);
    }

    #[test]
    fn ipv6_and_ipv4_with_options_are_clamped_too() {
        let now = Instant::now();
        for (v6, ip_options) in [(true, false), (false, true)] {
            let mut clamp = WindowClamp::with_limit(100_000);
            let seg = |outbound, flags, seq, ack, payload| {
                let mut s = Seg::new(outbound, 40060, flags, seq, ack, payload);
                (s.v6, s.ip_options) = (v6, ip_options);
                s
            };
            let mut out = [0u8; CLAMPED_BYTES];
            clamp.note_read(now, &seg(true, SYN, 999, 0, 0).build());
            clamp.clamp(&seg(false, SYN | ACK, 5, 1000, 0).build(), &mut out);
            for at in (0..50_000).step_by(1000) {
                clamp.note_read(now, &seg(true, ACK, 1000 + at, 6, 1000).build());
            }
            let ack = seg(false, ACK, 6, 41_000, 0);
            let len = clamp.clamp(&ack.build(), &mut out).expect("lowered");
            let ip = ack.ip_len();
            assert_eq!(tcp_sum(&out[..len], ip), 0, "v6 {v6}");
            let offered = window_at(&out[..len], ip);
            assert!((110_000..110_128).contains(&offered), "v6 {v6}: {offered}");
        }
    }

    #[test]
    fn small_data_segments_are_clamped_large_ones_and_the_rest_pass() {
        let now = Instant::now();
        let mut clamp = WindowClamp::with_limit(10_000);
        connected(&mut clamp, now, 40050, 50_000);
        let mut out = [0u8; CLAMPED_BYTES];
        // A WINDOW_UPDATE-sized segment from the far end offers the same bound as an ACK.
        let small = segment(false, 40050, ACK | 0x08, 6, 1000, 40);
        let len = clamp.clamp(&small, &mut out).expect("lowered");
        assert!(window_of(&out[..len]) < 100_000);
        assert_eq!(tcp_sum(&out[..len], 20), 0);
        // Bulk data, a FIN, UDP, a fragment, a bad data offset, truncations, garbage.
        let large = segment(false, 40050, ACK, 6, 1000, CLAMPED_BYTES);
        assert_eq!(clamp.clamp(&large, &mut out), None);
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
        let mut offset = segment(false, 40050, ACK, 6, 1000, 0);
        offset[32] = 0xf0;
        assert_eq!(clamp.clamp(&offset, &mut out), None);
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
        let clamped = ports
            .filter(|&port| written_window(&mut clamp, port, 1000).is_some())
            .count();
        assert_eq!(clamped, 64, "64 flows in 256 slots of 4 ways");
    }
}

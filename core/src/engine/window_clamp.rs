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
    /// A SYN carried TCP-MD5, TCP-AO or MPTCP: the window is signed, or counts from the
    /// connection's data level, and is never rewritten.
    signed: bool,
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

    /// Notes the right edge a segment with this acknowledgement and window field offers (an
    /// edge the acknowledgements have passed, as after 2 GB of segments that went as they
    /// came, is forgotten).
    fn offered(&mut self, ack: u32, field: u16, shift: u8) {
        let edge = ack.wrapping_add(u32::from(field) << shift);
        if self
            .edge
            .is_none_or(|last| is_after(edge, last) || !is_after(last, ack))
        {
            self.edge = Some(edge);
        }
    }

    /// Whether the flow counts as sending: it did in the current period of reads or in
    /// `before`, the last one in which any flow did (0: it never counted).
    fn counts(&self, epoch: u32, before: u32) -> bool {
        self.sent_in != 0 && (self.sent_in == epoch || self.sent_in == before)
    }

    /// Notes what the SYN in `segment` announced; the local side's when `local`.
    fn syn(&mut self, segment: &Segment<'_>, local: bool) {
        let options = segment.syn_options();
        self.signed |= options.signed;
        if local {
            self.local_syn = true;
            self.local_scales = options.scale.is_some();
        } else {
            self.remote_syn = true;
            self.remote_shift = options.scale;
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
    /// sending in it, and those of them that did not in the period before; that period
    /// (the last in which any flow counted) and its count.
    epoch: u32,
    epoch_start: Option<Instant>,
    sending_now: u32,
    joined_now: u32,
    before_epoch: u32,
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
            before_epoch: 0,
            sending_before: 0,
            clamped: 0,
        }
    }

    /// The slot of the flow with this hash.
    fn find(&self, hash: u64) -> Option<usize> {
        ways(hash).find(|&at| self.flows[at].hash == hash)
    }

    /// The slot for a flow whose SYN was seen: its own (`fresh`: a new connection starts
    /// over), else the first free one, else that of the flow seen longest ago.
    fn place(&mut self, hash: u64, fresh: bool) -> &mut Flow {
        let mut own = None;
        let mut free = None;
        let (mut oldest, mut oldest_age) = (slot(hash), 0);
        for at in ways(hash) {
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

    /// Starts a new period of reads when the last is over. Periods pass only with reads, and
    /// one in which no flow counted does not replace the one before: the flows that sent
    /// before the engine lost the CPU, or before the far end's ACKs stalled (the senders
    /// held by their windows, only small packets read), still count when they send again.
    fn tick(&mut self, now: Instant) {
        match self.epoch_start {
            Some(start) if now.saturating_duration_since(start) < EPOCH => {}
            Some(_) => {
                if self.sending_now > 0 {
                    self.sending_before = self.sending_now;
                    self.before_epoch = self.epoch;
                }
                self.sending_now = 0;
                self.joined_now = 0;
                self.epoch = next(self.epoch);
                self.epoch_start = Some(now);
            }
            None => self.epoch_start = Some(now),
        }
    }

    /// Flows that count as sending: in this period or the one before it in which any did.
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
            flow.syn(&segment, true);
            flow.read_end = seq.wrapping_add(1);
            return;
        }
        let Some(at) = self.find(hash) else {
            return;
        };
        let (epoch, before) = (self.epoch, self.before_epoch);
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
            // New, or back after a period without it.
            if !flow.counts(epoch, before) {
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
            self.place(hash, flags & ACK == 0).syn(&segment, false);
            return None;
        }
        let at = self.find(hash)?;
        if flags & RST != 0 {
            self.flows[at] = Flow::default();
            return None;
        }
        let sending = self.sending();
        let (limit, epoch, before) = (self.limit, self.epoch, self.before_epoch);
        let flow = &mut self.flows[at];
        flow.seen_in = epoch;
        let shift = flow.shift()?;
        // Larger segments carry data the far end sends in bulk (a copy of each would be the
        // price) and go as they came; their windows may offer more than the next ACK's.
        if flags & ACK == 0 || packet.len() > CLAMPED_BYTES || flow.signed {
            return None;
        }
        let (ack, real) = (segment.ack(), segment.window());
        // A FIN or urgent data goes as it came, and so does a small segment of data while
        // the local side sends no bulk (a download's last short segment then still joins
        // the ones before it, whose windows are equal): the window they offer is noted.
        let passes =
            flags & (FIN | URG) != 0 || (segment.payload_len() > 0 && !flow.counts(epoch, before));
        let field = match flow.last {
            _ if passes => real,
            Some((last_ack, last_real, field)) if (last_ack, last_real) == (ack, real) => field,
            _ => 'field: {
                // Read but not yet acknowledged; acknowledged beyond what was read: the flow
                // went another way, and is left alone.
                let read_unacked = flow.read_end.wrapping_sub(ack);
                if read_unacked > u32::MAX / 2 {
                    break 'field real;
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

/// A flow's place in the table: the hash's top bits. Below `FLOWS`.
fn slot(hash: u64) -> usize {
    (hash >> (64 - FLOWS.trailing_zeros())) as usize
}

/// The slots a flow may take: its own and the next `WAYS - 1`.
fn ways(hash: u64) -> impl Iterator<Item = usize> {
    let base = slot(hash);
    (0..WAYS).map(move |way| (base + way) % FLOWS)
}

/// `a` is later than `b` in sequence space (less than half of it ahead).
fn is_after(a: u32, b: u32) -> bool {
    let ahead = a.wrapping_sub(b);
    ahead != 0 && ahead <= u32::MAX / 2
}

/// TCP options that sign the header or make the window count at the connection's data
/// level (RFC 2385, RFC 5925, RFC 8684).
const MD5: u8 = 19;
const AO: u8 = 29;
const MPTCP: u8 = 30;

#[derive(Default)]
struct SynOptions {
    scale: Option<u8>,
    signed: bool,
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

    /// What a SYN's options announce: the window scale option's shift, and whether an
    /// option (TCP-MD5, TCP-AO, MPTCP) forbids rewriting the window.
    fn syn_options(&self) -> SynOptions {
        let options = &self.packet[self.tcp + 20..self.tcp + self.header_len()];
        let mut found = SynOptions::default();
        let mut at = 0;
        while at < options.len() {
            match options[at] {
                0 => break,
                1 => at += 1,
                kind => {
                    let Some(&len) = options.get(at + 1) else {
                        break;
                    };
                    let len = usize::from(len);
                    if len < 2 || at + len > options.len() {
                        break;
                    }
                    match kind {
                        3 if len == 3 => found.scale = Some(options[at + 2]),
                        MD5 | AO | MPTCP => found.signed = true,
                        _ => {}
                    }
                    at += len;
                }
            }
        }
        found
    }
}

#[cfg(test)]
#[path = "window_clamp_tests.rs"]
mod tests;

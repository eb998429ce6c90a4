//! Back-pressure onto the local TCP senders through their ACKs.
//!
//! A tun has no back-pressure: the kernel queues up to `txqueuelen` packets for its reader
//! and drops the rest (ARCHITECTURE "Loss under load"). On a phone's fd that ring holds 500
//! single packets, less than a TCP window, and overflows; with Linux offloads it holds 500
//! super-packets of up to 64 KB, which never overflow but make a long queue for a ping to
//! wait behind. A local TCP sender is clocked by the ACKs this engine writes to the tun:
//! each one lets it release its next burst into that ring, in the `write` that hands the ACK
//! over. So bare ACKs (no data, no SYN, FIN or RST) are written to the tun on a budget that
//! each visit to the tun renews: a few when the visit found the ring empty, one when it did
//! not — or, while more is left of it, one budget of acknowledged bytes (each ACK's new
//! bytes from its flow's last acknowledgement number), for a far end whose ACKs each cover
//! two segments instead of 64 KB. ACKs beyond it wait, in order, for the next visit; the
//! sender then waits for its ACKs instead of filling a ring it cannot see. Everything else
//! (pings, data, a call's UDP) passes at once, and may overtake a held ACK of its flow (the
//! sender's TCP takes an ACK older than one it has seen as nothing new). Held ACKs are kept
//! in a fixed pool; when it is full, an ACK passes the held ones. A sender that has nothing
//! more to send makes no visit to the tun: when none has come for `MAX_WAIT` while ACKs
//! wait, the timer stands for a visit that found the ring empty (it is: a ring with packets
//! is readable, and readable means a visit).

use std::time::{Duration, Instant};

/// ACKs held at most.
const SLOTS: usize = 512;
/// The largest packet held (IPv6 + TCP with 40 bytes of options is 100).
const SLOT_BYTES: usize = 128;
/// How long ACKs wait with no visit to the tun before the timer releases some.
const MAX_WAIT: Duration = Duration::from_millis(2);
/// ACKs written per visit to the tun that found its ring empty, and per visit that did not.
/// Tried in `bench/ab` (4 pairs each): 16 and 2 let sixteen times as many retransmissions
/// through on the phone's fd, with 1.56 times the RTT under load and no more throughput; 4
/// and 1 was no better; 2 and 1 cost a sixth of the throughput with Linux offloads
/// (ARCHITECTURE "Loss under load", step 8).
const BUDGET_DRAINED: usize = 8;
const BUDGET_BACKLOG: usize = 1;
/// Acknowledged bytes a visit lets through besides, whatever the count: where the far end
/// does not join segments (a utun on both ends), one ACK covers two segments, and one ACK
/// per visit that read 64 packets starved the sender (utun framing lost two fifths of its
/// throughput). With joined segments an ACK covers up to 64 KB and the count governs.
const BYTES_DRAINED: u32 = 64 * 1024;
const BYTES_BACKLOG: u32 = 16 * 1024;
/// What an ACK whose flow has no earlier ACK in the table is taken to cover.
const BYTES_UNKNOWN: u32 = 64 * 1024;
/// What any ACK is taken to cover at least: a duplicate lets a segment be sent again, and
/// the byte budget runs out on duplicates too.
const BYTES_LEAST: u32 = 1500;
/// Flows whose last acknowledgement number is remembered (direct-mapped by a hash).
const FLOWS: usize = 64;
const _: () = assert!(FLOWS.is_power_of_two());

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;

/// The held ACKs, oldest first.
pub(super) struct AckHold {
    slots: Box<[u8]>,
    lens: Box<[u8]>,
    /// Bytes each held ACK acknowledges beyond its flow's ACK before it.
    covers: Box<[u32]>,
    /// Per flow (by hash): the hash and the highest acknowledgement number seen.
    flows: Box<[(u64, u32)]>,
    /// Index of the oldest held ACK.
    head: usize,
    held: usize,
    /// Since when ACKs have waited with none released (set by `mark` and `release`).
    stalled_since: Option<Instant>,
    /// ACKs held since `take_delayed` was last asked.
    delayed: u64,
    /// ACKs that may still be written before the next visit to the tun.
    budget: usize,
    /// The budget a visit gives when it found the ring empty, and when it did not.
    budget_drained: usize,
    budget_backlog: usize,
    /// Acknowledged bytes that may still be written before the next visit (an ACK may go
    /// while either budget lasts), and what a visit gives.
    bytes: u32,
    bytes_drained: u32,
    bytes_backlog: u32,
}

impl AckHold {
    /// A hold for the engine's life, across tunnels.
    pub(super) fn new() -> AckHold {
        AckHold::with_budgets(BUDGET_DRAINED, BUDGET_BACKLOG, BYTES_DRAINED, BYTES_BACKLOG)
    }

    /// A hold with these budgets of ACKs and of acknowledged bytes.
    fn with_budgets(
        budget_drained: usize,
        budget_backlog: usize,
        bytes_drained: u32,
        bytes_backlog: u32,
    ) -> AckHold {
        AckHold {
            slots: vec![0u8; SLOTS * SLOT_BYTES].into_boxed_slice(),
            lens: vec![0u8; SLOTS].into_boxed_slice(),
            covers: vec![0u32; SLOTS].into_boxed_slice(),
            flows: vec![(0u64, 0u32); FLOWS].into_boxed_slice(),
            head: 0,
            held: 0,
            stalled_since: None,
            delayed: 0,
            budget: budget_drained,
            budget_drained,
            budget_backlog,
            bytes: bytes_drained,
            bytes_drained,
            bytes_backlog,
        }
    }

    /// Holds `packet` if it is a bare TCP ACK beyond the budget; false: it is to be written
    /// now.
    pub(super) fn offer(&mut self, packet: &[u8]) -> bool {
        if packet.len() > SLOT_BYTES {
            return false;
        }
        let Some((flow, ack)) = bare_ack(packet) else {
            return false;
        };
        let covers = self.covers(flow, ack);
        if self.held == 0 && (self.budget > 0 || self.bytes > 0) {
            self.spend(covers);
            return false;
        }
        if self.held == SLOTS {
            return false;
        }
        let at = (self.head + self.held) % SLOTS;
        self.slots[at * SLOT_BYTES..][..packet.len()].copy_from_slice(packet);
        // At most SLOT_BYTES (128): fits.
        self.lens[at] = packet.len() as u8;
        self.covers[at] = covers;
        self.held += 1;
        self.delayed += 1;
        true
    }

    /// Bytes `ack` acknowledges beyond the highest acknowledgement seen for its flow (at
    /// least `BYTES_LEAST`, also for a duplicate or an older one), and remembers it.
    fn covers(&mut self, flow: u64, ack: u32) -> u32 {
        // The hash's top bits (FLOWS is 2^6): FNV-1a's low bits depend on the input's low
        // bits only, so ports 64 apart would share a slot. In bounds: < 64.
        let entry = &mut self.flows[(flow >> (64 - FLOWS.trailing_zeros())) as usize];
        if entry.0 != flow {
            *entry = (flow, ack);
            return BYTES_UNKNOWN;
        }
        // Sequence arithmetic: "beyond" is less than half the number space ahead.
        let ahead = ack.wrapping_sub(entry.1);
        if ahead == 0 || ahead > u32::MAX / 2 {
            return BYTES_LEAST;
        }
        entry.1 = ack;
        ahead.max(BYTES_LEAST)
    }

    fn spend(&mut self, covers: u32) {
        self.budget = self.budget.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(covers);
    }

    /// Notes when ACKs began to wait (after the datagrams of a wake-up were handled).
    pub(super) fn mark(&mut self, now: Instant) {
        if self.held > 0 && self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
    }

    /// When the timer is to stand for a visit to the tun: `MAX_WAIT` after the last release
    /// while ACKs wait (none while none wait: an idle engine does not wake for this).
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.stalled_since.map(|since| since + MAX_WAIT)
    }

    /// A visit to the tun ended (`drained`: it found the ring empty), or the deadline came
    /// (as a visit that found it empty). The ACKs whose turn it is go to `write`, oldest
    /// first.
    pub(super) fn release(&mut self, drained: bool, now: Instant, mut write: impl FnMut(&[u8])) {
        (self.budget, self.bytes) = if drained {
            (self.budget_drained, self.bytes_drained)
        } else {
            (self.budget_backlog, self.bytes_backlog)
        };
        let mut release = 0;
        while self.held > 0 && (self.budget > 0 || self.bytes > 0) {
            self.spend(self.covers[self.head]);
            self.write_oldest(1, &mut write);
            release += 1;
        }
        if self.held == 0 {
            self.stalled_since = None;
        } else if release > 0 {
            self.stalled_since = Some(now);
        }
    }

    /// The tunnel is being replaced (what waits goes to it now, before its fd closes) or
    /// was lost. Returns how many there were.
    pub(super) fn release_all(&mut self, write: impl FnMut(&[u8])) -> usize {
        let held = self.held;
        self.write_oldest(held, write);
        self.stalled_since = None;
        held
    }

    fn write_oldest(&mut self, count: usize, mut write: impl FnMut(&[u8])) {
        for _ in 0..count {
            let at = self.head;
            write(&self.slots[at * SLOT_BYTES..][..usize::from(self.lens[at])]);
            self.head = (self.head + 1) % SLOTS;
            self.held -= 1;
        }
    }

    /// ACKs held since the last call, for the node's counters.
    pub(super) fn take_delayed(&mut self) -> u64 {
        std::mem::take(&mut self.delayed)
    }

    /// ACKs waiting.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held
    }
}

/// A TCP segment that carries only an acknowledgement (options such as SACK allowed): a
/// hash of its flow (addresses and ports) and its acknowledgement number.
fn bare_ack(packet: &[u8]) -> Option<(u64, u32)> {
    let first = *packet.first()?;
    let (tcp, ip_len, addresses) = match first >> 4 {
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
            (packet.get(header..total)?, total, &packet[12..20])
        }
        6 => {
            // TCP straight after the fixed header only.
            if packet.len() < 40 || packet[6] != 6 {
                return None;
            }
            let total = 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            (packet.get(40..total)?, total, &packet[8..40])
        }
        _ => return None,
    };
    if tcp.len() < 20 || ip_len != packet.len() {
        return None;
    }
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    let flags = tcp[13];
    let bare = data_offset >= 20
        && data_offset == tcp.len()
        && flags & ACK != 0
        && flags & (FIN | SYN | RST | URG) == 0;
    if !bare {
        return None;
    }
    // FNV-1a. Flows that share a table slot evict each other and count as unknown (64 KB):
    // the count budget then governs, as it did before the bytes were counted.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in addresses.iter().chain(&tcp[..4]) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    Some((hash, u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp(flags: u8, payload: usize) -> Vec<u8> {
        let total = 20 + 20 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[20 + 12] = 5 << 4;
        p[20 + 13] = flags;
        p
    }

    fn ipv6_tcp(flags: u8, options: usize) -> Vec<u8> {
        let tcp = 20 + options;
        let mut p = vec![0u8; 40 + tcp];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(tcp as u16).to_be_bytes());
        p[6] = 6;
        p[40 + 12] = ((tcp / 4) as u8) << 4;
        p[40 + 13] = flags;
        p
    }

    fn ack(n: u8) -> Vec<u8> {
        let mut p = ipv4_tcp(ACK, 0);
        p[20 + 8] = n; // the acknowledgement number tells them apart
        p
    }

    #[test]
    fn acks_beyond_the_budget_wait_for_a_visit_and_leave_in_order() {
        let now = Instant::now();
        let mut hold = AckHold::with_budgets(3, 1, 0, 0);
        for n in 0..3 {
            assert!(!hold.offer(&ack(n)), "within the budget: written at once");
        }
        assert!(!hold.offer(&ipv4_tcp(ACK, 100)), "data passes");
        for n in 3..10 {
            assert!(hold.offer(&ack(n)));
        }
        let mut written = Vec::new();
        hold.release(false, now, |p| written.push(p[28]));
        assert_eq!(written, [3], "a ring with a backlog: one");
        hold.release(true, now, |p| written.push(p[28]));
        assert_eq!(written, [3, 4, 5, 6]);
        assert!(hold.offer(&ack(10)), "behind the held ones");
        hold.release(true, now, |p| written.push(p[28]));
        assert_eq!(written, [3, 4, 5, 6, 7, 8, 9]);
        hold.release(true, now, |p| written.push(p[28]));
        assert_eq!(written.last(), Some(&10));
        assert_eq!(hold.held(), 0);
        assert!(!hold.offer(&ack(11)), "budget left: written at once");
    }

    #[test]
    fn the_deadline_stands_for_a_visit_when_none_comes() {
        let start = Instant::now();
        let mut hold = AckHold::with_budgets(2, 1, 0, 0);
        hold.mark(start);
        assert_eq!(hold.deadline(), None, "nothing held: no wake-up");
        for n in 0..6 {
            hold.offer(&ack(n));
        }
        hold.mark(start);
        hold.mark(start + MAX_WAIT);
        assert_eq!(hold.deadline(), Some(start + MAX_WAIT), "the first wait's");
        // A visit that releases one moves the deadline on: the queue is moving.
        let later = start + MAX_WAIT / 2;
        let mut written = Vec::new();
        hold.release(false, later, |p| written.push(p[28]));
        assert_eq!(hold.deadline(), Some(later + MAX_WAIT));
        // The timer's release is a drained visit's: a budget's worth, not all at once.
        hold.release(true, later + MAX_WAIT, |p| written.push(p[28]));
        assert_eq!(written, [2, 3, 4]);
        assert_eq!(hold.deadline(), Some(later + 2 * MAX_WAIT));
        hold.release(true, later + 2 * MAX_WAIT, |p| written.push(p[28]));
        assert_eq!((written.len(), hold.held(), hold.deadline()), (4, 0, None));
        assert_eq!(hold.take_delayed(), 4);
        assert_eq!(hold.take_delayed(), 0);
    }

    #[test]
    fn a_full_hold_lets_acks_pass() {
        let mut hold = AckHold::with_budgets(0, 0, 0, 0);
        for _ in 0..SLOTS {
            assert!(hold.offer(&ipv4_tcp(ACK, 0)));
        }
        assert!(!hold.offer(&ipv4_tcp(ACK, 0)));
        // Wrapping around the pool keeps the order and the lengths.
        hold.budget_drained = 1;
        hold.release(true, Instant::now(), |_| {});
        assert!(hold.offer(&ipv6_tcp(ACK, 40)));
        let mut lens = Vec::new();
        hold.release_all(|p| lens.push(p.len()));
        assert_eq!(lens.len(), SLOTS);
        assert_eq!(lens.last(), Some(&100));
        assert_eq!((hold.held(), hold.deadline()), (0, None));
    }

    fn ack_of(flow_port: u8, number: u32) -> Vec<u8> {
        let mut p = ipv4_tcp(ACK, 0);
        p[20 + 1] = flow_port;
        p[20 + 8..20 + 12].copy_from_slice(&number.to_be_bytes());
        p
    }

    /// Offers ACKs `step` bytes apart on one flow until one is held; returns how many passed.
    fn passing(hold: &mut AckHold, port: u8, number: &mut u32, step: u32) -> usize {
        (0..1000)
            .take_while(|_| {
                *number = number.wrapping_add(step);
                !hold.offer(&ack_of(port, *number))
            })
            .count()
    }

    #[test]
    fn small_acks_go_by_the_bytes_they_acknowledge_large_ones_by_their_count() {
        let now = Instant::now();
        let mut hold = AckHold::new();
        // A far end that does not join: each ACK covers two segments.
        let small = 2 * 1348;
        // Across the wrap of the number space too (after the flow's first ACK).
        let mut number = u32::MAX - 5 * small;
        // The flow's first ACK covers what is not known yet: it takes the byte budget.
        assert_eq!(passing(&mut hold, 1, &mut number, small), BUDGET_DRAINED);
        for _ in 0..100 {
            number = number.wrapping_add(small);
            assert!(hold.offer(&ack_of(1, number)), "behind the held one");
        }
        let mut released = 0;
        hold.release(true, now, |_| released += 1);
        let by_bytes = BYTES_DRAINED.div_ceil(small) as usize;
        assert!(by_bytes > BUDGET_DRAINED);
        assert_eq!(released, by_bytes, "a drained visit: the bytes' worth");
        let mut backlog = 0;
        hold.release(false, now, |_| backlog += 1);
        assert_eq!(backlog, BYTES_BACKLOG.div_ceil(small) as usize);
        hold.release_all(|_| {});
        // ACKs of joined segments (64 KB each): the count governs.
        let mut number = 0;
        hold.release(true, now, |_| {});
        let passed = passing(&mut hold, 2, &mut number, 64 * 1024);
        assert_eq!(passed, BUDGET_DRAINED);
        for _ in 0..20 {
            number = number.wrapping_add(64 * 1024);
            assert!(hold.offer(&ack_of(2, number)));
        }
        let mut released = 0;
        hold.release(false, now, |_| released += 1);
        assert_eq!(released, BUDGET_BACKLOG);
        // Duplicates acknowledge nothing new but let a segment go again: they are counted
        // as one.
        hold.release_all(|_| {});
        hold.release(true, now, |_| {});
        assert_eq!(
            passing(&mut hold, 2, &mut number, 0),
            BYTES_DRAINED.div_ceil(BYTES_LEAST) as usize
        );
    }

    /// Ports 64 apart (FNV-1a's low bits alike) keep slots of their own; an older ACK counts
    /// as a segment and does not rewind its flow.
    #[test]
    fn flows_keep_their_own_acknowledgement_numbers() {
        let mut hold = AckHold::new();
        let flows = [1u8, 65, 129, 193].map(|port| bare_ack(&ack_of(port, 0)).unwrap().0);
        for &flow in &flows {
            assert_eq!(hold.covers(flow, 10_000), BYTES_UNKNOWN);
        }
        for &flow in &flows {
            assert_eq!(hold.covers(flow, 10_000 + 2696), 2696, "slot of its own");
        }
        assert_eq!(hold.covers(flows[0], 5_000), BYTES_LEAST, "older");
        assert_eq!(
            hold.covers(flows[0], 10_000 + 2696 + 3000),
            3000,
            "not rewound"
        );
        assert_eq!(
            hold.covers(flows[0], 10_000 + 2696 + 3100),
            BYTES_LEAST,
            "at least one"
        );
    }
}

//! Tests of `engine::window_clamp`: packets built with valid checksums, windows read back.

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
    /// A TCP-MD5 signature option.
    md5: bool,
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
            md5: false,
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
        let options = if self.scale { 4 } else { 0 } + if self.md5 { 20 } else { 0 };
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
        let mut at = 20;
        if self.scale {
            t[at..at + 4].copy_from_slice(&[1, 3, 3, SCALE]);
            at += 4;
        }
        if self.md5 {
            t[at..at + 4].copy_from_slice(&[1, 1, 19, 18]);
        }
        let sum = tcp_sum(&p, ip);
        p[ip + 16..ip + 18].copy_from_slice(&sum.to_be_bytes());
        p
    }
}

fn segment(outbound: bool, port: u16, flags: u8, seq: u32, ack: u32, payload: usize) -> Vec<u8> {
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
    let quarter = written_window(&mut clamp, 40004, 11_000).expect("lowered");
    assert!((25_000..25_128).contains(&quarter), "a new edge: {quarter}");
    let next = written_window(&mut clamp, 40002, 52_000).expect("lowered");
    // 69 000 in flight + a quarter would be 94 000: the edge offered before stands.
    assert!(52_000 + next >= 51_000 + first, "{next} after {first}");
    assert!(
        52_000 + next < 51_000 + first + 128,
        "{next}: no more than that edge"
    );
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
    // The far end's ACKs stall: the senders are held, and only small packets are read for
    // two periods. The four still count.
    for n in 1..3 {
        let empty = segment(true, 40013, ACK, 11_000, 6, 0);
        clamp.note_read(now + EPOCH * n, &empty);
    }
    let share = written_window(&mut clamp, 40011, 11_000).expect("lowered");
    assert!(
        (75_000..75_128).contains(&share),
        "after the stall: {share}"
    );
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
    // The same from a flow whose local side sends no bulk (a download) goes as it came.
    connected(&mut clamp, now, 40051, 1_000);
    let small = segment(false, 40051, ACK | 0x08, 6, 2000, 40);
    assert_eq!(clamp.clamp(&small, &mut out), None);
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
fn many_flows_sending_get_the_floor_each() {
    let now = Instant::now();
    let mut clamp = WindowClamp::with_limit(100_000);
    for port in 40070..40080 {
        connected(&mut clamp, now, port, 10_000);
    }
    // A tenth of the limit is below the floor: the floor.
    let offered = written_window(&mut clamp, 40075, 11_000).expect("lowered");
    let floor = u64::from(FLOOR);
    assert!((floor..floor + 128).contains(&offered), "{offered}");
}

#[test]
fn a_new_connection_on_the_same_ports_starts_over() {
    let now = Instant::now();
    let mut clamp = WindowClamp::with_limit(50_000);
    connected(&mut clamp, now, 40034, 300_000);
    assert!(written_window(&mut clamp, 40034, 200_000).is_some());
    // No FIN was seen (the old connection timed out): a SYN on the same ports replaces it.
    connected_at(&mut clamp, now, 40034, 7_000_000, 20_000);
    let offered = written_window(&mut clamp, 40034, 7_010_001).expect("lowered");
    // 10 000 in flight; the old flow still counts in this period: half the limit.
    assert!((35_000..35_128).contains(&offered), "{offered}");
}

#[test]
fn a_flow_takes_one_of_four_slots_and_the_oldest_makes_room() {
    let now = Instant::now();
    let mut clamp = WindowClamp::with_limit(100_000);
    clamp.hasher = SeedableRandomState::fixed();
    // Five flows whose own slot is the same, found with the table's own hash.
    let base = |clamp: &WindowClamp, port| {
        let syn = segment(false, port, SYN | ACK, 5, 1000, 0);
        slot(Segment::parse(&syn).unwrap().flow(false, &clamp.hasher))
    };
    let first = base(&clamp, 42000);
    let ports: Vec<u16> = (42000..u16::MAX)
        .filter(|&p| base(&clamp, p) == first)
        .take(5)
        .collect();
    assert_eq!(ports.len(), 5);
    // Four fit, each in its own period.
    for (n, &port) in ports[..4].iter().enumerate() {
        connected(&mut clamp, now + EPOCH * n as u32, port, 10_000);
    }
    // The second is seen longest ago; the fifth takes its slot.
    let later = now + EPOCH * 5;
    for &port in [ports[0], ports[2], ports[3]].iter() {
        send(&mut clamp, later, port, 11_000, 1000);
    }
    connected(&mut clamp, later + EPOCH, ports[4], 10_000);
    assert!(written_window(&mut clamp, ports[4], 1000).is_some());
    assert_eq!(written_window(&mut clamp, ports[1], 2000), None, "evicted");
    for &port in [ports[0], ports[2], ports[3]].iter() {
        assert!(
            written_window(&mut clamp, port, 2000).is_some(),
            "{port} kept"
        );
    }
}

#[test]
fn signed_and_multipath_connections_are_left_alone() {
    let now = Instant::now();
    let mut clamp = WindowClamp::with_limit(10_000);
    let mut syn = Seg::new(true, 40080, SYN, 999, 0, 0);
    syn.md5 = true;
    clamp.note_read(now, &syn.build());
    let mut out = [0u8; CLAMPED_BYTES];
    clamp.clamp(&segment(false, 40080, SYN | ACK, 5, 1000, 0), &mut out);
    send(&mut clamp, now, 40080, 1000, 50_000);
    assert_eq!(written_window(&mut clamp, 40080, 1000), None);
}

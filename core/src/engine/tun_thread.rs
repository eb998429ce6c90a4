//! A thread of its own that writes decrypted packets to a tun without offloads (a phone's
//! `VpnService` fd, utun, a Linux tun without `IFF_VNET_HDR`), so that the engine decrypts
//! the next datagrams while the kernel takes the last ones (issue 16, "use the cores").
//!
//! Why the writes: on such a tun every packet is one `write`, and the kernel runs its whole
//! receive path (IP, TCP, the socket's wake-up, the ACK it sends back) inside that call, in
//! the writer's time. It is the largest share of the receiving engine's work per packet, and
//! the one that needs no engine state: the packet is final. An offloading Linux tun is not
//! handed over (the coalescer already writes one 64 KB super-packet per ~45 segments).
//!
//! - **No allocation per packet**: fixed pools of packet slots, allocated when the tunnel is
//!   attached, circulate between the engine and the thread over bounded channels: one of
//!   single packets, and on a raw IP tun one of the large packets the coalescer joins
//!   (`packet::gro`, `Output::Plain`).
//! - **Back-pressure instead of loss**: when every slot is waiting to be written, the engine
//!   waits for the thread to free one (microseconds: the thread is writing), so it stops
//!   reading the UDP socket, whose 7 MB buffer holds what arrives meanwhile. Only a thread
//!   that frees nothing for [`STALL`] costs a packet, counted as `tun_write`.
//! - **No hand-off at idle**: the first packet of a read is written by the engine itself when
//!   the thread has nothing in flight (the order is kept: nothing is queued ahead of it), so
//!   a ping crosses no thread and the idle engine has no extra wake-up; the thread sleeps in
//!   `recv` until there is work.

use crate::dataplane::MAX_PACKET;
use crate::framing::Framing;
use crate::packet::gro::MAX_SUPER;
use crate::tun::TunDevice;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Packets in flight between the engine and the thread at most (~380 KB of slots): several
/// full GRO reads, so a thread that is descheduled for a moment does not stall the engine.
pub(super) const SLOTS: usize = 256;

/// Slots for joined packets on a raw IP tun (1 MiB): a bulk flow's read of 64 datagrams
/// joins into two, so several reads' worth; many flows interleaved in one read join into
/// more, smaller ones, and the engine then waits for slots like for single packets.
pub(super) const LARGE_SLOTS: usize = 16;
/// A joined packet's size at most.
const LARGE_SLOT: usize = MAX_SUPER;

/// How long the engine waits for a slot before it drops the packet: a thread that frees none
/// for this long is not writing (it never blocks on the non-blocking fd otherwise). After
/// one such wait the engine does not wait again until a slot has come free: a starved thread
/// costs packets, not the engine's timers and control replies.
const STALL: Duration = Duration::from_millis(50);

/// One packet on its way to the tun.
struct Slot {
    buf: Box<[u8]>,
    len: usize,
    /// The packets it carries (a joined packet carries its segments), for the drop count
    /// if the kernel refuses it.
    packets: u64,
}

/// Free slots of one size.
struct Pool {
    free: Receiver<Slot>,
    /// The last wait for one of them ran out: take free slots only, do not wait.
    stalled: AtomicBool,
}

/// What the engine and the thread both see.
#[derive(Default)]
struct Shared {
    /// Packets handed to the thread and not written yet.
    in_flight: AtomicUsize,
    /// Packets in writes the kernel refused, for the drop counters.
    failed: AtomicU64,
}

/// The engine's handle on the writer thread of one tunnel. Dropping it lets the thread write
/// what it holds and waits for it to end (at most [`SLOTS`] writes).
pub(super) struct TunWriteThread {
    /// Filled slots, in the order they are to be written (None only while dropping).
    to_write: Option<SyncSender<Slot>>,
    /// Slots of one packet, written and free again.
    small: Pool,
    /// Large slots, written and free again (a tun that takes joined packets).
    large: Option<Pool>,
    shared: Arc<Shared>,
    /// How long to wait for a slot ([`STALL`]).
    stall: Duration,
    thread: Option<JoinHandle<()>>,
}

impl TunWriteThread {
    /// A writer thread for `tun`, if its packets are written one by one (not for an
    /// offloading tun); it writes through a duplicate of the fd.
    pub(super) fn for_tunnel(tun: &TunDevice) -> io::Result<Option<TunWriteThread>> {
        let large = match tun.framing() {
            Framing::VnetHdr => return Ok(None),
            // The coalescer joins segments into plain packets only on a raw IP tun.
            Framing::RawIp => LARGE_SLOTS,
            Framing::AfHeader => 0,
        };
        TunWriteThread::spawn(tun.try_clone()?, STALL, large).map(Some)
    }

    fn spawn(tun: TunDevice, stall: Duration, large: usize) -> io::Result<TunWriteThread> {
        let (to_write, queued) = mpsc::sync_channel::<Slot>(SLOTS + large);
        let (give_back, small) = pool(SLOTS, MAX_PACKET);
        let (give_back_large, large) = (large > 0).then(|| pool(large, LARGE_SLOT)).unzip();
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("svpn-tun-write".into())
            .spawn(move || {
                write_loop(&tun, &queued, &give_back, give_back_large.as_ref(), &theirs)
            })?;
        Ok(TunWriteThread {
            to_write: Some(to_write),
            small,
            large,
            shared,
            stall,
            thread: Some(thread),
        })
    }

    /// Whether everything handed over has been written: a packet written by the engine
    /// itself now keeps its place in the order.
    pub(super) fn is_idle(&self) -> bool {
        self.shared.in_flight.load(Ordering::Acquire) == 0
    }

    /// Hands `packet` to the thread, waiting for a free slot if all are in flight.
    /// `WouldBlock` if none came free in time (the packet is dropped); `BrokenPipe` if the
    /// thread is gone (the caller writes itself).
    /// `packets`: how many it carries (the segments of a joined packet), for the drop count.
    pub(super) fn hand_over(&self, packet: &[u8], packets: u64) -> io::Result<()> {
        let Some(to_write) = &self.to_write else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        let pool = match &self.large {
            _ if packet.len() <= MAX_PACKET => &self.small,
            Some(large) if packet.len() <= LARGE_SLOT => large,
            _ => return Err(io::ErrorKind::InvalidInput.into()),
        };
        let mut slot = match pool.free.try_recv() {
            Ok(slot) => slot,
            Err(TryRecvError::Empty) if pool.stalled.load(Ordering::Relaxed) => {
                return Err(io::ErrorKind::WouldBlock.into())
            }
            Err(TryRecvError::Empty) => match pool.free.recv_timeout(self.stall) {
                Ok(slot) => slot,
                Err(RecvTimeoutError::Timeout) => {
                    tracing::debug!("the tun writer thread freed no slot in time");
                    pool.stalled.store(true, Ordering::Relaxed);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Err(RecvTimeoutError::Disconnected) => return Err(io::ErrorKind::BrokenPipe.into()),
            },
            Err(TryRecvError::Disconnected) => return Err(io::ErrorKind::BrokenPipe.into()),
        };
        pool.stalled.store(false, Ordering::Relaxed);
        slot.buf[..packet.len()].copy_from_slice(packet);
        slot.len = packet.len();
        slot.packets = packets;
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        // Never waits: the channel holds every slot of both pools.
        to_write.send(slot).map_err(|_| {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            io::Error::from(io::ErrorKind::BrokenPipe)
        })
    }

    /// Packets in writes the kernel refused since the last call.
    pub(super) fn take_failed(&self) -> u64 {
        self.shared.failed.swap(0, Ordering::Relaxed)
    }

    /// Lets the thread write what it holds, waits for it to end, and returns the writes the
    /// kernel refused that were not taken yet.
    pub(super) fn finish(mut self) -> u64 {
        self.stop();
        self.take_failed()
    }

    fn stop(&mut self) {
        // The thread's channel closes: it writes what it holds and ends.
        self.to_write = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("the tun writer thread panicked");
            }
        }
    }
}

impl Drop for TunWriteThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `count` free slots of `size` bytes: the channel that gives them back, and the pool.
fn pool(count: usize, size: usize) -> (SyncSender<Slot>, Pool) {
    let (give_back, free) = mpsc::sync_channel::<Slot>(count);
    for _ in 0..count {
        let slot = Slot {
            buf: vec![0u8; size].into_boxed_slice(),
            len: 0,
            packets: 0,
        };
        // Cannot fail: the receiver is ours and the channel holds `count`.
        let _ = give_back.try_send(slot);
    }
    let pool = Pool {
        free,
        stalled: AtomicBool::new(false),
    };
    (give_back, pool)
}

/// The thread: writes each slot in order and gives it back to its pool, until the engine
/// lets go.
fn write_loop(
    tun: &TunDevice,
    queued: &Receiver<Slot>,
    give_back: &SyncSender<Slot>,
    give_back_large: Option<&SyncSender<Slot>>,
    shared: &Shared,
) {
    while let Ok(slot) = queued.recv() {
        if let Err(e) = tun.write_packet(&slot.buf[..slot.len]) {
            tracing::trace!(error = %e, "tun write failed");
            shared.failed.fetch_add(slot.packets, Ordering::Relaxed);
        }
        shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        let pool = match give_back_large {
            Some(large) if slot.buf.len() > MAX_PACKET => large,
            _ => give_back,
        };
        // The engine may have gone; then the slot goes with the thread.
        let _ = pool.try_send(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Framing;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::net::UnixDatagram;

    /// A datagram socket pair stands in for the tun: one write, one packet, boundaries kept.
    /// Its writes block while the reader is behind (a socket pair holds only a few datagrams,
    /// a tun hundreds), so what the tests count is the hand-over, not the pair's queue.
    fn fake_tun() -> (TunDevice, UnixDatagram) {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let tun = TunDevice::from_owned(OwnedFd::from(ours), Framing::RawIp).unwrap();
        let fd = tun.as_raw_fd();
        // SAFETY: plain fcntl calls on a descriptor the test owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            assert!(libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) >= 0);
        }
        (tun, theirs)
    }

    /// A stall limit no loaded test machine reaches: what these tests count is the hand-over.
    const PATIENT: Duration = Duration::from_secs(10);

    fn packet(n: u16) -> Vec<u8> {
        let mut p = vec![0x45u8; 20 + usize::from(n % 200)];
        p[..2].copy_from_slice(&n.to_be_bytes());
        p
    }

    fn read_all(peer: &UnixDatagram, count: usize) -> Vec<Vec<u8>> {
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        (0..count)
            .map(|_| {
                let n = peer.recv(&mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect()
    }

    /// Waits (bounded) until the thread has written everything handed over.
    fn wait_idle(writer: &TunWriteThread) {
        for _ in 0..1000 {
            if writer.is_idle() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the writer thread never caught up");
    }

    #[test]
    fn packets_written_by_the_engine_and_the_thread_keep_their_order() {
        let (tun, peer) = fake_tun();
        let total = 2000;
        let reader = std::thread::spawn(move || read_all(&peer, total));
        let writer = TunWriteThread::spawn(tun.try_clone().unwrap(), PATIENT, 0).unwrap();
        let mut inline = 0;
        for n in 0..total {
            if n % 100 == 0 {
                // After a burst the thread catches up: the engine writes the next one.
                wait_idle(&writer);
            }
            // The engine's rule: write itself only when nothing is in flight.
            if n % 50 == 0 && writer.is_idle() {
                tun.write_packet(&packet(n as u16)).unwrap();
                inline += 1;
            } else {
                writer.hand_over(&packet(n as u16), 1).unwrap();
            }
        }
        let got = reader.join().unwrap();
        for (n, p) in got.iter().enumerate() {
            assert_eq!(p, &packet(n as u16), "packet {n} out of order");
        }
        // Every hundredth packet at least came right after handed-over ones.
        assert!(inline >= total / 100, "{inline} written inline");
        assert_eq!(writer.take_failed(), 0);
    }

    #[test]
    fn more_packets_than_slots_wait_for_the_thread_instead_of_being_dropped() {
        let (tun, peer) = fake_tun();
        let writer = TunWriteThread::spawn(tun, PATIENT, 0).unwrap();
        let total = SLOTS * 4;
        let reader = std::thread::spawn(move || read_all(&peer, total));
        for n in 0..total {
            writer.hand_over(&packet(n as u16), 1).unwrap();
        }
        let got = reader.join().unwrap();
        assert_eq!(got.len(), total);
        assert!(got.iter().enumerate().all(|(n, p)| p == &packet(n as u16)));
        assert_eq!(writer.take_failed(), 0);
    }

    #[test]
    fn a_thread_that_frees_no_slot_costs_one_wait_then_packets_until_it_writes_again() {
        let (tun, peer) = fake_tun();
        // Nobody reads: the thread's (blocking) write waits once the pair's queue is full.
        let mut writer = TunWriteThread::spawn(tun, Duration::from_millis(20), 0).unwrap();
        // Dropped before the writer, even when an assertion fails: its write then ends.
        let peer = peer;
        let handed = (0..SLOTS * 16)
            .take_while(|&n| writer.hand_over(&packet(n as u16), 1).is_ok())
            .count();
        assert!(
            handed >= SLOTS,
            "{handed} handed over before the wait ran out"
        );
        assert!(writer.small.stalled.load(Ordering::Relaxed));
        // No second wait, however long a wait would be: dropped at once while nothing came
        // free.
        writer.stall = PATIENT;
        let asked = std::time::Instant::now();
        let err = writer.hand_over(&packet(0), 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(asked.elapsed() < PATIENT / 2, "the engine waited again");
        // The tun goes away: the thread's writes fail (counted), its slots come free.
        drop(peer);
        wait_idle(&writer);
        writer.hand_over(&packet(1), 1).unwrap();
        assert!(!writer.small.stalled.load(Ordering::Relaxed));
        let failed = writer.finish();
        assert!(
            (1..=handed as u64 + 1).contains(&failed),
            "{failed} failed writes"
        );
    }

    #[test]
    fn a_stalled_pool_costs_one_wait_even_while_the_other_still_has_slots() {
        let (tun, peer) = fake_tun();
        let mut writer =
            TunWriteThread::spawn(tun, Duration::from_millis(20), LARGE_SLOTS).unwrap();
        let peer = peer;
        let big = vec![7u8; LARGE_SLOT];
        // Nobody reads: the thread blocks, and the large slots run out first.
        let handed = (0..LARGE_SLOTS * 4)
            .take_while(|_| writer.hand_over(&big, 40).is_ok())
            .count();
        assert!(
            handed >= LARGE_SLOTS - 1,
            "{handed} large packets handed over"
        );
        writer.stall = PATIENT;
        // A single packet still finds a free slot of its own...
        writer.hand_over(&packet(1), 1).unwrap();
        // ...and that does not make the next joined packet wait again.
        let asked = std::time::Instant::now();
        let err = writer.hand_over(&big, 40).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(asked.elapsed() < PATIENT / 2, "the engine waited again");
        // The tun goes away: every write fails, counted by the packets each carried.
        drop(peer);
        wait_idle(&writer);
        let failed = writer.finish();
        assert!(failed >= 40 * (handed as u64 - 4), "{failed} packets lost");
        assert_eq!(
            failed % 40,
            1,
            "{failed}: the joined packets count 40 each, the single 1"
        );
    }

    #[test]
    fn refused_writes_are_counted_and_the_thread_ends_with_its_handle() {
        let (tun, peer) = fake_tun();
        drop(peer);
        let writer = TunWriteThread::spawn(tun, PATIENT, 0).unwrap();
        for n in 0..10u16 {
            writer.hand_over(&packet(n), 1).unwrap();
        }
        // Ends only after it wrote (or failed to write) everything it held.
        let shared = Arc::clone(&writer.shared);
        assert_eq!(writer.finish(), 10);
        assert_eq!(shared.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_packet_larger_than_a_slot_is_refused() {
        let (tun, _peer) = fake_tun();
        let writer = TunWriteThread::spawn(tun, PATIENT, 0).unwrap();
        let err = writer.hand_over(&vec![0u8; MAX_PACKET + 1], 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn joined_packets_take_large_slots_and_keep_their_place_among_single_ones() {
        let (tun, peer) = fake_tun();
        // A socket pair holds datagrams of this size only with a buffer to match.
        let size = (LARGE_SLOT * 4) as libc::c_int;
        for fd in [tun.as_raw_fd(), peer.as_raw_fd()] {
            for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
                // SAFETY: setsockopt with a c_int the size it says, on sockets the test owns.
                let rc = unsafe {
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        opt,
                        (&size as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0);
            }
        }
        let writer = TunWriteThread::spawn(tun, PATIENT, LARGE_SLOTS).unwrap();
        let big = |n: u8| vec![n; LARGE_SLOT];
        let total = LARGE_SLOTS * 3;
        let reader = std::thread::spawn(move || {
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = vec![0u8; LARGE_SLOT + 1];
            (0..total * 2)
                .map(|_| {
                    let n = peer.recv(&mut buf).unwrap();
                    buf[..n].to_vec()
                })
                .collect::<Vec<_>>()
        });
        // More large packets than large slots: they wait for each other, not for the small.
        for n in 0..total {
            writer.hand_over(&big(n as u8), 1).unwrap();
            writer.hand_over(&packet(n as u16), 1).unwrap();
        }
        let got = reader.join().unwrap();
        for n in 0..total {
            assert_eq!(got[2 * n], big(n as u8), "large packet {n}");
            assert_eq!(got[2 * n + 1], packet(n as u16), "packet {n}");
        }
        // Larger than any slot: refused.
        let err = writer.hand_over(&vec![0u8; LARGE_SLOT + 1], 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(writer.finish(), 0);
    }

    #[test]
    fn only_a_raw_ip_tun_gets_large_slots() {
        for (framing, large) in [(Framing::RawIp, true), (Framing::AfHeader, false)] {
            let (ours, _theirs) = UnixDatagram::pair().unwrap();
            let tun = TunDevice::from_owned(OwnedFd::from(ours), framing).unwrap();
            let writer = TunWriteThread::for_tunnel(&tun).unwrap().unwrap();
            assert_eq!(writer.large.is_some(), large, "{framing:?}");
        }
    }

    #[test]
    fn an_offloading_tun_gets_no_thread() {
        let (ours, _theirs) = UnixDatagram::pair().unwrap();
        let tun = TunDevice::from_owned(OwnedFd::from(ours), Framing::VnetHdr).unwrap();
        assert!(TunWriteThread::for_tunnel(&tun).unwrap().is_none());
    }
}

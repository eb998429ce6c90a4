//! The engine's side of the tun fd: watching it, draining its frames into the data plane,
//! writing decrypted packets to it, and deciding when a failing fd means the tunnel is gone.
//!
//! A tunnel that fails is detached, never the engine stopped: the platform may tear the
//! interface down under us (Android revokes the VPN, iOS stops the extension's tunnel) while
//! the account, the roster and the links are still wanted; the app hands over a new fd.

use super::tun_thread::TunWriteThread;
use super::udp_io::{UdpIo, UdpSink};
use super::window_clamp::{WindowClamp, CLAMPED_BYTES};
use super::BATCH;
use crate::counters::DropReason;
use crate::dataplane::{TunSink, MAX_PACKET};
use crate::framing::Framing;
use crate::node::Node;
use crate::packet::gro::{Coalescer, FrameSink, Output};
use crate::packet::gso::{self, VNET_HDR_LEN};
use crate::packet::uid_header::UID_HEADER_LEN;
use crate::tun::TunDevice;
use std::io;
use std::time::Instant;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Largest frame an offloading tun hands over (a 64 KB TCP super-packet).
const MAX_FRAME: usize = 65535;

/// Failed reads in a row (over any number of wake-ups) after which a tunnel whose errors
/// looked transient is given up all the same: a fd that is readable and fails forever would
/// otherwise keep the engine busy.
const ERRORS_IN_A_ROW: u32 = 64;

/// Registers a tun fd with the runtime's reactor (inside the runtime). A fd the reactor
/// refuses is closed with the device.
pub(super) fn watch_tun(tun: TunDevice) -> io::Result<AsyncFd<TunDevice>> {
    // SAFETY: TunDevice owns its fd and never closes or replaces it while registered.
    // Readable only: a deleted interface's EPOLLERR comes through all the same (epoll always
    // reports it), as `wait::poll_tun` reads it.
    unsafe { AsyncFd::register_with_interest(tun, Interest::READABLE) }.map_err(Into::into)
}

/// The buffers of the tun reader, allocated once for the engine's life: the largest frame
/// (a TCP super-packet from an offloading Linux tun, else header + packet) with room for the
/// UID header after it, and a segment buffer.
pub(super) struct TunReader {
    frame: Box<[u8]>,
    segment: Box<[u8]>,
    /// Failed reads since the last good one.
    errors: u32,
}

impl TunReader {
    pub(super) fn new() -> TunReader {
        TunReader {
            frame: vec![0u8; VNET_HDR_LEN + MAX_FRAME + UID_HEADER_LEN].into_boxed_slice(),
            segment: vec![0u8; MAX_PACKET + UID_HEADER_LEN].into_boxed_slice(),
            errors: 0,
        }
    }

    /// A new tunnel starts with a clean slate.
    pub(super) fn reset(&mut self) {
        self.errors = 0;
    }

    /// Reads up to a batch of frames into the data plane. Returns the error that ends the
    /// tunnel (end of file, a fd in a bad state, or failures that do not stop); transient
    /// failures are counted as `tun_read` drops and end only this wake-up's batch. `failed`:
    /// the tun reported an error condition, which its read readiness does not include, so the
    /// first read is made regardless, to learn the error. That report stays (`wait::poll_tun`):
    /// a fd that keeps answering it with "nothing to read" counts towards giving up as a
    /// failed read would, so that it cannot keep the engine awake.
    pub(super) fn read_batch(
        &mut self,
        now: Instant,
        tun: &AsyncFd<TunDevice>,
        failed: bool,
        node: &mut Node,
        udp: &UdpIo,
        window: &mut WindowClamp,
    ) -> Option<io::Error> {
        let framing = tun.get_ref().framing();
        let net = &mut UdpSink(udp);
        for read in 0..BATCH {
            if read == 1 {
                // The first packet of a wake-up leaves before the next read: at idle that
                // read only says "nothing more" and would delay the packet (an interactive
                // exchange is one packet per wake-up). Later packets of a burst are gathered
                // for one batched send.
                udp.flush();
            }
            // The read that learns what the reported error is.
            let probe = failed && read == 0;
            let result = if probe {
                tun.get_ref().read_frame(&mut self.frame)
            } else {
                // A read that would block clears the readiness.
                tun.try_io(Interest::READABLE, |fd| fd.read_frame(&mut self.frame))
            };
            let n = match result {
                // A tun fd never reads 0 bytes while the interface exists: it is gone.
                Ok(0) => return Some(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if probe {
                        self.errors += 1;
                        if self.errors >= ERRORS_IN_A_ROW {
                            return Some(e);
                        }
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.errors += 1;
                    if !is_transient(&e) || self.errors >= ERRORS_IN_A_ROW {
                        return Some(e);
                    }
                    tracing::debug!(error = %e, "tun read failed");
                    node.count_drop(DropReason::TunRead);
                    break;
                }
            };
            self.errors = 0;
            if framing == Framing::VnetHdr {
                if n > VNET_HDR_LEN {
                    window.note_read(now, &self.frame[VNET_HDR_LEN..n]);
                }
                offloaded_frame(now, node, &mut self.frame, n, &mut self.segment, net);
                continue;
            }
            match framing.decode(&self.frame[..n]) {
                Ok(offset) if n - offset <= MAX_PACKET => {
                    window.note_read(now, &self.frame[offset..n]);
                    node.handle_tun_packet(now, &mut self.frame[offset..], n - offset, net);
                }
                Ok(_) => node.count_tun_drop(n, DropReason::Oversized),
                Err(reason) => node.count_tun_drop(n, reason),
            }
        }
        None
    }
}

/// Read failures that say nothing about the tunnel itself: the system is short of memory or
/// buffers for a moment (a utun socket), or a single frame was refused.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOBUFS | libc::ENOMEM | libc::EAGAIN | libc::EMSGSIZE | libc::EINVAL)
    )
}

/// One frame of a tun with a `virtio_net_hdr`: a plain packet (its checksum finished if the
/// kernel left it partial) or a TCP super-packet cut into segments.
fn offloaded_frame(
    now: Instant,
    node: &mut Node,
    frame: &mut [u8],
    n: usize,
    segment_buf: &mut [u8],
    net: &mut UdpSink<'_>,
) {
    let Some(hdr) = gso::VnetHdr::parse(&frame[..n]) else {
        return node.count_tun_drop(n, DropReason::Truncated);
    };
    let packet_len = n - VNET_HDR_LEN;
    let result = if hdr.is_gso() {
        gso::segment_tcp(&hdr, &frame[VNET_HDR_LEN..n], segment_buf, |buf, len| {
            node.handle_tun_packet(now, buf, len, net)
        })
        .map(|_| ())
    } else {
        let packet = &mut frame[VNET_HDR_LEN..];
        gso::complete_checksum(&hdr, &mut packet[..packet_len])
            .map(|()| node.handle_tun_packet(now, packet, packet_len, net))
    };
    if let Err(reason) = result {
        node.count_tun_drop(n, reason);
    }
}

/// Where decrypted packets go: the tun, through the TCP coalescer unless it takes address
/// family headers (utun), and through the writer thread when it has one (a tun without
/// offloads). TCP ACKs offer the local senders no more than their share of the tun's ring
/// (`window_clamp`). What the kernel or the thread refuses is counted as `tun_write` drops,
/// per packet (a joined packet's segments all count), when the read's batch is flushed.
pub(super) struct TunWriter<'a> {
    tun: Option<&'a TunDevice>,
    gro: &'a mut Coalescer,
    /// The tunnel's writer thread (a tun without offloads).
    thread: Option<&'a TunWriteThread>,
    /// Whether nothing of this read has been written yet: the first frame is written here
    /// when the thread has nothing in flight (at idle no packet crosses a thread).
    first: bool,
    /// Packets refused so far in this batch.
    lost: u64,
    /// What bounds the windows of the ACKs written.
    window: &'a mut WindowClamp,
}

impl<'a> TunWriter<'a> {
    /// A writer for one read's worth of datagrams.
    pub(super) fn new(
        tun: Option<&'a TunDevice>,
        gro: &'a mut Coalescer,
        thread: Option<&'a TunWriteThread>,
        window: &'a mut WindowClamp,
    ) -> TunWriter<'a> {
        if let Some(tun) = tun {
            gro.set_output(match tun.framing() {
                Framing::VnetHdr => Output::Gso,
                _ => Output::Plain,
            });
        }
        TunWriter {
            tun,
            gro,
            thread,
            first: true,
            lost: 0,
            window,
        }
    }

    fn frames(&mut self, tun: &'a TunDevice) -> (&mut Coalescer, Frames<'_, 'a>) {
        let frames = Frames {
            tun,
            thread: self.thread,
            first: &mut self.first,
            lost: &mut self.lost,
        };
        (self.gro, frames)
    }
}

impl TunSink for TunWriter<'_> {
    fn write_packet(&mut self, packet: &[u8]) -> io::Result<()> {
        let Some(tun) = self.tun else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        // An ACK whose window is lowered is written from a copy (on the stack).
        let mut clamped = [0u8; CLAMPED_BYTES];
        let packet = match self.window.clamp(packet, &mut clamped) {
            Some(len) => &clamped[..len],
            None => packet,
        };
        let (gro, mut out) = self.frames(tun);
        match tun.framing() {
            // A utun takes no packet larger than its MTU that we know of: written as it came.
            Framing::AfHeader => out.write(packet, 1),
            // Frames count what they lose; the coalescer's errors are theirs.
            Framing::VnetHdr | Framing::RawIp => gro.push(packet, &mut out)?,
        }
        Ok(())
    }
}

impl TunWriter<'_> {
    /// Writes what the coalescer holds (at the end of each batch of datagrams) and counts
    /// the packets the kernel or the thread refused.
    pub(super) fn flush(&mut self, node: &mut Node) {
        if let Some(tun) = self.tun {
            let (gro, mut out) = self.frames(tun);
            // Frames count what they lose.
            let _ = gro.flush(&mut out);
        }
        node.count_drops(DropReason::TunWrite, std::mem::take(&mut self.lost));
        node.count_windows_clamped(self.window.take_clamped());
        if let Some(thread) = self.thread {
            node.count_drops(DropReason::TunWrite, thread.take_failed());
        }
    }
}

/// Frames on their way to the tun: handed to its writer thread, or written here (no thread,
/// or the first of a read while the thread has nothing in flight, so the order is kept).
/// A frame refused is counted in `lost` with every packet it carries, not returned.
struct Frames<'w, 'a> {
    tun: &'a TunDevice,
    thread: Option<&'a TunWriteThread>,
    first: &'w mut bool,
    lost: &'w mut u64,
}

impl Frames<'_, '_> {
    fn write(&mut self, packet: &[u8], packets: usize) {
        let first = std::mem::replace(self.first, false);
        let written = match self.thread {
            Some(thread) if !(first && thread.is_idle()) => {
                match thread.hand_over(packet, packets as u64) {
                    // The thread is gone (it cannot be, short of a panic): write here.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                        self.tun.write_packet(packet)
                    }
                    handed => handed,
                }
            }
            _ => self.tun.write_packet(packet),
        };
        self.count(written, packets);
    }

    fn count(&mut self, written: io::Result<()>, packets: usize) {
        if let Err(e) = written {
            tracing::trace!(error = %e, packets, "tun write failed");
            *self.lost += packets as u64;
        }
    }
}

impl FrameSink for Frames<'_, '_> {
    fn write_frame(
        &mut self,
        vnet: &[u8; VNET_HDR_LEN],
        packet: &[u8],
        segments: usize,
    ) -> io::Result<()> {
        match self.tun.framing() {
            // An offloading tun has no thread: its super-packets are written here.
            Framing::VnetHdr => {
                let mut tun = self.tun;
                let written = tun.write_frame(vnet, packet, segments);
                self.count(written, segments);
            }
            _ => self.write(packet, segments),
        }
        Ok(())
    }
}

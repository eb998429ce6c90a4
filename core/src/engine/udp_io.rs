//! The links' UDP socket with the kernel's batching: WireGuard datagrams for one destination
//! are gathered and sent with one `sendmsg` (UDP GSO, where the platform has it), and reads
//! take many datagrams at once (UDP GRO). quinn-udp does the platform work.
//!
//! The socket is watched for readability only. Sends never wait: a datagram the kernel
//! cannot take now is dropped and counted, as a router would. Watching writability too (as
//! `tokio::net::UdpSocket` does) costs a wake-up whenever the kernel frees a sent buffer, which
//! on a phone's Wi-Fi happens later, from the driver's completion interrupt: one more wake-up
//! per burst for nothing.

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Bytes gathered into one send at most (UDP GSO's limit is 64 KB of payload).
const BATCH_BYTES: usize = 65_000;
/// Receive buffer: room for a full GRO batch.
pub(super) const RECV_BYTES: usize = 65_535;

pub(super) struct UdpIo {
    /// The runtime's watch on the socket (readability only), through a duplicate of its fd so
    /// that it can be dropped and made again: while it is gone, datagrams wait in the
    /// socket's buffer and wake nobody (see `Watch::unwatch` below). Declared first: dropped
    /// (deregistered) before the socket closes.
    watch: Option<AsyncFd<OwnedFd>>,
    /// Non-blocking.
    socket: UdpSocket,
    state: UdpSocketState,
    /// Datagrams waiting for `flush`: all to `dst`, all `segment` bytes but the last.
    /// (A mutex only so the engine future is `Send`: one task ever touches it.)
    batch: Mutex<Batch>,
}

struct Batch {
    buf: Box<[u8]>,
    len: usize,
    segment: usize,
    count: usize,
    dst: Option<SocketAddr>,
    /// Sends that failed (full socket buffer, unreachable network), for the drop counters.
    failed: u64,
}

/// The socket as the node's sink: datagrams are queued for the batched send.
pub(super) struct UdpSink<'a>(pub(super) &'a UdpIo);

impl crate::dataplane::NetSink for UdpSink<'_> {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        self.0.queue(dst, datagram);
        Ok(())
    }

    fn send_built_to(
        &mut self,
        dst: SocketAddr,
        expect: usize,
        room: usize,
        build: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Option<io::Result<usize>> {
        Some(Ok(self.0.build(dst, expect, room, build)))
    }
}

/// One datagram of a batch read: where it came from and where it lies in the buffer.
pub(super) struct Received {
    pub from: SocketAddr,
    pub len: usize,
    pub stride: usize,
}

impl UdpIo {
    /// Takes a bound socket (made non-blocking here); needs a tokio runtime.
    pub(super) fn new(socket: UdpSocket) -> io::Result<UdpIo> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        allow_fragmentation(&socket);
        size_buffers(&socket);
        Ok(UdpIo {
            watch: Some(watch(&socket)?),
            socket,
            state,
            batch: Mutex::new(Batch {
                buf: vec![0u8; BATCH_BYTES].into_boxed_slice(),
                len: 0,
                segment: 0,
                count: 0,
                dst: None,
                failed: 0,
            }),
        })
    }

    fn batch(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Ready when datagrams may be waiting; `try_recv` until `WouldBlock` afterwards.
    /// Never, while the socket is not watched.
    pub(super) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.watch {
            // The guard is dropped at once: `try_recv` clears the readiness when the queue is
            // empty.
            Some(watch) => watch.poll_read_ready(cx).map_ok(drop),
            None => Poll::Pending,
        }
    }

    #[cfg(test)]
    pub(super) fn is_watched(&self) -> bool {
        self.watch.is_some()
    }

    /// Sends one datagram now (control traffic: STUN, TURN, ICE), after what is queued.
    /// A failure is left to the protocol's own retransmission.
    pub(super) fn send_now(&self, datagram: &[u8], dst: SocketAddr) {
        self.flush();
        if let Err(e) = self.socket.send_to(datagram, dst) {
            tracing::trace!(error = %e, "UDP control send failed");
        }
    }

    /// Queues a datagram; it leaves with the next `flush` (or earlier, when the batch is
    /// full or the next datagram cannot join it). An empty one is not sent.
    pub(super) fn queue(&self, dst: SocketAddr, datagram: &[u8]) {
        let len = datagram.len();
        self.build(dst, len, len, &mut |room: &mut [u8]| {
            room[..len].copy_from_slice(datagram);
            len
        });
    }

    /// Builds a datagram for `dst` in place at the end of the batch: `build` gets `room`
    /// bytes and returns how many it built (0: none), most likely `expect`. Queued as
    /// `queue`'s are; returns the length queued. One lock per datagram, and no copy of it
    /// before the kernel's.
    pub(super) fn build(
        &self,
        dst: SocketAddr,
        expect: usize,
        room: usize,
        build: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> usize {
        let mut b = self.batch();
        let joins = b.count > 0
            && b.dst == Some(dst)
            && expect <= b.segment
            && b.len % b.segment == 0
            // Asked each time: quinn-udp turns GSO off after a send the kernel refused.
            && b.count < self.state.max_gso_segments().max(1)
            && b.len + room <= BATCH_BYTES;
        if !joins {
            self.send_batch(&mut b);
        }
        if room > b.buf.len() {
            b.failed += 1;
            return 0;
        }
        let mut start = b.len;
        let len = build(&mut b.buf[start..start + room]).min(room);
        if len == 0 {
            return 0;
        }
        if b.count > 0 && len > b.segment {
            // Built longer than the batch's segment (a handshake instead of data): a GSO
            // batch's datagrams are all one size but the last, so the earlier ones leave
            // and it moves to the front of a batch of its own.
            self.send_batch(&mut b);
            b.buf.copy_within(start..start + len, 0);
            start = 0;
        }
        if b.count == 0 {
            b.dst = Some(dst);
            b.segment = len;
        }
        b.len = start + len;
        b.count += 1;
        len
    }

    /// Sends what is queued.
    pub(super) fn flush(&self) {
        self.send_batch(&mut self.batch());
    }

    fn send_batch(&self, b: &mut Batch) {
        let Some(dst) = b.dst.take() else { return };
        let transmit = Transmit {
            destination: dst,
            ecn: None,
            contents: &b.buf[..b.len],
            segment_size: (b.count > 1).then_some(b.segment),
            src_ip: None,
        };
        let sent = self.state.try_send((&self.socket).into(), &transmit);
        if let Err(e) = sent {
            tracing::trace!(error = %e, datagrams = b.count, "UDP send failed");
            b.failed += b.count as u64;
        }
        b.len = 0;
        b.count = 0;
    }

    /// Datagrams whose send failed since the last call.
    pub(super) fn take_failed(&self) -> u64 {
        std::mem::take(&mut self.batch().failed)
    }

    /// Reads what is waiting (possibly many datagrams of `stride` bytes back to back).
    pub(super) fn try_recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let mut meta = [RecvMeta::default()];
        let mut bufs = [IoSliceMut::new(buf)];
        let mut recv = || self.state.recv((&self.socket).into(), &mut bufs, &mut meta);
        match &self.watch {
            // Through the watch, so that `WouldBlock` clears its readiness.
            Some(watch) => watch.try_io(Interest::READABLE, |_| recv())?,
            None => recv()?,
        };
        Ok(Received {
            from: meta[0].addr,
            len: meta[0].len,
            stride: meta[0].stride.max(1),
        })
    }
}

/// The runtime's watch on `socket`: readability only, on a duplicate of its fd.
fn watch(socket: &UdpSocket) -> io::Result<AsyncFd<OwnedFd>> {
    let fd = socket.as_fd().try_clone_to_owned()?;
    // SAFETY: the AsyncFd owns this fd, which stays open while it is registered.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// Socket buffer size asked for, each way. The default (about 200 KB on Linux) holds under
/// 2 ms of a gigabit flow: when this engine is busy for longer (a scheduling gap on a loaded
/// phone, a batch of tun writes), the kernel drops what the friend sent and TCP inside the
/// tunnel takes it as congestion. wireguard-go asks for the same 7 MB.
const SOCKET_BUFFER: libc::c_int = 7 << 20;

/// The smallest size worth asking for when the system refuses larger ones.
const SOCKET_BUFFER_MIN: libc::c_int = 256 << 10;

/// Sizes the socket's buffers: the forced option first (Linux with CAP_NET_ADMIN: the Linux
/// client as root), else the plain one. Linux and Android cap that at `net.core.rmem_max` /
/// `wmem_max`; Apple refuses a size above its `kern.ipc.maxsockbuf` share outright (ENOBUFS),
/// so the size is halved until one is taken. A refusal only costs headroom.
fn size_buffers(socket: &UdpSocket) {
    let set = |option: libc::c_int, bytes: libc::c_int| {
        set_int_option(socket, libc::SOL_SOCKET, option, bytes).is_ok()
    };
    let halving = |option: libc::c_int| {
        let mut bytes = SOCKET_BUFFER;
        while bytes >= SOCKET_BUFFER_MIN {
            if set(option, bytes) {
                return Some(bytes);
            }
            bytes /= 2;
        }
        None
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let (rcv, snd) = (
        set(libc::SO_RCVBUFFORCE, SOCKET_BUFFER)
            .then_some(SOCKET_BUFFER)
            .or_else(|| halving(libc::SO_RCVBUF)),
        set(libc::SO_SNDBUFFORCE, SOCKET_BUFFER)
            .then_some(SOCKET_BUFFER)
            .or_else(|| halving(libc::SO_SNDBUF)),
    );
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let (rcv, snd) = (halving(libc::SO_RCVBUF), halving(libc::SO_SNDBUF));
    tracing::debug!(
        ?rcv,
        ?snd,
        "socket buffers asked for (none: the system's size)"
    );
}

/// quinn-udp forbids IP fragmentation (right for QUIC, which sizes its own packets); a VPN's
/// outer datagrams must still get through a path with a smaller MTU, so allow it again.
fn allow_fragmentation(socket: &UdpSocket) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let rc = set_int_option(
            socket,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        );
        if let Err(error) = rc {
            tracing::debug!(%error, "cannot allow fragmentation");
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = socket;
}

/// Sets an int-valued socket option.
fn set_int_option(
    socket: &UdpSocket,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setting an int option on our own socket, from a live local.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl super::gather::Watch for UdpIo {
    /// Stops watching the socket: what arrives waits in its buffer (7 MB) and wakes nobody
    /// until it is watched again. Sends are unaffected.
    fn unwatch(&mut self) {
        self.watch = None;
    }

    /// Watches the socket again; what waits is reported readable at once.
    fn watch(&mut self) -> io::Result<()> {
        if self.watch.is_none() {
            self.watch = Some(watch(&self.socket)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::gather::Watch;
    use super::*;
    use std::time::Duration;

    /// Waits until `io` is readable, reads all it holds and says how many datagrams it got.
    async fn read_all(io: &UdpIo) -> usize {
        tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| io.poll_readable(cx)),
        )
        .await
        .expect("reported readable")
        .expect("readable");
        let mut buf = vec![0u8; RECV_BYTES];
        let mut got = 0;
        loop {
            match io.try_recv(&mut buf) {
                Ok(r) => got += r.len.div_ceil(r.stride),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return got,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// What arrives while the socket is unwatched waits for it, and is reported at once when
    /// it is watched again (else an engine back from gathering would sleep on datagrams
    /// already there, until another one came).
    #[tokio::test]
    async fn what_arrives_unwatched_is_read_once_watched_again() {
        let mut io = UdpIo::new(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let to = io.local_addr().unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        for round in 0..3u8 {
            io.unwatch();
            assert!(!io.is_watched());
            for k in 0..10u8 {
                peer.send_to(&[round, k, 0, 0], to).unwrap();
            }
            // Sends work unwatched too.
            io.send_now(b"out", peer.local_addr().unwrap());
            io.watch().unwrap();
            assert!(io.is_watched());
            assert_eq!(read_all(&io).await, 10, "round {round}");
            let mut buf = [0u8; 8];
            assert_eq!(peer.recv(&mut buf).unwrap(), 3);
        }
        // Watched, it reads as before.
        peer.send_to(b"more", to).unwrap();
        assert_eq!(read_all(&io).await, 1);
    }

    /// Datagrams built in place join the batch as queued ones do; one built longer than
    /// expected (a handshake where data was expected) leaves in a batch of its own, one built
    /// empty not at all, one shorter ends its batch: each arrives whole and in order.
    #[tokio::test]
    async fn datagrams_built_in_place_arrive_whole_and_in_order() {
        let io = UdpIo::new(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let to = peer.local_addr().unwrap();
        let mut sent = Vec::new();
        for n in 0..24u8 {
            let len = match n {
                7 | 8 => 148,
                12 => 0,
                15 => 60,
                _ => 100,
            };
            let datagram = vec![n; len];
            let built = io.build(to, 100, 148, &mut |room: &mut [u8]| {
                assert_eq!(room.len(), 148);
                room[..len].copy_from_slice(&datagram);
                len
            });
            assert_eq!(built, len);
            if len > 0 {
                sent.push(datagram);
            }
            if n == 3 {
                io.queue(to, &[99; 100]);
                sent.push(vec![99; 100]);
            }
        }
        io.flush();
        let mut buf = [0u8; 256];
        for (k, want) in sent.iter().enumerate() {
            let got = peer.recv(&mut buf).unwrap();
            assert_eq!(&buf[..got], &want[..], "datagram {k}");
        }
        assert_eq!(io.take_failed(), 0);
        // No room that large: nothing built, counted as a failed send.
        assert_eq!(io.build(to, 70_000, 70_000, &mut |_| unreachable!()), 0);
        assert_eq!(io.take_failed(), 1);
    }
}

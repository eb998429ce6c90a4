//! A utun for Linux, for the benchmark's "utun framing" mode: iOS hands the packet tunnel
//! extension a utun socket whose datagrams carry a 4-byte address family before each packet.
//! Linux has no utun, so a `SOCK_SEQPACKET` socket pair stands in for it: the engine gets one end
//! (as `Framing::AfHeader`, exactly what `start_tunnel(fd, AF_HEADER)` gets) and two threads
//! carry packets between the other end and a plain tun (`IFF_NO_PI`), adding the header on
//! the way in and checking and removing it on the way out.
//!
//! The relay's copies cost CPU the real utun does not (its header is added by the kernel), so
//! a figure of this mode overstates the framing's own cost (an upper bound), and the report
//! says so. A sequenced-packet pair keeps each frame whole, as a datagram pair would, and
//! also ends: a read after the engine closed its end returns 0 and a write fails, so the
//! relay threads stop with it.

use socialvpn_core::framing::Framing;
use socialvpn_core::tun::TunDevice;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Darwin's address families, as the engine expects them in the header.
const AF_INET_DARWIN: u32 = 2;
const AF_INET6_DARWIN: u32 = 30;
const HEADER: usize = 4;
/// Largest frame carried (the engine's largest packet plus the header).
const FRAME: usize = 1500 + HEADER;

/// Frames the relay could not carry (not IP, a header that is not one, a failed write).
#[derive(Default)]
struct RelayCounters {
    dropped: AtomicU64,
}

/// Starts relaying between `tun` (a raw-IP Linux tun) and a new socket pair; returns the
/// engine's end. When the engine closes its end, the thread writing to the tun ends at once
/// and the one reading the tun at its next packet (or with the process); each logs what it
/// dropped.
pub fn start(tun: TunDevice) -> io::Result<TunDevice> {
    // The relay's threads block on their reads: a duplicate of the fd, made blocking (the
    // flag belongs to the open file, which nothing else reads any more).
    let tun = tun.as_fd().try_clone_to_owned()?;
    set_blocking(&tun)?;
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair fills two fds on success, which are owned below.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    let (engine_end, relay_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A utun socket queues far more than a socket pair's default; give the pair room too
    // (forced: the plain options are capped at a few hundred KB; the node runs as root).
    for fd in [&engine_end, &relay_end] {
        set_buffer(fd, libc::SO_SNDBUFFORCE, 4 << 20);
        set_buffer(fd, libc::SO_RCVBUFFORCE, 4 << 20);
    }
    let counters = Arc::new(RelayCounters::default());
    let tun = Arc::new(tun);
    let relay_end = Arc::new(relay_end);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (tun, relay, counters, stop) = (
            tun.clone(),
            relay_end.clone(),
            counters.clone(),
            stop.clone(),
        );
        std::thread::Builder::new()
            .name("utun-in".into())
            .spawn(move || tun_to_socket(&tun, &relay, &counters, &stop))?;
    }
    {
        let (counters, stop) = (counters.clone(), stop);
        std::thread::Builder::new()
            .name("utun-out".into())
            .spawn(move || socket_to_tun(&relay_end, &tun, &counters, &stop))?;
    }
    TunDevice::from_owned(engine_end, Framing::AfHeader).map_err(io::Error::other)
}

fn set_blocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_buffer(fd: &OwnedFd, option: libc::c_int, bytes: libc::c_int) {
    // SAFETY: setting an int option on our own socket.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Packets the kernel routes into the tun go to the engine with their header, as utun reads.
fn tun_to_socket(tun: &OwnedFd, socket: &OwnedFd, counters: &RelayCounters, stop: &AtomicBool) {
    let mut buf = [0u8; FRAME];
    while !stop.load(Ordering::Relaxed) {
        let n = match read(tun, &mut buf[HEADER..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let family = match buf[HEADER] >> 4 {
            4 => AF_INET_DARWIN,
            6 => AF_INET6_DARWIN,
            _ => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        buf[..HEADER].copy_from_slice(&family.to_be_bytes());
        // A full socket blocks this thread: back-pressure onto the tun's queue, as utun has.
        match write(socket, &buf[..HEADER + n]) {
            Ok(()) => {}
            // The engine closed its end.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) => break,
            Err(_) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    report("in", counters);
}

fn report(direction: &str, counters: &RelayCounters) {
    let dropped = counters.dropped.load(Ordering::Relaxed);
    tracing::info!(direction, dropped, "utun relay ended");
}

/// What the engine writes leaves through the tun without its header.
fn socket_to_tun(socket: &OwnedFd, tun: &OwnedFd, counters: &RelayCounters, stop: &AtomicBool) {
    let mut buf = [0u8; FRAME];
    while !stop.load(Ordering::Relaxed) {
        let n = match read(socket, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if n <= HEADER || write(tun, &buf[HEADER..n]).is_err() {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    stop.store(true, Ordering::Relaxed);
    report("out", counters);
}

fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reading into a buffer we own, of its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn write(fd: &OwnedFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: writing from a buffer we own, of its length.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

//! The tun device: a non-blocking fd that yields and takes framed IP packets.
//!
//! The platform owns creation (Android `VpnService`, iOS `NEPacketTunnelProvider`) and hands
//! us the fd; on Linux [`linux::create`] opens one by name for the CLI and the tests.

#[cfg(target_os = "linux")]
pub mod linux;

use crate::framing::Framing;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The tunnel MTU the clients configure by default: a 1500-byte path minus the outer IPv4
/// and UDP headers (28), WireGuard's data header and tag (32), the UID header (40) and a
/// TURN ChannelData header (4), rounded down to leave room for tunnelled or PPPoE paths.
pub const DEFAULT_MTU: u16 = 1360;

#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("{0} is not an open file descriptor")]
    BadFd(RawFd),
    #[error("cannot make the tun fd non-blocking: {0}")]
    NonBlocking(io::Error),
    #[error("cannot open the tun device {name}: {source}")]
    Open { name: String, source: io::Error },
    #[error("cannot configure the tun device {name} ({step}): {source}")]
    Configure {
        name: String,
        step: &'static str,
        source: io::Error,
    },
}

impl TunError {
    /// Whether the system refused for lack of privileges (root or CAP_NET_ADMIN needed), as
    /// opposed to any other reason.
    pub fn needs_privileges(&self) -> bool {
        match self {
            TunError::Open { source, .. } | TunError::Configure { source, .. } => {
                source.raw_os_error() == Some(libc::EPERM)
            }
            TunError::BadFd(_) | TunError::NonBlocking(_) => false,
        }
    }
}

/// A tun fd with its framing.
#[derive(Debug)]
pub struct TunDevice {
    fd: OwnedFd,
    framing: Framing,
}

impl TunDevice {
    /// Makes `fd` non-blocking and takes ownership of it. On error it is not taken: the
    /// caller still owns (and closes) it.
    ///
    /// # Safety
    /// `fd` must be an open descriptor that nothing else closes once this returns `Ok`.
    pub unsafe fn from_raw_fd(fd: RawFd, framing: Framing) -> Result<TunDevice, TunError> {
        // SAFETY: fcntl on any integer is safe; it fails with EBADF for a closed descriptor.
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(TunError::BadFd(fd));
        }
        set_nonblocking(fd).map_err(TunError::NonBlocking)?;
        // SAFETY: the caller hands over ownership of an open descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(TunDevice { fd, framing })
    }

    /// Makes `fd` non-blocking and wraps it; on error the fd is closed with `fd`.
    pub fn from_owned(fd: OwnedFd, framing: Framing) -> Result<TunDevice, TunError> {
        set_nonblocking(fd.as_raw_fd()).map_err(TunError::NonBlocking)?;
        Ok(TunDevice { fd, framing })
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// A second handle on the same tunnel (a duplicate of the fd), for a thread of its own;
    /// the interface stays until both are closed.
    pub fn try_clone(&self) -> io::Result<TunDevice> {
        Ok(TunDevice {
            fd: self.fd.try_clone()?,
            framing: self.framing,
        })
    }

    /// Reads one frame into `buf`; `WouldBlock` when none is waiting.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one IP packet, adding the framing header. A full device reports `WouldBlock`
    /// and the packet is dropped by the caller, as a router would: never a busy wait.
    pub fn write_packet(&self, packet: &[u8]) -> io::Result<()> {
        match self.framing {
            Framing::RawIp => {
                // SAFETY: `packet` is valid for its length.
                let n = unsafe {
                    libc::write(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len())
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
            Framing::AfHeader => self.write_with_header(&self.framing.encode(packet), packet),
            // A zeroed virtio_net_hdr: one plain packet, checksums complete.
            Framing::VnetHdr => {
                self.write_with_header(&[0; crate::packet::gso::VNET_HDR_LEN], packet)
            }
        }
    }

    /// One frame: `header` then `packet`, in a single `writev`.
    fn write_with_header(&self, header: &[u8], packet: &[u8]) -> io::Result<()> {
        let iov = [
            libc::iovec {
                iov_base: header.as_ptr() as *mut libc::c_void,
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: packet.as_ptr() as *mut libc::c_void,
                iov_len: packet.len(),
            },
        ];
        // SAFETY: both iovecs point at live buffers of the stated lengths.
        if unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl crate::packet::gro::FrameSink for &TunDevice {
    /// Writes a frame with its own `virtio_net_hdr` on a tun opened with `IFF_VNET_HDR`; on
    /// any other, the packet alone (the coalescer's `Output::Plain`, whose header is zero).
    fn write_frame(
        &mut self,
        vnet: &[u8; crate::packet::gso::VNET_HDR_LEN],
        packet: &[u8],
        _segments: usize,
    ) -> io::Result<()> {
        match self.framing {
            Framing::VnetHdr => self.write_with_header(vnet, packet),
            _ => self.write_packet(packet),
        }
    }
}

impl AsFd for TunDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TunDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socketpair stands in for the platform fd: datagram semantics like a tun.
    fn pair(framing: Framing) -> (TunDevice, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid out-array of two ints.
        let made =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, fds.as_mut_ptr()) };
        assert_eq!(made, 0);
        // SAFETY: both descriptors were just created and are owned here.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        (TunDevice::from_owned(a, framing).unwrap(), b)
    }

    #[test]
    fn af_header_is_added_on_write_and_read_back() {
        let (tun, other) = pair(Framing::AfHeader);
        tun.write_packet(&[0x60, 1, 2, 3]).unwrap();
        let mut buf = [0u8; 16];
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(other.as_raw_fd(), buf.as_mut_ptr().cast(), 16) };
        assert_eq!(&buf[..n as usize], &[0, 0, 0, 30, 0x60, 1, 2, 3]);
    }

    #[test]
    fn empty_read_would_block() {
        let (tun, _other) = pair(Framing::RawIp);
        let mut buf = [0u8; 16];
        assert_eq!(
            tun.read_frame(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn closed_fd_is_rejected() {
        // SAFETY: an fd number far above anything open here.
        let err = unsafe { TunDevice::from_raw_fd(99_999, Framing::RawIp) }.unwrap_err();
        assert!(matches!(err, TunError::BadFd(99_999)));
    }
}

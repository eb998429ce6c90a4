//! Notices changes of this machine's addresses, routes and interfaces (Linux rtnetlink), so
//! the daemon restarts link discovery after a move between networks without being told. The
//! phone apps get the platform's own network callbacks instead (`network_changed`).
//!
//! The messages themselves are not parsed: any change only prompts the engine to compare its
//! host candidates with the interfaces' addresses (which ignores its own tunnel).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A NETLINK_ROUTE socket subscribed to link, address and route changes.
pub struct NetWatch {
    fd: AsyncFd<OwnedFd>,
}

impl NetWatch {
    /// Opens the socket (inside a tokio runtime).
    pub fn new() -> io::Result<NetWatch> {
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just created, owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = (libc::RTMGRP_LINK
            | libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV6_ROUTE) as u32;
        // SAFETY: `addr` is a valid sockaddr_nl of the length given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd moves into the AsyncFd, which neither closes nor replaces it
        // while registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(NetWatch { fd })
    }

    /// Ready when something changed (all pending notifications are consumed); the waker is
    /// kept for the next change otherwise.
    pub fn poll_changed(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let got = self.consume()?;
            guard.clear_ready();
            if got {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Reads every pending notification; whether there was any.
    fn consume(&self) -> io::Result<bool> {
        let mut buf = [0u8; 8192];
        let mut got = false;
        loop {
            // SAFETY: `buf` is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if n > 0 {
                got = true;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(got),
                io::ErrorKind::Interrupted => continue,
                // The kernel dropped notifications (buffer full): something changed.
                _ if e.raw_os_error() == Some(libc::ENOBUFS) => got = true,
                _ => return Err(e),
            }
        }
    }
}

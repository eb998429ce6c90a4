//! Keeping the engine's own sockets out of the VPN.
//!
//! On Android every socket of the app would be routed into its own tunnel unless the app
//! calls `VpnService.protect(fd)` on it first. The engine creates its sockets itself (the
//! UDP socket of the links, the XMPP TCP connection), so the platform hands in a protector
//! that the engine calls with each socket's fd before the socket is used. A refusal is an
//! error, never ignored: a socket routed into the tunnel would loop.

use std::fmt;
use std::os::fd::RawFd;
use std::sync::Arc;

#[derive(Clone)]
pub struct SocketProtector(Arc<dyn Fn(RawFd) -> bool + Send + Sync>);

impl SocketProtector {
    pub fn new(protect: impl Fn(RawFd) -> bool + Send + Sync + 'static) -> SocketProtector {
        SocketProtector(Arc::new(protect))
    }

    /// True when the platform accepted the socket.
    pub fn protect(&self, fd: RawFd) -> bool {
        (self.0)(fd)
    }
}

impl fmt::Debug for SocketProtector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SocketProtector")
    }
}

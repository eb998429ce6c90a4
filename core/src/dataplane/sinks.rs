//! The data plane's two outputs: the transport under the links and this device's tun.

use crate::path::{Path, PathKind};
use crate::uid::Uid;
use std::io;
use std::net::SocketAddr;

/// Where the data plane sends datagrams (the transport under the links).
pub trait NetSink {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) -> io::Result<()>;

    /// Sends along a link's path. A sink without a TURN relay (a link made by hand, a test
    /// wire) has no relayed paths.
    fn send_on(&mut self, path: Path, datagram: &[u8]) -> io::Result<()> {
        match path.kind {
            PathKind::Direct => self.send_to(path.remote, datagram),
            PathKind::Relayed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Builds a datagram for `dst` (a direct path) straight into the sink's own send
    /// buffer, saving the copy `send_to` makes of every encrypted packet: `build` gets `room`
    /// bytes and returns how many of them it built, from the start (0: nothing to send);
    /// `expect` is the length it will most likely build (at most `room`). Returns how many
    /// left (failures to send are the sink's to count, as for `send_to`), or None without
    /// calling `build` when the sink has no such buffer: then the datagram is built
    /// elsewhere and goes to `send_to`.
    fn send_built_to(
        &mut self,
        _dst: SocketAddr,
        _expect: usize,
        _room: usize,
        _build: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Option<io::Result<usize>> {
        None
    }

    /// The public key of a device the link layer is linking with (connecting, up, retrying,
    /// or in its grace period after going offline), if `uid` is one: the data plane makes
    /// that device's link when it is first needed (a packet for it, its handshake) rather
    /// than for every connecting device up front. A sink without a link layer knows none.
    fn connecting_key(&mut self, _uid: &Uid) -> Option<[u8; 32]> {
        None
    }
}

/// Where the data plane writes IP packets for this device. A sink without a device (the VPN
/// is off) answers `NotConnected`, counted as [`DropReason::NoTunnel`].
pub trait TunSink {
    fn write_packet(&mut self, packet: &[u8]) -> io::Result<()>;
}

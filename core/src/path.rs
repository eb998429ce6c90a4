//! The path a link's datagrams take: where they go and how they leave this device.

use std::net::SocketAddr;

/// How datagrams on a path leave this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Straight from our UDP socket, to the peer or to the peer's own TURN relay.
    Direct,
    /// Through our own TURN allocation (wrapped as channel data for the relay).
    Relayed,
}

/// A link's path: the remote address and how we reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    pub remote: SocketAddr,
    pub kind: PathKind,
}

impl Path {
    pub fn direct(remote: SocketAddr) -> Path {
        Path {
            remote,
            kind: PathKind::Direct,
        }
    }

    pub fn relayed(remote: SocketAddr) -> Path {
        Path {
            remote,
            kind: PathKind::Relayed,
        }
    }
}

/// A bare address is a direct path (links made by hand, datagrams read from the socket).
impl From<SocketAddr> for Path {
    fn from(remote: SocketAddr) -> Path {
        Path::direct(remote)
    }
}

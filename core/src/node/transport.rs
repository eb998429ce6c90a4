//! The data plane's transport inside the node: a link's path leaves from the UDP socket, or
//! through our TURN allocation when the path is relayed.

use super::Transmit;
use crate::dataplane::NetSink;
use crate::links::manager::LinkManager;
use crate::path::{Path, PathKind};
use crate::uid::Uid;
use bytes::BytesMut;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

/// Sends through `socket`; relayed paths are wrapped for the relay by the link manager
/// (without an account there is none: such paths cannot exist).
pub(super) struct Transport<'a, S: NetSink> {
    socket: &'a mut S,
    links: Option<&'a mut LinkManager>,
    now: Instant,
}

impl<'a, S: NetSink> Transport<'a, S> {
    pub(super) fn new(
        socket: &'a mut S,
        links: Option<&'a mut LinkManager>,
        now: Instant,
    ) -> Transport<'a, S> {
        Transport { socket, links, now }
    }
}

impl<S: NetSink> NetSink for Transport<'_, S> {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        self.socket.send_to(dst, datagram)
    }

    fn send_on(&mut self, path: Path, datagram: &[u8]) -> io::Result<()> {
        match (path.kind, self.links.as_deref_mut()) {
            (PathKind::Direct, _) => self.socket.send_to(path.remote, datagram),
            (PathKind::Relayed, Some(links)) => {
                if !links.send_relayed(self.now, path.remote, datagram) {
                    return Err(io::ErrorKind::NotConnected.into());
                }
                while let Some((to, data)) = links.poll_transmit() {
                    self.socket.send_to(to, &data)?;
                }
                Ok(())
            }
            (PathKind::Relayed, None) => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn send_built_to(
        &mut self,
        dst: SocketAddr,
        expect: usize,
        room: usize,
        build: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Option<io::Result<usize>> {
        self.socket.send_built_to(dst, expect, room, build)
    }

    fn connecting_key(&mut self, uid: &Uid) -> Option<[u8; 32]> {
        self.links.as_deref()?.device_key(uid)
    }
}

/// A socket stand-in that queues datagrams as the node's transmits: for the few the control
/// side starts (a handshake on a new path), outside the data path.
pub(super) struct QueueSink<'a>(pub(super) &'a mut VecDeque<Transmit>);

impl NetSink for QueueSink<'_> {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        self.0.push_back(Transmit {
            dst,
            payload: BytesMut::from(datagram),
        });
        Ok(())
    }
}

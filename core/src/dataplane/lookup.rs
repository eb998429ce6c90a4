//! Which link a packet or datagram belongs to: by destination device, by WireGuard
//! receiver index, or for a handshake initiation by the initiator's static key; and the
//! link made on first use for a device the link layer is linking with.

use super::{DataPlane, NetSink};
use crate::uid::Uid;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use std::net::SocketAddr;
use std::time::Instant;

impl DataPlane {
    /// The link to `uid`: the one it has, or one made now if the link layer is connecting
    /// to it (packets sent meanwhile wait in its queue for the session; a handshake it sends
    /// before our side's ICE has reported the path is answered at once).
    pub(super) fn link_index(
        &mut self,
        now: Instant,
        uid: &Uid,
        net: &mut impl NetSink,
    ) -> Option<u32> {
        if let Some(&index) = self.by_uid.get(uid) {
            return Some(index);
        }
        let key = net.connecting_key(uid)?;
        if Uid::from_public_key(&key) != *uid || self.book.address_of(uid).is_none() {
            return None;
        }
        self.add_link(now, key, None, None).ok()?;
        self.by_uid.get(uid).copied()
    }

    /// The link a datagram belongs to: by receiver index, or for a handshake initiation by
    /// the initiator's static key (decrypted with our private key). A handshake initiation
    /// passes the shared rate limiter first (a cheap MAC check, and cookies under load) so
    /// that floods cannot make us run a Diffie-Hellman per datagram.
    ///
    /// `Err(Some(n))`: a cookie reply of `n` bytes is waiting in `scratch`.
    pub(super) fn link_for(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        net: &mut impl NetSink,
    ) -> Result<u32, Option<usize>> {
        let receiver_idx = match Tunn::parse_incoming_packet(datagram).map_err(|_| None)? {
            Packet::HandshakeInit(_) => {
                self.rate_limiter.reset_count();
                let init = match self.rate_limiter.verify_packet(
                    Some(from.ip()),
                    datagram,
                    &mut self.scratch,
                ) {
                    Ok(Packet::HandshakeInit(init)) => init,
                    Err(TunnResult::WriteToNetwork(cookie)) => return Err(Some(cookie.len())),
                    _ => return Err(None),
                };
                let half =
                    parse_handshake_anon(self.identity.secret(), self.identity.public_key(), &init)
                        .map_err(|_| None)?;
                let uid = Uid::from_public_key(&half.peer_static_public);
                return self.link_index(now, &uid, net).ok_or(None);
            }
            Packet::HandshakeResponse(p) => p.receiver_idx,
            Packet::PacketCookieReply(p) => p.receiver_idx,
            Packet::PacketData(p) => p.receiver_idx,
        };
        let index = receiver_idx >> 8;
        if self.links.contains_key(&index) {
            Ok(index)
        } else {
            Err(None)
        }
    }
}

//! The sans-IO data plane: packets from the tun go out to friends' links, datagrams from the
//! network come in through them. No sockets, no clock of its own: the I/O shell passes every
//! input with the current `Instant` and gives sinks for the outputs.
//!
//! Outbound: IP packet → route by destination (address book / IPv6 interface id / group) →
//! UID header appended after the packet → WireGuard encapsulation → datagram to the link's
//! endpoint. Inbound: datagram → link (by WireGuard receiver index, or by the initiator's
//! static key for a handshake) → decapsulation → UID header checks → per-user IPv4
//! translation or IPv6 source check → tun.

use crate::addrbook::{AddressBook, AddressBookError};
use crate::counters::LinkTraffic;
use crate::counters::{Counters, DropReason};
use crate::fast_map::FastMap;
use crate::identity::DeviceIdentity;
use crate::idle_grid::IdleGrid;
use crate::liveness::PathAlarm;
use crate::packet::ip::{self, IpAddrs};
use crate::packet::translate::rewrite_ipv4;
use crate::packet::uid_header::{self, UID_HEADER_LEN};
use crate::path::{Path, PathKind};
use crate::subnet::{ula_address, ula_interface_id};
use crate::uid::Uid;
use crate::wireguard::Link;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::TunnResult;
use boringtun::x25519::PublicKey;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

mod link_io;
mod lookup;
mod sinks;

use link_io::{encapsulate, send, tick, tick_if_quiet};
pub use sinks::{NetSink, TunSink};

/// WireGuard data message overhead: 16-byte header + 16-byte tag.
pub use crate::wireguard::WG_DATA_OVERHEAD;
use crate::wireguard::{WG_COOKIE_REPLY, WG_DATA, WG_HANDSHAKE_RESPONSE};
/// Handshake messages per second, across all links, before cookies are demanded. Each
/// initiation passes the limiter twice (ours, then boringtun's own check in `decapsulate`).
const HANDSHAKE_RATE_LIMIT: u64 = 200;
/// Smallest buffer boringtun accepts for handshake messages.
const WG_MIN_BUFFER: usize = 148;

/// Largest IP packet the engine carries. The tun MTU must not exceed it.
pub const MAX_PACKET: usize = 1500;
/// Buffer size for one outbound packet: IP packet + room for the UID header.
pub const TUN_BUFFER: usize = MAX_PACKET + UID_HEADER_LEN;
/// Buffer size for one datagram on the network.
pub const NET_BUFFER: usize = TUN_BUFFER + WG_DATA_OVERHEAD;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Addresses(#[from] AddressBookError),
    #[error("that key is this device's own key")]
    OwnKey,
    #[error("too many links")]
    TooManyLinks,
    #[error("the device has no overlay address")]
    NoAddress,
    #[error("not a WireGuard public key (64 hex digits)")]
    BadKey,
}

/// A link as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LinkStatus {
    pub uid: Uid,
    pub overlay_address: Ipv4Addr,
    pub endpoint: Option<SocketAddr>,
    /// How the path leaves this device (none while the path is being found).
    pub path: Option<PathKind>,
    pub session: bool,
    pub counters: LinkTraffic,
}

/// Largest WireGuard local index (boringtun shifts it left by 8 into 32 bits).
const MAX_INDEX: u32 = (1 << 24) - 1;

pub struct DataPlane {
    identity: DeviceIdentity,
    book: AddressBook,
    /// Boxed: a link is ~11 KB (boringtun's sessions), and a table of them inline would move
    /// every link on each resize and keep the empty slots' memory too.
    links: FastMap<u32, Box<Link>>,
    by_uid: FastMap<Uid, u32>,
    by_interface_id: FastMap<[u8; 8], Uid>,
    next_index: u32,
    counters: Counters,
    /// Output buffer for WireGuard, reused for every packet.
    scratch: Box<[u8]>,
    /// Shared by all links: bounds handshake work per second across the whole engine.
    rate_limiter: Arc<RateLimiter>,
    /// Devices that packets were addressed to while they had no link (capacity reserved up
    /// front: recording one never allocates).
    demands: Vec<Uid>,
    /// Links whose path went quiet while we sent (the link layer checks or replaces them).
    alarms: Vec<(Uid, PathAlarm)>,
    /// Where the links' idle timers go (the node's shared tick); none: each at its time.
    grid: Option<IdleGrid>,
}

/// Distinct link demands kept until the engine collects them.
const MAX_DEMANDS: usize = 16;

impl DataPlane {
    pub fn new(identity: DeviceIdentity, book: AddressBook) -> DataPlane {
        let identity_public = &identity.public_key().clone();
        DataPlane {
            identity,
            book,
            links: FastMap::default(),
            by_uid: FastMap::default(),
            by_interface_id: FastMap::default(),
            next_index: 1,
            counters: Counters::default(),
            scratch: vec![0u8; NET_BUFFER.max(WG_MIN_BUFFER)].into_boxed_slice(),
            rate_limiter: Arc::new(RateLimiter::new(identity_public, HANDSHAKE_RATE_LIMIT)),
            demands: Vec::with_capacity(MAX_DEMANDS),
            alarms: Vec::new(),
            grid: None,
        }
    }

    /// Puts the links' idle timers on the node's shared tick.
    pub fn set_idle_grid(&mut self, grid: IdleGrid) {
        self.grid = Some(grid);
    }

    pub fn uid(&self) -> Uid {
        self.identity.uid()
    }

    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    pub fn address_book(&self) -> &AddressBook {
        &self.book
    }

    pub fn address_book_mut(&mut self) -> &mut AddressBook {
        &mut self.book
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Counts a frame read from the tun that the shell already rejected (framing, size).
    pub fn count_tun_drop(&mut self, len: usize, reason: DropReason) {
        self.counters.tun_rx.add(len);
        self.count_drop(reason);
    }

    pub fn count_drop(&mut self, reason: DropReason) {
        self.count_drops(reason, 1);
    }

    /// `n` TCP ACKs whose window the shell lowered on their way to the tun.
    pub fn count_windows_clamped(&mut self, n: u64) {
        self.counters.windows_clamped += n;
    }

    /// `n` losses of one kind at once (a batch the shell could not send or write).
    pub fn count_drops(&mut self, reason: DropReason, n: u64) {
        if n > 0 {
            tracing::trace!(?reason, n, "drop");
            self.counters.drops.add_many(reason, n);
        }
    }

    /// Adds (or updates the endpoint of) the link to the device with `public_key` and gives
    /// the device an overlay address if it has none.
    pub fn add_peer(
        &mut self,
        now: Instant,
        public_key: [u8; 32],
        endpoint: Option<SocketAddr>,
        keepalive_secs: Option<u16>,
    ) -> Result<Uid, PeerError> {
        let uid = Uid::from_public_key(&public_key);
        if uid == self.identity.uid() {
            return Err(PeerError::OwnKey);
        }
        if !self.by_uid.contains_key(&uid) {
            self.book.assign(uid)?;
        }
        self.add_link(now, public_key, endpoint.map(Path::direct), keepalive_secs)
    }

    /// A link to a device that already has its address (the social layer gives addresses,
    /// within each account's share): never one outside the address book.
    pub fn link_device(
        &mut self,
        now: Instant,
        public_key: [u8; 32],
        path: Option<Path>,
    ) -> Result<Uid, PeerError> {
        let uid = Uid::from_public_key(&public_key);
        if self.book.address_of(&uid).is_none() {
            return Err(PeerError::NoAddress);
        }
        self.add_link(now, public_key, path, None)
    }

    fn add_link(
        &mut self,
        now: Instant,
        public_key: [u8; 32],
        endpoint: Option<Path>,
        keepalive_secs: Option<u16>,
    ) -> Result<Uid, PeerError> {
        let uid = Uid::from_public_key(&public_key);
        if uid == self.identity.uid() {
            return Err(PeerError::OwnKey);
        }
        if let Some(link) = self.by_uid.get(&uid).and_then(|i| self.links.get_mut(i)) {
            if endpoint.is_some() {
                link.endpoint = endpoint;
            }
            return Ok(uid);
        }
        let index = self.allocate_index()?;
        let link = Link::new(
            self.identity.secret().clone(),
            PublicKey::from(public_key),
            index,
            endpoint,
            keepalive_secs,
            Arc::clone(&self.rate_limiter),
            now,
        );
        tracing::debug!(peer = %uid, ?endpoint, "link added");
        self.links.insert(index, Box::new(link));
        self.by_uid.insert(uid, index);
        self.by_interface_id.insert(uid.interface_id(), uid);
        Ok(uid)
    }

    /// A device that packets were sent to while it had no link.
    pub fn take_demand(&mut self) -> Option<Uid> {
        self.demands.pop()
    }

    /// A link whose path went quiet while we sent data (see [`crate::liveness`]).
    pub fn take_path_alarm(&mut self) -> Option<(Uid, PathAlarm)> {
        self.alarms.pop()
    }

    /// The link layer confirmed the path to `uid` (the peer answered a check), or replaced
    /// it: its silence so far does not count.
    pub fn path_confirmed(&mut self, uid: &Uid) {
        if let Some(link) = self.by_uid.get(uid).and_then(|i| self.links.get_mut(i)) {
            link.path.heard();
        }
    }

    pub fn has_link(&self, uid: &Uid) -> bool {
        self.by_uid.contains_key(uid)
    }

    /// The devices with a link.
    pub fn linked(&self) -> impl Iterator<Item = &Uid> {
        self.by_uid.keys()
    }

    /// Whether the link to `uid` has a live WireGuard session.
    pub fn has_session(&self, uid: &Uid) -> bool {
        self.by_uid
            .get(uid)
            .and_then(|i| self.links.get(i))
            .is_some_and(|l| l.has_session())
    }

    /// When authentic traffic last crossed the link to `uid`.
    pub fn last_activity(&self, uid: &Uid) -> Option<Instant> {
        let index = self.by_uid.get(uid)?;
        self.links.get(index).map(|l| l.last_activity())
    }

    /// Starts a WireGuard handshake with `uid` now (a path was just found), so the first
    /// packet does not wait for it.
    pub fn initiate(&mut self, now: Instant, uid: &Uid, net: &mut impl NetSink) {
        let Some(link) = self.by_uid.get(uid).and_then(|i| self.links.get_mut(i)) else {
            return;
        };
        let Some(endpoint) = link.endpoint else {
            return;
        };
        // boringtun dates the handshake by its last tick: after a quiet spell it would find the
        // new one begun long ago, past its 90 s of retries, and drop it at the next tick.
        tick_if_quiet(link, now, &mut self.scratch, &mut self.counters, net);
        if link.has_session() {
            return;
        }
        // Forced: a handshake still in progress went to the old path (or nowhere, before
        // there was one); waiting for boringtun's own retry would cost up to 5 s.
        if let TunnResult::WriteToNetwork(init) = link
            .tunn
            .format_handshake_initiation(&mut self.scratch, true)
        {
            link.mark_active(now);
            link.note_sent(now, init);
            send(&mut self.counters, net, endpoint, init);
        }
    }

    /// Removes the link to `uid`; the device keeps its overlay address.
    pub fn remove_peer(&mut self, uid: &Uid) -> bool {
        let Some(index) = self.by_uid.remove(uid) else {
            return false;
        };
        self.links.remove(&index);
        self.by_interface_id.remove(&uid.interface_id());
        true
    }

    fn allocate_index(&mut self) -> Result<u32, PeerError> {
        // Walk forward so a removed link's index is not reused at once (late datagrams for
        // the old session then find nothing instead of the wrong peer).
        for _ in 0..MAX_INDEX {
            let candidate = self.next_index;
            self.next_index = if candidate >= MAX_INDEX {
                1
            } else {
                candidate + 1
            };
            if !self.links.contains_key(&candidate) {
                return Ok(candidate);
            }
        }
        Err(PeerError::TooManyLinks)
    }

    pub fn links(&self) -> Vec<LinkStatus> {
        let mut out: Vec<_> = self
            .links
            .values()
            .map(|l| LinkStatus {
                uid: l.uid,
                overlay_address: self
                    .book
                    .address_of(&l.uid)
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
                endpoint: l.endpoint(),
                path: l.path().map(|p| p.kind),
                session: l.has_session(),
                counters: l.counters,
            })
            .collect();
        out.sort_by_key(|s| s.uid);
        out
    }

    /// Whether any link carried traffic lately or waits for a handshake.
    pub fn is_busy(&self, now: Instant) -> bool {
        self.links.values().any(|l| l.is_busy(now))
    }

    /// The earliest instant any link needs a timer tick.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let grid = self.grid.as_ref();
        self.links
            .values()
            .filter_map(|l| l.next_deadline(grid))
            .min()
    }

    /// Ticks every link whose deadline has come, and looks at its path.
    pub fn handle_timeout(&mut self, now: Instant, net: &mut impl NetSink) {
        let grid = self.grid.as_ref();
        for link in self.links.values_mut() {
            if link.next_deadline(grid).is_some_and(|d| d <= now) {
                tick(link, now, &mut self.scratch, &mut self.counters, net);
                if let Some(alarm) = link.path.check(now) {
                    self.alarms.retain(|(uid, _)| *uid != link.uid);
                    self.alarms.push((link.uid, alarm));
                }
            }
        }
    }

    /// Handles one IP packet read from the tun.
    ///
    /// `buf[..len]` holds the packet; `buf` must have at least `UID_HEADER_LEN` bytes of
    /// room after it, where the UID header is written (no copy of the packet is made).
    pub fn handle_tun_packet(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
        net: &mut impl NetSink,
    ) {
        self.counters.tun_rx.add(len);
        if len > MAX_PACKET || buf.len() < len + UID_HEADER_LEN {
            return self.count_drop(DropReason::Oversized);
        }
        let info = match ip::parse(&buf[..len]) {
            Ok(info) => info,
            Err(reason) => return self.count_drop(reason),
        };
        let len = info.len;
        if ip::is_link_control(&buf[..len]) {
            // Router solicitations, MLD and IGMP reports: meaningless on the overlay (it has no
            // routers and carries every group anyway), and forwarding them would keep every
            // link awake.
            return self.count_drop(DropReason::LinkControl);
        }
        match self.route(&info.addrs) {
            Ok(Some(dst)) => {
                let Some(index) = self.link_index(now, &dst, net) else {
                    // A friend's device with an address but no link: the link layer may
                    // want to set one up (on-demand linking).
                    if !self.demands.contains(&dst) && self.demands.len() < MAX_DEMANDS {
                        self.demands.push(dst);
                    }
                    return self.count_drop(DropReason::NoLink);
                };
                uid_header::write(&mut buf[len..], &self.identity.uid(), &dst);
                let payload = &buf[..len + UID_HEADER_LEN];
                let result = match self.links.get_mut(&index) {
                    Some(link) => encapsulate(
                        link,
                        now,
                        payload,
                        &mut self.scratch,
                        &mut self.counters,
                        net,
                    ),
                    None => Err(DropReason::NoLink),
                };
                if let Err(reason) = result {
                    self.count_drop(reason);
                }
            }
            Ok(None) => {
                uid_header::write(&mut buf[len..], &self.identity.uid(), &Uid::BROADCAST);
                let payload = &buf[..len + UID_HEADER_LEN];
                for link in self.links.values_mut().filter(|l| l.endpoint.is_some()) {
                    if let Err(reason) = encapsulate(
                        link,
                        now,
                        payload,
                        &mut self.scratch,
                        &mut self.counters,
                        net,
                    ) {
                        self.counters.drops.add(reason);
                    }
                }
            }
            Err(reason) => self.count_drop(reason),
        }
    }

    /// Destination → `Some(uid)` for one device, `None` for every device.
    fn route(&self, addrs: &IpAddrs) -> Result<Option<Uid>, DropReason> {
        match *addrs {
            IpAddrs::V4 { dst, .. } => {
                let subnet = self.book.subnet();
                if ip::is_ipv4_group(dst) || dst == subnet.broadcast() {
                    Ok(None)
                } else if subnet.contains(dst) {
                    self.book
                        .device_at(dst)
                        .map(Some)
                        .ok_or(DropReason::UnknownDestination)
                } else {
                    Err(DropReason::NoRoute)
                }
            }
            IpAddrs::V6 { dst, .. } => {
                if dst.is_multicast() {
                    Ok(None)
                } else if let Some(iid) = ula_interface_id(&dst) {
                    self.by_interface_id
                        .get(&iid)
                        .copied()
                        .map(Some)
                        .ok_or(DropReason::UnknownDestination)
                } else {
                    Err(DropReason::NoRoute)
                }
            }
        }
    }

    /// Handles one datagram received from `from`.
    /// `from` is the path it came by: a bare address for the UDP socket, a relayed path for
    /// data our TURN relay passed on (the link answers the way it was reached).
    pub fn handle_net_datagram(
        &mut self,
        now: Instant,
        from: impl Into<Path>,
        datagram: &[u8],
        net: &mut impl NetSink,
        tun: &mut impl TunSink,
    ) {
        let from: Path = from.into();
        self.counters.net_rx.add(datagram.len());
        if datagram.len() > NET_BUFFER {
            // Larger than anything a friend sends; boringtun would also refuse to decrypt it
            // into our buffer (by panicking).
            return self.count_drop(DropReason::Oversized);
        }
        let links_before = self.links.len();
        let index = match self.link_for(now, from.remote, datagram, net) {
            Ok(index) => index,
            Err(Some(cookie_len)) => {
                // Under handshake load: answer with a cookie, nothing else.
                return send(&mut self.counters, net, from, &self.scratch[..cookie_len]);
            }
            Err(None) => return self.count_drop(DropReason::UnknownPeer),
        };
        // Made for this handshake initiation (its device is connecting): kept only if the
        // initiation proves authentic, or anyone who knows our public key and a connecting
        // device's could have us hold WireGuard state for it by claiming its key.
        let made_for_it = self.links.len() > links_before;
        let Some(link) = self.links.get_mut(&index) else {
            return self.count_drop(DropReason::UnknownPeer);
        };
        let peer = link.uid;
        // Let boringtun see time pass before it judges the datagram, but count the link as
        // active only once the datagram proves authentic.
        tick_if_quiet(link, now, &mut self.scratch, &mut self.counters, net);
        let result = link
            .tunn
            .decapsulate(Some(from.remote.ip()), datagram, &mut self.scratch);
        match result {
            TunnResult::WriteToNetwork(reply) if reply.first() == Some(&WG_COOKIE_REPLY) => {
                // A cookie reply proves nothing about the sender: answer, but neither adopt
                // its address nor release queued packets to it.
                send(&mut self.counters, net, from, reply);
                if made_for_it {
                    self.remove_peer(&peer);
                }
            }
            TunnResult::WriteToNetwork(reply) => {
                // We answered an authentic handshake initiation (with a response) or response
                // (with a keepalive): the sender's address is this peer's endpoint now.
                link.note_heard(now, false);
                link.endpoint = Some(from);
                link.note_sent(now, reply);
                let answered_initiation = reply.first() == Some(&WG_HANDSHAKE_RESPONSE);
                send(&mut self.counters, net, from, reply);
                // Having answered an initiation we hold a session the peer has yet to
                // confirm: flushing now would have boringtun start a handshake of its own for
                // the queued packets, dropping the one we had in flight. When both sides hold
                // packets and their initiations cross, each answer then meets a forgotten
                // handshake, forever. The peer's keepalive (or data) confirms ours and
                // releases the queue.
                if !answered_initiation {
                    self.flush_queued(now, index, net);
                }
            }
            TunnResult::WriteToTunnelV4(packet, _) | TunnResult::WriteToTunnelV6(packet, _) => {
                let ip_len = packet.len();
                // The plaintext starts at the buffer's start and is the datagram minus the
                // WireGuard overhead; the UID header follows the IP packet inside it.
                let plaintext_len = datagram.len().saturating_sub(WG_DATA_OVERHEAD);
                let starts_at_zero = std::ptr::eq(packet.as_ptr(), self.scratch.as_ptr());
                link.note_heard(now, true);
                link.endpoint = Some(from);
                if !starts_at_zero || ip_len + UID_HEADER_LEN > plaintext_len {
                    return self.count_drop(DropReason::MissingUidHeader);
                }
                if self.deliver(peer, ip_len, tun) {
                    if let Some(link) = self.links.get_mut(&index) {
                        link.counters.rx.add(ip_len);
                    }
                }
            }
            TunnResult::Done => {
                // An authentic keepalive (a roaming peer may send only those), or a cookie
                // that lets our handshake retry.
                if datagram.first() == Some(&WG_DATA) {
                    link.note_heard(now, false);
                    link.endpoint = Some(from);
                }
                self.flush_queued(now, index, net);
            }
            TunnResult::Err(e) => {
                tracing::trace!(error = ?e, "decapsulate rejected a datagram");
                self.count_drop(DropReason::WireGuardRejected);
                if made_for_it {
                    self.remove_peer(&peer);
                }
            }
        }
    }

    /// Sends the packets boringtun queued while a handshake was pending.
    fn flush_queued(&mut self, now: Instant, index: u32, net: &mut impl NetSink) {
        let Some(link) = self.links.get_mut(&index) else {
            return;
        };
        let Some(endpoint) = link.endpoint else {
            return;
        };
        while let TunnResult::WriteToNetwork(queued) =
            link.tunn.decapsulate(None, &[], &mut self.scratch)
        {
            link.note_sent(now, queued);
            send(&mut self.counters, net, endpoint, queued);
        }
    }

    /// Checks the UID header of the decrypted packet in `scratch[..ip_len]` and writes it to
    /// the tun, translated.
    /// Returns whether the packet was written.
    fn deliver(&mut self, peer: Uid, ip_len: usize, tun: &mut impl TunSink) -> bool {
        match self.check_and_translate(peer, ip_len) {
            Err(reason) => {
                self.count_drop(reason);
                false
            }
            Ok(()) => match tun.write_packet(&self.scratch[..ip_len]) {
                Ok(()) => {
                    self.counters.tun_tx.add(ip_len);
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    self.counters.drops.add(DropReason::NoTunnel);
                    false
                }
                Err(e) => {
                    tracing::trace!(error = %e, "tun write failed");
                    self.counters.drops.add(DropReason::TunWrite);
                    false
                }
            },
        }
    }

    fn check_and_translate(&mut self, peer: Uid, ip_len: usize) -> Result<(), DropReason> {
        let (src_uid, dst_uid) =
            uid_header::read(&self.scratch[ip_len..]).ok_or(DropReason::MissingUidHeader)?;
        if src_uid != peer {
            return Err(DropReason::SourceUidMismatch);
        }
        let own = self.identity.uid();
        if dst_uid != own && dst_uid != Uid::BROADCAST {
            return Err(DropReason::DestinationUidMismatch);
        }
        let packet = &mut self.scratch[..ip_len];
        let info = ip::parse(packet)?;
        if info.len != ip_len {
            return Err(DropReason::BadTotalLength);
        }
        match info.addrs {
            IpAddrs::V4 { dst, .. } => {
                let src = self.book.address_of(&peer).ok_or(DropReason::UnknownPeer)?;
                let new_dst = if ip::is_ipv4_group(dst) {
                    dst
                } else if dst_uid == Uid::BROADCAST {
                    self.book.subnet().broadcast()
                } else {
                    self.book.own_address()
                };
                rewrite_ipv4(packet, src, new_dst);
            }
            IpAddrs::V6 { src, dst } => {
                if src != ula_address(&peer) || !(dst == ula_address(&own) || dst.is_multicast()) {
                    return Err(DropReason::AddressMismatch);
                }
            }
        }
        Ok(())
    }
}

//! The link manager: for every device the policy wants linked, run ICE over the signalling
//! channel until a path is selected, keep it up, retry with back-off when it fails, and close
//! it when the device is no longer wanted. Sans-IO: inputs carry `Instant`s, outputs are
//! polled.
//!
//! Roles: the device with the smaller UID controls ICE and sends offers; the other answers,
//! and asks for a fresh offer (`restart`) when it wants a link and has none (or roamed).
//! Offers are resent until answered (IPOP never retried lost signalling). Each ICE session has
//! a random id: a duplicate of the current offer gets the same answer again, an offer or
//! answer for a session seen before is stale and ignored.

use super::ice::SelectedPath;
use super::peer::{Ctx, Outbox, Peer};
pub use super::policy::LinkPolicy;
use super::servers::{Gatherer, IceServers};
pub use crate::api::LinkPhase;
pub use crate::counters::LinkCounters;
use crate::idle_grid::IdleGrid;
use crate::liveness::PathAlarm;
use crate::social::payload::{DeviceInfo, Signal, SignalKind};
use crate::social::state::WantedDevice;
use crate::uid::Uid;
use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use xmpp_parsers::jid::FullJid;

/// Resend an unanswered offer this often…
pub const OFFER_RETRY: Duration = Duration::from_secs(2);
/// …this many times before backing off.
pub const OFFER_TRIES: u32 = 5;
/// First and longest back-off after a failed attempt.
pub const BACKOFF_START: Duration = Duration::from_secs(2);
pub const BACKOFF_MAX: Duration = Duration::from_secs(120);
/// A device that went offline keeps its link this long (presence flaps; traffic may go on).
pub const OFFLINE_GRACE: Duration = Duration::from_secs(20);
pub use super::sessions::SESSIONS_PER_MINUTE;

/// What the engine must do with the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// Traffic to this device goes to `path.remote` (through the relay if `path.relayed`).
    Up {
        uid: Uid,
        jid: FullJid,
        public_key: [u8; 32],
        path: SelectedPath,
    },
    /// The path stopped working; ICE looks for a new one. The WireGuard session stays.
    Down { uid: Uid, jid: FullJid },
    /// The link is closed for good (no longer wanted, or closed by the peer).
    Closed {
        uid: Uid,
        jid: FullJid,
        by_peer: bool,
    },
    /// A path that looked dead answered a check: its silence so far does not count.
    PathConfirmed { uid: Uid },
}

pub struct LinkManager {
    own: DeviceInfo,
    policy: LinkPolicy,
    /// Devices the policy allows (all wanted ones); with on-demand linking, only those a
    /// packet asked for get a link.
    eligible: HashMap<Uid, WantedDevice>,
    /// Next check for idle on-demand links.
    trim_at: Option<Instant>,
    gatherer: Gatherer,
    /// The idle timers' shared tick (from the manager's start).
    grid: IdleGrid,
    /// Each device's link.
    /// Boxed: a link in progress holds its ICE agent (~1.7 KB inline), and most of a large
    /// roster's slots are never used.
    pub(super) peers: HashMap<Uid, Box<Peer>>,
    /// Signals, events and transmits the links produced, and their counters.
    out: Outbox,
    /// Datagrams that arrived through the relay and are not STUN: for the data plane.
    relayed_data: VecDeque<(SocketAddr, BytesMut)>,
    /// Session ids; seeded from the system unless a test or simulation fixes the seed.
    rng: StdRng,
}

/// The shared parts for the links, borrowed field by field (the peers stay free).
macro_rules! cx {
    ($self:ident, $now:expr) => {
        Ctx {
            now: $now,
            own: $self.own,
            gatherer: &mut $self.gatherer,
            grid: $self.grid,
            rng: &mut $self.rng,
            out: &mut $self.out,
        }
    };
}

impl LinkManager {
    pub fn new(
        now: Instant,
        own: DeviceInfo,
        policy: LinkPolicy,
        servers: IceServers,
        host: Vec<SocketAddr>,
    ) -> LinkManager {
        LinkManager {
            own,
            policy,
            eligible: HashMap::new(),
            trim_at: None,
            gatherer: Gatherer::start(now, servers, host),
            grid: IdleGrid::new(now),
            peers: HashMap::new(),
            out: Outbox::default(),
            relayed_data: VecDeque::new(),
            rng: StdRng::from_entropy(),
        }
    }

    /// The same manager with session ids drawn from `seed` (deterministic runs).
    pub fn with_seed(mut self, seed: u64) -> LinkManager {
        self.rng = StdRng::seed_from_u64(seed);
        self
    }

    /// Puts the links' keepalives on the node's shared tick (else one from this manager's
    /// start).
    pub fn with_idle_grid(mut self, grid: IdleGrid) -> LinkManager {
        self.grid = grid;
        self.gatherer.set_idle_grid(grid);
        self
    }

    pub fn counters(&self) -> LinkCounters {
        LinkCounters {
            relay_reallocations: self.gatherer.reallocations,
            permits_refused: self.gatherer.permits.refused,
            permit_renewals: self.gatherer.permits.renewals,
            ..self.out.counters
        }
    }

    /// STUN/TURN servers the XMPP server offers (XEP-0215); configured ones take precedence.
    pub fn use_offered_servers(&mut self, now: Instant, offered: IceServers) {
        self.gatherer.use_offered(now, offered);
    }

    pub fn local_candidates(&self) -> &super::servers::LocalCandidates {
        self.gatherer.candidates()
    }

    /// The phase of the link to `uid`, if there is one.
    pub fn phase(&self, now: Instant, uid: &Uid) -> Option<LinkPhase> {
        self.peers.get(uid).map(|p| p.view(now))
    }

    /// The devices the policy wants now. New ones start linking (proactive policy, up to the
    /// cap); ones that left stay for a grace period (they may only have flapped).
    pub fn set_wanted(&mut self, now: Instant, wanted: &[WantedDevice]) {
        self.eligible = wanted.iter().map(|w| (w.info.uid, w.clone())).collect();
        for peer in self.peers.values_mut() {
            peer.wanted = false;
        }
        let peers = &self.peers;
        let admitted = self.policy.admit(wanted, |uid| peers.contains_key(uid));
        for w in admitted {
            let peer = self
                .peers
                .entry(w.info.uid)
                .or_insert_with(|| Box::new(Peer::new(now, w, self.own.uid < w.info.uid)));
            peer.wanted = true;
            peer.close_at = None;
            // A device proven to be one account's stays that account's.
            if !peer.proven || peer.jid.to_bare() == w.jid.to_bare() {
                peer.jid = w.jid.clone();
            }
        }
        for peer in self.peers.values_mut() {
            if !peer.wanted && peer.close_at.is_none() {
                peer.close_at = Some(now + OFFLINE_GRACE);
            }
        }
        self.drive(now);
    }

    /// A packet was addressed to `uid`, which has no link: link it if the policy allows.
    /// Returns the device's key when a link is now being set up.
    pub fn demand(&mut self, now: Instant, uid: &Uid) -> Option<[u8; 32]> {
        if self.peers.contains_key(uid) || self.peers.len() >= self.policy.max_links() {
            return None;
        }
        let w = self.eligible.get(uid)?.clone();
        self.peers.insert(
            *uid,
            Box::new(Peer::new(now, &w, self.own.uid < w.info.uid)),
        );
        if let Some(idle) = self.policy.idle() {
            let at = now + idle;
            self.trim_at = Some(self.trim_at.map_or(at, |t| t.min(at)));
        }
        self.drive(now);
        Some(w.info.public_key)
    }

    /// ICE found a path but no WireGuard session came up over it: drop the session and try
    /// again after a back-off.
    pub fn path_failed(&mut self, now: Instant, uid: &Uid) {
        if let Some(peer) = self.peers.get_mut(uid) {
            tracing::debug!(peer = %uid, "no WireGuard session over the selected path; retrying");
            self.out.counters.ice_failures += 1;
            if peer.up.is_some_and(|p| p.relayed) {
                // The relay under it may be gone (a TURN server restarted as the link came
                // up): check ours before the next attempt offers it again.
                self.gatherer.verify(now);
            }
            peer.fail(now, &mut self.out);
        }
        self.drive(now);
    }

    /// Signalling works again (XMPP back online): retry at once whatever waits in back-off,
    /// and send again what was waiting for an answer (it was dropped while offline).
    pub fn signalling_restored(&mut self, now: Instant) {
        for peer in self.peers.values_mut() {
            peer.signalling_restored(now, &mut self.out);
        }
        self.drive(now);
    }

    /// The data plane saw the path to `uid` go quiet while sending (see
    /// [`crate::liveness`]): check it (suspect) or look for a new one (dead).
    pub fn path_alarm(&mut self, now: Instant, uid: &Uid, alarm: PathAlarm) {
        let Some(peer) = self.peers.get_mut(uid) else {
            return;
        };
        peer.path_alarm(&mut cx!(self, now), alarm);
        self.drive(now);
    }

    /// The account the link to `uid` belongs to.
    pub fn account_of(&self, uid: &Uid) -> Option<xmpp_parsers::jid::BareJid> {
        self.peers.get(uid).map(|p| p.jid.to_bare())
    }

    /// The devices that have (or are getting) a link, with their keys.
    pub fn devices(&self) -> impl Iterator<Item = (Uid, [u8; 32])> + '_ {
        self.peers.iter().map(|(u, p)| (*u, p.info.public_key))
    }

    /// The public key of a device we are linking with (connecting or up).
    pub fn device_key(&self, uid: &Uid) -> Option<[u8; 32]> {
        self.peers.get(uid).map(|p| p.info.public_key)
    }

    /// On-demand policy: closes links whose last traffic (`last_activity`) is older than the
    /// idle limit, and schedules the next check.
    fn trim_idle(&mut self, now: Instant, last_activity: impl Fn(&Uid) -> Option<Instant>) {
        let Some(idle) = self.policy.idle() else {
            return;
        };
        if self.trim_at.is_none_or(|t| t > now) {
            return;
        }
        let mut next: Option<Instant> = None;
        let mut idle_peers = Vec::new();
        for (uid, peer) in &self.peers {
            if peer.up.is_none() {
                continue;
            }
            let due = last_activity(uid).unwrap_or(now) + idle;
            if due <= now {
                idle_peers.push(*uid);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        for uid in idle_peers {
            tracing::debug!(peer = %uid, "closing an idle on-demand link");
            self.close_now(&uid);
        }
        // Links still forming are checked again one idle period from now.
        if next.is_none() && !self.peers.is_empty() {
            next = Some(now + idle);
        }
        self.trim_at = next;
    }

    /// Closes the link to `uid` at once and tells the peer (toggle off, friend removed).
    pub fn close_now(&mut self, uid: &Uid) {
        if let Some(mut peer) = self.peers.remove(uid) {
            peer.close(true, self.own, &mut self.out);
        }
    }

    /// Closes every link and tells each peer.
    pub fn close_everything(&mut self) {
        for (_, mut peer) in self.peers.drain() {
            peer.close(true, self.own, &mut self.out);
        }
    }

    /// Shutting down: closes every link and releases the TURN allocation.
    pub fn shutdown(&mut self, now: Instant) {
        self.close_everything();
        self.gatherer.release(now);
    }

    /// Closes every link to devices of this account (the user switched the friend off).
    pub fn close_account(&mut self, jid: &xmpp_parsers::jid::BareJid) {
        let uids: Vec<Uid> = self
            .peers
            .iter()
            .filter(|(_, p)| p.jid.to_bare() == *jid)
            .map(|(u, _)| *u)
            .collect();
        for uid in uids {
            self.close_now(&uid);
        }
    }

    /// A signal already authorised by the social layer.
    pub fn handle_signal(&mut self, now: Instant, from: FullJid, signal: Signal) {
        let uid = signal.from.uid;
        if !self.peers.contains_key(&uid) {
            if signal.kind != SignalKind::Offer && signal.kind != SignalKind::Restart {
                self.out.counters.signals_stale += 1;
                return;
            }
            if self.peers.len() >= self.policy.max_links() {
                // A signal cannot take a link slot past the policy's cap.
                self.out.counters.signals_refused += 1;
                return;
            }
            // An authorised device we have not seen online yet (presence may lag behind).
            let w = WantedDevice {
                jid: from.clone(),
                info: signal.from,
                own: false,
            };
            let peer = Peer::unsolicited(now, &w, self.own.uid < uid);
            self.peers.insert(uid, Box::new(peer));
        }
        let Some(peer) = self.peers.get_mut(&uid) else {
            return;
        };
        if peer.jid.to_bare() != from.to_bare() {
            if peer.proven {
                // Proven to be another account's: the social layer refuses this already.
                self.out.counters.signals_stale += 1;
                return;
            }
            // The link was meant for an account that only claimed the device (a copied
            // announcement); its key holder has proven it is this one's.
            peer.drop_session(now, false, &mut self.out);
            peer.sessions.forget_sessions();
            peer.restart_now(now);
        }
        peer.jid = from;
        // The social layer accepts only signals proven by the device's key.
        peer.proven = true;
        peer.handle_signal(&mut cx!(self, now), signal);
        self.drive(now);
    }

    /// Everything time- or state-driven for every link.
    fn drive(&mut self, now: Instant) {
        if self.gatherer.take_permits_full() {
            let in_use = self
                .peers
                .values()
                .flat_map(|p| p.permits.iter().map(|a| (*a, p.jid.to_bare())))
                .collect();
            self.gatherer.renew_permits(now, in_use);
        }
        if self.gatherer.take_relay_replaced() {
            let relay = self.gatherer.candidates().relay;
            for peer in self.peers.values_mut() {
                peer.relay_replaced(now, relay, &mut self.out);
            }
        }
        let gathered = self.gatherer.is_complete(now);
        let mut cx = cx!(self, now);
        self.peers.retain(|_, peer| peer.step(&mut cx, gathered));
    }

    /// The network changed: gather again and restart ICE on every link, keeping the
    /// WireGuard sessions.
    pub fn network_changed(&mut self, now: Instant, host: Vec<SocketAddr>) {
        self.gatherer.restart(now, host);
        for peer in self.peers.values_mut() {
            peer.network_changed(now, &mut self.out);
        }
        self.drive(now);
    }

    /// True for datagrams that belong to the ICE/STUN/TURN machinery rather than WireGuard.
    pub fn wants_datagram(&self, from: SocketAddr, data: &[u8]) -> bool {
        self.gatherer.is_server(from) || rtc_stun::message::is_stun_message(data)
    }

    /// A datagram for which `wants_datagram` was true.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local_host: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) {
        if self.gatherer.is_server(from) {
            self.gatherer.handle_server_datagram(now, from, data);
            while let Some((peer, bytes)) = self.gatherer.poll_relayed() {
                if rtc_stun::message::is_stun_message(&bytes) {
                    self.route_stun(now, local_host, peer, true, &bytes);
                } else {
                    self.relayed_data.push_back((peer, bytes));
                }
            }
        } else {
            self.route_stun(now, local_host, from, false, data);
        }
        self.drive(now);
    }

    fn route_stun(
        &mut self,
        now: Instant,
        local_host: SocketAddr,
        from: SocketAddr,
        via_relay: bool,
        data: &[u8],
    ) {
        use rtc_stun::message::{Message, CLASS_INDICATION, CLASS_REQUEST};
        let mut msg = Message::new();
        msg.raw = data.to_vec();
        if msg.decode().is_err() {
            self.out.counters.stun_rejected += 1;
            return;
        }
        if msg.typ.class == CLASS_REQUEST || msg.typ.class == CLASS_INDICATION {
            // A check (or an idle link's keepalive indication) goes to the one session its
            // USERNAME names, and only if its integrity holds: anyone who knows our port could
            // otherwise steer every session, or keep a dead path looking alive.
            let username = rtc_stun::textattrs::TextAttribute::get_from_as(
                &msg,
                rtc_stun::attributes::ATTR_USERNAME,
            );
            let ours = username
                .ok()
                .and_then(|u| u.text.split_once(':').map(|(ours, _)| ours.to_string()));
            let session = ours.and_then(|ours| {
                self.peers
                    .values_mut()
                    .find_map(|p| p.ice_mut().filter(|i| i.local_ufrag() == ours))
            });
            match session {
                Some(ice) if ice.authenticates(&mut msg) => {
                    ice.handle_stun(now, local_host, from, via_relay, data);
                }
                _ => self.out.counters.stun_rejected += 1,
            }
            return;
        }
        // Responses answer our own checks (their transaction ids are unguessable and rtc-ice
        // checks their integrity): to the session that knows the sender, else to all.
        let known: Vec<Uid> = self
            .peers
            .iter()
            .filter(|(_, p)| p.ice().is_some_and(|i| i.knows_remote(from)))
            .map(|(u, _)| *u)
            .collect();
        let targets: Vec<Uid> = if known.is_empty() {
            self.peers
                .iter()
                .filter(|(_, p)| p.ice().is_some())
                .map(|(u, _)| *u)
                .collect()
        } else {
            known
        };
        for uid in targets {
            if let Some(ice) = self.peers.get_mut(&uid).and_then(|p| p.ice_mut()) {
                ice.handle_stun(now, local_host, from, via_relay, data);
            }
        }
    }

    /// Sends WireGuard bytes to `peer` through the relay.
    pub fn send_relayed(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) -> bool {
        self.gatherer.send_relayed(now, peer, data)
    }

    pub fn poll_relayed_data(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.relayed_data.pop_front()
    }

    /// A signal to send: (the device's full JID, its key — the proof is made for it —, the
    /// signal).
    /// A signal for a device: its full JID, its announcement (key, protocol version).
    pub fn poll_signal(&mut self) -> Option<(FullJid, DeviceInfo, Signal)> {
        self.out.signals.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.out.events.pop_front()
    }

    /// Datagrams to send from the host socket (STUN checks, TURN control, relayed data).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.out
            .transmits
            .pop_front()
            .or_else(|| self.gatherer.poll_transmit())
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let gathered_by = self.gatherer.completion_deadline();
        let links = self
            .peers
            .values_mut()
            .filter_map(|p| p.deadline(gathered_by));
        [self.gatherer.poll_timeout(), self.trim_at]
            .into_iter()
            .flatten()
            .chain(links)
            .min()
    }

    /// Timers: gathering, ICE, signalling retries, grace periods, and (on-demand policy) idle
    /// links, judged by `last_activity` (the data plane's last authentic traffic per device).
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        last_activity: impl Fn(&Uid) -> Option<Instant>,
    ) {
        self.trim_idle(now, last_activity);
        self.gatherer.handle_timeout(now);
        for peer in self.peers.values_mut() {
            if let Some(ice) = peer.ice_mut() {
                ice.handle_timeout(now);
            }
        }
        self.drive(now);
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;

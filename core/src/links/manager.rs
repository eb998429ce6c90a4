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

use super::ice::{IceLink, IceOutput, SelectedPath, Started};
pub use super::policy::LinkPolicy;
use super::servers::{Gatherer, IceServers};
use super::sessions::SessionLog;
pub use crate::api::LinkPhase;
pub use crate::counters::LinkCounters;
use crate::liveness::{PathAlarm, DEAD_AFTER};
use crate::social::payload::{DeviceInfo, Signal, SignalKind};
use crate::social::state::WantedDevice;
use crate::uid::Uid;
use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
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
/// A peer's candidates one session lets through our relay at most.
const PERMITS_PER_SESSION: usize = 4;

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

#[derive(Debug)]
enum Phase {
    /// Nothing in flight; act at `at` (offer if controlling, ask for one otherwise).
    Idle { at: Instant },
    /// Controlling: offer sent, waiting for the answer.
    Offered { last: Instant, tries: u32 },
    /// Controlled: asked for an offer at this time.
    AwaitingOffer { asked: Instant },
    /// ICE checks running or path selected.
    Ice,
}

struct Peer {
    jid: FullJid,
    info: DeviceInfo,
    controlling: bool,
    wanted: bool,
    /// Set while the device is no longer wanted: close at this instant.
    close_at: Option<Instant>,
    session: Option<u64>,
    ice: Option<IceLink>,
    phase: Phase,
    /// Our current offer (controlling; resent until answered) or answer (controlled; resent
    /// for a duplicate offer).
    last_signal: Option<Signal>,
    /// An offer that arrived before our candidates were ready.
    pending_offer: Option<Signal>,
    /// Its sessions: ids seen, and when it started its recent ones.
    sessions: SessionLog,
    backoff: Duration,
    up: Option<SelectedPath>,
    /// The path is suspect and its ICE session is checking it since then.
    probing_since: Option<Instant>,
    /// The peer closed the link; cleared when it offers again.
    closed_by_peer: bool,
    /// A signal from `jid`'s account (proven by the device's key) was accepted.
    proven: bool,
    /// The peer's addresses our relay lets through for its current session.
    permits: Vec<SocketAddr>,
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
    peers: HashMap<Uid, Peer>,
    /// Signals to send: (the device's full JID, its key, the signal).
    signals: VecDeque<(FullJid, [u8; 32], Signal)>,
    events: VecDeque<LinkEvent>,
    transmits: VecDeque<(SocketAddr, BytesMut)>,
    /// Datagrams that arrived through the relay and are not STUN: for the data plane.
    relayed_data: VecDeque<(SocketAddr, BytesMut)>,
    counters: LinkCounters,
    /// Session ids; seeded from the system unless a test or simulation fixes the seed.
    rng: StdRng,
}

impl Peer {
    fn new(now: Instant, w: &WantedDevice, controlling: bool) -> Peer {
        Peer {
            jid: w.jid.clone(),
            info: w.info,
            controlling,
            wanted: true,
            close_at: None,
            session: None,
            ice: None,
            phase: Phase::Idle { at: now },
            last_signal: None,
            pending_offer: None,
            sessions: SessionLog::default(),
            backoff: BACKOFF_START,
            up: None,
            probing_since: None,
            closed_by_peer: false,
            proven: false,
            permits: Vec::new(),
        }
    }
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
            peers: HashMap::new(),
            signals: VecDeque::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            relayed_data: VecDeque::new(),
            counters: LinkCounters::default(),
            rng: StdRng::from_entropy(),
        }
    }

    /// The same manager with session ids drawn from `seed` (deterministic runs).
    pub fn with_seed(mut self, seed: u64) -> LinkManager {
        self.rng = StdRng::seed_from_u64(seed);
        self
    }

    pub fn counters(&self) -> LinkCounters {
        LinkCounters {
            relay_reallocations: self.gatherer.reallocations,
            permits_refused: self.gatherer.permits.refused,
            permit_renewals: self.gatherer.permits.renewals,
            ..self.counters
        }
    }

    pub fn local_candidates(&self) -> &super::servers::LocalCandidates {
        self.gatherer.candidates()
    }

    /// The phase of the link to `uid`, if there is one.
    pub fn phase(&self, now: Instant, uid: &Uid) -> Option<LinkPhase> {
        let peer = self.peers.get(uid)?;
        Some(match (&peer.phase, peer.up) {
            (_, Some(path)) => LinkPhase::Connected {
                relayed: path.relayed,
                rtt_ms: peer
                    .ice
                    .as_ref()
                    .and_then(|i| i.rtt(now))
                    .map(|d| d.as_secs_f64() * 1000.0),
            },
            (Phase::Idle { .. }, None) if peer.closed_by_peer => LinkPhase::ClosedByPeer,
            (Phase::Idle { .. }, None) if peer.backoff > BACKOFF_START => LinkPhase::Retrying,
            _ => LinkPhase::Connecting,
        })
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
                .or_insert_with(|| Peer::new(now, w, self.own.uid < w.info.uid));
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
        self.peers
            .insert(*uid, Peer::new(now, &w, self.own.uid < w.info.uid));
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
        if let Some(mut peer) = self.peers.remove(uid) {
            tracing::debug!(peer = %uid, "no WireGuard session over the selected path; retrying");
            self.counters.ice_failures += 1;
            self.fail(now, &mut peer);
            self.peers.insert(*uid, peer);
        }
        self.drive(now);
    }

    /// Signalling works again (XMPP back online): retry at once whatever waits in back-off,
    /// and send again what was waiting for an answer (it was dropped while offline).
    pub fn signalling_restored(&mut self, now: Instant) {
        for peer in self.peers.values_mut() {
            match peer.phase {
                Phase::Idle { .. } if peer.up.is_none() && !peer.closed_by_peer => {
                    peer.backoff = BACKOFF_START;
                    peer.phase = Phase::Idle { at: now };
                }
                Phase::Offered { .. } => {
                    if let Some(offer) = peer.last_signal.clone() {
                        self.signals
                            .push_back((peer.jid.clone(), peer.info.public_key, offer));
                        peer.phase = Phase::Offered {
                            last: now,
                            tries: 1,
                        };
                    }
                }
                Phase::AwaitingOffer { .. } => peer.phase = Phase::Idle { at: now },
                _ => {}
            }
        }
        self.drive(now);
    }

    /// The data plane saw the path to `uid` go quiet while sending (see
    /// [`crate::liveness`]): check it (suspect) or look for a new one (dead).
    pub fn path_alarm(&mut self, now: Instant, uid: &Uid, alarm: PathAlarm) {
        let Some(mut peer) = self.peers.remove(uid) else {
            return;
        };
        let heard_recently = peer
            .ice
            .as_ref()
            .and_then(IceLink::last_heard)
            .is_some_and(|t| now.saturating_duration_since(t) < DEAD_AFTER);
        match alarm {
            PathAlarm::Suspect => {
                if let (Some(ice), Some(_)) = (peer.ice.as_mut(), peer.up) {
                    tracing::debug!(peer = %uid, "path quiet; checking it");
                    ice.probe(now + DEAD_AFTER);
                    peer.probing_since = Some(now);
                }
            }
            PathAlarm::Dead if heard_recently => {
                self.events
                    .push_back(LinkEvent::PathConfirmed { uid: *uid });
            }
            PathAlarm::Dead if peer.up.is_some() => self.path_lost(now, &mut peer),
            // No path yet: ICE is already at work.
            PathAlarm::Dead => {}
        }
        self.peers.insert(*uid, peer);
        self.drive(now);
    }

    /// The selected path is dead: run ICE again at once (the WireGuard session stays).
    fn path_lost(&mut self, now: Instant, peer: &mut Peer) {
        tracing::debug!(peer = %peer.info.uid, "path silent; looking for a new one");
        self.counters.paths_lost += 1;
        if peer.up.is_some_and(|p| p.relayed) {
            // A relay under it may be gone (a restarted TURN server forgets allocations):
            // check ours (the peer checks its own).
            self.gatherer.verify(now);
        }
        let relay = self.gatherer.candidates().relay;
        let looking = peer
            .ice
            .as_ref()
            .is_some_and(|i| i.selected().is_none() && i.relay() == relay)
            && !matches!(peer.phase, Phase::Idle { .. });
        if looking {
            // A new session is already looking for a path (the network changed under the
            // old one): let it finish, only stop showing the dead path as up.
            if peer.up.take().is_some() {
                self.events.push_back(LinkEvent::Down {
                    uid: peer.info.uid,
                    jid: peer.jid.clone(),
                });
            }
            return;
        }
        self.drop_session(peer, false);
        self.restart_now(now, peer);
    }

    /// Offer (or ask for an offer) again as soon as our candidates allow.
    fn restart_now(&mut self, now: Instant, peer: &mut Peer) {
        peer.backoff = BACKOFF_START;
        peer.phase = Phase::Idle { at: now };
    }

    /// The account the link to `uid` belongs to.
    pub fn account_of(&self, uid: &Uid) -> Option<xmpp_parsers::jid::BareJid> {
        self.peers.get(uid).map(|p| p.jid.to_bare())
    }

    /// The devices that have (or are getting) a link, with their keys.
    pub fn devices(&self) -> impl Iterator<Item = (Uid, [u8; 32])> + '_ {
        self.peers.iter().map(|(u, p)| (*u, p.info.public_key))
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
            self.close_peer(&mut peer, true);
        }
    }

    /// Closes every link and tells each peer.
    pub fn close_everything(&mut self) {
        let uids: Vec<Uid> = self.peers.keys().copied().collect();
        for uid in uids {
            self.close_now(&uid);
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

    fn close_peer(&mut self, peer: &mut Peer, tell: bool) {
        if let Some(ice) = peer.ice.as_mut() {
            ice.close();
        }
        if tell {
            if let Some(session) = peer.session {
                self.signals.push_back((
                    peer.jid.clone(),
                    peer.info.public_key,
                    Signal {
                        kind: SignalKind::Close,
                        session,
                        from: self.own,
                        credentials: None,
                        candidates: vec![],
                    },
                ));
            }
        }
        self.events.push_back(LinkEvent::Closed {
            uid: peer.info.uid,
            jid: peer.jid.clone(),
            by_peer: false,
        });
    }

    /// A signal already authorised by the social layer.
    pub fn handle_signal(&mut self, now: Instant, from: FullJid, signal: Signal) {
        let uid = signal.from.uid;
        if !self.peers.contains_key(&uid) {
            if signal.kind != SignalKind::Offer && signal.kind != SignalKind::Restart {
                self.counters.signals_stale += 1;
                return;
            }
            if self.peers.len() >= self.policy.max_links() {
                // A signal cannot take a link slot past the policy's cap.
                self.counters.signals_refused += 1;
                return;
            }
            // An authorised device we have not seen online yet (presence may lag behind).
            let wanted = WantedDevice {
                jid: from.clone(),
                info: signal.from,
                own: false,
            };
            let mut peer = Peer::new(now, &wanted, self.own.uid < uid);
            // Not (yet) wanted by our policy: answer, but do not initiate, and let it go
            // unless the policy claims it before the grace period ends.
            peer.wanted = false;
            peer.close_at = Some(now + OFFLINE_GRACE);
            peer.phase = Phase::Idle {
                at: now + BACKOFF_MAX,
            };
            self.peers.insert(uid, peer);
        }
        let Some(mut peer) = self.peers.remove(&uid) else {
            return;
        };
        if peer.jid.to_bare() != from.to_bare() {
            if peer.proven {
                // Proven to be another account's: the social layer refuses this already.
                self.counters.signals_stale += 1;
                self.peers.insert(uid, peer);
                return;
            }
            // The link was meant for an account that only claimed the device (a copied
            // announcement); its key holder has proven it is this one's.
            self.drop_session(&mut peer, false);
            peer.sessions.forget_sessions();
            self.restart_now(now, &mut peer);
        }
        peer.jid = from;
        // The social layer accepts only signals proven by the device's key.
        peer.proven = true;
        let new_session = match signal.kind {
            SignalKind::Offer => {
                peer.session != Some(signal.session) && !peer.sessions.seen(signal.session)
            }
            SignalKind::Restart => true,
            SignalKind::Answer | SignalKind::Close => false,
        };
        if new_session && !peer.sessions.may_start(now) {
            self.counters.signals_refused += 1;
            self.peers.insert(uid, peer);
            return;
        }
        if matches!(signal.kind, SignalKind::Offer | SignalKind::Restart) {
            peer.closed_by_peer = false;
            if peer.up.is_some_and(|p| p.relayed) {
                // The peer looks for a new path although ours goes through a relay: the relay
                // may be gone (a restarted TURN server).
                self.gatherer.verify(now);
            }
        }
        match signal.kind {
            SignalKind::Offer => self.on_offer(now, &mut peer, signal),
            SignalKind::Answer => self.on_answer(now, &mut peer, signal),
            SignalKind::Restart => {
                if peer.controlling && !matches!(peer.phase, Phase::Offered { .. }) {
                    // Fresh offer now (new session), whatever the back-off said.
                    peer.phase = Phase::Idle { at: now };
                } else {
                    self.counters.signals_stale += 1;
                }
            }
            SignalKind::Close => {
                if peer.session == Some(signal.session) {
                    self.drop_session(&mut peer, false);
                    // The peer does not want us now: don't insist before a long back-off.
                    peer.backoff = BACKOFF_MAX;
                    peer.closed_by_peer = true;
                    peer.phase = Phase::Idle {
                        at: now + BACKOFF_MAX,
                    };
                    self.events.push_back(LinkEvent::Closed {
                        uid,
                        jid: peer.jid.clone(),
                        by_peer: true,
                    });
                } else {
                    self.counters.signals_stale += 1;
                }
            }
        }
        self.peers.insert(uid, peer);
        self.drive(now);
    }

    fn on_offer(&mut self, now: Instant, peer: &mut Peer, offer: Signal) {
        if peer.controlling {
            // We are the one who offers; an offer from them is out of role.
            self.counters.signals_stale += 1;
            return;
        }
        if Some(offer.session) == peer.session {
            // Our answer was lost: send it again.
            if let Some(answer) = peer.last_signal.clone() {
                self.signals
                    .push_back((peer.jid.clone(), peer.info.public_key, answer));
            }
            return;
        }
        if peer.sessions.seen(offer.session) {
            self.counters.signals_stale += 1;
            return;
        }
        peer.sessions.remember(offer.session);
        if !self.gatherer.is_complete(now) {
            peer.pending_offer = Some(offer);
            return;
        }
        self.answer(now, peer, offer);
    }

    fn answer(&mut self, now: Instant, peer: &mut Peer, offer: Signal) {
        let Some(remote) = offer.credentials.clone() else {
            return;
        };
        // The old path carries traffic until the new session selects one.
        self.drop_session(peer, true);
        let mut ice = match IceLink::new(now, false, self.gatherer.candidates()) {
            Ok(ice) => ice,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start ICE");
                return;
            }
        };
        match ice.start(now, &remote, &offer.candidates) {
            Ok(started) => {
                self.use_candidates(now, peer, started);
            }
            Err(e) => {
                tracing::debug!(error = %e, "bad offer");
                return;
            }
        }
        let answer = Signal {
            kind: SignalKind::Answer,
            session: offer.session,
            from: self.own,
            credentials: Some(ice.credentials()),
            candidates: ice.candidate_lines(),
        };
        tracing::debug!(
            peer = %peer.info.uid,
            session = offer.session,
            ours = ?answer.candidates,
            theirs = ?offer.candidates,
            "answering"
        );
        peer.session = Some(offer.session);
        peer.last_signal = Some(answer.clone());
        peer.ice = Some(ice);
        peer.phase = Phase::Ice;
        self.signals
            .push_back((peer.jid.clone(), peer.info.public_key, answer));
    }

    /// Counts the candidates a session does not check and lets the others of the peer's
    /// candidates that need it through our relay (a few per session: a device has one
    /// server-reflexive and one relayed address per network it is on).
    fn use_candidates(&mut self, now: Instant, peer: &mut Peer, started: Started) {
        let mut dropped = started.dropped;
        if started.permit.len() > PERMITS_PER_SESSION {
            dropped += started.permit.len() - PERMITS_PER_SESSION;
        }
        self.counters.candidates_dropped += dropped as u64;
        peer.permits = started.permit;
        peer.permits.truncate(PERMITS_PER_SESSION);
        let owner = peer.jid.to_bare();
        for addr in &peer.permits {
            self.gatherer.permit(now, *addr, &owner);
        }
    }

    fn on_answer(&mut self, now: Instant, peer: &mut Peer, answer: Signal) {
        let expected =
            matches!(peer.phase, Phase::Offered { .. }) && peer.session == Some(answer.session);
        let (true, Some(remote), Some(ice)) =
            (expected, answer.credentials.as_ref(), peer.ice.as_mut())
        else {
            self.counters.signals_stale += 1;
            return;
        };
        tracing::debug!(peer = %peer.info.uid, session = answer.session, theirs = ?answer.candidates, "answered");
        match ice.start(now, remote, &answer.candidates) {
            Ok(started) => {
                self.use_candidates(now, peer, started);
                peer.phase = Phase::Ice;
            }
            Err(e) => {
                tracing::debug!(error = %e, "bad answer");
                self.fail(now, peer);
            }
        }
    }

    fn offer(&mut self, now: Instant, peer: &mut Peer) {
        // The old path carries traffic until the new session selects one.
        self.drop_session(peer, true);
        let ice = match IceLink::new(now, true, self.gatherer.candidates()) {
            Ok(ice) => ice,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start ICE");
                return self.fail(now, peer);
            }
        };
        let session = self.rng.gen::<u64>();
        peer.sessions.remember(session);
        peer.session = Some(session);
        let offer = Signal {
            kind: SignalKind::Offer,
            session,
            from: self.own,
            credentials: Some(ice.credentials()),
            candidates: ice.candidate_lines(),
        };
        peer.ice = Some(ice);
        peer.last_signal = Some(offer.clone());
        peer.phase = Phase::Offered {
            last: now,
            tries: 1,
        };
        self.counters.offers_sent += 1;
        tracing::debug!(peer = %peer.info.uid, session, ours = ?offer.candidates, "offering");
        self.signals
            .push_back((peer.jid.clone(), peer.info.public_key, offer));
    }

    /// Ends the ICE session (keeping the peer and its WireGuard session). With `keep_path`
    /// the path it selected stays in use (and shown) until a new session selects another:
    /// it may well still work (a network change that did not touch it).
    fn drop_session(&mut self, peer: &mut Peer, keep_path: bool) {
        if let Some(mut ice) = peer.ice.take() {
            ice.close();
        }
        peer.session = None;
        peer.last_signal = None;
        peer.probing_since = None;
        if !keep_path && peer.up.take().is_some() {
            self.events.push_back(LinkEvent::Down {
                uid: peer.info.uid,
                jid: peer.jid.clone(),
            });
        }
    }

    fn fail(&mut self, now: Instant, peer: &mut Peer) {
        self.drop_session(peer, false);
        peer.phase = Phase::Idle {
            at: now + peer.backoff,
        };
        peer.backoff = (peer.backoff * 2).min(BACKOFF_MAX);
    }

    /// Everything time- or state-driven for every peer.
    fn drive(&mut self, now: Instant) {
        let uids: Vec<Uid> = self.peers.keys().copied().collect();
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
            // Paths through the old relay address are gone with it, and sessions still
            // checking offered the old one (or none): start those again with the new one.
            for uid in &uids {
                if let Some(mut peer) = self.peers.remove(uid) {
                    let stale = peer.ice.as_ref().is_some_and(|i| i.relay() != relay);
                    let checking = peer.ice.as_ref().is_some_and(|i| i.selected().is_none());
                    if peer.up.is_some_and(|p| p.via_our_relay) {
                        self.drop_session(&mut peer, false);
                        self.restart_now(now, &mut peer);
                    } else if stale && checking {
                        self.drop_session(&mut peer, true);
                        self.restart_now(now, &mut peer);
                    }
                    self.peers.insert(*uid, peer);
                }
            }
        }
        let gathered = self.gatherer.is_complete(now);
        for uid in uids {
            let Some(mut peer) = self.peers.remove(&uid) else {
                continue;
            };
            if peer.close_at.is_some_and(|at| at <= now) {
                self.close_peer(&mut peer, true);
                continue;
            }
            if let Some(offer) = peer.pending_offer.take() {
                if gathered {
                    self.answer(now, &mut peer, offer);
                } else {
                    peer.pending_offer = Some(offer);
                }
            }
            match peer.phase {
                Phase::Idle { at } if at <= now && gathered && peer.wanted => {
                    if peer.controlling {
                        self.offer(now, &mut peer);
                    } else {
                        self.ask_for_offer(now, &mut peer);
                    }
                }
                Phase::Offered { last, tries }
                    if now.saturating_duration_since(last) >= OFFER_RETRY =>
                {
                    if tries >= OFFER_TRIES || peer.last_signal.is_none() {
                        tracing::debug!(peer = %peer.info.uid, "offer unanswered; backing off");
                        self.fail(now, &mut peer);
                    } else if let Some(offer) = peer.last_signal.clone() {
                        self.signals
                            .push_back((peer.jid.clone(), peer.info.public_key, offer));
                        peer.phase = Phase::Offered {
                            last: now,
                            tries: tries + 1,
                        };
                    }
                }
                Phase::AwaitingOffer { asked }
                    if now.saturating_duration_since(asked) >= OFFER_RETRY * OFFER_TRIES =>
                {
                    self.fail(now, &mut peer);
                }
                _ => {}
            }
            self.service_ice(now, &mut peer);
            self.peers.insert(uid, peer);
        }
    }

    fn ask_for_offer(&mut self, now: Instant, peer: &mut Peer) {
        self.signals.push_back((
            peer.jid.clone(),
            peer.info.public_key,
            Signal {
                kind: SignalKind::Restart,
                session: self.rng.gen::<u64>(),
                from: self.own,
                credentials: None,
                candidates: vec![],
            },
        ));
        peer.phase = Phase::AwaitingOffer { asked: now };
    }

    /// Moves an ICE session's output along and reacts to its state.
    fn service_ice(&mut self, now: Instant, peer: &mut Peer) {
        let Some(ice) = peer.ice.as_mut() else { return };
        while let Some(IceOutput::Transmit {
            dst,
            via_relay,
            data,
        }) = ice.poll_output()
        {
            if via_relay {
                if !self.gatherer.send_relayed(now, dst, &data) {
                    tracing::debug!(%dst, "relay not ready for this peer yet");
                }
            } else {
                self.transmits.push_back((dst, data));
            }
        }
        let selected = ice.selected();
        let failed = ice.has_failed();
        if let Some(since) = peer.probing_since {
            if ice.last_heard().is_some_and(|t| t > since) {
                // The peer answered the check: the path works.
                peer.probing_since = None;
                self.events
                    .push_back(LinkEvent::PathConfirmed { uid: peer.info.uid });
            }
        }
        if selected != peer.up && selected.is_some() {
            peer.up = selected;
            peer.backoff = BACKOFF_START;
            if let Some(path) = selected {
                self.events.push_back(LinkEvent::Up {
                    uid: peer.info.uid,
                    jid: peer.jid.clone(),
                    public_key: peer.info.public_key,
                    path,
                });
            }
        }
        if failed {
            tracing::debug!(peer = %peer.info.uid, "ICE failed");
            self.counters.ice_failures += 1;
            self.fail(now, peer);
        }
    }

    /// The network changed: gather again and restart ICE on every link, keeping the
    /// WireGuard sessions.
    pub fn network_changed(&mut self, now: Instant, host: Vec<SocketAddr>) {
        self.gatherer.restart(now, host);
        let uids: Vec<Uid> = self.peers.keys().copied().collect();
        for uid in uids {
            let Some(mut peer) = self.peers.remove(&uid) else {
                continue;
            };
            // A path that survives the change keeps carrying traffic meanwhile.
            self.drop_session(&mut peer, true);
            peer.backoff = BACKOFF_START;
            // Offer (or ask for one) as soon as the new candidates are in.
            peer.phase = Phase::Idle { at: now };
            self.peers.insert(uid, peer);
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
            self.counters.stun_rejected += 1;
            return;
        }
        if msg.typ.class == CLASS_REQUEST {
            // A check goes to the one session its USERNAME names, and only if its integrity
            // holds: anyone who knows our port could otherwise steer every session.
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
                    .find_map(|p| p.ice.as_mut().filter(|i| i.local_ufrag() == ours))
            });
            match session {
                Some(ice) if ice.authenticates(&mut msg) => {
                    ice.handle_stun(now, local_host, from, via_relay, data);
                }
                _ => self.counters.stun_rejected += 1,
            }
            return;
        }
        if msg.typ.class == CLASS_INDICATION {
            return;
        }
        // Responses answer our own checks (their transaction ids are unguessable and rtc-ice
        // checks their integrity): to the session that knows the sender, else to all.
        let known: Vec<Uid> = self
            .peers
            .iter()
            .filter(|(_, p)| p.ice.as_ref().is_some_and(|i| i.knows_remote(from)))
            .map(|(u, _)| *u)
            .collect();
        let targets: Vec<Uid> = if known.is_empty() {
            self.peers
                .iter()
                .filter(|(_, p)| p.ice.is_some())
                .map(|(u, _)| *u)
                .collect()
        } else {
            known
        };
        for uid in targets {
            if let Some(ice) = self.peers.get_mut(&uid).and_then(|p| p.ice.as_mut()) {
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
    pub fn poll_signal(&mut self) -> Option<(FullJid, [u8; 32], Signal)> {
        self.signals.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// Datagrams to send from the host socket (STUN checks, TURN control, relayed data).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.transmits
            .pop_front()
            .or_else(|| self.gatherer.poll_transmit())
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let gathered_by = self.gatherer.completion_deadline();
        let mut next = self.gatherer.poll_timeout();
        if let Some(t) = self.trim_at {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for peer in self.peers.values_mut() {
            consider(peer.close_at);
            consider(match peer.phase {
                // Nothing can start before our candidates are gathered.
                Phase::Idle { at } if peer.wanted => Some(gathered_by.map_or(at, |g| at.max(g))),
                Phase::Offered { last, .. } => Some(last + OFFER_RETRY),
                Phase::AwaitingOffer { asked } => Some(asked + OFFER_RETRY * OFFER_TRIES),
                _ => None,
            });
            if peer.pending_offer.is_some() {
                consider(gathered_by);
            }
            if let Some(ice) = peer.ice.as_mut() {
                consider(ice.poll_timeout());
            }
        }
        next
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
            if let Some(ice) = peer.ice.as_mut() {
                ice.handle_timeout(now);
            }
        }
        self.drive(now);
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;

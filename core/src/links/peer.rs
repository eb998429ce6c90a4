//! One device's link as a state machine: signalling (offer, answer, restart, close), its ICE
//! session, the path it selected, back-off and the grace period before it closes. The link
//! manager owns one per device and gives each the shared parts through [`Ctx`].

use super::ice::{IceLink, IceOutput, SelectedPath, Started};
use super::servers::Gatherer;
use super::sessions::SessionLog;
use crate::api::LinkPhase;
use crate::counters::LinkCounters;
use crate::idle_grid::IdleGrid;
use crate::liveness::{PathAlarm, DEAD_AFTER};
use crate::social::payload::{DeviceInfo, Signal, SignalKind};
use crate::social::state::WantedDevice;
use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use xmpp_parsers::jid::FullJid;

use super::manager::{
    LinkEvent, BACKOFF_MAX, BACKOFF_START, OFFER_RETRY, OFFER_TRIES, OFFLINE_GRACE,
};

/// A peer's candidates one session lets through our relay at most.
const PERMITS_PER_SESSION: usize = 4;

/// What the links produce, shared by every device's link.
#[derive(Default)]
pub(super) struct Outbox {
    /// Signals to send: (the device's full JID, its announcement, the signal).
    pub(super) signals: VecDeque<(FullJid, DeviceInfo, Signal)>,
    pub(super) events: VecDeque<LinkEvent>,
    pub(super) transmits: VecDeque<(SocketAddr, BytesMut)>,
    pub(super) counters: LinkCounters,
}

impl Outbox {
    fn signal(&mut self, peer: &Peer, signal: Signal) {
        self.signals
            .push_back((peer.jid.clone(), peer.info, signal));
    }
}

/// The shared parts a device's link works with.
pub(super) struct Ctx<'a> {
    pub(super) now: Instant,
    pub(super) own: DeviceInfo,
    pub(super) gatherer: &'a mut Gatherer,
    pub(super) grid: IdleGrid,
    pub(super) rng: &'a mut StdRng,
    pub(super) out: &'a mut Outbox,
}

/// One ICE session with the device: its id, the agent, and our side of its signalling.
pub(super) struct Session {
    id: u64,
    pub(super) ice: IceLink,
    /// Our offer (controlling; resent until answered) or answer (controlled; resent for a
    /// duplicate offer).
    signal: Signal,
    /// The path is suspect and this session checks it since then.
    probing_since: Option<Instant>,
}

/// Where the link stands, holding the ICE session it runs.
enum Phase {
    /// Nothing to do before `at` (offer if controlling, ask for one otherwise). A session
    /// that still carries the current path runs on until a new one replaces it.
    Idle {
        at: Instant,
        current: Option<Session>,
    },
    /// Controlled: asked for an offer at `asked` (a current session runs on meanwhile).
    AwaitingOffer {
        asked: Instant,
        current: Option<Session>,
    },
    /// Controlling: our offer is out, waiting for the answer.
    Offered {
        session: Session,
        last: Instant,
        tries: u32,
    },
    /// ICE checks running, or a path selected.
    Ice { session: Session },
}

impl Phase {
    fn idle(at: Instant) -> Phase {
        Phase::Idle { at, current: None }
    }

    fn session(&self) -> Option<&Session> {
        match self {
            Phase::Idle { current, .. } | Phase::AwaitingOffer { current, .. } => current.as_ref(),
            Phase::Offered { session, .. } | Phase::Ice { session } => Some(session),
        }
    }

    fn session_mut(&mut self) -> Option<&mut Session> {
        match self {
            Phase::Idle { current, .. } | Phase::AwaitingOffer { current, .. } => current.as_mut(),
            Phase::Offered { session, .. } | Phase::Ice { session } => Some(session),
        }
    }

    fn into_session(self) -> Option<Session> {
        match self {
            Phase::Idle { current, .. } | Phase::AwaitingOffer { current, .. } => current,
            Phase::Offered { session, .. } | Phase::Ice { session } => Some(session),
        }
    }

    fn session_id(&self) -> Option<u64> {
        self.session().map(|s| s.id)
    }
}

pub(super) struct Peer {
    pub(super) jid: FullJid,
    pub(super) info: DeviceInfo,
    controlling: bool,
    pub(super) wanted: bool,
    /// Set while the device is no longer wanted: close at this instant.
    pub(super) close_at: Option<Instant>,
    phase: Phase,
    /// An offer that arrived before our candidates were ready.
    pending_offer: Option<Signal>,
    /// Its sessions: ids seen, and when it started its recent ones.
    pub(super) sessions: SessionLog,
    backoff: Duration,
    pub(super) up: Option<SelectedPath>,
    /// The peer closed the link; cleared when it offers again.
    closed_by_peer: bool,
    /// A signal from `jid`'s account (proven by the device's key) was accepted.
    pub(super) proven: bool,
    /// The peer's addresses our relay lets through for its current session.
    pub(super) permits: Vec<SocketAddr>,
}

impl Peer {
    pub(super) fn new(now: Instant, w: &WantedDevice, controlling: bool) -> Peer {
        Peer {
            jid: w.jid.clone(),
            info: w.info,
            controlling,
            wanted: true,
            close_at: None,
            phase: Phase::idle(now),
            pending_offer: None,
            sessions: SessionLog::default(),
            backoff: BACKOFF_START,
            up: None,
            closed_by_peer: false,
            proven: false,
            permits: Vec::new(),
        }
    }

    /// A device that signalled before our policy wanted it: answered, never initiated, and
    /// let go after the grace period unless the policy claims it.
    pub(super) fn unsolicited(now: Instant, w: &WantedDevice, controlling: bool) -> Peer {
        Peer {
            wanted: false,
            close_at: Some(now + OFFLINE_GRACE),
            phase: Phase::idle(now + BACKOFF_MAX),
            ..Peer::new(now, w, controlling)
        }
    }

    /// The phase as front ends show it.
    pub(super) fn view(&self, now: Instant) -> LinkPhase {
        match (&self.phase, self.up) {
            (_, Some(path)) => LinkPhase::Connected {
                relayed: path.relayed,
                rtt_ms: self
                    .ice()
                    .and_then(|i| i.rtt(now))
                    .map(|d| d.as_secs_f64() * 1000.0),
            },
            (Phase::Idle { .. }, None) if self.closed_by_peer => LinkPhase::ClosedByPeer,
            (Phase::Idle { .. }, None) if self.backoff > BACKOFF_START => LinkPhase::Retrying,
            _ => LinkPhase::Connecting,
        }
    }

    /// The ICE session, if one runs.
    pub(super) fn ice(&self) -> Option<&IceLink> {
        self.phase.session().map(|s| &s.ice)
    }

    pub(super) fn ice_mut(&mut self) -> Option<&mut IceLink> {
        self.phase.session_mut().map(|s| &mut s.ice)
    }

    /// Takes the phase (and its session) out, leaving an idle one due at `now`.
    fn take_phase(&mut self, now: Instant) -> Phase {
        std::mem::replace(&mut self.phase, Phase::idle(now))
    }

    /// Offer (or ask for an offer) again as soon as our candidates allow; a session that
    /// runs carries on until the new one replaces it.
    pub(super) fn restart_now(&mut self, now: Instant) {
        self.backoff = BACKOFF_START;
        let current = self.take_phase(now).into_session();
        self.phase = Phase::Idle { at: now, current };
    }

    /// Ends the ICE session (keeping the peer and its WireGuard session); a link that was
    /// waiting for an answer or checking goes idle until `now` plus the back-off (callers
    /// usually say what comes next). With `keep_path` the path it selected stays in use
    /// (and shown) until a new session selects another: it may well still work (a network
    /// change that did not touch it).
    pub(super) fn drop_session(&mut self, now: Instant, keep_path: bool, out: &mut Outbox) {
        let (phase, session) = match self.take_phase(now) {
            Phase::Idle { at, current } => (Phase::idle(at), current),
            Phase::AwaitingOffer { asked, current } => (
                Phase::AwaitingOffer {
                    asked,
                    current: None,
                },
                current,
            ),
            Phase::Offered { session, .. } | Phase::Ice { session } => {
                (Phase::idle(now + self.backoff), Some(session))
            }
        };
        self.phase = phase;
        if let Some(mut session) = session {
            session.ice.close();
        }
        if !keep_path && self.up.take().is_some() {
            out.events.push_back(LinkEvent::Down {
                uid: self.info.uid,
                jid: self.jid.clone(),
            });
        }
    }

    pub(super) fn fail(&mut self, now: Instant, out: &mut Outbox) {
        self.drop_session(now, false, out);
        self.phase = Phase::idle(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Closes the link (telling the peer if `tell` and a session exists).
    pub(super) fn close(&mut self, tell: bool, own: DeviceInfo, out: &mut Outbox) {
        if let Some(ice) = self.ice_mut() {
            ice.close();
        }
        if let (true, Some(session)) = (tell, self.phase.session_id()) {
            let close = Signal {
                kind: SignalKind::Close,
                session,
                from: own,
                credentials: None,
                candidates: vec![],
            };
            out.signal(self, close);
        }
        out.events.push_back(LinkEvent::Closed {
            uid: self.info.uid,
            jid: self.jid.clone(),
            by_peer: false,
        });
    }

    /// Signalling works again: retry at once whatever waits in back-off, and send again
    /// what was waiting for an answer (it was dropped while offline).
    pub(super) fn signalling_restored(&mut self, now: Instant, out: &mut Outbox) {
        match &mut self.phase {
            Phase::Idle { .. } if self.up.is_none() && !self.closed_by_peer => {
                self.restart_now(now);
            }
            Phase::Offered {
                session,
                last,
                tries,
            } => {
                let offer = session.signal.clone();
                *last = now;
                *tries = 1;
                out.signal(self, offer);
            }
            Phase::AwaitingOffer { .. } => self.restart_now(now),
            _ => {}
        }
    }

    /// The data plane saw the path go quiet while sending: check it (suspect) or look for a
    /// new one (dead).
    pub(super) fn path_alarm(&mut self, cx: &mut Ctx<'_>, alarm: PathAlarm) {
        let now = cx.now;
        let heard_recently = self
            .ice()
            .and_then(IceLink::last_heard)
            .is_some_and(|t| now.saturating_duration_since(t) < DEAD_AFTER);
        match alarm {
            PathAlarm::Suspect => {
                let uid = self.info.uid;
                if let (Some(session), Some(_)) = (self.phase.session_mut(), self.up) {
                    tracing::debug!(peer = %uid, "path quiet; checking it");
                    session.ice.probe(now + DEAD_AFTER);
                    session.probing_since = Some(now);
                }
            }
            PathAlarm::Dead if heard_recently => {
                cx.out
                    .events
                    .push_back(LinkEvent::PathConfirmed { uid: self.info.uid });
            }
            PathAlarm::Dead if self.up.is_some() => self.path_lost(cx),
            // No path yet: ICE is already at work.
            PathAlarm::Dead => {}
        }
    }

    /// The selected path is dead: run ICE again at once (the WireGuard session stays).
    fn path_lost(&mut self, cx: &mut Ctx<'_>) {
        tracing::debug!(peer = %self.info.uid, "path silent; looking for a new one");
        cx.out.counters.paths_lost += 1;
        if self.up.is_some_and(|p| p.relayed) {
            // A relay under it may be gone (a restarted TURN server forgets allocations):
            // check ours (the peer checks its own).
            cx.gatherer.verify(cx.now);
        }
        let relay = cx.gatherer.candidates().relay;
        let looking = self
            .ice()
            .is_some_and(|i| i.selected().is_none() && i.relay() == relay)
            && !matches!(self.phase, Phase::Idle { .. });
        if looking {
            // A new session is already looking for a path (the network changed under the
            // old one): let it finish, only stop showing the dead path as up.
            if self.up.take().is_some() {
                cx.out.events.push_back(LinkEvent::Down {
                    uid: self.info.uid,
                    jid: self.jid.clone(),
                });
            }
            return;
        }
        self.drop_session(cx.now, false, cx.out);
        self.restart_now(cx.now);
    }

    /// A signal from this device (already authorised by the social layer and matched to
    /// this link's account).
    pub(super) fn handle_signal(&mut self, cx: &mut Ctx<'_>, signal: Signal) {
        let now = cx.now;
        let new_session = match signal.kind {
            SignalKind::Offer => {
                self.phase.session_id() != Some(signal.session)
                    && !self.sessions.seen(signal.session)
            }
            SignalKind::Restart => true,
            SignalKind::Answer | SignalKind::Close => false,
        };
        if new_session && !self.sessions.may_start(now) {
            cx.out.counters.signals_refused += 1;
            return;
        }
        if matches!(signal.kind, SignalKind::Offer | SignalKind::Restart) {
            self.closed_by_peer = false;
            if self.up.is_some_and(|p| p.relayed) {
                // The peer looks for a new path although ours goes through a relay: the relay
                // may be gone (a restarted TURN server).
                cx.gatherer.verify(now);
            }
        }
        match signal.kind {
            SignalKind::Offer => self.on_offer(cx, signal),
            SignalKind::Answer => self.on_answer(cx, signal),
            SignalKind::Restart => {
                if self.controlling && !matches!(self.phase, Phase::Offered { .. }) {
                    // Fresh offer now (new session), whatever the back-off said; the
                    // current session carries the path until then.
                    let current = self.take_phase(now).into_session();
                    self.phase = Phase::Idle { at: now, current };
                } else {
                    cx.out.counters.signals_stale += 1;
                }
            }
            SignalKind::Close => {
                if self.phase.session_id() == Some(signal.session) {
                    self.drop_session(now, false, cx.out);
                    // The peer does not want us now: don't insist before a long back-off.
                    self.backoff = BACKOFF_MAX;
                    self.closed_by_peer = true;
                    self.phase = Phase::idle(now + BACKOFF_MAX);
                    cx.out.events.push_back(LinkEvent::Closed {
                        uid: self.info.uid,
                        jid: self.jid.clone(),
                        by_peer: true,
                    });
                } else {
                    cx.out.counters.signals_stale += 1;
                }
            }
        }
    }

    fn on_offer(&mut self, cx: &mut Ctx<'_>, offer: Signal) {
        if self.controlling {
            // We are the one who offers; an offer from them is out of role.
            cx.out.counters.signals_stale += 1;
            return;
        }
        if let Some(current) = self.phase.session().filter(|s| s.id == offer.session) {
            // Our answer was lost: send it again.
            let answer = current.signal.clone();
            cx.out.signal(self, answer);
            return;
        }
        if self.sessions.seen(offer.session) {
            cx.out.counters.signals_stale += 1;
            return;
        }
        self.sessions.remember(offer.session);
        if !cx.gatherer.is_complete(cx.now) {
            self.pending_offer = Some(offer);
            return;
        }
        self.answer(cx, offer);
    }

    fn answer(&mut self, cx: &mut Ctx<'_>, offer: Signal) {
        let now = cx.now;
        let Some(remote) = offer.credentials.clone() else {
            return;
        };
        // The old path carries traffic until the new session selects one.
        self.drop_session(now, true, cx.out);
        let mut ice = match IceLink::new(now, false, cx.gatherer.candidates(), cx.grid) {
            Ok(ice) => ice,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start ICE");
                return;
            }
        };
        match ice.start(now, &remote, &offer.candidates) {
            Ok(started) => self.use_candidates(cx, started),
            Err(e) => {
                tracing::debug!(error = %e, "bad offer");
                return;
            }
        }
        let answer = Signal {
            kind: SignalKind::Answer,
            session: offer.session,
            from: cx.own,
            credentials: Some(ice.credentials()),
            candidates: ice.candidate_lines(),
        };
        tracing::debug!(
            peer = %self.info.uid,
            session = offer.session,
            ours = ?answer.candidates,
            theirs = ?offer.candidates,
            "answering"
        );
        self.phase = Phase::Ice {
            session: Session {
                id: offer.session,
                ice,
                signal: answer.clone(),
                probing_since: None,
            },
        };
        cx.out.signal(self, answer);
    }

    /// Counts the candidates a session does not check and lets the others of the peer's
    /// candidates that need it through our relay (a few per session: a device has one
    /// server-reflexive and one relayed address per network it is on).
    fn use_candidates(&mut self, cx: &mut Ctx<'_>, started: Started) {
        let mut dropped = started.dropped;
        if started.permit.len() > PERMITS_PER_SESSION {
            dropped += started.permit.len() - PERMITS_PER_SESSION;
        }
        cx.out.counters.candidates_dropped += dropped as u64;
        self.permits = started.permit;
        self.permits.truncate(PERMITS_PER_SESSION);
        let owner = self.jid.to_bare();
        for addr in &self.permits {
            cx.gatherer.permit(cx.now, *addr, &owner);
        }
    }

    fn on_answer(&mut self, cx: &mut Ctx<'_>, answer: Signal) {
        let now = cx.now;
        let expected =
            matches!(&self.phase, Phase::Offered { session, .. } if session.id == answer.session);
        let (true, Some(remote)) = (expected, answer.credentials.as_ref()) else {
            cx.out.counters.signals_stale += 1;
            return;
        };
        let Phase::Offered { mut session, .. } = self.take_phase(now) else {
            return;
        };
        tracing::debug!(peer = %self.info.uid, session = answer.session, theirs = ?answer.candidates, "answered");
        match session.ice.start(now, remote, &answer.candidates) {
            Ok(started) => {
                self.phase = Phase::Ice { session };
                self.use_candidates(cx, started);
            }
            Err(e) => {
                tracing::debug!(error = %e, "bad answer");
                self.phase = Phase::Ice { session };
                self.fail(now, cx.out);
            }
        }
    }

    fn offer(&mut self, cx: &mut Ctx<'_>) {
        let now = cx.now;
        // The old path carries traffic until the new session selects one.
        self.drop_session(now, true, cx.out);
        let ice = match IceLink::new(now, true, cx.gatherer.candidates(), cx.grid) {
            Ok(ice) => ice,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start ICE");
                return self.fail(now, cx.out);
            }
        };
        let id = cx.rng.gen::<u64>();
        self.sessions.remember(id);
        let offer = Signal {
            kind: SignalKind::Offer,
            session: id,
            from: cx.own,
            credentials: Some(ice.credentials()),
            candidates: ice.candidate_lines(),
        };
        self.phase = Phase::Offered {
            session: Session {
                id,
                ice,
                signal: offer.clone(),
                probing_since: None,
            },
            last: now,
            tries: 1,
        };
        cx.out.counters.offers_sent += 1;
        tracing::debug!(peer = %self.info.uid, session = id, ours = ?offer.candidates, "offering");
        cx.out.signal(self, offer);
    }

    fn ask_for_offer(&mut self, cx: &mut Ctx<'_>) {
        let restart = Signal {
            kind: SignalKind::Restart,
            session: cx.rng.gen::<u64>(),
            from: cx.own,
            credentials: None,
            candidates: vec![],
        };
        cx.out.signal(self, restart);
        let current = self.take_phase(cx.now).into_session();
        self.phase = Phase::AwaitingOffer {
            asked: cx.now,
            current,
        };
    }

    /// Our relay was replaced: paths through the old relay address are gone with it, and
    /// sessions still checking offered the old one (or none): those start again.
    pub(super) fn relay_replaced(
        &mut self,
        now: Instant,
        relay: Option<SocketAddr>,
        out: &mut Outbox,
    ) {
        let stale = self.ice().is_some_and(|i| i.relay() != relay);
        let checking = self.ice().is_some_and(|i| i.selected().is_none());
        if self.up.is_some_and(|p| p.via_our_relay) {
            self.drop_session(now, false, out);
            self.restart_now(now);
        } else if stale && checking {
            self.drop_session(now, true, out);
            self.restart_now(now);
        }
    }

    /// Everything time- or state-driven. Returns false when the link closed (no longer
    /// wanted past its grace period).
    pub(super) fn step(&mut self, cx: &mut Ctx<'_>, gathered: bool) -> bool {
        let now = cx.now;
        if self.close_at.is_some_and(|at| at <= now) {
            self.close(true, cx.own, cx.out);
            return false;
        }
        if let Some(offer) = self.pending_offer.take() {
            if gathered {
                self.answer(cx, offer);
            } else {
                self.pending_offer = Some(offer);
            }
        }
        match &mut self.phase {
            Phase::Idle { at, .. } if *at <= now && gathered && self.wanted => {
                if self.controlling {
                    self.offer(cx);
                } else {
                    self.ask_for_offer(cx);
                }
            }
            Phase::Offered {
                session,
                last,
                tries,
            } if now.saturating_duration_since(*last) >= OFFER_RETRY => {
                if *tries >= OFFER_TRIES {
                    tracing::debug!(peer = %self.info.uid, "offer unanswered; backing off");
                    self.fail(now, cx.out);
                } else {
                    let offer = session.signal.clone();
                    *last = now;
                    *tries += 1;
                    cx.out.signal(self, offer);
                }
            }
            Phase::AwaitingOffer { asked, .. }
                if now.saturating_duration_since(*asked) >= OFFER_RETRY * OFFER_TRIES =>
            {
                self.fail(now, cx.out);
            }
            _ => {}
        }
        self.service_ice(cx);
        true
    }

    /// Moves the ICE session's output along and reacts to its state.
    fn service_ice(&mut self, cx: &mut Ctx<'_>) {
        let now = cx.now;
        let uid = self.info.uid;
        let Some(session) = self.phase.session_mut() else {
            return;
        };
        let ice = &mut session.ice;
        while let Some(IceOutput::Transmit {
            dst,
            via_relay,
            data,
        }) = ice.poll_output()
        {
            if via_relay {
                if !cx.gatherer.send_relayed(now, dst, &data) {
                    tracing::debug!(%dst, "relay not ready for this peer yet");
                }
            } else {
                cx.out.transmits.push_back((dst, data));
            }
        }
        let selected = ice.selected();
        let failed = ice.has_failed();
        if let Some(since) = session.probing_since {
            if ice.last_heard().is_some_and(|t| t > since) {
                // The peer answered the check: the path works.
                session.probing_since = None;
                ice.end_probe();
                cx.out.events.push_back(LinkEvent::PathConfirmed { uid });
            }
        }
        if selected != self.up && selected.is_some() {
            self.up = selected;
            self.backoff = BACKOFF_START;
            if let Some(path) = selected {
                cx.out.events.push_back(LinkEvent::Up {
                    uid: self.info.uid,
                    jid: self.jid.clone(),
                    public_key: self.info.public_key,
                    path,
                });
            }
        }
        if failed {
            tracing::debug!(peer = %self.info.uid, "ICE failed");
            cx.out.counters.ice_failures += 1;
            // No pair worked: our relay may be gone (a restarted TURN server forgets
            // allocations, and only a check finds out); the next attempt offers a live one.
            cx.gatherer.verify(now);
            self.fail(now, cx.out);
        }
    }

    /// The network changed: a new session as soon as the new candidates are in; a path that
    /// survives the change keeps carrying traffic meanwhile.
    pub(super) fn network_changed(&mut self, now: Instant, out: &mut Outbox) {
        self.drop_session(now, true, out);
        self.restart_now(now);
    }

    /// When this link next needs the manager's attention (`gathered_by`: when our
    /// candidates will be complete, if they are not yet).
    pub(super) fn deadline(&mut self, gathered_by: Option<Instant>) -> Option<Instant> {
        let phase = match &self.phase {
            // Nothing can start before our candidates are gathered.
            Phase::Idle { at, .. } if self.wanted => {
                Some(gathered_by.map_or(*at, |g| (*at).max(g)))
            }
            Phase::Offered { last, .. } => Some(*last + OFFER_RETRY),
            Phase::AwaitingOffer { asked, .. } => Some(*asked + OFFER_RETRY * OFFER_TRIES),
            _ => None,
        };
        let pending = self.pending_offer.as_ref().and(gathered_by);
        let ice = self.ice_mut().and_then(IceLink::poll_timeout);
        [self.close_at, phase, pending, ice]
            .into_iter()
            .flatten()
            .min()
    }
}

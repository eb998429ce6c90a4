//! The node's social half: the social state and the link manager, and how their outputs
//! reach the data plane, the XMPP stream and the front ends. No I/O: everything that must
//! leave goes into [`Outputs`].

use super::{Outputs, QueueSink, Transport, XmppCommand};
use crate::api::{Event, FriendAction, LinkChange, XmppStatus};
use crate::dataplane::DataPlane;
use crate::links::manager::{LinkEvent, LinkManager};
use crate::links::servers::IceServers;
use crate::path::Path;
use crate::social::payload::{DeviceInfo, SignedSignal, SIGNALS_AS_IQ_SINCE};
use crate::social::proof::{self, ProofError};
use crate::social::state::{SocialEvent, SocialState};
use crate::social::toggles::Toggles;
use crate::uid::Uid;
use crate::xmpp::session::{XmppInput, XmppState};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use xmpp_parsers::jid::{BareJid, FullJid};

use super::RequestError;
use crate::idle_grid::IdleGrid;
use crate::links::manager::LinkPolicy;
use crate::social::state::Outgoing;

/// How long a WireGuard handshake may take over a freshly selected path (boringtun retries
/// every 5 s; three tries).
const SESSION_DEADLINE: Duration = Duration::from_secs(16);

/// Devices remembered as refused an address, for counting each once.
const REFUSED_ADDRESSES_KEPT: usize = 4096;

/// What the social half starts from: the account, the servers, the policy, the saved
/// switches and this device's addresses (the shell lists them: that is I/O).
pub struct SocialSetup {
    pub jid: BareJid,
    pub servers: IceServers,
    pub policy: LinkPolicy,
    pub toggles: Toggles,
    /// This device's host candidates (addresses with the links' port).
    pub host: Vec<SocketAddr>,
}

pub(super) struct Social {
    pub(super) state: SocialState,
    pub(super) links: LinkManager,
    pub(super) xmpp_state: XmppState,
    /// Links whose path is up but whose WireGuard session is not confirmed yet: by when it
    /// must be, or the path is given up and ICE tried again.
    awaiting_session: HashMap<Uid, Instant>,
    /// Devices refused an address (counted once each; forgotten in bulk past a bound).
    refused_addresses: HashSet<Uid>,
    /// While the stream is online: when to ping the server next (a point of `grid`).
    stream_keepalive: Option<Instant>,
    grid: IdleGrid,
}

/// How often the node pings its XMPP server while online: well within the TCP idle timeouts
/// of NATs (RFC 5382 asks for two hours; mobile carriers' are minutes), on the idle grid so
/// that it shares the links' wake-up (four grid intervals).
pub const XMPP_KEEPALIVE: Duration = Duration::from_secs(100);

impl Social {
    pub(super) fn new(
        now: Instant,
        setup: SocialSetup,
        own: DeviceInfo,
        seed: u64,
        grid: IdleGrid,
    ) -> Social {
        let state = SocialState::new(setup.jid, own, setup.toggles);
        let links = LinkManager::new(now, own, setup.policy, setup.servers, setup.host)
            .with_seed(seed)
            .with_idle_grid(grid);
        Social {
            state,
            links,
            xmpp_state: XmppState::Connecting,
            awaiting_session: HashMap::new(),
            refused_addresses: HashSet::new(),
            stream_keepalive: None,
            grid,
        }
    }

    /// The stream's next keepalive after one at `since`: the last grid point before it is
    /// due (at least one grid interval on).
    fn next_stream_keepalive(&self, since: Instant) -> Instant {
        self.grid
            .keepalive(since, since + XMPP_KEEPALIVE, crate::idle_grid::IDLE_TICK)
    }

    /// Pings the server when the stream's keepalive is due.
    pub(super) fn keep_stream_alive(&mut self, now: Instant, out: &mut Outputs) {
        if self.stream_keepalive.is_some_and(|at| at <= now) {
            out.xmpp.push_back(XmppCommand::KeepAlive);
            self.stream_keepalive = Some(self.next_stream_keepalive(now));
        }
    }

    /// The address of the host candidate link checks arrive on.
    pub(super) fn local_host(&self, port: u16) -> SocketAddr {
        self.links
            .local_candidates()
            .host
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], port)))
    }

    pub(super) fn handle_xmpp(
        &mut self,
        now: Instant,
        unix: u64,
        input: XmppInput,
        dp: &mut DataPlane,
        out: &mut Outputs,
    ) {
        match input {
            XmppInput::State(state) => {
                match &state {
                    XmppState::Online { jid, resumed } => {
                        self.stream_keepalive = Some(self.next_stream_keepalive(now));
                        if *resumed {
                            self.state.handle_resumed(jid.clone());
                        } else {
                            self.state.handle_online(now, jid.clone());
                        }
                        self.links.signalling_restored(now);
                    }
                    _ => {
                        self.stream_keepalive = None;
                        self.state.handle_offline(now);
                    }
                }
                self.xmpp_state = state;
                out.events.push_back(Event::Xmpp {
                    status: self.xmpp_status(),
                });
            }
            XmppInput::Roster(items) => {
                tracing::debug!(?items, "roster");
                self.state.handle_roster(now, items)
            }
            XmppInput::RosterPush(item) => {
                tracing::debug!(?item, "roster push");
                self.state.handle_roster_push(item)
            }
            XmppInput::Presence(from, kind) => {
                tracing::debug!(%from, ?kind, "presence");
                self.state.handle_presence(now, &from, kind)
            }
            XmppInput::Signal(from, Ok(SignedSignal { signal, proof })) => {
                let to = self.state.own_full().cloned();
                let identity = dp.identity();
                let verdict = self.state.authorize_signal(&from, &signal, || match &to {
                    Some(to) => proof::verify(identity, &from, to, unix, &signal, proof.as_ref()),
                    None => Err(ProofError::Forged),
                });
                match verdict {
                    Ok(_) => {
                        // Give the device its address before anything can arrive from it;
                        // one its account has no room for gets no link either.
                        let in_use = self.in_use(dp);
                        if self.claim_address(unix, dp, &from, &signal.from.uid, &in_use) {
                            self.links.handle_signal(now, from, signal);
                        }
                    }
                    Err(reason) => tracing::debug!(?reason, "signal rejected"),
                }
            }
            XmppInput::ExternalServices(servers) => {
                self.links.use_offered_servers(now, servers);
            }
            XmppInput::Signal(_, Err(e)) => {
                tracing::debug!(error = %e, "malformed signal");
                self.state.count_malformed_signal();
            }
        }
        self.refresh_wanted(now, unix, dp);
    }

    /// Tells the link manager which devices the policy wants, giving each an address.
    /// Devices without an address (their account has no room) are not wanted.
    pub(super) fn refresh_wanted(&mut self, now: Instant, unix: u64, dp: &mut DataPlane) {
        let mut wanted = self.state.wanted_devices();
        let mut in_use = self.in_use(dp);
        in_use.extend(wanted.iter().map(|d| d.info.uid));
        wanted.retain(|device| {
            let account = device.jid.clone();
            self.claim_address(unix, dp, &account, &device.info.uid, &in_use)
        });
        self.links.set_wanted(now, &wanted);
    }

    /// Devices that must keep their addresses: those with a link or an ICE session.
    fn in_use(&self, dp: &DataPlane) -> HashSet<Uid> {
        self.links
            .devices()
            .map(|(uid, _)| uid)
            .chain(dp.linked().copied())
            .collect()
    }

    /// The address of `uid`, a device of `jid`'s account, within the account's share (see
    /// `AddressBook::claim`); false (counted once per device) when it gets none.
    fn claim_address(
        &mut self,
        unix: u64,
        dp: &mut DataPlane,
        jid: &FullJid,
        uid: &Uid,
        in_use: &HashSet<Uid>,
    ) -> bool {
        let owner = jid.to_bare().to_string();
        let book = dp.address_book_mut();
        match book.claim(*uid, Some(&owner), unix, |u| in_use.contains(u)) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, device = %uid, "no overlay address for a device");
                if self.refused_addresses.len() >= REFUSED_ADDRESSES_KEPT {
                    self.refused_addresses.clear();
                }
                if self.refused_addresses.insert(*uid) {
                    self.state.count_address_refused();
                }
                false
            }
        }
    }

    /// Packets were addressed to `uid`, which has no link (on-demand linking). The link's
    /// data-plane side is made when the next packet for it comes or its handshake arrives
    /// (`DataPlane::link_index`): a connecting link holds no WireGuard state until then.
    pub(super) fn demand(&mut self, now: Instant, uid: Uid) {
        let _ = self.links.demand(now, &uid);
    }

    pub(super) fn friend(
        &mut self,
        now: Instant,
        unix: u64,
        action: FriendAction,
        jid: BareJid,
        dp: &mut DataPlane,
    ) -> Result<(), RequestError> {
        use FriendAction as A;
        match action {
            A::Add => self.state.add_friend(now, jid)?,
            A::Accept => self.state.accept_friend(now, jid)?,
            A::Decline => self.state.decline_friend(jid)?,
            A::Remove => {
                self.links.close_account(&jid);
                self.state.remove_friend(jid)?;
            }
            A::Enable | A::Disable => {
                let on = action == A::Enable;
                self.state.set_enabled(&jid, on)?;
                if !on {
                    // Switched off: the links close at once.
                    self.links.close_account(&jid);
                }
            }
        }
        self.refresh_wanted(now, unix, dp);
        Ok(())
    }

    /// The platform (or our own check) says the network changed: the stream reconnects and
    /// every link looks for new paths from `host`.
    pub(super) fn network_changed(
        &mut self,
        now: Instant,
        host: Vec<SocketAddr>,
        out: &mut Outputs,
    ) {
        out.xmpp.push_back(XmppCommand::Reconnect);
        self.links.network_changed(now, host);
    }

    /// This device's addresses as the shell found them: if they differ from the ones the
    /// links use, the device has moved.
    pub(super) fn host_addresses(
        &mut self,
        now: Instant,
        host: Vec<SocketAddr>,
        out: &mut Outputs,
    ) {
        if host != self.links.local_candidates().host {
            tracing::info!("this device's addresses changed; finding new paths");
            self.network_changed(now, host, out);
        }
    }

    /// Carries out what the social state and the link manager produced: stanzas (signals
    /// signed), link events applied to the data plane, transmits and events queued.
    pub(super) fn settle(
        &mut self,
        now: Instant,
        unix: u64,
        dp: &mut DataPlane,
        out: &mut Outputs,
    ) {
        while let Some(stanza) = self.state.poll_outgoing() {
            out.xmpp.push_back(XmppCommand::Send(stanza));
        }
        let online = matches!(self.xmpp_state, XmppState::Online { .. });
        while let Some((to, peer, signal)) = self.links.poll_signal() {
            // Offline, a signal would only go stale in the queue; the link manager retries.
            let Some(from) = self.state.own_full().filter(|_| online) else {
                continue;
            };
            let proof = proof::sign(dp.identity(), &peer.public_key, from, &to, unix, &signal);
            let signal = SignedSignal { signal, proof };
            out.xmpp.push_back(XmppCommand::Send(Outgoing::Signal {
                to,
                signal,
                as_message: peer.version < SIGNALS_AS_IQ_SINCE,
            }));
        }
        while let Some(event) = self.links.poll_event() {
            self.apply(now, event, dp, out);
        }
        while let Some((dst, payload)) = self.links.poll_transmit() {
            out.transmits.push_back(super::Transmit { dst, payload });
        }
        let mut roster_changed = false;
        while let Some(event) = self.state.poll_event() {
            match event {
                SocialEvent::RosterChanged => roster_changed = true,
                SocialEvent::FriendRequest(jid) => out.events.push_back(Event::FriendRequest {
                    jid: jid.to_string(),
                }),
            }
        }
        if roster_changed {
            out.events.push_back(Event::RosterChanged);
        }
    }

    fn apply(&mut self, now: Instant, event: LinkEvent, dp: &mut DataPlane, out: &mut Outputs) {
        match event {
            LinkEvent::Up {
                uid,
                jid,
                public_key,
                path,
            } => {
                announce_link(
                    out,
                    uid,
                    &jid,
                    LinkChange::Up {
                        relayed: path.relayed,
                    },
                );
                tracing::info!(peer = %uid, relayed = path.relayed, "link up");
                self.awaiting_session.insert(uid, now + SESSION_DEADLINE);
                let path = if path.via_our_relay {
                    Path::relayed(path.remote)
                } else {
                    Path::direct(path.remote)
                };
                match dp.link_device(now, public_key, Some(path)) {
                    Ok(uid) => {
                        // A new path: its silence so far belongs to the old one.
                        dp.path_confirmed(&uid);
                        let mut sink = QueueSink(&mut out.transmits);
                        let mut net = Transport::new(&mut sink, Some(&mut self.links), now);
                        dp.initiate(now, &uid, &mut net);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot link a friend's device"),
                }
            }
            LinkEvent::Down { uid, jid } => {
                tracing::info!(peer = %uid, "link path lost; looking for a new one");
                announce_link(out, uid, &jid, LinkChange::PathLost);
                // A path dies when the network under it changed: if our addresses did,
                // gather again and restart every link (the platform may not have said so).
                if out.address_check.is_none() {
                    out.address_check = Some(super::AddressCheck::IfChanged);
                }
            }
            LinkEvent::Closed { uid, jid, by_peer } => {
                tracing::info!(peer = %uid, by_peer, "link closed");
                announce_link(out, uid, &jid, LinkChange::Closed { by_peer });
                self.awaiting_session.remove(&uid);
                dp.remove_peer(&uid);
            }
            LinkEvent::PathConfirmed { uid } => dp.path_confirmed(&uid),
        }
    }

    /// Paths the data plane found quiet while sending: checked or replaced.
    pub(super) fn handle_path_alarms(&mut self, now: Instant, dp: &mut DataPlane) {
        while let Some((uid, alarm)) = dp.take_path_alarm() {
            self.links.path_alarm(now, &uid, alarm);
        }
    }

    /// The next deadline of each part, and which part it is.
    pub(super) fn deadlines(&mut self) -> [(Option<Instant>, super::TimeoutReason); 3] {
        use super::TimeoutReason as R;
        [
            (
                [self.state.poll_timeout(), self.stream_keepalive]
                    .into_iter()
                    .flatten()
                    .min(),
                R::Social,
            ),
            (self.links.poll_timeout(), R::Links),
            (
                self.awaiting_session.values().min().copied(),
                R::SessionCheck,
            ),
        ]
    }

    pub(super) fn handle_timeout(&mut self, now: Instant, unix: u64, dp: &mut DataPlane) {
        let resync_due = self.state.poll_timeout().is_some_and(|t| t <= now);
        self.state.handle_timeout(now);
        if resync_due {
            self.refresh_wanted(now, unix, dp);
        }
        self.links.handle_timeout(now, |uid| dp.last_activity(uid));
        let due: Vec<Uid> = self
            .awaiting_session
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(u, _)| *u)
            .collect();
        for uid in due {
            self.awaiting_session.remove(&uid);
            if !dp.has_session(&uid) {
                self.links.path_failed(now, &uid);
            }
        }
    }

    /// Closes every link and tells each friend (the node is shutting down).
    pub(super) fn close_all(&mut self, now: Instant) {
        self.links.set_wanted(now, &[]);
        self.links.shutdown(now);
    }

    pub(super) fn xmpp_status(&self) -> XmppStatus {
        match &self.xmpp_state {
            XmppState::Connecting => XmppStatus::Connecting,
            XmppState::Online { .. } => XmppStatus::Online,
            XmppState::Offline { reason, retry_in } => XmppStatus::Offline {
                reason: reason.to_string(),
                retry_in_secs: retry_in.as_secs(),
            },
            XmppState::AuthFailed => XmppStatus::AuthFailed,
            XmppState::TokenRejected => XmppStatus::TokenRejected,
        }
    }

    pub(super) fn candidate_list(&self) -> Vec<String> {
        let c = self.links.local_candidates();
        c.host
            .iter()
            .map(|a| format!("host {a}"))
            .chain(c.srflx.map(|a| format!("srflx {a}")))
            .chain(c.relay.map(|a| format!("relay {a}")))
            .collect()
    }
}

fn announce_link(out: &mut Outputs, uid: Uid, jid: &FullJid, change: LinkChange) {
    out.events.push_back(Event::Link {
        uid: uid.to_string(),
        device: jid.to_string(),
        change,
    });
}

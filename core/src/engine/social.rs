//! The engine's social half: the XMPP session, the social state and the link manager, and
//! how their outputs reach the data plane, the socket and the server.

use super::udp_io::UdpIo;
use crate::dataplane::{DataPlane, NetSink};
use crate::links::host::host_candidates;
use crate::links::manager::{LinkEvent, LinkManager, LinkPolicy};
use crate::links::servers::IceServers;
use crate::social::payload::{DeviceInfo, SignedSignal};
use crate::social::proof::{self, ProofError};
use crate::social::state::{Outgoing, SocialEvent, SocialState, Subscription};
use crate::social::toggles::Toggles;
use crate::uid::Uid;
use crate::xmpp::connect::XmppAccount;
use crate::xmpp::session::{XmppInput, XmppSession, XmppState};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;
use std::time::Instant;
use tokio::sync::{broadcast, mpsc};
use xmpp_parsers::jid::{BareJid, FullJid};

use super::EngineError;
use crate::api::{DeviceView, Event, FriendAction, FriendView, LinkChange, XmppStatus};

/// How long a WireGuard handshake may take over a freshly selected path (boringtun retries
/// every 5 s; three tries).
const SESSION_DEADLINE: Duration = Duration::from_secs(16);

/// The account, the STUN/TURN servers and the linking policy.
#[derive(Clone, Debug)]
pub struct SocialConfig {
    pub account: XmppAccount,
    pub servers: IceServers,
    pub policy: LinkPolicy,
}

pub(super) struct Social {
    pub(super) state: SocialState,
    pub(super) links: LinkManager,
    xmpp: XmppSession,
    pub(super) inputs: mpsc::Receiver<XmppInput>,
    /// The session task has ended: stop polling its channel.
    pub(super) inputs_closed: bool,
    /// Changes for the UI (bindings, CLI progress); nobody listening is fine.
    events: broadcast::Sender<Event>,
    pub(super) xmpp_state: XmppState,
    /// Remote addresses reached through the TURN relay.
    relayed: HashSet<SocketAddr>,
    /// Links whose path is up but whose WireGuard session is not confirmed yet: by when it
    /// must be, or the path is given up and ICE tried again.
    awaiting_session: HashMap<Uid, Instant>,
    pub(super) local_host: SocketAddr,
    port: u16,
    subnet_excluded: crate::subnet::Ipv4Subnet,
    /// Devices refused an address (counted once each; forgotten in bulk past a bound).
    refused_addresses: HashSet<Uid>,
}

/// Devices remembered as refused an address, for counting each once.
const REFUSED_ADDRESSES_KEPT: usize = 4096;

impl Social {
    pub(super) fn start(
        now: Instant,
        config: SocialConfig,
        own: DeviceInfo,
        state_dir: &std::path::Path,
        dp: &DataPlane,
        port: u16,
        events: broadcast::Sender<Event>,
    ) -> Result<Social, EngineError> {
        let toggles = Toggles::open(state_dir).map_err(EngineError::Toggles)?;
        let state = SocialState::new(config.account.jid.clone(), own, toggles);
        let subnet = dp.address_book().subnet();
        let host = host_candidates(port, |ip| subnet.contains(ip));
        let local_host = host
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], port)));
        let links = LinkManager::new(now, own, config.policy, config.servers, host);
        let (xmpp, inputs) = XmppSession::spawn(config.account);
        Ok(Social {
            state,
            links,
            xmpp,
            inputs,
            inputs_closed: false,
            events,
            xmpp_state: XmppState::Connecting,
            relayed: HashSet::new(),
            awaiting_session: HashMap::new(),
            local_host,
            port,
            subnet_excluded: subnet,
            refused_addresses: HashSet::new(),
        })
    }

    pub(super) async fn shutdown(self) {
        self.xmpp.shutdown().await;
    }

    pub(super) fn handle_xmpp(&mut self, now: Instant, input: XmppInput, dp: &mut DataPlane) {
        match input {
            XmppInput::State(state) => {
                match &state {
                    XmppState::Online { jid, resumed } => {
                        if *resumed {
                            self.state.handle_resumed(jid.clone());
                        } else {
                            self.state.handle_online(now, jid.clone());
                        }
                        self.links.signalling_restored(now);
                    }
                    _ => self.state.handle_offline(now),
                }
                self.xmpp_state = state;
                let _ = self.events.send(Event::Xmpp {
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
                    Some(to) => {
                        proof::verify(identity, &from, to, unix_now(), &signal, proof.as_ref())
                    }
                    None => Err(ProofError::Forged),
                });
                match verdict {
                    Ok(_) => {
                        // Give the device its address before anything can arrive from it;
                        // one its account has no room for gets no link either.
                        let in_use = self.in_use(dp);
                        if self.claim_address(dp, &from, &signal.from.uid, &in_use) {
                            self.links.handle_signal(now, from, signal);
                        }
                    }
                    Err(reason) => tracing::debug!(?reason, "signal rejected"),
                }
            }
            XmppInput::Signal(_, Err(e)) => {
                tracing::debug!(error = %e, "malformed signal");
                self.state.count_malformed_signal();
            }
        }
        self.refresh_wanted(now, dp);
    }

    /// Tells the link manager which devices the policy wants, giving each an address.
    /// Devices without an address (their account has no room) are not wanted.
    pub(super) fn refresh_wanted(&mut self, now: Instant, dp: &mut DataPlane) {
        let mut wanted = self.state.wanted_devices();
        let mut in_use = self.in_use(dp);
        in_use.extend(wanted.iter().map(|d| d.info.uid));
        wanted.retain(|device| {
            let account = device.jid.clone();
            self.claim_address(dp, &account, &device.info.uid, &in_use)
        });
        self.links.set_wanted(now, &wanted);
        self.prepare_data_plane(now, dp);
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
        dp: &mut DataPlane,
        jid: &FullJid,
        uid: &Uid,
        in_use: &HashSet<Uid>,
    ) -> bool {
        let owner = jid.to_bare().to_string();
        let book = dp.address_book_mut();
        match book.claim(*uid, Some(&owner), unix_now(), |u| in_use.contains(u)) {
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

    /// Gives every device that is getting a link a data-plane link without a path yet, so
    /// packets sent to it meanwhile are queued for the session instead of dropped.
    fn prepare_data_plane(&mut self, now: Instant, dp: &mut DataPlane) {
        let devices: Vec<(Uid, [u8; 32])> = self.links.devices().collect();
        for (uid, key) in devices {
            if !dp.has_link(&uid) {
                if let Err(e) = dp.link_device(now, key, None) {
                    tracing::debug!(error = %e, "cannot prepare a link");
                }
            }
        }
    }

    /// Packets were addressed to `uid`, which has no link (on-demand linking).
    pub(super) fn demand(&mut self, now: Instant, uid: Uid, dp: &mut DataPlane) {
        if self.links.demand(now, &uid).is_some() {
            self.prepare_data_plane(now, dp);
        }
    }

    /// Switches a friend off (closing their links at once) or on.
    pub(super) fn set_enabled(
        &mut self,
        now: Instant,
        jid: &BareJid,
        on: bool,
        dp: &mut DataPlane,
    ) -> Result<(), EngineError> {
        self.state
            .set_enabled(jid, on)
            .map_err(EngineError::Toggles)?;
        if !on {
            self.links.close_account(jid);
        }
        self.refresh_wanted(now, dp);
        Ok(())
    }

    pub(super) fn network_changed(&mut self, now: Instant) {
        self.xmpp.reconnect();
        let subnet = self.subnet_excluded;
        let host = host_candidates(self.port, |ip| subnet.contains(ip));
        if let Some(first) = host.first() {
            self.local_host = *first;
        }
        self.links.network_changed(now, host);
    }

    /// Sends everything the social state and the link manager produced, and applies link
    /// events to the data plane.
    pub(super) fn flush(&mut self, now: Instant, dp: &mut DataPlane, udp: &UdpIo) {
        while let Some(out) = self.state.poll_outgoing() {
            self.xmpp.send(out);
        }
        let online = matches!(self.xmpp_state, XmppState::Online { .. });
        while let Some((to, peer_key, signal)) = self.links.poll_signal() {
            // Offline, a signal would only go stale in the queue; the link manager retries.
            let Some(from) = self.state.own_full().filter(|_| online) else {
                continue;
            };
            let proof = proof::sign(dp.identity(), &peer_key, from, &to, unix_now(), &signal);
            let signal = SignedSignal { signal, proof };
            self.xmpp.send(Outgoing::Signal { to, signal });
        }
        while let Some(event) = self.links.poll_event() {
            self.apply(now, event, dp, udp);
        }
        while let Some((dst, data)) = self.links.poll_transmit() {
            udp.send_now(&data, dst);
        }
        let mut roster_changed = false;
        while let Some(event) = self.state.poll_event() {
            match event {
                SocialEvent::RosterChanged => roster_changed = true,
                SocialEvent::FriendRequest(jid) => {
                    let _ = self.events.send(Event::FriendRequest {
                        jid: jid.to_string(),
                    });
                }
            }
        }
        if roster_changed {
            let _ = self.events.send(Event::RosterChanged);
        }
    }

    fn apply(&mut self, now: Instant, event: LinkEvent, dp: &mut DataPlane, udp: &UdpIo) {
        match event {
            LinkEvent::Up {
                uid,
                jid,
                public_key,
                path,
            } => {
                self.announce_link(
                    uid,
                    &jid,
                    LinkChange::Up {
                        relayed: path.relayed,
                    },
                );
                if path.via_our_relay {
                    self.relayed.insert(path.remote);
                } else {
                    self.relayed.remove(&path.remote);
                }
                tracing::info!(peer = %uid, relayed = path.relayed, "link up");
                self.awaiting_session.insert(uid, now + SESSION_DEADLINE);
                match dp.link_device(now, public_key, Some(path.remote)) {
                    Ok(uid) => {
                        // A new path: its silence so far belongs to the old one.
                        dp.path_confirmed(&uid);
                        let mut net = Transport {
                            udp,
                            social: Some(self),
                            now,
                        };
                        dp.initiate(now, &uid, &mut net);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot link a friend's device"),
                }
            }
            LinkEvent::Down { uid, jid } => {
                tracing::info!(peer = %uid, "link path lost; looking for a new one");
                self.announce_link(uid, &jid, LinkChange::PathLost);
                // A path dies when the network under it changed: if our addresses did,
                // gather again and restart every link (the platform may not have said so).
                self.check_network(now);
            }
            LinkEvent::Closed { uid, jid, by_peer } => {
                tracing::info!(peer = %uid, by_peer, "link closed");
                self.announce_link(uid, &jid, LinkChange::Closed { by_peer });
                self.awaiting_session.remove(&uid);
                if let Some(status) = dp.links().into_iter().find(|l| l.uid == uid) {
                    if let Some(endpoint) = status.endpoint {
                        self.relayed.remove(&endpoint);
                    }
                }
                dp.remove_peer(&uid);
            }
            LinkEvent::PathConfirmed { uid } => dp.path_confirmed(&uid),
        }
    }

    fn announce_link(&self, uid: Uid, jid: &FullJid, change: LinkChange) {
        let _ = self.events.send(Event::Link {
            uid: uid.to_string(),
            device: jid.to_string(),
            change,
        });
    }

    /// The machine's network may have changed: if our addresses did, restart discovery.
    pub(super) fn check_network(&mut self, now: Instant) {
        if self.host_addresses_changed() {
            tracing::info!("this device's addresses changed; finding new paths");
            self.network_changed(now);
        }
    }

    fn host_addresses_changed(&self) -> bool {
        let subnet = self.subnet_excluded;
        host_candidates(self.port, |ip| subnet.contains(ip)) != self.links.local_candidates().host
    }

    /// Paths the data plane found quiet while sending: checked or replaced.
    pub(super) fn handle_path_alarms(&mut self, now: Instant, dp: &mut DataPlane) {
        while let Some((uid, alarm)) = dp.take_path_alarm() {
            self.links.path_alarm(now, &uid, alarm);
        }
    }

    pub(super) fn friend(
        &mut self,
        now: Instant,
        action: FriendAction,
        jid: BareJid,
        dp: &mut DataPlane,
    ) -> Result<(), EngineError> {
        use FriendAction as A;
        match action {
            A::Add => self.state.add_friend(now, jid)?,
            A::Accept => self.state.accept_friend(now, jid)?,
            A::Decline => self.state.decline_friend(jid)?,
            A::Remove => {
                self.links.close_account(&jid);
                self.state.remove_friend(jid)?;
            }
            A::Enable => return self.set_enabled(now, &jid, true, dp),
            A::Disable => return self.set_enabled(now, &jid, false, dp),
        }
        self.refresh_wanted(now, dp);
        Ok(())
    }

    pub(super) fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.state.poll_timeout(),
            self.links.poll_timeout(),
            self.awaiting_session.values().min().copied(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// How far off each part's next deadline is (for the wake-up trace).
    pub(super) fn timeout_sources(&mut self, now: Instant) -> [Option<Duration>; 3] {
        let until = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(now));
        [
            until(self.state.poll_timeout()),
            until(self.links.poll_timeout()),
            until(self.awaiting_session.values().min().copied()),
        ]
    }

    pub(super) fn handle_timeout(&mut self, now: Instant, dp: &mut DataPlane) {
        let resync_due = self.state.poll_timeout().is_some_and(|t| t <= now);
        self.state.handle_timeout(now);
        if resync_due {
            self.refresh_wanted(now, dp);
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

    /// Closes every link and tells each friend (engine shutting down).
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

    /// A device's address was pinned or moved: the roster shows addresses.
    pub(super) fn address_changed(&self) {
        let _ = self.events.send(Event::RosterChanged);
    }

    pub(super) fn roster(&self, now: Instant, dp: &DataPlane) -> Vec<FriendView> {
        let links = dp.links();
        // A device shows its address, link and traffic only under the account it belongs to:
        // another account announcing a copy of it shows the copy, nothing more.
        let device_view = |account: &BareJid, resource: &str, info: Option<DeviceInfo>| {
            let uid: Option<Uid> = info.map(|i| i.uid).filter(|u| {
                self.state.owner_of(u).is_none_or(|owner| owner == account)
                    && self.links.account_of(u).is_none_or(|a| a == *account)
            });
            let traffic = uid.and_then(|u| links.iter().find(|l| l.uid == u).map(|l| l.counters));
            DeviceView {
                resource: resource.to_string(),
                socialvpn: info.is_some(),
                uid: info.map(|i| i.uid.to_string()),
                overlay_address: uid.and_then(|u| dp.address_book().address_of(&u)),
                pinned: uid
                    .and_then(|u| dp.address_book().entry(&u))
                    .is_some_and(|e| e.pinned),
                link: uid.and_then(|u| self.links.phase(now, &u)),
                traffic,
            }
        };
        let mut out: Vec<FriendView> = self
            .state
            .contacts()
            .map(|c| FriendView {
                jid: c.jid.to_string(),
                name: c.name.clone(),
                subscription: c.subscription,
                mutual: c.is_mutual(),
                pending_in: c.pending_in,
                pending_out: c.pending_out,
                enabled: self.state.is_enabled(&c.jid),
                own: false,
                // Only devices of contacts whose presence we see: what someone we merely
                // asked announces is kept for when they answer, not shown (nor pinnable).
                devices: if matches!(c.subscription, Subscription::To | Subscription::Both) {
                    c.devices
                        .values()
                        .map(|d| device_view(&c.jid, &d.resource, d.info))
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        let own_devices: Vec<DeviceView> = self
            .state
            .own_devices()
            .map(|d| device_view(self.state.own_jid(), &d.resource, d.info))
            .collect();
        if !own_devices.is_empty() {
            out.push(FriendView {
                jid: self.state.own_jid().to_string(),
                name: None,
                subscription: Subscription::Both,
                mutual: true,
                pending_in: false,
                pending_out: false,
                enabled: true,
                own: true,
                devices: own_devices,
            });
        }
        out
    }

    pub(super) fn is_relayed(&self, dst: &SocketAddr) -> bool {
        self.relayed.contains(dst)
    }
}

/// The data plane's transport: the UDP socket, or the TURN relay for relayed peers.
pub(super) struct Transport<'a> {
    pub(super) udp: &'a UdpIo,
    pub(super) social: Option<&'a mut Social>,
    pub(super) now: Instant,
}

impl NetSink for Transport<'_> {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) -> std::io::Result<()> {
        if let Some(social) = self.social.as_deref_mut() {
            if social.is_relayed(&dst) {
                if !social.links.send_relayed(self.now, dst, datagram) {
                    return Err(std::io::ErrorKind::NotConnected.into());
                }
                while let Some((to, data)) = social.links.poll_transmit() {
                    self.udp.send_now(&data, to);
                }
                return Ok(());
            }
        }
        self.udp.queue(dst, datagram);
        Ok(())
    }
}

/// Seconds since the epoch: signal proofs carry the wall-clock time (devices share no other).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

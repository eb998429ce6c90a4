//! Candidate gathering for the whole engine: host addresses, the server-reflexive address
//! (STUN binding) and one TURN allocation, all on the engine's single UDP socket. Every link
//! offers the same local candidates; TURN permissions are per remote address.

use super::permits::{Admit, Permits};
use super::retired::Retired;
use super::turn_answers::{self, AllocationVerdict, Challenge};
use crate::idle_grid::IdleGrid;
use bytes::BytesMut;
use rtc_shared::{TransportContext, TransportMessage, TransportProtocol};
use rtc_turn::client::{Client, ClientConfig, Event as TurnEvent};
use sansio::Protocol;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use xmpp_parsers::jid::BareJid;

/// How long links wait for server-reflexive and relay candidates before going without.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(3);
/// Refresh the allocation well before coturn's default 600 s lifetime.
const ALLOCATION_REFRESH_CAP: Duration = Duration::from_secs(60);

/// A TURN server with long-term credentials. (`Debug` leaves the password out.)
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServer {
    pub addr: SocketAddr,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// STUN and TURN servers from the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceServers {
    pub stun: Option<SocketAddr>,
    pub turn: Option<TurnServer>,
}

/// The candidates this device offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalCandidates {
    pub host: Vec<SocketAddr>,
    pub srflx: Option<SocketAddr>,
    pub relay: Option<SocketAddr>,
}

pub struct Gatherer {
    /// The servers in use: the configured ones, else those the XMPP server offers.
    servers: IceServers,
    /// The servers the user configured; they take precedence over offered ones.
    configured: IceServers,
    /// What the XMPP server offered last (XEP-0215): fills in what is not configured, and
    /// stands in for a configured TURN server that refuses or does not answer.
    offered: IceServers,
    client: Option<Client>,
    candidates: LocalCandidates,
    started: Instant,
    binding_pending: bool,
    allocation_pending: bool,
    pub(crate) permits: Permits,
    /// Datagrams that arrived through the relay: (peer, bytes).
    relayed_in: VecDeque<(SocketAddr, BytesMut)>,
    /// The client replaced by the last reallocation, while it releases its allocation.
    retired: Option<Retired>,
    /// The server's last challenge (realm, nonce), for requests we sign ourselves.
    challenge: Option<Challenge>,
    /// The server holds an allocation of ours from before and no challenge was known to sign
    /// its release: asked for one, the release goes when it comes.
    release_wanted: bool,
    /// Requests we built ourselves (the release of an allocation from before a restart).
    own_requests: VecDeque<BytesMut>,
    /// After a refused allocation: when to ask again, and the wait after that.
    allocate_retry: Option<(Instant, Duration)>,
    /// Our allocation is being checked (a Refresh is out): allocate again unless the server
    /// confirms it by then.
    verify_by: Option<Instant>,
    /// The relay address changed (or came late) since the link manager last asked: paths
    /// through the old one are gone, sessions that offered no relay may need it.
    relay_replaced: bool,
    /// Allocations lost and made again, for the status.
    pub(crate) reallocations: u64,
    /// Where the allocation's and permissions' refreshes are placed (see `poll_timeout`).
    grid: IdleGrid,
    /// The latest instant an input carried.
    now: Instant,
    /// The TURN client's deadlines known to be refreshes (see `poll_timeout`).
    refreshes: Vec<Instant>,
}

/// A request's next retransmission is never further than this from the latest input (rtc-turn
/// retransmits at most 1.6 s apart): a TURN client deadline further off is a refresh.
const RETRANSMIT_MAX: Duration = Duration::from_secs(2);

/// How long a Refresh that checks our allocation may go unanswered (its transaction
/// retransmits at 0.5 and 1.5 s).
const VERIFY_WAIT: Duration = Duration::from_secs(3);

/// First wait before asking again for a refused allocation; doubles up to the cap. A server
/// still holding a crashed predecessor's allocation frees it within its lifetime (600 s); a
/// clean predecessor's release may simply not have been processed yet (a quick restart).
const ALLOCATE_RETRY_FIRST: Duration = Duration::from_secs(2);
const ALLOCATE_RETRY_CAP: Duration = Duration::from_secs(300);
/// Longer than a STUN transaction retransmits (39.5 s with the default timers): a retry
/// nobody answers is not repeated while it may still be answered.
const ALLOCATE_ANSWER_WAIT: Duration = Duration::from_secs(40);

impl Gatherer {
    /// Starts gathering for a socket whose host addresses are `host`.
    pub fn start(now: Instant, servers: IceServers, host: Vec<SocketAddr>) -> Gatherer {
        let mut g = Gatherer {
            configured: servers.clone(),
            offered: IceServers::default(),
            servers,
            client: None,
            candidates: LocalCandidates {
                host,
                ..Default::default()
            },
            started: now,
            binding_pending: false,
            allocation_pending: false,
            permits: Permits::default(),
            relayed_in: VecDeque::new(),
            retired: None,
            challenge: None,
            release_wanted: false,
            own_requests: VecDeque::new(),
            allocate_retry: None,
            verify_by: None,
            relay_replaced: false,
            reallocations: 0,
            grid: IdleGrid::new(now),
            now,
            refreshes: Vec::new(),
        };
        g.begin(now);
        g
    }

    fn begin(&mut self, now: Instant) {
        let Some(server) = self
            .servers
            .turn
            .as_ref()
            .map(|t| t.addr)
            .or(self.servers.stun)
        else {
            return;
        };
        let local = self
            .candidates
            .host
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (username, password) = self
            .servers
            .turn
            .as_ref()
            .map(|t| (t.username.clone(), t.password.clone()))
            .unwrap_or_default();
        let config = ClientConfig {
            stun_serv_addr: self.servers.stun.map(|s| s.to_string()).unwrap_or_default(),
            turn_serv_addr: server.to_string(),
            local_addr: local,
            transport_protocol: TransportProtocol::UDP,
            username,
            password,
            realm: String::new(),
            software: "SocialVPN".into(),
            // RFC 8489 §6.2.1: an initial RTO above 500 ms (rtc-turn's default is 200 ms,
            // which a cellular round trip can exceed).
            rto_in_ms: 500,
            allocation_refresh_interval_cap: Some(ALLOCATION_REFRESH_CAP),
        };
        let client = rtc_ice::crypto::default_provider()
            .map_err(|e| tracing::warn!(error = %e, "no crypto provider for STUN/TURN"))
            .ok()
            .and_then(|p| {
                Client::new(config, p)
                    .map_err(|e| tracing::warn!(error = %e, "cannot create the TURN client"))
                    .ok()
            });
        let Some(mut client) = client else { return };
        if let Some(stun) = self
            .servers
            .stun
            .or(self.servers.turn.as_ref().map(|t| t.addr))
        {
            self.binding_pending = client.send_binding_request_to(now, stun).is_ok();
        }
        if self.servers.turn.is_some() {
            self.allocation_pending = client.allocate(now).is_ok();
        }
        self.client = Some(client);
    }

    /// Gathers again (after a network change) with new host addresses. The old allocation is
    /// released only if its path may still work: after a move its refresh would come from a
    /// new address, and the server refuses it anyway.
    pub fn restart(&mut self, now: Instant, host: Vec<SocketAddr>) {
        self.clock(now);
        if let Some(client) = self.client.as_mut() {
            let _ = client.close();
        }
        let configured = std::mem::take(&mut self.configured);
        let offered = std::mem::take(&mut self.offered);
        // A new network: the configured servers get their chance again.
        let servers = IceServers {
            stun: configured.stun.or(offered.stun),
            turn: configured.turn.clone().or(offered.turn.clone()),
        };
        let reallocations = self.reallocations;
        let (refused, renewals) = (self.permits.refused, self.permits.renewals);
        let had_relay = self.candidates.relay.is_some();
        *self = Gatherer::start(now, servers, host);
        self.configured = configured;
        self.offered = offered;
        self.reallocations = reallocations;
        self.permits.refused = refused;
        self.permits.renewals = renewals;
        self.relay_replaced = had_relay;
    }

    /// The XMPP server offers these STUN/TURN servers (XEP-0215): used where the user
    /// configured none. New TURN credentials (sent before the old ones expire) or a new server
    /// mean a new allocation: the old one is released, and links through it find new paths.
    pub fn use_offered(&mut self, now: Instant, offered: IceServers) {
        self.clock(now);
        let servers = IceServers {
            stun: self.configured.stun.or(offered.stun),
            turn: match self.standing_in() {
                // Standing in for the configured server: the offered one, renewed.
                true => offered.turn.clone().or(self.configured.turn.clone()),
                false => self.configured.turn.clone().or(offered.turn.clone()),
            },
        };
        self.offered = offered;
        if servers == self.servers {
            return;
        }
        tracing::debug!("STUN/TURN servers from the XMPP server");
        self.servers = servers;
        self.allocate_afresh(now);
    }

    /// A path through our relay went silent, or a peer gave up a path through it: ask the
    /// server whether the allocation still exists (a restarted TURN server forgets it). A
    /// refused or unanswered check leads to a new allocation.
    pub fn verify(&mut self, now: Instant) {
        self.clock(now);
        if self.verify_by.is_some() || self.candidates.relay.is_none() {
            return;
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        match client.refresh_allocations(now) {
            Ok(()) => {
                tracing::debug!("checking the TURN allocation");
                self.verify_by = Some(now + VERIFY_WAIT);
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot check the TURN allocation");
                self.reallocate(now);
            }
        }
    }

    /// The allocation looks gone (refused, or unanswered): allocate again. Links through the
    /// old relay address must find new paths.
    fn reallocate(&mut self, now: Instant) {
        tracing::info!("TURN allocation lost; allocating again");
        self.reallocations += 1;
        self.allocate_afresh(now);
    }

    /// The configured TURN server refused or did not answer: the one the XMPP server offers
    /// stands in (until the next network change or the next offer), if there is one. True if
    /// it does.
    fn fall_back_to_offered(&mut self, now: Instant) -> bool {
        if !self.can_stand_in() {
            return false;
        }
        self.servers.turn = self.offered.turn.clone();
        self.allocate_afresh(now);
        true
    }

    /// The offered TURN server is in use in place of a configured one.
    fn standing_in(&self) -> bool {
        self.configured.turn.is_some() && self.servers.turn != self.configured.turn
    }

    /// The configured TURN server is in use and another one is on offer.
    fn can_stand_in(&self) -> bool {
        self.configured.turn.is_some()
            && self.servers.turn == self.configured.turn
            && self.offered.turn.is_some()
            && self.servers.turn != self.offered.turn
    }

    /// Releases the allocation and asks for a new one, with a new TURN client (see
    /// [`Retired`] for why both).
    fn allocate_afresh(&mut self, now: Instant) {
        self.verify_by = None;
        // A new client, maybe another server: an old wish to release is moot.
        self.release_wanted = false;
        self.release(now);
        self.retired = self.client.take().map(|old| Retired::new(old, now));
        self.relay_replaced = true;
        self.allocate_retry = None;
        self.begin(now);
        // New ICE sessions wait for the new relay as they did at start.
        self.started = now;
    }

    /// The server holds an allocation for our address that our client does not know (we
    /// crashed and restarted on the same port): release it, so the next Allocate (its retry
    /// comes in 2 s) gets a relay now rather than when it expires. coturn refuses the first,
    /// unauthenticated Allocate so before any challenge: then an unsigned request draws one
    /// first, and the release follows its answer. Returns whether the release is on its way.
    fn release_held_allocation(&mut self) -> bool {
        let Some(turn) = self.servers.turn.as_ref() else {
            return false;
        };
        let Some(challenge) = self.challenge.as_ref() else {
            if self.release_wanted {
                // Asked once and no challenge came: this server will not let us release it.
                return false;
            }
            tracing::debug!("the TURN server holds an allocation of ours from before; asking for its challenge to release it");
            self.own_requests
                .push_back(turn_answers::challenge_request());
            self.release_wanted = true;
            return true;
        };
        self.release_wanted = false;
        let Some(request) =
            turn_answers::release_request(&turn.username, &turn.password, challenge)
        else {
            return false;
        };
        tracing::debug!("the TURN server holds an allocation of ours from before; releasing it");
        self.own_requests.push_back(request);
        true
    }

    /// Whether the relay address changed since the last call.
    pub fn take_relay_replaced(&mut self) -> bool {
        std::mem::take(&mut self.relay_replaced)
    }

    /// Releases the relay allocation (a Refresh with lifetime 0, sent by the next
    /// `poll_transmit`). A restarted device on the same port would otherwise meet its own
    /// allocation at the server until it expires (up to 10 minutes) and get no relay.
    pub fn release(&mut self, now: Instant) {
        self.clock(now);
        let (Some(relay), Some(client)) = (self.candidates.relay.take(), self.client.as_mut())
        else {
            return;
        };
        self.permits.forget_allocation();
        match client.relay(relay).and_then(|mut r| r.close(now)) {
            Ok(()) => tracing::debug!("TURN allocation released"),
            Err(e) => tracing::debug!(error = %e, "cannot release the TURN allocation"),
        }
    }

    pub fn candidates(&self) -> &LocalCandidates {
        &self.candidates
    }

    /// True once every server answered or the gathering time is up.
    /// While our allocation is being checked it is not offered either: the check ends
    /// within `VERIFY_WAIT` (usually within a round trip).
    pub fn is_complete(&self, now: Instant) -> bool {
        let gathered = (!self.binding_pending && !self.allocation_pending)
            || now.saturating_duration_since(self.started) >= GATHER_TIMEOUT;
        gathered && self.verify_by.is_none_or(|at| at <= now)
    }

    /// When gathering completes by timeout (if still pending).
    pub fn completion_deadline(&self) -> Option<Instant> {
        let gathering = (self.binding_pending || self.allocation_pending)
            .then_some(self.started + GATHER_TIMEOUT);
        [gathering, self.verify_by].into_iter().flatten().max()
    }

    /// Datagrams from these addresses belong to the STUN/TURN client.
    pub fn is_server(&self, from: SocketAddr) -> bool {
        self.client.is_some()
            && (Some(from) == self.servers.stun
                || Some(from) == self.servers.turn.as_ref().map(|t| t.addr))
    }

    pub fn handle_server_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.clock(now);
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let local = self.candidates.host.first().copied().unwrap_or(from);
        let msg = TransportMessage {
            now,
            transport: TransportContext {
                local_addr: local,
                peer_addr: from,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: BytesMut::from(data),
        };
        let turn_answers::Answer {
            verdict,
            challenge,
            held_elsewhere,
        } = turn_answers::read(data);
        let challenged = challenge.is_some();
        if challenged {
            self.challenge = challenge;
        }
        if let Some(retired) = self.retired.as_mut() {
            retired.handle_read(TransportMessage {
                now,
                transport: msg.transport,
                message: msg.message.clone(),
            });
        }
        if let Err(e) = client.handle_read(msg) {
            tracing::trace!(error = %e, "STUN/TURN datagram ignored");
        }
        let releasing = (held_elsewhere || (challenged && self.release_wanted))
            && self.release_held_allocation();
        match verdict {
            Some(AllocationVerdict::Confirmed) => self.verify_by = None,
            Some(AllocationVerdict::StaleNonce) => {
                // A restarted server has a new nonce; the client took it but does not ask
                // again: check now rather than at the next refresh (a minute on).
                match (self.verify_by, self.client.as_mut()) {
                    (Some(_), Some(client)) => {
                        let _ = client.refresh_allocations(now);
                    }
                    _ => self.verify(now),
                }
            }
            // (Answers to the release of a lost allocation come in around a new one.)
            Some(AllocationVerdict::Lost(code))
                if self.candidates.relay.is_some()
                    && now.saturating_duration_since(self.started) >= GATHER_TIMEOUT =>
            {
                tracing::debug!(code, "the TURN server no longer knows our allocation");
                self.reallocate(now);
            }
            _ => {}
        }
        self.drain_events(now, releasing);
    }

    /// `ours_held`: the datagram just read refused an Allocate because the server still holds
    /// an allocation of ours from before (437), and its release is on the way.
    fn drain_events(&mut self, now: Instant, ours_held: bool) {
        let can_stand_in = self.can_stand_in();
        let Some(client) = self.client.as_mut() else {
            return;
        };
        // Peers reaching the relay from a new port of a permitted IP (asked for below).
        let mut new_ports = Vec::new();
        // The configured TURN server refused and the offered one can stand in (below, once
        // this client is no longer borrowed).
        let mut refused = false;
        while let Some(event) = client.poll_event() {
            match event {
                TurnEvent::BindingResponse(_, addr) => {
                    tracing::debug!(%addr, "server-reflexive address");
                    self.candidates.srflx = Some(addr);
                    self.binding_pending = false;
                }
                TurnEvent::BindingError(_, e) => {
                    tracing::debug!(error = %e, "STUN binding failed");
                    self.binding_pending = false;
                }
                TurnEvent::AllocateResponse(_, addr) => {
                    tracing::debug!(%addr, "TURN relay allocated");
                    self.verify_by = None;
                    // A new allocation has no permissions: give it those still wanted.
                    self.permits.forget_allocation();
                    self.permits.retry_now(now);
                    // Sessions that started without it (a refused first allocation, a
                    // reallocation) can use it now: the link manager starts them again.
                    self.relay_replaced = true;
                    self.candidates.relay = Some(addr);
                    self.allocation_pending = false;
                    self.allocate_retry = None;
                }
                TurnEvent::AllocateError(_, e) => {
                    // Refused for our own allocation from before (a crash, a quick restart
                    // on the same port) while its release is on the way: nothing for the
                    // user to act on, and no reason to turn to another server.
                    if can_stand_in && !ours_held {
                        tracing::warn!(error = %e, "the configured TURN server refused an allocation; using the one the XMPP server offers");
                        self.allocation_pending = false;
                        refused = true;
                        continue;
                    }
                    let wait = self.allocate_retry.map_or(ALLOCATE_RETRY_FIRST, |(_, w)| w);
                    if ours_held {
                        tracing::debug!(error = %e, retry_in_secs = wait.as_secs(), "TURN allocation refused while our earlier one is released");
                    } else {
                        tracing::warn!(
                            error = %e,
                            retry_in_secs = wait.as_secs(),
                            "TURN allocation failed: relayed links are unavailable until it works"
                        );
                    }
                    self.allocation_pending = false;
                    self.allocate_retry = Some((now + wait, (wait * 2).min(ALLOCATE_RETRY_CAP)));
                }
                TurnEvent::CreatePermissionResponse(_, peer) => self.permits.granted(peer),
                TurnEvent::CreatePermissionError(_, e) => {
                    // A stale nonce gives this error once; a server that just allocated
                    // can refuse briefly. Whatever is not permitted yet is asked again.
                    let wait = self.permits.refused_by_server(now);
                    tracing::debug!(error = %e, retry_in = ?wait, "TURN permission refused");
                }
                TurnEvent::DataIndicationOrChannelData(_, peer, data) => {
                    if let Some(owner) = self.permits.covered_by_ip(&peer) {
                        new_ports.push((peer, owner));
                    }
                    self.relayed_in.push_back((peer, data));
                }
                TurnEvent::TransactionTimeout(_) => {
                    // Whatever was pending has no answer coming.
                    self.binding_pending = false;
                    self.allocation_pending = false;
                    self.permits.timed_out();
                }
                _ => {}
            }
        }
        for (peer, owner) in new_ports {
            self.permit(now, peer, &owner);
        }
        if refused {
            self.fall_back_to_offered(now);
        }
    }

    /// A datagram that came through the relay: (the peer's address, its bytes).
    pub fn poll_relayed(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.relayed_in.pop_front()
    }

    /// Allows `peer` to reach us through the relay (and us to send to it), for a device of
    /// `owner` (see [`Permits`] for the caps).
    pub fn permit(&mut self, now: Instant, peer: SocketAddr, owner: &BareJid) {
        self.clock(now);
        let (Some(relay), Some(client)) = (self.candidates.relay, self.client.as_mut()) else {
            return;
        };
        if self.permits.admit(peer, owner) != Admit::Ask {
            return;
        }
        match client
            .relay(relay)
            .and_then(|mut r| r.create_permission(now, peer))
        {
            Ok(Some(_)) => {}
            Ok(None) => self.permits.granted(peer),
            Err(e) => {
                self.permits.not_sent(peer);
                tracing::debug!(error = %e, "TURN permission request failed");
            }
        }
    }

    /// Whether a permission was refused because the allocation holds the most it may.
    pub fn take_permits_full(&mut self) -> bool {
        self.permits.take_full()
    }

    /// Sheds the permissions no ICE session uses any more: a new allocation that holds only
    /// `in_use` (see [`Permits::renew`]). Paths through the old relay address must be found
    /// again, as after a lost allocation.
    pub fn renew_permits(&mut self, now: Instant, in_use: Vec<(SocketAddr, BareJid)>) {
        self.clock(now);
        if self.candidates.relay.is_some() && self.permits.renew(now, in_use) {
            tracing::debug!("TURN permissions full; renewing the allocation");
            self.allocate_afresh(now);
        }
    }

    /// Sends `data` to `peer` through the relay; false when that is not possible (yet).
    pub fn send_relayed(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) -> bool {
        self.clock(now);
        let (Some(relay), Some(client)) = (self.candidates.relay, self.client.as_mut()) else {
            return false;
        };
        if !self.permits.is_permitted(&peer) {
            return false;
        }
        client
            .relay(relay)
            .and_then(|mut r| r.send_to(now, data, peer))
            .is_ok()
    }

    /// Datagrams for the STUN/TURN servers.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        if let Some(t) = self.retired.as_mut().and_then(Retired::poll_transmit) {
            return Some(t);
        }
        if let Some(turn) = self.servers.turn.as_ref() {
            if let Some(request) = self.own_requests.pop_front() {
                return Some((turn.addr, request));
            }
        }
        let t = self.client.as_mut()?.poll_write()?;
        Some((t.transport.peer_addr, t.message))
    }

    /// Places the refreshes on `grid` (the one every idle timer of the node shares).
    pub fn set_idle_grid(&mut self, grid: IdleGrid) {
        self.grid = grid;
    }

    /// Notes the instant of an input (for telling refreshes from retransmissions).
    fn clock(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // Refreshes may come late (the allocation lives 600 s, permissions 300 s, refreshed
        // every 60 and 120 s): at the next grid point they share the wake-up of the links'
        // keepalives, and their answers arrive while the engine gathers those (rather than
        // each a wake-up of its own, twice a minute). Retransmissions keep their time.
        let now = self.now;
        self.refreshes.retain(|at| *at >= now);
        let due = self.client.as_mut().and_then(|c| c.poll_timeout());
        let client = due.map(|at| {
            // Once seen far enough off, a deadline stays a refresh when inputs come closer
            // to it (a tick of the grid just before it, say).
            if at > now + RETRANSMIT_MAX && !self.refreshes.contains(&at) {
                self.refreshes.push(at);
            }
            if self.refreshes.contains(&at) {
                self.grid.not_before(at)
            } else {
                at
            }
        });
        [
            client,
            self.retired.as_mut().and_then(Retired::poll_timeout),
            self.completion_deadline(),
            self.allocate_retry.map(|(at, _)| at),
            self.verify_by,
            self.permits.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock(now);
        if let Some(retired) = self.retired.as_mut() {
            if !retired.handle_timeout(now) {
                self.retired = None;
            }
        }
        for (peer, owner) in self.permits.due(now) {
            self.permit(now, peer, &owner);
        }
        if self.verify_by.is_some_and(|at| at <= now) {
            tracing::debug!("the TURN server did not confirm our allocation");
            self.reallocate(now);
        }
        if now.saturating_duration_since(self.started) >= GATHER_TIMEOUT {
            // Gathering is over: whatever has not answered is done without (its deadline
            // must not stay in the past, or the engine would spin).
            if self.binding_pending || self.allocation_pending {
                tracing::debug!("STUN/TURN servers did not answer in time; going without");
            }
            self.binding_pending = false;
            let unanswered = std::mem::take(&mut self.allocation_pending);
            if unanswered && self.fall_back_to_offered(now) {
                tracing::warn!("the configured TURN server did not answer; using the one the XMPP server offers");
            }
        }
        if let Some(client) = self.client.as_mut() {
            if let Err(e) = client.handle_timeout(now) {
                tracing::trace!(error = %e, "TURN timer");
            }
            if let Some((at, wait)) = self.allocate_retry {
                if now >= at {
                    tracing::debug!("asking for a TURN allocation again");
                    // A refusal reschedules with `wait` (then doubles it), success clears it;
                    // without any answer, ask again once the request has given up.
                    self.allocate_retry = Some((now + wait.max(ALLOCATE_ANSWER_WAIT), wait));
                    let _ = client.allocate(now);
                }
            }
        }
        self.drain_events(now, false);
    }
}

#[cfg(test)]
#[path = "servers_tests.rs"]
mod tests;

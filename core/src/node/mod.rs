//! The engine as one sans-IO state machine: the data plane, and with an XMPP account the
//! social state and the link manager, joined behind `handle_*` inputs and `poll_*` outputs
//! (quinn-proto's `Connection` and connlib's `snownet::Node` are the models).
//!
//! Inputs carry their time (`now`); nothing here reads a clock, a socket, a file or the
//! interface list. The data path (`handle_tun_packet`, `handle_datagram`, `handle_timeout`)
//! writes straight into the sinks it is given, without allocating; everything else that
//! must leave is queued and taken by the shell after each wake-up, in one place:
//! [`Node::poll_transmit`] (STUN, TURN, handshakes a new path starts),
//! [`Node::poll_xmpp`] (stanzas, reconnects), [`Node::poll_event`] (for front ends),
//! [`Node::poll_write`] (state to persist), [`Node::poll_address_check`] (list this device's
//! addresses) and [`Node::poll_timeout`] (when to call `handle_timeout`, and why).

mod requests;
mod social;
mod transport;

pub use requests::RequestError;
pub use social::SocialSetup;

use crate::api::Event;
use crate::counters::DropReason;
use crate::dataplane::{DataPlane, NetSink, TunSink};
use crate::social::payload::DeviceInfo;
use crate::social::state::Outgoing;
use crate::xmpp::session::XmppInput;
use bytes::BytesMut;
use social::Social;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use transport::{QueueSink, Transport};

/// A data plane with nothing due for this long has no busy WireGuard session (see
/// [`Node::activity`]).
const DATA_PLANE_IDLE: Duration = Duration::from_secs(5);

/// See [`Node::activity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    Busy,
    Idle {
        /// The next deadline.
        next: Option<Instant>,
        /// It is a tick of the idle grid (keepalives).
        tick: bool,
    },
}

/// A datagram the node wants sent from its UDP socket.
#[derive(Debug)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub payload: BytesMut,
}

/// What the node asks of the XMPP stream.
// Stanzas are queued by value as the social state makes them; a reconnect is rare.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum XmppCommand {
    Send(Outgoing),
    /// Drop the connection and log in again (the network changed under it).
    Reconnect,
    /// Tell the server whether anyone looks at the app (XEP-0352).
    ClientActive(bool),
    /// Ping the server: the stream's keepalive, on the idle grid.
    KeepAlive,
}

/// Which part of the node asked for the next wake-up (for the wake-up trace, and tests
/// that check an idle node stays asleep).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutReason {
    /// WireGuard timers, path liveness, keepalives of the data plane's links.
    DataPlane,
    /// Roster re-syncs and friend-request repeats of the social state.
    Social,
    /// ICE, STUN and TURN of the link manager.
    Links,
    /// A link whose path is up waits for its WireGuard session.
    SessionCheck,
}

/// Everything the node queued for the shell.
#[derive(Default)]
struct Outputs {
    transmits: VecDeque<Transmit>,
    xmpp: VecDeque<XmppCommand>,
    events: VecDeque<Event>,
    /// The shell should list this device's addresses and hand them in.
    address_check: Option<AddressCheck>,
}

/// Why the node wants this device's addresses listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressCheck {
    /// A path died: if the addresses changed, the device moved
    /// ([`Node::handle_host_addresses`]).
    IfChanged,
    /// The platform said the network changed: restart whatever they are
    /// ([`Node::handle_network_changed`]).
    Restart,
}

/// Wall-clock time as last given by the shell: signal proofs carry it (devices share no
/// other clock). Monotonic time does not count a phone's sleep, so the shell gives it anew.
#[derive(Clone, Copy)]
struct WallClock {
    at: Instant,
    unix: u64,
}

pub struct Node {
    dp: DataPlane,
    social: Option<Social>,
    out: Outputs,
    /// The port of the links' UDP socket (host candidates carry it).
    port: u16,
    /// Whether a tunnel is attached (for the status).
    tunnel: bool,
    clock: WallClock,
    /// The tick every idle timer shares.
    grid: crate::idle_grid::IdleGrid,
    /// The app's screens are hidden: events only they need are held (see `Request::Background`).
    background: Option<Held>,
}

/// What changed while the app's screens were hidden.
#[derive(Default)]
struct Held {
    xmpp: bool,
    roster: bool,
}

impl Node {
    /// A node for `dp`'s identity and address book; with `social`, an XMPP account's
    /// node (the stream's state arrives through [`Node::handle_xmpp`]). `seed` seeds the
    /// link manager's session ids (random in the engine, fixed in simulations).
    pub fn new(
        now: Instant,
        unix: Duration,
        dp: DataPlane,
        social: Option<SocialSetup>,
        port: u16,
        seed: u64,
    ) -> Node {
        let mut dp = dp;
        // The data plane's idle timers and the link manager's share one tick, anchored to the
        // wall clock so that friends' devices tick at the same moments too.
        let grid = crate::idle_grid::IdleGrid::anchored(now, unix);
        dp.set_idle_grid(grid);
        let own = DeviceInfo::new(*dp.identity().public_key().as_bytes());
        Node {
            social: social.map(|setup| Social::new(now, setup, own, seed, grid)),
            dp,
            out: Outputs::default(),
            port,
            tunnel: false,
            clock: WallClock {
                at: now,
                unix: unix.as_secs(),
            },
            grid,
            background: None,
        }
    }

    /// Sets the wall-clock time (seconds since the epoch) at `now`.
    pub fn set_wall_clock(&mut self, now: Instant, unix: u64) {
        self.clock = WallClock { at: now, unix };
    }

    fn unix(&self, now: Instant) -> u64 {
        self.clock.unix + now.saturating_duration_since(self.clock.at).as_secs()
    }

    pub fn data_plane(&self) -> &DataPlane {
        &self.dp
    }

    pub fn has_account(&self) -> bool {
        self.social.is_some()
    }

    /// Whether the shell has attached a tunnel (shown in the status).
    pub fn set_tunnel(&mut self, attached: bool) {
        self.tunnel = attached;
    }

    // ---- inputs -------------------------------------------------------------------------

    /// Something from the XMPP stream: its state, the roster, a presence, a link signal.
    pub fn handle_xmpp(&mut self, now: Instant, input: XmppInput) {
        let unix = self.unix(now);
        if let Some(s) = self.social.as_mut() {
            s.handle_xmpp(now, unix, input, &mut self.dp, &mut self.out);
            s.settle(now, unix, &mut self.dp, &mut self.out);
        }
    }

    /// One IP packet read from the tun (`buf[..len]`; the rest of `buf` holds room for the
    /// UID header).
    pub fn handle_tun_packet(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
        net: &mut impl NetSink,
    ) {
        let links = self.social.as_mut().map(|s| &mut s.links);
        let mut net = Transport::new(net, links, now);
        self.dp.handle_tun_packet(now, buf, len, &mut net);
    }

    /// After a batch of tun packets: devices packets were sent to without a link get one
    /// (on-demand linking).
    pub fn end_tun_batch(&mut self, now: Instant) {
        let unix = self.unix(now);
        if let Some(s) = self.social.as_mut() {
            let mut demanded = false;
            while let Some(uid) = self.dp.take_demand() {
                s.demand(now, uid);
                demanded = true;
            }
            if demanded {
                s.settle(now, unix, &mut self.dp, &mut self.out);
            }
        }
    }

    /// A frame the shell could not hand over (too big, unreadable): counted.
    pub fn count_tun_drop(&mut self, len: usize, reason: DropReason) {
        self.dp.count_tun_drop(len, reason);
    }

    /// A loss outside the node (a failed socket send, a failed tun read): counted.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.dp.count_drop(reason);
    }

    /// `n` losses of one kind outside the node at once (a batch of sends or tun writes).
    pub fn count_drops(&mut self, reason: DropReason, n: u64) {
        self.dp.count_drops(reason, n);
    }

    /// `n` TCP ACKs whose window the shell lowered on their way to the tun.
    pub fn count_windows_clamped(&mut self, n: u64) {
        self.dp.count_windows_clamped(n);
    }

    /// One datagram that arrived on the UDP socket from `from`: STUN or TURN for the link
    /// manager, or WireGuard for the data plane.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        net: &mut impl NetSink,
        tun: &mut impl TunSink,
    ) {
        let unix = self.unix(now);
        let Some(s) = self
            .social
            .as_mut()
            .filter(|s| s.links.wants_datagram(from, datagram))
        else {
            let links = self.social.as_mut().map(|s| &mut s.links);
            let mut net = Transport::new(net, links, now);
            return self
                .dp
                .handle_net_datagram(now, from, datagram, &mut net, tun);
        };
        // Checks arrive on our first host candidate (the socket listens on all of them).
        let local = s.local_host(self.port);
        s.links.handle_datagram(now, local, from, datagram);
        // WireGuard that came through our relay, answered the same way.
        while let Some((peer, bytes)) = s.links.poll_relayed_data() {
            let mut net = Transport::new(net, Some(&mut s.links), now);
            let path = crate::path::Path::relayed(peer);
            self.dp
                .handle_net_datagram(now, path, &bytes, &mut net, tun);
        }
        s.settle(now, unix, &mut self.dp, &mut self.out);
    }

    /// The deadline from [`Node::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant, net: &mut impl NetSink) {
        let unix = self.unix(now);
        if let Some(s) = self.social.as_mut() {
            s.handle_timeout(now, unix, &mut self.dp);
            s.keep_stream_alive(now, &mut self.out);
            s.settle(now, unix, &mut self.dp, &mut self.out);
        }
        let links = self.social.as_mut().map(|s| &mut s.links);
        let mut transport = Transport::new(net, links, now);
        self.dp.handle_timeout(now, &mut transport);
        if let Some(s) = self.social.as_mut() {
            s.handle_path_alarms(now, &mut self.dp);
            s.settle(now, unix, &mut self.dp, &mut self.out);
        }
    }

    /// The platform says the network changed (or the shell's own watch does): `host` is
    /// this device's addresses now. The stream reconnects and every link looks for new
    /// paths.
    pub fn handle_network_changed(&mut self, now: Instant, host: Vec<SocketAddr>) {
        let unix = self.unix(now);
        if let Some(s) = self.social.as_mut() {
            s.network_changed(now, host, &mut self.out);
            s.settle(now, unix, &mut self.dp, &mut self.out);
        }
    }

    /// This device's addresses, as asked by [`Node::poll_address_check`]: a change means
    /// the device moved, handled as [`Node::handle_network_changed`].
    pub fn handle_host_addresses(&mut self, now: Instant, host: Vec<SocketAddr>) {
        let unix = self.unix(now);
        if let Some(s) = self.social.as_mut() {
            s.host_addresses(now, host, &mut self.out);
            s.settle(now, unix, &mut self.dp, &mut self.out);
        }
    }

    /// The node is stopping: every link closes and each friend is told (the shell then
    /// drains the outputs once more and signs off).
    pub fn close_all(&mut self, now: Instant) {
        let unix = self.unix(now);
        if let Some(s) = self.social.as_mut() {
            s.close_all(now);
            s.settle(now, unix, &mut self.dp, &mut self.out);
        }
    }

    // ---- outputs ------------------------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    pub fn poll_xmpp(&mut self) -> Option<XmppCommand> {
        self.out.xmpp.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            let event = self.out.events.pop_front()?;
            let Some(held) = self.background.as_mut() else {
                return Some(event);
            };
            match event {
                Event::Xmpp { .. } => held.xmpp = true,
                // A link's change shows in the roster (its phase).
                Event::RosterChanged | Event::Link { .. } => held.roster = true,
                other => return Some(other),
            }
        }
    }

    /// The app's screens are shown (`true`) or hidden: see `Request::Background`.
    fn set_foreground(&mut self, foreground: bool) {
        if !foreground {
            if self.background.is_none() {
                self.background = Some(Held::default());
                self.out.xmpp.push_back(XmppCommand::ClientActive(false));
            }
            return;
        }
        let Some(held) = self.background.take() else {
            return;
        };
        self.out.xmpp.push_back(XmppCommand::ClientActive(true));
        // What a screen needs to catch up, before anything newer.
        if held.roster {
            self.out.events.push_front(Event::RosterChanged);
        }
        if let (true, Some(s)) = (held.xmpp, self.social.as_ref()) {
            self.out.events.push_front(Event::Xmpp {
                status: s.xmpp_status(),
            });
        }
    }

    /// State to write (atomically, off the engine's thread): the address book when it
    /// changed.
    pub fn poll_write(&mut self) -> Option<(PathBuf, Vec<u8>)> {
        self.dp.address_book_mut().take_dirty()
    }

    /// Whether (and why) the node wants this device's addresses listed.
    pub fn poll_address_check(&mut self) -> Option<AddressCheck> {
        self.out.address_check.take()
    }

    /// When the node next needs [`Node::handle_timeout`], and which part asks.
    pub fn poll_timeout(&mut self) -> Option<(Instant, TimeoutReason)> {
        self.deadlines()
            .into_iter()
            .filter_map(|(at, reason)| at.map(|at| (at, reason)))
            .min_by_key(|(at, _)| *at)
    }

    /// Whether the node is busy or idle, for its engine's choice to stop watching the network
    /// for a moment (see the engine's `gather`). Busy: a link carried traffic in the last
    /// 20 s or waits for a handshake, or the data plane has something due within
    /// `DATA_PLANE_IDLE`. Idle: only the other parts' timers (ICE, TURN, signalling, the
    /// idle grid's ticks) are pending, the next one at `next`.
    pub fn activity(&mut self, now: Instant) -> Activity {
        // The data plane first: under traffic that is the answer, without the other parts.
        if self.dp.is_busy(now)
            || self
                .dp
                .poll_timeout()
                .is_some_and(|at| at < now + DATA_PLANE_IDLE)
        {
            return Activity::Busy;
        }
        let [_, rest @ ..] = self.deadlines();
        let next = rest.iter().filter_map(|(at, _)| *at).min();
        Activity::Idle {
            next,
            tick: next.is_some_and(|at| self.grid.is_point(at)),
        }
    }

    /// How far off each part's next deadline is (for the wake-up trace).
    pub fn timeout_sources(&mut self, now: Instant) -> [(TimeoutReason, Option<Duration>); 4] {
        self.deadlines()
            .map(|(at, r)| (r, at.map(|at| at.saturating_duration_since(now))))
    }

    fn deadlines(&mut self) -> [(Option<Instant>, TimeoutReason); 4] {
        use TimeoutReason as R;
        let [social, links, session] = match self.social.as_mut() {
            Some(s) => s.deadlines(),
            None => [(None, R::Social), (None, R::Links), (None, R::SessionCheck)],
        };
        [
            (self.dp.poll_timeout(), R::DataPlane),
            social,
            links,
            session,
        ]
    }
}

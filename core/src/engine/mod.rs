//! The tokio shell around the sans-IO state: one task owns the data plane (and, with an XMPP
//! account, the social state and the link manager), waits on the tun fd, the UDP socket, the
//! XMPP session, the next timer deadline and the command channel, and feeds whatever is ready
//! into the state machines. Reads are drained in batches until the fd would block.

mod control;
mod social;
mod tun_io;
mod udp_io;

pub use crate::links::manager::LinkPolicy;
pub use social::SocialConfig;

use crate::addrbook::{AddressBook, AddressBookError};
use crate::api::{Event, FriendAction, FriendView, LinkView, StatusView};
use crate::counters::DropReason;
use crate::dataplane::{DataPlane, PeerError};
use crate::identity::{DeviceIdentity, IdentityError};
use crate::packet::gro::Coalescer;
use crate::protect::SocketProtector;
use crate::social::payload::DeviceInfo;
use crate::subnet::{ula_address, Ipv4Subnet};
use crate::tun::TunDevice;
use crate::uid::Uid;
use social::{Social, Transport};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;
use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tun_io::{tun_readable, watch_tun, TunReader, TunWriter};
use udp_io::UdpIo;
use xmpp_parsers::jid::BareJid;

/// Packets handled from one source before the loop looks at the others again.
const BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    AddressBook(#[from] AddressBookError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("cannot open the UDP socket on {addr}: {source}")]
    Socket { addr: SocketAddr, source: io::Error },
    #[error("cannot watch the tun fd: {0}")]
    TunFd(io::Error),
    #[error("the UDP socket failed: {0}")]
    NetRecv(io::Error),
    #[error("the engine has stopped")]
    Stopped,
    #[error(transparent)]
    Toggles(#[from] crate::social::toggles::TogglesError),
    #[error("this engine has no XMPP account")]
    NoAccount,
    #[error("the platform refused to keep the engine's socket out of the VPN")]
    Protect,
    #[error("cannot start writing state in the background: {0}")]
    Persist(io::Error),
    #[error("'{0}' is not a valid JID")]
    BadJid(String),
    #[error("'{0}' is not a device id (40 hex digits)")]
    BadDevice(String),
    #[error("this front end cannot change its log level")]
    NoLogControl,
    #[error("links are made by hand only without an XMPP account")]
    NoAccountOnly,
}

/// What the engine needs to start.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Where the device key and the address book live.
    pub state_dir: PathBuf,
    /// The user's overlay subnet.
    pub subnet: Ipv4Subnet,
    /// Local address of the UDP socket the links use.
    pub listen: SocketAddr,
    /// The XMPP account and STUN/TURN servers; without it, links are configured by hand.
    pub social: Option<SocialConfig>,
    /// Called with every socket the engine opens, before use (Android `VpnService.protect`).
    pub protect: Option<SocketProtector>,
    /// Watch this machine's addresses and routes (Linux rtnetlink) and restart link
    /// discovery when they change, as after a move between networks. Apps get the
    /// platform's callbacks instead and call `network_changed`.
    pub watch_network: bool,
}

/// A friend device to link with.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub public_key: [u8; 32],
    pub endpoint: Option<SocketAddr>,
    /// Persistent keepalive in seconds, for paths through a NAT.
    pub keepalive_secs: Option<u16>,
}

/// Identity and addresses loaded from the state directory, before the tun exists (the tun
/// is configured with the addresses found here).
pub struct PreparedEngine {
    config: EngineConfig,
    identity: DeviceIdentity,
    book: AddressBook,
}

impl PreparedEngine {
    pub fn load(config: EngineConfig) -> Result<PreparedEngine, EngineError> {
        let identity = DeviceIdentity::load_or_create(&config.state_dir)?;
        let book = AddressBook::open(&config.state_dir, config.subnet)?;
        Ok(PreparedEngine {
            config,
            identity,
            book,
        })
    }

    pub fn uid(&self) -> Uid {
        self.identity.uid()
    }

    pub fn public_key(&self) -> [u8; 32] {
        *self.identity.public_key().as_bytes()
    }

    pub fn ipv4(&self) -> Ipv4Addr {
        self.book.own_address()
    }

    pub fn ipv6(&self) -> Ipv6Addr {
        ula_address(&self.identity.uid())
    }

    pub fn subnet(&self) -> Ipv4Subnet {
        self.book.subnet()
    }

    /// Binds the UDP socket and spawns the engine task on the current tokio runtime. Without a
    /// tunnel the engine logs in, keeps the roster and links, and drops packets for this device
    /// until [`Engine::attach_tunnel`] gives it one (a phone app shows friends before the VPN
    /// is switched on).
    pub fn start(self, tun: Option<TunDevice>) -> Result<Engine, EngineError> {
        let listen = self.config.listen;
        let std_socket =
            std::net::UdpSocket::bind(listen).map_err(|source| EngineError::Socket {
                addr: listen,
                source,
            })?;
        if let Some(protect) = &self.config.protect {
            use std::os::fd::AsRawFd;
            if !protect.protect(std_socket.as_raw_fd()) {
                return Err(EngineError::Protect);
            }
        }
        let udp = UdpIo::new(std_socket).map_err(|source| EngineError::Socket {
            addr: listen,
            source,
        })?;
        let local_addr = udp.local_addr().map_err(|source| EngineError::Socket {
            addr: listen,
            source,
        })?;
        let tun = tun.map(watch_tun).transpose().map_err(EngineError::TunFd)?;
        let uid = self.identity.uid();
        let public_key = self.public_key();
        let dataplane = DataPlane::new(self.identity, self.book);
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let social = match self.config.social {
            Some(mut config) => Some(social::Social::start(
                Instant::now(),
                {
                    // The XMPP connection is protected like the UDP socket.
                    if config.account.protect.is_none() {
                        config.account.protect = self.config.protect.clone();
                    }
                    config
                },
                DeviceInfo::new(public_key),
                &self.config.state_dir,
                &dataplane,
                local_addr.port(),
                events.clone(),
            )?),
            None => None,
        };
        let writer = crate::persist::Writer::new().map_err(EngineError::Persist)?;
        let netwatch = match (&social, self.config.watch_network) {
            (Some(_), true) => watch_network(),
            _ => None,
        };
        let (commands, receiver) = mpsc::channel(16);
        let (finished_tx, finished) = tokio::sync::watch::channel(false);
        let stopped_events = events.clone();
        let task_events = events.clone();
        let task = tokio::spawn(async move {
            let io = EngineIo {
                udp,
                commands: receiver,
                netwatch,
                writer,
                events: task_events,
            };
            let result = run(dataplane, social, tun, io).await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "the engine stopped");
            }
            let _ = stopped_events.send(Event::Stopped {
                error: result.as_ref().err().map(ToString::to_string),
            });
            let _ = finished_tx.send(true);
            result
        });
        Ok(Engine {
            commands,
            task,
            finished,
            events,
            uid,
            public_key,
            local_addr,
        })
    }
}

#[cfg(target_os = "linux")]
type NetWatch = crate::netwatch::NetWatch;
#[cfg(not(target_os = "linux"))]
type NetWatch = std::convert::Infallible;

/// The network watcher, if the platform has one and it opens (a failure only costs the
/// automatic restart after a move; it is logged).
fn watch_network() -> Option<NetWatch> {
    #[cfg(target_os = "linux")]
    return crate::netwatch::NetWatch::new()
        .map_err(|e| tracing::warn!(error = %e, "cannot watch network changes"))
        .ok();
    #[cfg(not(target_os = "linux"))]
    None
}

/// Resolves when the watched network changed; never without a watcher.
async fn network_change(watch: &Option<NetWatch>) -> io::Result<()> {
    match watch {
        #[cfg(target_os = "linux")]
        Some(w) => w.changed().await,
        #[cfg(not(target_os = "linux"))]
        Some(never) => match *never {},
        None => std::future::pending().await,
    }
}

/// After a change notice, changes usually come in bursts (address removed, added, routes):
/// look once they have settled.
const NETWORK_SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

enum Command {
    /// Replaces the tunnel (None: detach it, the VPN is off).
    Tunnel(Option<TunDevice>, oneshot::Sender<Result<(), EngineError>>),
    AddPeer(PeerConfig, oneshot::Sender<Result<Uid, EngineError>>),
    RemovePeer(Uid, oneshot::Sender<bool>),
    Links(oneshot::Sender<Vec<LinkView>>),
    Status(oneshot::Sender<StatusView>),
    Roster(oneshot::Sender<Result<Vec<FriendView>, EngineError>>),
    /// Pins (Some) or unpins (None) a device's address.
    Pin(
        Uid,
        Option<Ipv4Addr>,
        oneshot::Sender<Result<(), EngineError>>,
    ),
    Friend(
        FriendAction,
        BareJid,
        oneshot::Sender<Result<(), EngineError>>,
    ),
    NetworkChanged(oneshot::Sender<()>),
    /// Ends the engine task (as dropping every handle does).
    Stop(oneshot::Sender<()>),
}

/// Events kept for a slow subscriber.
const EVENT_QUEUE: usize = 64;

/// Handle to a running engine.
pub struct Engine {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Result<(), EngineError>>,
    /// Becomes true when the engine task ends.
    finished: tokio::sync::watch::Receiver<bool>,
    events: broadcast::Sender<Event>,
    uid: Uid,
    public_key: [u8; 32],
    local_addr: SocketAddr,
}

impl Engine {
    pub fn uid(&self) -> Uid {
        self.uid
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// The UDP socket's bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Gives the engine its tunnel (or a new one, as VpnService hands over after a
    /// reconfiguration); the previous fd is closed.
    pub async fn attach_tunnel(&self, tun: TunDevice) -> Result<(), EngineError> {
        self.ask(|tx| Command::Tunnel(Some(tun), tx)).await?
    }

    /// Closes the tunnel fd; the engine stays logged in and linked (packets for this device
    /// are dropped as `no_tunnel`).
    pub async fn detach_tunnel(&self) -> Result<(), EngineError> {
        self.ask(|tx| Command::Tunnel(None, tx)).await?
    }

    pub async fn add_peer(&self, peer: PeerConfig) -> Result<Uid, EngineError> {
        self.ask(|tx| Command::AddPeer(peer, tx)).await?
    }

    pub async fn remove_peer(&self, uid: Uid) -> Result<bool, EngineError> {
        self.ask(|tx| Command::RemovePeer(uid, tx)).await
    }

    /// Changes as they happen: XMPP state, roster, friend requests, links. A subscriber that
    /// falls more than the queue behind misses events (and is told so by the channel).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Resolves when the engine task has ended (by itself only after a fatal fd error).
    pub async fn stopped(&self) {
        let mut finished = self.finished.clone();
        let _ = finished.wait_for(|done| *done).await;
    }

    /// Whether the engine task has ended (on its own only after a fatal fd error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the engine and returns how its task ended.
    pub async fn shutdown(self) -> Result<(), EngineError> {
        drop(self.commands);
        self.task.await.map_err(|_| EngineError::Stopped)?
    }
}

/// What the engine task waits on and writes to besides its state.
struct EngineIo {
    udp: UdpIo,
    commands: mpsc::Receiver<Command>,
    netwatch: Option<NetWatch>,
    writer: crate::persist::Writer,
    events: broadcast::Sender<Event>,
}

async fn run(
    mut dp: DataPlane,
    mut social: Option<Social>,
    mut tun: Option<AsyncFd<TunDevice>>,
    mut io: EngineIo,
) -> Result<(), EngineError> {
    let result = run_loop(&mut dp, &mut social, &mut tun, &mut io).await;
    let EngineIo { udp, writer, .. } = io;
    if let Some(mut social) = social {
        // Tell friends the links are going away, then sign off.
        let now = Instant::now();
        social.close_all(now);
        social.flush(now, &mut dp, &udp);
        udp.flush();
        social.shutdown().await;
    }
    if let Some((path, bytes)) = dp.address_book_mut().take_dirty() {
        writer.write(path, bytes);
    }
    // Written before the engine reports that it has stopped.
    let _ = tokio::task::spawn_blocking(move || writer.finish()).await;
    result
}

async fn run_loop(
    dp: &mut DataPlane,
    social: &mut Option<Social>,
    tun: &mut Option<AsyncFd<TunDevice>>,
    io: &mut EngineIo,
) -> Result<(), EngineError> {
    let udp = &io.udp;
    let writer = &io.writer;
    let events = &io.events;
    let commands = &mut io.commands;
    let netwatch = &mut io.netwatch;
    let mut tun_reader = TunReader::new();
    let mut net_buf = vec![0u8; udp_io::RECV_BYTES].into_boxed_slice();
    let mut gro = Coalescer::default();
    // One timer for the engine's life, moved only when the next deadline moves (not on every
    // packet: re-registering a timer each wake-up is work on the latency path).
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    // When to compare our addresses after the watcher saw a change.
    let mut network_check: Option<Instant> = None;
    loop {
        // What the last wake-up queued leaves now, in as few sends as the kernel allows.
        udp.flush();
        // New addresses are written in the background.
        if let Some((path, bytes)) = dp.address_book_mut().take_dirty() {
            writer.write(path, bytes);
        }
        for _ in 0..udp.take_failed() {
            dp.count_drop(DropReason::NetSend);
        }
        let deadline = [
            dp.poll_timeout(),
            social.as_mut().and_then(|s| s.poll_timeout()),
            network_check,
        ]
        .into_iter()
        .flatten()
        .min();
        if deadline != armed {
            if let Some(at) = deadline {
                timer.as_mut().reset(at.into());
            }
            armed = deadline;
        }
        let timer_fired = async {
            match armed {
                Some(_) => timer.as_mut().await,
                None => std::future::pending().await,
            }
        };
        let xmpp_input = async {
            match social.as_mut() {
                Some(s) if !s.inputs_closed => s.inputs.recv().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            guard = tun_readable(tun) => {
                let now = Instant::now();
                let lost = match guard {
                    Ok(mut guard) => {
                        let mut net = Transport { udp, social: social.as_mut(), now };
                        tun_reader.read_batch(&mut guard, dp, udp, &mut net)
                    }
                    Err(e) => Some(e),
                };
                if let Some(error) = lost {
                    tunnel_lost(tun, events, error);
                }
                // (`net` borrowed `social` for the batch; that borrow ends here.)
                if let Some(s) = social.as_mut() {
                    let mut demanded = false;
                    while let Some(uid) = dp.take_demand() {
                        s.demand(now, uid, dp);
                        demanded = true;
                    }
                    if demanded {
                        s.flush(now, dp, udp);
                    }
                }
            }
            ready = udp.readable() => {
                ready.map_err(EngineError::NetRecv)?;
                let now = Instant::now();
                for _ in 0..BATCH {
                    // One read may bring many datagrams of `stride` bytes (UDP GRO).
                    let got = match udp.try_recv(&mut net_buf) {
                        Ok(got) => got,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP errors from earlier sends surface here; they are not fatal.
                        Err(e) if is_transient(&e) => continue,
                        Err(e) => return Err(EngineError::NetRecv(e)),
                    };
                    let from = got.from;
                    let tun_writer = &mut TunWriter {
                        tun: tun.as_ref().map(AsyncFd::get_ref),
                        gro: &mut gro,
                    };
                    for datagram in net_buf[..got.len].chunks(got.stride) {
                        match social.as_mut() {
                            Some(s) if s.links.wants_datagram(from, datagram) => {
                                let local = s.local_host;
                                s.links.handle_datagram(now, local, from, datagram);
                                // WireGuard that came through the relay, as if from the peer.
                                let relayed: Vec<_> =
                                    std::iter::from_fn(|| s.links.poll_relayed_data()).collect();
                                for (peer, bytes) in relayed {
                                    let mut net = Transport { udp, social: Some(&mut *s), now };
                                    dp.handle_net_datagram(now, peer, &bytes, &mut net, tun_writer);
                                }
                                s.flush(now, dp, udp);
                            }
                            other => {
                                let mut net = Transport { udp, social: other, now };
                                dp.handle_net_datagram(now, from, datagram, &mut net, tun_writer);
                            }
                        }
                    }
                    tun_writer.flush(dp);
                }
            }
            input = xmpp_input => {
                let now = Instant::now();
                if let Some(s) = social.as_mut() {
                    match input {
                        Some(input) => {
                            s.handle_xmpp(now, input, dp);
                            s.flush(now, dp, udp);
                        }
                        // The session task ended (it reported why); links carry on without it.
                        None => s.inputs_closed = true,
                    }
                }
            }
            changed = network_change(netwatch) => {
                match changed {
                    Ok(()) => {
                        network_check.get_or_insert(Instant::now() + NETWORK_SETTLE);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "stopped watching network changes");
                        *netwatch = None;
                    }
                }
            }
            () = timer_fired => {
                // Fired: the next deadline re-arms it, even if it is the same instant.
                armed = None;
                let now = Instant::now();
                if network_check.is_some_and(|at| at <= now) {
                    network_check = None;
                    if let Some(s) = social.as_mut() {
                        s.check_network(now);
                    }
                }
                // Every wake-up should be explainable: which part asked for it.
                tracing::trace!(
                    data_plane = ?dp.poll_timeout().map(|t| t.saturating_duration_since(now)),
                    social = ?social.as_mut().map(|s| s.timeout_sources(now)),
                    "timer"
                );
                if let Some(s) = social.as_mut() {
                    s.handle_timeout(now, dp);
                    s.flush(now, dp, udp);
                }
                let mut net = Transport { udp, social: social.as_mut(), now };
                dp.handle_timeout(now, &mut net);
                if let Some(s) = social.as_mut() {
                    s.handle_path_alarms(now, dp);
                    s.flush(now, dp, udp);
                }
            }
            command = commands.recv() => {
                let Some(command) = command else {
                    tracing::debug!("engine stopping");
                    return Ok(());
                };
                let now = Instant::now();
                if let Command::Stop(reply) = command {
                    tracing::debug!("engine stopping on request");
                    let _ = reply.send(());
                    return Ok(());
                }
                if let Command::Tunnel(new, reply) = command {
                    tracing::debug!(attached = new.is_some(), "tunnel");
                    // The old fd is deregistered and closed before the new one is watched.
                    *tun = None;
                    tun_reader.reset();
                    let watched = new.map(watch_tun).transpose().map_err(EngineError::TunFd);
                    let _ = reply.send(watched.map(|new| *tun = new));
                    continue;
                }
                handle_command(now, dp, social.as_mut(), tun.is_some(), command);
                if let Some(s) = social.as_mut() {
                    s.flush(now, dp, udp);
                }
            }
        }
    }
}

/// The tunnel failed for good: it is detached (and its fd closed), the app is told, and the
/// engine stays signed in and linked until it gets a new one.
fn tunnel_lost(
    tun: &mut Option<AsyncFd<TunDevice>>,
    events: &broadcast::Sender<Event>,
    error: io::Error,
) {
    tracing::warn!(%error, "the tunnel failed and is detached: the VPN is off until it is started again");
    *tun = None;
    let _ = events.send(Event::TunnelLost {
        reason: error.to_string(),
    });
}

fn handle_command(
    now: Instant,
    dp: &mut DataPlane,
    social: Option<&mut Social>,
    tunnel: bool,
    command: Command,
) {
    // A caller that went away no longer wants the answer: ignoring a failed reply is right.
    match command {
        // Handled by the loop, which owns the tunnel and its own end.
        Command::Tunnel(..) | Command::Stop(_) => {}
        Command::AddPeer(peer, reply) => {
            // With an account, links are the friend policy's alone: a peer added by hand
            // would bypass the switches, the cap and the roster.
            let result = match social {
                Some(_) => Err(EngineError::NoAccountOnly),
                None => dp
                    .add_peer(now, peer.public_key, peer.endpoint, peer.keepalive_secs)
                    .map_err(EngineError::from),
            };
            let _ = reply.send(result);
        }
        Command::RemovePeer(uid, reply) => {
            let _ = reply.send(dp.remove_peer(&uid));
        }
        Command::Links(reply) => {
            let links = dp
                .links()
                .into_iter()
                .map(|l| LinkView {
                    uid: l.uid.to_string(),
                    overlay_address: l.overlay_address,
                    endpoint: l.endpoint,
                    session: l.session,
                    traffic: l.counters,
                })
                .collect();
            let _ = reply.send(links);
        }
        Command::Status(reply) => {
            let book = dp.address_book();
            let status = StatusView {
                uid: dp.uid().to_string(),
                ipv4: book.own_address(),
                ipv6: ula_address(&dp.uid()),
                subnet: book.subnet().to_string(),
                tunnel,
                xmpp: social.as_ref().map(|s| s.xmpp_status()),
                counters: dp.counters(),
                social: social.as_ref().map(|s| s.state.counters()),
                links: social.as_ref().map(|s| s.links.counters()),
                candidates: social.as_ref().map(|s| s.candidate_list()),
            };
            let _ = reply.send(status);
        }
        Command::Pin(uid, address, reply) => {
            // Only a device the address book knows (seen, linked): not ours, not the
            // broadcast id, not a typo that would hold an address for good.
            let known =
                uid != dp.uid() && uid != Uid::BROADCAST && dp.address_book().entry(&uid).is_some();
            let result = if !known {
                Err(EngineError::BadDevice(uid.to_string()))
            } else {
                let book = dp.address_book_mut();
                match address {
                    Some(address) => book.pin(uid, address),
                    None => book.unpin(&uid),
                }
                .map_err(EngineError::from)
            };
            if result.is_ok() {
                if let Some(s) = social {
                    // A device refused an address before may have one now.
                    s.refresh_wanted(now, dp);
                    s.address_changed();
                }
            }
            let _ = reply.send(result);
        }
        Command::Roster(reply) => {
            let _ = reply.send(
                social
                    .map(|s| s.roster(now, dp))
                    .ok_or(EngineError::NoAccount),
            );
        }
        Command::Friend(action, jid, reply) => {
            let result = match social {
                None => Err(EngineError::NoAccount),
                Some(s) => s.friend(now, action, jid, dp),
            };
            let _ = reply.send(result);
        }
        Command::NetworkChanged(reply) => {
            if let Some(s) = social {
                s.network_changed(now);
            }
            let _ = reply.send(());
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::Interrupted
    )
}

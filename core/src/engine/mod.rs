//! The tokio shell around the sans-IO [`Node`]: one task owns the node, waits on the tun fd,
//! the UDP socket, the XMPP session, the next timer deadline and the command channel, feeds
//! whatever is ready into the node, and carries out what the node asks for in one place per
//! wake-up ([`drain`]). Reads are drained in batches until the fd would block.

mod control;
mod error;
mod event_log;
mod gather;
mod heap;
mod timer;
mod tun_io;
mod tun_thread;
mod udp_io;
mod wait;
mod window_clamp;

pub use crate::links::manager::LinkPolicy;
pub use error::{EngineError, StartError};

use crate::addrbook::AddressBook;
use crate::api::{Event, Request, Response};
use crate::counters::DropReason;
use crate::dataplane::DataPlane;
use crate::identity::DeviceIdentity;
use crate::links::host::host_candidates;
use crate::links::servers::IceServers;
use crate::node::{Activity, AddressCheck, Node, SocialSetup, XmppCommand};
use crate::packet::gro::Coalescer;
use crate::protect::SocketProtector;
use crate::subnet::{ula_address, Ipv4Subnet};
use crate::tun::TunDevice;
use crate::uid::Uid;
use crate::xmpp::connect::XmppAccount;
use crate::xmpp::session::{XmppInput, XmppSession};
use gather::{Gather, Wake};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use timer::EngineTimer;
use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tun_io::{watch_tun, TunReader, TunWriter};
use tun_thread::TunWriteThread;
use udp_io::{UdpIo, UdpSink};
use wait::{Sources, Turn, Woken};
use window_clamp::WindowClamp;

pub use event_log::EventLog;

/// The account, the STUN/TURN servers and the linking policy.
#[derive(Clone, Debug)]
pub struct SocialConfig {
    pub account: XmppAccount,
    pub servers: IceServers,
    pub policy: LinkPolicy,
}

/// Packets handled from one source before the loop looks at the others again.
const BATCH: usize = 64;

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
    pub fn load(config: EngineConfig) -> Result<PreparedEngine, StartError> {
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
    pub fn start(self, tun: Option<TunDevice>) -> Result<Engine, StartError> {
        let listen = self.config.listen;
        let std_socket =
            std::net::UdpSocket::bind(listen).map_err(|source| StartError::Socket {
                addr: listen,
                source,
            })?;
        if let Some(protect) = &self.config.protect {
            use std::os::fd::AsRawFd;
            if !protect.protect(std_socket.as_raw_fd()) {
                return Err(StartError::Protect);
            }
        }
        let udp = UdpIo::new(std_socket).map_err(|source| StartError::Socket {
            addr: listen,
            source,
        })?;
        let local_addr = udp.local_addr().map_err(|source| StartError::Socket {
            addr: listen,
            source,
        })?;
        let tun = tun.map(watch_tun).transpose().map_err(StartError::TunFd)?;
        let uid = self.identity.uid();
        let public_key = self.public_key();
        let subnet = self.book.subnet();
        let port = local_addr.port();
        let dataplane = DataPlane::new(self.identity, self.book);
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        // Subscribed before the engine runs: the log has every event from the first.
        let log = EventLog::record(events.subscribe());
        let now = Instant::now();
        let (setup, xmpp) = match self.config.social {
            Some(mut config) => {
                let toggles = crate::social::toggles::Toggles::open(&self.config.state_dir)?;
                let setup = SocialSetup {
                    jid: config.account.jid.clone(),
                    servers: config.servers,
                    policy: config.policy,
                    toggles,
                    host: host_addresses(port, subnet),
                };
                // The XMPP connection is protected like the UDP socket.
                if config.account.protect.is_none() {
                    config.account.protect = self.config.protect.clone();
                }
                (Some(setup), Some(Xmpp::start(config.account)))
            }
            None => (None, None),
        };
        let mut node = Node::new(now, unix_time(), dataplane, setup, port, rand::random());
        node.set_tunnel(tun.is_some());
        let writer = crate::persist::Writer::new().map_err(StartError::Persist)?;
        let netwatch = match (&xmpp, self.config.watch_network) {
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
                xmpp,
                port,
                subnet,
            };
            let result = run(node, tun, io).await;
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
            log,
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

/// Ready when the watched network changed.
fn poll_network_change(watch: &NetWatch, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    #[cfg(target_os = "linux")]
    return watch.poll_changed(cx);
    #[cfg(not(target_os = "linux"))]
    match *watch {}
}

/// After a change notice, changes usually come in bursts (address removed, added, routes):
/// look once they have settled.
const NETWORK_SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

enum Command {
    /// Replaces the tunnel (None: detach it, the VPN is off).
    Tunnel(Option<TunDevice>, oneshot::Sender<Result<(), EngineError>>),
    AddPeer(PeerConfig, oneshot::Sender<Result<Uid, EngineError>>),
    RemovePeer(Uid, oneshot::Sender<bool>),
    /// A control request the node answers.
    Request(Request, oneshot::Sender<Response>),
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
    /// The events, numbered, for `Request::Events`.
    log: Arc<EventLog>,
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

    /// The numbered events `Request::Events` answers from: a front end that must not hold
    /// the engine while a reply waits (the bindings' lock) answers through this.
    pub fn event_log(&self) -> Arc<EventLog> {
        Arc::clone(&self.log)
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

/// The XMPP session task and the inputs it sends.
struct Xmpp {
    session: XmppSession,
    inputs: mpsc::Receiver<XmppInput>,
    /// The session task has ended: stop polling its channel.
    closed: bool,
}

impl Xmpp {
    fn start(account: XmppAccount) -> Xmpp {
        let (session, inputs) = XmppSession::spawn(account);
        Xmpp {
            session,
            inputs,
            closed: false,
        }
    }
}

/// What the engine task waits on and writes to besides the node.
struct EngineIo {
    udp: UdpIo,
    commands: mpsc::Receiver<Command>,
    netwatch: Option<NetWatch>,
    writer: crate::persist::Writer,
    events: broadcast::Sender<Event>,
    xmpp: Option<Xmpp>,
    /// The links' port and the overlay subnet (our own addresses in it are no candidates).
    port: u16,
    subnet: Ipv4Subnet,
}

/// This device's host candidates now: its addresses with the links' port, minus those in
/// the overlay subnet (our own tun).
fn host_addresses(port: u16, subnet: Ipv4Subnet) -> Vec<SocketAddr> {
    host_candidates(port, |ip| subnet.contains(ip))
}

/// Carries out everything the node asked for since the last wake-up: the one place where
/// its outputs leave (datagrams, stanzas, events, state writes, address checks).
fn drain(now: Instant, node: &mut Node, io: &mut EngineIo) {
    loop {
        while let Some(t) = node.poll_transmit() {
            io.udp.send_now(&t.payload, t.dst);
        }
        while let Some(command) = node.poll_xmpp() {
            if let Some(x) = &io.xmpp {
                match command {
                    XmppCommand::Send(stanza) => x.session.send(stanza),
                    XmppCommand::Reconnect => x.session.reconnect(),
                    XmppCommand::ClientActive(active) => x.session.set_active(active),
                    XmppCommand::KeepAlive => x.session.keep_alive(),
                }
            }
        }
        while let Some(event) = node.poll_event() {
            // Nobody listening is fine.
            let _ = io.events.send(event);
        }
        if let Some((path, bytes)) = node.poll_write() {
            io.writer.write(path, bytes);
        }
        // Listing the addresses may bring more outputs: go round once more.
        match node.poll_address_check() {
            Some(AddressCheck::IfChanged) => {
                node.handle_host_addresses(now, host_addresses(io.port, io.subnet))
            }
            Some(AddressCheck::Restart) => {
                node.handle_network_changed(now, host_addresses(io.port, io.subnet))
            }
            None => break,
        }
    }
    node.count_drops(DropReason::NetSend, io.udp.take_failed());
}

async fn run(
    mut node: Node,
    mut tun: Option<AsyncFd<TunDevice>>,
    mut io: EngineIo,
) -> Result<(), EngineError> {
    let result = run_loop(&mut node, &mut tun, &mut io).await;
    // Tell friends the links are going away, then sign off.
    let now = wake(&mut node);
    node.close_all(now);
    drain(now, &mut node, &mut io);
    io.udp.flush();
    if let Some(xmpp) = io.xmpp.take() {
        xmpp.session.shutdown().await;
    }
    if let Some((path, bytes)) = node.poll_write() {
        io.writer.write(path, bytes);
    }
    let writer = io.writer;
    // Written before the engine reports that it has stopped.
    let _ = tokio::task::spawn_blocking(move || writer.finish()).await;
    result
}

async fn run_loop(
    node: &mut Node,
    tun: &mut Option<AsyncFd<TunDevice>>,
    io: &mut EngineIo,
) -> Result<(), EngineError> {
    let mut tun_reader = TunReader::new();
    // Writes decrypted packets beside the engine (a tun without offloads).
    let mut tun_thread = writer_thread(tun);
    // The windows of the ACKs to the tun bound what its senders may put into its ring.
    let mut window = WindowClamp::new();
    let mut net_buf = vec![0u8; udp_io::RECV_BYTES].into_boxed_slice();
    let mut gro = Coalescer::default();
    // One timer for the engine's life, moved only when the next deadline moves (not on every
    // packet: re-arming a timer each wake-up is work on the latency path).
    let mut timer = EngineTimer::new();
    // When to compare our addresses after the watcher saw a change.
    let mut network_check: Option<Instant> = None;
    // Reading what arrives after an idle tick in one go.
    let mut gather = Gather::default();
    // Free heap given back once that is over.
    let mut free_heap = heap::FreeHeap::default();
    // Which of the tun and the links' socket is looked at first.
    let mut turn = Turn::default();
    loop {
        drain(Instant::now(), node, io);
        // What the last wake-up queued leaves now, in as few sends as the kernel allows.
        io.udp.flush();
        let deadline = [
            node.poll_timeout().map(|(at, _)| at),
            network_check,
            gather.deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        if deadline != timer.armed() {
            timer.set(deadline);
        }
        let (port, subnet) = (io.port, io.subnet);
        let EngineIo {
            udp,
            commands,
            netwatch,
            xmpp,
            events,
            ..
        } = &mut *io;
        let udp = &*udp;
        let mut woke = Wake::Other;
        let woken = std::future::poll_fn(|cx| {
            turn.poll(
                cx,
                Sources {
                    tun: tun.as_ref(),
                    udp,
                    xmpp: xmpp.as_mut().filter(|x| !x.closed).map(|x| &mut x.inputs),
                    netwatch: netwatch.as_ref(),
                    timer: &mut timer,
                    commands,
                },
            )
        })
        .await;
        match woken {
            Woken::Tun { ready, failed } => {
                let now = wake(node);
                let lost = match (ready, tun.as_ref()) {
                    (Ok(()), Some(fd)) => {
                        tun_reader.read_batch(now, fd, failed, node, udp, &mut window)
                    }
                    (Ok(()), None) => None,
                    (Err(e), _) => Some(e),
                };
                if let Some(error) = lost {
                    retire_writer(&mut tun_thread, node);
                    tunnel_lost(tun, node, events, error);
                }
                node.end_tun_batch(now);
            }
            Woken::Network(ready) => {
                ready.map_err(EngineError::NetRecv)?;
                woke = Wake::Network;
                let now = wake(node);
                for _ in 0..BATCH {
                    // One read may bring many datagrams of `stride` bytes (UDP GRO).
                    let got = match udp.try_recv(&mut net_buf) {
                        Ok(got) => got,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP errors from earlier sends surface here; they are not fatal.
                        Err(e) if is_transient(&e) => continue,
                        Err(e) => return Err(EngineError::NetRecv(e)),
                    };
                    let tun_writer = &mut TunWriter::new(
                        tun.as_ref().map(AsyncFd::get_ref),
                        &mut gro,
                        tun_thread.as_ref(),
                        &mut window,
                    );
                    for datagram in net_buf[..got.len].chunks(got.stride) {
                        node.handle_datagram(
                            now,
                            got.from,
                            datagram,
                            &mut UdpSink(udp),
                            tun_writer,
                        );
                    }
                    tun_writer.flush(node);
                }
            }
            Woken::Xmpp(input) => {
                match input {
                    Some(input) => {
                        let now = wake(node);
                        node.handle_xmpp(now, input);
                    }
                    // The session task ended (it reported why); links carry on without it.
                    None => {
                        if let Some(x) = xmpp.as_mut() {
                            x.closed = true;
                        }
                    }
                }
            }
            Woken::NetworkChanged(changed) => match changed {
                Ok(()) => {
                    network_check.get_or_insert(Instant::now() + NETWORK_SETTLE);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stopped watching network changes");
                    *netwatch = None;
                }
            },
            Woken::Timer => {
                // Fired (and disarmed): the next deadline re-arms it, even the same instant.
                woke = Wake::Timer;
                let now = wake(node);
                if network_check.is_some_and(|at| at <= now) {
                    network_check = None;
                    node.handle_host_addresses(now, host_addresses(port, subnet));
                }
                // Every wake-up should be explainable: which part asked for it.
                tracing::trace!(sources = ?node.timeout_sources(now), "timer");
                node.handle_timeout(now, &mut UdpSink(udp));
            }
            Woken::Command(command) => {
                let Some(command) = command else {
                    tracing::debug!("engine stopping");
                    return Ok(());
                };
                let now = wake(node);
                match command {
                    Command::Stop(reply) => {
                        tracing::debug!("engine stopping on request");
                        let _ = reply.send(());
                        return Ok(());
                    }
                    Command::Tunnel(new, reply) => {
                        tracing::debug!(attached = new.is_some(), "tunnel");
                        // The old fd is written out, deregistered and closed before the new
                        // one is watched.
                        retire_writer(&mut tun_thread, node);
                        *tun = None;
                        tun_reader.reset();
                        let watched = new.map(watch_tun).transpose().map_err(EngineError::TunFd);
                        let _ = reply.send(watched.map(|new| *tun = new));
                        tun_thread = writer_thread(tun);
                        node.set_tunnel(tun.is_some());
                    }
                    // A caller that went away no longer wants the answer: ignoring a failed
                    // reply is right.
                    Command::AddPeer(peer, reply) => {
                        let result = node
                            .add_peer(now, peer.public_key, peer.endpoint, peer.keepalive_secs)
                            .map_err(EngineError::from);
                        let _ = reply.send(result);
                    }
                    Command::RemovePeer(uid, reply) => {
                        let _ = reply.send(node.remove_peer(&uid));
                    }
                    Command::Request(request, reply) => {
                        let _ = reply.send(node.handle_request(now, request));
                    }
                }
            }
        }
        let now = Instant::now();
        let activity = || match network_check {
            // A network change is being looked at: not a moment to stop reading.
            Some(_) => Activity::Busy,
            None => node.activity(now),
        };
        if gather.after(now, woke, activity, &mut io.udp) && free_heap.release() {
            tracing::trace!("free heap given back");
        }
    }
}

/// A writer thread for the tunnel's packets, if it writes them one by one. Without one (no
/// thread or fd to spare) the engine writes them itself, as before.
fn writer_thread(tun: &Option<AsyncFd<TunDevice>>) -> Option<TunWriteThread> {
    let tun = tun.as_ref()?.get_ref();
    TunWriteThread::for_tunnel(tun)
        .map_err(|e| tracing::debug!(error = %e, "no tun writer thread; writing on the engine's"))
        .ok()
        .flatten()
}

/// Ends the tunnel's writer thread (it writes what it holds first) and counts the writes
/// its kernel refused.
fn retire_writer(thread: &mut Option<TunWriteThread>, node: &mut Node) {
    if let Some(thread) = thread.take() {
        node.count_drops(DropReason::TunWrite, thread.finish());
    }
}

/// The tunnel failed for good: it is detached (and its fd closed), the app is told, and the
/// engine stays signed in and linked until it gets a new one.
fn tunnel_lost(
    tun: &mut Option<AsyncFd<TunDevice>>,
    node: &mut Node,
    events: &broadcast::Sender<Event>,
    error: io::Error,
) {
    tracing::warn!(%error, "the tunnel failed and is detached: the VPN is off until it is started again");
    *tun = None;
    node.set_tunnel(false);
    let _ = events.send(Event::TunnelLost {
        reason: error.to_string(),
    });
}

/// The time of a wake-up, given to the node with the wall clock: monotonic time does not
/// count a device's sleep, and signal proofs made or checked right after one carry wall time.
fn wake(node: &mut Node) -> Instant {
    let now = Instant::now();
    node.set_wall_clock(now, unix_now());
    now
}

/// Seconds since the epoch, for the node's wall clock.
fn unix_now() -> u64 {
    unix_time().as_secs()
}

/// The wall clock, since the Unix epoch (zero for a clock set before it).
fn unix_time() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
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

//! A simulated world for sans-IO nodes in virtual time: an underlay with latency, loss and
//! NATs (endpoint-independent mapping, address-and-port-dependent filtering, no hairpin),
//! a STUN server, and an XMPP server ([`xmpp::Server`]). Nothing here sleeps or opens a
//! socket; time advances to the next thing that happens.
//!
//! Underlay addresses are in 198.18.0.0/15, overlay ones in 100.64.0.0/10. Loss, jitter,
//! device keys and session ids follow the world's seed; hash-map orders inside the nodes
//! do not.

#![allow(dead_code)]

pub mod turn;
pub mod xmpp;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use socialvpn_core::addrbook::AddressBook;
use socialvpn_core::api::{Event, FriendView, LinkPhase, Request, Response, StatusView};
use socialvpn_core::dataplane::{DataPlane, NetSink, TunSink};
use socialvpn_core::identity::DeviceIdentity;
use socialvpn_core::links::manager::LinkPolicy;
use socialvpn_core::links::servers::IceServers;
use socialvpn_core::node::{AddressCheck, Node, SocialSetup, TimeoutReason, XmppCommand};
use socialvpn_core::packet::uid_header::UID_HEADER_LEN;
use socialvpn_core::social::toggles::Toggles;
use socialvpn_core::xmpp::session::{XmppInput, XmppState};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xmpp_parsers::jid::FullJid;

/// The port every node's socket uses.
pub const PORT: u16 = 4500;
pub const STUN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 19, 255, 3)), 3478);
/// The TURN server, and the address its relayed ports are on.
pub const TURN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 19, 255, 4)), 3478);
pub const TURN_RELAY_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 5);
const TURN_USER: &str = "sim";
const TURN_PASSWORD: &str = "sim-secret";
const SUBNET: &str = "100.64.0.0/16";
/// Wake-ups of one node in a row at the same instant after which the world calls it a spin.
const SPIN: u32 = 10_000;

struct Datagram {
    at: Instant,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

/// A NAT: an inside /24 and one public address.
pub struct Nat {
    pub public: Ipv4Addr,
    inside: [u8; 3],
    /// Address-and-port-dependent mapping: every destination gets its own public port (a
    /// server-reflexive address is then useless to friends; only a relay joins them).
    symmetric: bool,
    /// (Inside address, destination if symmetric) → public port.
    mappings: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// Public port → inside address and the remotes it sent to (filtering).
    ports: HashMap<u16, (SocketAddr, HashSet<SocketAddr>)>,
    next_port: u16,
}

impl Nat {
    fn is_inside(&self, ip: Ipv4Addr) -> bool {
        ip.octets()[..3] == self.inside
    }

    fn outbound(&mut self, src: SocketAddr, dst: SocketAddr) -> SocketAddr {
        let key = (src, self.symmetric.then_some(dst));
        let port = match self.mappings.get(&key) {
            Some(p) => *p,
            None => {
                let p = self.next_port;
                self.next_port += 1;
                self.mappings.insert(key, p);
                self.ports.insert(p, (src, HashSet::new()));
                p
            }
        };
        if let Some((_, remotes)) = self.ports.get_mut(&port) {
            remotes.insert(dst);
        }
        SocketAddr::from((self.public, port))
    }

    fn inbound(&self, from: SocketAddr, port: u16) -> Option<SocketAddr> {
        let (inside, remotes) = self.ports.get(&port)?;
        remotes.contains(&from).then_some(*inside)
    }
}

/// What a node's data-path sinks collect during one input.
#[derive(Default)]
struct Sinks {
    sent: Vec<(SocketAddr, Vec<u8>)>,
    written: Vec<Vec<u8>>,
}

struct NetOut<'a>(&'a mut Vec<(SocketAddr, Vec<u8>)>);
impl NetSink for NetOut<'_> {
    fn send_to(&mut self, dst: SocketAddr, d: &[u8]) -> io::Result<()> {
        self.0.push((dst, d.to_vec()));
        Ok(())
    }
}
struct TunOut<'a>(&'a mut Vec<Vec<u8>>);
impl TunSink for TunOut<'_> {
    fn write_packet(&mut self, p: &[u8]) -> io::Result<()> {
        self.0.push(p.to_vec());
        Ok(())
    }
}

pub struct SimNode {
    pub name: String,
    pub jid: FullJid,
    pub node: Option<Node>,
    pub host: SocketAddr,
    pub nat: Option<usize>,
    pub dir: PathBuf,
    /// Packets written to this node's tun.
    pub delivered: Vec<Vec<u8>>,
    pub events: Vec<Event>,
    /// Timer wake-ups and which part asked.
    pub wakeups: Vec<(Instant, TimeoutReason)>,
    /// When datagrams reached this node (each one a wake-up of an idle engine, unless it
    /// arrives while the engine is still awake).
    pub arrivals: Vec<Instant>,
    /// When the node asked its stream to ping the server.
    pub stream_keepalives: Vec<Instant>,
    /// When the node (re)connects to the XMPP server.
    connect_at: Option<Instant>,
    /// Timer wake-ups in a row at one instant.
    same_instant: (Instant, u32),
}

pub struct World {
    pub now: Instant,
    pub nodes: Vec<SimNode>,
    pub nats: Vec<Nat>,
    pub xmpp: xmpp::Server,
    /// The TURN server; every node is configured with it.
    pub turn: turn::TurnServer,
    in_flight: Vec<Datagram>,
    pub latency: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    rng: StdRng,
    seed: u64,
    /// Nodes started so far.
    boots: u64,
    _root: tempfile::TempDir,
    /// Datagrams dropped by loss, by NAT filtering, or for nobody.
    pub dropped: u64,
}

/// Takes what is due at `now` out of `queue`, in order of arrival.
pub fn take_due<T>(queue: &mut Vec<T>, now: Instant, at: impl Fn(&T) -> Instant) -> Vec<T> {
    let mut due = Vec::new();
    let mut i = 0;
    while i < queue.len() {
        if at(&queue[i]) <= now {
            due.push(queue.swap_remove(i));
        } else {
            i += 1;
        }
    }
    due.sort_by_key(|x| at(x));
    due
}

pub fn jid(s: &str) -> FullJid {
    s.parse().expect("a full JID")
}

impl World {
    pub fn new(seed: u64) -> World {
        // RUST_LOG=socialvpn_core=debug shows what the nodes do (virtual time is not shown).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        World {
            now: Instant::now(),
            nodes: Vec::new(),
            nats: Vec::new(),
            xmpp: xmpp::Server::new(Duration::from_millis(15)),
            turn: turn::TurnServer::new(TURN, TURN_RELAY_IP, TURN_USER, TURN_PASSWORD, "sim"),
            in_flight: Vec::new(),
            latency: Duration::from_millis(20),
            loss: 0.0,
            rng: StdRng::seed_from_u64(seed),
            seed,
            boots: 0,
            _root: tempfile::tempdir().expect("a temporary directory"),
            dropped: 0,
        }
    }

    /// A cone NAT with public address 198.19.0.`n` and inside 198.18.`n`.0/24.
    pub fn add_nat(&mut self, n: u8) -> usize {
        self.nat(n, false)
    }

    /// A symmetric NAT (a new public port per destination), numbered as [`World::add_nat`].
    pub fn add_symmetric_nat(&mut self, n: u8) -> usize {
        self.nat(n, true)
    }

    fn nat(&mut self, n: u8, symmetric: bool) -> usize {
        // 198.19.255.0/24 holds the servers; every NAT has an address of its own.
        assert!(n < 255, "NAT numbers stay below the servers' 255");
        assert!(
            self.nats.iter().all(|x| x.public.octets()[3] != n),
            "NAT {n} exists already"
        );
        self.nats.push(Nat {
            public: Ipv4Addr::new(198, 19, 0, n),
            inside: [198, 18, n],
            symmetric,
            mappings: HashMap::new(),
            ports: HashMap::new(),
            next_port: 20_000,
        });
        self.nats.len() - 1
    }

    /// A node logged in as `jid` at `host` (behind `nat`, if any).
    pub fn add_node(
        &mut self,
        name: &str,
        jid_s: &str,
        host: Ipv4Addr,
        nat: Option<usize>,
    ) -> usize {
        let dir = self._root.path().join(name);
        std::fs::create_dir_all(&dir).expect("a state directory");
        // The device key follows the seed too: who controls ICE (the smaller id) is part of
        // a run, and a failing seed must fail again.
        let mut key = [0u8; 32];
        StdRng::seed_from_u64(self.seed ^ (self.nodes.len() as u64 + 1).wrapping_mul(0x9e37))
            .fill(&mut key);
        std::fs::write(dir.join("device.key"), format!("{}\n", hex::encode(key)))
            .expect("a device key");
        let i = self.nodes.len();
        self.nodes.push(SimNode {
            name: name.to_string(),
            jid: jid(jid_s),
            node: None,
            host: SocketAddr::from((host, PORT)),
            nat,
            dir,
            delivered: Vec::new(),
            events: Vec::new(),
            wakeups: Vec::new(),
            arrivals: Vec::new(),
            stream_keepalives: Vec::new(),
            connect_at: None,
            same_instant: (self.now, 0),
        });
        self.boot(i);
        i
    }

    /// Starts node `i` from its state directory (again, after [`World::crash`]).
    pub fn boot(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let identity = DeviceIdentity::load_or_create(&n.dir).expect("an identity");
        let book = AddressBook::open(&n.dir, SUBNET.parse().expect("a subnet")).expect("a book");
        let dp = DataPlane::new(identity, book);
        let setup = SocialSetup {
            jid: n.jid.to_bare(),
            servers: IceServers {
                stun: Some(STUN),
                turn: Some(socialvpn_core::links::servers::TurnServer {
                    addr: TURN,
                    username: TURN_USER.into(),
                    password: TURN_PASSWORD.into(),
                }),
            },
            policy: LinkPolicy::default(),
            toggles: Toggles::open(&n.dir).expect("toggles"),
            host: vec![n.host],
        };
        // Every start draws new session ids, as a process does.
        self.boots += 1;
        let seed = self.seed.wrapping_mul(31).wrapping_add(self.boots);
        n.node = Some(Node::new(
            self.now,
            Duration::from_secs(1_800_000_000),
            dp,
            Some(setup),
            PORT,
            seed,
        ));
        n.connect_at = Some(self.now);
        n.same_instant = (self.now, 0);
    }

    /// Node `i` stops at once, as a killed process: nothing is said, nothing is written.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].node = None;
        self.nodes[i].connect_at = None;
        let jid = self.nodes[i].jid.clone();
        self.xmpp.disconnect(self.now, &jid);
    }

    pub fn node(&mut self, i: usize) -> &mut Node {
        self.nodes[i].node.as_mut().expect("a running node")
    }

    pub fn ask(&mut self, i: usize, request: Request) -> Response {
        let now = self.now;
        let r = self.node(i).handle_request(now, request);
        self.drain(i);
        r
    }

    pub fn status(&mut self, i: usize) -> StatusView {
        match self.ask(i, Request::Status) {
            Response::Status { status } => *status,
            other => panic!("no status: {other:?}"),
        }
    }

    pub fn roster(&mut self, i: usize) -> Vec<FriendView> {
        match self.ask(i, Request::Roster) {
            Response::Roster { friends } => friends,
            other => panic!("no roster: {other:?}"),
        }
    }

    /// The link phase of `to`'s device at `from`, if `from` knows it.
    pub fn phase(&mut self, from: usize, to: usize) -> Option<LinkPhase> {
        let uid = self.uid(to);
        self.roster(from)
            .into_iter()
            .flat_map(|f| f.devices)
            .find(|d| d.uid.as_deref() == Some(uid.as_str()))
            .and_then(|d| d.link)
    }

    pub fn connected(&mut self, from: usize, to: usize) -> bool {
        matches!(self.phase(from, to), Some(LinkPhase::Connected { .. }))
    }

    pub fn uid(&mut self, i: usize) -> String {
        self.node(i).data_plane().uid().to_string()
    }

    /// `to`'s overlay address in `from`'s network.
    pub fn address_of(&mut self, from: usize, to: usize) -> Option<Ipv4Addr> {
        let uid = self.node(to).data_plane().uid();
        self.node(from).data_plane().address_book().address_of(&uid)
    }

    pub fn own_address(&mut self, i: usize) -> Ipv4Addr {
        self.node(i).data_plane().address_book().own_address()
    }

    /// Writes a UDP packet from `from`'s own address to `to`'s address in `from`'s network
    /// into `from`'s tun, carrying `payload`.
    pub fn send_packet(&mut self, from: usize, to: usize, payload: &[u8]) {
        let src = self.own_address(from);
        let dst = self
            .address_of(from, to)
            .expect("an address for the friend");
        let mut packet = Vec::new();
        etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
            .udp(5000, 5001)
            .write(&mut packet, payload)
            .expect("a packet");
        let len = packet.len();
        packet.resize(len + UID_HEADER_LEN, 0);
        let now = self.now;
        let mut sinks = Sinks::default();
        let node = self.nodes[from].node.as_mut().expect("a running node");
        node.handle_tun_packet(now, &mut packet, len, &mut NetOut(&mut sinks.sent));
        node.end_tun_batch(now);
        self.after(from, sinks);
    }

    /// Payloads of the UDP packets node `i`'s tun received.
    pub fn received(&self, i: usize) -> Vec<Vec<u8>> {
        self.nodes[i]
            .delivered
            .iter()
            .filter_map(|p| {
                let sliced = etherparse::SlicedPacket::from_ip(p).ok()?;
                match sliced.transport {
                    Some(etherparse::TransportSlice::Udp(u)) => Some(u.payload().to_vec()),
                    _ => None,
                }
            })
            .collect()
    }

    /// Hands node `i` a datagram from `from` as if it had come past its NAT (an attacker
    /// who knows the mapping).
    pub fn inject_datagram(&mut self, i: usize, from: SocketAddr, payload: Vec<u8>) {
        let now = self.now;
        let mut sinks = Sinks::default();
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        node.handle_datagram(
            now,
            from,
            &payload,
            &mut NetOut(&mut sinks.sent),
            &mut TunOut(&mut sinks.written),
        );
        self.after(i, sinks);
    }

    /// Hands node `i` an input from its XMPP stream (as if the server had sent it).
    pub fn inject_xmpp(&mut self, i: usize, input: XmppInput) {
        let now = self.now;
        if let Some(node) = self.nodes[i].node.as_mut() {
            node.handle_xmpp(now, input);
            self.drain(i);
        }
    }

    /// Moves node `i` to a new host address (it learns only through its own checks).
    pub fn move_host(&mut self, i: usize, host: Ipv4Addr, nat: Option<usize>) {
        self.nodes[i].host = SocketAddr::from((host, PORT));
        self.nodes[i].nat = nat;
    }

    /// Carries out what node `i` asked for, and what its data-path sinks collected.
    fn after(&mut self, i: usize, sinks: Sinks) {
        let src = self.nodes[i].host;
        for (dst, payload) in sinks.sent {
            self.send(src, dst, payload);
        }
        self.nodes[i].delivered.extend(sinks.written);
        self.drain(i);
    }

    fn drain(&mut self, i: usize) {
        let now = self.now;
        loop {
            let src = self.nodes[i].host;
            let host = vec![self.nodes[i].host];
            let jid = self.nodes[i].jid.clone();
            let Some(node) = self.nodes[i].node.as_mut() else {
                return;
            };
            let mut transmits = Vec::new();
            while let Some(t) = node.poll_transmit() {
                transmits.push((t.dst, t.payload.to_vec()));
            }
            let mut stanzas = Vec::new();
            let mut reconnect = false;
            let mut keepalive = false;
            while let Some(c) = node.poll_xmpp() {
                match c {
                    XmppCommand::Send(s) => stanzas.push(s),
                    XmppCommand::Reconnect => reconnect = true,
                    // The simulated server holds nothing for inactive clients.
                    XmppCommand::ClientActive(_) => {}
                    XmppCommand::KeepAlive => keepalive = true,
                }
            }
            let mut events = Vec::new();
            while let Some(e) = node.poll_event() {
                events.push(e);
            }
            while let Some((path, bytes)) = node.poll_write() {
                std::fs::write(path, bytes).expect("state written");
            }
            let check = node.poll_address_check();
            match check {
                Some(AddressCheck::IfChanged) => node.handle_host_addresses(now, host),
                Some(AddressCheck::Restart) => node.handle_network_changed(now, host),
                None => {}
            }
            self.nodes[i].events.extend(events);
            if keepalive {
                self.nodes[i].stream_keepalives.push(now);
            }
            for (dst, payload) in transmits {
                self.send(src, dst, payload);
            }
            for s in stanzas {
                self.xmpp.handle(now, &jid, s);
            }
            if reconnect {
                self.xmpp.disconnect(now, &jid);
                self.nodes[i].connect_at = Some(now + Duration::from_millis(200));
            }
            if check.is_none() {
                return;
            }
        }
    }

    /// Puts a datagram on the underlay (through the sender's NAT, if any).
    fn send(&mut self, src: SocketAddr, dst: SocketAddr, payload: Vec<u8>) {
        let SocketAddr::V4(src4) = src else { return };
        let SocketAddr::V4(dst4) = dst else { return };
        let nat = self.nats.iter().position(|n| n.is_inside(*src4.ip()));
        let src = match nat {
            // Inside to inside of one NAT: the LAN, untranslated.
            Some(n) if self.nats[n].is_inside(*dst4.ip()) => src,
            Some(n) => self.nats[n].outbound(src, dst),
            None => src,
        };
        if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
            self.dropped += 1;
            return;
        }
        let jitter = Duration::from_micros(self.rng.gen_range(0..2000));
        self.in_flight.push(Datagram {
            at: self.now + self.latency + jitter,
            src,
            dst,
            payload,
        });
    }

    fn arrive(&mut self, d: Datagram) {
        let SocketAddr::V4(dst4) = d.dst else { return };
        if d.dst == STUN {
            return self.answer_stun(d);
        }
        let out = if d.dst == TURN {
            Some(self.turn.handle_client(self.now, d.src, &d.payload))
        } else if *dst4.ip() == TURN_RELAY_IP {
            Some(self.turn.handle_peer(self.now, d.src, d.dst, &d.payload))
        } else {
            None
        };
        if let Some(out) = out {
            for (src, dst, payload) in out {
                self.send(src, dst, payload);
            }
            return;
        }
        let dst = match self.nats.iter().position(|n| n.public == *dst4.ip()) {
            Some(n) => match self.nats[n].inbound(d.src, d.dst.port()) {
                Some(inside) => inside,
                None => {
                    self.dropped += 1;
                    return;
                }
            },
            None => d.dst,
        };
        let Some(i) = self
            .nodes
            .iter()
            .position(|n| n.host == dst && n.node.is_some())
        else {
            self.dropped += 1;
            return;
        };
        let now = self.now;
        self.nodes[i].arrivals.push(now);
        let mut sinks = Sinks::default();
        let node = self.nodes[i].node.as_mut().expect("running");
        node.handle_datagram(
            now,
            d.src,
            &d.payload,
            &mut NetOut(&mut sinks.sent),
            &mut TunOut(&mut sinks.written),
        );
        self.after(i, sinks);
    }

    fn answer_stun(&mut self, d: Datagram) {
        use rtc_stun::fingerprint::FINGERPRINT;
        use rtc_stun::message::{
            Message, MessageType, Setter, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_BINDING,
        };
        use rtc_stun::xoraddr::XorMappedAddress;
        let mut request = Message::new();
        request.raw = d.payload;
        if request.decode().is_err()
            || request.typ.class != CLASS_REQUEST
            || request.typ.method != METHOD_BINDING
        {
            self.dropped += 1;
            return;
        }
        let setters: [Box<dyn Setter>; 4] = [
            Box::new(request.transaction_id),
            Box::new(MessageType::new(METHOD_BINDING, CLASS_SUCCESS_RESPONSE)),
            Box::new(XorMappedAddress {
                ip: d.src.ip(),
                port: d.src.port(),
            }),
            Box::new(FINGERPRINT),
        ];
        let mut response = Message::new();
        if response.build(&setters).is_ok() {
            self.send(STUN, d.src, response.raw);
        }
    }

    /// The next instant anything happens.
    fn next_event(&mut self) -> Option<Instant> {
        let mut next: Vec<Instant> = self.in_flight.iter().map(|d| d.at).collect();
        next.extend(self.xmpp.next_delivery());
        for n in &mut self.nodes {
            if let Some(node) = n.node.as_mut() {
                next.extend(n.connect_at);
                next.extend(node.poll_timeout().map(|(at, _)| at));
            }
        }
        next.into_iter().min()
    }

    /// Runs the world until `stop` holds (checked after every step) or `limit` of virtual
    /// time has passed; returns whether `stop` held.
    pub fn run_until(&mut self, limit: Duration, mut stop: impl FnMut(&mut World) -> bool) -> bool {
        let end = self.now + limit;
        // Steps at one instant in a row: something is due that nothing handles.
        let mut stuck = 0u32;
        loop {
            if stop(self) {
                return true;
            }
            let Some(next) = self.next_event().filter(|t| *t <= end) else {
                self.now = end;
                return stop(self);
            };
            stuck = if next > self.now { 0 } else { stuck + 1 };
            assert!(stuck < 100_000, "the world is stuck at one instant");
            self.now = self.now.max(next);
            self.step();
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    fn step(&mut self) {
        let now = self.now;
        for d in take_due(&mut self.in_flight, now, |d| d.at) {
            self.arrive(d);
        }
        for (n, input) in self.xmpp.take_due(now) {
            if matches!(input, XmppInput::State(XmppState::Offline { .. })) {
                // The session task logs in again by itself, every few seconds.
                self.nodes[n].connect_at = Some(now + Duration::from_secs(5));
            }
            if let Some(node) = self.nodes[n].node.as_mut() {
                node.handle_xmpp(now, input);
                self.drain(n);
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].connect_at.is_some_and(|t| t <= now) && self.nodes[i].node.is_some() {
                let jid = self.nodes[i].jid.clone();
                if self.xmpp.connect(now, i, jid) {
                    self.nodes[i].connect_at = None;
                } else {
                    // The server is away: try again, as the session task would.
                    self.nodes[i].connect_at = Some(now + Duration::from_secs(5));
                }
            }
            let due = self.nodes[i]
                .node
                .as_mut()
                .and_then(|n| n.poll_timeout())
                .filter(|(at, _)| *at <= now);
            if let Some((_, reason)) = due {
                let n = &mut self.nodes[i];
                n.wakeups.push((now, reason));
                if n.same_instant.0 == now {
                    n.same_instant.1 += 1;
                    assert!(
                        n.same_instant.1 < SPIN,
                        "{} spins: woken {SPIN} times at one instant by {reason:?}",
                        n.name
                    );
                } else {
                    n.same_instant = (now, 0);
                }
                let mut sinks = Sinks::default();
                let node = n.node.as_mut().expect("running");
                node.handle_timeout(now, &mut NetOut(&mut sinks.sent));
                self.after(i, sinks);
            }
        }
    }
}

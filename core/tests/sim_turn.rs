//! The simulated TURN server against the project's real STUN/TURN client (the link manager's
//! `Gatherer`, rtc-turn inside), in memory and virtual time: it gathers a relay and a
//! reflexive address, gives up politely on a wrong password, notices a restarted server, and
//! relays both ways through permissions and a channel. The server's refusals are checked
//! with hand-built requests, and arbitrary bytes never make it panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use proptest::prelude::*;
use rtc_stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use rtc_stun::error_code::ErrorCodeAttribute;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    Getter, Message, MessageType, Method, Setter, TransactionId, CLASS_REQUEST, METHOD_ALLOCATE,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH,
};
use rtc_stun::textattrs::TextAttribute;
use rtc_turn::proto::channum::ChannelNumber;
use rtc_turn::proto::lifetime::Lifetime;
use rtc_turn::proto::peeraddr::PeerAddress;
use rtc_turn::proto::relayaddr::RelayedAddress;
use rtc_turn::proto::reqtrans::RequestedTransport;
use rtc_turn::proto::PROTO_UDP;
use sim::turn::TurnServer;
use socialvpn_core::links::servers::{Gatherer, IceServers, TurnServer as TurnConfig};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use xmpp_parsers::jid::BareJid;

const SERVER: SocketAddr = addr([198, 19, 0, 4], 3478);
const RELAY_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 4);
/// The client's socket, behind a NAT that maps it to `PUBLIC`.
const HOST: SocketAddr = addr([198, 18, 1, 2], 4500);
const PUBLIC: SocketAddr = addr([198, 19, 0, 1], 20_000);
const PEER: SocketAddr = addr([198, 19, 0, 2], 20_000);
const USER: &str = "svpn";
const PASSWORD: &str = "turnpass";
const REALM: &str = "sim.example";
const LATENCY: Duration = Duration::from_millis(10);

const fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(std::net::SocketAddrV4::new(
        Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
        port,
    ))
}

struct Flight {
    at: Instant,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

/// One gatherer, the server and peers on an underlay with `LATENCY`.
struct Sim {
    now: Instant,
    server: TurnServer,
    g: Gatherer,
    in_flight: Vec<Flight>,
    /// Datagrams the client sent to the server.
    sent: Vec<Vec<u8>>,
    /// Datagrams the server sent to the client.
    received: Vec<Vec<u8>>,
    /// What reached peers: (relayed address, peer, payload).
    at_peers: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Timer wake-ups at one instant in a row.
    same_instant: (Instant, u32),
    /// Until then the client's uplink is down: what it sends vanishes.
    cut_until: Option<Instant>,
    /// Servers that exist and never answer (an offered TURN server): what the client sends
    /// them is counted here; anywhere else but `SERVER` is a fault.
    silent: Vec<SocketAddr>,
    sent_to_silent: usize,
}

/// The client's configuration: the simulated server as its TURN server.
fn turn_at_server(password: &str) -> IceServers {
    IceServers {
        stun: None,
        turn: Some(TurnConfig {
            addr: SERVER,
            username: USER.into(),
            password: password.into(),
        }),
    }
}

impl Sim {
    fn new(password: &str) -> Sim {
        let now = Instant::now();
        Sim {
            now,
            server: TurnServer::new(SERVER, RELAY_IP, USER, PASSWORD, REALM),
            g: Gatherer::start(now, turn_at_server(password), vec![HOST]),
            in_flight: Vec::new(),
            sent: Vec::new(),
            received: Vec::new(),
            at_peers: Vec::new(),
            same_instant: (now, 0),
            cut_until: None,
            silent: Vec::new(),
            sent_to_silent: 0,
        }
    }

    fn put(&mut self, out: Vec<(SocketAddr, SocketAddr, Vec<u8>)>) {
        for (src, dst, payload) in out {
            self.in_flight.push(Flight {
                at: self.now + LATENCY,
                src,
                dst,
                payload,
            });
        }
    }

    fn arrive(&mut self, f: Flight) {
        let now = self.now;
        if f.dst == SERVER {
            self.sent.push(f.payload.clone());
            let out = self.server.handle_client(now, f.src, &f.payload);
            self.put(out);
        } else if f.dst.ip() == RELAY_IP {
            let out = self.server.handle_peer(now, f.src, f.dst, &f.payload);
            self.put(out);
        } else if f.dst == PUBLIC {
            assert_eq!(f.src, SERVER, "only the server talks to the client");
            self.received.push(f.payload.clone());
            self.g.handle_server_datagram(now, f.src, &f.payload);
        } else {
            assert!(f.src.ip() == RELAY_IP, "peers hear only relayed addresses");
            self.at_peers.push((f.src, f.dst, f.payload));
        }
    }

    /// What the gatherer wants sent goes out through the NAT.
    fn pump(&mut self) {
        while let Some((dst, bytes)) = self.g.poll_transmit() {
            if self.silent.contains(&dst) {
                self.sent_to_silent += 1;
                continue;
            }
            assert_eq!(dst, SERVER);
            if self.cut_until.is_some_and(|t| self.now < t) {
                continue;
            }
            self.put(vec![(PUBLIC, dst, bytes.to_vec())]);
        }
    }

    fn run_until(&mut self, limit: Duration, mut stop: impl FnMut(&mut Sim) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            self.pump();
            if stop(self) {
                return true;
            }
            let timer = self.g.poll_timeout();
            let next = self.in_flight.iter().map(|f| f.at).chain(timer).min();
            let Some(next) = next.filter(|t| *t <= end) else {
                self.now = end;
                return stop(self);
            };
            self.now = self.now.max(next);
            let now = self.now;
            for f in sim::take_due(&mut self.in_flight, now, |f| f.at) {
                self.arrive(f);
            }
            if self.g.poll_timeout().is_some_and(|t| t <= now) {
                if self.same_instant.0 == now {
                    self.same_instant.1 += 1;
                    assert!(self.same_instant.1 < 1000, "the gatherer spins");
                } else {
                    self.same_instant = (now, 0);
                }
                self.g.handle_timeout(now);
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    fn relay(&self) -> Option<SocketAddr> {
        self.g.candidates().relay
    }

    fn allocated() -> (Sim, SocketAddr) {
        let mut s = Sim::new(PASSWORD);
        assert!(s.run_until(Duration::from_secs(1), |s| s.relay().is_some()));
        let relay = s.relay().unwrap();
        (s, relay)
    }

    /// `from` sends `payload` to `to` (a relayed address) and the world runs a second.
    fn peer_sends(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        self.in_flight.push(Flight {
            at: self.now + LATENCY,
            src: from,
            dst: to,
            payload: payload.to_vec(),
        });
        self.run_for(Duration::from_secs(1));
    }

    fn relayed_in(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::iter::from_fn(|| self.g.poll_relayed())
            .map(|(p, b)| (p, b.to_vec()))
            .collect()
    }
}

fn is_channel_data(p: &[u8]) -> bool {
    p.first().is_some_and(|b| (0x40..0x80).contains(b))
}

#[test]
fn the_client_gets_a_relay_and_its_reflexive_address_and_keeps_them() {
    let (mut s, relay) = Sim::allocated();
    assert!(s.server.is_relay(relay));
    assert_eq!(relay.ip(), RELAY_IP);
    assert_eq!(s.g.candidates().srflx, Some(PUBLIC));
    assert_eq!(s.g.candidates().host, vec![HOST]);
    assert!(s.g.is_complete(s.now));
    assert_eq!((s.server.allocations_made(), s.server.refused()), (1, 0));

    // Refreshes keep it well past its 600 s lifetime; nothing is refused on the way.
    s.run_for(Duration::from_secs(1800));
    assert_eq!(s.relay(), Some(relay));
    assert!(s.server.is_relay(relay));
    assert_eq!((s.server.allocations_made(), s.server.refused()), (1, 0));
}

#[test]
fn a_wrong_password_gets_no_relay_and_the_client_does_not_hammer() {
    let mut s = Sim::new("not the password");
    s.run_for(Duration::from_secs(60));
    assert_eq!(s.relay(), None);
    assert_eq!(
        s.g.candidates().srflx,
        Some(PUBLIC),
        "Binding needs no credentials"
    );
    assert!(s.g.is_complete(s.now), "links go on without a relay");
    assert_eq!(s.server.allocations_made(), 0);
    let refused = s.server.refused();
    assert!(refused >= 1);
    // A Binding, then per attempt an anonymous and an authenticated Allocate; attempts
    // back off from 2 s (0, 2, 6, 14, 30 s).
    assert!(
        s.sent.len() <= 12,
        "{} requests in 60 s ({refused} refused)",
        s.sent.len()
    );
}

#[test]
fn a_restarted_server_is_noticed_by_the_next_refresh() {
    let (mut s, old) = Sim::allocated();
    s.server.restart();
    assert!(!s.server.is_relay(old));
    let t = s.now;
    // Refreshes go every 60 s: the first meets the new nonce (438), the next one 437.
    assert!(s.run_until(Duration::from_secs(150), |s| s
        .relay()
        .is_some_and(|r| r != old)));
    let new = s.relay().unwrap();
    assert!(s.server.is_relay(new));
    assert_eq!(s.server.allocations_made(), 2);
    assert!(
        s.now - t <= Duration::from_secs(125),
        "noticed after {:?}",
        s.now - t
    );
}

#[test]
fn a_restarted_server_is_noticed_at_once_when_the_relay_is_checked() {
    let (mut s, old) = Sim::allocated();
    s.run_for(Duration::from_secs(10));
    s.server.restart();
    // What the link manager does when a path through the relay goes silent.
    s.g.verify(s.now);
    let t = s.now;
    assert!(s.run_until(Duration::from_secs(5), |s| s
        .relay()
        .is_some_and(|r| r != old)));
    assert!(s.now - t < Duration::from_secs(1), "took {:?}", s.now - t);
    assert!(s.server.is_relay(s.relay().unwrap()));
    assert_eq!(s.server.allocations_made(), 2);
}

/// A crash and a quick restart on the same port: the server still holds the old process's
/// allocation for our address and refuses a new one (437) — until it expires, ten minutes
/// on. The new client releases the allocation it never knew and gets a relay at once.
#[test]
fn a_restart_after_a_crash_gets_a_relay_at_once() {
    let (mut s, old) = Sim::allocated();
    s.run_for(Duration::from_secs(5));
    // Killed: nothing released. The same address starts again.
    s.g = Gatherer::start(s.now, turn_at_server(PASSWORD), vec![HOST]);
    let t = s.now;
    assert!(
        s.run_until(Duration::from_secs(60), |s| s.relay().is_some()),
        "no relay after the restart: {} refused",
        s.server.refused()
    );
    eprintln!("relay {:?} after the restart", s.now - t);
    assert!(s.now - t < Duration::from_secs(5), "took {:?}", s.now - t);
    assert!(!s.server.is_relay(old), "the old allocation still lives");
    assert_eq!(s.server.allocations_made(), 2);
}

/// The same restart with a TURN server the XMPP server offers beside the configured one:
/// the configured server's refusal (437, our own allocation) is not the refusal the offered
/// server stands in for — the release heals it, and the relay is the configured server's.
#[test]
fn a_restart_after_a_crash_keeps_the_configured_turn_server() {
    let (mut s, old) = Sim::allocated();
    s.run_for(Duration::from_secs(5));
    s.g = Gatherer::start(s.now, turn_at_server(PASSWORD), vec![HOST]);
    let offered = addr([198, 19, 0, 44], 3478);
    s.silent.push(offered);
    let now = s.now;
    s.g.use_offered(
        now,
        IceServers {
            stun: None,
            // Nobody answers there: standing in would leave the client without a relay.
            turn: Some(TurnConfig {
                addr: offered,
                username: "offered".into(),
                password: "offered-pass".into(),
            }),
        },
    );
    let t = s.now;
    assert!(
        s.run_until(Duration::from_secs(60), |s| s.relay().is_some()),
        "no relay after the restart: {} refused",
        s.server.refused()
    );
    assert!(s.now - t < Duration::from_secs(5), "took {:?}", s.now - t);
    assert!(
        s.server.is_relay(s.relay().unwrap()),
        "not the configured server's relay"
    );
    assert!(!s.server.is_relay(old), "the old allocation still lives");
    assert_eq!(s.sent_to_silent, 0, "turned to the offered server");
}

/// The check of our allocation goes unanswered because our own uplink is down, not the
/// server: the allocation still exists there. The client releases it (once the uplink is
/// back, by retransmission) before allocating anew — a new Allocate from the same address
/// would be refused while the old allocation lives, for up to its 10-minute lifetime.
#[test]
fn an_unanswered_check_releases_the_old_allocation_and_a_new_one_follows_soon() {
    let (mut s, old) = Sim::allocated();
    s.run_for(Duration::from_secs(10));
    s.cut_until = Some(s.now + Duration::from_secs(4));
    s.g.verify(s.now);
    let t = s.now;
    assert!(
        s.run_until(Duration::from_secs(60), |s| s
            .relay()
            .is_some_and(|r| r != old)),
        "no new relay: {} refused",
        s.server.refused()
    );
    eprintln!("new relay {:?} after the check", s.now - t);
    assert!(s.now - t < Duration::from_secs(15), "took {:?}", s.now - t);
    assert!(
        !s.server.is_relay(old),
        "the old allocation was not released"
    );
    assert_eq!(s.server.allocations_made(), 2);
}

#[test]
fn data_is_relayed_both_ways_through_a_permission_and_a_channel() {
    let (mut s, relay) = Sim::allocated();
    let owner: BareJid = "friend@example.net".parse().unwrap();
    let now = s.now;
    s.g.permit(now, PEER, &owner);
    s.run_for(Duration::from_secs(1));

    // Peer → client: a Data indication (no channel yet).
    s.peer_sends(PEER, relay, b"hello");
    assert_eq!(s.relayed_in(), vec![(PEER, b"hello".to_vec())]);
    assert!(!is_channel_data(s.received.last().unwrap()));
    // The permission is per IP: another port of the peer gets through, a stranger does not.
    let other_port = addr([198, 19, 0, 2], 20_001);
    s.peer_sends(other_port, relay, b"other port");
    assert_eq!(s.relayed_in(), vec![(other_port, b"other port".to_vec())]);
    s.peer_sends(addr([198, 19, 0, 9], 20_000), relay, b"stranger");
    assert_eq!(s.relayed_in(), vec![]);
    assert_eq!(s.server.relayed(), 2);

    // Client → peer: a Send indication while the channel is bound, then ChannelData.
    let now = s.now;
    assert!(s.g.send_relayed(now, PEER, b"first"));
    s.run_for(Duration::from_secs(1));
    let now = s.now;
    assert!(s.g.send_relayed(now, PEER, b"second"));
    s.run_for(Duration::from_secs(1));
    let sent: Vec<&[u8]> = s.at_peers.iter().map(|(_, _, p)| p.as_slice()).collect();
    assert_eq!(sent, [b"first".as_slice(), b"second"]);
    assert!(s
        .at_peers
        .iter()
        .all(|(src, dst, _)| (*src, *dst) == (relay, PEER)));
    assert!(
        is_channel_data(s.sent.last().unwrap()),
        "the second went as ChannelData"
    );

    // Peer → client over the channel now.
    s.peer_sends(PEER, relay, b"again");
    assert_eq!(s.relayed_in(), vec![(PEER, b"again".to_vec())]);
    assert!(is_channel_data(s.received.last().unwrap()));
    assert_eq!(s.server.relayed(), 5);

    // Permissions are refreshed: ten minutes on, the peer still gets through.
    s.run_for(Duration::from_secs(600));
    s.peer_sends(PEER, relay, b"later");
    assert_eq!(s.relayed_in(), vec![(PEER, b"later".to_vec())]);
    assert_eq!(s.server.refused(), 0);
}

/// Hand-built requests, signed as the client signs them.
struct Hand {
    nonce: String,
    key: Vec<u8>,
    crypto: std::sync::Arc<dyn rtc_stun::crypto::RTCCryptoProvider>,
}

impl Hand {
    fn new(server: &mut TurnServer, now: Instant) -> Hand {
        let crypto = rtc_stun::crypto::default_provider().unwrap();
        let key = MessageIntegrity::long_term_integrity_key(
            USER.into(),
            REALM.into(),
            PASSWORD.into(),
            crypto.crypto(),
        )
        .unwrap();
        // An unauthenticated Refresh draws the challenge whether or not this address holds an
        // allocation (an Allocate from one that does is refused before any challenge).
        let challenge = Hand::request(METHOD_REFRESH, vec![], None);
        let out = server.handle_client(now, PUBLIC, &challenge);
        let m = decode(&out[0].2);
        assert_eq!(code(&m), Some(401));
        let nonce = TextAttribute::get_from_as(&m, ATTR_NONCE).unwrap().text;
        Hand { nonce, key, crypto }
    }

    fn request(method: Method, attrs: Vec<Box<dyn Setter>>, sign: Option<&Hand>) -> Vec<u8> {
        let mut setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(method, CLASS_REQUEST)),
        ];
        setters.extend(attrs);
        if let Some(h) = sign {
            setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, USER.into())));
            setters.push(Box::new(TextAttribute::new(ATTR_REALM, REALM.into())));
            setters.push(Box::new(TextAttribute::new(ATTR_NONCE, h.nonce.clone())));
            setters.push(Box::new(MessageIntegrity::new_raw_integrity_with_provider(
                h.key.clone(),
                h.crypto.crypto(),
            )));
        }
        setters.push(Box::new(FINGERPRINT));
        let mut m = Message::new();
        m.build(&setters).unwrap();
        m.raw
    }

    /// Sends a signed request from `from`; the answer's error code (None: success).
    fn ask(
        &self,
        server: &mut TurnServer,
        now: Instant,
        from: SocketAddr,
        method: Method,
        attrs: Vec<Box<dyn Setter>>,
    ) -> (Option<u16>, Message) {
        let out = server.handle_client(now, from, &Hand::request(method, attrs, Some(self)));
        assert_eq!(out.len(), 1, "one answer");
        assert_eq!((out[0].0, out[0].1), (SERVER, from));
        let m = decode(&out[0].2);
        FINGERPRINT.check(&m).expect("answers carry a FINGERPRINT");
        (code(&m), m)
    }
}

fn udp() -> RequestedTransport {
    RequestedTransport {
        protocol: PROTO_UDP,
    }
}

fn peer(a: SocketAddr) -> Box<PeerAddress> {
    Box::new(PeerAddress {
        ip: a.ip(),
        port: a.port(),
    })
}

fn decode(p: &[u8]) -> Message {
    let mut m = Message::new();
    m.raw = p.to_vec();
    m.decode().unwrap();
    m
}

fn code(m: &Message) -> Option<u16> {
    let mut c = ErrorCodeAttribute::default();
    c.get_from(m).ok().map(|_| c.code.0)
}

/// A server with an allocation from `PUBLIC`, a permission and channel 0x4000 for `PEER`.
fn served(now: Instant) -> (TurnServer, Hand, SocketAddr) {
    let mut server = TurnServer::new(SERVER, RELAY_IP, USER, PASSWORD, REALM);
    let h = Hand::new(&mut server, now);
    let (err, m) = h.ask(
        &mut server,
        now,
        PUBLIC,
        METHOD_ALLOCATE,
        vec![Box::new(udp())],
    );
    assert_eq!(err, None);
    let mut relay = RelayedAddress::default();
    relay.get_from(&m).unwrap();
    let relay = SocketAddr::new(relay.ip, relay.port);
    let bind = vec![
        peer(PEER),
        Box::new(ChannelNumber(0x4000)) as Box<dyn Setter>,
    ];
    assert_eq!(
        h.ask(&mut server, now, PUBLIC, METHOD_CHANNEL_BIND, bind).0,
        None
    );
    (server, h, relay)
}

#[test]
fn the_server_refuses_as_coturn_does() {
    let now = Instant::now();
    let (mut server, h, relay) = served(now);
    assert_eq!(relay, addr([198, 19, 0, 4], 50_000));
    let other = addr([198, 19, 0, 7], 20_000);
    let bind = |n: u16, p: SocketAddr| vec![peer(p), Box::new(ChannelNumber(n)) as Box<dyn Setter>];
    let asked = |s| vec![Box::new(Lifetime(Duration::from_secs(s))) as Box<dyn Setter>];
    {
        let mut ask = |from, method, attrs| h.ask(&mut server, now, from, method, attrs).0;
        // A second allocation for one 5-tuple; requests without an allocation.
        assert_eq!(
            ask(PUBLIC, METHOD_ALLOCATE, vec![Box::new(udp())]),
            Some(437)
        );
        assert_eq!(ask(other, METHOD_REFRESH, vec![]), Some(437));
        assert_eq!(
            ask(other, METHOD_CREATE_PERMISSION, vec![peer(PEER)]),
            Some(437)
        );
        // Channel numbers out of range, bound to another peer, or a second one for a peer.
        assert_eq!(
            ask(PUBLIC, METHOD_CHANNEL_BIND, bind(0x3FFF, PEER)),
            Some(400)
        );
        assert_eq!(
            ask(PUBLIC, METHOD_CHANNEL_BIND, bind(0x4000, other)),
            Some(400)
        );
        assert_eq!(
            ask(PUBLIC, METHOD_CHANNEL_BIND, bind(0x4001, PEER)),
            Some(400)
        );
        assert_eq!(ask(PUBLIC, METHOD_CHANNEL_BIND, bind(0x4000, PEER)), None);
    }
    assert_eq!(server.refused(), 6);

    // A wrong key is refused with a new challenge; an unknown nonce gets 438 (no refusal).
    let wrong = Hand {
        key: vec![0; 16],
        ..Hand::new(&mut server, now)
    };
    let (err, _) = wrong.ask(&mut server, now, PUBLIC, METHOD_REFRESH, vec![]);
    assert_eq!(err, Some(401));
    let stale = Hand {
        nonce: "old".into(),
        ..Hand::new(&mut server, now)
    };
    let (err, _) = stale.ask(&mut server, now, PUBLIC, METHOD_REFRESH, vec![]);
    assert_eq!(err, Some(438));
    assert_eq!(server.refused(), 7);

    // A smaller lifetime is honoured and the allocation expires by it.
    let (err, m) = h.ask(&mut server, now, PUBLIC, METHOD_REFRESH, asked(30));
    let mut granted = Lifetime::default();
    granted.get_from(&m).unwrap();
    assert_eq!((err, granted.0), (None, Duration::from_secs(30)));
    let later = now + Duration::from_secs(31);
    assert!(server.handle_peer(later, PEER, relay, b"x").is_empty());
    assert!(!server.is_relay(relay));
    // A new one; a Refresh with lifetime 0 deletes it at once.
    let mut ask = |method, attrs| h.ask(&mut server, later, PUBLIC, method, attrs).0;
    assert_eq!(ask(METHOD_ALLOCATE, vec![Box::new(udp())]), None);
    assert_eq!(ask(METHOD_REFRESH, asked(0)), None);
    assert_eq!(ask(METHOD_REFRESH, vec![]), Some(437));
    assert_eq!(server.allocations_made(), 2);
}

/// Bytes a fuzzer would send: noise, STUN-looking noise, ChannelData-looking noise, or a
/// valid signed request with some bytes changed.
fn input(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let noise = proptest::collection::vec(any::<u8>(), 0..200);
    prop_oneof![
        noise.clone(),
        noise.clone().prop_map(|mut b| {
            b.resize(b.len().max(20), 0);
            b[0] &= 0x3F;
            let len = (b.len() - 20) as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
            b[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            b
        }),
        noise.clone().prop_map(|mut b| {
            b.resize(b.len().max(4), 0);
            b[0] = 0x40;
            let len = (b.len() - 4) as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
            b
        }),
        (
            proptest::sample::select(valid),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
        )
            .prop_map(|(mut b, edits)| {
                for (i, v) in edits {
                    let i = i.index(b.len());
                    b[i] = v;
                }
                b
            }),
    ]
}

fn valid_requests() -> Vec<Vec<u8>> {
    let now = Instant::now();
    let (mut server, h, relay) = served(now);
    let signed = |method, attrs| Hand::request(method, attrs, Some(&h));
    let lifetime = Lifetime(Duration::from_secs(60));
    let channel_data = server.handle_peer(now, PEER, relay, b"0123").remove(0).2;
    vec![
        signed(METHOD_ALLOCATE, vec![Box::new(udp())]),
        signed(METHOD_REFRESH, vec![Box::new(lifetime)]),
        signed(METHOD_CREATE_PERMISSION, vec![peer(PEER), peer(PUBLIC)]),
        signed(
            METHOD_CHANNEL_BIND,
            vec![peer(PEER), Box::new(ChannelNumber(0x4001))],
        ),
        channel_data,
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        inputs in proptest::collection::vec(input(valid_requests()), 1..8),
        from_public in any::<bool>(),
    ) {
        let now = Instant::now();
        let (mut server, _, relay) = served(now);
        let from = if from_public { PUBLIC } else { addr([198, 19, 0, 5], 1) };
        for (i, bytes) in inputs.iter().enumerate() {
            let at = now + Duration::from_secs(i as u64 * 100);
            let mut out = server.handle_client(at, from, bytes);
            out.extend(server.handle_peer(at, PEER, relay, bytes));
            out.extend(server.handle_peer(at, from, addr([198, 19, 0, 4], 1), bytes));
            for (src, _, _) in out {
                prop_assert!(src == SERVER || src.ip() == RELAY_IP);
            }
        }
    }
}

/// After a lost allocation rtc-turn keeps the dead relay (its release was answered 437) and
/// goes on refreshing it and its permissions. On the same 5-tuple that lands on the new
/// allocation, so a permission shed by a renewal stays installed and refreshes multiply with
/// every loss. (Fixed: a lost allocation gets a new TURN client.)
#[test]
fn a_lost_allocation_leaves_nothing_behind() {
    let (mut s, _) = Sim::allocated();
    let owner: BareJid = "friend@example.net".parse().unwrap();
    let now = s.now;
    s.g.permit(now, PEER, &owner);
    s.run_for(Duration::from_secs(1));
    s.server.restart();
    let now = s.now;
    s.g.verify(now);
    s.run_for(Duration::from_secs(5));
    assert_eq!(s.server.allocations_made(), 2);
    // Nobody uses the peer any more: the allocation is renewed without it.
    let now = s.now;
    s.g.renew_permits(now, vec![]);
    s.run_for(Duration::from_secs(5));
    let relay = s.relay().unwrap();
    assert_eq!(s.server.allocations_made(), 3);
    let before = s.sent.len();
    s.run_for(Duration::from_secs(300));
    s.peer_sends(PEER, relay, b"shed");
    assert_eq!(s.relayed_in(), vec![], "the shed permission came back");
    let requests = s.sent.len() - before;
    assert!(
        requests <= 6,
        "{requests} requests in 5 minutes (one Refresh a minute)"
    );
}

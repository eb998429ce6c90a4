//! Two link managers, alice's and bob's, in virtual time, each with a STUN/TURN server that
//! answers as coturn does (401 with realm and nonce, then the allocation; permissions,
//! refreshes and bindings granted). Shared by the link fuzz targets: they start from linked
//! devices with relays, so what they inject meets sessions, allocations and permissions.

#![allow(dead_code)]

use rtc_stun::error_code::{ErrorCodeAttribute, CODE_UNAUTHORIZED};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::message::{
    Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE,
    METHOD_ALLOCATE,
};
use rtc_stun::textattrs::{Nonce, Realm};
use rtc_stun::xoraddr::XorMappedAddress;
use rtc_turn::proto::lifetime::Lifetime;
use rtc_turn::proto::relayaddr::RelayedAddress;
use socialvpn_core::links::manager::{LinkEvent, LinkManager, LinkPolicy};
use socialvpn_core::links::servers::{IceServers, TurnServer};
use socialvpn_core::social::payload::{DeviceInfo, Signal};
use socialvpn_core::social::state::WantedDevice;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use xmpp_parsers::jid::FullJid;

/// One device: its manager, addresses and server.
pub struct Side {
    pub m: LinkManager,
    pub jid: FullJid,
    pub info: DeviceInfo,
    pub host: SocketAddr,
    /// Its address as its server sees it (the server-reflexive candidate).
    pub mapped: SocketAddr,
    pub server: SocketAddr,
    pub relay: SocketAddr,
    /// Signals it sent, for the targets to replay and mutate.
    pub signals: Vec<Signal>,
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

impl Side {
    pub fn new(now: Instant, key: u8, jid: &str, host: &str, mapped: &str, server: &str) -> Side {
        let info = DeviceInfo::new([key; 32]);
        let server = addr(server);
        let servers = IceServers {
            stun: Some(server),
            turn: Some(TurnServer {
                addr: server,
                username: "svpn".into(),
                password: "turnpass".into(),
            }),
        };
        let host = addr(host);
        Side {
            m: LinkManager::new(now, info, LinkPolicy::default(), servers, vec![host]),
            jid: jid.parse().expect("a full JID"),
            info,
            host,
            mapped: addr(mapped),
            server,
            relay: SocketAddr::new(server.ip(), 49152),
            signals: Vec::new(),
        }
    }

    pub fn wanted(&self) -> WantedDevice {
        WantedDevice {
            jid: self.jid.clone(),
            info: self.info,
            own: false,
        }
    }

    /// The server's answer to a request from this side, as coturn would give it.
    pub fn serve(&self, request: &[u8]) -> Option<Vec<u8>> {
        let mut m = Message::new();
        m.raw = request.to_vec();
        m.decode().ok()?;
        if m.typ.class != CLASS_REQUEST {
            return None;
        }
        let mapped = XorMappedAddress {
            ip: self.mapped.ip(),
            port: self.mapped.port(),
        };
        let authenticated = Nonce::get_from_as(&m, rtc_stun::attributes::ATTR_NONCE).is_ok();
        let setters: Vec<Box<dyn Setter>> = if m.typ.method == METHOD_ALLOCATE && !authenticated {
            vec![
                Box::new(m.transaction_id),
                Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE)),
                Box::new(ErrorCodeAttribute {
                    code: CODE_UNAUTHORIZED,
                    reason: b"Unauthorized".to_vec(),
                }),
                Box::new(Realm::new(
                    rtc_stun::attributes::ATTR_REALM,
                    "svpn.test".into(),
                )),
                Box::new(Nonce::new(
                    rtc_stun::attributes::ATTR_NONCE,
                    "0123456789abcdef".into(),
                )),
                Box::new(FINGERPRINT),
            ]
        } else if m.typ.method == METHOD_ALLOCATE {
            vec![
                Box::new(m.transaction_id),
                Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_SUCCESS_RESPONSE)),
                Box::new(RelayedAddress {
                    ip: self.relay.ip(),
                    port: self.relay.port(),
                }),
                Box::new(Lifetime(Duration::from_secs(600))),
                Box::new(mapped),
                Box::new(FINGERPRINT),
            ]
        } else {
            // Bindings, permissions, refreshes, channel bindings: granted.
            vec![
                Box::new(m.transaction_id),
                Box::new(MessageType::new(m.typ.method, CLASS_SUCCESS_RESPONSE)),
                Box::new(mapped),
                Box::new(Lifetime(Duration::from_secs(600))),
                Box::new(FINGERPRINT),
            ]
        };
        let mut response = Message::new();
        response.build(&setters).ok()?;
        Some(response.raw)
    }
}

/// Alice and Bob, wanted by each other.
pub struct World {
    pub now: Instant,
    pub a: Side,
    pub b: Side,
    /// Datagrams bob sent alice, for the targets to replay and mutate.
    pub b_to_a: Vec<Vec<u8>>,
    /// Alice's link to bob came up at least once.
    pub a_linked: bool,
}

impl World {
    pub fn new() -> World {
        let now = Instant::now();
        let a = Side::new(
            now,
            1,
            "alice@svpn.test/laptop",
            "198.18.0.1:1000",
            "198.18.20.1:1000",
            "198.18.10.1:3478",
        );
        // Bob's mapped address is the data plane's friend endpoint in `common::Pair`, so
        // WireGuard relayed from it reaches an established session.
        let b = Side::new(
            now,
            2,
            "bob@svpn.test/pc",
            "198.19.0.2:2000",
            "198.18.0.2:51820",
            "198.18.10.2:3478",
        );
        let mut w = World {
            now,
            a,
            b,
            b_to_a: Vec::new(),
            a_linked: false,
        };
        let (wa, wb) = (vec![w.b.wanted()], vec![w.a.wanted()]);
        w.a.m.set_wanted(now, &wa);
        w.b.m.set_wanted(now, &wb);
        w.run_for(Duration::from_secs(5));
        // Otherwise the targets would fuzz a half-built world.
        assert!(w.a_linked, "alice and bob did not link");
        assert!(
            w.a.m.local_candidates().relay.is_some(),
            "alice has no relay"
        );
        w
    }

    /// Moves everything that is ready; true if anything moved.
    pub fn pump(&mut self) -> bool {
        let mut moved = false;
        let mut a_up = false;
        for a_sends in [true, false] {
            let (src, dst) = if a_sends {
                (&mut self.a, &mut self.b)
            } else {
                (&mut self.b, &mut self.a)
            };
            while let Some((_, _, signal)) = src.m.poll_signal() {
                moved = true;
                if src.signals.len() < 64 {
                    src.signals.push(signal.clone());
                }
                dst.m.handle_signal(self.now, src.jid.clone(), signal);
            }
            while let Some((to, data)) = src.m.poll_transmit() {
                moved = true;
                if to == src.server {
                    if let Some(answer) = src.serve(&data) {
                        src.m
                            .handle_datagram(self.now, src.host, src.server, &answer);
                    }
                } else if to == dst.host {
                    if !a_sends && self.b_to_a.len() < 64 {
                        self.b_to_a.push(data.to_vec());
                    }
                    dst.m.handle_datagram(self.now, dst.host, src.host, &data);
                }
            }
            while let Some(event) = src.m.poll_event() {
                if a_sends && matches!(event, LinkEvent::Up { .. }) {
                    a_up = true;
                }
            }
            while src.m.poll_relayed_data().is_some() {}
        }
        self.a_linked |= a_up;
        moved
    }

    /// Runs until nothing is due before `for` from now.
    pub fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        for _ in 0..10_000 {
            if self.pump() {
                continue;
            }
            let next = [self.a.m.poll_timeout(), self.b.m.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.a.m.handle_timeout(self.now, |_| None);
                    self.b.m.handle_timeout(self.now, |_| None);
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
    }
}

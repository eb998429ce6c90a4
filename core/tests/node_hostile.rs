//! Hostile input thrown at a linked node in the simulated world: arbitrary datagrams from
//! strangers (raw, STUN-shaped, WireGuard-shaped), presences and signals that claim anything,
//! from friends and strangers. Nothing panics, nothing spins, and the link to the real
//! friend survives and carries traffic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use proptest::prelude::*;
use sim::World;
use socialvpn_core::api::LinkPhase;
use socialvpn_core::social::payload::{
    DeviceInfo, IceCredentials, Signal, SignalKind, SignedSignal,
};
use socialvpn_core::social::proof::Proof;
use socialvpn_core::social::state::{PresenceKind, RosterItem};
use socialvpn_core::xmpp::session::XmppInput;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use xmpp_parsers::jid::{FullJid, Jid};

const ALICE: &str = "alice@example.net/phone";
const BOB: &str = "bob@example.net/laptop";

#[derive(Debug, Clone)]
enum Op {
    /// Bytes from an address to alice's socket (past her NAT).
    Datagram {
        from: u8,
        port: u16,
        bytes: Vec<u8>,
    },
    /// A STUN-shaped datagram (magic cookie in place).
    Stun {
        from: u8,
        bytes: Vec<u8>,
    },
    /// A WireGuard-shaped datagram (message type 1–4).
    WireGuard {
        from: u8,
        kind: u8,
        bytes: Vec<u8>,
    },
    /// A presence from `who` claiming a device with key `key`.
    Presence {
        who: u8,
        resource: u8,
        key: [u8; 32],
        kind: u8,
    },
    /// A signal from `who` of any kind, with or without a (wrong) proof.
    Signal {
        who: u8,
        kind: u8,
        session: u64,
        key: [u8; 32],
        proof: Option<u64>,
    },
    /// A roster push about a stranger.
    RosterPush {
        who: u8,
        sub: u8,
    },
    Wait {
        ms: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let bytes = prop::collection::vec(any::<u8>(), 0..200);
    prop_oneof![
        (any::<u8>(), any::<u16>(), bytes.clone()).prop_map(|(from, port, bytes)| Op::Datagram {
            from,
            port,
            bytes
        }),
        (any::<u8>(), bytes.clone()).prop_map(|(from, bytes)| Op::Stun { from, bytes }),
        (any::<u8>(), 1u8..5, bytes).prop_map(|(from, kind, bytes)| Op::WireGuard {
            from,
            kind,
            bytes
        }),
        (0u8..4, any::<u8>(), any::<[u8; 32]>(), 0u8..6).prop_map(|(who, resource, key, kind)| {
            Op::Presence {
                who,
                resource,
                key,
                kind,
            }
        }),
        (
            0u8..4,
            0u8..4,
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<Option<u64>>()
        )
            .prop_map(|(who, kind, session, key, proof)| Op::Signal {
                who,
                kind,
                session,
                key,
                proof
            }),
        (2u8..4, 0u8..4).prop_map(|(who, sub)| Op::RosterPush { who, sub }),
        (0u16..3000).prop_map(|ms| Op::Wait { ms }),
    ]
}

/// 0: bob (the friend), 1: alice's own account, 2–3: strangers.
fn account(who: u8) -> &'static str {
    match who {
        0 => "bob@example.net",
        1 => "alice@example.net",
        2 => "mallory@example.org",
        _ => "eve@example.com",
    }
}

fn full(who: u8, resource: u8) -> FullJid {
    format!("{}/r{resource}", account(who)).parse().unwrap()
}

fn stranger(from: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(198, 19, 1, from), 4500))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn hostile_input_never_breaks_a_node_or_its_link(ops in prop::collection::vec(op(), 1..120)) {
        let mut w = World::new(11);
        let n1 = w.add_nat(1);
        let n2 = w.add_nat(2);
        w.xmpp.befriend(&sim::jid(ALICE).to_bare(), &sim::jid(BOB).to_bare());
        let a = w.add_node("alice", ALICE, Ipv4Addr::new(198, 18, 1, 10), Some(n1));
        let b = w.add_node("bob", BOB, Ipv4Addr::new(198, 18, 2, 10), Some(n2));
        prop_assert!(w.run_until(Duration::from_secs(30), |w| w.connected(a, b) && w.connected(b, a)));
        for op in ops {
            match op {
                Op::Datagram { from, port, bytes } => {
                    w.inject_datagram(a, SocketAddr::from((Ipv4Addr::new(198, 19, 1, from), port)), bytes)
                }
                Op::Stun { from, mut bytes } => {
                    bytes.resize(bytes.len().max(20), 0);
                    bytes[0] &= 0x3f;
                    bytes[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
                    w.inject_datagram(a, stranger(from), bytes);
                }
                Op::WireGuard { from, kind, mut bytes } => {
                    bytes.resize(bytes.len().max(4), 0);
                    bytes[0] = kind;
                    bytes[1..4].fill(0);
                    w.inject_datagram(a, stranger(from), bytes);
                }
                Op::Presence { who, resource, key, kind } => {
                    let kind = match kind {
                        0 => PresenceKind::Available(Some(DeviceInfo::new(key))),
                        1 => PresenceKind::Unavailable,
                        2 => PresenceKind::Subscribe,
                        3 => PresenceKind::Subscribed,
                        4 => PresenceKind::Unsubscribe,
                        _ => PresenceKind::Available(None),
                    };
                    // Not bob's own resource: a friend's other (claimed) devices are fair game.
                    let from = full(who, resource.max(1));
                    w.inject_xmpp(a, XmppInput::Presence(Jid::from(from), kind));
                }
                Op::Signal { who, kind, session, key, proof } => {
                    let kind = [SignalKind::Offer, SignalKind::Answer, SignalKind::Restart, SignalKind::Close][usize::from(kind)];
                    let signal = Signal {
                        kind,
                        session,
                        from: DeviceInfo::new(key),
                        credentials: Some(IceCredentials { ufrag: "abcd".into(), pwd: "0123456789012345678901".into() }),
                        candidates: vec!["1 1 udp 1 198.19.1.9 4500 typ host".into()],
                    };
                    let proof = proof.map(|at| Proof { at, mac: [7; 32] });
                    let from = full(who, 0);
                    w.inject_xmpp(a, XmppInput::Signal(from, Ok(SignedSignal { signal, proof })));
                }
                Op::RosterPush { who, sub } => {
                    use socialvpn_core::api::Subscription as S;
                    let subscription = [S::None, S::To, S::From, S::Both][usize::from(sub)];
                    let item = RosterItem {
                        jid: account(who).parse().unwrap(),
                        name: None,
                        subscription,
                        pending_out: false,
                        removed: sub == 0,
                    };
                    w.inject_xmpp(a, XmppInput::RosterPush(item));
                }
                Op::Wait { ms } => w.run_for(Duration::from_millis(u64::from(ms))),
            }
        }
        w.run_for(Duration::from_secs(5));
        prop_assert!(
            matches!(w.phase(a, b), Some(LinkPhase::Connected { .. })),
            "the link to bob is gone: {:?}", w.phase(a, b)
        );
        let before = w.received(b).len();
        for k in 0..5 {
            w.send_packet(a, b, format!("still {k}").as_bytes());
            w.run_for(Duration::from_millis(100));
        }
        w.run_for(Duration::from_millis(500));
        prop_assert_eq!(w.received(b).len(), before + 5);
    }
}

//! The XMPP session against the real prosody of the social test world (root): login,
//! typed failures with back-off, subscriptions, device presence and signal delivery.

use socialvpn_core::social::payload::{
    DeviceInfo, IceCredentials, Signal, SignalKind, SignedSignal,
};
use socialvpn_core::social::proof::Proof;
use socialvpn_core::social::state::{Outgoing, PresenceKind, Subscription};
use socialvpn_core::xmpp::connect::{CertificateProblem, LoginFailure, TlsTrust, XmppAccount};
use socialvpn_core::xmpp::session::{XmppInput, XmppSession, XmppState};
use socialvpn_tests::social_world::SocialWorld;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Receiver;

fn account(w: &SocialWorld, user: &str, password: &str, resource: &str) -> XmppAccount {
    XmppAccount {
        jid: format!("{user}@{}", w.domain()).parse().unwrap(),
        credentials: socialvpn_core::config::Credentials::Password(password.into()),
        resource: resource.into(),
        server: Some((w.xmpp_addr().ip().to_string(), w.xmpp_addr().port())),
        trust: TlsTrust::CaFile(w.ca_cert_path()),
        dns: Default::default(),
        protect: None,
    }
}

/// Waits (bounded) for an input matching `pred`; returns it and everything seen before.
async fn wait_for(
    rx: &mut Receiver<XmppInput>,
    within: Duration,
    pred: impl Fn(&XmppInput) -> bool,
) -> (Option<XmppInput>, Vec<XmppInput>) {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    while let Ok(Some(input)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if pred(&input) {
            return (Some(input), seen);
        }
        seen.push(input);
    }
    (None, seen)
}

fn online(i: &XmppInput) -> bool {
    matches!(i, XmppInput::State(XmppState::Online { .. }))
}

#[test]
fn login_failures_are_typed_and_backed_off() {
    let w = SocialWorld::new("xlf");
    w.register("alice", "secret-a");
    let good = account(&w, "alice", "secret-a", "dev1");
    let wrong = account(&w, "alice", "not-it", "dev1");
    let untrusted = XmppAccount {
        trust: TlsTrust::Platform,
        ..good.clone()
    };
    let unreachable = XmppAccount {
        server: Some((w.xmpp_addr().ip().to_string(), 5299)),
        ..good.clone()
    };
    w.host("carol").block_on(move || {
        Box::pin(async move {
            let (s, mut rx) = XmppSession::spawn(good);
            let (hit, seen) = wait_for(&mut rx, Duration::from_secs(10), online).await;
            assert!(hit.is_some(), "no login: {seen:?}");
            s.shutdown().await;

            let (s, mut rx) = XmppSession::spawn(wrong);
            let (hit, seen) = wait_for(&mut rx, Duration::from_secs(10), |i| {
                matches!(i, XmppInput::State(XmppState::AuthFailed))
            })
            .await;
            assert!(hit.is_some(), "no auth failure: {seen:?}");
            // No hot retry loop after a refused password: nothing more arrives.
            let (more, _) = wait_for(&mut rx, Duration::from_secs(3), |_| true).await;
            assert_eq!(more, None);
            s.shutdown().await;

            let (s, mut rx) = XmppSession::spawn(untrusted);
            let (hit, seen) = wait_for(&mut rx, Duration::from_secs(10), |i| {
                matches!(
                    i,
                    XmppInput::State(XmppState::Offline {
                        // The platform's verifier (the system's trust store) does not know
                        // the world's private CA: said in words.
                        reason: LoginFailure::Certificate(CertificateProblem::UnknownIssuer),
                        ..
                    })
                )
            })
            .await;
            assert!(hit.is_some(), "untrusted certificate accepted? {seen:?}");
            s.shutdown().await;

            let started = Instant::now();
            let (s, mut rx) = XmppSession::spawn(unreachable);
            let mut delays = Vec::new();
            while delays.len() < 3 && started.elapsed() < Duration::from_secs(15) {
                let (hit, _) = wait_for(&mut rx, Duration::from_secs(10), |i| {
                    matches!(i, XmppInput::State(XmppState::Offline { .. }))
                })
                .await;
                match hit {
                    Some(XmppInput::State(XmppState::Offline { reason, retry_in })) => {
                        assert!(matches!(reason, LoginFailure::Unreachable(_)), "{reason:?}");
                        delays.push(retry_in);
                    }
                    _ => break,
                }
            }
            assert_eq!(
                delays,
                vec![
                    Duration::from_secs(1),
                    Duration::from_secs(2),
                    Duration::from_secs(4)
                ]
            );
            s.shutdown().await;
        })
    });
}

#[test]
fn friends_subscribe_see_devices_and_exchange_signals() {
    let w = SocialWorld::new("xfr");
    w.register("alice", "secret-a");
    w.register("bob", "secret-b");
    let alice = account(&w, "alice", "secret-a", "laptop");
    let bob = account(&w, "bob", "secret-b", "phone");
    w.host("carol").block_on(move || {
        Box::pin(async move {
            let (sa, mut ra) = XmppSession::spawn(alice);
            let (sb, mut rb) = XmppSession::spawn(bob);
            let Some(XmppInput::State(XmppState::Online { jid: a_full, .. })) =
                wait_for(&mut ra, Duration::from_secs(10), online).await.0
            else {
                panic!("alice offline")
            };
            let Some(XmppInput::State(XmppState::Online { jid: b_full, .. })) =
                wait_for(&mut rb, Duration::from_secs(10), online).await.0
            else {
                panic!("bob offline")
            };
            let a_bare = a_full.to_bare();
            let b_bare = b_full.to_bare();
            let a_dev = DeviceInfo::new([1; 32]);
            let b_dev = DeviceInfo::new([2; 32]);
            sa.send(Outgoing::RosterGet);
            sa.send(Outgoing::Announce(a_dev));
            sb.send(Outgoing::RosterGet);
            sb.send(Outgoing::Announce(b_dev));
            // Alice asks (and pre-approves); Bob sees the request and accepts.
            sa.send(Outgoing::Subscribe(b_bare.clone()));
            sa.send(Outgoing::Subscribed(b_bare.clone()));
            let (hit, seen) = wait_for(&mut rb, Duration::from_secs(10), |i| {
                matches!(i, XmppInput::Presence(_, PresenceKind::Subscribe))
            })
            .await;
            assert!(hit.is_some(), "bob got no request: {seen:?}");
            sb.send(Outgoing::Subscribed(a_bare.clone()));
            sb.send(Outgoing::Subscribe(a_bare.clone()));
            let mutual = |who: &xmpp_parsers::jid::BareJid| {
                let who = who.clone();
                move |i: &XmppInput| matches!(i, XmppInput::RosterPush(item) if item.jid == who && item.subscription == Subscription::Both)
            };
            assert!(wait_for(&mut ra, Duration::from_secs(10), mutual(&b_bare))
                .await
                .0
                .is_some());
            assert!(wait_for(&mut rb, Duration::from_secs(10), mutual(&a_bare))
                .await
                .0
                .is_some());
            // Once mutual, each sees the other's device announcement.
            let (hit, seen) = wait_for(&mut ra, Duration::from_secs(10), |i| {
                matches!(i, XmppInput::Presence(_, PresenceKind::Available(Some(d))) if *d == b_dev)
            })
            .await;
            assert!(hit.is_some(), "alice never saw bob's device: {seen:?}");
            // A signal to Bob's full JID arrives parsed and validated.
            let signal = Signal {
                kind: SignalKind::Offer,
                session: 42,
                from: a_dev,
                credentials: Some(IceCredentials {
                    ufrag: "uf12".into(),
                    pwd: "0123456789abcdefghijklmn".into(),
                }),
                candidates: vec!["1 1 udp 2130706431 198.18.0.20 40000 typ host".into()],
            };
            // Carried as it is, proof and all (the engine makes and checks proofs).
            let signal = SignedSignal {
                signal,
                proof: Some(Proof {
                    at: 1_800_000_000,
                    mac: [9; 32],
                }),
            };
            // As an IQ, and as the headline message a device older than IQ signals needs.
            for as_message in [false, true] {
                sa.send(Outgoing::Signal {
                    to: b_full.clone(),
                    signal: signal.clone(),
                    as_message,
                });
                let (hit, seen) = wait_for(&mut rb, Duration::from_secs(10), |i| {
                    matches!(i, XmppInput::Signal(..))
                })
                .await;
                match hit {
                    Some(XmppInput::Signal(from, Ok(got))) => {
                        assert_eq!(from, a_full);
                        assert_eq!(got, signal);
                    }
                    other => panic!("no signal (message: {as_message}): {other:?} after {seen:?}"),
                }
            }
            sa.shutdown().await;
            sb.shutdown().await;
        })
    });
}

#[test]
fn the_xmpp_socket_is_protected_before_it_connects() {
    use socialvpn_core::protect::SocketProtector;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let w = SocialWorld::new("xpr");
    w.register("alice", "secret-a");
    let asked = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&asked);
    let accepting = XmppAccount {
        protect: Some(SocketProtector::new(move |fd| {
            assert!(fd >= 0);
            count.fetch_add(1, Ordering::SeqCst);
            true
        })),
        ..account(&w, "alice", "secret-a", "dev1")
    };
    let refusing = XmppAccount {
        protect: Some(SocketProtector::new(|_| false)),
        ..account(&w, "alice", "secret-a", "dev2")
    };
    w.host("carol").block_on(move || {
        Box::pin(async move {
            let (s, mut rx) = XmppSession::spawn(accepting);
            let (hit, seen) = wait_for(&mut rx, Duration::from_secs(10), online).await;
            assert!(hit.is_some(), "no login: {seen:?}");
            s.shutdown().await;

            let (s, mut rx) = XmppSession::spawn(refusing);
            let (hit, seen) = wait_for(&mut rx, Duration::from_secs(10), |i| {
                matches!(
                    i,
                    XmppInput::State(XmppState::Offline {
                        reason: LoginFailure::Protect,
                        ..
                    })
                )
            })
            .await;
            assert!(
                hit.is_some(),
                "a refused protect must be reported: {seen:?}"
            );
            s.shutdown().await;
        })
    });
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "one TCP socket, protected once"
    );
}

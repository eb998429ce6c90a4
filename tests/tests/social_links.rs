//! SocialVPN end to end in the social test world (root): a real XMPP server (each scenario
//! against prosody and against ejabberd) and coturn, a cone NAT and a symmetric NAT, an
//! engine per host on its own TUN, linking by itself with friends.

use socialvpn_core::api::{FriendAction, Request};
use socialvpn_tests::node::DpNode;
use socialvpn_tests::on_both_servers;
use socialvpn_tests::social_nodes::{
    address_of, befriend, entry, jid, online_node, wait_linked, world_with_users,
};
use socialvpn_tests::social_world::{SocialWorld, XmppServerKind};
use socialvpn_tests::traffic::tcp_transfer;
use socialvpn_tests::two_hosts::ping;
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_socialvpn-dpnode");
const LINK_WITHIN: Duration = Duration::from_secs(20);

on_both_servers!(
    friends_link_directly_through_nat_and_through_turn,
    toggles_cut_traffic_at_once_and_strangers_are_refused,
    links_survive_the_server_going_away_and_recover_after_roaming,
);

fn node(w: &SocialWorld, host: &str, user: &str) -> DpNode {
    online_node(w, Path::new(BIN), host, user, serde_json::json!({}))
}

fn friends_link_directly_through_nat_and_through_turn(kind: XmppServerKind) {
    let w = world_with_users(kind, "sla", &["alice", "bob", "carol"]);
    let mut alice = node(&w, "alice", "alice");
    let alice2 = node(&w, "alice2", "alice");
    let mut bob = node(&w, "bob", "bob");
    let mut carol = node(&w, "carol", "carol");

    // 1. Friend requests through the API; both rosters show mutual friends.
    befriend(&mut alice, &jid("alice"), &mut bob, &jid("bob"));
    befriend(&mut alice, &jid("alice"), &mut carol, &jid("carol"));
    befriend(&mut bob, &jid("bob"), &mut carol, &jid("carol"));
    let roster = alice.ask(Request::Roster);
    assert_eq!(entry(&roster, &jid("bob")).unwrap()["subscription"], "both");

    // 2. alice (cone NAT) ↔ carol (no NAT): direct.
    let link = wait_linked(&mut alice, &carol.uid, LINK_WITHIN).expect("alice-carol link");
    assert_eq!(link["relayed"], false, "{link}");
    let carol_at_alice = address_of(&mut alice, &carol.uid).unwrap();
    assert!(wait_linked(&mut carol, &alice.uid, LINK_WITHIN).is_some());
    let alice_at_carol = address_of(&mut carol, &alice.uid).unwrap();
    assert!(
        ping(w.host("alice"), &carol_at_alice),
        "alice cannot ping carol"
    );
    assert!(
        ping(w.host("carol"), &alice_at_carol),
        "carol cannot ping alice"
    );

    // 3. alice (cone) ↔ bob (symmetric): no direct path exists, so through TURN.
    let link = wait_linked(&mut alice, &bob.uid, Duration::from_secs(30)).expect("alice-bob link");
    assert_eq!(link["relayed"], true, "{link}");
    let bob_at_alice = address_of(&mut alice, &bob.uid).unwrap();
    assert!(
        ping(w.host("alice"), &bob_at_alice),
        "alice cannot ping bob through the relay"
    );
    //    bob ↔ carol still directly.
    let link = wait_linked(&mut bob, &carol.uid, LINK_WITHIN).expect("bob-carol link");
    assert_eq!(link["relayed"], false, "{link}");

    // 4. alice's two devices link with each other.
    assert!(
        wait_linked(&mut alice, &alice2.uid, LINK_WITHIN).is_some(),
        "own devices"
    );
    let alice2_at_alice = address_of(&mut alice, &alice2.uid).unwrap();
    assert!(ping(w.host("alice"), &alice2_at_alice));
}

fn toggles_cut_traffic_at_once_and_strangers_are_refused(kind: XmppServerKind) {
    use socialvpn_core::social::payload::{
        DeviceInfo, IceCredentials, Signal, SignalKind, SignedSignal,
    };
    use socialvpn_core::social::state::Outgoing;
    use socialvpn_core::xmpp::connect::{TlsTrust, XmppAccount};
    use socialvpn_core::xmpp::session::{XmppInput, XmppSession, XmppState};

    let w = world_with_users(kind, "slt", &["alice", "bob", "dave"]);
    let mut alice = node(&w, "alice", "alice");
    let mut bob = node(&w, "bob", "bob");
    befriend(&mut alice, &jid("alice"), &mut bob, &jid("bob"));
    assert!(wait_linked(&mut alice, &bob.uid, Duration::from_secs(30)).is_some());
    assert!(wait_linked(&mut bob, &alice.uid, Duration::from_secs(30)).is_some());
    let bob_at_alice = address_of(&mut alice, &bob.uid).unwrap();
    let alice_at_bob = address_of(&mut bob, &alice.uid).unwrap();
    assert!(ping(w.host("alice"), &bob_at_alice));

    // 5. Toggle bob off at alice: nothing passes either way within a second.
    alice.friend(FriendAction::Disable, &jid("bob"));
    std::thread::sleep(Duration::from_secs(1));
    let quick = |ns: &socialvpn_tests::netns::Namespace, target: &str| {
        ns.output("ping", &["-c", "2", "-i", "0.2", "-W", "1", target])
            .status
            .success()
    };
    assert!(
        !quick(w.host("alice"), &bob_at_alice),
        "alice still reaches bob"
    );
    assert!(
        !quick(w.host("bob"), &alice_at_bob),
        "bob still reaches alice"
    );
    let roster = alice.ask(Request::Roster);
    assert_eq!(entry(&roster, &jid("bob")).unwrap()["enabled"], false);
    //    Toggle on: traffic resumes (and bob keeps the address alice gave him).
    alice.friend(FriendAction::Enable, &jid("bob"));
    assert!(
        wait_linked(&mut alice, &bob.uid, Duration::from_secs(30)).is_some(),
        "no relink"
    );
    assert_eq!(address_of(&mut alice, &bob.uid).unwrap(), bob_at_alice);
    assert!(
        ping(w.host("alice"), &bob_at_alice),
        "traffic did not resume"
    );

    // 6. dave, no subscription, sends offers to alice: refused and counted, no link.
    let rejected_before = alice.ask(Request::Status)["social"]["signals_rejected"]
        .as_u64()
        .unwrap();
    let dave_account = XmppAccount {
        jid: jid("dave").parse().unwrap(),
        credentials: socialvpn_core::config::Credentials::Password("pw-dave".into()),
        resource: "dave".into(),
        server: Some((w.xmpp_addr().ip().to_string(), w.xmpp_addr().port())),
        trust: TlsTrust::CaFile(w.ca_cert_path()),
        dns: Default::default(),
        protect: None,
    };
    let dave_device = DeviceInfo::new([0xda; 32]);
    let alice_full: xmpp_parsers::jid::FullJid = format!("{}/alice", jid("alice")).parse().unwrap();
    w.host("dave")
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (session, mut rx) = XmppSession::spawn(dave_account);
                let online = tokio::time::timeout(Duration::from_secs(10), async {
                    while let Some(i) = rx.recv().await {
                        if matches!(i, XmppInput::State(XmppState::Online { .. })) {
                            return true;
                        }
                    }
                    false
                })
                .await;
                assert_eq!(online, Ok(true), "dave did not log in");
                for session_id in 1..=3u64 {
                    session.send(Outgoing::Signal {
                        to: alice_full.clone(),
                        as_message: false,
                        signal: SignedSignal {
                            signal: Signal {
                                kind: SignalKind::Offer,
                                session: session_id,
                                from: dave_device,
                                credentials: Some(IceCredentials {
                                    ufrag: "dave".into(),
                                    pwd: "davedavedavedavedavedave".into(),
                                }),
                                candidates: vec![
                                    "1 1 udp 2130706431 198.18.0.21 40004 typ host".into()
                                ],
                            },
                            proof: None,
                        },
                    });
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                session.shutdown().await;
            })
        })
        .join()
        .unwrap();
    assert!(
        alice.wait_until(Request::Status, Duration::from_secs(5), |s| {
            s["social"]["signals_rejected"].as_u64().unwrap_or(0) >= rejected_before + 3
        }),
        "dave's offers were not counted as rejected"
    );
    let dave_uid = dave_device.uid.to_string();
    let links = alice.ask(Request::Links);
    assert!(
        links
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["uid"] != dave_uid),
        "a link to dave exists: {links}"
    );
}

fn links_survive_the_server_going_away_and_recover_after_roaming(kind: XmppServerKind) {
    let mut w = world_with_users(kind, "slr", &["alice", "carol"]);
    let mut alice = node(&w, "alice", "alice");
    let mut carol = node(&w, "carol", "carol");
    befriend(&mut alice, &jid("alice"), &mut carol, &jid("carol"));
    assert!(wait_linked(&mut alice, &carol.uid, LINK_WITHIN).is_some());
    assert!(wait_linked(&mut carol, &alice.uid, LINK_WITHIN).is_some());
    let carol_at_alice = address_of(&mut alice, &carol.uid).unwrap();
    let alice_at_carol = address_of(&mut carol, &alice.uid).unwrap();
    // 2 (continued). A TCP transfer over the direct link arrives intact, from the address
    //    carol gave alice.
    let t = tcp_transfer(
        w.host("alice"),
        w.host("carol"),
        carol.ipv4.parse().unwrap(),
        carol_at_alice.parse().unwrap(),
        7200,
        8 * 1024 * 1024,
    );
    assert_eq!(t.received_sha256, t.sent_sha256);
    assert_eq!(t.seen_from.ip().to_string(), alice_at_carol);

    // 7. prosody goes away while the link carries traffic: traffic continues.
    w.stop_xmpp();
    assert!(
        alice.wait_until(Request::Status, Duration::from_secs(10), |s| s["xmpp"]
            ["state"]
            != "online"),
        "alice did not notice the server going away"
    );
    assert!(
        ping(w.host("alice"), &carol_at_alice),
        "traffic stopped with the server"
    );
    assert!(ping(w.host("carol"), &alice_at_carol));
    //    When it returns, the sessions log in again by themselves.
    w.start_xmpp();
    for n in [&mut alice, &mut carol] {
        assert!(
            n.wait_until(Request::Status, Duration::from_secs(40), |s| s["xmpp"]
                ["state"]
                == "online"),
            "no re-login after the server returned"
        );
    }
    assert!(ping(w.host("alice"), &carol_at_alice));

    // 8. alice's underlay address changes behind her NAT; after network_changed() the link
    //    recovers.
    w.move_host("alice", std::net::Ipv4Addr::new(198, 19, 1, 9));
    alice.ask(Request::NetworkChanged);
    assert!(
        wait_linked(&mut alice, &carol.uid, LINK_WITHIN).is_some(),
        "no link after roaming"
    );
    assert!(
        ping(w.host("alice"), &carol_at_alice),
        "no traffic after roaming"
    );
    assert!(ping(w.host("carol"), &alice_at_carol));
}

#[test]
fn on_demand_links_form_on_the_first_packet_and_close_when_idle() {
    use socialvpn_tests::social_nodes::start_node_with;
    let w = world_with_users(XmppServerKind::Prosody, "sld", &["alice", "carol"]);
    let policy =
        serde_json::json!({ "policy": { "on_demand": { "max_links": 8, "idle_secs": 4 } } });
    let mut alice = start_node_with(&w, Path::new(BIN), "alice", "alice", policy.clone());
    let mut carol = start_node_with(&w, Path::new(BIN), "carol", "carol", policy);
    for n in [&mut alice, &mut carol] {
        assert!(
            n.wait_until(Request::Status, Duration::from_secs(15), |s| s["xmpp"]
                ["state"]
                == "online")
        );
    }
    befriend(&mut alice, &jid("alice"), &mut carol, &jid("carol"));
    // Friends, online, with addresses, but no link until someone sends a packet.
    assert!(
        alice.wait_until(Request::Roster, Duration::from_secs(10), |r| {
            socialvpn_tests::social_nodes::device(r, &carol.uid)
                .is_some_and(|d| d["overlay_address"].is_string())
        })
    );
    std::thread::sleep(Duration::from_secs(2));
    let roster = alice.ask(Request::Roster);
    let device = socialvpn_tests::social_nodes::device(&roster, &carol.uid)
        .unwrap()
        .clone();
    assert!(device["link"].is_null(), "linked without demand: {device}");
    let carol_at_alice = device["overlay_address"].as_str().unwrap().to_string();
    // The first ping starts the link; replies come back.
    assert!(ping(w.host("alice"), &carol_at_alice), "no reply on demand");
    assert!(wait_linked(&mut alice, &carol.uid, LINK_WITHIN).is_some());
    // Idle for longer than 4 s: the link is closed again.
    assert!(
        alice.wait_until(Request::Roster, Duration::from_secs(15), |r| {
            socialvpn_tests::social_nodes::device(r, &carol.uid)
                .is_some_and(|d| d["link"].is_null())
        }),
        "idle on-demand link was not trimmed"
    );
}

fn has_relay(n: &mut DpNode) -> bool {
    n.wait_until(Request::Status, Duration::from_secs(10), |s| {
        s["candidates"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c.as_str().is_some_and(|c| c.starts_with("relay")))
        })
    })
}

#[test]
fn a_node_restarted_on_the_same_port_gets_a_relay_again() {
    // The node's port is fixed and the cone NAT keeps its mapping: without releasing the
    // allocation at shutdown, coturn would refuse the new one (allocation mismatch).
    let w = world_with_users(XmppServerKind::Prosody, "slrr", &["alice"]);
    let mut alice = node(&w, "alice", "alice");
    assert!(has_relay(&mut alice), "no relay at first start");
    assert!(alice.stop(), "the node did not stop on EOF");
    let mut alice = node(&w, "alice", "alice");
    assert!(
        has_relay(&mut alice),
        "no relay after a clean restart on the same port"
    );
}

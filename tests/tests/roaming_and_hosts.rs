//! Hosts as users have them (root, the social world): a device whose address changes with
//! nobody telling the engine (the daemon's own watch, and the path watch alone), the same
//! with the platform's call, two devices of one account behind one NAT that only TURN joins,
//! and a host without IPv6.

use socialvpn_core::api::Request;
use socialvpn_tests::node::DpNode;
use socialvpn_tests::pinger::{unix_now, Pinger};
use socialvpn_tests::social_nodes::{
    address_of, befriend, jid, online_node, start_node_in, wait_linked, world_with_users,
};
use socialvpn_tests::social_world::{SocialWorld, XmppServerKind};
use socialvpn_tests::two_hosts::ping;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_socialvpn-dpnode");

fn world(tag: &str, users: &[&str]) -> SocialWorld {
    world_with_users(XmppServerKind::Prosody, tag, users)
}

fn node(w: &SocialWorld, host: &str, user: &str, watch_network: bool) -> DpNode {
    let settings = serde_json::json!({ "watch_network": watch_network });
    online_node(w, Path::new(BIN), host, user, settings)
}

/// alice (cone NAT) linked directly with carol and through TURN with bob.
struct Roamer {
    w: SocialWorld,
    alice: DpNode,
    _friends: [DpNode; 2],
    carol_at_alice: String,
    bob_at_alice: String,
}

fn roamer(tag: &str, watch_network: bool) -> Roamer {
    let w = world(tag, &["alice", "bob", "carol"]);
    let mut alice = node(&w, "alice", "alice", watch_network);
    let mut bob = node(&w, "bob", "bob", watch_network);
    let mut carol = node(&w, "carol", "carol", watch_network);
    befriend(&mut alice, &jid("alice"), &mut carol, &jid("carol"));
    befriend(&mut alice, &jid("alice"), &mut bob, &jid("bob"));
    let direct = wait_linked(&mut alice, &carol.uid, Duration::from_secs(30)).expect("carol");
    assert_eq!(direct["relayed"], false);
    let relayed = wait_linked(&mut alice, &bob.uid, Duration::from_secs(30)).expect("bob");
    assert_eq!(relayed["relayed"], true);
    assert!(wait_linked(&mut carol, &alice.uid, Duration::from_secs(30)).is_some());
    assert!(wait_linked(&mut bob, &alice.uid, Duration::from_secs(30)).is_some());
    let carol_at_alice = address_of(&mut alice, &carol.uid).unwrap();
    let bob_at_alice = address_of(&mut alice, &bob.uid).unwrap();
    Roamer {
        w,
        alice,
        _friends: [bob, carol],
        carol_at_alice,
        bob_at_alice,
    }
}

impl Roamer {
    /// Moves alice to `to` (calling `network-changed` if `call`) under a ping every 0.1 s on
    /// both links; returns how long each link took to carry traffic again (direct, relayed).
    fn move_alice(&mut self, to: Ipv4Addr, call: bool) -> (f64, f64) {
        let direct = Pinger::start(self.w.host("alice"), &self.carol_at_alice);
        let relayed = Pinger::start(self.w.host("alice"), &self.bob_at_alice);
        std::thread::sleep(Duration::from_secs(2));
        let moved = unix_now();
        self.w.move_host("alice", to);
        if call {
            self.alice.ask(Request::NetworkChanged);
        }
        std::thread::sleep(Duration::from_secs(20));
        let (direct, relayed) = (direct.stop(), relayed.stop());
        let back = |r: &socialvpn_tests::pinger::PingReport| {
            r.back_after(moved + 0.3)
                .unwrap_or_else(|| panic!("no traffic to {} after the move", r.target))
        };
        (back(&direct), back(&relayed))
    }
}

#[test]
fn a_move_the_engine_is_not_told_of_is_found_by_the_daemons_watch() {
    let mut r = roamer("rmw", true);
    let (direct, relayed) = r.move_alice(Ipv4Addr::new(198, 19, 1, 9), false);
    eprintln!("watched move: direct back in {direct:.1} s, relayed in {relayed:.1} s");
    assert!(direct <= 10.0, "direct link back after {direct:.1} s");
    assert!(relayed <= 15.0, "relayed link back after {relayed:.1} s");
}

#[test]
fn a_move_nobody_notices_is_found_by_the_silent_paths() {
    // No watch and no call: only the data that goes unanswered shows the move.
    let mut r = roamer("rms", false);
    let (direct, relayed) = r.move_alice(Ipv4Addr::new(198, 19, 1, 9), false);
    eprintln!("unwatched move: direct back in {direct:.1} s, relayed in {relayed:.1} s");
    assert!(direct <= 10.0, "direct link back after {direct:.1} s");
    assert!(relayed <= 15.0, "relayed link back after {relayed:.1} s");
}

#[test]
fn a_move_the_platform_reports_recovers_within_three_seconds() {
    let mut r = roamer("rmc", false);
    let (direct, relayed) = r.move_alice(Ipv4Addr::new(198, 19, 1, 9), true);
    eprintln!("reported move: direct back in {direct:.1} s, relayed in {relayed:.1} s");
    assert!(direct <= 3.0, "direct link back after {direct:.1} s");
    assert!(relayed <= 3.0, "relayed link back after {relayed:.1} s");
}

#[test]
fn own_devices_behind_one_nat_that_only_turn_joins_link_every_time() {
    let w = world("rod", &["alice"]);
    // A Wi-Fi with client isolation: the two devices cannot reach each other on the LAN,
    // and the NAT does not hairpin, so only the relay joins them.
    w.isolate("alice", "alice2");
    for round in 1..=10 {
        // Fresh installs each time: new keys, so either device may be the controlling one.
        let dir = |host: &str| w.state_dir().join(format!("own-{host}-{round}"));
        let settings = serde_json::json!({});
        let mut a = start_node_in(
            &w,
            Path::new(BIN),
            "alice",
            "alice",
            &dir("a"),
            settings.clone(),
        );
        let mut b = start_node_in(&w, Path::new(BIN), "alice2", "alice", &dir("b"), settings);
        let link = wait_linked(&mut a, &b.uid, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("round {round}: no link: {}", a.ask(Request::Roster)));
        assert_eq!(link["relayed"], true, "round {round}: {link}");
        let b_at_a = address_of(&mut a, &b.uid).unwrap();
        assert!(ping(w.host("alice"), &b_at_a), "round {round}: no ping");
        assert!(wait_linked(&mut b, &a.uid, Duration::from_secs(10)).is_some());
        assert!(
            a.stop() && b.stop(),
            "round {round}: the nodes did not stop"
        );
    }
}

#[test]
fn a_host_without_ipv6_links_and_pings_over_ipv4() {
    let w = world("r4", &["alice", "carol"]);
    w.disable_ipv6("carol");
    let mut alice = node(&w, "alice", "alice", true);
    let mut carol = node(&w, "carol", "carol", true);
    befriend(&mut alice, &jid("alice"), &mut carol, &jid("carol"));
    assert!(wait_linked(&mut carol, &alice.uid, Duration::from_secs(30)).is_some());
    let alice_at_carol = address_of(&mut carol, &alice.uid).unwrap();
    assert!(
        ping(w.host("carol"), &alice_at_carol),
        "carol cannot ping alice"
    );
    let carol_at_alice = address_of(&mut alice, &carol.uid).unwrap();
    assert!(
        ping(w.host("alice"), &carol_at_alice),
        "alice cannot ping carol"
    );
    let addrs = w
        .host("carol")
        .output("ip", &["-6", "addr", "show", "dev", "svpn0"]);
    assert!(String::from_utf8_lossy(&addrs.stdout).trim().is_empty());
}

//! SocialVPN end to end in the social test world (root): real prosody and coturn, a cone NAT
//! and a symmetric NAT, an engine per host on its own TUN, linking by itself with friends.

use socialvpn_tests::node::DpNode;
use socialvpn_tests::social_nodes::{address_of, befriend, entry, start_node, wait_linked};
use socialvpn_tests::social_world::SocialWorld;
use socialvpn_tests::two_hosts::ping;
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_socialvpn-dpnode");
const LINK_WITHIN: Duration = Duration::from_secs(20);

fn jid(user: &str) -> String {
    format!("{user}@svpn.test")
}

fn world(tag: &str, users: &[&str]) -> SocialWorld {
    let w = SocialWorld::new(tag);
    for user in users {
        w.register(user, &format!("pw-{user}"));
    }
    w
}

fn node(w: &SocialWorld, host: &str, user: &str) -> DpNode {
    let mut n = start_node(w, Path::new(BIN), host, user);
    assert!(
        n.wait_until("status", Duration::from_secs(15), |s| s["xmpp"] == "online"),
        "{host} did not log in"
    );
    n
}

#[test]
fn friends_link_directly_through_nat_and_through_turn() {
    let w = world("sla", &["alice", "bob", "carol"]);
    let mut alice = node(&w, "alice", "alice");
    let alice2 = node(&w, "alice2", "alice");
    let mut bob = node(&w, "bob", "bob");
    let mut carol = node(&w, "carol", "carol");

    // 1. Friend requests through the API; both rosters show mutual friends.
    befriend(&mut alice, &jid("alice"), &mut bob, &jid("bob"));
    befriend(&mut alice, &jid("alice"), &mut carol, &jid("carol"));
    befriend(&mut bob, &jid("bob"), &mut carol, &jid("carol"));
    let roster = alice.ask("roster");
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

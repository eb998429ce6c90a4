//! XEP-0352 client state indication through the real servers (root, the social world; prosody
//! with mod_csi_simple, ejabberd with mod_client_state, as both ship): an app in the
//! background tells its server, which then holds presence updates for it; in the foreground
//! again it says so and gets them at once. Links still come up while the app is in the
//! background, because link signals are IQs, which both servers deliver at once (together
//! with the sender's held presence).

use socialvpn_core::api::Request;
use socialvpn_tests::attacker::{fresh_device, make_friends, XmppAttacker};
use socialvpn_tests::node::DpNode;
use socialvpn_tests::on_both_servers;
use socialvpn_tests::social_nodes::{
    address_of, device, online_node, wait_linked, world_with_users,
};
use socialvpn_tests::social_world::{SocialWorld, XmppServerKind};
use socialvpn_tests::two_hosts::ping;
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_socialvpn-dpnode");
/// How long a held presence must stay held for the test to call it held: well under the
/// client's own 60 s read timeout (its probe would flush prosody's buffer).
const HELD_FOR: Duration = Duration::from_secs(6);
/// A presence that is not held arrives within this.
const DELIVERED_WITHIN: Duration = Duration::from_secs(5);
const LINK_WITHIN: Duration = Duration::from_secs(30);

on_both_servers!(background_holds_presence_and_links_still_come_up);

fn node(w: &SocialWorld, host: &str, user: &str) -> DpNode {
    online_node(w, Path::new(BIN), host, user, serde_json::json!({}))
}

/// Whether `node` lists the device `uid` (online) within `within`.
fn sees_device(node: &mut DpNode, uid: &str, within: Duration) -> bool {
    node.wait_until(Request::Roster, within, |r| device(r, uid).is_some())
}

fn background_holds_presence_and_links_still_come_up(kind: XmppServerKind) {
    let w = world_with_users(kind, "csi", &["alice", "bob", "carol"]);
    make_friends(&w, "carol", "alice", "carol");
    make_friends(&w, "bob", "alice", "bob");
    let mut alice = node(&w, "alice", "alice");
    // The login's own traffic (roster, presence, services) settles first.
    std::thread::sleep(Duration::from_secs(2));
    alice.ask(Request::Background);
    assert_eq!(alice.ask(Request::Status)["foreground"], false);
    std::thread::sleep(Duration::from_secs(1));

    // 1. carol's device comes online while alice's app is in the background: her server
    //    holds the presence (alice's node does not learn of the device).
    let carol = XmppAttacker::login(&w, "carol", "carol", "phone");
    let carols = fresh_device();
    carol.announce(Some(carols.to_wire()));
    let announced = Instant::now();
    assert!(
        !sees_device(&mut alice, &carols.uid.to_string(), HELD_FOR),
        "{kind}: the server delivered a presence update to a client in the background: \
         the inactive state was not indicated"
    );

    // 2. The app comes to the foreground: the server is told and hands over what it held.
    alice.ask(Request::Foreground);
    assert!(
        sees_device(&mut alice, &carols.uid.to_string(), DELIVERED_WITHIN),
        "{kind}: carol's device never showed after the foreground ({:.0} s after it came \
         online): the active state was not indicated",
        announced.elapsed().as_secs_f64()
    );

    // 3. Background again; bob's device comes online and links with alice's at once: his
    //    link signals are IQs, which the server delivers (with his held presence first).
    alice.ask(Request::Background);
    std::thread::sleep(Duration::from_secs(1));
    let mut bob = node(&w, "bob", "bob");
    let started = Instant::now();
    let link = wait_linked(&mut alice, &bob.uid, LINK_WITHIN);
    assert!(
        link.is_some(),
        "{kind}: no link to bob's device while alice's app is in the background"
    );
    assert!(wait_linked(&mut bob, &alice.uid, LINK_WITHIN).is_some());
    eprintln!(
        "{kind}: linked {:.1} s after bob's device started, alice in the background",
        started.elapsed().as_secs_f64()
    );
    let bob_at_alice = address_of(&mut alice, &bob.uid).expect("bob's address at alice");
    assert!(ping(w.host("alice"), &bob_at_alice), "{kind}: no traffic");
    // Still in the background: the status says so (the server was not told otherwise).
    assert_eq!(alice.ask(Request::Status)["foreground"], false);
    drop(carol);
}

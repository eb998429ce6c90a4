//! STUN and TURN from the user's own XMPP server (XEP-0215) in the social world (root):
//! devices configured with nothing but the account get the TURN server prosody
//! (`mod_turn_external`) or ejabberd (`mod_stun_disco`) hands out, with its temporary
//! credentials, and link through the symmetric NAT relayed.

use socialvpn_core::api::Request;
use socialvpn_tests::node::DpNode;
use socialvpn_tests::on_both_servers;
use socialvpn_tests::social_nodes::{address_of, befriend, online_node, wait_linked};
use socialvpn_tests::social_world::{SocialWorld, XmppServerKind, OFFERED_TURN_ADDR};
use socialvpn_tests::two_hosts::ping;
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_socialvpn-dpnode");

on_both_servers!(friends_link_relayed_with_no_ice_configuration,);

/// A node with no STUN or TURN server of its own.
fn bare_node(w: &SocialWorld, host: &str, user: &str) -> DpNode {
    let none = serde_json::json!({ "stun": null, "turn": null });
    online_node(w, Path::new(BIN), host, user, none)
}

/// The relay candidate a node offers, once it has one.
fn relay_candidate(n: &mut DpNode) -> Option<String> {
    let relay = |s: &serde_json::Value| {
        s["candidates"].as_array().and_then(|c| {
            c.iter()
                .filter_map(|c| c.as_str())
                .find(|c| c.starts_with("relay"))
                .map(str::to_string)
        })
    };
    n.wait_until(Request::Status, Duration::from_secs(10), |s| {
        relay(s).is_some()
    });
    relay(&n.ask(Request::Status))
}

fn friends_link_relayed_with_no_ice_configuration(kind: XmppServerKind) {
    let w = SocialWorld::with_offered_turn("sdi", kind);
    w.register_all(&[("alice", "pw-alice"), ("bob", "pw-bob")]);
    let mut alice = bare_node(&w, "alice", "alice");
    let mut bob = bare_node(&w, "bob", "bob");

    // Both got the offered coturn (its relay ports, not the configured coturn's).
    for n in [&mut alice, &mut bob] {
        // Only credentials the server derived from the shared secret get an allocation there.
        let relay = relay_candidate(n).unwrap_or_else(|| {
            let log = w.offered_turn_log_path().unwrap();
            panic!(
                "no relay from the offered TURN server: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
        let port: u16 = relay
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{relay}"));
        assert!((49300..=49399).contains(&port), "{relay}");
        assert!(
            relay.contains(&OFFERED_TURN_ADDR.ip().to_string()),
            "{relay}"
        );
    }

    // alice (cone) ↔ bob (symmetric): only the relay joins them.
    befriend(&mut alice, "alice@svpn.test", &mut bob, "bob@svpn.test");
    let link = wait_linked(&mut alice, &bob.uid, Duration::from_secs(30)).expect("a link");
    assert_eq!(link["relayed"], true, "{link}");
    let bob_at_alice = address_of(&mut alice, &bob.uid).unwrap();
    assert!(
        ping(w.host("alice"), &bob_at_alice),
        "no ping through the relay"
    );
}

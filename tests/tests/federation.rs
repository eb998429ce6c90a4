//! Friends on another server (root, the federated social world): alice's account is on one
//! server, bob's and carol's on the other (prosody and ejabberd, each way round); the servers
//! find each other by the SRV records `_xmpp-server._tcp` of the world's DNS and authenticate
//! by certificate. Friend requests, device announcements and link signals cross the s2s
//! link; the devices link (carol directly, bob behind the symmetric NAT through TURN) and
//! carry traffic. Federation is how SocialVPN grows past one server.

use socialvpn_core::api::Request;
use socialvpn_tests::node::DpNode;
use socialvpn_tests::on_both_servers;
use socialvpn_tests::social_nodes::{address_of, befriend, entry, online_node, wait_linked};
use socialvpn_tests::social_world::{SocialWorld, XmppServerKind, DOMAIN, REMOTE_DOMAIN};
use socialvpn_tests::two_hosts::ping;
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_socialvpn-dpnode");
/// Links across servers wait for the first s2s connection (DNS, TCP, STARTTLS, SASL
/// EXTERNAL) on top of the usual signalling.
const LINK_WITHIN: Duration = Duration::from_secs(40);

on_both_servers!(friends_on_another_server_link_and_ping);

fn friends_on_another_server_link_and_ping(kind: XmppServerKind) {
    let w = SocialWorld::federated("fed", kind);
    w.register("alice", "pw-alice");
    w.register_remote("bob", "pw-bob");
    w.register_remote("carol", "pw-carol");
    let remote = |user: &str| {
        // Found through the world's DNS (`_xmpp-client._tcp.elsewhere.test`), as a user who
        // typed only the address and password would have it.
        serde_json::json!({
            "jid": format!("{user}@{REMOTE_DOMAIN}"),
            "server": null,
            "dns_servers": [w.dns_addr().to_string()],
        })
    };
    let mut alice = node(&w, "alice", "alice", serde_json::json!({}));
    let mut bob = node(&w, "bob", "bob", remote("bob"));
    let mut carol = node(&w, "carol", "carol", remote("carol"));
    let (alice_jid, bob_jid, carol_jid) = (
        format!("alice@{DOMAIN}"),
        format!("bob@{REMOTE_DOMAIN}"),
        format!("carol@{REMOTE_DOMAIN}"),
    );

    // Friend requests cross the servers both ways.
    befriend(&mut alice, &alice_jid, &mut bob, &bob_jid);
    befriend(&mut carol, &carol_jid, &mut alice, &alice_jid);
    let roster = alice.ask(Request::Roster);
    for jid in [&bob_jid, &carol_jid] {
        assert_eq!(
            entry(&roster, jid).unwrap()["subscription"],
            "both",
            "{kind} ↔ {}: {roster}",
            w.remote_kind()
        );
    }

    // carol (no NAT) ↔ alice (cone NAT): direct; bob (symmetric NAT) ↔ alice: relayed.
    let direct = wait_linked(&mut alice, &carol.uid, LINK_WITHIN).expect("alice-carol link");
    assert_eq!(direct["relayed"], false, "{direct}");
    let relayed = wait_linked(&mut alice, &bob.uid, LINK_WITHIN).expect("alice-bob link");
    assert_eq!(relayed["relayed"], true, "{relayed}");
    assert!(wait_linked(&mut carol, &alice.uid, LINK_WITHIN).is_some());
    assert!(wait_linked(&mut bob, &alice.uid, LINK_WITHIN).is_some());

    // Each server found the other through its SRV record (nothing else names them).
    let queries = w.dns_queries();
    for domain in [DOMAIN, REMOTE_DOMAIN] {
        let srv = format!("_xmpp-server._tcp.{domain}");
        assert!(
            queries
                .iter()
                .any(|q| q.contains("query[SRV]") && q.contains(&srv)),
            "{kind}: nobody looked up {srv}: {queries:#?}"
        );
    }

    let targets = [
        ("alice", address_of(&mut alice, &carol.uid)),
        ("alice", address_of(&mut alice, &bob.uid)),
        ("carol", address_of(&mut carol, &alice.uid)),
        ("bob", address_of(&mut bob, &alice.uid)),
    ];
    for (from, at) in targets {
        let at = at.expect("the peer's address");
        assert!(ping(w.host(from), &at), "{from} → {at} ({kind} federation)");
    }
}

fn node(w: &SocialWorld, host: &str, user: &str, settings: serde_json::Value) -> DpNode {
    online_node(w, Path::new(BIN), host, user, settings)
}

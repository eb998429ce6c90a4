//! Signing in with nothing but an account, in the social world (root): the XMPP server found
//! by DNS SRV records (STARTTLS and direct TLS) from the world's DNS server, and STUN and TURN
//! from the user's own XMPP server (XEP-0215: prosody's `mod_turn_external`, ejabberd's
//! `mod_stun_disco`, with temporary credentials) — devices configured with only the JID,
//! the password and the network's DNS server link through the symmetric NAT relayed.

use socialvpn_core::api::Request;
use socialvpn_core::config::Credentials;
use socialvpn_core::xmpp::connect::{LoginFailure, TlsTrust, XmppAccount};
use socialvpn_core::xmpp::discovery::Dns;
use socialvpn_core::xmpp::session::{XmppInput, XmppSession, XmppState};
use socialvpn_tests::dns_server::DnsRecord;
use socialvpn_tests::node::DpNode;
use socialvpn_tests::on_both_servers;
use socialvpn_tests::social_nodes::{address_of, befriend, jid, online_node, wait_linked};
use socialvpn_tests::social_world::{
    SocialWorld, XmppServerKind, DOMAIN, OFFERED_TURN_ADDR, TURN_RELAY_PORTS,
};
use socialvpn_tests::two_hosts::ping;
use socialvpn_tests::xmpp_server::DIRECT_TLS_PORT;
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_socialvpn-dpnode");

on_both_servers!(
    friends_link_relayed_with_no_ice_configuration,
    a_crashed_node_keeps_its_configured_turn_server_after_a_restart,
);

/// A node with nothing but its account and the network's DNS server: no server address, no
/// STUN or TURN server.
fn bare_node(w: &SocialWorld, host: &str, user: &str) -> DpNode {
    let none = serde_json::json!({
        "server": null,
        "dns_servers": [w.dns_addr().to_string()],
        "stun": null,
        "turn": null,
    });
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
    let mut w = SocialWorld::with_offered_turn("sdi", kind);
    let records = w.srv_records();
    w.serve_dns(&records);
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
    befriend(&mut alice, &jid("alice"), &mut bob, &jid("bob"));
    let link = wait_linked(&mut alice, &bob.uid, Duration::from_secs(30)).expect("a link");
    assert_eq!(link["relayed"], true, "{link}");
    let bob_at_alice = address_of(&mut alice, &bob.uid).unwrap();
    assert!(
        ping(w.host("alice"), &bob_at_alice),
        "no ping through the relay"
    );
}

fn session_account(w: &SocialWorld) -> XmppAccount {
    XmppAccount {
        jid: jid("alice").parse().unwrap(),
        credentials: Credentials::Password("pw-alice".into()),
        resource: "srv1".into(),
        server: None,
        dns: Dns {
            servers: vec![w.dns_addr().into()],
        },
        trust: TlsTrust::CaFile(w.ca_cert_path()),
        protect: None,
    }
}

/// The first state other than `Connecting` a new session reports within 10 s.
fn first_state(w: &SocialWorld, account: XmppAccount) -> Option<XmppState> {
    w.host("carol").block_on(move || {
        Box::pin(async move {
            let (s, mut rx) = XmppSession::spawn(account);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let mut state = None;
            while let Ok(Some(input)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                match input {
                    XmppInput::State(XmppState::Connecting) => {}
                    XmppInput::State(other) => {
                        state = Some(other);
                        break;
                    }
                    _ => {}
                }
            }
            s.shutdown().await;
            state
        })
    })
}

fn srv(service: &str, target: &str, port: u16, priority: u16) -> DnsRecord {
    DnsRecord::Srv {
        name: format!("{service}.{DOMAIN}"),
        target: format!("{target}.{DOMAIN}"),
        port,
        priority,
        weight: 5,
    }
}

fn a(name: &str, w: &SocialWorld) -> DnsRecord {
    DnsRecord::A {
        name: format!("{name}.{DOMAIN}"),
        addr: w.xmpp_addr().ip().to_string().parse().unwrap(),
    }
}

#[test]
fn the_server_is_found_by_srv_with_starttls_and_with_direct_tls() {
    let mut w = SocialWorld::new("srv");
    w.register("alice", "pw-alice");
    let xmpp_port = w.xmpp_addr().port();

    // Nothing published: the bare domain has no address either, so no login.
    w.serve_dns(&[]);
    let state = first_state(&w, session_account(&w));
    assert!(
        matches!(
            state,
            Some(XmppState::Offline {
                reason: LoginFailure::Unreachable(_),
                ..
            })
        ),
        "{state:?}"
    );

    // STARTTLS at another name than the domain's.
    let records = w.srv_records();
    w.serve_dns(&records);
    let state = first_state(&w, session_account(&w));
    assert!(matches!(state, Some(XmppState::Online { .. })), "{state:?}");

    // Direct TLS (XEP-0368) preferred; the STARTTLS record points at a dead port, so only
    // the direct TLS one can log in.
    w.serve_dns(&[
        srv("_xmpps-client._tcp", "tls", DIRECT_TLS_PORT, 0),
        srv("_xmpp-client._tcp", "c2s", 5299, 0),
        a("tls", &w),
        a("c2s", &w),
    ]);
    let state = first_state(&w, session_account(&w));
    assert!(matches!(state, Some(XmppState::Online { .. })), "{state:?}");

    // A first target that points nowhere (no address) and a second with the wrong port:
    // tried in turn, then offline with back-off, not a hot loop.
    w.serve_dns(&[
        srv("_xmpp-client._tcp", "nowhere", xmpp_port, 0),
        srv("_xmpp-client._tcp", "c2s", 5299, 10),
        a("c2s", &w),
    ]);
    let state = first_state(&w, session_account(&w));
    match state {
        Some(XmppState::Offline { reason, retry_in }) => {
            assert!(matches!(reason, LoginFailure::Unreachable(_)), "{reason:?}");
            assert!(retry_in >= Duration::from_secs(1), "{retry_in:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// SRV targets that serve another domain (`elsewhere.test`) are refused in words and the
/// next target is tried; alone, they leave the session offline with back-off, never logged in
/// to a server that cannot prove it is the domain's. Each server refuses differently: ejabberd
/// over STARTTLS says `host-unknown`, and over direct TLS shows its own certificate (another
/// name); prosody over direct TLS answers the name we asked for with `unrecognized_name`.
#[test]
fn srv_targets_serving_another_domain_are_passed_over() {
    use socialvpn_core::xmpp::connect::CertificateProblem;
    use socialvpn_tests::social_world::{REMOTE_DOMAIN, REMOTE_SERVER_IP};
    let elsewhere = |service: &str, port, priority| DnsRecord::Srv {
        name: format!("{service}.{DOMAIN}"),
        target: format!("c2s.{REMOTE_DOMAIN}"),
        port,
        priority,
        weight: 5,
    };
    let elsewhere_addr = DnsRecord::A {
        name: format!("c2s.{REMOTE_DOMAIN}"),
        addr: REMOTE_SERVER_IP,
    };
    let offline_because = |w: &SocialWorld| match first_state(w, session_account(w)) {
        Some(XmppState::Offline { reason, retry_in }) => {
            assert!(retry_in >= Duration::from_secs(1), "{retry_in:?}");
            reason
        }
        other => panic!("{other:?}"),
    };

    // prosody for svpn.test, ejabberd for elsewhere.test.
    let mut w = SocialWorld::federated("srvc", XmppServerKind::Prosody);
    w.register("alice", "pw-alice");
    // First the other domain's server (direct TLS, then STARTTLS), then the right one:
    // logged in at the third.
    w.serve_dns(&[
        elsewhere("_xmpps-client._tcp", DIRECT_TLS_PORT, 0),
        elsewhere("_xmpp-client._tcp", 5222, 0),
        srv("_xmpp-client._tcp", "c2s", w.xmpp_addr().port(), 10),
        elsewhere_addr.clone(),
        a("c2s", &w),
    ]);
    let state = first_state(&w, session_account(&w));
    assert!(matches!(state, Some(XmppState::Online { .. })), "{state:?}");
    let asked = w.dns_queries();
    assert!(
        asked
            .iter()
            .any(|q| q.contains(&format!("c2s.{REMOTE_DOMAIN}"))),
        "the other domain's targets were never tried: {asked:#?}"
    );
    w.serve_dns(&[
        elsewhere("_xmpps-client._tcp", DIRECT_TLS_PORT, 0),
        elsewhere_addr.clone(),
    ]);
    assert_eq!(
        offline_because(&w),
        LoginFailure::Certificate(CertificateProblem::WrongName)
    );
    w.serve_dns(&[
        elsewhere("_xmpp-client._tcp", 5222, 0),
        elsewhere_addr.clone(),
    ]);
    assert_eq!(offline_because(&w), LoginFailure::NotThisDomain);
    drop(w);

    // ejabberd for svpn.test, prosody for elsewhere.test.
    let mut w = SocialWorld::federated("srvd", XmppServerKind::Ejabberd);
    w.register("alice", "pw-alice");
    w.serve_dns(&[
        elsewhere("_xmpps-client._tcp", DIRECT_TLS_PORT, 0),
        elsewhere_addr,
    ]);
    assert_eq!(offline_because(&w), LoginFailure::NotThisDomain);
}

/// Credentials from the XMPP server that last 40 s (prosody's `turn_external_ttl`): each
/// device asks for new ones half-way, before they expire, allocates a new relay with them and
/// moves the relayed link onto it, which then carries traffic.
#[test]
fn short_lived_turn_credentials_are_renewed_before_they_expire() {
    const LIFETIME: u64 = 40;
    let mut w = SocialWorld::with_short_lived_turn_credentials("sdr", LIFETIME as u32);
    let records = w.srv_records();
    w.serve_dns(&records);
    w.register_all(&[("alice", "pw-alice"), ("bob", "pw-bob")]);
    let mut alice = bare_node(&w, "alice", "alice");
    let mut bob = bare_node(&w, "bob", "bob");
    let logged_in = std::time::Instant::now();
    let first_relay = relay_candidate(&mut alice).expect("a relay");
    befriend(&mut alice, &jid("alice"), &mut bob, &jid("bob"));
    let link = wait_linked(&mut alice, &bob.uid, Duration::from_secs(30)).expect("a link");
    assert_eq!(link["relayed"], true, "{link}");
    let bob_at_alice = address_of(&mut alice, &bob.uid).unwrap();

    // Renewed half-way (20 s); the link moves to the new relay within a few seconds. Looked
    // at before the next renewal (40 s).
    std::thread::sleep(Duration::from_secs(30).saturating_sub(logged_in.elapsed()));
    let log = std::fs::read_to_string(w.offered_turn_log_path().unwrap()).unwrap_or_default();
    // coturn names the user (`<expiry>` for prosody's credentials) of every allocation, after
    // the seconds since it started.
    let allocations: Vec<(u64, u64)> = log
        .lines()
        .filter(|l| l.contains("ALLOCATE processed, success"))
        .filter_map(|l| {
            let at = l.split(':').next()?.trim().parse().ok()?;
            let user = l.split("user <").nth(1)?.split('>').next()?.parse().ok()?;
            Some((at, user))
        })
        .collect();
    let (first_at, first_user) = *allocations.first().unwrap_or_else(|| panic!("{log}"));
    let renewed = allocations
        .iter()
        .filter(|(at, user)| *user > first_user + 5 && *at < first_at + LIFETIME)
        .count();
    assert!(
        renewed >= 2,
        "both devices allocate with new credentials before the first expire: \
         {allocations:?}\n{log}"
    );
    let relay = relay_candidate(&mut alice).expect("a relay");
    assert_ne!(relay, first_relay, "alice still uses the first allocation");
    assert!(
        ping(w.host("alice"), &bob_at_alice),
        "no traffic through the new relay"
    );
}

/// A configured TURN server that does not answer: the one the XMPP server offers stands in,
/// so the device still has a relay.
#[test]
fn the_offered_turn_server_stands_in_for_a_dead_configured_one() {
    let mut w = SocialWorld::with_offered_turn("sds", XmppServerKind::Prosody);
    let records = w.srv_records();
    w.serve_dns(&records);
    w.register("carol", "pw-carol");
    let dead = serde_json::json!({
        "server": null,
        "dns_servers": [w.dns_addr().to_string()],
        // Nothing listens on this port.
        "turn": format!("{}:3499", OFFERED_TURN_ADDR.ip()),
    });
    let mut carol = online_node(&w, Path::new(BIN), "carol", "carol", dead);
    let relay = relay_candidate(&mut carol).expect("a relay from the offered server");
    let port: u16 = relay
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert!((49300..=49399).contains(&port), "{relay}");
}

/// The relay port of a node's relay candidate (`relay <ip>:<port>` or similar).
fn relay_port(relay: &str) -> u16 {
    relay
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {relay}"))
}

/// A device that crashed (its allocation never released) and restarts on the same port keeps
/// its configured TURN server. coturn refuses the new allocation (437, allocation mismatch)
/// until the node releases the old one, which it does at once; the server its XMPP server
/// offers must not stand in for one that only needed that.
fn a_crashed_node_keeps_its_configured_turn_server_after_a_restart(kind: XmppServerKind) {
    let mut w = SocialWorld::with_offered_turn("sdk", kind);
    let records = w.srv_records();
    w.serve_dns(&records);
    w.register("carol", "pw-carol");
    let configured = TURN_RELAY_PORTS.0..=TURN_RELAY_PORTS.1;
    let mut carol = online_node(&w, Path::new(BIN), "carol", "carol", serde_json::json!({}));
    let first = relay_candidate(&mut carol).expect("a relay at first start");
    assert!(configured.contains(&relay_port(&first)), "{first}");
    carol.kill();
    let mut carol = online_node(&w, Path::new(BIN), "carol", "carol", serde_json::json!({}));
    let again = relay_candidate(&mut carol).expect("a relay after the crash");
    assert!(
        configured.contains(&relay_port(&again)),
        "the offered server stood in: {again}"
    );
    let log = std::fs::read_to_string(w.coturn_log_path()).unwrap_or_default();
    assert!(
        log.contains("error 437: Mismatched allocation"),
        "coturn never refused the second allocation, so this test did not test the crash:\n{log}"
    );
}

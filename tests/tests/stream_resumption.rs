//! XEP-0198 stream resumption through the real servers (root, the social world; prosody and
//! ejabberd): a device's connection dies silently (a phone walking out of Wi-Fi: its packets
//! and the reset of its socket lost), the server keeps sending into it, and meanwhile the
//! account's roster changes. When the network is back the device resumes its session — no
//! fresh login, no re-announcement — and the roster push it missed is delivered again. And an
//! app that came back to the foreground while offline is active again once resumed.

use socialvpn_core::api::Request;
use socialvpn_tests::attacker::{fresh_device, make_friends, XmppAttacker};
use socialvpn_tests::netns::Namespace;
use socialvpn_tests::node::DpNode;
use socialvpn_tests::on_both_servers;
use socialvpn_tests::social_nodes::{device, entry, jid, online_node, world_with_users};
use socialvpn_tests::social_world::{SocialWorld, XmppServerKind, XMPP_ADDR};
use std::path::Path;
use std::time::Duration;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::roster::{self, Roster};

const BIN: &str = env!("CARGO_BIN_EXE_socialvpn-dpnode");
/// How long the network stays away: several failed login attempts, well inside both
/// servers' resumption windows (prosody 10 min, ejabberd 5 min).
const CUT: Duration = Duration::from_secs(8);
/// The device is back online this soon after the network returns (its login back-off).
const BACK_WITHIN: Duration = Duration::from_secs(40);

on_both_servers!(
    a_silently_cut_stream_resumes_without_missing_a_roster_push,
    an_app_back_in_the_foreground_while_offline_is_active_once_resumed,
);

/// The rules that make a host's XMPP connection vanish without a trace: nothing from the
/// host reaches the server's client port (not even its socket's reset) and nothing comes back.
fn cut_rules() -> [Vec<String>; 2] {
    let ip = XMPP_ADDR.ip().to_string();
    let port = XMPP_ADDR.port().to_string();
    [
        [
            "OUTPUT", "-p", "tcp", "-d", &ip, "--dport", &port, "-j", "DROP",
        ]
        .map(String::from)
        .to_vec(),
        [
            "INPUT", "-p", "tcp", "-s", &ip, "--sport", &port, "-j", "DROP",
        ]
        .map(String::from)
        .to_vec(),
    ]
}

fn iptables(ns: &Namespace, action: &str, rule: &[String]) -> std::process::Output {
    // -w: other tests' worlds change their own tables at the same time.
    let mut args = vec!["-w", action];
    args.extend(rule.iter().map(String::as_str));
    ns.output("iptables", &args)
}

/// A host's XMPP connection cut silently until this is dropped (also when the test fails
/// halfway): the rules go in, then the host's socket is destroyed, its reset dropped too.
struct Cut<'a>(&'a Namespace);

impl Cut<'_> {
    fn start(host: &Namespace) -> Cut<'_> {
        for rule in cut_rules() {
            let out = iptables(host, "-I", &rule);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let cut = Cut(host);
        let ip = XMPP_ADDR.ip().to_string();
        let out = host.output("ss", &["-K", "dst", &ip, "dport", "=", "5222"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        cut
    }
}

impl<'a> Cut<'a> {
    /// Cuts `host`'s connection and waits until its node noticed (its socket is gone) and
    /// tries to log in again — in vain while the network is away.
    fn noticed(host: &'a Namespace, node: &mut DpNode, kind: XmppServerKind) -> Cut<'a> {
        let cut = Cut::start(host);
        assert!(
            node.wait_until(Request::Status, Duration::from_secs(10), |s| s["xmpp"]
                ["state"]
                != "online"),
            "{kind}: the node did not notice its connection was gone"
        );
        cut
    }
}

impl Drop for Cut<'_> {
    fn drop(&mut self) {
        for rule in cut_rules() {
            let _ = iptables(self.0, "-D", &rule);
        }
    }
}

fn sessions(node: &mut DpNode) -> (u64, u64) {
    let status = node.ask(Request::Status);
    let social = &status["social"];
    (
        social["sessions_fresh"].as_u64().unwrap_or(0),
        social["sessions_resumed"].as_u64().unwrap_or(0),
    )
}

fn a_silently_cut_stream_resumes_without_missing_a_roster_push(kind: XmppServerKind) {
    let w: SocialWorld = world_with_users(kind, "res", &["alice", "dave"]);
    let mut alice = online_node(&w, Path::new(BIN), "alice", "alice", serde_json::json!({}));
    let (fresh, resumed) = sessions(&mut alice);
    assert_eq!((fresh, resumed), (1, 0), "{kind}");

    // 1. The connection dies silently; the node notices (its socket is gone) and tries to
    //    log in again, in vain while the network is away.
    let cut = Cut::noticed(w.host("alice"), &mut alice, kind);

    // 2. Meanwhile alice's other device adds dave: the server pushes the roster change to
    //    every session of hers, the cut one included (unacknowledged, kept for resumption).
    let other = XmppAttacker::login(&w, "alice2", "alice", "other");
    let dave: BareJid = jid("dave").parse().expect("JID");
    let id = "roster-add-dave".to_string();
    other.send_one(Iq::from_set(
        id.clone(),
        Roster {
            ver: None,
            items: vec![roster::Item {
                jid: dave.clone(),
                name: Some("Dave, added during the cut".into()),
                subscription: roster::Subscription::None,
                ask: roster::Ask::None,
                groups: vec![],
                approved: None,
            }],
        },
    ));
    other
        .answer(&id, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{kind}: the roster change was refused: {e}"));
    std::thread::sleep(CUT);

    // 3. The network is back: the node resumes the session and gets the push it missed.
    drop(cut);
    assert!(
        alice.wait_until(Request::Status, BACK_WITHIN, |s| s["xmpp"]["state"]
            == "online"),
        "{kind}: not back online"
    );
    assert!(
        alice.wait_until(Request::Roster, Duration::from_secs(10), |r| entry(
            r,
            &jid("dave")
        )
        .is_some()),
        "{kind}: the roster push sent during the cut was lost: {}",
        alice.ask(Request::Roster)
    );
    assert_eq!(
        sessions(&mut alice),
        (1, 1),
        "{kind}: (fresh, resumed) sessions: the cut session was not resumed"
    );
    drop(other);
}

/// The app goes to the background, the connection dies silently, the app comes back to the
/// foreground while offline, and the session is resumed: the server, which last heard
/// "inactive", must be told "active" — else it would go on holding the presence of friends
/// (and on prosody, with the resumed connection paused, everything).
fn an_app_back_in_the_foreground_while_offline_is_active_once_resumed(kind: XmppServerKind) {
    let w: SocialWorld = world_with_users(kind, "resf", &["alice", "carol"]);
    make_friends(&w, "carol", "alice", "carol");
    let mut alice = online_node(&w, Path::new(BIN), "alice", "alice", serde_json::json!({}));
    std::thread::sleep(Duration::from_secs(2));
    alice.ask(Request::Background);
    std::thread::sleep(Duration::from_secs(1));

    let cut = Cut::noticed(w.host("alice"), &mut alice, kind);
    alice.ask(Request::Foreground);
    std::thread::sleep(Duration::from_secs(2));
    drop(cut);
    assert!(
        alice.wait_until(Request::Status, BACK_WITHIN, |s| s["xmpp"]["state"]
            == "online"),
        "{kind}: not back online"
    );
    assert_eq!(sessions(&mut alice), (1, 1), "{kind}: not resumed");
    // Quiet: nothing of the node's own traffic (which flushes what a server holds) follows.
    std::thread::sleep(Duration::from_secs(3));

    // carol's device comes online: delivered at once, not held.
    let carol = XmppAttacker::login(&w, "carol", "carol", "phone");
    let carols = fresh_device();
    carol.announce(Some(carols.to_wire()));
    assert!(
        alice.wait_until(Request::Roster, Duration::from_secs(3), |r| device(
            r,
            &carols.uid.to_string()
        )
        .is_some()),
        "{kind}: a presence update was held after the resumption: the server was not told \
         the app is active again"
    );
    drop(carol);
}

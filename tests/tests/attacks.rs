//! Attacks on a SocialVPN node (root, the social world; against prosody and against
//! ejabberd). The victim is alice (laptop on host `alice`, phone on host `alice2`), linked
//! with her friend bob (a SocialVPN node behind the symmetric NAT: through TURN). The
//! attacker, scripted with `socialvpn_tests::attacker`, is alice's friend mallory, a
//! stranger (eve), a one-way contact (oscar: alice sees his presence, he does not see hers)
//! and a friend alice switched off (trudy). Each attack must be refused and counted, and
//! alice's link to bob must carry a ping every 0.1 s throughout.
//!
//! 1. mallory copies the `<device/>` of bob's device, of alice's phone and of alice's laptop
//!    itself into her presence: counted as refused claims; none shows bob's address, link
//!    or traffic; bob's link stays (also after the copies go offline and the grace period
//!    for offline devices has passed).
//! 2. Signals naming bob's device from mallory: unsigned, with a random or stale MAC, proven
//!    with mallory's own key, bob's real signal to mallory replayed, a malformed proof, one
//!    from a resource that announced another key, alice's own signal sent back: all refused
//!    and counted; no path of alice's is lost.
//! 3. (last, it loads the machine) mallory floods presence with 240 fresh keys from many
//!    resources at once (on prosody more resources than alice keeps for one contact):
//!    alice keeps at most 16 resources for mallory, `status` answers within a second
//!    throughout, the flood's links go once its resources are offline, the victim uses
//!    well under a core over the flood and its aftermath, and at the very end her address
//!    book on disk holds at most 16 addresses for mallory's keys, bob's and alice2's where
//!    they were.
//! 4. mallory's own key offers with candidates naming loopback, link-local, multicast,
//!    broadcast, unspecified, reserved, private-LAN, shared-space and IPv6 addresses: the
//!    hostile candidates are dropped and counted; offers beyond the per-device session rate
//!    are refused and counted.
//! 5. A stranger on alice's LAN sends STUN binding requests with ICE role attributes and a
//!    bogus USERNAME, alice's real ufrag with a bogus MESSAGE-INTEGRITY, none at all, and
//!    undecodable STUN, plus unsolicited binding responses, to alice's UDP port: every
//!    request is rejected and counted; the link to bob stays up.
//! 6. eve (stranger), oscar (one-way) and trudy (switched off) claim bob's device and send
//!    signals (naming bob's device, or their own key with a valid proof); eve also approves a
//!    subscription nobody asked for and forges a roster push: all refused and counted, none
//!    of them gets an address or a link.

use serde_json::Value;
use socialvpn_core::api::{FriendAction, Request};
use socialvpn_core::links::manager::OFFLINE_GRACE;
use socialvpn_core::social::payload::DeviceInfo;
use socialvpn_tests::attacker::{self, device_of, Forger, Received, XmppAttacker};
use socialvpn_tests::node::DpNode;
use socialvpn_tests::on_both_servers;
use socialvpn_tests::pinger::Pinger;
use socialvpn_tests::social_nodes::{
    counter, device_under, jid, online_node, wait_linked, world_with_users,
};
use socialvpn_tests::social_world::{SocialWorld, XmppServerKind};
use socialvpn_tests::two_hosts::ping;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use xmpp_parsers::jid::{BareJid, FullJid};

// The phases, in files of their own under attacks/: modules of this one test target (Cargo
// makes targets only of tests/*.rs and tests/*/main.rs; this file being the crate's root,
// its modules are named by path).
#[path = "attacks/bogus_stun.rs"]
mod bogus_stun;
#[path = "attacks/flood.rs"]
mod flood;
#[path = "attacks/mallory.rs"]
mod mallory;
#[path = "attacks/roles.rs"]
mod roles;

const BIN: &str = env!("CARGO_BIN_EXE_socialvpn-dpnode");
/// How long alice may take to act on what the attacker sent.
const REACT_WITHIN: Duration = Duration::from_secs(15);
/// Fresh device keys in the presence flood, and the longest it may take.
const FLOOD_KEYS: usize = 240;
const FLOOD_WITHIN: Duration = Duration::from_secs(120);
/// The slowest `status` answer allowed while alice is flooded.
const STATUS_WITHIN: Duration = Duration::from_secs(1);
/// Most of a core the victim may use while flooded (a generous bound: what it must not do
/// is spin).
const MAX_CPU_SHARE: f64 = 0.5;

/// The two worlds are not built at once: each would slow the other's victim down, and the
/// victim's responsiveness is part of what is measured.
static SERIAL: Mutex<()> = Mutex::new(());

on_both_servers!(attacks_are_refused_and_counted);

fn attacks_are_refused_and_counted(kind: XmppServerKind) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut t, pings) = Attack::ready(kind);
    let mallory = t.mallory_device();
    let copiers = t.copied_announcements();
    let copies_gone = t.forged_signals(&mallory, copiers);
    let answer = t.hostile_offers(&mallory);
    t.bogus_stun(&answer);
    t.roles_refused(&mallory.key);
    let book = t.presence_flood(&mallory.key);
    t.the_end(copies_gone, pings);
    t.book_after_flood(book);
}

/// The world of the scenario, alice's and bob's devices in it, and what the phases share.
/// Fields drop in the order declared: the nodes before their world.
struct Attack {
    kind: XmppServerKind,
    started: Instant,
    alice_full: FullJid,
    alice_key: [u8; 32],
    bob_device: DeviceInfo,
    bob_addr: String,
    alice2_addr: String,
    bob: DpNode,
    alice2: DpNode,
    alice: DpNode,
    w: SocialWorld,
}

/// mallory's own device (online until dropped), with a key whose UID sorts below alice's,
/// and the signals alice and bob sent it.
struct Mallory {
    key: Forger,
    main: XmppAttacker,
    from_bob: Received,
    from_alice: Received,
}

fn bare(user: &str) -> BareJid {
    jid(user).parse().expect("bare JID")
}

fn full(user: &str, resource: &str) -> FullJid {
    format!("{}/{resource}", jid(user))
        .parse()
        .expect("full JID")
}

fn node(w: &SocialWorld, host: &str, user: &str) -> DpNode {
    online_node(w, Path::new(BIN), host, user, serde_json::json!({}))
}

fn key_of(n: &DpNode) -> [u8; 32] {
    let mut key = [0u8; 32];
    hex::decode_to_slice(&n.public_key, &mut key).expect("hex key");
    key
}

/// Waits until the counter at `path` reaches `at_least`; returns its value.
fn wait_count(n: &mut DpNode, path: &str, at_least: u64, what: &str) -> u64 {
    let reached = n.wait_until(Request::Status, REACT_WITHIN, |s| {
        counter(s, path) >= at_least
    });
    let status = n.ask(Request::Status);
    assert!(
        reached,
        "{what}: {path} is {}, expected at least {at_least}; status {status}",
        counter(&status, path)
    );
    counter(&status, path)
}

/// The device `uid` shows up connected with `addr` under `owner`, and under every other
/// account that lists it (a copied announcement) without address, link or traffic.
fn assert_only_under(roster: &Value, uid: &str, owner: &str, addr: &str, when: &str) {
    let d = device_under(roster, owner, uid)
        .unwrap_or_else(|| panic!("{when}: {uid} not listed under {owner}: {roster}"));
    assert_eq!(d["overlay_address"], addr, "{when}: {d}");
    assert_eq!(d["link"]["state"], "connected", "{when}: {d}");
    for e in roster.as_array().into_iter().flatten() {
        if e["jid"] == owner {
            continue;
        }
        for d in e["devices"].as_array().into_iter().flatten() {
            if d["uid"] == uid {
                for field in ["overlay_address", "link", "traffic"] {
                    assert!(
                        d[field].is_null(),
                        "{when}: {}'s copy of {uid} shows {field}: {d}",
                        e["jid"]
                    );
                }
            }
        }
    }
}

/// Candidates no check may go to: loopback, link-local, multicast, broadcast, unspecified,
/// reserved, LANs alice is not on (shared address space), IPv6, port 0, garbage.
/// (Strings inside a signal only: nothing is configured with these addresses.)
const HOSTILE: [&str; 13] = [
    "1 1 udp 2130706431 127.0.0.1 40005 typ host",
    "2 1 udp 2130706431 169.254.10.20 40005 typ host",
    "3 1 udp 2130706431 224.0.0.251 5353 typ host",
    "4 1 udp 2130706431 100.100.2.3 40005 typ host",
    "5 1 udp 2130706431 100.127.1.20 40005 typ host",
    "6 1 udp 2130706431 100.80.5.4 40005 typ host",
    "7 1 udp 2130706431 0.0.0.0 40005 typ host",
    "8 1 udp 2130706431 255.255.255.255 40005 typ host",
    "9 1 udp 1694498815 100.64.0.1 40005 typ srflx raddr 0.0.0.0 rport 0",
    "10 1 udp 16777215 240.0.0.1 3478 typ relay raddr 0.0.0.0 rport 0",
    "11 1 udp 2130706431 ::1 40005 typ host",
    "12 1 udp 2130706431 198.18.0.21 0 typ host",
    "not a candidate at all",
];
/// A candidate that may be checked (dave's host; nothing answers there).
const PLAIN: &str = "13 1 udp 2130706431 198.18.0.21 40099 typ host";

/// The world with the users' rosters.
fn world_with_rosters(kind: XmppServerKind) -> SocialWorld {
    let w = world_with_users(
        kind,
        "atk",
        &["alice", "bob", "mallory", "eve", "oscar", "trudy"],
    );
    // The rosters are made before any node runs, by scripted sessions (no server's limit on
    // subscription stanzas comes into play).
    for (a, b) in [
        ("alice", "bob"),
        ("alice", "mallory"),
        ("alice", "trudy"),
        ("bob", "mallory"),
    ] {
        attacker::make_friends(&w, "carol", a, b);
    }
    attacker::follow(&w, "carol", "alice", "oscar");
    w
}

/// alice's laptop links with bob (relayed) and with her phone, both ways.
fn wait_all_linked(alice: &mut DpNode, alice2: &mut DpNode, bob: &mut DpNode) {
    let link = wait_linked(alice, &bob.uid, Duration::from_secs(40)).expect("alice-bob link");
    assert_eq!(link["relayed"], true, "{link}");
    assert!(wait_linked(bob, &alice.uid, Duration::from_secs(40)).is_some());
    assert!(wait_linked(alice, &alice2.uid, Duration::from_secs(40)).is_some());
    assert!(wait_linked(alice2, &alice.uid, Duration::from_secs(40)).is_some());
}

impl Attack {
    /// The world, its rosters, and alice's devices and bob's linked, with pings from alice to
    /// bob under way.
    fn ready(kind: XmppServerKind) -> (Attack, Pinger) {
        let started = Instant::now();
        let w = world_with_rosters(kind);
        let mut alice = node(&w, "alice", "alice");
        let mut alice2 = node(&w, "alice2", "alice");
        let mut bob = node(&w, "bob", "bob");
        alice.friend(FriendAction::Disable, &jid("trudy"));
        wait_all_linked(&mut alice, &mut alice2, &mut bob);
        let roster = alice.ask(Request::Roster);
        let bob_addr = device_under(&roster, &jid("bob"), &bob.uid).expect("bob's device")
            ["overlay_address"]
            .as_str()
            .expect("bob's address")
            .to_string();
        let alice2_addr = device_under(&roster, &jid("alice"), &alice2.uid).expect("alice2")
            ["overlay_address"]
            .as_str()
            .expect("alice2's address")
            .to_string();
        let mut t = Attack {
            kind,
            started,
            alice_full: full("alice", "alice"),
            alice_key: key_of(&alice),
            bob_device: device_of(&bob.public_key),
            bob_addr,
            alice2_addr,
            bob,
            alice2,
            alice,
            w,
        };
        t.intact("before the attacks");
        let pings = Pinger::start(t.w.host("alice"), &t.bob_addr);
        eprintln!(
            "{kind}: world, rosters and links ready after {:?}",
            started.elapsed()
        );
        (t, pings)
    }

    /// bob's device and alice's phone are still listed, addressed and connected under their
    /// own accounts only.
    fn intact(&mut self, when: &str) {
        let roster = self.alice.ask(Request::Roster);
        assert_only_under(&roster, &self.bob.uid, &jid("bob"), &self.bob_addr, when);
        assert_only_under(
            &roster,
            &self.alice2.uid,
            &jid("alice"),
            &self.alice2_addr,
            when,
        );
    }

    /// alice pings `addr` (the device of `who`) through her link.
    fn assert_reaches(&self, addr: &str, who: &str) {
        assert!(ping(self.w.host("alice"), addr), "alice cannot reach {who}");
    }

    /// The end: bob's link outlived the copies' grace period and every attack, and carried
    /// the pings throughout.
    fn the_end(&mut self, copies_gone: Instant, pings: Pinger) {
        let grace = OFFLINE_GRACE + Duration::from_secs(3);
        if let Some(left) = grace.checked_sub(copies_gone.elapsed()) {
            std::thread::sleep(left);
        }
        self.intact("at the end");
        self.assert_reaches(&self.bob_addr, "bob");
        assert!(wait_linked(&mut self.bob, &self.alice.uid, Duration::from_secs(5)).is_some());
        assert_eq!(self.alice.ask(Request::Status)["xmpp"]["state"], "online");
        self.assert_pings_carried(pings);
    }

    /// The pings to bob were answered throughout: few lost, no long gap.
    fn assert_pings_carried(&self, pings: Pinger) {
        let report = pings.stop();
        let lost = report.lost();
        let gap = report.longest_gap();
        eprintln!(
            "{}: {} pings answered, {} lost, longest gap {gap:.2} s; whole test {:?}",
            self.kind,
            report.received(),
            lost.len(),
            self.started.elapsed()
        );
        assert!(report.received() > 100, "{report:?}");
        assert!(
            lost.len() * 50 <= report.received(),
            "{} of {} pings to bob lost: {lost:?}",
            lost.len(),
            report.received()
        );
        assert!(gap < 3.0, "no ping reply for {gap:.2} s");
    }
}

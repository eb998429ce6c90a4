//! Phase 3 of the attacks (last, it loads the machine): mallory's presence flood, its
//! aftermath, and alice's address book after it.

use super::{Attack, FLOOD_KEYS, FLOOD_WITHIN, MAX_CPU_SHARE, REACT_WITHIN, STATUS_WITHIN};
use serde_json::Value;
use socialvpn_core::addrbook::{ADDRESS_BOOK_FILE, MAX_PER_OWNER};
use socialvpn_core::api::Request;
use socialvpn_core::links::manager::OFFLINE_GRACE;
use socialvpn_core::social::payload::DeviceInfo;
use socialvpn_core::social::state::MAX_DEVICES_PER_CONTACT;
use socialvpn_tests::attacker::{cpu_seconds, pid_with_arg, Forger, XmppAttacker};
use socialvpn_tests::node::DpNode;
use socialvpn_tests::social_nodes::{counter, devices, jid};
use socialvpn_tests::social_world::{SocialWorld, XmppServerKind};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The flood as it goes: mallory's resources and the keys each announced, alice's process
/// and its CPU time before the flood, and how fast she answered.
struct Flood {
    resources: usize,
    flooders: Vec<XmppAttacker>,
    keys: Vec<Vec<DeviceInfo>>,
    pid: u32,
    cpu_before: f64,
    started: Instant,
    answers: Answers,
    sent_in: Duration,
    seen_in: Duration,
}

/// How fast alice answered while flooded: her slowest answer, and how many she gave.
#[derive(Default)]
struct Answers {
    slowest: Duration,
    asked: u32,
}

impl Answers {
    /// Asks alice, keeping how long she took.
    fn ask(&mut self, alice: &mut DpNode, request: Request) -> Value {
        let t = Instant::now();
        let answer = alice.ask(request);
        self.slowest = self.slowest.max(t.elapsed());
        self.asked += 1;
        answer
    }
}

/// alice's address book on disk once it held the flood's last keys, and every key mallory
/// announced.
pub(super) struct BookAfterFlood {
    book: Value,
    minted: HashSet<String>,
}

impl Attack {
    /// Phase 3: mallory floods presence with fresh keys from many resources at once;
    /// returns alice's address book after the flood, checked at the very end.
    pub(super) fn presence_flood(&mut self, m_key: &Forger) -> BookAfterFlood {
        // 3. Presence flood with fresh keys from many resources at once (prosody: more
        //    resources than alice keeps for one contact; ejabberd: within its 10 sessions).
        let resources = match self.kind {
            XmppServerKind::Prosody => 20,
            XmppServerKind::Ejabberd => 8,
        };
        let flooders = flood_logins(&self.w, resources);
        let state_dir = self.alice_state_dir();
        let pid = pid_with_arg("socialvpn-dpnode", state_dir.to_str().expect("UTF-8 path"))
            .expect("alice's process");
        let ignored = counter(&self.alice.ask(Request::Status), "social.presences_ignored");
        let cpu_before = cpu_seconds(pid).expect("alice's CPU time");
        let mut flood = Flood {
            resources,
            flooders,
            keys: Vec::new(),
            pid,
            cpu_before,
            started: Instant::now(),
            answers: Answers::default(),
            sent_in: Duration::ZERO,
            seen_in: Duration::ZERO,
        };
        self.send_flood(&mut flood);
        let last = last_keys(&flood);
        let seen_all = self.wait_flood_seen(&mut flood, &last);
        self.assert_flood_capped(seen_all, resources, ignored);
        self.intact("after the flood");
        // The address book on disk (written in the background) once it holds the flood's
        // last keys. Checked at the very end, after everything else.
        let book = read_book_holding(&state_dir.join(ADDRESS_BOOK_FILE), &last);
        // Every key mallory minted: her device's and the flood's (the copies used others' keys).
        let minted: HashSet<String> = flood
            .keys
            .iter()
            .flatten()
            .map(|d| d.uid.to_string())
            .chain([m_key.uid().to_string()])
            .collect();
        let book_after_flood = BookAfterFlood { book, minted };
        self.flood_goes_offline(flood);
        book_after_flood
    }

    /// Where alice's laptop keeps its key and address book.
    fn alice_state_dir(&self) -> PathBuf {
        self.w.state_dir().join("node-alice")
    }

    /// All resources announce their keys at once; alice is asked for her `status` every
    /// 0.1 s meanwhile.
    fn send_flood(&mut self, flood: &mut Flood) {
        let per_resource = FLOOD_KEYS / flood.resources;
        let alice = &mut self.alice;
        let flooders = &flood.flooders;
        let answers = &mut flood.answers;
        let started = flood.started;
        let keys = std::thread::scope(|s| {
            let sending: Vec<_> = flooders
                .iter()
                .map(|f| s.spawn(move || f.flood_fresh_devices(per_resource)))
                .collect();
            while sending.iter().any(|h| !h.is_finished()) && started.elapsed() < FLOOD_WITHIN {
                answers.ask(alice, Request::Status);
                std::thread::sleep(Duration::from_millis(100));
            }
            sending
                .into_iter()
                .map(|h| h.join().expect("flood thread"))
                .collect()
        });
        flood.keys = keys;
        flood.sent_in = flood.started.elapsed();
    }

    /// alice has seen the whole flood when every resource of mallory's she keeps shows the
    /// last key it announced (`last`, by resource); she keeps no more resources than the
    /// cap. Waits for that; says whether it came.
    fn wait_flood_seen(&mut self, flood: &mut Flood, last: &HashMap<String, String>) -> bool {
        let kept = flood.resources.min(MAX_DEVICES_PER_CONTACT - 1);
        let deadline = Instant::now() + FLOOD_WITHIN;
        let seen_all = loop {
            let roster = flood.answers.ask(&mut self.alice, Request::Roster);
            let done = holds_whole_flood(&roster, last, kept);
            if done || Instant::now() >= deadline {
                break done;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        flood.seen_in = flood.started.elapsed();
        seen_all
    }

    /// alice took in the flood (`seen_all`) keeping at most the cap of mallory's resources and
    /// of addresses for them, and counted the presences of `resources` beyond the cap (the
    /// counter was at `ignored` before).
    fn assert_flood_capped(&mut self, seen_all: bool, resources: usize, ignored: u64) {
        let roster = self.alice.ask(Request::Roster);
        assert!(seen_all, "alice did not take in the flood: {roster}");
        let mallory_devices = devices(&roster, &jid("mallory"));
        assert!(
            mallory_devices.len() <= MAX_DEVICES_PER_CONTACT,
            "{} resources kept for mallory",
            mallory_devices.len()
        );
        let addressed = mallory_devices
            .iter()
            .filter(|d| !d["overlay_address"].is_null())
            .count();
        assert!(
            addressed <= MAX_PER_OWNER,
            "{addressed} of mallory's devices have an address"
        );
        if resources + 1 > MAX_DEVICES_PER_CONTACT {
            // The resources beyond the cap flood in parallel with the kept ones: their last
            // presences may still be on the way when the kept ones are complete.
            let counted = self.alice.wait_until(Request::Status, FLOOD_WITHIN, |s| {
                counter(s, "social.presences_ignored") > ignored
            });
            assert!(counted, "presences beyond the resource cap not counted");
        }
    }

    /// The flood's resources go offline: their links go after the grace period for devices
    /// that went offline. The victim's CPU is measured over the flood and its aftermath.
    fn flood_goes_offline(&mut self, flood: Flood) {
        drop(flood.flooders);
        let flood_gone = Instant::now();
        let flood_uids: HashSet<String> = flood
            .keys
            .iter()
            .flatten()
            .map(|d| d.uid.to_string())
            .collect();
        let cleaned = self
            .alice
            .wait_until(Request::Links, OFFLINE_GRACE + REACT_WITHIN, |l| {
                l.as_array()
                    .into_iter()
                    .flatten()
                    .all(|l| l["uid"].as_str().is_none_or(|u| !flood_uids.contains(u)))
            });
        let measured = flood.started.elapsed();
        let cpu = cpu_seconds(flood.pid).expect("alice's CPU time") - flood.cpu_before;
        let share = cpu / measured.as_secs_f64();
        let kind = self.kind;
        let Flood {
            resources,
            sent_in,
            seen_in,
            answers: Answers { slowest, asked },
            ..
        } = flood;
        eprintln!(
            "{kind}: 3. {FLOOD_KEYS} keys from {resources} resources sent in {sent_in:?}, seen \
             in {seen_in:?}, their links gone {:?} after the resources went offline; alice used \
             {cpu:.2} s of CPU in {measured:?} ({:.0}% of a core); slowest of {asked} answers \
             during the flood {slowest:?}",
            flood_gone.elapsed(),
            share * 100.0
        );
        assert!(
            cleaned,
            "links for the flood's keys stayed: {}",
            self.alice.ask(Request::Links)
        );
        assert!(
            slowest < STATUS_WITHIN,
            "alice took {slowest:?} to answer during the flood"
        );
        assert!(
            share < MAX_CPU_SHARE,
            "alice used {:.0}% of a core while flooded",
            share * 100.0
        );
    }

    /// Last, the address book after the flood: bob and alice2 where they were, and at most
    /// 16 addresses for mallory's account, whether the book names her as their owner or the
    /// device is one she minted.
    pub(super) fn book_after_flood(&self, after_flood: BookAfterFlood) {
        let BookAfterFlood { book, minted } = after_flood;
        let entries = book["devices"].as_object().expect("devices in the book");
        let owned = entries
            .values()
            .filter(|e| e["owner"] == jid("mallory"))
            .count();
        let of_minted = entries.keys().filter(|u| minted.contains(*u)).count();
        let ownerless = entries.values().filter(|e| e["owner"].is_null()).count();
        eprintln!(
            "{}: 3. the book holds {} entries: {owned} owned by mallory, {of_minted} for keys \
             she announced, {ownerless} without owner",
            self.kind,
            entries.len()
        );
        assert_eq!(
            book["devices"][&self.bob.uid]["addr"],
            self.bob_addr.as_str(),
            "{book}"
        );
        assert_eq!(
            book["devices"][&self.bob.uid]["owner"],
            jid("bob"),
            "{book}"
        );
        assert_eq!(
            book["devices"][&self.alice2.uid]["addr"],
            self.alice2_addr.as_str(),
            "{book}"
        );
        assert!(
            owned <= MAX_PER_OWNER && of_minted <= MAX_PER_OWNER,
            "alice's address book holds {owned} addresses owned by mallory and {of_minted} for \
             keys mallory announced (at most {MAX_PER_OWNER}), {ownerless} without owner: {book}"
        );
    }
}

/// `resources` logins of mallory's at once, named `flood-NN`, from dave's and carol's hosts
/// in turn.
fn flood_logins(w: &SocialWorld, resources: usize) -> Vec<XmppAttacker> {
    std::thread::scope(|s| {
        let logins: Vec<_> = (0..resources)
            .map(|i| {
                s.spawn(move || {
                    let host = if i % 2 == 0 { "dave" } else { "carol" };
                    XmppAttacker::login(w, host, "mallory", &format!("flood-{i:02}"))
                })
            })
            .collect();
        logins
            .into_iter()
            .map(|h| h.join().expect("flood login"))
            .collect()
    })
}

/// The last key each of the flood's resources announced, by resource.
fn last_keys(flood: &Flood) -> HashMap<String, String> {
    flood
        .flooders
        .iter()
        .zip(&flood.keys)
        .map(|(f, keys)| {
            let last = keys.last().expect("keys").uid.to_string();
            (f.jid().resource().as_str().to_string(), last)
        })
        .collect()
}

/// mallory's `flood-*` devices in `roster` are `kept` and each shows the last key its
/// resource announced.
fn holds_whole_flood(roster: &Value, last: &HashMap<String, String>, kept: usize) -> bool {
    let flood: Vec<&Value> = devices(roster, &jid("mallory"))
        .into_iter()
        .filter(|d| {
            d["resource"]
                .as_str()
                .is_some_and(|r| r.starts_with("flood-"))
        })
        .collect();
    flood.len() == kept
        && flood.iter().all(|d| {
            d["resource"]
                .as_str()
                .and_then(|r| last.get(r))
                .is_some_and(|uid| d["uid"] == *uid)
        })
}

/// alice's address book at `path` once it holds one of the flood's `last` keys (or after
/// 10 s, as it is then).
fn read_book_holding(path: &Path, last: &HashMap<String, String>) -> Value {
    let read_book = || -> Value {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    let mut book = read_book();
    for _ in 0..100 {
        if last.values().any(|u| !book["devices"][u].is_null()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        book = read_book();
    }
    book
}

//! mallory's attacks with her own account: her device, copied device announcements (1),
//! signals naming bob's device (2), and offers with hostile candidates beyond the session
//! rate (4).

use super::{wait_count, Attack, Mallory, HOSTILE, PLAIN, REACT_WITHIN};
use socialvpn_core::api::Request;
use socialvpn_core::links::manager::SESSIONS_PER_MINUTE;
use socialvpn_core::social::payload::SignalWire;
use socialvpn_tests::attacker::{
    device_of, offer, random_proof, random_u64, unix_now, wire, Forger, Received, XmppAttacker,
};
use socialvpn_tests::social_nodes::{counter, devices, jid};
use std::time::{Duration, Instant};

impl Attack {
    /// mallory's own device, with a key whose UID sorts below alice's: alice answers its
    /// offers. alice and bob both want a link with it and signal it: captured, to replay.
    pub(super) fn mallory_device(&self) -> Mallory {
        let key = Forger::below(&self.alice.uid.parse().expect("alice's UID"));
        let main = XmppAttacker::login(&self.w, "dave", "mallory", "main");
        main.announce(Some(key.device().to_wire()));
        let from_bob = main
            .wait_signal(Duration::from_secs(30), |r| r.wire.uid == self.bob.uid)
            .expect("bob never signalled mallory's device");
        let from_alice = main
            .wait_signal(Duration::from_secs(30), |r| r.wire.uid == self.alice.uid)
            .expect("alice never signalled mallory's device");
        Mallory {
            key,
            main,
            from_bob,
            from_alice,
        }
    }

    /// Phase 1: copied device announcements. mallory's resources `copy-*` announce bob's
    /// device, alice's phone and alice's laptop. Returns those resources, still online.
    pub(super) fn copied_announcements(&mut self) -> Vec<XmppAttacker> {
        let status = self.alice.ask(Request::Status);
        let claims = counter(&status, "social.device_claims_refused");
        let copies = [
            (
                "copy-bob",
                self.bob.public_key.clone(),
                self.bob.uid.clone(),
            ),
            (
                "copy-alice2",
                self.alice2.public_key.clone(),
                self.alice2.uid.clone(),
            ),
            (
                "copy-alice",
                self.alice.public_key.clone(),
                self.alice.uid.clone(),
            ),
        ];
        let copiers: Vec<XmppAttacker> = copies
            .iter()
            .map(|(resource, key, _)| {
                let a = XmppAttacker::login(&self.w, "dave", "mallory", resource);
                a.announce(Some(device_of(key).to_wire()));
                a
            })
            .collect();
        assert!(
            self.alice.wait_until(Request::Roster, REACT_WITHIN, |r| {
                copies.iter().all(|(resource, _, uid)| {
                    devices(r, &jid("mallory"))
                        .iter()
                        .any(|d| d["resource"] == *resource && d["uid"] == *uid)
                })
            }),
            "alice never saw mallory's copies: {}",
            self.alice.ask(Request::Roster)
        );
        let claims = wait_count(
            &mut self.alice,
            "social.device_claims_refused",
            claims + copies.len() as u64,
            "copied announcements",
        );
        self.assert_copies_unaddressed(&copies);
        self.intact("after the copies");
        self.assert_reaches(&self.bob_addr, "bob");
        eprintln!(
            "{}: 1. copies refused (device_claims_refused {claims})",
            self.kind
        );
        copiers
    }

    /// mallory's copies (`(resource, key, uid)`) are listed under her with neither address,
    /// link nor traffic.
    fn assert_copies_unaddressed(&mut self, copies: &[(&str, String, String)]) {
        let roster = self.alice.ask(Request::Roster);
        for (resource, _, uid) in copies {
            let d = devices(&roster, &jid("mallory"))
                .into_iter()
                .find(|d| d["resource"] == *resource)
                .expect("the copy");
            assert_eq!(d["uid"], *uid);
            for field in ["overlay_address", "link", "traffic"] {
                assert!(
                    d[field].is_null(),
                    "mallory's {resource} shows {field}: {d}"
                );
            }
        }
    }

    /// Phase 2: signals naming bob's device, from mallory's copy of it (`copiers[0]`) and
    /// from her own device; then the copies go offline. Returns when they did.
    pub(super) fn forged_signals(
        &mut self,
        mallory: &Mallory,
        copiers: Vec<XmppAttacker>,
    ) -> Instant {
        let status = self.alice.ask(Request::Status);
        let rejected = counter(&status, "social.signals_rejected");
        let paths_lost = counter(&status, "links.paths_lost");
        let copy_bob = &copiers[0];
        let (from_copy, from_main) = self.signals_naming_bob(mallory, copy_bob);
        let sent = copy_bob.signals(&self.alice_full, from_copy)
            + mallory.main.signals(&self.alice_full, from_main);
        assert_eq!(sent, 9);
        let rejected = wait_count(
            &mut self.alice,
            "social.signals_rejected",
            rejected + sent as u64,
            "forged signals",
        );
        self.intact("after the forged signals");
        assert_eq!(
            counter(&self.alice.ask(Request::Status), "links.paths_lost"),
            paths_lost,
            "a path was lost during the forged signals"
        );
        self.assert_reaches(&self.bob_addr, "bob");
        let copies_gone = self.copies_go_offline(copiers);
        eprintln!(
            "{}: 2. forged signals refused (signals_rejected {rejected})",
            self.kind
        );
        copies_gone
    }

    /// The signals naming bob's device that mallory sends from her copy of it (unsigned,
    /// random and stale MACs, proven with her own key, bob's real signal replayed, a
    /// malformed proof) and from her own device (unsigned, alice's own signal sent back,
    /// bob's real signal replayed).
    fn signals_naming_bob(
        &self,
        mallory: &Mallory,
        copy_bob: &XmppAttacker,
    ) -> (Vec<SignalWire>, Vec<SignalWire>) {
        let now = unix_now();
        let forged = offer(self.bob_device, random_u64(), &[PLAIN]);
        let mut malformed = wire(&forged, Some(random_proof(now)));
        malformed.proof = Some("not hex".into());
        let from_copy = vec![
            wire(&forged, None),
            wire(&forged, Some(random_proof(now))),
            wire(&forged, Some(random_proof(now - 3_600))),
            mallory
                .key
                .signed(&forged, &self.alice_key, copy_bob.jid(), &self.alice_full),
            mallory.from_bob.wire.clone(),
            malformed,
        ];
        let from_main = vec![
            wire(&forged, None),
            mallory.from_alice.wire.clone(),
            mallory.from_bob.wire.clone(),
        ];
        (from_copy, from_main)
    }

    /// The copies go offline: bob's link must not go with them. Returns when they went.
    fn copies_go_offline(&mut self, copiers: Vec<XmppAttacker>) -> Instant {
        drop(copiers);
        let copies_gone = Instant::now();
        assert!(
            self.alice.wait_until(Request::Roster, REACT_WITHIN, |r| {
                devices(r, &jid("mallory"))
                    .iter()
                    .all(|d| !d["resource"].as_str().unwrap_or("").starts_with("copy-"))
            }),
            "mallory's copies never went offline"
        );
        self.intact("after the copies went offline");
        copies_gone
    }

    /// Phase 4: offers from mallory's own key with hostile candidates, more than the session
    /// rate. Returns alice's answer to one of them.
    pub(super) fn hostile_offers(&mut self, mallory: &Mallory) -> Received {
        let status = self.alice.ask(Request::Status);
        let accepted = counter(&status, "social.signals_accepted");
        let dropped = counter(&status, "links.candidates_dropped");
        let refused = counter(&status, "links.signals_refused");
        let mut candidates: Vec<&str> = HOSTILE.to_vec();
        candidates.push(PLAIN);
        let offers: Vec<_> = (0..SESSIONS_PER_MINUTE + 4)
            .map(|_| {
                let o = offer(mallory.key.device(), random_u64(), &candidates);
                mallory
                    .key
                    .signed(&o, &self.alice_key, mallory.main.jid(), &self.alice_full)
            })
            .collect();
        let n = mallory.main.signals(&self.alice_full, offers);
        assert_eq!(n, SESSIONS_PER_MINUTE + 4);
        wait_count(
            &mut self.alice,
            "social.signals_accepted",
            accepted + n as u64,
            "mallory's proven offers",
        );
        let dropped = wait_count(
            &mut self.alice,
            "links.candidates_dropped",
            dropped + HOSTILE.len() as u64,
            "hostile candidates",
        );
        let refused = wait_count(
            &mut self.alice,
            "links.signals_refused",
            refused + 4,
            "offers beyond the session rate",
        );
        let answer = mallory.main.wait_signal(REACT_WITHIN, |r| {
            r.wire.uid == self.alice.uid && r.wire.kind == "answer"
        });
        let answer = answer.expect("alice never answered mallory's offers");
        self.intact("after the hostile offers");
        eprintln!(
            "{}: 4. hostile candidates dropped ({dropped}), offers refused ({refused})",
            self.kind
        );
        answer
    }
}

//! Phase 6 of the attacks: a stranger (eve), a one-way contact (oscar) and a friend alice
//! switched off (trudy).

use super::{bare, wait_count, Attack, PLAIN, REACT_WITHIN};
use socialvpn_core::api::Request;
use socialvpn_core::social::payload::SignalWire;
use socialvpn_tests::attacker::{
    offer, random_proof, random_u64, unix_now, wire, Forger, XmppAttacker,
};
use socialvpn_tests::social_nodes::{counter, devices, entry, jid};
use xmpp_parsers::jid::FullJid;
use xmpp_parsers::presence;
use xmpp_parsers::roster;

/// What one of them did: the sessions it used (online until dropped), the key it announced
/// as its own, how many signals it sent alice.
struct Role {
    _sessions: Vec<XmppAttacker>,
    user: &'static str,
    key: Forger,
    signals: usize,
}

impl Attack {
    /// Phase 6: a stranger, a one-way contact and a friend switched off claim bob's device
    /// and send signals: all refused and counted, none of them gets an address or a link.
    pub(super) fn roles_refused(&mut self, m_key: &Forger) {
        let status = self.alice.ask(Request::Status);
        let rejected = counter(&status, "social.signals_rejected");
        let claims = counter(&status, "social.device_claims_refused");
        let mut roles = vec![self.stranger(m_key)];
        for (user, host) in [("oscar", "carol"), ("trudy", "carol")] {
            roles.push(self.contact(m_key, user, host));
        }
        let role_signals: usize = roles.iter().map(|r| r.signals).sum();
        assert_eq!(role_signals, 1 + 3 + 2 * (1 + 3));
        let rejected = wait_count(
            &mut self.alice,
            "social.signals_rejected",
            rejected + role_signals as u64,
            "signals of a stranger, a one-way contact and a friend switched off",
        );
        // The one-way contact's and the switched-off friend's claims reach alice through
        // presence (the stranger's only if the server hands over directed presence).
        let claims = wait_count(
            &mut self.alice,
            "social.device_claims_refused",
            claims + 2,
            "claims of a one-way contact and a friend switched off",
        );
        self.assert_roles_unaddressed();
        self.assert_roles_unlinked(&roles);
        self.intact("after the stranger, one-way contact and switched-off friend");
        drop(roles);
        eprintln!(
            "{}: 6. roles refused (signals_rejected {rejected}, device_claims_refused {claims})",
            self.kind
        );
    }

    /// eve, a stranger: announces her key to alice directly and bob's device from another
    /// resource, approves a subscription nobody asked for, forges a roster push, and signals.
    fn stranger(&self, m_key: &Forger) -> Role {
        let eve_key = Forger::new();
        let eve = XmppAttacker::login(&self.w, "dave", "eve", "eve");
        eve.announce(Some(eve_key.device().to_wire()));
        eve.announce_to(&self.alice_full, Some(eve_key.device().to_wire()));
        let eve_copy = XmppAttacker::login(&self.w, "dave", "eve", "copy");
        eve_copy.announce_to(&self.alice_full, Some(self.bob_device.to_wire()));
        eve.subscription(&bare("alice"), presence::Type::Subscribed);
        eve.forged_roster_push(&self.alice_full, bare("eve"), roster::Subscription::Both);
        let mut signals = eve.signals(&self.alice_full, vec![self.own_offer(&eve_key, eve.jid())]);
        signals += eve_copy.signals(&self.alice_full, self.forged_for(m_key, &eve_copy));
        Role {
            _sessions: vec![eve, eve_copy],
            user: "eve",
            key: eve_key,
            signals,
        }
    }

    /// `user`, one of alice's contacts, from `host`: announces a key of its own from one
    /// resource and bob's device from another, and signals from both.
    fn contact(&self, m_key: &Forger, user: &'static str, host: &str) -> Role {
        let key = Forger::new();
        let own = XmppAttacker::login(&self.w, host, user, "own");
        own.announce(Some(key.device().to_wire()));
        let copy = XmppAttacker::login(&self.w, host, user, "copy");
        copy.announce(Some(self.bob_device.to_wire()));
        let mut signals = own.signals(&self.alice_full, vec![self.own_offer(&key, own.jid())]);
        signals += copy.signals(&self.alice_full, self.forged_for(m_key, &copy));
        Role {
            _sessions: vec![own, copy],
            user,
            key,
            signals,
        }
    }

    /// An offer from `key`'s device, proven with `key`, sent by `from`.
    fn own_offer(&self, key: &Forger, from: &FullJid) -> SignalWire {
        key.signed(
            &offer(key.device(), random_u64(), &[PLAIN]),
            &self.alice_key,
            from,
            &self.alice_full,
        )
    }

    /// The signals `from` sends naming bob's device (unsigned, with a random MAC), and one
    /// from mallory's key with a valid proof.
    fn forged_for(&self, m_key: &Forger, from: &XmppAttacker) -> Vec<SignalWire> {
        vec![
            wire(&offer(self.bob_device, random_u64(), &[PLAIN]), None),
            wire(
                &offer(self.bob_device, random_u64(), &[PLAIN]),
                Some(random_proof(unix_now())),
            ),
            self.own_offer(m_key, from.jid()),
        ]
    }

    /// eve is not in alice's roster; oscar's and trudy's devices are, with neither address,
    /// link nor traffic.
    fn assert_roles_unaddressed(&mut self) {
        let roster = self.alice.ask(Request::Roster);
        assert!(
            entry(&roster, &jid("eve"))
                .is_none_or(|e| e["mutual"] == false
                    && e["devices"].as_array().is_none_or(|d| d.is_empty())),
            "eve made it into alice's roster: {roster}"
        );
        assert!(
            self.alice.wait_until(Request::Roster, REACT_WITHIN, |r| {
                ["oscar", "trudy"]
                    .iter()
                    .all(|u| devices(r, &jid(u)).len() == 2)
            }),
            "alice does not see oscar's and trudy's devices: {}",
            self.alice.ask(Request::Roster)
        );
        let roster = self.alice.ask(Request::Roster);
        assert_eq!(
            entry(&roster, &jid("oscar")).expect("oscar")["subscription"],
            "to"
        );
        assert_eq!(
            entry(&roster, &jid("trudy")).expect("trudy")["enabled"],
            false
        );
        for user in ["oscar", "trudy"] {
            for d in devices(&roster, &jid(user)) {
                for field in ["overlay_address", "link", "traffic"] {
                    assert!(d[field].is_null(), "{user}'s device shows {field}: {d}");
                }
            }
        }
    }

    /// None of the keys the roles announced as their own has a link with alice.
    fn assert_roles_unlinked(&mut self, roles: &[Role]) {
        let links = self.alice.ask(Request::Links);
        for Role { user, key, .. } in roles {
            let uid = key.uid().to_string();
            assert!(
                links
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|l| l["uid"] != uid),
                "{user} has a link: {links}"
            );
        }
    }
}

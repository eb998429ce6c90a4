//! Tests of the sans-IO social state.

use super::*;
use crate::social::payload::{IceCredentials, SignalKind};
use crate::social::proof::ProofError;

fn jid(s: &str) -> BareJid {
    s.parse().unwrap()
}

fn full(s: &str) -> Jid {
    s.parse().unwrap()
}

fn state(dir: &tempfile::TempDir) -> SocialState {
    let toggles = Toggles::open(dir.path()).unwrap();
    SocialState::new(jid("alice@svpn.test"), DeviceInfo::new([1; 32]), toggles)
}

fn item(j: &str, subscription: Subscription) -> RosterItem {
    RosterItem {
        jid: jid(j),
        name: None,
        subscription,
        pending_out: false,
        removed: false,
    }
}

/// `jid` comes online announcing `device`.
fn announce(s: &mut SocialState, now: Instant, jid: &str, device: DeviceInfo) {
    s.handle_presence(now, &full(jid), PresenceKind::Available(Some(device)));
}

fn offer_from(key: [u8; 32]) -> Signal {
    Signal {
        kind: SignalKind::Offer,
        session: 1,
        from: DeviceInfo::new(key),
        credentials: Some(IceCredentials {
            ufrag: "abcd".into(),
            pwd: "abcdefghijklmnopqrstuvwxyz".into(),
        }),
        candidates: vec![],
    }
}

#[test]
fn only_enabled_mutual_friends_and_own_devices_are_wanted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(&dir);
    let now = Instant::now();
    s.handle_online(now, "alice@svpn.test/phone".parse().unwrap());
    assert_eq!(s.poll_outgoing(), Some(Outgoing::RosterGet));
    assert!(matches!(s.poll_outgoing(), Some(Outgoing::Announce(_))));
    s.handle_roster(
        Instant::now(),
        vec![
            item("bob@svpn.test", Subscription::Both),
            item("carol@svpn.test", Subscription::To),
        ],
    );
    let bob_dev = DeviceInfo::new([2; 32]);
    s.handle_presence(
        Instant::now(),
        &full("bob@svpn.test/laptop"),
        PresenceKind::Available(Some(bob_dev)),
    );
    s.handle_presence(
        Instant::now(),
        &full("bob@svpn.test/chat"),
        PresenceKind::Available(None),
    );
    s.handle_presence(
        Instant::now(),
        &full("carol@svpn.test/x"),
        PresenceKind::Available(Some(DeviceInfo::new([3; 32]))),
    );
    s.handle_presence(
        Instant::now(),
        &full("alice@svpn.test/tablet"),
        PresenceKind::Available(Some(DeviceInfo::new([4; 32]))),
    );
    s.handle_presence(
        Instant::now(),
        &full("alice@svpn.test/phone"),
        PresenceKind::Available(Some(DeviceInfo::new([1; 32]))),
    );
    s.handle_presence(
        Instant::now(),
        &full("mallory@svpn.test/x"),
        PresenceKind::Available(Some(DeviceInfo::new([5; 32]))),
    );
    let wanted: Vec<String> = s
        .wanted_devices()
        .iter()
        .map(|w| w.jid.to_string())
        .collect();
    assert_eq!(
        wanted,
        vec!["alice@svpn.test/tablet", "bob@svpn.test/laptop"]
    );

    assert!(s.set_enabled(&jid("bob@svpn.test"), false).unwrap());
    assert_eq!(s.wanted_devices().len(), 1);
    // The toggle is persisted.
    let reopened = state(&dir);
    assert!(!reopened.is_enabled(&jid("bob@svpn.test")));

    s.handle_presence(
        Instant::now(),
        &full("alice@svpn.test/tablet"),
        PresenceKind::Unavailable,
    );
    assert!(s.wanted_devices().is_empty());
}

#[test]
fn friend_requests_complete_in_one_acceptance() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(&dir);
    s.add_friend(Instant::now(), jid("bob@svpn.test")).unwrap();
    assert_eq!(
        s.poll_outgoing(),
        Some(Outgoing::Subscribe(jid("bob@svpn.test")))
    );
    assert_eq!(s.poll_outgoing(), None, "no pre-approval");
    // Bob accepts and asks back: auto-approved because we asked first.
    s.handle_presence(
        Instant::now(),
        &full("bob@svpn.test"),
        PresenceKind::Subscribe,
    );
    assert_eq!(
        s.poll_outgoing(),
        Some(Outgoing::Subscribed(jid("bob@svpn.test")))
    );
    // A stranger's request waits for the user.
    s.handle_presence(
        Instant::now(),
        &full("dave@svpn.test"),
        PresenceKind::Subscribe,
    );
    assert_eq!(s.poll_outgoing(), None);
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(events.contains(&SocialEvent::FriendRequest(jid("dave@svpn.test"))));
    s.accept_friend(Instant::now(), jid("dave@svpn.test"))
        .unwrap();
    assert_eq!(
        s.poll_outgoing(),
        Some(Outgoing::Subscribed(jid("dave@svpn.test")))
    );
    assert_eq!(
        s.poll_outgoing(),
        Some(Outgoing::Subscribe(jid("dave@svpn.test")))
    );
}

#[test]
fn signals_are_authorized_by_friendship_toggle_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(&dir);
    let proven = || Ok(());
    let forged = || Err(ProofError::Forged);
    s.handle_online(Instant::now(), "alice@svpn.test/phone".parse().unwrap());
    s.handle_roster(
        Instant::now(),
        vec![
            item("bob@svpn.test", Subscription::Both),
            item("carol@svpn.test", Subscription::From),
        ],
    );
    s.handle_presence(
        Instant::now(),
        &full("bob@svpn.test/laptop"),
        PresenceKind::Available(Some(DeviceInfo::new([2; 32]))),
    );
    let bob: FullJid = "bob@svpn.test/laptop".parse().unwrap();
    assert_eq!(
        s.authorize_signal(&bob, &offer_from([2; 32]), proven),
        Ok(false)
    );
    assert_eq!(
        s.authorize_signal(&bob, &offer_from([7; 32]), proven),
        Err(SignalRejection::KeyMismatch)
    );
    let carol: FullJid = "carol@svpn.test/x".parse().unwrap();
    assert_eq!(
        s.authorize_signal(&carol, &offer_from([3; 32]), proven),
        Err(SignalRejection::NotAFriend)
    );
    let dave: FullJid = "dave@svpn.test/x".parse().unwrap();
    assert_eq!(
        s.authorize_signal(&dave, &offer_from([4; 32]), proven),
        Err(SignalRejection::NotAFriend)
    );
    let own: FullJid = "alice@svpn.test/tablet".parse().unwrap();
    // Not announced yet: refused (the sender retries; presence comes first normally).
    assert_eq!(
        s.authorize_signal(&own, &offer_from([6; 32]), proven),
        Err(SignalRejection::KeyMismatch)
    );
    s.handle_presence(
        Instant::now(),
        &full("alice@svpn.test/tablet"),
        PresenceKind::Available(Some(DeviceInfo::new([6; 32]))),
    );
    assert_eq!(
        s.authorize_signal(&own, &offer_from([6; 32]), proven),
        Ok(true)
    );
    assert_eq!(
        s.authorize_signal(&own, &offer_from([1; 32]), proven),
        Err(SignalRejection::FromSelf)
    );
    // Bob announcing (and signalling for) the tablet's key from a resource of his own: he
    // cannot prove it (he lacks the key), and even with the key the device is proven ours.
    s.handle_presence(
        Instant::now(),
        &full("bob@svpn.test/evil"),
        PresenceKind::Available(Some(DeviceInfo::new([6; 32]))),
    );
    let evil: FullJid = "bob@svpn.test/evil".parse().unwrap();
    assert_eq!(
        s.authorize_signal(&evil, &offer_from([6; 32]), forged),
        Err(SignalRejection::Unproven(ProofError::Forged))
    );
    assert_eq!(
        s.authorize_signal(&evil, &offer_from([6; 32]), proven),
        Err(SignalRejection::Conflict)
    );
    assert!(s.wanted_devices().iter().all(|w| w.jid != evil));
    assert_eq!(
        s.authorize_signal(&own, &offer_from([6; 32]), proven),
        Ok(true)
    );
    s.set_enabled(&jid("bob@svpn.test"), false).unwrap();
    assert_eq!(
        s.authorize_signal(&bob, &offer_from([2; 32]), proven),
        Err(SignalRejection::Disabled)
    );
    assert_eq!(s.counters().signals_accepted, 3);
    assert_eq!(s.counters().signals_rejected, 8);
}

#[test]
fn reconnect_keeps_devices_until_the_presence_burst_has_had_its_chance() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(&dir);
    let t0 = Instant::now();
    s.handle_online(t0, "alice@svpn.test/phone".parse().unwrap());
    s.handle_roster(
        Instant::now(),
        vec![
            item("bob@svpn.test", Subscription::Both),
            item("carol@svpn.test", Subscription::Both),
        ],
    );
    s.handle_presence(
        Instant::now(),
        &full("bob@svpn.test/a"),
        PresenceKind::Available(Some(DeviceInfo::new([2; 32]))),
    );
    s.handle_presence(
        Instant::now(),
        &full("carol@svpn.test/a"),
        PresenceKind::Available(Some(DeviceInfo::new([3; 32]))),
    );
    s.handle_offline(t0 + Duration::from_secs(30));
    assert_eq!(s.wanted_devices().len(), 2, "links outlive the server");
    let t1 = t0 + Duration::from_secs(60);
    s.handle_online(t1, "alice@svpn.test/phone".parse().unwrap());
    s.handle_presence(
        Instant::now(),
        &full("bob@svpn.test/a"),
        PresenceKind::Available(Some(DeviceInfo::new([2; 32]))),
    );
    s.handle_timeout(t1 + Duration::from_secs(1));
    assert_eq!(s.wanted_devices().len(), 2);
    s.handle_timeout(t1 + PRESENCE_RESYNC_GRACE);
    let wanted: Vec<String> = s
        .wanted_devices()
        .iter()
        .map(|w| w.jid.to_string())
        .collect();
    assert_eq!(wanted, vec!["bob@svpn.test/a"]);
}

fn online_with_bob_and_carol(dir: &tempfile::TempDir, t0: Instant) -> SocialState {
    let mut s = state(dir);
    s.handle_online(t0, "alice@svpn.test/phone".parse().unwrap());
    s.handle_roster(
        Instant::now(),
        vec![
            item("bob@svpn.test", Subscription::Both),
            item("carol@svpn.test", Subscription::Both),
        ],
    );
    for (j, k) in [("bob@svpn.test/a", 2), ("carol@svpn.test/a", 3)] {
        s.handle_presence(
            t0,
            &full(j),
            PresenceKind::Available(Some(DeviceInfo::new([k; 32]))),
        );
    }
    s.handle_timeout(t0 + PRESENCE_RESYNC_GRACE);
    while s.poll_outgoing().is_some() {}
    s
}

fn wanted_jids(s: &SocialState) -> Vec<String> {
    s.wanted_devices()
        .iter()
        .map(|w| w.jid.to_string())
        .collect()
}

#[test]
fn a_server_shutting_down_cleanly_is_not_taken_for_friends_leaving() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let mut s = online_with_bob_and_carol(&dir, t0);
    // The server tells us everyone left, then closes our stream.
    let t1 = t0 + Duration::from_secs(60);
    s.handle_presence(t1, &full("bob@svpn.test/a"), PresenceKind::Unavailable);
    s.handle_presence(t1, &full("carol@svpn.test/a"), PresenceKind::Unavailable);
    assert!(s.wanted_devices().is_empty());
    s.handle_offline(t1 + Duration::from_millis(50));
    assert_eq!(
        wanted_jids(&s),
        vec!["bob@svpn.test/a", "carol@svpn.test/a"],
        "devices put back when our own session dropped right after"
    );
    // Back online: whoever is not re-announced within the grace period is gone after all.
    let t2 = t1 + Duration::from_secs(30);
    s.handle_online(t2, "alice@svpn.test/phone".parse().unwrap());
    s.handle_presence(
        t2,
        &full("bob@svpn.test/a"),
        PresenceKind::Available(Some(DeviceInfo::new([2; 32]))),
    );
    s.handle_timeout(t2 + PRESENCE_RESYNC_GRACE);
    assert_eq!(wanted_jids(&s), vec!["bob@svpn.test/a"]);
}

#[test]
fn a_friend_who_leaves_while_the_session_stays_up_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let mut s = online_with_bob_and_carol(&dir, t0);
    let t1 = t0 + Duration::from_secs(60);
    s.handle_presence(t1, &full("bob@svpn.test/a"), PresenceKind::Unavailable);
    // Our own session drops much later (a network cut): bob stays gone.
    s.handle_offline(t1 + SERVER_GOING_AWAY + Duration::from_secs(1));
    assert_eq!(wanted_jids(&s), vec!["carol@svpn.test/a"]);
    // A device that left and came back is not replaced by its old self.
    let t2 = t1 + Duration::from_secs(20);
    s.handle_presence(t2, &full("carol@svpn.test/a"), PresenceKind::Unavailable);
    s.handle_presence(
        t2,
        &full("carol@svpn.test/a"),
        PresenceKind::Available(Some(DeviceInfo::new([9; 32]))),
    );
    s.handle_offline(t2);
    let carol = s.wanted_devices();
    assert_eq!(carol.len(), 1);
    assert_eq!(carol[0].info, DeviceInfo::new([9; 32]));
}

#[test]
fn a_resumed_session_keeps_every_device() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let mut s = online_with_bob_and_carol(&dir, t0);
    let t1 = t0 + Duration::from_secs(60);
    s.handle_offline(t1);
    s.handle_resumed("alice@svpn.test/phone".parse().unwrap());
    // Nothing to send (the server kept our presence) and no resync that would drop
    // devices whose presence is not sent again.
    assert_eq!(s.poll_outgoing(), None);
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t1 + Duration::from_secs(120));
    assert_eq!(wanted_jids(&s).len(), 2);
}

#[test]
fn an_unanswered_friend_request_is_sent_again_a_few_times() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(&dir);
    let t0 = Instant::now();
    s.handle_online(t0, "alice@svpn.test/phone".parse().unwrap());
    while s.poll_outgoing().is_some() {}
    s.add_friend(t0, jid("bob@svpn.test")).unwrap();
    assert_eq!(
        s.poll_outgoing(),
        Some(Outgoing::Subscribe(jid("bob@svpn.test")))
    );
    s.handle_roster_push(RosterItem {
        pending_out: true,
        ..item("bob@svpn.test", Subscription::None)
    });
    s.handle_timeout(t0 + PRESENCE_RESYNC_GRACE);
    // The server dropped it (flood limit): sent again after the first wait, then less often.
    let mut at = t0;
    for wait in RESUBSCRIBE_AFTER {
        assert_eq!(s.poll_timeout(), Some(at + wait));
        s.handle_timeout(at + wait - Duration::from_millis(1));
        assert_eq!(s.poll_outgoing(), None, "not before its time");
        at += wait;
        s.handle_timeout(at);
        assert_eq!(
            s.poll_outgoing(),
            Some(Outgoing::Subscribe(jid("bob@svpn.test")))
        );
    }
    assert_eq!(s.poll_timeout(), None, "then it is up to bob");

    // An answered request is not sent again.
    s.add_friend(at, jid("carol@svpn.test")).unwrap();
    while s.poll_outgoing().is_some() {}
    s.handle_roster_push(item("carol@svpn.test", Subscription::To));
    s.handle_timeout(at + RESUBSCRIBE_AFTER[0]);
    assert_eq!(s.poll_outgoing(), None);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_declined_request_stays_declined_until_the_user_asks() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(&dir);
    let now = Instant::now();
    s.handle_online(now, "alice@svpn.test/phone".parse().unwrap());
    while s.poll_outgoing().is_some() {}
    // alice follows mallory (she asked once, mallory accepted): subscription `to`.
    s.handle_roster(now, vec![item("mallory@svpn.test", Subscription::To)]);
    s.handle_presence(now, &full("mallory@svpn.test"), PresenceKind::Subscribe);
    // (alice follows mallory: that request would be approved at once) — but alice declined.
    assert_eq!(
        s.poll_outgoing(),
        Some(Outgoing::Subscribed(jid("mallory@svpn.test")))
    );
    s.decline_friend(jid("mallory@svpn.test")).unwrap();
    assert_eq!(
        s.poll_outgoing(),
        Some(Outgoing::Unsubscribed(jid("mallory@svpn.test")))
    );
    // Asked again, and again after a restart: ignored, counted, nothing sent, no request.
    let mut s = state(&dir);
    s.handle_online(now, "alice@svpn.test/phone".parse().unwrap());
    while s.poll_outgoing().is_some() {}
    s.handle_roster(now, vec![item("mallory@svpn.test", Subscription::To)]);
    while s.poll_event().is_some() {}
    s.handle_presence(now, &full("mallory@svpn.test"), PresenceKind::Subscribe);
    assert_eq!(s.poll_outgoing(), None);
    assert!(
        !std::iter::from_fn(|| s.poll_event()).any(|e| matches!(e, SocialEvent::FriendRequest(_)))
    );
    assert_eq!(s.counters().requests_ignored, 1);
    // The user adds mallory after all: requests count again.
    s.add_friend(now, jid("mallory@svpn.test")).unwrap();
    while s.poll_outgoing().is_some() {}
    s.handle_presence(now, &full("mallory@svpn.test"), PresenceKind::Subscribe);
    assert_eq!(
        s.poll_outgoing(),
        Some(Outgoing::Subscribed(jid("mallory@svpn.test")))
    );
}

#[test]
fn a_copied_device_announcement_takes_nothing_from_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(&dir);
    let now = Instant::now();
    s.handle_online(now, "alice@svpn.test/laptop".parse().unwrap());
    s.handle_roster(
        now,
        vec![
            item("bob@svpn.test", Subscription::Both),
            item("mallory@svpn.test", Subscription::Both),
        ],
    );
    let phone = DeviceInfo::new([6; 32]);
    // mallory copies alice's phone announcement before the phone is even online.
    announce(&mut s, now, "mallory@svpn.test/copy", phone);
    let wanted = s.wanted_devices();
    assert_eq!(
        wanted.len(),
        1,
        "unproven: one link attempt, to the claimer"
    );
    // The phone comes online: the user's own claim goes first while nothing is proven.
    announce(&mut s, now, "alice@svpn.test/phone", phone);
    let wanted = s.wanted_devices();
    assert_eq!(wanted.len(), 1);
    assert_eq!(wanted[0].jid.to_string(), "alice@svpn.test/phone");
    // The phone proves itself; mallory never can: she takes nothing, whatever comes later.
    let phone_jid: FullJid = "alice@svpn.test/phone".parse().unwrap();
    assert_eq!(
        s.authorize_signal(&phone_jid, &offer_from([6; 32]), || Ok(())),
        Ok(true)
    );
    s.handle_presence(
        now,
        &full("alice@svpn.test/phone"),
        PresenceKind::Unavailable,
    );
    announce(&mut s, now, "mallory@svpn.test/copy2", phone);
    assert!(
        s.wanted_devices().is_empty(),
        "the proven owner's device only"
    );
    assert_eq!(s.counters().device_claims_refused, 1);
    assert_eq!(s.owner_of(&phone.uid), Some(&jid("alice@svpn.test")));
    // A friend's device is bound the same way.
    let bob_dev = DeviceInfo::new([2; 32]);
    announce(&mut s, now, "bob@svpn.test/pc", bob_dev);
    announce(&mut s, now, "mallory@svpn.test/pc", bob_dev);
    let bob_pc: FullJid = "bob@svpn.test/pc".parse().unwrap();
    assert_eq!(
        s.authorize_signal(&bob_pc, &offer_from([2; 32]), || Ok(())),
        Ok(false)
    );
    let wanted: Vec<String> = s
        .wanted_devices()
        .iter()
        .map(|w| w.jid.to_string())
        .collect();
    assert_eq!(wanted, vec!["bob@svpn.test/pc"]);
}

#[test]
fn directed_presence_from_contacts_we_do_not_follow_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(&dir);
    let now = Instant::now();
    s.handle_roster(
        now,
        vec![
            item("bob@svpn.test", Subscription::Both),
            item("dave@svpn.test", Subscription::From),
        ],
    );
    let dev = DeviceInfo::new([9; 32]);
    // dave sees us, we never asked to see him: his presence is a claim nobody asked for.
    announce(&mut s, now, "dave@svpn.test/pc", dev);
    announce(&mut s, now, "eve@svpn.test/pc", dev);
    assert_eq!(s.counters().presences_ignored, 2);
    // What servers send for a contact with nobody online is not counted as refused.
    s.handle_presence(now, &full("dave@svpn.test"), PresenceKind::Unavailable);
    assert_eq!(s.counters().presences_ignored, 2);
    s.handle_presence(now, &full("dave@svpn.test"), PresenceKind::Available(None));
    assert_eq!(s.counters().presences_ignored, 3);
    assert!(
        s.contacts().all(|c| c.devices.is_empty()),
        "a device stored from unasked presence"
    );
    announce(&mut s, now, "bob@svpn.test/pc", dev);
    assert_eq!(wanted_jids(&s), ["bob@svpn.test/pc"]);
}

#[test]
fn presence_that_arrives_before_the_subscription_does_is_kept() {
    // Seen on ejabberd: carol accepts alice's request (and asks in return); alice's
    // server approves and sends alice's presence at once, but the `subscribed` for carol
    // is dropped by mod_pres_counter and comes a minute later, with no new presence.
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(&dir);
    let now = Instant::now();
    s.handle_roster(now, vec![]);
    s.handle_presence(now, &full("carol@svpn.test"), PresenceKind::Subscribe);
    s.accept_friend(now, jid("carol@svpn.test")).unwrap();
    s.handle_roster_push(item("carol@svpn.test", Subscription::From));
    s.handle_roster_push(RosterItem {
        pending_out: true,
        ..item("carol@svpn.test", Subscription::From)
    });
    announce(
        &mut s,
        now,
        "carol@svpn.test/phone",
        DeviceInfo::new([7; 32]),
    );
    assert_eq!(s.counters().presences_ignored, 0);
    assert!(wanted_jids(&s).is_empty(), "not mutual yet");
    s.handle_roster_push(item("carol@svpn.test", Subscription::Both));
    assert_eq!(wanted_jids(&s), ["carol@svpn.test/phone"]);
    // A request that is answered with a refusal forgets what was announced.
    s.handle_roster_push(item("carol@svpn.test", Subscription::From));
    assert!(s.contacts().all(|c| c.devices.is_empty()));
}

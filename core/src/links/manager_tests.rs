//! Tests of the link manager: two managers in virtual time.

use super::*;

struct Side {
    m: LinkManager,
    jid: FullJid,
    addr: SocketAddr,
    info: DeviceInfo,
    events: Vec<LinkEvent>,
    /// The path is cut: datagrams from or to this side vanish (signalling still works).
    cut: bool,
}

fn side(key: u8, jid: &str, addr: &str, now: Instant) -> Side {
    let info = DeviceInfo::new([key; 32]);
    let addr: SocketAddr = addr.parse().unwrap();
    Side {
        m: LinkManager::new(
            now,
            info,
            LinkPolicy::default(),
            IceServers::default(),
            vec![addr],
        ),
        jid: jid.parse().unwrap(),
        addr,
        info,
        events: vec![],
        cut: false,
    }
}

fn wanted(other: &Side) -> Vec<WantedDevice> {
    vec![WantedDevice {
        jid: other.jid.clone(),
        info: other.info,
        own: false,
    }]
}

/// Exchanges signals (unless `drop_signals` says so) and datagrams, and steps virtual
/// time through the earliest deadline, until `until`.
fn run(
    a: &mut Side,
    b: &mut Side,
    mut now: Instant,
    until: Instant,
    drop_signals: &mut dyn FnMut(&Signal) -> bool,
) -> Instant {
    for _ in 0..10_000 {
        let mut moved = false;
        for (from, to) in [(0, 1), (1, 0)] {
            let (src, dst) = if from == 0 {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            while let Some((_, _, signal)) = src.m.poll_signal() {
                moved = true;
                if std::env::var("DEBUG_SIGNALS").is_ok() {
                    eprintln!("{} -> {:?} {:x}", src.jid, signal.kind, signal.session);
                }
                if !drop_signals(&signal) {
                    dst.m.handle_signal(now, src.jid.clone(), signal);
                }
            }
            while let Some((to_addr, data)) = src.m.poll_transmit() {
                moved = true;
                if to_addr == dst.addr && !src.cut && !dst.cut {
                    dst.m.handle_datagram(now, dst.addr, src.addr, &data);
                }
            }
            while let Some(e) = src.m.poll_event() {
                src.events.push(e);
            }
            let _ = to;
        }
        if moved {
            continue;
        }
        let next = [a.m.poll_timeout(), b.m.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) if t <= until => {
                now = now.max(t);
                a.m.handle_timeout(now, |_| None);
                b.m.handle_timeout(now, |_| None);
            }
            _ => return now,
        }
    }
    panic!("simulation did not settle");
}

/// Runs for `span` with every signal delivered.
fn settle(a: &mut Side, b: &mut Side, now: Instant, span: Duration) -> Instant {
    run(a, b, now, now + span, &mut |_| false)
}

fn is_closed(e: &LinkEvent, uid: &Uid) -> bool {
    matches!(e, LinkEvent::Closed { uid: u, .. } if u == uid)
}

fn closed(events: &[LinkEvent], uid: &Uid) -> bool {
    events.iter().any(|e| is_closed(e, uid))
}

fn up(side: &Side) -> Option<SelectedPath> {
    side.events.iter().rev().find_map(|e| match e {
        LinkEvent::Up { path, .. } => Some(*path),
        _ => None,
    })
}

#[test]
fn two_devices_link_directly_and_close() {
    let t0 = Instant::now();
    let mut a = side(1, "alice@svpn.test/a", "198.18.0.1:1000", t0);
    let mut b = side(2, "bob@svpn.test/b", "198.18.0.2:2000", t0);
    let (wa, wb) = (wanted(&b), wanted(&a));
    a.m.set_wanted(t0, &wa);
    b.m.set_wanted(t0, &wb);
    let now = settle(&mut a, &mut b, t0, Duration::from_secs(5));
    assert_eq!(
        up(&a),
        Some(SelectedPath {
            remote: b.addr,
            relayed: false,
            via_our_relay: false,
        }),
        "{:?}",
        a.events
    );
    assert_eq!(
        up(&b),
        Some(SelectedPath {
            remote: a.addr,
            relayed: false,
            via_our_relay: false,
        }),
        "{:?}",
        b.events
    );
    assert!(matches!(
        a.m.phase(now, &b.info.uid),
        Some(LinkPhase::Connected { relayed: false, .. })
    ));

    a.m.close_now(&b.info.uid);
    settle(&mut a, &mut b, now, Duration::from_secs(1));
    assert!(closed(&a.events, &b.info.uid));
    assert!(closed(&b.events, &a.info.uid));
}

#[test]
fn lost_offers_are_retried_and_replays_ignored() {
    let t0 = Instant::now();
    let mut a = side(1, "alice@svpn.test/a", "198.18.0.1:1000", t0);
    let mut b = side(2, "bob@svpn.test/b", "198.18.0.2:2000", t0);
    let (wa, wb) = (wanted(&b), wanted(&a));
    a.m.set_wanted(t0, &wa);
    b.m.set_wanted(t0, &wb);
    // The first two offers vanish.
    let mut lost = 0;
    let mut first_offer = None;
    run(&mut a, &mut b, t0, t0 + Duration::from_secs(10), &mut |s| {
        if s.kind == SignalKind::Offer && lost < 2 {
            lost += 1;
            first_offer.get_or_insert_with(|| s.clone());
            return true;
        }
        false
    });
    assert!(
        up(&a).is_some() && up(&b).is_some(),
        "{:?} / {:?}",
        a.events,
        b.events
    );
    // The lost offers were resends of one session; the third copy got through.
    assert_eq!(a.m.counters().offers_sent, 1);
    // Roaming starts a new session; the old offer replayed afterwards is stale.
    let now = t0 + Duration::from_secs(11);
    a.m.network_changed(now, vec![a.addr]);
    let now = settle(&mut a, &mut b, now, Duration::from_secs(5));
    assert_eq!(a.m.counters().offers_sent, 2);
    assert!(up(&b).is_some());
    let offer = first_offer.unwrap();
    let stale_before = b.m.counters().signals_stale;
    b.m.handle_signal(now, a.jid.clone(), offer);
    assert_eq!(
        b.m.poll_signal(),
        None,
        "a replayed offer must not be answered"
    );
    assert_eq!(b.m.counters().signals_stale, stale_before + 1);
}

#[test]
fn on_demand_links_only_when_asked_and_trims_idle_links() {
    let t0 = Instant::now();
    let policy = LinkPolicy::OnDemand {
        max_links: 4,
        idle_secs: 5,
    };
    let mut a = side(1, "alice@svpn.test/a", "198.18.0.1:1000", t0);
    a.m = LinkManager::new(t0, a.info, policy, IceServers::default(), vec![a.addr]);
    let mut b = side(2, "bob@svpn.test/b", "198.18.0.2:2000", t0);
    b.m = LinkManager::new(t0, b.info, policy, IceServers::default(), vec![b.addr]);
    let (wa, wb) = (wanted(&b), wanted(&a));
    a.m.set_wanted(t0, &wa);
    b.m.set_wanted(t0, &wb);
    let now = settle(&mut a, &mut b, t0, Duration::from_secs(5));
    assert!(
        up(&a).is_none() && a.m.poll_signal().is_none(),
        "linked without demand"
    );
    // A packet for bob: a link comes up (bob answers though he did not ask).
    assert_eq!(a.m.demand(now, &b.info.uid), Some(b.info.public_key));
    assert_eq!(a.m.demand(now, &Uid([9; 20])), None, "not eligible");
    let now = settle(&mut a, &mut b, now, Duration::from_secs(5));
    assert!(up(&a).is_some() && up(&b).is_some());
    // Traffic until `now`, then silence: trimmed once the idle time has passed.
    let last = now;
    a.m.trim_idle(now + Duration::from_secs(3), |_| Some(last));
    assert!(a.m.phase(now, &b.info.uid).is_some(), "trimmed too early");
    let later = now + Duration::from_secs(6);
    a.m.trim_idle(later, |_| Some(last));
    assert!(a.m.phase(later, &b.info.uid).is_none());
    assert!(
        a.m.poll_event()
            .into_iter()
            .any(|e| is_closed(&e, &b.info.uid))
            || closed(&a.events, &b.info.uid)
            || std::iter::from_fn(|| a.m.poll_event()).any(|e| is_closed(&e, &b.info.uid))
    );
}

#[test]
fn a_device_that_goes_offline_is_closed_after_the_grace_period() {
    let t0 = Instant::now();
    let mut a = side(1, "alice@svpn.test/a", "198.18.0.1:1000", t0);
    let mut b = side(2, "bob@svpn.test/b", "198.18.0.2:2000", t0);
    let (wa, wb) = (wanted(&b), wanted(&a));
    a.m.set_wanted(t0, &wa);
    b.m.set_wanted(t0, &wb);
    let now = settle(&mut a, &mut b, t0, Duration::from_secs(5));
    assert!(up(&a).is_some());
    // Bob's device disappears from the roster: the link stays through a presence flap…
    a.m.set_wanted(now, &[]);
    let mid = run(&mut a, &mut b, now, now + OFFLINE_GRACE / 2, &mut |_| false);
    assert!(!closed(&a.events, &b.info.uid));
    assert!(a.m.phase(mid, &b.info.uid).is_some());
    // …and is closed (and Bob told) once the grace period is over.
    run(
        &mut a,
        &mut b,
        mid,
        now + OFFLINE_GRACE + Duration::from_secs(1),
        &mut |_| false,
    );
    assert!(closed(&a.events, &b.info.uid));
    assert!(closed(&b.events, &a.info.uid));
}

#[test]
fn proactive_links_stop_at_the_cap_own_devices_first() {
    let t0 = Instant::now();
    let mut a = side(1, "alice@svpn.test/a", "198.18.0.1:1000", t0);
    a.m = LinkManager::new(
        t0,
        a.info,
        LinkPolicy::Proactive { max_links: 2 },
        IceServers::default(),
        vec![a.addr],
    );
    let devices: Vec<WantedDevice> = (2..6u8)
        .map(|k| WantedDevice {
            jid: format!("f{k}@svpn.test/x").parse().unwrap(),
            info: DeviceInfo::new([k; 32]),
            own: k == 5,
        })
        .collect();
    a.m.set_wanted(t0, &devices);
    let linked: Vec<Uid> = a.m.devices().map(|(u, _)| u).collect();
    assert_eq!(linked.len(), 2);
    assert!(linked.contains(&devices[3].info.uid), "own device first");
}

#[test]
fn an_unanswered_device_backs_off() {
    let t0 = Instant::now();
    let mut a = side(1, "alice@svpn.test/a", "198.18.0.1:1000", t0);
    let mut b = side(2, "bob@svpn.test/b", "198.18.0.2:2000", t0);
    let wa = wanted(&b);
    a.m.set_wanted(t0, &wa);
    // Bob never answers anything.
    run(
        &mut a,
        &mut b,
        t0,
        t0 + Duration::from_secs(60),
        &mut |_| true,
    );
    let offers = a.m.counters().offers_sent;
    // Offers are resent a bounded number of times per attempt, attempts back off.
    assert!((2..=5).contains(&offers), "{offers} offers in 60 s");
    assert_eq!(
        a.m.phase(t0 + Duration::from_secs(60), &b.info.uid),
        Some(LinkPhase::Retrying)
    );
}

fn linked_pair(t0: Instant) -> (Side, Side, Instant) {
    let mut a = side(1, "alice@svpn.test/a", "198.18.0.1:1000", t0);
    let mut b = side(2, "bob@svpn.test/b", "198.18.0.2:2000", t0);
    let (wa, wb) = (wanted(&b), wanted(&a));
    a.m.set_wanted(t0, &wa);
    b.m.set_wanted(t0, &wb);
    let now = settle(&mut a, &mut b, t0, Duration::from_secs(5));
    assert!(up(&a).is_some() && up(&b).is_some());
    (a, b, now)
}

#[test]
fn a_suspect_path_that_answers_its_check_is_confirmed() {
    let t0 = Instant::now();
    let (mut a, mut b, now) = linked_pair(t0);
    // Long after the last check (idle link), data went unanswered for a while.
    let now = settle(&mut a, &mut b, now, Duration::from_secs(40));
    a.events.clear();
    a.m.path_alarm(now, &b.info.uid, PathAlarm::Suspect);
    // Checked at once, not at the next keepalive.
    let later = settle(&mut a, &mut b, now, Duration::from_millis(1200));
    assert!(
        a.events
            .contains(&LinkEvent::PathConfirmed { uid: b.info.uid }),
        "{:?}",
        a.events
    );
    // A dead alarm on a path that just answered is a confirmation too: nothing restarts.
    a.m.path_alarm(later, &b.info.uid, PathAlarm::Dead);
    assert_eq!(a.m.counters().paths_lost, 0);
    assert!(matches!(
        a.m.phase(later, &b.info.uid),
        Some(LinkPhase::Connected { .. })
    ));
}

#[test]
fn a_dead_path_is_reported_and_found_again() {
    let t0 = Instant::now();
    let (mut a, mut b, now) = linked_pair(t0);
    let now = settle(&mut a, &mut b, now, Duration::from_secs(40));
    a.events.clear();
    b.events.clear();
    // The path dies (a NAT dropped its mapping); signalling still works.
    a.cut = true;
    a.m.path_alarm(now, &b.info.uid, PathAlarm::Suspect);
    let t = now + Duration::from_secs(5);
    run(&mut a, &mut b, now, t, &mut |_| false);
    assert!(!a
        .events
        .iter()
        .any(|e| matches!(e, LinkEvent::PathConfirmed { .. })));
    let offers = a.m.counters().offers_sent + b.m.counters().offers_sent;
    a.m.path_alarm(t, &b.info.uid, PathAlarm::Dead);
    assert!(
        a.m.poll_event()
            == Some(LinkEvent::Down {
                uid: b.info.uid,
                jid: b.jid.clone()
            }),
        "the lost path is reported"
    );
    assert_eq!(a.m.counters().paths_lost, 1);
    assert_eq!(a.m.phase(t, &b.info.uid), Some(LinkPhase::Connecting));
    // ICE runs again at once (a new offer, or a request for one) and finds the path once
    // it works again.
    a.cut = false;
    settle(&mut a, &mut b, t, Duration::from_secs(3));
    assert_eq!(
        a.m.counters().offers_sent + b.m.counters().offers_sent,
        offers + 1
    );
    assert!(
        a.events.iter().any(|e| matches!(e, LinkEvent::Up { .. })),
        "{:?}",
        a.events
    );
    assert!(matches!(
        a.m.phase(t + Duration::from_secs(3), &b.info.uid),
        Some(LinkPhase::Connected { .. })
    ));
}

#[test]
fn a_network_change_keeps_the_old_path_until_a_new_one_is_selected() {
    let t0 = Instant::now();
    let (mut a, mut b, now) = linked_pair(t0);
    a.events.clear();
    let offers = a.m.counters().offers_sent + b.m.counters().offers_sent;
    a.m.network_changed(now, vec![a.addr]);
    assert!(
        matches!(
            a.m.phase(now, &b.info.uid),
            Some(LinkPhase::Connected { .. })
        ),
        "the old path still shows while ICE runs again"
    );
    let later = settle(&mut a, &mut b, now, Duration::from_secs(3));
    assert_eq!(
        a.m.counters().offers_sent + b.m.counters().offers_sent,
        offers + 1,
        "a new ICE session"
    );
    assert!(
        !a.events
            .iter()
            .any(|e| matches!(e, LinkEvent::Down { .. } | LinkEvent::Closed { .. })),
        "{:?}",
        a.events
    );
    assert!(matches!(
        a.m.phase(later, &b.info.uid),
        Some(LinkPhase::Connected { .. })
    ));
}

#[test]
fn a_friend_who_closes_the_link_shows_as_closed_by_peer() {
    let t0 = Instant::now();
    let (mut a, mut b, now) = linked_pair(t0);
    b.m.close_now(&a.info.uid);
    settle(&mut a, &mut b, now, Duration::from_secs(1));
    assert!(a
        .events
        .iter()
        .any(|e| matches!(e, LinkEvent::Closed { by_peer: true, .. })));
    assert_eq!(
        a.m.phase(now + Duration::from_secs(60), &b.info.uid),
        Some(LinkPhase::ClosedByPeer)
    );
}

#[test]
fn a_dead_old_path_does_not_restart_a_session_already_looking() {
    let t0 = Instant::now();
    let (mut a, mut b, now) = linked_pair(t0);
    a.events.clear();
    // The network changes and the old path with it: the new session cannot finish yet.
    a.cut = true;
    a.m.network_changed(now, vec![a.addr]);
    let t = settle(&mut a, &mut b, now, Duration::from_millis(500));
    let offers = a.m.counters().offers_sent + b.m.counters().offers_sent;
    a.m.path_alarm(t, &b.info.uid, PathAlarm::Dead);
    let down = std::iter::from_fn(|| a.m.poll_event()).any(|e| matches!(e, LinkEvent::Down { .. }));
    assert!(down, "the dead old path is no longer shown as up");
    assert_eq!(a.m.phase(t, &b.info.uid), Some(LinkPhase::Connecting));
    // The running session goes on and finds the path once the network works.
    a.cut = false;
    settle(&mut a, &mut b, t, Duration::from_secs(5));
    assert_eq!(
        a.m.counters().offers_sent + b.m.counters().offers_sent,
        offers,
        "no new session"
    );
    assert!(
        a.events.iter().any(|e| matches!(e, LinkEvent::Up { .. })),
        "{:?}",
        a.events
    );
}

#[test]
fn a_link_meant_for_a_copied_announcement_goes_to_the_device_that_proves_it() {
    let t0 = Instant::now();
    let mut a = side(1, "alice@svpn.test/a", "198.18.0.1:1000", t0);
    let mut b = side(2, "bob@svpn.test/b", "198.18.0.2:2000", t0);
    // alice saw mallory announce bob's device before bob's own presence arrived.
    let copy = WantedDevice {
        jid: "mallory@svpn.test/copy".parse().unwrap(),
        info: b.info,
        own: false,
    };
    a.m.set_wanted(t0, std::slice::from_ref(&copy));
    assert_eq!(
        a.m.account_of(&b.info.uid),
        Some("mallory@svpn.test".parse().unwrap())
    );
    // bob's device (the key holder: the social layer passed its proof) signals itself.
    let wb = wanted(&a);
    b.m.set_wanted(t0, &wb);
    settle(&mut a, &mut b, t0, Duration::from_secs(5));
    assert_eq!(
        a.m.account_of(&b.info.uid),
        Some("bob@svpn.test".parse().unwrap())
    );
    assert!(up(&a).is_some(), "{:?}", a.events);
    // mallory's claim, still listed, no longer moves the link.
    a.m.set_wanted(t0 + Duration::from_secs(5), &[copy]);
    assert_eq!(
        a.m.account_of(&b.info.uid),
        Some("bob@svpn.test".parse().unwrap())
    );
}

#[test]
fn friends_take_turns_for_the_link_slots() {
    let t0 = Instant::now();
    let mut a = side(1, "alice@svpn.test/a", "198.18.0.1:1000", t0);
    a.m = LinkManager::new(
        t0,
        a.info,
        LinkPolicy::Proactive { max_links: 4 },
        IceServers::default(),
        vec![a.addr],
    );
    // mallory shows up first with ten devices; bob and carol with one each.
    let mut devices: Vec<WantedDevice> = (10..20u8)
        .map(|k| WantedDevice {
            jid: format!("mallory@svpn.test/r{k}").parse().unwrap(),
            info: DeviceInfo::new([k; 32]),
            own: false,
        })
        .collect();
    for (k, who) in [(30u8, "bob"), (31, "carol")] {
        devices.push(WantedDevice {
            jid: format!("{who}@svpn.test/x").parse().unwrap(),
            info: DeviceInfo::new([k; 32]),
            own: false,
        });
    }
    a.m.set_wanted(t0, &devices);
    let linked: Vec<String> =
        a.m.devices()
            .filter_map(|(u, _)| a.m.account_of(&u))
            .map(|j| j.to_string())
            .collect();
    assert_eq!(linked.len(), 4);
    for who in ["bob@svpn.test", "carol@svpn.test"] {
        assert!(linked.iter().any(|j| j == who), "{linked:?}");
    }
}

#[test]
fn a_device_cannot_make_us_start_sessions_without_end() {
    let t0 = Instant::now();
    let (mut a, b, now) = linked_pair(t0);
    let restart = |session| Signal {
        kind: SignalKind::Restart,
        session,
        from: b.info,
        credentials: None,
        candidates: vec![],
    };
    let refused = a.m.counters().signals_refused;
    for i in 0..20 {
        a.m.handle_signal(now, b.jid.clone(), restart(1000 + i));
    }
    assert_eq!(
        a.m.counters().signals_refused - refused,
        20 - SESSIONS_PER_MINUTE as u64 + 1,
        "the pair's first session counts too"
    );
    // A minute later the device may start sessions again.
    let later = now + Duration::from_secs(61);
    a.m.handle_signal(later, b.jid.clone(), restart(5000));
    assert_eq!(
        a.m.counters().signals_refused - refused,
        20 - SESSIONS_PER_MINUTE as u64 + 1
    );
}

#[test]
fn signals_from_unlisted_devices_take_no_slot_past_the_cap() {
    let t0 = Instant::now();
    let mut a = side(1, "alice@svpn.test/a", "198.18.0.1:1000", t0);
    a.m = LinkManager::new(
        t0,
        a.info,
        LinkPolicy::Proactive { max_links: 2 },
        IceServers::default(),
        vec![a.addr],
    );
    for k in 2..10u8 {
        let dev = DeviceInfo::new([k; 32]);
        a.m.handle_signal(
            t0,
            format!("f{k}@svpn.test/x").parse().unwrap(),
            Signal {
                kind: SignalKind::Restart,
                session: u64::from(k),
                from: dev,
                credentials: None,
                candidates: vec![],
            },
        );
    }
    assert_eq!(a.m.devices().count(), 2);
    assert_eq!(a.m.counters().signals_refused, 6);
}

#[test]
fn stun_that_is_not_for_a_session_or_not_authentic_reaches_none() {
    use rtc_ice::attributes::control::AttrControlling;
    use rtc_stun::fingerprint::FINGERPRINT;
    use rtc_stun::integrity::MessageIntegrity;
    use rtc_stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
    use rtc_stun::textattrs::TextAttribute;
    let t0 = Instant::now();
    let (mut a, mut b, now) = linked_pair(t0);
    let ufrag = a.m.peers[&b.info.uid]
        .ice()
        .unwrap()
        .local_ufrag()
        .to_string();
    let crypto = rtc_ice::crypto::default_provider().unwrap();
    let request = |username: &str, password: &str| {
        let mut m = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(TransactionId::new()),
            Box::new(BINDING_REQUEST),
            Box::new(TextAttribute::new(
                rtc_stun::attributes::ATTR_USERNAME,
                username.to_string(),
            )),
            Box::new(AttrControlling(7)),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                password.to_string(),
                crypto.crypto(),
            )),
            Box::new(FINGERPRINT),
        ];
        m.build(&setters).unwrap();
        m.raw
    };
    let attacker: SocketAddr = "198.18.0.66:4444".parse().unwrap();
    // Right username, wrong password; unknown username; garbage.
    a.m.handle_datagram(
        now,
        a.addr,
        attacker,
        &request(&format!("{ufrag}:x"), "wrong-password-wrong"),
    );
    a.m.handle_datagram(
        now,
        a.addr,
        attacker,
        &request("nobody:x", "wrong-password-wrong"),
    );
    a.m.handle_datagram(
        now,
        a.addr,
        attacker,
        &[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2],
    );
    assert_eq!(a.m.counters().stun_rejected, 3);
    // The session carries on as it was.
    let later = settle(&mut a, &mut b, now, Duration::from_secs(30));
    assert!(matches!(
        a.m.phase(later, &b.info.uid),
        Some(LinkPhase::Connected { .. })
    ));
    assert!(!a.events.iter().any(|e| matches!(e, LinkEvent::Down { .. })));
}

#[test]
fn a_seeded_manager_draws_the_same_session_ids() {
    let t0 = Instant::now();
    let offer_session = |seed: u64| {
        let mut a = side(1, "a@x/1", "198.18.0.1:1000", t0);
        let b = side(2, "b@x/1", "198.18.0.2:1000", t0);
        let host = vec![a.addr];
        a.m = LinkManager::new(
            t0,
            a.info,
            LinkPolicy::default(),
            IceServers::default(),
            host,
        )
        .with_seed(seed);
        a.m.set_wanted(t0, &wanted(&b));
        let (_, _, signal) = a.m.poll_signal().expect("an offer");
        assert_eq!(signal.kind, SignalKind::Offer);
        signal.session
    };
    assert_eq!(offer_session(7), offer_session(7));
    assert_ne!(offer_session(7), offer_session(8));
}

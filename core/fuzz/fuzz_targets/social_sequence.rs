//! Sequences of what an XMPP server and the user's contacts can send, into the social state
//! and the link manager as the engine joins them: roster results and pushes, presence with
//! device announcements (copied, fresh, floods), subscriptions, signals with real, missing,
//! forged or replayed proofs, friend actions with any JID, going offline and online, time.
//!
//! After every step: no panic, and the policy's promises hold — each device wanted once,
//! never our own, only for the user's own account or an enabled mutual friend, for the
//! account it is proven to belong to, and no contact holds more resources than the cap.
#![no_main]

use boringtun::x25519::StaticSecret;
use libfuzzer_sys::fuzz_target;
use socialvpn_core::identity::DeviceIdentity;
use socialvpn_core::links::manager::{LinkManager, LinkPolicy};
use socialvpn_core::links::servers::IceServers;
use socialvpn_core::social::payload::{DeviceInfo, IceCredentials, Signal, SignalKind};
use socialvpn_core::social::proof::{self, Proof};
use socialvpn_core::social::state::{
    PresenceKind, RosterItem, SocialState, Subscription, MAX_DEVICES_PER_CONTACT,
};
use socialvpn_core::social::toggles::{Toggles, TOGGLES_FILE};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use xmpp_parsers::jid::{BareJid, FullJid, Jid};

const ACCOUNTS: [&str; 4] = [
    "bob@svpn.test",
    "mallory@svpn.test",
    "carol@other.test",
    "alice@svpn.test",
];
const RESOURCES: [&str; 3] = ["pc", "phone", "laptop"];
const CANDIDATES: [&str; 5] = [
    "candidate:1 1 udp 2130706431 198.18.0.2 2000 typ host",
    "candidate:2 1 udp 1694498815 198.18.20.2 40000 typ srflx raddr 0.0.0.0 rport 0",
    "candidate:3 1 udp 16777215 198.18.10.2 49152 typ relay raddr 0.0.0.0 rport 0",
    "candidate:4 1 udp 2130706431 127.0.0.1 22 typ host",
    "candidate:5 1 udp 2130706431 10.1.2.3 5000 typ host",
];

struct Keys {
    alice: DeviceIdentity,
    /// Devices of the contacts (one is alice's own phone).
    devices: Vec<DeviceIdentity>,
    dir: PathBuf,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("svpn-fuzz-social-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Keys {
            alice: DeviceIdentity::from_secret(StaticSecret::from([1u8; 32])),
            devices: (2..8u8)
                .map(|k| DeviceIdentity::from_secret(StaticSecret::from([k; 32])))
                .collect(),
            dir,
        }
    })
}

struct Ops<'a>(&'a [u8]);

impl<'a> Ops<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.byte() as usize % from.len()]
    }
    fn text(&mut self) -> String {
        let len = (self.byte() as usize % 64).min(self.0.len());
        let (t, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8_lossy(t).into_owned()
    }
    fn subscription(&mut self) -> Subscription {
        self.pick(&[
            Subscription::None,
            Subscription::To,
            Subscription::From,
            Subscription::Both,
        ])
    }
}

fn full(account: &str, resource: &str) -> FullJid {
    format!("{account}/{resource}").parse().unwrap()
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let _ = std::fs::remove_file(keys.dir.join(TOGGLES_FILE));
    let Ok(toggles) = Toggles::open(&keys.dir) else {
        return;
    };
    let own: BareJid = "alice@svpn.test".parse().unwrap();
    let own_full = full("alice@svpn.test", "laptop");
    let own_device = DeviceInfo::new(*keys.alice.public_key().as_bytes());
    let mut now = Instant::now();
    let mut social = SocialState::new(own.clone(), own_device, toggles);
    let host = "198.18.0.1:1000".parse().unwrap();
    let mut links = LinkManager::new(
        now,
        own_device,
        LinkPolicy::Proactive { max_links: 8 },
        IceServers::default(),
        vec![host],
    );
    let mut ops = Ops(data);
    let mut fresh = 0u32;
    for _ in 0..48 {
        if ops.0.is_empty() {
            break;
        }
        match ops.byte() % 9 {
            0 => {
                let items = ACCOUNTS[..3]
                    .iter()
                    .map(|a| RosterItem {
                        jid: a.parse().unwrap(),
                        name: None,
                        subscription: ops.subscription(),
                        pending_out: ops.byte() & 1 == 1,
                        removed: false,
                    })
                    .collect();
                social.handle_roster(now, items);
            }
            1 => {
                let item = RosterItem {
                    jid: ops.pick(&ACCOUNTS).parse().unwrap(),
                    name: Some(ops.text()),
                    subscription: ops.subscription(),
                    pending_out: ops.byte() & 1 == 1,
                    removed: ops.byte() & 1 == 1,
                };
                social.handle_roster_push(item);
            }
            2 => {
                let account = ops.pick(&ACCOUNTS);
                let from: Jid = if ops.byte() % 8 == 0 {
                    account.parse().unwrap()
                } else {
                    full(account, ops.pick(&RESOURCES)).into()
                };
                let device = &keys.devices[ops.byte() as usize % keys.devices.len()];
                let claimed = match ops.byte() % 4 {
                    0 => None,
                    // Alice's own key, copied.
                    1 => Some(own_device),
                    _ => Some(DeviceInfo::new(*device.public_key().as_bytes())),
                };
                let kind = match ops.byte() % 7 {
                    0 | 1 => PresenceKind::Available(claimed),
                    2 => PresenceKind::Unavailable,
                    3 => PresenceKind::Subscribe,
                    4 => PresenceKind::Subscribed,
                    5 => PresenceKind::Unsubscribe,
                    _ => PresenceKind::Unsubscribed,
                };
                social.handle_presence(now, &from, kind);
            }
            3 => {
                // A flood of resources with fresh keys.
                let account = ops.pick(&ACCOUNTS);
                for _ in 0..(ops.byte() % 40) {
                    fresh += 1;
                    let mut key = [0u8; 32];
                    key[..4].copy_from_slice(&fresh.to_be_bytes());
                    let from: Jid = full(account, &format!("r{fresh}")).into();
                    social.handle_presence(
                        now,
                        &from,
                        PresenceKind::Available(Some(DeviceInfo::new(key))),
                    );
                }
            }
            4 => {
                let account = ops.pick(&ACCOUNTS);
                let from = full(account, ops.pick(&RESOURCES));
                let signer = &keys.devices[ops.byte() as usize % keys.devices.len()];
                let claimed = if ops.byte() % 4 == 0 {
                    // Claims another device than the one that signs.
                    DeviceInfo::new(
                        *keys.devices[ops.byte() as usize % keys.devices.len()]
                            .public_key()
                            .as_bytes(),
                    )
                } else {
                    DeviceInfo::new(*signer.public_key().as_bytes())
                };
                let kind = ops.pick(&[
                    SignalKind::Offer,
                    SignalKind::Answer,
                    SignalKind::Restart,
                    SignalKind::Close,
                ]);
                let candidates = (0..ops.byte() % 4)
                    .map(|_| {
                        if ops.byte() % 4 == 0 {
                            ops.text()
                        } else {
                            ops.pick(&CANDIDATES).to_string()
                        }
                    })
                    .collect();
                let signal = Signal {
                    kind,
                    session: u64::from(ops.byte()) << 8 | u64::from(ops.byte()),
                    from: claimed,
                    credentials: (ops.byte() % 4 != 0).then(|| IceCredentials {
                        ufrag: "abcd".into(),
                        pwd: "0123456789abcdefghijkl".into(),
                    }),
                    candidates,
                };
                let at = epoch_secs();
                let proof = match ops.byte() % 4 {
                    0 | 1 => proof::sign(
                        signer,
                        keys.alice.public_key().as_bytes(),
                        &from,
                        &own_full,
                        at,
                        &signal,
                    ),
                    2 => None,
                    _ => Some(Proof {
                        at: at.wrapping_add(u64::from(ops.byte()) * 60),
                        mac: [ops.byte(); 32],
                    }),
                };
                let verdict = social.authorize_signal(&from, &signal, || {
                    proof::verify(&keys.alice, &from, &own_full, at, &signal, proof.as_ref())
                });
                if verdict.is_ok() {
                    links.handle_signal(now, from, signal);
                }
            }
            5 => {
                let jid = if ops.byte() % 4 == 0 {
                    ops.text()
                } else {
                    ops.pick(&ACCOUNTS).to_string()
                };
                if let Ok(jid) = jid.parse::<BareJid>() {
                    let _ = match ops.byte() % 6 {
                        0 => social.add_friend(now, jid),
                        1 => social.accept_friend(now, jid),
                        2 => social.decline_friend(jid),
                        3 => social.remove_friend(jid),
                        4 => social.set_enabled(&jid, true).map(|_| ()),
                        _ => social.set_enabled(&jid, false).map(|_| ()),
                    };
                }
            }
            6 => social.handle_online(now, own_full.clone()),
            7 => social.handle_offline(now),
            _ => {
                now += Duration::from_millis(u64::from(ops.byte()) * 500);
                social.handle_timeout(now);
                links.handle_timeout(now, |_| None);
            }
        }
        let wanted = social.wanted_devices();
        if std::env::var_os("SVPN_FUZZ_DEBUG").is_some() {
            eprintln!(
                "wanted: {:?}",
                wanted.iter().map(|w| w.jid.to_string()).collect::<Vec<_>>()
            );
        }
        check(&social, &own, &own_device, &wanted);
        links.set_wanted(now, &wanted);
        while social.poll_outgoing().is_some() {}
        while social.poll_event().is_some() {}
        while links.poll_signal().is_some() {}
        while links.poll_transmit().is_some() {}
        while links.poll_event().is_some() {}
    }
});

fn check(
    social: &SocialState,
    own: &BareJid,
    own_device: &DeviceInfo,
    wanted: &[socialvpn_core::social::state::WantedDevice],
) {
    let mut uids = HashSet::new();
    for w in wanted {
        assert!(uids.insert(w.info.uid), "{} wanted twice", w.info.uid);
        assert_ne!(w.info.uid, own_device.uid, "our own device wanted");
        let account = w.jid.to_bare();
        if w.own {
            assert_eq!(&account, own);
        } else {
            let contact = social
                .contacts()
                .find(|c| c.jid == account)
                .expect("a wanted device of no contact");
            assert!(contact.is_mutual(), "{account} not a mutual friend");
            assert!(social.is_enabled(&account), "{account} switched off");
        }
        if let Some(owner) = social.owner_of(&w.info.uid) {
            assert_eq!(owner, &account, "a device proven elsewhere");
        }
    }
    for c in social.contacts() {
        assert!(c.devices.len() <= MAX_DEVICES_PER_CONTACT);
    }
}

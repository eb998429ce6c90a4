//! An XMPP server as the nodes see it: accounts with rosters, sessions, presence fan-out,
//! subscriptions and message routing (RFC 6121 as prosody and ejabberd implement it, reduced
//! to what the node consumes). Stanzas arrive after `latency`; the server can go away.

use socialvpn_core::api::Subscription;
use socialvpn_core::social::payload::DeviceInfo;
use socialvpn_core::social::state::{Outgoing, PresenceKind, RosterItem};
use socialvpn_core::xmpp::connect::LoginFailure;
use socialvpn_core::xmpp::session::{XmppInput, XmppState};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use xmpp_parsers::jid::{BareJid, FullJid, Jid};

#[derive(Clone, Copy, Default)]
struct Item {
    /// They see our presence.
    from: bool,
    /// We see theirs.
    to: bool,
    /// We asked to see theirs.
    ask: bool,
}

impl Item {
    fn subscription(self) -> Subscription {
        match (self.to, self.from) {
            (true, true) => Subscription::Both,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (false, false) => Subscription::None,
        }
    }
}

struct Session {
    node: usize,
    /// The last available presence (None: not sent yet).
    available: Option<Option<DeviceInfo>>,
}

pub struct Server {
    pub up: bool,
    rosters: HashMap<BareJid, BTreeMap<BareJid, Item>>,
    sessions: HashMap<FullJid, Session>,
    /// Deliveries in order of arrival: (when, node, input).
    pending: Vec<(Instant, usize, XmppInput)>,
    latency: Duration,
    /// Stanzas routed (for the tests' counts).
    pub routed: u64,
}

impl Server {
    pub fn new(latency: Duration) -> Server {
        Server {
            up: true,
            rosters: HashMap::new(),
            sessions: HashMap::new(),
            pending: Vec::new(),
            latency,
            routed: 0,
        }
    }

    /// Makes `a` and `b` mutual friends (as if they had befriended each other long ago).
    pub fn befriend(&mut self, a: &BareJid, b: &BareJid) {
        for (x, y) in [(a, b), (b, a)] {
            let item = self
                .rosters
                .entry(x.clone())
                .or_default()
                .entry(y.clone())
                .or_default();
            item.from = true;
            item.to = true;
        }
    }

    pub fn next_delivery(&self) -> Option<Instant> {
        self.pending.iter().map(|(at, _, _)| *at).min()
    }

    /// The deliveries due at `now`, in the order they were made.
    pub fn take_due(&mut self, now: Instant) -> Vec<(usize, XmppInput)> {
        let (due, later): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|(at, _, _)| *at <= now);
        self.pending = later;
        due.into_iter().map(|(_, n, i)| (n, i)).collect()
    }

    fn deliver(&mut self, now: Instant, node: usize, input: XmppInput) {
        self.routed += 1;
        self.pending.push((now + self.latency, node, input));
    }

    pub fn is_connected(&self, jid: &FullJid) -> bool {
        self.sessions.contains_key(jid)
    }

    /// A node logs in as `jid` (refused while the server is down).
    pub fn connect(&mut self, now: Instant, node: usize, jid: FullJid) -> bool {
        if !self.up {
            return false;
        }
        self.rosters.entry(jid.to_bare()).or_default();
        self.sessions.insert(
            jid.clone(),
            Session {
                node,
                available: None,
            },
        );
        self.deliver(
            now,
            node,
            XmppInput::State(XmppState::Online {
                jid,
                resumed: false,
            }),
        );
        true
    }

    /// A session ends (the node reconnects, or the stream broke): its contacts see it go.
    pub fn disconnect(&mut self, now: Instant, jid: &FullJid) {
        if self.sessions.remove(jid).is_some() {
            self.broadcast(now, jid, PresenceKind::Unavailable);
        }
    }

    /// The server stops (cleanly: contacts are told first, as prosody does) or crashes.
    pub fn stop(&mut self, now: Instant, clean: bool) {
        let jids: Vec<FullJid> = self.sessions.keys().cloned().collect();
        for jid in &jids {
            if clean {
                self.broadcast(now, jid, PresenceKind::Unavailable);
            }
        }
        for jid in jids {
            if let Some(s) = self.sessions.remove(&jid) {
                self.deliver(
                    now,
                    s.node,
                    XmppInput::State(XmppState::Offline {
                        reason: LoginFailure::Unreachable("connection closed".into()),
                        retry_in: Duration::from_secs(1),
                    }),
                );
            }
        }
        self.up = false;
    }

    pub fn start(&mut self) {
        self.up = true;
    }

    /// The sessions that see `jid`'s presence: contacts subscribed to its account, and the
    /// account's other resources.
    fn watchers(&self, jid: &FullJid) -> Vec<(FullJid, usize)> {
        let bare = jid.to_bare();
        let roster = self.rosters.get(&bare);
        self.sessions
            .iter()
            .filter(|(other, _)| *other != jid)
            .filter(|(other, _)| {
                other.to_bare() == bare
                    || roster
                        .and_then(|r| r.get(&other.to_bare()))
                        .is_some_and(|i| i.from)
            })
            .map(|(other, s)| (other.clone(), s.node))
            .collect()
    }

    fn broadcast(&mut self, now: Instant, from: &FullJid, kind: PresenceKind) {
        for (_, node) in self.watchers(from) {
            let input = XmppInput::Presence(Jid::from(from.clone()), kind.clone());
            self.deliver(now, node, input);
        }
    }

    fn roster_item(&self, owner: &BareJid, contact: &BareJid) -> RosterItem {
        let item = self
            .rosters
            .get(owner)
            .and_then(|r| r.get(contact))
            .copied()
            .unwrap_or_default();
        RosterItem {
            jid: contact.clone(),
            name: None,
            subscription: item.subscription(),
            pending_out: item.ask,
            removed: false,
        }
    }

    fn push(&mut self, now: Instant, owner: &BareJid, contact: &BareJid) {
        let item = self.roster_item(owner, contact);
        for node in self.nodes_of(owner) {
            self.deliver(now, node, XmppInput::RosterPush(item.clone()));
        }
    }

    fn nodes_of(&self, account: &BareJid) -> Vec<usize> {
        self.sessions
            .iter()
            .filter(|(j, _)| j.to_bare() == *account)
            .map(|(_, s)| s.node)
            .collect()
    }

    fn item_mut(&mut self, owner: &BareJid, contact: &BareJid) -> &mut Item {
        self.rosters
            .entry(owner.clone())
            .or_default()
            .entry(contact.clone())
            .or_default()
    }

    /// Sends `to`'s sessions the presence of every available session of `of`.
    fn presences_of(&mut self, now: Instant, of: &BareJid, to: &BareJid) {
        let available: Vec<(FullJid, Option<DeviceInfo>)> = self
            .sessions
            .iter()
            .filter(|(j, _)| j.to_bare() == *of)
            .filter_map(|(j, s)| s.available.map(|info| (j.clone(), info)))
            .collect();
        for node in self.nodes_of(to) {
            for (jid, info) in &available {
                let input =
                    XmppInput::Presence(Jid::from(jid.clone()), PresenceKind::Available(*info));
                self.deliver(now, node, input);
            }
        }
    }

    /// A stanza from the session `from`.
    pub fn handle(&mut self, now: Instant, from: &FullJid, stanza: Outgoing) {
        let Some(node) = self.sessions.get(from).map(|s| s.node) else {
            return; // No session (the server is down, or the node is reconnecting): lost.
        };
        let bare = from.to_bare();
        match stanza {
            Outgoing::RosterGet => {
                let items: Vec<RosterItem> = self
                    .rosters
                    .get(&bare)
                    .map(|r| r.keys().map(|c| self.roster_item(&bare, c)).collect())
                    .unwrap_or_default();
                self.deliver(now, node, XmppInput::Roster(items));
            }
            Outgoing::Announce(info) => {
                let first = self
                    .sessions
                    .get(from)
                    .is_some_and(|s| s.available.is_none());
                if let Some(s) = self.sessions.get_mut(from) {
                    s.available = Some(Some(info));
                }
                self.broadcast(now, from, PresenceKind::Available(Some(info)));
                if first {
                    // Initial presence: the server sends the presence of everyone we see.
                    let seen: Vec<BareJid> = self
                        .rosters
                        .get(&bare)
                        .map(|r| {
                            r.iter()
                                .filter(|(_, i)| i.to)
                                .map(|(c, _)| c.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    let others: Vec<(FullJid, Option<DeviceInfo>)> = self
                        .sessions
                        .iter()
                        .filter(|(j, _)| {
                            *j != from && (j.to_bare() == bare || seen.contains(&j.to_bare()))
                        })
                        .filter_map(|(j, s)| s.available.map(|i| (j.clone(), i)))
                        .collect();
                    for (jid, info) in others {
                        let input =
                            XmppInput::Presence(Jid::from(jid), PresenceKind::Available(info));
                        self.deliver(now, node, input);
                    }
                }
            }
            Outgoing::Subscribe(to) => {
                self.item_mut(&bare, &to).ask = true;
                self.push(now, &bare, &to);
                if self.item_mut(&to, &bare).from {
                    // Already allowed: the server answers for the contact.
                    self.subscribed(now, &to, &bare);
                } else {
                    for n in self.nodes_of(&to) {
                        let input =
                            XmppInput::Presence(Jid::from(bare.clone()), PresenceKind::Subscribe);
                        self.deliver(now, n, input);
                    }
                }
            }
            Outgoing::Subscribed(to) => self.subscribed(now, &bare, &to),
            Outgoing::Unsubscribed(to) => {
                self.item_mut(&bare, &to).from = false;
                let theirs = self.item_mut(&to, &bare);
                theirs.to = false;
                theirs.ask = false;
                self.push(now, &bare, &to);
                self.push(now, &to, &bare);
                for n in self.nodes_of(&to) {
                    let input =
                        XmppInput::Presence(Jid::from(bare.clone()), PresenceKind::Unsubscribed);
                    self.deliver(now, n, input);
                }
            }
            Outgoing::RosterRemove(contact) => {
                if let Some(r) = self.rosters.get_mut(&bare) {
                    r.remove(&contact);
                }
                let theirs = self.item_mut(&contact, &bare);
                theirs.to = false;
                theirs.from = false;
                theirs.ask = false;
                let removed = RosterItem {
                    removed: true,
                    ..self.roster_item(&bare, &contact)
                };
                for n in self.nodes_of(&bare) {
                    self.deliver(now, n, XmppInput::RosterPush(removed.clone()));
                }
                self.push(now, &contact, &bare);
            }
            Outgoing::Signal { to, signal, .. } => {
                if let Some(s) = self.sessions.get(&to) {
                    let n = s.node;
                    self.deliver(now, n, XmppInput::Signal(from.clone(), Ok(signal)));
                }
            }
        }
    }

    /// `owner` lets `contact` see its presence.
    fn subscribed(&mut self, now: Instant, owner: &BareJid, contact: &BareJid) {
        self.item_mut(owner, contact).from = true;
        let theirs = self.item_mut(contact, owner);
        theirs.to = true;
        theirs.ask = false;
        self.push(now, owner, contact);
        self.push(now, contact, owner);
        for n in self.nodes_of(contact) {
            let input = XmppInput::Presence(Jid::from(owner.clone()), PresenceKind::Subscribed);
            self.deliver(now, n, input);
        }
        self.presences_of(now, owner, contact);
    }
}

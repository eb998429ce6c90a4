//! The sans-IO social state: roster, presence of friends' devices, the user's toggles, and
//! the policy that decides which devices should be linked and which signals to accept.
//!
//! The XMPP shell turns stanzas into `handle_*` calls and sends what `poll_outgoing` yields;
//! user actions come in as method calls. Nothing here touches a socket or a clock of its own.

use super::payload::{DeviceInfo, Signal, SignedSignal};
use super::proof::ProofError;
use super::toggles::{Toggles, TogglesError};
pub use crate::api::Subscription;
pub use crate::counters::SocialCounters;
use crate::uid::Uid;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use xmpp_parsers::jid::{BareJid, FullJid, Jid};

/// After a reconnect, devices not re-announced within this time are taken as offline.
pub const PRESENCE_RESYNC_GRACE: Duration = Duration::from_secs(10);
/// A server that shuts down cleanly first tells every contact that everyone went offline,
/// then closes our stream. Devices that went offline this shortly before our own session
/// dropped are taken as "server going away", not "friend gone", and kept.
pub const SERVER_GOING_AWAY: Duration = Duration::from_secs(5);
/// Most recent departures remembered for that (a bound on memory, not a limit users meet).
const RECENT_DEPARTURES: usize = 1024;
/// Most online resources kept per contact (and for the user's own account): more are a
/// friend flooding presence, not devices (see also `addrbook::MAX_PER_OWNER`).
pub const MAX_DEVICES_PER_CONTACT: usize = 16;
/// An unanswered friend request is sent again after these waits. Servers drop subscription
/// stanzas beyond a rate without a word (ejabberd's default `mod_pres_counter`: 5 a minute
/// each way per session), which leaves a friendship half made; nobody else retries. The
/// first wait outlasts that minute.
pub const RESUBSCRIBE_AFTER: [Duration; 3] = [
    Duration::from_secs(65),
    Duration::from_secs(300),
    Duration::from_secs(1800),
];

/// One online resource of a contact (or of the user's own account).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub resource: String,
    /// Set when the resource runs SocialVPN.
    pub info: Option<DeviceInfo>,
    epoch: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub jid: BareJid,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// We asked to see their presence and they have not answered.
    pub pending_out: bool,
    /// They asked to see ours and the user has not accepted.
    pub pending_in: bool,
    pub devices: BTreeMap<String, Device>,
}

impl Contact {
    fn new(jid: BareJid) -> Contact {
        Contact {
            jid,
            name: None,
            subscription: Subscription::None,
            pending_out: false,
            pending_in: false,
            devices: BTreeMap::new(),
        }
    }

    pub fn is_mutual(&self) -> bool {
        self.subscription == Subscription::Both
    }

    /// We see their presence, or asked to. A server delivers a contact's presence as soon
    /// as *its* roster says we are subscribed, which can be before the `subscribed` that
    /// tells us so — or instead of it: ejabberd's default `mod_pres_counter` drops
    /// subscription stanzas past a few a minute, and the presence is never sent again.
    fn presence_asked(&self) -> bool {
        self.pending_out || matches!(self.subscription, Subscription::To | Subscription::Both)
    }
}

/// A roster item as the server reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterItem {
    pub jid: BareJid,
    pub name: Option<String>,
    pub subscription: Subscription,
    pub pending_out: bool,
    /// The server removed the item.
    pub removed: bool,
}

/// Presence as the shell parsed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceKind {
    Available(Option<DeviceInfo>),
    Unavailable,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

/// What the shell must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// Our available presence with our device announcement.
    Announce(DeviceInfo),
    RosterGet,
    Subscribe(BareJid),
    Subscribed(BareJid),
    Unsubscribed(BareJid),
    RosterRemove(BareJid),
    Signal {
        to: FullJid,
        signal: SignedSignal,
        /// As a headline message, for a device older than IQ signals.
        as_message: bool,
    },
}

/// What changed, for the UI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocialEvent {
    RosterChanged,
    /// A friend request arrived from this account.
    FriendRequest(BareJid),
}

/// A device the policy wants linked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedDevice {
    pub jid: FullJid,
    pub info: DeviceInfo,
    /// True for the user's own other devices.
    pub own: bool,
}

/// Why a signal was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalRejection {
    /// Not a mutual friend, or not in the roster at all.
    NotAFriend,
    /// A friend the user switched off.
    Disabled,
    /// The device's signal carries another key than its presence announced.
    KeyMismatch,
    /// The payload was malformed.
    Malformed,
    /// A signal from ourselves (this very device).
    FromSelf,
    /// Its proof is missing, stale or forged: not from the key holder (see `proof`).
    Unproven(ProofError),
    /// The device is proven to belong to another account.
    Conflict,
}

pub struct SocialState {
    own: BareJid,
    own_full: Option<FullJid>,
    own_device: DeviceInfo,
    contacts: BTreeMap<BareJid, Contact>,
    /// The user's other devices (same account, other resources).
    own_devices: BTreeMap<String, Device>,
    toggles: Toggles,
    epoch: u64,
    resync_at: Option<Instant>,
    /// Devices that went offline in the last moments: (when, account, device).
    departed: VecDeque<(Instant, BareJid, Device)>,
    /// Our friend requests not answered yet: when to send each again, and how often it was.
    resubscribe: BTreeMap<BareJid, (Instant, usize)>,
    /// Devices proven (by a signal only their key can make) to belong to an account.
    bound: std::collections::HashMap<Uid, BareJid>,
    outbox: VecDeque<Outgoing>,
    events: VecDeque<SocialEvent>,
    counters: SocialCounters,
}

impl SocialState {
    pub fn new(own: BareJid, own_device: DeviceInfo, toggles: Toggles) -> SocialState {
        SocialState {
            own,
            own_full: None,
            own_device,
            contacts: BTreeMap::new(),
            own_devices: BTreeMap::new(),
            toggles,
            epoch: 0,
            resync_at: None,
            departed: VecDeque::new(),
            resubscribe: BTreeMap::new(),
            bound: std::collections::HashMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            counters: SocialCounters::default(),
        }
    }

    pub fn own_jid(&self) -> &BareJid {
        &self.own
    }

    /// The full JID the session is bound to (while online or since last online).
    pub fn own_full(&self) -> Option<&FullJid> {
        self.own_full.as_ref()
    }

    pub fn counters(&self) -> SocialCounters {
        self.counters
    }

    pub fn contacts(&self) -> impl Iterator<Item = &Contact> {
        self.contacts.values()
    }

    pub fn own_devices(&self) -> impl Iterator<Item = &Device> {
        self.own_devices.values()
    }

    pub fn is_enabled(&self, jid: &BareJid) -> bool {
        self.toggles.is_enabled(jid)
    }

    /// A fresh session is online as `bound`: announce ourselves and fetch the roster.
    /// Devices known from before stay until the presence burst has had time to confirm them,
    /// so a reconnect does not tear down working links.
    pub fn handle_online(&mut self, now: Instant, bound: FullJid) {
        self.own_full = Some(bound);
        self.counters.sessions_fresh += 1;
        self.epoch += 1;
        self.resync_at = Some(now + PRESENCE_RESYNC_GRACE);
        self.departed.clear();
        self.outbox.push_back(Outgoing::RosterGet);
        self.outbox.push_back(Outgoing::Announce(self.own_device));
    }

    /// The server resumed the previous session (XEP-0198): our presence and subscriptions
    /// stayed, and what contacts sent meanwhile is delivered again, so everything known
    /// stays as it is.
    pub fn handle_resumed(&mut self, bound: FullJid) {
        self.own_full = Some(bound);
        self.counters.sessions_resumed += 1;
    }

    /// The XMPP session dropped: keep everything (links keep running without the server).
    /// Devices reported offline just before are put back: a server shutting down cleanly
    /// says so of everyone before it closes our stream.
    pub fn handle_offline(&mut self, now: Instant) {
        self.resync_at = None;
        let mut restored = false;
        while let Some((at, account, device)) = self.departed.pop_back() {
            if now.saturating_duration_since(at) > SERVER_GOING_AWAY {
                break;
            }
            let devices = if account == self.own {
                Some(&mut self.own_devices)
            } else {
                self.contacts.get_mut(&account).map(|c| &mut c.devices)
            };
            if let Some(devices) = devices {
                if let std::collections::btree_map::Entry::Vacant(e) =
                    devices.entry(device.resource.clone())
                {
                    e.insert(device);
                    restored = true;
                }
            }
        }
        self.departed.clear();
        if restored {
            self.events.push_back(SocialEvent::RosterChanged);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let resubscribe = self.resubscribe.values().map(|(at, _)| *at).min();
        [self.resync_at, resubscribe].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.resubscribe_due(now);
        if self.resync_at.is_some_and(|at| at <= now) {
            self.resync_at = None;
            let epoch = self.epoch;
            let mut changed = false;
            for contact in self.contacts.values_mut() {
                let before = contact.devices.len();
                contact.devices.retain(|_, d| d.epoch == epoch);
                changed |= before != contact.devices.len();
            }
            let before = self.own_devices.len();
            self.own_devices.retain(|_, d| d.epoch == epoch);
            if changed || before != self.own_devices.len() {
                self.events.push_back(SocialEvent::RosterChanged);
            }
        }
    }

    /// A full roster (the answer to `RosterGet`). Requests of ours still pending (from
    /// an earlier run, perhaps dropped by the server) are sent again later.
    pub fn handle_roster(&mut self, now: Instant, items: Vec<RosterItem>) {
        let keep: std::collections::HashSet<BareJid> =
            items.iter().map(|i| i.jid.clone()).collect();
        self.contacts
            .retain(|jid, c| keep.contains(jid) || c.pending_in);
        for item in items {
            if item.pending_out && !item.removed {
                self.expect_answer(now, item.jid.clone());
            }
            self.apply_item(item);
        }
        self.events.push_back(SocialEvent::RosterChanged);
    }

    /// We asked to see `jid`'s presence: send the request again unless answered in time.
    fn expect_answer(&mut self, now: Instant, jid: BareJid) {
        self.resubscribe
            .entry(jid)
            .or_insert((now + RESUBSCRIBE_AFTER[0], 0));
    }

    fn resubscribe_due(&mut self, now: Instant) {
        let due: Vec<BareJid> = self
            .resubscribe
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(jid, _)| jid.clone())
            .collect();
        for jid in due {
            let unanswered = self
                .contacts
                .get(&jid)
                .is_some_and(|c| matches!(c.subscription, Subscription::None | Subscription::From));
            let sent = self.resubscribe.get(&jid).map_or(0, |(_, n)| *n);
            match RESUBSCRIBE_AFTER.get(sent + 1) {
                Some(wait) if unanswered => {
                    self.resubscribe
                        .insert(jid.clone(), (now + *wait, sent + 1));
                }
                _ => {
                    self.resubscribe.remove(&jid);
                }
            }
            if unanswered {
                tracing::debug!(%jid, "friend request unanswered; sending it again");
                self.outbox.push_back(Outgoing::Subscribe(jid));
            }
        }
    }

    /// A roster push (already checked by the shell to come from our own account).
    pub fn handle_roster_push(&mut self, item: RosterItem) {
        self.apply_item(item);
        self.events.push_back(SocialEvent::RosterChanged);
    }

    fn apply_item(&mut self, item: RosterItem) {
        if item.jid == self.own {
            return;
        }
        if item.removed {
            self.resubscribe.remove(&item.jid);
            self.contacts.remove(&item.jid);
            return;
        }
        if matches!(item.subscription, Subscription::To | Subscription::Both) {
            self.resubscribe.remove(&item.jid);
        }
        let contact = self
            .contacts
            .entry(item.jid.clone())
            .or_insert_with(|| Contact::new(item.jid.clone()));
        contact.name = item.name;
        contact.subscription = item.subscription;
        contact.pending_out = item.pending_out;
        if matches!(item.subscription, Subscription::From | Subscription::Both) {
            contact.pending_in = false;
        }
        if !contact.presence_asked() {
            // We no longer see their presence.
            contact.devices.clear();
        }
    }

    pub fn handle_presence(&mut self, now: Instant, from: &Jid, kind: PresenceKind) {
        let bare = from.to_bare();
        let resource = from.resource().map(|r| r.to_string());
        match (kind, resource) {
            // Servers send this for contacts with no resource online (RFC 6121 4.3.2, e.g.
            // prosody as a subscription starts): nothing to remove, and nothing suspicious.
            (PresenceKind::Unavailable, None) => {}
            (PresenceKind::Available(_), None) => {
                // Device presence always comes from a full JID.
                tracing::debug!(%from, "presence ignored: from a bare JID");
                self.counters.presences_ignored += 1;
            }
            (PresenceKind::Available(info), Some(resource)) => {
                if self.own_full.is_some() && from.try_as_full().ok() == self.own_full.as_ref() {
                    return;
                }
                if let Some(claimed) = info {
                    let foreign = self.bound.get(&claimed.uid).is_some_and(|o| *o != bare);
                    if foreign || claimed.uid == self.own_device.uid {
                        self.counters.device_claims_refused += 1;
                    }
                }
                let device = Device {
                    resource: resource.clone(),
                    info,
                    epoch: self.epoch,
                };
                let devices = if bare == self.own {
                    Some(&mut self.own_devices)
                } else {
                    // Only from contacts whose presence we asked to see: anyone can send a
                    // directed presence to our full JID.
                    self.contacts
                        .get_mut(&bare)
                        .filter(|c| c.presence_asked())
                        .map(|c| &mut c.devices)
                };
                if let Some(devices) = devices {
                    if devices.len() >= MAX_DEVICES_PER_CONTACT && !devices.contains_key(&resource)
                    {
                        tracing::debug!(%from, "presence ignored: too many devices");
                        self.counters.presences_ignored += 1;
                        return;
                    }
                    devices.insert(resource, device);
                } else {
                    // Presence from someone not in the roster, or not subscribed to.
                    tracing::debug!(%from, "presence ignored: not a contact whose presence we asked for");
                    self.counters.presences_ignored += 1;
                    return;
                }
                self.events.push_back(SocialEvent::RosterChanged);
            }
            (PresenceKind::Unavailable, Some(resource)) => {
                let removed = if bare == self.own {
                    self.own_devices.remove(&resource)
                } else {
                    self.contacts
                        .get_mut(&bare)
                        .and_then(|c| c.devices.remove(&resource))
                };
                if let Some(device) = removed {
                    if self.departed.len() == RECENT_DEPARTURES {
                        self.departed.pop_front();
                    }
                    self.departed.push_back((now, bare, device));
                    self.events.push_back(SocialEvent::RosterChanged);
                }
            }
            (PresenceKind::Subscribe, _) => {
                if bare == self.own {
                    return;
                }
                if self.toggles.is_declined(&bare) {
                    // Declined once: neither asked again nor approved behind the user's back.
                    self.counters.requests_ignored += 1;
                    return;
                }
                let contact = self
                    .contacts
                    .entry(bare.clone())
                    .or_insert_with(|| Contact::new(bare.clone()));
                if contact.pending_out || contact.subscription == Subscription::To {
                    // We asked them first: their request completes the friendship.
                    self.outbox.push_back(Outgoing::Subscribed(bare));
                } else if !matches!(
                    contact.subscription,
                    Subscription::From | Subscription::Both
                ) {
                    contact.pending_in = true;
                    self.events.push_back(SocialEvent::FriendRequest(bare));
                    self.events.push_back(SocialEvent::RosterChanged);
                }
            }
            // The roster push that accompanies these carries the state; nothing more to do.
            (
                PresenceKind::Subscribed | PresenceKind::Unsubscribe | PresenceKind::Unsubscribed,
                _,
            ) => {}
        }
    }

    /// Sends a friend request. Their acceptance comes with a request of theirs, approved at
    /// once (see `handle_presence`), so one acceptance makes us mutual. No pre-approval is
    /// sent: servers limit subscription stanzas (ejabberd's default: 5 a minute each way per
    /// session), and a mutual friendship takes no more than the four RFC 6121 ones.
    pub fn add_friend(&mut self, now: Instant, jid: BareJid) -> Result<(), TogglesError> {
        if jid == self.own {
            return Ok(());
        }
        self.toggles.set_declined(&jid, false)?;
        self.outbox.push_back(Outgoing::Subscribe(jid.clone()));
        self.expect_answer(now, jid.clone());
        let contact = self
            .contacts
            .entry(jid.clone())
            .or_insert_with(|| Contact::new(jid));
        contact.pending_out = true;
        self.events.push_back(SocialEvent::RosterChanged);
        Ok(())
    }

    /// Accepts a friend request: approve theirs and ask for theirs in return.
    pub fn accept_friend(&mut self, now: Instant, jid: BareJid) -> Result<(), TogglesError> {
        self.toggles.set_declined(&jid, false)?;
        self.outbox.push_back(Outgoing::Subscribed(jid.clone()));
        self.outbox.push_back(Outgoing::Subscribe(jid.clone()));
        self.expect_answer(now, jid.clone());
        if let Some(contact) = self.contacts.get_mut(&jid) {
            contact.pending_in = false;
            contact.pending_out = true;
        }
        self.events.push_back(SocialEvent::RosterChanged);
        Ok(())
    }

    /// Declines a request; later ones from the same account are ignored (persisted) until
    /// the user adds or accepts them.
    pub fn decline_friend(&mut self, jid: BareJid) -> Result<(), TogglesError> {
        self.toggles.set_declined(&jid, true)?;
        self.outbox.push_back(Outgoing::Unsubscribed(jid.clone()));
        if let Some(contact) = self.contacts.get_mut(&jid) {
            contact.pending_in = false;
        }
        self.events.push_back(SocialEvent::RosterChanged);
        Ok(())
    }

    /// Removes the friend from the roster (the server cancels both subscriptions).
    pub fn remove_friend(&mut self, jid: BareJid) -> Result<(), TogglesError> {
        self.outbox.push_back(Outgoing::RosterRemove(jid.clone()));
        self.resubscribe.remove(&jid);
        self.contacts.remove(&jid);
        self.toggles.forget(&jid)?;
        self.events.push_back(SocialEvent::RosterChanged);
        Ok(())
    }

    /// Switches a friend on or off (persisted). Returns whether anything changed.
    pub fn set_enabled(&mut self, jid: &BareJid, on: bool) -> Result<bool, TogglesError> {
        let changed = self.toggles.set(jid, on)?;
        if changed {
            self.events.push_back(SocialEvent::RosterChanged);
        }
        Ok(changed)
    }

    /// Devices the policy wants linked: online SocialVPN devices of enabled mutual friends,
    /// and the user's own other devices. One entry per device: a device proven to belong to
    /// an account (see [`SocialState::authorize_signal`]) is wanted only as that account's;
    /// one that nobody has proven yet, announced by several accounts, as the user's own
    /// first, else the first friend's (only its key holder can answer).
    pub fn wanted_devices(&self) -> Vec<WantedDevice> {
        let own = self.own_devices.values().map(|d| (&self.own, d, true));
        let friends = self
            .contacts
            .values()
            .filter(|c| c.is_mutual() && self.toggles.is_enabled(&c.jid))
            .flat_map(|c| c.devices.values().map(move |d| (&c.jid, d, false)));
        let claims: Vec<(&BareJid, &Device, bool)> = own.chain(friends).collect();
        let mut out = Vec::new();
        let mut taken = std::collections::HashSet::new();
        for proven_pass in [true, false] {
            for (account, device, own) in &claims {
                let Some(info) = device.info else { continue };
                if info.uid == self.own_device.uid {
                    continue;
                }
                let wanted_here = match self.bound.get(&info.uid) {
                    Some(owner) => proven_pass && owner == *account,
                    None => !proven_pass,
                };
                if !wanted_here || !taken.insert(info.uid) {
                    continue;
                }
                if let Ok(jid) = account.with_resource_str(&device.resource) {
                    out.push(WantedDevice {
                        jid,
                        info,
                        own: *own,
                    });
                }
            }
        }
        out
    }

    /// The account a device has proven to belong to, if any.
    pub fn owner_of(&self, uid: &Uid) -> Option<&BareJid> {
        self.bound.get(uid)
    }

    /// Decides whether a signal from `from` may be acted upon: the sender is an enabled
    /// mutual friend (or our own account), its resource announced this key, `prove` accepts
    /// the signal's proof (only the key holder can make one), and the device is not proven
    /// to belong to another account. The first proven signal binds the device to the
    /// sender's account for the rest of the run. Ok(true) for one of the user's own devices.
    pub fn authorize_signal(
        &mut self,
        from: &FullJid,
        signal: &Signal,
        prove: impl FnOnce() -> Result<(), ProofError>,
    ) -> Result<bool, SignalRejection> {
        let result = self.check_signal(from, signal).and_then(|own| {
            prove().map_err(SignalRejection::Unproven)?;
            let account = from.to_bare();
            match self.bound.get(&signal.from.uid) {
                Some(owner) if *owner != account => Err(SignalRejection::Conflict),
                Some(_) => Ok(own),
                None => {
                    self.bound.insert(signal.from.uid, account);
                    Ok(own)
                }
            }
        });
        match result {
            Ok(_) => self.counters.signals_accepted += 1,
            Err(_) => self.counters.signals_rejected += 1,
        }
        result
    }

    /// Counts a device refused an overlay address.
    pub fn count_address_refused(&mut self) {
        self.counters.addresses_refused += 1;
    }

    /// Counts a signal whose payload did not parse.
    pub fn count_malformed_signal(&mut self) {
        self.counters.signals_rejected += 1;
    }

    /// The checks that need no cryptography: who sends, and with which announced key.
    fn check_signal(&self, from: &FullJid, signal: &Signal) -> Result<bool, SignalRejection> {
        if signal.from.uid == self.own_device.uid {
            return Err(SignalRejection::FromSelf);
        }
        let bare = from.to_bare();
        let resource = from.resource().as_str();
        let announced = if bare == self.own {
            self.own_devices.get(resource).and_then(|d| d.info)
        } else {
            let contact = self
                .contacts
                .get(&bare)
                .ok_or(SignalRejection::NotAFriend)?;
            if !contact.is_mutual() {
                return Err(SignalRejection::NotAFriend);
            }
            if !self.toggles.is_enabled(&bare) {
                return Err(SignalRejection::Disabled);
            }
            contact.devices.get(resource).and_then(|d| d.info)
        };
        // The sending resource must have announced exactly this key in its presence.
        match announced {
            Some(a) if a.public_key == signal.from.public_key => Ok(bare == self.own),
            _ => Err(SignalRejection::KeyMismatch),
        }
    }

    pub fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SocialEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;

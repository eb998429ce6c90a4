//! The attacker of the social world: a scripted XMPP client and a raw UDP sender, both run
//! inside a namespace of the world.
//!
//! [`XmppAttacker`] logs in as any account of the world with core's own login (STARTTLS
//! against the world's CA, SCRAM) and sends exactly what a test scripts: presence carrying
//! any `<device/>` element (a copy of another device's, or fresh keys by the hundred),
//! subscription presences, link signals with any proof (none, a wrong one, a stale one, one
//! captured elsewhere), forged roster pushes, or any other stanza. It keeps what it receives
//! (signals addressed to it, presences, IQ results), so that a test can replay a victim's
//! signals. It does nothing on its own: no reconnection, no stream management, no answers
//! beyond the IQ housekeeping a server expects.
//!
//! [`Forger`] is a device key the attacker really holds, to sign with; [`stun`] builds STUN
//! messages by hand and [`send_udp`] sends datagrams from inside a namespace. [`cpu_seconds`]
//! and [`pid_with_arg`] measure the victim process.
//!
//! Every loop here is bounded in count and time; the client's thread ends when its handle is
//! dropped (the session is closed first, at most a few seconds).

use crate::netns::Namespace;
use crate::social_world::SocialWorld;
use futures::StreamExt;
use socialvpn_core::social::payload::{DeviceInfo, DeviceWire, SignalWire, NS_LINK};
use socialvpn_core::xmpp::connect::{login, tls_config, TlsTrust, XmppAccount};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::stanzastream::{
    Connection, Event, StanzaStage, StanzaState, StanzaStream, StreamEvent,
};
use tokio_xmpp::xmlstream::Timeouts;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::presence::{self, Presence};
use xmpp_parsers::roster::{self, Roster};
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

/// Longest a login (TCP, TLS, SASL, resource binding) may take.
const LOGIN_WITHIN: Duration = Duration::from_secs(20);
/// Longest one batch of stanzas may take to be written out (ejabberd's shaper reads 3 KB/s
/// from a client once its 20 KB burst is used up).
const SEND_WITHIN: Duration = Duration::from_secs(90);
/// Longest the answer to an IQ of ours may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// How long closing a session may take before its thread is left behind.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// Stanzas buffered each way in the stream.
const QUEUE_DEPTH: usize = 64;
/// Most stanzas one command sends, and most keys one flood mints.
pub const MAX_BATCH: usize = 2_000;
/// Most received signals and presences kept (the oldest go first).
const INBOX_LIMIT: usize = 4_096;

/// A signal received by the attacker: who sent it, and its wire form (to replay as it is).
#[derive(Clone, Debug)]
pub struct Received {
    pub from: FullJid,
    pub wire: SignalWire,
}

#[derive(Default)]
struct Inbox {
    signals: VecDeque<Received>,
    presences: VecDeque<Presence>,
    /// Answers to our IQs by id: the payload of a result, or the error.
    answers: HashMap<String, Result<Option<Element>, String>>,
    /// The stream broke (the server closed it, or the connection was lost).
    lost: bool,
}

enum Command {
    /// Send these stanzas in order; answer with how many were written out in time.
    Send(Vec<Stanza>, std::sync::mpsc::Sender<usize>),
    /// Go unavailable and close the stream.
    Close(std::sync::mpsc::Sender<()>),
}

/// One scripted XMPP session (one account, one resource) inside a namespace of the world.
pub struct XmppAttacker {
    jid: FullJid,
    commands: mpsc::UnboundedSender<Command>,
    inbox: Arc<Mutex<Inbox>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(inbox: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    // Plain data: a panic elsewhere cannot leave it inconsistent.
    inbox
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl XmppAttacker {
    /// Logs in as `user@DOMAIN/resource` with the password "pw-USER" (the convention of
    /// `social_nodes::world_with_users`) from inside `host`'s namespace. Panics if the
    /// login fails.
    pub fn login(w: &SocialWorld, host: &str, user: &str, resource: &str) -> XmppAttacker {
        Self::login_with_password(w, host, user, &format!("pw-{user}"), resource)
    }

    pub fn login_with_password(
        w: &SocialWorld,
        host: &str,
        user: &str,
        password: &str,
        resource: &str,
    ) -> XmppAttacker {
        Self::try_login(w, w.host(host), user, password, resource)
            .unwrap_or_else(|e| panic!("{user}/{resource} could not log in from {host}: {e}"))
    }

    /// Logs in from inside `ns`; the error says why not.
    pub fn try_login(
        w: &SocialWorld,
        ns: &Namespace,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Result<XmppAttacker, String> {
        let bare: BareJid = format!("{user}@{}", w.domain())
            .parse()
            .map_err(|e| format!("bad JID for {user}: {e}"))?;
        let account = XmppAccount {
            jid: bare,
            credentials: socialvpn_core::config::Credentials::Password(password.to_string()),
            resource: resource.to_string(),
            server: Some((w.xmpp_addr().ip().to_string(), w.xmpp_addr().port())),
            trust: TlsTrust::CaFile(w.ca_cert_path()),
            dns: Default::default(),
            protect: None,
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let thread_inbox = Arc::clone(&inbox);
        let thread = ns.run(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(session(account, commands_rx, thread_inbox, ready_tx));
        });
        match ready_rx.recv_timeout(LOGIN_WITHIN + Duration::from_secs(5)) {
            Ok(Ok(jid)) => Ok(XmppAttacker {
                jid,
                commands,
                inbox,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            // The session gives up by itself within LOGIN_WITHIN; its thread is left to end.
            Err(_) => Err("no answer from the attacker's thread".into()),
        }
    }

    /// The full JID the server bound.
    pub fn jid(&self) -> &FullJid {
        &self.jid
    }

    pub fn bare(&self) -> BareJid {
        self.jid.to_bare()
    }

    /// Sends `stanzas` in order and waits until they are written out (at most
    /// [`SEND_WITHIN`]); returns how many were. Panics beyond [`MAX_BATCH`] stanzas.
    pub fn send(&self, stanzas: Vec<Stanza>) -> usize {
        assert!(
            stanzas.len() <= MAX_BATCH,
            "{} stanzas in one batch (at most {MAX_BATCH})",
            stanzas.len()
        );
        let (done, answer) = std::sync::mpsc::channel();
        if self.commands.send(Command::Send(stanzas, done)).is_err() {
            return 0;
        }
        answer
            .recv_timeout(SEND_WITHIN + Duration::from_secs(5))
            .unwrap_or(0)
    }

    /// Sends one stanza; panics if it could not be written out.
    pub fn send_one(&self, stanza: impl Into<Stanza>) {
        assert_eq!(
            self.send(vec![stanza.into()]),
            1,
            "{}: stanza not sent",
            self.jid
        );
    }

    /// Available presence carrying `device` (any announcement: ours, a copy, a forged one),
    /// or no device at all. Broadcast by the server to everyone who sees our presence.
    pub fn announce(&self, device: Option<DeviceWire>) {
        self.send_one(available(device));
    }

    /// Available presence with `device` sent straight to one full JID (directed presence:
    /// needs no subscription).
    pub fn announce_to(&self, to: &FullJid, device: Option<DeviceWire>) {
        self.send_one(available(device).with_to(Jid::from(to.clone())));
    }

    /// Unavailable presence (the session stays open).
    pub fn go_offline(&self) {
        self.send_one(Presence::new(presence::Type::Unavailable));
    }

    /// A subscription presence (`Subscribe`, `Subscribed`, `Unsubscribe`, `Unsubscribed`)
    /// to `to`.
    pub fn subscription(&self, to: &BareJid, kind: presence::Type) {
        self.send_one(Presence::new(kind).with_to(Jid::from(to.clone())));
    }

    /// An IQ set to `to` carrying `wire` as a link signal, as SocialVPN sends them.
    pub fn signal(&self, to: &FullJid, wire: SignalWire) {
        self.send_one(signal_iq(to, wire));
    }

    /// Several signals to `to`, written out in order; returns how many went.
    pub fn signals(&self, to: &FullJid, wires: Vec<SignalWire>) -> usize {
        let stanzas = wires.into_iter().map(|w| signal_iq(to, w).into()).collect();
        self.send(stanzas)
    }

    /// A roster push (an IQ set of the roster namespace) sent to another user's device, as
    /// if from its server: `item` added with `subscription`.
    pub fn forged_roster_push(
        &self,
        to: &FullJid,
        item: BareJid,
        subscription: roster::Subscription,
    ) {
        let push = Roster {
            ver: None,
            items: vec![roster::Item {
                jid: item,
                name: None,
                subscription,
                ask: roster::Ask::None,
                groups: vec![],
                approved: None,
            }],
        };
        let id = format!("atk-push-{:016x}", random_u64());
        self.send_one(Iq::from_set(id, push).with_to(Jid::from(to.clone())));
    }

    /// Announces `count` freshly minted device keys one after the other from this resource
    /// (each presence replaces the last); returns them in the order sent. Panics if they
    /// could not all be written out within [`SEND_WITHIN`].
    pub fn flood_fresh_devices(&self, count: usize) -> Vec<DeviceInfo> {
        let devices: Vec<DeviceInfo> = (0..count).map(|_| fresh_device()).collect();
        let stanzas = devices
            .iter()
            .map(|d| available(Some(d.to_wire())).into())
            .collect();
        let sent = self.send(stanzas);
        assert_eq!(sent, count, "{}: flood not written out", self.jid);
        devices
    }

    /// Our roster as the server holds it (an IQ get).
    pub fn roster(&self) -> Result<Vec<roster::Item>, String> {
        let id = format!("atk-roster-{:016x}", random_u64());
        let get = Iq::from_get(
            id.clone(),
            Roster {
                ver: None,
                items: vec![],
            },
        );
        self.send_one(get);
        let payload = self.answer(&id, ANSWER_WITHIN)?;
        let element = payload.ok_or("empty roster result")?;
        Roster::try_from(element)
            .map(|r| r.items)
            .map_err(|e| format!("bad roster: {e}"))
    }

    /// The answer to our IQ `id` (its payload, or the error), waiting at most `within`.
    pub fn answer(&self, id: &str, within: Duration) -> Result<Option<Element>, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(answer) = lock(&self.inbox).answers.remove(id) {
                return answer;
            }
            if Instant::now() >= deadline {
                return Err(format!("no answer to {id} within {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The signals received so far (addressed to this resource).
    pub fn signals_received(&self) -> Vec<Received> {
        lock(&self.inbox).signals.iter().cloned().collect()
    }

    /// Waits (at most `within`) for a received signal `pred` accepts.
    pub fn wait_signal(
        &self,
        within: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = lock(&self.inbox).signals.iter().find(|r| pred(r)) {
                return Some(found.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most `within`) for a received presence `pred` accepts.
    pub fn wait_presence(
        &self,
        within: Duration,
        pred: impl Fn(&Presence) -> bool,
    ) -> Option<Presence> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = lock(&self.inbox).presences.iter().find(|p| pred(p)) {
                return Some(found.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server closed the stream or the connection was lost.
    pub fn is_lost(&self) -> bool {
        lock(&self.inbox).lost
    }

    /// Goes unavailable, closes the stream and ends the thread (what dropping does).
    pub fn close(self) {}
}

impl Drop for XmppAttacker {
    fn drop(&mut self) {
        let (done, closed) = std::sync::mpsc::channel();
        if self.commands.send(Command::Close(done)).is_ok() {
            let _ = closed.recv_timeout(CLOSE_WITHIN);
        }
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + CLOSE_WITHIN;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
            // Otherwise it is left behind: it holds nothing but a socket in the namespace.
        }
    }
}

fn available(device: Option<DeviceWire>) -> Presence {
    match device {
        Some(device) => Presence::available().with_payload(device),
        None => Presence::available(),
    }
}

/// Logs in and hands the stream its one connection: no stream management, so a lost
/// connection ends the session instead of being resumed, and no reconnection.
async fn connect(account: &XmppAccount) -> Result<StanzaStream, String> {
    let tls = tls_config(&account.trust).map_err(|e| e.to_string())?;
    let mut connection = login(account, tls, Timeouts::tight(), &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    connection.features.stream_management = None;
    let mut first = Some(connection);
    // Later requests for a connection are parked, not dropped: a dropped slot makes the
    // stream's worker panic; a parked one leaves the stream waiting until it is closed.
    let mut parked: Vec<oneshot::Sender<Connection>> = Vec::new();
    let connector = Box::new(
        move |_: Option<String>, slot: oneshot::Sender<Connection>| match first.take() {
            Some(connection) => {
                let _ = slot.send(connection);
            }
            None => parked.push(slot),
        },
    );
    Ok(StanzaStream::new(connector, QUEUE_DEPTH))
}

async fn session(
    account: XmppAccount,
    mut commands: mpsc::UnboundedReceiver<Command>,
    inbox: Arc<Mutex<Inbox>>,
    ready: std::sync::mpsc::Sender<Result<FullJid, String>>,
) {
    let mut stream = match tokio::time::timeout(LOGIN_WITHIN, connect(&account)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let _ = ready.send(Err(e));
            return;
        }
        Err(_) => {
            let _ = ready.send(Err(format!("login took longer than {LOGIN_WITHIN:?}")));
            return;
        }
    };
    let bound = tokio::time::timeout(LOGIN_WITHIN, async {
        while let Some(event) = stream.next().await {
            match event {
                Event::Stream(StreamEvent::Reset { bound_jid, .. }) => {
                    return bound_jid.try_into_full().ok();
                }
                Event::Stream(_) => {}
                Event::Stanza(stanza) => handle(&stream, stanza, &inbox).await,
            }
        }
        None
    })
    .await;
    let jid = match bound {
        Ok(Some(jid)) => jid,
        Ok(None) => {
            let _ = ready.send(Err("the stream ended before a resource was bound".into()));
            return;
        }
        Err(_) => {
            let _ = ready.send(Err("no resource bound in time".into()));
            let _ = tokio::time::timeout(CLOSE_WITHIN, stream.close()).await;
            return;
        }
    };
    if ready.send(Ok(jid)).is_err() {
        let _ = tokio::time::timeout(CLOSE_WITHIN, stream.close()).await;
        return;
    }
    let mut closed: Option<std::sync::mpsc::Sender<()>> = None;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Send(stanzas, done)) => {
                    // A lost stream is never reconnected: nothing would go out.
                    let sent = if lock(&inbox).lost { 0 } else { send_all(&stream, stanzas).await };
                    let _ = done.send(sent);
                }
                Some(Command::Close(done)) => {
                    closed = Some(done);
                    break;
                }
                None => break,
            },
            event = stream.next() => match event {
                Some(Event::Stanza(stanza)) => handle(&stream, stanza, &inbox).await,
                Some(Event::Stream(StreamEvent::Suspended)) => lock(&inbox).lost = true,
                Some(Event::Stream(_)) => {}
                None => {
                    lock(&inbox).lost = true;
                    break;
                }
            },
        }
    }
    if !lock(&inbox).lost {
        let unavailable = Presence::new(presence::Type::Unavailable);
        let mut token = stream.send(Box::new(unavailable.into())).await;
        let _ =
            tokio::time::timeout(Duration::from_secs(2), token.wait_for(StanzaStage::Sent)).await;
    }
    let _ = tokio::time::timeout(CLOSE_WITHIN, stream.close()).await;
    if let Some(done) = closed {
        let _ = done.send(());
    }
}

/// Queues every stanza, then waits until each is written out; returns how many were.
async fn send_all(stream: &StanzaStream, stanzas: Vec<Stanza>) -> usize {
    let deadline = tokio::time::Instant::now() + SEND_WITHIN;
    let mut tokens = Vec::with_capacity(stanzas.len());
    for stanza in stanzas {
        match tokio::time::timeout_at(deadline, stream.send(Box::new(stanza))).await {
            Ok(token) => tokens.push(token),
            Err(_) => break,
        }
    }
    let mut sent = 0;
    for mut token in tokens {
        let state = tokio::time::timeout_at(deadline, token.wait_for(StanzaStage::Sent)).await;
        if matches!(
            state,
            Ok(Some(StanzaState::Sent { .. } | StanzaState::Acked { .. }))
        ) {
            sent += 1;
        }
    }
    sent
}

/// A link signal as SocialVPN sends it: an IQ set to the device's full JID.
fn signal_iq(to: &FullJid, wire: SignalWire) -> Iq {
    Iq::Set {
        from: None,
        to: Some(Jid::from(to.clone())),
        id: format!("attacker-link-{:016x}", forge::random_u64()),
        payload: wire.into(),
    }
}

/// Keeps a signal that reached this session (the server delivers to us only what is
/// addressed to us or our bare JID); the oldest go when the inbox is full.
fn keep_signal(inbox: &Mutex<Inbox>, from: FullJid, payload: Element) {
    if !payload.is("link", NS_LINK) {
        return;
    }
    if let Ok(wire) = SignalWire::try_from(payload) {
        let mut inbox = lock(inbox);
        if inbox.signals.len() == INBOX_LIMIT {
            inbox.signals.pop_front();
        }
        inbox.signals.push_back(Received { from, wire });
    }
}

/// Keeps what arrives and answers the IQs a server expects answered.
async fn handle(stream: &StanzaStream, stanza: Stanza, inbox: &Mutex<Inbox>) {
    match stanza {
        Stanza::Message(message) => {
            let Some(Ok(from)) = message.from.clone().map(Jid::try_into_full) else {
                return;
            };
            for payload in message.payloads {
                keep_signal(inbox, from.clone(), payload);
            }
        }
        Stanza::Presence(presence) => {
            let mut inbox = lock(inbox);
            if inbox.presences.len() == INBOX_LIMIT {
                inbox.presences.pop_front();
            }
            inbox.presences.push_back(presence);
        }
        Stanza::Iq(iq) => match iq {
            Iq::Result { id, payload, .. } => {
                lock(inbox).answers.insert(id, Ok(payload));
            }
            Iq::Error { id, error, .. } => {
                lock(inbox)
                    .answers
                    .insert(id, Err(format!("{:?}", error.defined_condition)));
            }
            Iq::Get {
                from, id, payload, ..
            } if payload.is("ping", xmpp_parsers::ns::PING) => reply(stream, from, id, true).await,
            // Link signals, as SocialVPN sends them: kept and acknowledged.
            Iq::Set {
                from: Some(from),
                id,
                payload,
                ..
            } if payload.is("link", NS_LINK) => {
                if let Ok(sender) = from.clone().try_into_full() {
                    keep_signal(inbox, sender, payload);
                }
                reply(stream, Some(from), id, true).await;
            }
            // Our own server's roster pushes: acknowledged.
            Iq::Set {
                from, id, payload, ..
            } if payload.is("query", xmpp_parsers::ns::ROSTER) => {
                reply(stream, from, id, true).await;
            }
            Iq::Get { from, id, .. } | Iq::Set { from, id, .. } => {
                reply(stream, from, id, false).await;
            }
        },
    }
}

async fn reply(stream: &StanzaStream, to: Option<Jid>, id: String, ok: bool) {
    let iq = if ok {
        Iq::Result {
            from: None,
            to,
            id,
            payload: None,
        }
    } else {
        let error = StanzaError::new(
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            "en",
            "",
        );
        let mut iq = Iq::from_error(id, error);
        if let Iq::Error { to: ref mut t, .. } = iq {
            *t = to;
        }
        iq
    };
    let _token = stream.send(Box::new(iq.into())).await;
}

/// How long setting up a friendship may take.
const SETUP_WITHIN: Duration = Duration::from_secs(20);

/// Makes `a` and `b` (registered with the password "pw-USER") mutual friends by scripting
/// both sides from `host` with fresh sessions: the four stanzas of RFC 6121, each side's
/// session sending two and receiving two, so that no server's limit on subscription
/// stanzas (ejabberd's `mod_pres_counter`: 5 a minute per session and direction) comes into
/// play. Meant for before the accounts' nodes run (their sessions would see the requests).
pub fn make_friends(w: &SocialWorld, host: &str, a: &str, b: &str) {
    let sa = XmppAttacker::login(w, host, a, &format!("setup-{b}"));
    let sb = XmppAttacker::login(w, host, b, &format!("setup-{a}"));
    // Only available resources are handed subscription requests.
    sa.announce(None);
    sb.announce(None);
    sa.subscription(&sb.bare(), presence::Type::Subscribe);
    wait_request(&sb, &sa.bare(), presence::Type::Subscribe);
    sb.subscription(&sa.bare(), presence::Type::Subscribed);
    sb.subscription(&sa.bare(), presence::Type::Subscribe);
    wait_request(&sa, &sb.bare(), presence::Type::Subscribe);
    sa.subscription(&sb.bare(), presence::Type::Subscribed);
    wait_subscription(&sa, &sb.bare(), roster::Subscription::Both);
    wait_subscription(&sb, &sa.bare(), roster::Subscription::Both);
}

/// One-way contact: `follower` sees `followed`'s presence (the follower's roster says `to`,
/// the followed's `from`), and the followed does not see the follower's.
pub fn follow(w: &SocialWorld, host: &str, follower: &str, followed: &str) {
    let sa = XmppAttacker::login(w, host, follower, &format!("setup-{followed}"));
    let sb = XmppAttacker::login(w, host, followed, &format!("setup-{follower}"));
    sa.announce(None);
    sb.announce(None);
    sa.subscription(&sb.bare(), presence::Type::Subscribe);
    wait_request(&sb, &sa.bare(), presence::Type::Subscribe);
    sb.subscription(&sa.bare(), presence::Type::Subscribed);
    wait_subscription(&sa, &sb.bare(), roster::Subscription::To);
    wait_subscription(&sb, &sa.bare(), roster::Subscription::From);
}

fn wait_request(at: &XmppAttacker, from: &BareJid, kind: presence::Type) {
    let found = at.wait_presence(SETUP_WITHIN, |p| {
        p.type_ == kind && p.from.as_ref().is_some_and(|f| f.to_bare() == *from)
    });
    assert!(
        found.is_some(),
        "{} never received {kind:?} from {from}",
        at.jid()
    );
}

fn wait_subscription(at: &XmppAttacker, contact: &BareJid, wanted: roster::Subscription) {
    let deadline = Instant::now() + SETUP_WITHIN;
    loop {
        let items = at.roster().unwrap_or_default();
        let now = items
            .iter()
            .find(|i| i.jid == *contact)
            .map(|i| i.subscription.clone());
        if now.as_ref() == Some(&wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: subscription with {contact} is {now:?}, not {wanted:?}",
            at.jid()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub mod forge;
pub use forge::*;
pub mod net;
pub use net::{cpu_seconds, in_world, pid_with_arg, send_udp};
pub mod stun;

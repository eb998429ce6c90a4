//! The XMPP session task: keeps one login alive (reconnecting with back-off), hands the
//! engine [`XmppInput`]s and sends its [`Outgoing`] (both translated in `stanzas.rs`), asks
//! for STUN/TURN services again before their credentials expire, and tells the server the
//! client's state (`csi.rs`).

use super::connect::{login, tls_config, LoginFailure, XmppAccount};
use super::csi::ClientIndicator;
use super::extdisco;
use super::stanzas::{ask_for_services, handle_stanza, ping_server, to_stanza, Requests};
use crate::links::servers::IceServers;
use crate::social::payload::{PayloadError, SignedSignal};
use crate::social::state::{Outgoing, PresenceKind, RosterItem};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_xmpp::stanzastream::{Connection, Event, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::Timeouts;
use xmpp_parsers::jid::{FullJid, Jid};
use xmpp_parsers::presence::{self, Presence};

/// First and longest wait between login attempts. The cap bounds how long a device stays
/// offline after its server comes back (at most this, plus the login) while keeping an
/// outage to a few attempts a minute (0, 1, 3, 7, 15, 35, 55 s).
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(20);
/// A session online at least this long proves the login works: the next reconnection after
/// it is attempted at once. Shorter sessions (kicked out, refused resumption, a server that
/// closes right after login) count as failed attempts and back off.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// After a password that worked earlier in this session is refused (the server may have
/// lost its data in a crash, or the password changed elsewhere): try again this rarely,
/// well under fail2ban-style limits.
const REFUSED_AGAIN_RETRY: Duration = Duration::from_secs(600);
/// A login attempt (every server target in turn, TLS, SASL) that takes longer is abandoned
/// (a captive portal can accept TCP and then stall); each target has its own, shorter bound.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Stanzas buffered each way.
const QUEUE_DEPTH: usize = 32;

/// The stream's own liveness check (tokio-xmpp): after this long without data from the server
/// it pings (or asks for a stream-management ack), and gives the connection up when nothing
/// comes within the response time. The node pings on its idle grid every 100 s (its
/// `XMPP_KEEPALIVE`), and the answers count as data: while the server answers,
/// this never trips, and when it stops, the connection is given up 125 s after the last
/// answer at most. (With tokio-xmpp's own 60-s ping instead, every ping and its tokio timer
/// were wake-ups of their own, off the grid.)
const STREAM_TIMEOUTS: Timeouts = Timeouts {
    read_timeout: Duration::from_secs(110),
    response_timeout: Duration::from_secs(15),
};

/// Connection state reported upward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XmppState {
    Connecting,
    /// Online as `jid`. `resumed`: the server kept the previous session (XEP-0198): our
    /// presence, the roster and the presence of contacts carry on, and stanzas lost in
    /// the cut are sent again.
    Online {
        jid: FullJid,
        resumed: bool,
    },
    /// Not connected; a new attempt follows after `retry_in`.
    Offline {
        reason: LoginFailure,
        retry_in: Duration,
    },
    /// The server refused the credentials. No retry until the account changes, unless
    /// they worked earlier in this session (then rarely, see `REFUSED_AGAIN_RETRY`).
    AuthFailed,
    /// The server refused the sign-in token. Never retried: a token does not come back to
    /// life; the app asks the user to sign in again.
    TokenRejected,
}

/// What the session hands the engine.
#[derive(Clone, Debug, PartialEq)]
pub enum XmppInput {
    State(XmppState),
    Roster(Vec<RosterItem>),
    RosterPush(RosterItem),
    Presence(Jid, PresenceKind),
    Signal(FullJid, Result<SignedSignal, PayloadError>),
    /// STUN/TURN servers the XMPP server offers (XEP-0215), resolved; sent again with new
    /// credentials before the old ones expire.
    ExternalServices(IceServers),
}

/// Handle to the running session task.
pub struct XmppSession {
    /// Unbounded: presence and roster requests must never be dropped; the engine sends
    /// signals only while online, so the queue stays short.
    outgoing: mpsc::UnboundedSender<Outgoing>,
    stop: Arc<Stop>,
    reconnect: Arc<Notify>,
    /// The client state the server is told (XEP-0352), and the nudge that sends a change.
    indicator: ClientIndicator,
    /// Pings the server (XEP-0199): to flush a client-state change, or to keep the stream
    /// alive.
    activity: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// How the connections handed to the stream fared, shared by the session loop and the
/// reconnector. Two back-offs: failed logins (the server unreachable) and connections that
/// logged in but did not last (a refused resumption, being kicked out, a server closing
/// right after login): neither can loop fast, and a server that is back is used at once.
#[derive(Debug, Default)]
struct Pacing {
    /// Failed login attempts since the last successful one.
    attempts: u32,
    /// Connections that logged in but did not stay online for `STABLE_AFTER`, in a row.
    short_lived: u32,
    /// When the current connection came online (None: not online since it was handed out).
    online_since: Option<std::time::Instant>,
    /// A connection was handed out and the stream has not come online on it.
    handed_out: bool,
    /// The credentials were accepted at least once.
    ever_online: bool,
}

impl Pacing {
    /// The wait before a retry after `failures` failures in a row (0: at once).
    fn delay(failures: u32) -> Duration {
        match failures {
            0 => Duration::ZERO,
            n => BACKOFF_START
                .saturating_mul(1 << (n - 1).min(16))
                .min(BACKOFF_MAX),
        }
    }

    /// A reconnection starts. Returns the wait before its first attempt, and whether stream
    /// management must be left out of the next connection (resuming just failed).
    fn reconnecting(&mut self, now: std::time::Instant) -> (Duration, bool) {
        let lived = self.online_since.map(|t| now.saturating_duration_since(t));
        let handed_out = self.handed_out;
        self.online_since = None;
        self.handed_out = false;
        if lived.is_some_and(|l| l >= STABLE_AFTER) {
            self.short_lived = 0;
            return (Duration::ZERO, false);
        }
        if !handed_out && lived.is_none() {
            // The first connection of a stream.
            return (Pacing::delay(self.attempts), false);
        }
        self.short_lived += 1;
        // The stream dropped a connection before it came online on it: most likely the
        // server refused to resume the old session (ejabberd and prosody answer with a
        // `<failed/>` tokio-xmpp cannot parse, and it keeps the old state to resume with).
        (Pacing::delay(self.short_lived), lived.is_none())
    }

    /// A new network: the next attempt goes out at once, whatever failed before.
    fn network_changed(&mut self) {
        *self = Pacing {
            ever_online: self.ever_online,
            ..Pacing::default()
        };
    }

    fn online(&mut self, now: std::time::Instant) {
        self.online_since = Some(now);
        self.handed_out = false;
        self.ever_online = true;
    }
}

#[derive(Default)]
struct Stop {
    flag: AtomicBool,
    notify: Notify,
}

impl Stop {
    fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            if self.flag.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

impl XmppSession {
    /// Starts logging in; inputs arrive on the returned receiver.
    pub fn spawn(account: XmppAccount) -> (XmppSession, mpsc::Receiver<XmppInput>) {
        let (input_tx, input_rx) = mpsc::channel(QUEUE_DEPTH * 4);
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let stop = Arc::new(Stop::default());
        let reconnect = Arc::new(Notify::new());
        let indicator = ClientIndicator::new();
        let activity = Arc::new(Notify::new());
        let task = tokio::spawn(run(
            account,
            input_tx,
            outgoing_rx,
            Signals {
                stop: Arc::clone(&stop),
                reconnect: Arc::clone(&reconnect),
                activity: Arc::clone(&activity),
            },
            indicator.clone(),
        ));
        (
            XmppSession {
                outgoing,
                stop,
                reconnect,
                indicator,
                activity,
                task,
            },
            input_rx,
        )
    }

    /// Drops the current connection and logs in again at once (the network changed: the old
    /// TCP connection may be dead without knowing it).
    pub fn reconnect(&self) {
        self.reconnect.notify_one();
    }

    /// Whether the app's screens are shown: the server is told (XEP-0352 client state
    /// indication, when it offers it) and may hold presence updates while they are not.
    /// Link signals are IQs, which servers deliver at once either way.
    pub fn set_active(&self, active: bool) {
        if self.indicator.set_active(active) {
            self.activity.notify_one();
        }
    }

    /// Pings the server now (if online): the node keeps the stream alive on its idle grid,
    /// so the TCP connection's NAT binding and the server's liveness are checked in the
    /// wake-up the links' keepalives share (see [`STREAM_TIMEOUTS`]).
    pub fn keep_alive(&self) {
        self.activity.notify_one();
    }

    /// Queues a stanza to send (dropped with a debug log if the session is gone).
    pub fn send(&self, out: Outgoing) {
        if self.outgoing.send(out).is_err() {
            tracing::debug!("XMPP session gone; stanza dropped");
        }
    }

    /// Sends unavailable presence if online and ends the session.
    pub async fn shutdown(self) {
        self.stop.stop();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}

/// What the handle tells the session task besides stanzas.
struct Signals {
    stop: Arc<Stop>,
    reconnect: Arc<Notify>,
    /// The client state changed (see `XmppSession::set_active`).
    activity: Arc<Notify>,
}

async fn run(
    account: XmppAccount,
    inputs: mpsc::Sender<XmppInput>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    signals: Signals,
    indicator: ClientIndicator,
) {
    let Signals {
        stop,
        reconnect,
        activity,
    } = signals;
    let tls = match tls_config(&account.trust) {
        Ok(tls) => tls,
        Err(problem) => {
            let reason = LoginFailure::Certificate(problem);
            let _ = inputs
                .send(XmppInput::State(XmppState::Offline {
                    reason,
                    retry_in: Duration::MAX,
                }))
                .await;
            return;
        }
    };
    let _ = inputs.send(XmppInput::State(XmppState::Connecting)).await;
    let pacing = Arc::new(Mutex::new(Pacing::default()));
    // Each stream gets its own stop flag so that a replaced stream's login attempts end
    // instead of logging in a second time with the same resource.
    let new_stream = |stream_stop: Arc<Stop>| {
        let (account, tls, inputs, stop, pacing, indicator) = (
            account.clone(),
            tls.clone(),
            inputs.clone(),
            Arc::clone(&stop),
            Arc::clone(&pacing),
            indicator.clone(),
        );
        let reconnector = Box::new(
            move |_: Option<String>, slot: oneshot::Sender<Connection>| {
                let stops = [Arc::clone(&stop), Arc::clone(&stream_stop)];
                let (account, tls, inputs) = (account.clone(), tls.clone(), inputs.clone());
                let pacing = Arc::clone(&pacing);
                let login = Login {
                    account,
                    tls,
                    indicator: indicator.clone(),
                };
                tokio::spawn(reconnect_loop(login, inputs, stops, slot, pacing));
            },
        );
        StanzaStream::new(reconnector, QUEUE_DEPTH)
    };
    let mut stream_stop = Arc::new(Stop::default());
    let mut stream = new_stream(Arc::clone(&stream_stop));
    let mut online: Option<FullJid> = None;
    // The last bound JID: a resumed stream (XEP-0198) is online again under it.
    let mut bound: Option<FullJid> = None;
    let mut requests = Requests::default();
    // The STUN/TURN servers the XMPP server offered (XEP-0215) and when to renew them.
    let mut offers = Offers::default();
    loop {
        tokio::select! {
            // Outgoing first: at shutdown, the close signals queued last must still go out.
            biased;
            () = stop.stopped() => {
                while let Ok(out) = outgoing.try_recv() {
                    let stanza = to_stanza(out, &mut requests.roster);
                    let _token = stream.send(Box::new(stanza)).await;
                }
                break;
            }
            () = reconnect.notified() => {
                tracing::debug!("XMPP reconnecting after a network change");
                if online.take().is_some() {
                    let _ = inputs.send(XmppInput::State(XmppState::Connecting)).await;
                }
                // A new network deserves an immediate attempt, whatever failed before.
                lock(&pacing).network_changed();
                stream_stop.stop();
                stream_stop = Arc::new(Stop::default());
                let old = std::mem::replace(&mut stream, new_stream(Arc::clone(&stream_stop)));
                // The old connection may hang on a dead path: close it in the background.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(2), old.close()).await;
                });
            }
            () = sleep_until(offers.refresh_at) => {
                // Due: asked now if online, else as soon as the session is back.
                offers.refresh_at = None;
                offers.due = true;
                if let Some(own) = online.clone() {
                    ask_for_services(&stream, &own, &mut requests).await;
                }
            }
            () = activity.notified() => {
                if let Some(own) = &online {
                    // The connection tells the server at its next flush: make one. (Offline,
                    // the next connection tells it once bound.)
                    ping_server(&stream, own).await;
                }
            }
            out = outgoing.recv() => {
                let Some(out) = out else { break };
                let stanza = to_stanza(out, &mut requests.roster);
                let _token = stream.send(Box::new(stanza)).await;
            }
            event = stream.next() => {
                let Some(event) = event else { break };
                match event {
                    Event::Stream(StreamEvent::Reset { bound_jid, .. }) => {
                        let Ok(full) = bound_jid.try_into_full() else { continue };
                        tracing::info!("XMPP session online");
                        lock(&pacing).online(std::time::Instant::now());
                        online = Some(full.clone());
                        bound = Some(full.clone());
                        ask_for_services(&stream, &full, &mut requests).await;
                        let state = XmppState::Online { jid: full, resumed: false };
                        let _ = inputs.send(XmppInput::State(state)).await;
                    }
                    Event::Stream(StreamEvent::Resumed) => {
                        if let Some(full) = bound.clone() {
                            tracing::info!("XMPP session resumed");
                            lock(&pacing).online(std::time::Instant::now());
                            online = Some(full.clone());
                            if offers.due {
                                ask_for_services(&stream, &full, &mut requests).await;
                            }
                            let state = XmppState::Online { jid: full, resumed: true };
                            let _ = inputs.send(XmppInput::State(state)).await;
                        }
                    }
                    Event::Stream(_) => {
                        if online.take().is_some() {
                            tracing::info!("XMPP session lost; reconnecting");
                            let _ = inputs.send(XmppInput::State(XmppState::Connecting)).await;
                        }
                    }
                    Event::Stanza(stanza) => {
                        let offered = handle_stanza(stanza, online.as_ref(), &mut requests, &inputs, &stream).await;
                        if let Some(offered) = offered {
                            offers.answered(&account.dns, offered, &inputs).await;
                        }
                    }
                }
            }
        }
    }
    if online.is_some() {
        let _token = stream
            .send(Box::new(Presence::new(presence::Type::Unavailable).into()))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
    }
    // When not online the stream worker waits for a connection that will never come (the
    // reconnector saw the stop flag); dropping it is all that can be done.
}

/// Waits until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn lock(pacing: &Mutex<Pacing>) -> std::sync::MutexGuard<'_, Pacing> {
    // Plain data: a panic elsewhere cannot leave it inconsistent.
    pacing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a login needs besides the pacing.
struct Login {
    account: XmppAccount,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    indicator: ClientIndicator,
}

/// Login attempts for one (re)connection, backing off across reconnections (see
/// [`Pacing`]), until one succeeds, the credentials are refused, or the session stops.
async fn reconnect_loop(
    login_with: Login,
    inputs: mpsc::Sender<XmppInput>,
    stops: [Arc<Stop>; 2],
    slot: oneshot::Sender<Connection>,
    pacing: Arc<Mutex<Pacing>>,
) {
    let stopped = || async {
        tokio::select! {
            () = stops[0].stopped() => {}
            () = stops[1].stopped() => {}
        }
    };
    let (mut wait, fresh_session) = lock(&pacing).reconnecting(std::time::Instant::now());
    loop {
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped() => break,
            }
        }
        let attempt = tokio::select! {
            r = tokio::time::timeout(
                LOGIN_TIMEOUT,
                login(&login_with.account, login_with.tls.clone(), STREAM_TIMEOUTS, &login_with.indicator),
            ) => {
                r.unwrap_or_else(|_| Err(LoginFailure::Unreachable("the login timed out".into())))
            }
            () = stopped() => break,
        };
        match attempt {
            Ok(mut connection) => {
                if fresh_session && connection.features.stream_management.take().is_some() {
                    // Without the feature the stream drops its old state and binds anew
                    // (stream management is back from the next connection on).
                    tracing::debug!("resuming the XMPP session failed; starting a fresh one");
                }
                let failed_before = {
                    let mut p = lock(&pacing);
                    p.handed_out = true;
                    std::mem::take(&mut p.attempts) > 0
                };
                if failed_before {
                    // Logged in: the last failure no longer describes the session.
                    let _ = inputs.send(XmppInput::State(XmppState::Connecting)).await;
                }
                let _ = slot.send(connection);
                return;
            }
            Err(LoginFailure::TokenRejected) => {
                tracing::warn!("XMPP login refused the sign-in token: sign in again");
                let _ = inputs
                    .send(XmppInput::State(XmppState::TokenRejected))
                    .await;
                break;
            }
            Err(LoginFailure::BadCredentials) => {
                let _ = inputs.send(XmppInput::State(XmppState::AuthFailed)).await;
                if !lock(&pacing).ever_online {
                    tracing::warn!("XMPP login refused: check the account's password");
                    break;
                }
                tracing::warn!(
                    retry_in_secs = REFUSED_AGAIN_RETRY.as_secs(),
                    "XMPP login refused for a password that worked before"
                );
                wait = REFUSED_AGAIN_RETRY;
            }
            Err(reason) => {
                wait = {
                    let mut p = lock(&pacing);
                    p.attempts += 1;
                    Pacing::delay(p.attempts)
                };
                tracing::debug!(%reason, ?wait, "XMPP login failed; retrying");
                let _ = inputs
                    .send(XmppInput::State(XmppState::Offline {
                        reason,
                        retry_in: wait,
                    }))
                    .await;
            }
        }
    }
    // Dropping the slot makes the stream worker fail; keeping it parked is harmless.
    std::mem::forget(slot);
}

/// The STUN/TURN servers the XMPP server offered (XEP-0215) and when to ask again.
#[derive(Default)]
struct Offers {
    /// What the engine uses.
    in_use: Option<IceServers>,
    /// When the credentials in use need renewing.
    refresh_at: Option<tokio::time::Instant>,
    /// They do now (asked when the session is next online).
    due: bool,
}

impl Offers {
    /// Resolves an answer and hands it to the engine when it is worth a new allocation.
    async fn answered(
        &mut self,
        dns: &super::discovery::Dns,
        offered: extdisco::Offered,
        inputs: &mpsc::Sender<XmppInput>,
    ) {
        let servers = extdisco::resolve(dns, &offered).await;
        if !extdisco::worth_switching(self.in_use.as_ref(), &servers, self.due) {
            tracing::debug!("the offered STUN/TURN servers are the ones in use");
            return;
        }
        tracing::debug!(?servers, "STUN/TURN from the XMPP server");
        self.in_use = Some(servers.clone());
        self.due = false;
        self.refresh_at = extdisco::refresh_in(offered.expires, std::time::SystemTime::now())
            .map(|wait| tokio::time::Instant::now() + wait);
        let _ = inputs.send(XmppInput::ExternalServices(servers)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn reconnections_back_off_unless_the_last_session_lasted() {
        let t0 = Instant::now();
        let mut p = Pacing::default();
        // The stream's first connection: at once.
        assert_eq!(p.reconnecting(t0), (Duration::ZERO, false));
        p.handed_out = true;
        p.online(t0);
        // A session that lasted: the reconnection is at once, resuming allowed.
        let t1 = t0 + Duration::from_secs(600);
        assert_eq!(p.reconnecting(t1), (Duration::ZERO, false));
        // Logins that fail meanwhile back off in the login loop (`attempts`); a login that
        // works resets that. The resumption it tries is refused: again in a second, fresh.
        p.handed_out = true;
        assert_eq!(p.reconnecting(t1), (Duration::from_secs(1), true));
        // Refused again and again (a server that closes every stream): waits grow.
        p.handed_out = true;
        assert_eq!(p.reconnecting(t1), (Duration::from_secs(2), true));
        p.handed_out = true;
        assert_eq!(p.reconnecting(t1), (Duration::from_secs(4), true));
        // Online, but kicked out after a second (a resource conflict): still backing off,
        // resuming allowed.
        p.handed_out = true;
        p.online(t1);
        assert_eq!(
            p.reconnecting(t1 + Duration::from_secs(1)),
            (Duration::from_secs(8), false)
        );
        for _ in 0..10 {
            p.handed_out = true;
            assert!(p.reconnecting(t1).0 <= BACKOFF_MAX);
        }
        // A new network starts afresh.
        p.network_changed();
        assert_eq!(p.reconnecting(t1), (Duration::ZERO, false));
        assert!(p.ever_online);
    }
}

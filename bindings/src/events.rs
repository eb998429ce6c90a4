//! Engine events delivered to the app's listener on a thread of ours.
//!
//! The dispatcher thread is outside the engine's runtime, so a listener may call back into
//! the engine (for example read the roster on `on_roster_changed`) without deadlocking, and
//! an exception in the listener is logged and forgotten: the engine never sees it.

use crate::error::CallbackError;
use socialvpn_core::api::{Event, LinkChange, XmppStatus};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::broadcast;

/// The account's connection as a login screen shows it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum VpnState {
    Connecting,
    Online,
    /// Not connected (no network, server unreachable); the engine retries by itself.
    Offline {
        reason: String,
        retry_in_secs: u64,
    },
    /// The server refused the JID or password: no retry until the user fixes them.
    AuthFailed,
    /// The server refused the sign-in token (expired or revoked): the app asks the user to
    /// sign in again; the engine does not retry.
    TokenRejected,
    /// The engine ended: `stop` (no error) or a fatal error (its UDP socket failed).
    Stopped {
        error: Option<String>,
    },
}

impl From<XmppStatus> for VpnState {
    fn from(s: XmppStatus) -> VpnState {
        match s {
            XmppStatus::Connecting => VpnState::Connecting,
            XmppStatus::Online => VpnState::Online,
            XmppStatus::Offline {
                reason,
                retry_in_secs,
            } => VpnState::Offline {
                reason,
                retry_in_secs,
            },
            XmppStatus::AuthFailed => VpnState::AuthFailed,
            XmppStatus::TokenRejected => VpnState::TokenRejected,
            // Only a newer engine sends a state this build does not know.
            XmppStatus::Unknown => VpnState::Connecting,
        }
    }
}

/// A link to a friend's device came up on a path, lost its path, or closed.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct LinkEvent {
    /// The device's id (hex), as in `Device.uid`.
    pub uid: String,
    /// The device's full JID (`friend@server/resource`).
    pub device: String,
    /// Traffic flows (on a new path, if it had one before).
    pub up: bool,
    /// Through a TURN relay rather than a direct path (when `up`).
    pub relayed: bool,
    /// The link is gone. Not `up` and not `closed`: the path was lost and a new one is
    /// being looked for.
    pub closed: bool,
    /// Closed by the friend's device (they switched this user off, or removed them).
    pub by_peer: bool,
}

impl LinkEvent {
    pub(crate) fn new(uid: String, device: String, change: LinkChange) -> LinkEvent {
        let (up, relayed, closed, by_peer) = match change {
            LinkChange::Up { relayed } => (true, relayed, false, false),
            LinkChange::PathLost => (false, false, false, false),
            LinkChange::Closed { by_peer } => (false, false, true, by_peer),
        };
        LinkEvent {
            uid,
            device,
            up,
            relayed,
            closed,
            by_peer,
        }
    }
}

/// Implemented by the app. Called on one thread of the engine's, in order; may call the
/// engine; should return quickly (events queue behind a slow listener, and one that falls
/// too far behind gets `on_roster_changed` in place of the events it missed).
#[uniffi::export(with_foreign)]
pub trait VpnEventListener: Send + Sync {
    fn on_state(&self, state: VpnState) -> Result<(), CallbackError>;
    fn on_roster_changed(&self) -> Result<(), CallbackError>;
    /// `jid` asks to be a friend (accept or decline with the friend actions).
    fn on_friend_request(&self, jid: String) -> Result<(), CallbackError>;
    fn on_link(&self, link: LinkEvent) -> Result<(), CallbackError>;
    /// The tunnel fd failed (the interface went away, or reads keep failing): the engine
    /// closed it and stays signed in and linked. Hand over a new fd with `start_tunnel` (or
    /// show the VPN as off).
    fn on_tunnel_lost(&self, reason: String) -> Result<(), CallbackError>;
}

/// Starts the thread that hands events to the listener; it ends after the engine's last
/// event (`Stopped`) or when the engine is gone. A listener that fell behind gets one
/// `on_roster_changed` for what it missed.
pub(crate) fn spawn_dispatcher(
    runtime: Handle,
    events: broadcast::Receiver<Event>,
    listener: Arc<dyn VpnEventListener>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    dispatch("socialvpn-events", runtime, events, move |event| {
        deliver(listener.as_ref(), event)
    })
}

/// Implemented by the iOS tunnel extension (or any front end that relays events as they
/// are): each event as the control protocol's bytes (`socialvpn_core::api::Event`).
#[uniffi::export(with_foreign)]
pub trait EventSink: Send + Sync {
    fn on_event(&self, event: Vec<u8>) -> Result<(), CallbackError>;
}

/// Like `spawn_dispatcher`, for an `EventSink`: a sink that falls behind is told how many
/// events it missed (`Event::Missed`).
pub(crate) fn spawn_byte_dispatcher(
    runtime: Handle,
    events: broadcast::Receiver<Event>,
    sink: Arc<dyn EventSink>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    dispatch("socialvpn-event-bytes", runtime, events, move |event| {
        let bytes = event.encode();
        report(
            "event sink",
            catch_unwind(AssertUnwindSafe(|| sink.on_event(bytes))),
        );
    })
}

/// One thread, outside the engine's runtime, handing each event to `hand` in order until
/// the last (`Stopped`) or the engine is gone; lag arrives as `Event::Missed`.
fn dispatch(
    name: &str,
    runtime: Handle,
    mut events: broadcast::Receiver<Event>,
    mut hand: impl FnMut(Event) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || loop {
            let event = match runtime.block_on(events.recv()) {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(count)) => {
                    tracing::debug!(count, "an event listener fell behind");
                    Event::Missed { count }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let last = matches!(event, Event::Stopped { .. });
            hand(event);
            if last {
                return;
            }
        })
}

/// Logs what a foreign callback threw or returned as an error: the engine carries on.
fn report(what: &str, result: std::thread::Result<Result<(), CallbackError>>) {
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::info!(error = %e, "the {what} failed"),
        Err(_) => tracing::info!("the {what} panicked"),
    }
}

fn deliver(listener: &dyn VpnEventListener, event: Event) {
    let result = catch_unwind(AssertUnwindSafe(|| match event {
        Event::Xmpp { status } => listener.on_state(status.into()),
        // Lag: whatever was missed, the roster shows it now.
        Event::RosterChanged | Event::Missed { .. } => listener.on_roster_changed(),
        Event::FriendRequest { jid } => listener.on_friend_request(jid),
        Event::Link {
            uid,
            device,
            change,
        } => listener.on_link(LinkEvent::new(uid, device, change)),
        Event::TunnelLost { reason } => listener.on_tunnel_lost(reason),
        // Only a newer engine sends what this build does not know.
        Event::Unknown => Ok(()),
        Event::Stopped { error } => listener.on_state(VpnState::Stopped { error }),
    }));
    report("event listener", result);
}

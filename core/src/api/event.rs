//! What the engine reports as it happens.

use serde::{Deserialize, Serialize};

/// A change a front end may want to show (no personal data beyond what the roster holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// The XMPP session state changed.
    Xmpp { status: XmppStatus },
    /// The roster, a device, a toggle or an address changed: ask for the roster again.
    RosterChanged,
    /// Someone asks to be a friend.
    FriendRequest { jid: String },
    /// A link to a device came up on a path, lost it, or closed.
    Link {
        uid: String,
        /// The device's full JID (account and resource).
        device: String,
        change: LinkChange,
    },
    /// The tunnel fd failed (the interface is gone, or reads keep failing) and was detached
    /// and closed; the engine stays signed in and linked. A new fd turns the VPN on again.
    TunnelLost { reason: String },
    /// Events were dropped because the listener fell behind: ask for the state again.
    Missed { count: u64 },
    /// The engine task ended: asked to (no error) or after a fatal socket error. The last
    /// event.
    Stopped { error: Option<String> },
    /// An event a newer engine added (never sent by this one).
    #[serde(other)]
    Unknown,
}

/// What happened to a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "link")]
pub enum LinkChange {
    /// Traffic flows on a (new) path: direct, or through a TURN relay.
    Up { relayed: bool },
    /// The path stopped working; a new one is being looked for (the session stays).
    PathLost,
    /// The link is gone: no longer wanted, or closed by the friend's device.
    Closed { by_peer: bool },
}

/// The XMPP session as the UI shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum XmppStatus {
    Connecting,
    Online,
    /// Not connected; the engine tries again in `retry_in_secs`.
    Offline {
        reason: String,
        retry_in_secs: u64,
    },
    /// The server refused the credentials; no retry until the account changes.
    AuthFailed,
    /// The server refused the sign-in token (expired or revoked); never retried: the app
    /// asks for a new sign-in.
    TokenRejected,
    /// A state a newer engine added (never sent by this one).
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for XmppStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XmppStatus::Connecting => f.write_str("connecting"),
            XmppStatus::Online => f.write_str("online"),
            XmppStatus::Offline { reason, .. } => write!(f, "offline: {reason}"),
            XmppStatus::AuthFailed => f.write_str("auth_failed"),
            XmppStatus::TokenRejected => f.write_str("token_rejected"),
            XmppStatus::Unknown => f.write_str("unknown"),
        }
    }
}

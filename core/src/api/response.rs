//! What the engine answers.

use super::event::Event;
use super::views::{FriendView, LinkView, StatusView};
use serde::{Deserialize, Serialize};

/// The answer to one request: its result, or why it failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    /// The request was carried out.
    Done,
    Status {
        status: Box<StatusView>,
    },
    Roster {
        friends: Vec<FriendView>,
    },
    Links {
        links: Vec<LinkView>,
    },
    PeerAdded {
        uid: String,
    },
    /// The answer to `Request::Events`: the events in order (possibly none, when the wait
    /// ended first) and the cursor to ask from next.
    Events {
        events: Vec<Event>,
        next: u64,
    },
    Error {
        error: ApiError,
    },
}

impl Response {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error {
            error: ApiError {
                kind,
                message: message.into(),
            },
        }
    }

    /// The failure, if this is one.
    pub fn into_result(self) -> Result<Response, ApiError> {
        match self {
            Response::Error { error } => Err(error),
            other => Ok(other),
        }
    }
}

/// A request that failed: a kind a screen can react to, and a sentence to show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The bytes were not a request (or one too long): nothing was done.
    BadRequest,
    /// The request speaks a protocol version this engine does not.
    UnsupportedVersion,
    /// Not a valid bare JID.
    BadJid,
    /// Not a device id, or a device the engine does not know.
    BadDevice,
    /// The address is outside the subnet or ours, pinned to another device, or no address
    /// is left (for the device, or for one moved out of the way).
    AddressRefused,
    /// The engine has no XMPP account (links configured by hand only).
    NoAccount,
    /// A link could not be made (bad key, our own key, too many links; by hand only
    /// without an account).
    PeerRefused,
    /// The platform refused a socket or the tunnel.
    Platform,
    /// The state directory (device key, addresses, toggles) cannot be read or written.
    StateDirectory,
    /// The engine has stopped.
    Stopped,
    /// The front end cannot change its log level.
    Unsupported,
    /// A kind a newer engine added (the message still says what went wrong).
    #[serde(other)]
    Unknown,
}

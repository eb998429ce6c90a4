//! What a front end asks the engine.

use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};

/// Every request a front end can make: one table for the CLI's control socket, the test
/// node, the bindings and the iOS app↔extension channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The engine at a glance → `Response::Status`.
    Status,
    /// Friends, requests and the user's own devices, with addresses and link states →
    /// `Response::Roster`.
    Roster,
    /// The data plane's WireGuard links → `Response::Links`.
    Links,
    /// Adds, accepts, declines, removes, enables or disables a friend (a bare JID, checked
    /// when the action runs) → `Response::Done`.
    Friend { action: FriendAction, jid: String },
    /// Gives a device (its id, hex) a fixed address in the user's subnet; an unpinned
    /// device holding that address moves elsewhere → `Response::Done`.
    PinAddress { device: String, address: Ipv4Addr },
    /// Lets a pinned device's address be moved again (it keeps it for now).
    UnpinAddress { device: String },
    /// The platform's network changed (Wi-Fi ↔ cellular, new address): look for new paths,
    /// keeping the WireGuard sessions, and reconnect XMPP.
    NetworkChanged,
    /// The app's screens are visible again: events for them flow again, starting with the
    /// XMPP state and a `roster_changed` if anything changed meanwhile → `Response::Done`.
    Foreground,
    /// No screen shows the engine's state (the app went to the background): events only a
    /// screen needs (XMPP state, roster, links) are held and summed up at `Foreground`;
    /// friend requests still arrive (a notification may show them); the XMPP server is told
    /// the client is inactive (XEP-0352) → `Response::Done`.
    Background,
    /// How much the library logs from now on (the front end's logger).
    SetLogLevel { level: LogLevel },
    /// A link configured by hand, without an XMPP account: the peer's WireGuard public key
    /// (hex) and where it listens → `Response::PeerAdded`.
    AddPeer {
        public_key: String,
        endpoint: SocketAddr,
        #[serde(default)]
        keepalive_secs: Option<u16>,
    },
    /// Tells friends the links are going away, signs off and stops the engine (the app
    /// forgets the credentials) → `Response::Done`, then `Event::Stopped`.
    SignOut,
    /// The events after the cursor `after` (0 on the first call: everything this engine
    /// run still keeps), waiting up to `wait_ms` (at most 30 s) for one when there is none
    /// → `Response::Events`, whose `next` is the cursor for the next call. For front ends
    /// that cannot be called back: the iOS app asks its tunnel extension this way.
    Events {
        #[serde(default)]
        after: u64,
        #[serde(default)]
        wait_ms: u32,
    },
}

/// What the user can do with a roster entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FriendAction {
    Add,
    Accept,
    Decline,
    Remove,
    Enable,
    Disable,
}

impl FriendAction {
    pub const ALL: [FriendAction; 6] = [
        FriendAction::Add,
        FriendAction::Accept,
        FriendAction::Decline,
        FriendAction::Remove,
        FriendAction::Enable,
        FriendAction::Disable,
    ];

    /// The word on the wire and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FriendAction::Add => "add",
            FriendAction::Accept => "accept",
            FriendAction::Decline => "decline",
            FriendAction::Remove => "remove",
            FriendAction::Enable => "enable",
            FriendAction::Disable => "disable",
        }
    }
}

/// An action word that is none of `FriendAction::ALL`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown friend action '{0}' (add, accept, decline, remove, enable, disable)")]
pub struct UnknownAction(pub String);

impl std::str::FromStr for FriendAction {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FriendAction::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAction(s.to_string()))
    }
}

/// How much the library logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    /// Includes personal data (JIDs, addresses): for bug reports the user agreed to.
    Debug,
    /// Per packet: for development only.
    Trace,
}

impl LogLevel {
    pub const ALL: [LogLevel; 6] = [
        LogLevel::Off,
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// The word on the wire, on the command line and in log filters.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LogLevel::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| format!("'{s}' is not one of off, error, warn, info, debug, trace"))
    }
}

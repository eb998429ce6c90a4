//! The records replies carry: what a friends list, a status screen and a links table show.

use crate::counters::{Counters, LinkCounters, LinkTraffic, SocialCounters};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// Subscription state of a contact (RFC 6121), from the user's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    None,
    /// We see their presence; they do not see ours.
    To,
    /// They see our presence; we do not see theirs.
    From,
    /// Mutual: a friend.
    Both,
}

/// Link state as the UI shows it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum LinkPhase {
    /// Waiting for our candidates, an offer or an answer, or running ICE checks.
    Connecting,
    Connected {
        relayed: bool,
        /// Round-trip time of the last ICE check on the path, in milliseconds.
        rtt_ms: Option<f64>,
    },
    /// The last attempt failed; the next one starts after a back-off.
    Retrying,
    /// The friend's device closed the link (the friend switched us off, or removed us): it
    /// is tried again only when they offer one or after a long back-off.
    ClosedByPeer,
    /// A phase a newer engine added (never sent by this one).
    #[serde(other)]
    Unknown,
}

/// One device of a friend (or of the user) as the UI shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    /// The XMPP resource.
    pub resource: String,
    /// Whether the device runs SocialVPN (others are ordinary chat clients).
    pub socialvpn: bool,
    /// Its device id (hex), as announced.
    pub uid: Option<String>,
    /// The address this user gave the device: reach it here.
    pub overlay_address: Option<Ipv4Addr>,
    /// The user fixed that address (`pin_address`).
    #[serde(default)]
    pub pinned: bool,
    pub link: Option<LinkPhase>,
    /// Traffic over the link (IP bytes each way).
    pub traffic: Option<LinkTraffic>,
}

/// One roster entry: a friend, someone asking to be one, or the user's own other devices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FriendView {
    pub jid: String,
    /// The name the user gave the contact, if any.
    pub name: Option<String>,
    pub subscription: Subscription,
    /// A friend both ways (mutual presence subscription): only friends get links.
    pub mutual: bool,
    /// They asked to be a friend: accept or decline.
    pub pending_in: bool,
    /// We asked; waiting for them.
    pub pending_out: bool,
    /// The user's switch for this friend.
    pub enabled: bool,
    /// True for the entry listing the user's own other devices.
    pub own: bool,
    pub devices: Vec<DeviceView>,
}

/// A WireGuard link of the data plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkView {
    /// The device id (hex).
    pub uid: String,
    /// The address this user gave the device.
    pub overlay_address: Ipv4Addr,
    /// The path's current remote address (a relay's when relayed), if known.
    pub endpoint: Option<SocketAddr>,
    /// A WireGuard session is established.
    pub session: bool,
    pub traffic: LinkTraffic,
}

/// The engine at a glance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// This device's id (hex).
    pub uid: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    pub subnet: String,
    /// Whether a tunnel fd is attached (the VPN is on).
    pub tunnel: bool,
    /// Whether the app said its screens are visible (`foreground`/`background` requests).
    #[serde(default = "visible")]
    pub foreground: bool,
    /// The XMPP session (absent without an account).
    pub xmpp: Option<super::XmppStatus>,
    pub counters: Counters,
    pub social: Option<SocialCounters>,
    pub links: Option<LinkCounters>,
    /// Local candidates offered to friends ("host 198.18.0.10:4500", "relay …").
    pub candidates: Option<Vec<String>>,
}

/// Engines before the `foreground` field had no background mode.
fn visible() -> bool {
    true
}

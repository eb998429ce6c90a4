//! What the friends list and the status view show, as plain records.

use socialvpn_core::api::{DeviceView, FriendView, LinkPhase, LinkView, StatusView, Subscription};

/// One roster entry: a friend, someone asking to be one, or the user's own other devices.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Friend {
    pub jid: String,
    /// The name the user gave the contact, if any.
    pub name: Option<String>,
    /// A friend both ways (mutual presence subscription): only friends get links.
    pub mutual: bool,
    /// They asked to be a friend; `accept_friend` or `decline_friend`.
    pub pending_in: bool,
    /// We asked; waiting for them.
    pub pending_out: bool,
    /// The user's switch for this friend.
    pub enabled: bool,
    /// The entry listing the user's own other devices.
    pub own: bool,
    /// Online devices.
    pub devices: Vec<Device>,
}

#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Device {
    /// The XMPP resource.
    pub resource: String,
    /// Whether the device runs SocialVPN (others are ordinary chat clients).
    pub socialvpn: bool,
    pub uid: Option<String>,
    /// The address this user gave the device: reach it here.
    pub overlay_address: Option<String>,
    /// The user fixed that address (`pin_address`).
    pub pinned: bool,
    pub link: LinkState,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum LinkState {
    None,
    Connecting,
    /// `rtt_ms`: round-trip time of the last connectivity check, when known.
    Direct {
        rtt_ms: Option<f64>,
    },
    Relayed {
        rtt_ms: Option<f64>,
    },
    /// The last attempt failed; the next one starts after a back-off.
    Retrying,
    /// The friend's device closed the link (they switched this user off, or removed them).
    ClosedByPeer,
}

/// A WireGuard link of the data plane.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct LinkInfo {
    pub uid: String,
    pub overlay_address: String,
    /// The path's current remote address (a relay's when relayed), if known.
    pub endpoint: Option<String>,
    /// A WireGuard session is established.
    pub session: bool,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

/// The engine at a glance.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Status {
    /// This device's id (hex).
    pub uid: String,
    pub ipv4: String,
    pub ipv6: String,
    pub subnet: String,
    /// A tunnel fd is attached (the VPN is on).
    pub tunnel: bool,
    /// The XMPP session (`connecting`, `online`, `offline: …`, `auth_failed`).
    pub xmpp: Option<String>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Packets dropped, all reasons (the CLI's status shows them one by one).
    pub dropped: u64,
}

/// What the platform's VPN builder needs to create the tunnel this engine expects.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct TunnelSettings {
    /// This device's overlay address, with `ipv4_prefix` (the user's subnet) on the tunnel.
    pub ipv4: String,
    pub ipv4_prefix: u8,
    /// The subnet to route into the tunnel, `network/prefix`.
    pub ipv4_route: String,
    /// This device's ULA address (derived from its id), with a /64 prefix.
    pub ipv6: String,
    pub ipv6_prefix: u8,
    pub mtu: u16,
}

impl From<FriendView> for Friend {
    fn from(f: FriendView) -> Friend {
        Friend {
            jid: f.jid,
            name: f.name,
            mutual: f.mutual || f.subscription == Subscription::Both,
            pending_in: f.pending_in,
            pending_out: f.pending_out,
            enabled: f.enabled,
            own: f.own,
            devices: f.devices.into_iter().map(Device::from).collect(),
        }
    }
}

impl From<DeviceView> for Device {
    fn from(d: DeviceView) -> Device {
        Device {
            resource: d.resource,
            socialvpn: d.socialvpn,
            uid: d.uid,
            overlay_address: d.overlay_address.map(|a| a.to_string()),
            pinned: d.pinned,
            link: match d.link {
                None => LinkState::None,
                // (A phase only a newer engine sends shows as connecting.)
                Some(LinkPhase::Connecting | LinkPhase::Unknown) => LinkState::Connecting,
                Some(LinkPhase::Connected {
                    relayed: false,
                    rtt_ms,
                }) => LinkState::Direct { rtt_ms },
                Some(LinkPhase::Connected {
                    relayed: true,
                    rtt_ms,
                }) => LinkState::Relayed { rtt_ms },
                Some(LinkPhase::Retrying) => LinkState::Retrying,
                Some(LinkPhase::ClosedByPeer) => LinkState::ClosedByPeer,
            },
            tx_bytes: d.traffic.map_or(0, |t| t.tx.bytes),
            rx_bytes: d.traffic.map_or(0, |t| t.rx.bytes),
        }
    }
}

impl From<LinkView> for LinkInfo {
    fn from(l: LinkView) -> LinkInfo {
        LinkInfo {
            uid: l.uid,
            overlay_address: l.overlay_address.to_string(),
            endpoint: l.endpoint.map(|e| e.to_string()),
            session: l.session,
            tx_bytes: l.traffic.tx.bytes,
            rx_bytes: l.traffic.rx.bytes,
        }
    }
}

impl From<StatusView> for Status {
    fn from(status: StatusView) -> Status {
        Status {
            uid: status.uid,
            ipv4: status.ipv4.to_string(),
            ipv6: status.ipv6.to_string(),
            subnet: status.subnet,
            tunnel: status.tunnel,
            xmpp: status.xmpp.map(|x| x.to_string()),
            tx_bytes: status.counters.net_tx.bytes,
            rx_bytes: status.counters.net_rx.bytes,
            dropped: status.counters.drops.total(),
        }
    }
}

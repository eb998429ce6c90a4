//! Counters: packets, bytes and drops of the data plane, per-link traffic, and what the
//! social layer and the link manager refused. Data only (they travel in the control
//! protocol's replies, see `api`).
//!
//! Plain integers owned by the engine task (no atomics on the data path); the API reads a
//! snapshot through the engine's command channel.

use serde::{Deserialize, Serialize};

/// Why a packet was dropped. Every drop on the data path is counted under one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the headers it claims (or empty).
    Truncated,
    /// Larger than the engine's maximum packet size.
    Oversized,
    /// The IP version nibble is neither 4 nor 6.
    NotIp,
    /// The 4-byte utun address family does not match the packet's IP version, or is unknown.
    FramingMismatch,
    /// IPv4 header length field below 5 words or beyond the packet.
    BadHeaderLength,
    /// IPv4 total length below the header length.
    BadTotalLength,
    /// Destination in our overlay subnet or prefix, but no friend device has that address.
    UnknownDestination,
    /// Destination outside the overlay (the tun should never be routed such packets).
    NoRoute,
    /// The friend device has no link, or its link has no known endpoint yet.
    NoLink,
    /// A datagram from the network that is not WireGuard, or not for any of our links.
    UnknownPeer,
    /// WireGuard rejected the datagram (bad MAC or tag, replay, wrong index, bad inner packet).
    WireGuardRejected,
    /// Decrypted payload without a complete UID header after the IP packet.
    MissingUidHeader,
    /// The source UID in the header is not the link's peer.
    SourceUidMismatch,
    /// The destination UID in the header is neither us nor the broadcast UID.
    DestinationUidMismatch,
    /// IPv6 source not the sender's address, or IPv6 destination not ours.
    AddressMismatch,
    /// Writing to the tun fd failed (or it was full).
    TunWrite,
    /// Reading the tun fd failed for a moment (no buffers or memory); a tunnel whose reads
    /// keep failing is detached.
    TunRead,
    /// A packet for this device arrived while no tunnel is attached (the VPN is off).
    NoTunnel,
    /// Sending on the UDP socket failed (or its buffer was full).
    NetSend,
    /// Link-local control traffic of this device's own stack (router solicitations, MLD,
    /// IGMP): not forwarded.
    LinkControl,
}

impl DropReason {
    pub const ALL: [DropReason; 20] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::NotIp,
        DropReason::FramingMismatch,
        DropReason::BadHeaderLength,
        DropReason::BadTotalLength,
        DropReason::UnknownDestination,
        DropReason::NoRoute,
        DropReason::NoLink,
        DropReason::UnknownPeer,
        DropReason::WireGuardRejected,
        DropReason::MissingUidHeader,
        DropReason::SourceUidMismatch,
        DropReason::DestinationUidMismatch,
        DropReason::AddressMismatch,
        DropReason::TunWrite,
        DropReason::TunRead,
        DropReason::NoTunnel,
        DropReason::NetSend,
        DropReason::LinkControl,
    ];

    /// The snake_case name used in JSON and status output.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::NotIp => "not_ip",
            DropReason::FramingMismatch => "framing_mismatch",
            DropReason::BadHeaderLength => "bad_header_length",
            DropReason::BadTotalLength => "bad_total_length",
            DropReason::UnknownDestination => "unknown_destination",
            DropReason::NoRoute => "no_route",
            DropReason::NoLink => "no_link",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::WireGuardRejected => "wireguard_rejected",
            DropReason::MissingUidHeader => "missing_uid_header",
            DropReason::SourceUidMismatch => "source_uid_mismatch",
            DropReason::DestinationUidMismatch => "destination_uid_mismatch",
            DropReason::AddressMismatch => "address_mismatch",
            DropReason::TunWrite => "tun_write",
            DropReason::TunRead => "tun_read",
            DropReason::NoTunnel => "no_tunnel",
            DropReason::NetSend => "net_send",
            DropReason::LinkControl => "link_control",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }

    pub fn from_name(name: &str) -> Option<DropReason> {
        DropReason::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl Serialize for DropReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Drops by reason, a fixed array indexed by the enum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.slot()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub(crate) fn add(&mut self, reason: DropReason) {
        self.add_many(reason, 1);
    }

    pub(crate) fn add_many(&mut self, reason: DropReason, n: u64) {
        self.0[reason.slot()] += n;
    }
}

impl Serialize for DropCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for reason in DropReason::ALL {
            let n = self.get(reason);
            if n > 0 {
                map.serialize_entry(reason.name(), &n)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for DropCounts {
    /// Reasons this build does not know (from a newer engine) are left out.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, u64>::deserialize(d)?;
        let mut counts = DropCounts::default();
        for (name, n) in map {
            if let Some(reason) = DropReason::from_name(&name) {
                counts.0[reason.slot()] = n;
            }
        }
        Ok(counts)
    }
}

/// Packets and bytes in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

impl Traffic {
    pub(crate) fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

/// Per-link figures reported upward (IP bytes, without tunnel overhead).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkTraffic {
    pub tx: Traffic,
    pub rx: Traffic,
}

/// Engine-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// IP packets read from the tun fd.
    pub tun_rx: Traffic,
    /// IP packets written to the tun fd, or handed to the tun writer thread (a write its
    /// kernel refuses later is also counted as a `tun_write` drop).
    pub tun_tx: Traffic,
    /// UDP datagrams received.
    pub net_rx: Traffic,
    /// UDP datagrams sent.
    pub net_tx: Traffic,
    pub drops: DropCounts,
    /// TCP ACKs on their way to the tun whose receive window was lowered, so that a local
    /// sender's share of the tun's ring bounds what it sends (`engine::window_clamp`).
    #[serde(default)]
    pub windows_clamped: u64,
}

/// What the social layer accepted and refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SocialCounters {
    pub signals_accepted: u64,
    pub signals_rejected: u64,
    pub presences_ignored: u64,
    /// Friend requests from accounts the user declined.
    pub requests_ignored: u64,
    /// Device announcements naming our own device, or one proven to belong to another
    /// account: kept off the links and the address book.
    pub device_claims_refused: u64,
    /// Devices of friends given no overlay address: their account holds its share, all in
    /// use or pinned.
    pub addresses_refused: u64,
    /// XMPP sessions bound afresh (a login, or a resumption the server refused).
    pub sessions_fresh: u64,
    /// XMPP sessions the server resumed (XEP-0198): nothing missed, nothing re-announced.
    pub sessions_resumed: u64,
}

/// What the link manager did and refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkCounters {
    pub offers_sent: u64,
    pub signals_stale: u64,
    pub ice_failures: u64,
    /// Paths found dead while in use (and looked for again).
    pub paths_lost: u64,
    /// TURN allocations lost (a restarted server) and made again.
    pub relay_reallocations: u64,
    /// Signals refused because the device starts sessions too often or the link slots
    /// are full.
    pub signals_refused: u64,
    /// STUN requests for no session of ours, or failing its integrity check, and undecodable
    /// STUN messages.
    pub stun_rejected: u64,
    /// Candidates peers named that are not checked (see `ice::usable_remote`), or not let
    /// through our relay (more than a few in one session).
    pub candidates_dropped: u64,
    /// Relay permissions not asked for: an account's share or the allocation is full (see
    /// `permits`).
    pub permits_refused: u64,
    /// Allocations renewed to shed relay permissions no longer in use.
    pub permit_renewals: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot_and_name() {
        let mut names = std::collections::HashSet::new();
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.slot(), i);
            assert!(names.insert(reason.name()));
            let json = serde_json::to_string(reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.name()));
        }
    }

    #[test]
    fn a_batch_of_drops_counts_as_many_and_only_under_its_reason() {
        let mut drops = DropCounts::default();
        drops.add(DropReason::NetSend);
        drops.add_many(DropReason::NetSend, 40);
        drops.add_many(DropReason::TunWrite, 0);
        assert_eq!(drops.get(DropReason::NetSend), 41);
        assert_eq!(drops.get(DropReason::TunWrite), 0);
        assert_eq!(drops.total(), 41);
        assert_eq!(serde_json::to_string(&drops).unwrap(), r#"{"net_send":41}"#);
    }
}

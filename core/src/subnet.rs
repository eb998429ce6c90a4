//! Overlay address spaces: the user's own IPv4 subnet and SocialVPN's fixed IPv6 ULA prefix.

use crate::uid::Uid;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The IPv6 /64 shared by all of SocialVPN (a ULA prefix: fd + 40 bits + subnet 0).
/// Interface ids are the first 8 bytes of the UID, so IPv6 needs no translation.
pub const ULA_PREFIX: [u8; 8] = [0xfd, 0x73, 0x76, 0x70, 0x6e, 0x00, 0x00, 0x00];

/// The IPv6 overlay address of a device.
pub fn ula_address(uid: &Uid) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&ULA_PREFIX);
    a[8..].copy_from_slice(&uid.interface_id());
    Ipv6Addr::from(a)
}

/// The interface id of `addr` if it lies in the SocialVPN prefix.
pub fn ula_interface_id(addr: &Ipv6Addr) -> Option<[u8; 8]> {
    let o = addr.octets();
    if o[..8] != ULA_PREFIX {
        return None;
    }
    let mut iid = [0u8; 8];
    iid.copy_from_slice(&o[8..]);
    Some(iid)
}

/// The default user subnet: a /16 at the start of the shared address space (RFC 6598).
pub const DEFAULT_SUBNET: Ipv4Subnet = Ipv4Subnet {
    network: Ipv4Addr::new(100, 64, 0, 0),
    prefix: 16,
};

/// An IPv4 subnet whose network address has no host bits set.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubnetError {
    #[error("'{0}' is not a subnet in the form a.b.c.d/n")]
    Syntax(String),
    #[error("prefix length /{0} is outside /8../30")]
    PrefixLength(u8),
    #[error("{0} has host bits set below its prefix")]
    HostBits(String),
}

impl Ipv4Subnet {
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Ipv4Subnet, SubnetError> {
        if !(8..=30).contains(&prefix) {
            return Err(SubnetError::PrefixLength(prefix));
        }
        let subnet = Ipv4Subnet { network, prefix };
        if u32::from(network) & !subnet.mask() != 0 {
            return Err(SubnetError::HostBits(format!("{network}/{prefix}")));
        }
        Ok(subnet)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network)
    }

    /// True for an address a device may hold: inside, neither network nor broadcast address.
    pub fn is_host(&self, addr: Ipv4Addr) -> bool {
        self.contains(addr) && addr != self.network && addr != self.broadcast()
    }

    /// Number of usable host addresses.
    pub fn host_count(&self) -> u32 {
        (!self.mask()) - 1
    }

    /// The host address at `offset` (1-based, `1..=host_count()`).
    pub fn host(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + offset)
    }

    /// The host offset of `addr` (`addr` must be inside).
    pub fn offset_of(&self, addr: Ipv4Addr) -> u32 {
        u32::from(addr) & !self.mask()
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl fmt::Debug for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Ipv4Subnet {
    type Err = SubnetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || SubnetError::Syntax(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(syntax)?;
        let network: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        Ipv4Subnet::new(network, prefix)
    }
}

impl serde::Serialize for Ipv4Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_bounds() {
        let s: Ipv4Subnet = "100.65.0.0/16".parse().unwrap();
        assert_eq!(s.broadcast(), Ipv4Addr::new(100, 65, 255, 255));
        assert!(s.is_host(Ipv4Addr::new(100, 65, 0, 1)));
        assert!(!s.is_host(Ipv4Addr::new(100, 65, 0, 0)));
        assert!(!s.contains(Ipv4Addr::new(100, 64, 0, 1)));
        assert_eq!(s.host_count(), 65534);
        assert_eq!(
            "100.65.0.1/16".parse::<Ipv4Subnet>(),
            Err(SubnetError::HostBits("100.65.0.1/16".into()))
        );
        assert_eq!(
            "100.64.0.0/31".parse::<Ipv4Subnet>(),
            Err(SubnetError::PrefixLength(31))
        );
        assert!(matches!(
            "x/16".parse::<Ipv4Subnet>(),
            Err(SubnetError::Syntax(_))
        ));
    }

    #[test]
    fn ula_round_trip() {
        let uid = Uid([9; 20]);
        let a = ula_address(&uid);
        assert_eq!(ula_interface_id(&a), Some(uid.interface_id()));
        assert_eq!(ula_interface_id(&Ipv6Addr::LOCALHOST), None);
    }
}

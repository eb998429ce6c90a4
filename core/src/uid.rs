//! Node identifiers: 20 bytes derived from a device's X25519 public key.
//!
//! The UID is self-certifying: anyone holding the public key can recompute it, so a device
//! cannot claim another device's UID without that device's private key.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Length of a UID on the wire.
pub const UID_LEN: usize = 20;

/// Domain separation for the UID hash, versioned so a future scheme cannot collide with it.
const UID_DOMAIN: &[u8] = b"socialvpn-uid-v1";

/// A device's node id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(pub [u8; UID_LEN]);

impl Uid {
    /// Reserved destination UID meaning "every friend device": set on the copies of a
    /// multicast or subnet-broadcast packet so the receiver translates the destination to
    /// its own subnet's broadcast address rather than to its own address.
    pub const BROADCAST: Uid = Uid([0xff; UID_LEN]);

    /// The UID of the device owning `public_key`.
    pub fn from_public_key(public_key: &[u8; 32]) -> Uid {
        let digest = Sha256::new()
            .chain_update(UID_DOMAIN)
            .chain_update(public_key)
            .finalize();
        let mut uid = [0u8; UID_LEN];
        uid.copy_from_slice(&digest[..UID_LEN]);
        Uid(uid)
    }

    pub fn as_bytes(&self) -> &[u8; UID_LEN] {
        &self.0
    }

    /// The first 8 bytes, used as the IPv6 interface identifier.
    pub fn interface_id(&self) -> [u8; 8] {
        let mut iid = [0u8; 8];
        iid.copy_from_slice(&self.0[..8]);
        iid
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form keeps logs readable; the full id is in Display.
        write!(
            f,
            "Uid({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Error for a UID that is not 40 hexadecimal characters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a UID is 40 hexadecimal characters")]
pub struct ParseUidError;

impl FromStr for Uid {
    type Err = ParseUidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; UID_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseUidError)?;
        Ok(Uid(out))
    }
}

impl serde::Serialize for Uid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Uid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_length() {
        let uid = Uid::from_public_key(&[7u8; 32]);
        let text = uid.to_string();
        assert_eq!(text.len(), 40);
        assert_eq!(text.parse::<Uid>().unwrap(), uid);
        assert_eq!("zz".parse::<Uid>(), Err(ParseUidError));
        assert_eq!(text[..38].parse::<Uid>(), Err(ParseUidError));
    }

    #[test]
    fn derivation_depends_on_the_key() {
        assert_ne!(
            Uid::from_public_key(&[1; 32]),
            Uid::from_public_key(&[2; 32])
        );
        assert_eq!(
            Uid::from_public_key(&[1; 32]),
            Uid::from_public_key(&[1; 32])
        );
    }
}

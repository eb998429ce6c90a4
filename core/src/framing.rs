//! How packets are framed on the platform's tun fd.

use crate::counters::DropReason;

/// Address-family values in the utun header. The header is Darwin's, so these are Darwin's
/// numbers whatever the build host.
const AF_INET_DARWIN: u32 = 2;
const AF_INET6_DARWIN: u32 = 30;

/// Length of the utun header.
pub const AF_HEADER_LEN: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// Bare IP packets: Android `VpnService`, Linux `IFF_TUN | IFF_NO_PI`.
    RawIp,
    /// A 4-byte big-endian address family before each packet: iOS/macOS utun.
    AfHeader,
    /// A `virtio_net_hdr` before each packet: a Linux tun with `IFF_VNET_HDR` and offloads
    /// (reads may be TCP super-packets; see `packet::gso`).
    VnetHdr,
}

impl Framing {
    /// Bytes in front of each packet.
    pub fn header_len(self) -> usize {
        match self {
            Framing::RawIp => 0,
            Framing::AfHeader => AF_HEADER_LEN,
            Framing::VnetHdr => crate::packet::gso::VNET_HDR_LEN,
        }
    }

    /// Locates the IP packet in a frame read from the fd: returns its offset.
    pub fn decode(self, frame: &[u8]) -> Result<usize, DropReason> {
        match self {
            Framing::RawIp => Ok(0),
            // The engine reads these frames through `packet::gso`; plain packets only here.
            Framing::VnetHdr => {
                let len = crate::packet::gso::VNET_HDR_LEN;
                match crate::packet::gso::VnetHdr::parse(frame) {
                    None => Err(DropReason::Truncated),
                    Some(h) if h.is_gso() => Err(DropReason::Oversized),
                    Some(_) if frame.len() == len => Err(DropReason::Truncated),
                    Some(_) => Ok(len),
                }
            }
            Framing::AfHeader => {
                let header: [u8; 4] = frame
                    .get(..AF_HEADER_LEN)
                    .and_then(|h| h.try_into().ok())
                    .ok_or(DropReason::Truncated)?;
                let version = frame.get(AF_HEADER_LEN).map(|b| b >> 4);
                match (u32::from_be_bytes(header), version) {
                    (_, None) => Err(DropReason::Truncated),
                    (AF_INET_DARWIN, Some(4)) | (AF_INET6_DARWIN, Some(6)) => Ok(AF_HEADER_LEN),
                    _ => Err(DropReason::FramingMismatch),
                }
            }
        }
    }

    /// The header to write in front of `packet` (empty for raw IP).
    pub fn encode(self, packet: &[u8]) -> [u8; AF_HEADER_LEN] {
        let family = match packet.first().map(|b| b >> 4) {
            Some(6) => AF_INET6_DARWIN,
            _ => AF_INET_DARWIN,
        };
        family.to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn af_header_round_trip() {
        let v4 = [0x45u8, 0, 0, 20];
        let mut frame = Framing::AfHeader.encode(&v4).to_vec();
        frame.extend_from_slice(&v4);
        assert_eq!(Framing::AfHeader.decode(&frame), Ok(4));
        let v6 = [0x60u8; 8];
        assert_eq!(Framing::AfHeader.encode(&v6), [0, 0, 0, 30]);
    }

    #[test]
    fn af_header_mismatch_and_truncation() {
        assert_eq!(
            Framing::AfHeader.decode(&[0, 0, 0, 30, 0x45]),
            Err(DropReason::FramingMismatch)
        );
        assert_eq!(
            Framing::AfHeader.decode(&[0, 0, 0, 7, 0x45]),
            Err(DropReason::FramingMismatch)
        );
        assert_eq!(
            Framing::AfHeader.decode(&[0, 0, 0, 2]),
            Err(DropReason::Truncated)
        );
        assert_eq!(
            Framing::AfHeader.decode(&[0, 0]),
            Err(DropReason::Truncated)
        );
        assert_eq!(Framing::RawIp.decode(&[0x45]), Ok(0));
    }
}

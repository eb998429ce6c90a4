//! The 40-byte UID header, [source UID | destination UID], that every tunnelled packet carries.
//!
//! It rides inside the WireGuard payload directly *after* the IP packet: boringtun validates
//! the decrypted payload as an IP packet (version nibble and total length) and hands back just
//! that packet, so a header in front would be rejected. Because the IP header states the
//! packet's own length, the UID header's position is always known on receive.

use crate::uid::{Uid, UID_LEN};

pub const UID_HEADER_LEN: usize = 2 * UID_LEN;

/// Writes the header into `out` (at least 40 bytes).
#[inline]
pub fn write(out: &mut [u8], src: &Uid, dst: &Uid) {
    out[..UID_LEN].copy_from_slice(src.as_bytes());
    out[UID_LEN..UID_HEADER_LEN].copy_from_slice(dst.as_bytes());
}

/// Reads the header from the start of `bytes`, if it is long enough.
#[inline]
pub fn read(bytes: &[u8]) -> Option<(Uid, Uid)> {
    let header = bytes.get(..UID_HEADER_LEN)?;
    let mut src = [0u8; UID_LEN];
    let mut dst = [0u8; UID_LEN];
    src.copy_from_slice(&header[..UID_LEN]);
    dst.copy_from_slice(&header[UID_LEN..]);
    Some((Uid(src), Uid(dst)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (a, b) = (Uid([1; 20]), Uid([2; 20]));
        let mut buf = [0u8; 41];
        write(&mut buf, &a, &b);
        assert_eq!(read(&buf), Some((a, b)));
        assert_eq!(read(&buf[..39]), None);
    }
}

//! Internet checksums: incremental updates (RFC 1624, equation 3) on the per-packet path, and
//! full sums where the tun's offloads leave a checksum to us.

/// Folds a 32-bit one's-complement accumulator into 16 bits.
#[inline]
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Adds `data` (big-endian 16-bit words, an odd last byte padded with zero) to `sum`.
#[inline]
pub fn accumulate(mut sum: u64, data: &[u8]) -> u64 {
    // Four words at a time into a 64-bit accumulator: no carry can be lost before folding
    // for any packet size here.
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]))
            + u64::from(u16::from_be_bytes([c[2], c[3]]))
            + u64::from(u16::from_be_bytes([c[4], c[5]]))
            + u64::from(u16::from_be_bytes([c[6], c[7]]));
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = rest.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// The checksum field value for an accumulated sum.
#[inline]
pub fn finish(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Returns `checksum` updated for one 4-byte field changing from `old` to `new`
/// (HC' = ~(~HC + ~m + m') for each 16-bit word m of the field).
#[inline]
pub fn update_4(checksum: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let mut sum = u32::from(!checksum);
    for i in [0, 2] {
        sum += u32::from(!u16::from_be_bytes([old[i], old[i + 1]]));
        sum += u32::from(u16::from_be_bytes([new[i], new[i + 1]]));
    }
    !fold(sum)
}

/// Returns `checksum` updated for one 16-bit field changing from `old` to `new`.
#[inline]
pub fn update_2(checksum: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    !fold(sum)
}

/// Updates `checksum` for both IPv4 addresses changing (the pseudo-header of TCP and UDP,
/// or the IPv4 header itself).
#[inline]
pub fn update_addresses(
    checksum: u16,
    old_src: [u8; 4],
    new_src: [u8; 4],
    old_dst: [u8; 4],
    new_dst: [u8; 4],
) -> u16 {
    update_4(update_4(checksum, old_src, new_src), old_dst, new_dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_sums_match_the_reference() {
        for len in [0usize, 1, 2, 7, 8, 9, 20, 1361] {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(finish(accumulate(0, &data)), full(&data), "len {len}");
        }
    }

    /// Full recomputation, for comparison only.
    fn full(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for chunk in data.chunks(2) {
            let word = if chunk.len() == 2 {
                u16::from_be_bytes([chunk[0], chunk[1]])
            } else {
                u16::from_be_bytes([chunk[0], 0])
            };
            sum += u32::from(word);
        }
        !fold(sum)
    }

    #[test]
    fn matches_recomputation() {
        let mut data = [0x12u8, 0x34, 0xab, 0xcd, 0, 0, 0x99, 0x01, 0xfe, 0xff];
        let before = full(&data);
        data[4..6].copy_from_slice(&before.to_be_bytes());
        assert_eq!(full(&data), 0);
        let old = [data[6], data[7], data[8], data[9]];
        let new = [100, 64, 7, 9];
        data[6..10].copy_from_slice(&new);
        let updated = update_4(before, old, new);
        data[4..6].copy_from_slice(&updated.to_be_bytes());
        assert_eq!(full(&data), 0);
    }
}

//! Byte search for the parsers and buffers.

/// The first `b` in `hay`: glibc's memchr, which for the short distances of line reads and
/// head lines (tens of bytes) costs well under half of the memchr crate's dispatch (29
/// instructions against ~74 by callgrind for a byte 40 bytes on).
pub fn find_byte(b: u8, hay: &[u8]) -> Option<usize> {
    if hay.is_empty() {
        return None; // (an empty slice's pointer need not be one C accepts)
    }
    // SAFETY: memchr reads at most `hay.len()` bytes from its start; a non-null result
    // points into `hay`.
    let p = unsafe { libc::memchr(hay.as_ptr().cast(), b as libc::c_int, hay.len()) };
    (!p.is_null()).then(|| p as usize - hay.as_ptr() as usize)
}

/// The position of the first byte below `n` (at most 128) in `hay`, eight bytes at a time:
/// for the short strings of a request line or a header value, several times cheaper than
/// the memchr crate's three-byte search with its dispatch.
#[inline]
pub fn first_below(hay: &[u8], n: u8) -> Option<usize> {
    debug_assert!(n <= 128);
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let mut rest = hay;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        let w = u64::from_le_bytes(*word);
        // "has a byte less than n": a borrow can flag bytes above a flagged one, never
        // below, so the lowest flag is the first such byte
        let below = w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
        if below != 0 {
            return Some(hay.len() - rest.len() + (below.trailing_zeros() / 8) as usize);
        }
        rest = tail;
    }
    let k = rest.iter().position(|&b| b < n)?;
    Some(hay.len() - rest.len() + k)
}

/// The position of the first of `bytes` (all below `n`, at most 128) in `hay`, by
/// [`first_below`].
#[inline]
pub fn find_below<const N: usize>(hay: &[u8], n: u8, bytes: [u8; N]) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = first_below(&hay[from..], n) {
        let b = hay[from + k];
        if bytes.contains(&b) {
            return Some(from + k);
        }
        from += k + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn find_byte_is_the_first_position(hay in proptest::collection::vec(0u8..4, 0..200), b in 0u8..4) {
            proptest::prop_assert_eq!(find_byte(b, &hay), hay.iter().position(|&x| x == b));
        }

        #[test]
        fn first_below_is_the_first_position(
            hay in proptest::collection::vec(proptest::prop_oneof![0u8..40, 0u8..=255], 0..80),
            n in 0u8..=128,
        ) {
            proptest::prop_assert_eq!(first_below(&hay, n), hay.iter().position(|&x| x < n));
        }

        #[test]
        fn find_below_finds_the_first_of_its_bytes(
            hay in proptest::collection::vec(proptest::prop_oneof![0u8..40, 0u8..=255], 0..80),
        ) {
            let want = hay.iter().position(|&x| matches!(x, b' ' | b'\r' | b'\n'));
            proptest::prop_assert_eq!(find_below(&hay, 0x21, *b" \r\n"), want);
        }
    }
}

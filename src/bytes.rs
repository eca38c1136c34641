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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn find_byte_is_the_first_position(hay in proptest::collection::vec(0u8..4, 0..200), b in 0u8..4) {
            proptest::prop_assert_eq!(find_byte(b, &hay), hay.iter().position(|&x| x == b));
        }
    }
}

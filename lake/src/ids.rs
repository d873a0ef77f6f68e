//! Identifiers and secrets: time-ordered ids and random keys.

use rand::RngCore;
use sha2::{Digest, Sha256};

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new time-ordered id with a prefix, e.g. `org_01jd…` (prefix + `_` + 26
/// Crockford base32 characters of a UUIDv7).
pub fn new_id(prefix: &str) -> String {
    let v = uuid::Uuid::now_v7().as_u128();
    let mut s = String::with_capacity(prefix.len() + 27);
    s.push_str(prefix);
    s.push('_');
    for i in (0..26).rev() {
        let idx = ((v >> (i * 5)) & 0x1f) as usize;
        s.push(CROCKFORD[idx] as char);
    }
    s
}

/// A new random secret with a prefix: 32 bytes of OS randomness, base32.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    let mut s = String::with_capacity(prefix.len() + 33);
    s.push_str(prefix);
    s.push('_');
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            s.push(CROCKFORD[((acc >> bits) & 0x1f) as usize] as char);
        }
    }
    s
}

/// SHA-256 of `text`, hex.
pub fn sha256_hex(text: &[u8]) -> String {
    hex::encode(Sha256::digest(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_sortable_and_unique() {
        let a = new_id("org");
        let b = new_id("org");
        assert!(a.starts_with("org_") && a.len() == 30, "{a}");
        assert_ne!(a, b);
        assert!(a < b || a[..14] == b[..14]);
        let k = new_secret("wk");
        assert_eq!(k.len(), 3 + 32);
        assert_ne!(k, new_secret("wk"));
        assert_eq!(sha256_hex(b"abc").len(), 64);
    }
}

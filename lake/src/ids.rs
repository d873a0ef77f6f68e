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

/// A new random secret with a prefix: 20 bytes (160 bits) of OS
/// randomness as 32 Crockford base32 characters.
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

    /// The 128 bits an id's 26 characters spell (the inverse of `new_id`).
    fn decode(id: &str) -> u128 {
        id.bytes().fold(0u128, |acc, c| {
            let v = CROCKFORD.iter().position(|&x| x == c).expect("crockford") as u128;
            (acc << 5) | v
        })
    }

    #[test]
    fn ids_are_prefixed_sortable_and_unique() {
        // Strictly increasing, as strings, in the order they were made
        // (`Uuid::now_v7` is monotonic within a process, even within one
        // millisecond).
        let ids: Vec<String> = (0..2000).map(|_| new_id("org")).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} then {}", w[0], w[1]);
        }
        let a = &ids[0];
        assert!(a.starts_with("org_") && a.len() == 30, "{a}");
        // The characters spell a version-7 UUID of the current time.
        let uuid = uuid::Uuid::from_u128(decode(&a[4..]));
        assert_eq!(uuid.get_version_num(), 7, "{a}");
        let (secs, _) = uuid.get_timestamp().expect("v7 timestamp").to_unix();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(now.abs_diff(secs) <= 5, "{a}: {secs} vs {now}");
    }

    #[test]
    fn secrets_are_160_random_bits_in_crockford_base32() {
        let k = new_secret("wk");
        assert_eq!(k.len(), 3 + 32, "{k}");
        assert!(k.starts_with("wk_"), "{k}");
        assert!(k[3..].bytes().all(|c| CROCKFORD.contains(&c)), "{k}");
        assert_ne!(k, new_secret("wk"));
    }

    #[test]
    fn sha256_hex_matches_the_standard_vectors() {
        // FIPS 180-2 test vectors.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

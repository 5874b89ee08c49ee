//! The sticky bucket: a stable hash of (salt, key) into 10,000 buckets.
//!
//! Every gateway replica, worker, restart and Rust version must agree, so this is spelled out
//! here (and in the README) rather than borrowed from `std`, whose hasher may change:
//!
//! 1. `h` = 64-bit FNV-1a over the salt's bytes, one `0xFF` byte, then the key's bytes
//!    (`0xFF` never occurs in UTF-8, so `("ab", "c")` and `("a", "bc")` differ);
//! 2. `h` = MurmurHash3's 64-bit finaliser (`fmix64`) of `h`, so similar keys spread evenly;
//! 3. bucket = `(h * 10_000) >> 64` in 128-bit arithmetic, a number in `0..10_000`.
//!
//! A request is on the canary when `bucket < canary_weight * 100`, so raising the weight only
//! ever moves users from primary to canary.

/// Number of buckets: one per basis point of weight.
pub const BUCKETS: u16 = 10_000;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const SALT_SEPARATOR: u8 = 0xff;

/// The bucket in `0..BUCKETS` of a sticky key under a route's salt.
pub fn bucket(salt: &[u8], key: &[u8]) -> u16 {
    let mut h = FNV_OFFSET_BASIS;
    for &byte in salt.iter().chain(&[SALT_SEPARATOR]).chain(key) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    let spread = (u128::from(fmix64(h)) * u128::from(BUCKETS)) >> 64;
    // `spread` < BUCKETS by construction, so the conversion cannot fail.
    u16::try_from(spread).unwrap_or(BUCKETS - 1)
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Golden vectors: these buckets are a promise to every deployed user. If this test fails,
    /// the change would move sticky users between variants on upgrade; do not "fix" the table.
    /// `tests/e2e/sticky_hash.py` computes the same values independently.
    const GOLDEN: &[(&str, &[u8], u16)] = &[
        ("sklearn-predictor.example.com", b"user-1", 609),
        ("sklearn-predictor.example.com", b"user-2", 9231),
        ("sklearn-predictor.example.com", b"alice", 3183),
        ("sklearn-predictor.example.com", b"", 5437),
        ("shop.example.com", b"user-1", 6453),
        ("", b"user-1", 6822),
        ("shop.example.com", b"10.1.2.3", 1748),
        ("shop.example.com", b"\xff\xfe\x00binary", 8452),
    ];

    #[test]
    fn matches_golden_vectors() {
        for &(salt, key, expected) in GOLDEN {
            assert_eq!(bucket(salt.as_bytes(), key), expected, "salt {salt:?} key {key:?}");
        }
    }

    #[test]
    fn salt_and_key_boundary_matters() {
        assert_ne!(bucket(b"ab", b"c"), bucket(b"a", b"bc"));
    }

    #[test]
    fn buckets_are_in_range_and_roughly_uniform() {
        let mut per_decile = [0u32; 10];
        for i in 0..100_000u32 {
            let b = bucket(b"salt", format!("user-{i}").as_bytes());
            assert!(b < BUCKETS);
            if let Some(count) = per_decile.get_mut(usize::from(b / 1000)) {
                *count += 1;
            }
        }
        // 10,000 expected per decile; 5 standard deviations is about 475.
        for count in per_decile {
            assert!((9_500..=10_500).contains(&count), "deciles {per_decile:?}");
        }
    }

    #[test]
    fn different_salts_split_independently() {
        let same = (0..10_000u32)
            .filter(|i| {
                let key = format!("user-{i}");
                (bucket(b"a.example.com", key.as_bytes()) < 5_000) == (bucket(b"b.example.com", key.as_bytes()) < 5_000)
            })
            .count();
        // Independent 50/50 splits agree about half the time.
        assert!((4_700..=5_300).contains(&same), "{same}");
    }
}

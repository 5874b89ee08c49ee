//! Signed, expiring pin tokens: a test pin that only holders of a key can mint.
//!
//! A token is `v1.<release>.<expiry>.<mac>`: `<release>` is `primary` or `canary`, `<expiry>`
//! Unix seconds (the token is valid while the clock is below it), and `<mac>` the base64url
//! (unpadded) HMAC-SHA256, under one of the keys, of `v1.<host>.<release>.<expiry>`, `<host>`
//! being the route's host as the config normalises it (lower case, no trailing dot). The host
//! is signed but not carried, so a token for one route never verifies on another.
//!
//! Keys come as one value (an environment variable): standard base64 keys of at least
//! [`MIN_KEY_BYTES`] bytes, separated by commas. Any of them verifies, so a new key can be
//! added before tools sign with it; tools sign with the first.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::Variant;

/// The only token version this filter reads and mints.
pub const VERSION: &str = "v1";
/// The shortest key accepted: the size of SHA-256's output, as RFC 2104 recommends.
pub const MIN_KEY_BYTES: usize = 32;
/// No well-formed token is longer (`v1.primary.` + 20 digits + `.` + 43 MAC characters is 75):
/// anything longer is refused before it is looked at.
const MAX_TOKEN_LEN: usize = 80;
/// The digits of `u64::MAX`.
const MAX_EXPIRY_DIGITS: usize = 20;
/// HMAC-SHA256's output, 32 bytes, in unpadded base64.
const MAC_BASE64_LEN: usize = 43;

/// Keys as operators write them: standard base64, with or without padding.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

/// The keys tokens are verified with, in the order given; the first signs. Each is kept as an
/// HMAC state with the key already absorbed, so a verification only hashes the message.
#[derive(Clone, Default)]
pub struct PinKeys(Arc<[HmacSha256]>);

impl PinKeys {
    /// Parses `key1,key2,...`; spaces and newlines around each key are ignored (a Secret written
    /// from a file often ends in one). Never echoes a key in an error.
    pub fn parse(value: &str) -> Result<PinKeys, KeyError> {
        if value.trim_ascii().is_empty() {
            return Err(KeyError::Empty);
        }
        let mut keys = Vec::new();
        for (index, text) in value.split(',').enumerate() {
            let number = index + 1;
            let text = text.trim_ascii();
            if text.is_empty() {
                return Err(KeyError::EmptyKey { number });
            }
            let bytes = KEY_BASE64.decode(text).map_err(|_| KeyError::NotBase64 { number })?;
            if bytes.len() < MIN_KEY_BYTES {
                return Err(KeyError::TooShort {
                    number,
                    bytes: bytes.len(),
                });
            }
            // HMAC takes a key of any length; the error cannot happen.
            let mac = HmacSha256::new_from_slice(&bytes).map_err(|_| KeyError::NotBase64 { number })?;
            keys.push(mac);
        }
        Ok(PinKeys(keys.into()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A token for `release` on `host` that expires at `expiry`, signed with the first key;
    /// `None` if there is no key.
    pub fn mint(&self, host: &str, release: Variant, expiry: u64) -> Option<String> {
        let expiry = expiry.to_string();
        let mut mac = self.0.first()?.clone();
        absorb_message(
            &mut mac,
            host.as_bytes(),
            release.as_str().as_bytes(),
            expiry.as_bytes(),
        );
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Some(format!("{VERSION}.{}.{expiry}.{signature}", release.as_str()))
    }

    /// Checks `token` for `host` at Unix time `now()`: the release it names, or why it does not
    /// count. The clock is read only for a token whose signature verifies. The comparison of
    /// MACs takes the same time wherever they differ.
    pub fn verify(&self, token: &[u8], host: &str, now: impl FnOnce() -> u64) -> Result<VerifiedToken, TokenRejection> {
        self.verify_within(token, host, now, None)
    }

    /// As `verify`, refusing also a token that would stay valid for more than `max_ttl_seconds`
    /// from now.
    pub fn verify_within(
        &self,
        token: &[u8],
        host: &str,
        now: impl FnOnce() -> u64,
        max_ttl_seconds: Option<u64>,
    ) -> Result<VerifiedToken, TokenRejection> {
        let parts = TokenParts::parse(token)?;
        let key = self
            .0
            .iter()
            .position(|key| {
                let mut mac = key.clone();
                absorb_message(&mut mac, host.as_bytes(), parts.release_text, parts.expiry_text);
                mac.verify_slice(&parts.mac).is_ok()
            })
            .ok_or(TokenRejection::BadSignature)?;
        let now = now();
        if parts.expiry <= now {
            return Err(TokenRejection::Expired { expiry: parts.expiry });
        }
        if let Some(max_ttl_seconds) = max_ttl_seconds.filter(|&max| parts.expiry - now > max) {
            return Err(TokenRejection::TooLong {
                expiry: parts.expiry,
                max_ttl_seconds,
            });
        }
        Ok(VerifiedToken {
            release: parts.release,
            expiry: parts.expiry,
            key_number: key + 1,
        })
    }
}

impl fmt::Debug for PinKeys {
    /// The number of keys, never the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinKeys({} key(s))", self.0.len())
    }
}

impl PartialEq for PinKeys {
    /// The same set of keys, as shared by the routes of one configuration.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.is_empty() && other.0.is_empty())
    }
}

impl Eq for PinKeys {}

impl Hash for PinKeys {
    /// The number of keys, as `Debug` shows them: equal sets of keys have equal numbers.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.len().hash(state);
    }
}

/// `v1.<host>.<release>.<expiry>`, without building it in memory.
fn absorb_message(mac: &mut HmacSha256, host: &[u8], release: &[u8], expiry: &[u8]) {
    for part in [VERSION.as_bytes(), b".", host, b".", release, b".", expiry] {
        mac.update(part);
    }
}

/// A token that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedToken {
    pub release: Variant,
    /// Unix seconds; the token is valid before this.
    pub expiry: u64,
    /// Which key verified it, from 1, in the order the keys are given.
    pub key_number: usize,
}

/// Why a token does not pin. What `canary-split explain` prints, and what metrics count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// Not `v1.<release>.<expiry>.<mac>`: wrong shape, not ASCII, too long, a bad MAC encoding.
    Malformed,
    /// A version other than `v1`.
    UnknownVersion,
    /// No key verifies the MAC for this route's host: another host's token, an unknown key, or
    /// an altered token.
    BadSignature,
    /// Genuine, but its expiry (Unix seconds) has passed.
    Expired { expiry: u64 },
    /// Genuine, but valid for longer than the config's `max_token_ttl_seconds` allows from now:
    /// minted with a lifetime no tool should give it (or with a leaked key).
    TooLong { expiry: u64, max_ttl_seconds: u64 },
}

impl TokenRejection {
    /// A short name, fit for a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRejection::Malformed => "malformed",
            TokenRejection::UnknownVersion => "unknown_version",
            TokenRejection::BadSignature => "bad_signature",
            TokenRejection::Expired { .. } => "expired",
            TokenRejection::TooLong { .. } => "too_long",
        }
    }
}

impl fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenRejection::Malformed => f.write_str("malformed (expected v1.<release>.<expiry>.<mac>)"),
            TokenRejection::UnknownVersion => write!(f, "unknown version (this filter reads {VERSION})"),
            TokenRejection::BadSignature => f.write_str(
                "bad signature: no key verifies it for this host (signed for another host, with an unknown key, or altered)",
            ),
            TokenRejection::Expired { expiry } => write!(f, "expired at {expiry} (Unix seconds)"),
            TokenRejection::TooLong { expiry, max_ttl_seconds } => write!(
                f,
                "valid until {expiry} (Unix seconds), longer than max_token_ttl_seconds ({max_ttl_seconds}) from now"
            ),
        }
    }
}

/// A token's fields, checked for shape only.
struct TokenParts<'t> {
    release: Variant,
    release_text: &'t [u8],
    expiry: u64,
    expiry_text: &'t [u8],
    mac: [u8; 32],
}

impl<'t> TokenParts<'t> {
    fn parse(token: &'t [u8]) -> Result<Self, TokenRejection> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenRejection::Malformed);
        }
        let (version, rest) = split_at_dot(token).ok_or(TokenRejection::Malformed)?;
        if version != VERSION.as_bytes() {
            return Err(TokenRejection::UnknownVersion);
        }
        let (release_text, rest) = split_at_dot(rest).ok_or(TokenRejection::Malformed)?;
        let (expiry_text, mac_text) = split_at_dot(rest).ok_or(TokenRejection::Malformed)?;
        let release = match release_text {
            b"primary" => Variant::Primary,
            b"canary" => Variant::Canary,
            _ => return Err(TokenRejection::Malformed),
        };
        let expiry = parse_expiry(expiry_text).ok_or(TokenRejection::Malformed)?;
        let mut mac = [0; 32];
        // Exactly 43 characters decode to 32 bytes; the engine refuses non-canonical final bits,
        // so one MAC has one spelling.
        if mac_text.len() != MAC_BASE64_LEN || URL_SAFE_NO_PAD.decode_slice(mac_text, &mut mac) != Ok(32) {
            return Err(TokenRejection::Malformed);
        }
        Ok(TokenParts {
            release,
            release_text,
            expiry,
            expiry_text,
            mac,
        })
    }
}

fn split_at_dot(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let dot = text.iter().position(|&b| b == b'.')?;
    Some((text.get(..dot)?, text.get(dot + 1..)?))
}

/// Decimal digits only, as `u64::to_string` writes them: no sign, no leading zero.
fn parse_expiry(text: &[u8]) -> Option<u64> {
    let canonical = match text {
        [b'0'] => true,
        [first, ..] => *first != b'0' && text.len() <= MAX_EXPIRY_DIGITS,
        [] => false,
    };
    if !canonical || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Why a key list was refused. Names a key by its position, never by its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    EmptyKey { number: usize },
    NotBase64 { number: usize },
    TooShort { number: usize, bytes: usize },
}

impl KeyError {
    /// What is wrong, in a sentence about `subject`, the name the keys came under.
    pub fn describe(&self, subject: &str) -> String {
        match self {
            KeyError::Empty => format!("{subject} is empty"),
            KeyError::EmptyKey { number } => format!("key {number} in {subject} is empty"),
            KeyError::NotBase64 { number } => format!("key {number} in {subject} is not standard base64"),
            KeyError::TooShort { number, bytes } => {
                format!("key {number} in {subject} has {bytes} bytes (at least {MIN_KEY_BYTES} needed)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Key 1 is the bytes 0, 1, ..., 31; key 2 is 32 bytes of 0xAB. `tests/e2e/pin_token.py`
    /// mints the golden tokens below independently, with Python's hmac and hashlib.
    const KEY_1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY_2: &str = "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s";
    const HOST: &str = "shop.example.com";
    const GOLDEN: &[(&str, &str, Variant, u64, &str)] = &[
        (
            KEY_1,
            HOST,
            Variant::Canary,
            1_900_000_000,
            "v1.canary.1900000000.J8D8x7_fcidAkCA87FHrLguRkpzY6KXI_1nXyZYpc6c",
        ),
        (
            KEY_1,
            HOST,
            Variant::Primary,
            1_900_000_000,
            "v1.primary.1900000000.5RDX-Pdyk1i0oS-shVLo63En12hW6H4M3mocaCTiVtQ",
        ),
        (
            KEY_2,
            "sklearn-predictor-models.example.com",
            Variant::Canary,
            0,
            "v1.canary.0.JasQoAjtRtXEQdEyjfYRtGGoFywpJ5JFBELRl3n4cr0",
        ),
    ];

    fn keys(value: &str) -> PinKeys {
        PinKeys::parse(value).expect("valid keys")
    }

    #[test]
    fn golden_tokens_match_the_independent_implementation() {
        for &(key, host, release, expiry, token) in GOLDEN {
            assert_eq!(
                keys(key).mint(host, release, expiry).as_deref(),
                Some(token),
                "{host} {expiry}"
            );
            assert_eq!(
                keys(key).verify(token.as_bytes(), host, || 0).map(|v| v.release),
                if expiry == 0 {
                    Err(TokenRejection::Expired { expiry: 0 })
                } else {
                    Ok(release)
                }
            );
        }
    }

    #[test]
    fn a_token_verifies_until_its_expiry() {
        let keys = keys(KEY_1);
        let token = keys.mint(HOST, Variant::Canary, 1_000).expect("minted");
        let verified = VerifiedToken {
            release: Variant::Canary,
            expiry: 1_000,
            key_number: 1,
        };
        assert_eq!(keys.verify(token.as_bytes(), HOST, || 999), Ok(verified));
        for now in [1_000, 1_001, u64::MAX] {
            assert_eq!(
                keys.verify(token.as_bytes(), HOST, || now),
                Err(TokenRejection::Expired { expiry: 1_000 }),
                "{now}"
            );
        }
    }

    #[test]
    fn any_listed_key_verifies_and_the_first_signs() {
        let rotating = keys(&format!("{KEY_2}, {KEY_1}\n"));
        assert_eq!(rotating.len(), 2);
        let old = keys(KEY_1).mint(HOST, Variant::Canary, 2_000).expect("minted");
        let new = rotating.mint(HOST, Variant::Canary, 2_000).expect("minted");
        assert_eq!(new, keys(KEY_2).mint(HOST, Variant::Canary, 2_000).expect("minted"));
        assert_eq!(rotating.verify(new.as_bytes(), HOST, || 0).map(|v| v.key_number), Ok(1));
        assert_eq!(rotating.verify(old.as_bytes(), HOST, || 0).map(|v| v.key_number), Ok(2));
        assert_eq!(
            keys(KEY_2).verify(old.as_bytes(), HOST, || 0),
            Err(TokenRejection::BadSignature)
        );
    }

    #[test]
    fn other_hosts_and_altered_tokens_do_not_verify() {
        let keys = keys(KEY_1);
        let token = keys.mint(HOST, Variant::Primary, 5_000).expect("minted");
        let never = || -> u64 { panic!("the clock is read only for a genuine token") };
        for host in ["other.example.com", "shop.example.com.", "Shop.example.com", ""] {
            assert_eq!(
                keys.verify(token.as_bytes(), host, never),
                Err(TokenRejection::BadSignature),
                "{host}"
            );
        }
        let altered = [
            token.replace(".primary.", ".canary."),
            token.replace(".5000.", ".5001."),
            token.replace(".5000.", ".50000."),
        ];
        for altered in altered {
            assert_eq!(
                keys.verify(altered.as_bytes(), HOST, never),
                Err(TokenRejection::BadSignature),
                "{altered}"
            );
        }
    }

    #[test]
    fn rejects_tokens_that_are_not_v1_tokens() {
        let keys = keys(KEY_1);
        let good = keys.mint(HOST, Variant::Canary, 5_000).expect("minted");
        let mac = good.rsplit('.').next().expect("a MAC");
        let cases: Vec<(Vec<u8>, TokenRejection)> = vec![
            (b"".to_vec(), TokenRejection::Malformed),
            (b"test".to_vec(), TokenRejection::Malformed),
            (b"v1".to_vec(), TokenRejection::Malformed),
            (
                format!("v2.canary.5000.{mac}").into_bytes(),
                TokenRejection::UnknownVersion,
            ),
            (
                format!("V1.canary.5000.{mac}").into_bytes(),
                TokenRejection::UnknownVersion,
            ),
            (format!("v1.beta.5000.{mac}").into_bytes(), TokenRejection::Malformed),
            (format!("v1.Canary.5000.{mac}").into_bytes(), TokenRejection::Malformed),
            (format!("v1.canary.05000.{mac}").into_bytes(), TokenRejection::Malformed),
            (format!("v1.canary.+5000.{mac}").into_bytes(), TokenRejection::Malformed),
            (format!("v1.canary..{mac}").into_bytes(), TokenRejection::Malformed),
            (
                format!("v1.canary.18446744073709551616.{mac}").into_bytes(),
                TokenRejection::Malformed,
            ),
            (format!("v1.canary.5000.{mac}=").into_bytes(), TokenRejection::Malformed),
            (
                format!("v1.canary.5000.{}", &mac[1..]).into_bytes(),
                TokenRejection::Malformed,
            ),
            (
                format!("v1.canary.5000.{}", mac.replace(['-', '_'], "+")).into_bytes(),
                TokenRejection::Malformed,
            ),
            (
                format!("v1.canary.5000.{mac}.x").into_bytes(),
                TokenRejection::Malformed,
            ),
            (
                format!("v1.canary.5000.{}", "A".repeat(43)).into_bytes(),
                TokenRejection::BadSignature,
            ),
            ([good.as_bytes(), b"\xff"].concat(), TokenRejection::Malformed),
            (vec![b'v'; 10 * 1024], TokenRejection::Malformed),
        ];
        for (token, expected) in cases {
            assert_eq!(
                keys.verify(&token, HOST, || 0),
                Err(expected),
                "{}",
                String::from_utf8_lossy(&token)
            );
        }
    }

    #[test]
    fn a_mac_has_one_spelling() {
        // The last of 43 base64 characters carries 2 unused bits: a token that sets them is
        // another string for the same MAC, and is refused.
        let keys = keys(KEY_1);
        let token = keys.mint(HOST, Variant::Canary, 5_000).expect("minted");
        let last = token.chars().last().expect("a character");
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.find(last).expect("base64url");
        let sibling = alphabet.chars().nth(index ^ 1).expect("in the alphabet");
        let respelt = format!("{}{sibling}", &token[..token.len() - 1]);
        assert_eq!(
            keys.verify(respelt.as_bytes(), HOST, || 0),
            Err(TokenRejection::Malformed)
        );
    }

    #[test]
    fn parses_key_lists_and_says_what_is_wrong() {
        assert_eq!(keys(KEY_1).len(), 1);
        assert_eq!(keys(&format!(" {KEY_1} ,{KEY_2}\n")).len(), 2);
        let short = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg=="; // 31 bytes
        let cases = [
            ("", "KEYS is empty"),
            (" \n", "KEYS is empty"),
            (&format!("{KEY_1},"), "key 2 in KEYS is empty"),
            (&format!("{KEY_1},,{KEY_2}"), "key 2 in KEYS is empty"),
            ("not base64!", "key 1 in KEYS is not standard base64"),
            (
                &format!("{KEY_1},{}", URL_SAFE_NO_PAD.encode([0xfb; 32])),
                "key 2 in KEYS is not standard base64",
            ),
            (short, "key 1 in KEYS has 31 bytes (at least 32 needed)"),
            (
                &format!("{KEY_2},{short}"),
                "key 2 in KEYS has 31 bytes (at least 32 needed)",
            ),
        ];
        for (value, expected) in cases {
            let error = PinKeys::parse(value).map(|k| k.len()).map_err(|e| e.describe("KEYS"));
            assert_eq!(error, Err(expected.to_owned()), "{value:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        assert_eq!(format!("{:?}", keys(&format!("{KEY_1},{KEY_2}"))), "PinKeys(2 key(s))");
    }

    #[test]
    fn rejection_names_for_metrics_and_people() {
        let cases = [
            (TokenRejection::Malformed, "malformed", "malformed (expected v1.<release>.<expiry>.<mac>)"),
            (TokenRejection::UnknownVersion, "unknown_version", "unknown version (this filter reads v1)"),
            (
                TokenRejection::BadSignature,
                "bad_signature",
                "bad signature: no key verifies it for this host (signed for another host, with an unknown key, or altered)",
            ),
            (TokenRejection::Expired { expiry: 7 }, "expired", "expired at 7 (Unix seconds)"),
        ];
        for (rejection, name, text) in cases {
            assert_eq!((rejection.as_str(), rejection.to_string().as_str()), (name, text));
        }
    }

    mod properties {
        use super::*;
        use crate::properties::check;
        use proptest::collection::vec;
        use proptest::prelude::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;

        /// Random bytes, and random bytes dressed as a v1 token, never verify (and never panic).
        #[test]
        fn random_tokens_never_verify() {
            let keys = keys(KEY_1);
            let dressed = (
                prop_oneof![Just("primary".to_owned()), Just("canary".to_owned()), "[a-z]{0,8}"],
                any::<u64>(),
                "[A-Za-z0-9_-]{40,45}",
            )
                .prop_map(|(release, expiry, mac)| format!("v1.{release}.{expiry}.{mac}").into_bytes());
            check(prop_oneof![vec(any::<u8>(), 0..200), dressed], |token| {
                prop_assert!(keys.verify(&token, HOST, || 0).is_err());
                Ok(())
            });
        }

        /// A genuine token verifies only for its own host, and not after any one byte changes.
        #[test]
        fn a_changed_byte_or_host_breaks_a_token() {
            let keys = keys(KEY_2);
            let cases = (
                any::<bool>(),
                1..u64::MAX,
                any::<prop::sample::Index>(),
                1..=255u8,
                "[a-z.]{1,20}",
            );
            check(cases, |(canary, expiry, at, flip, other_host)| {
                let release = if canary { Variant::Canary } else { Variant::Primary };
                let token = keys.mint(HOST, release, expiry).expect("minted").into_bytes();
                prop_assert_eq!(keys.verify(&token, HOST, || 0).map(|v| v.release), Ok(release));
                if other_host != HOST {
                    prop_assert!(keys.verify(&token, &other_host, || 0).is_err());
                }
                let mut changed = token.clone();
                changed[at.index(token.len())] ^= flip;
                prop_assert!(keys.verify(&changed, HOST, || 0).is_err());
                Ok(())
            });
        }
    }
}

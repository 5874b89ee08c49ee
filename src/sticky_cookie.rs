//! Sticky keys the filter hands out in a cookie (`"sticky": {"cookie": NAME, "assign": {...}}`):
//! a user who brings no key gets a new random one, is decided with it as if they had sent it, and
//! keeps it in a cookie, so they keep their release.
//!
//! The key is not a secret: it only spreads users evenly over the buckets and tells them apart,
//! and a client may choose its own, as with any sticky key. It is [`KEY_BYTES`] bytes (128 bits)
//! that the filter asks the host for on each new key (WASI `random_get`, which Envoy fills from
//! its cryptographic generator), every bit of them kept, in base64url (22 characters). Not from
//! `fastrand`: its state is 64 bits, and in a Wasm VM it seeds itself from the clock and the thread
//! id, not from the host.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// `max_age_seconds` when the configuration leaves it out: 30 days.
pub const DEFAULT_MAX_AGE_SECONDS: u32 = 30 * 24 * 3600;
/// The most `max_age_seconds` may be: 400 days, where RFC 6265bis caps a cookie's lifetime.
pub const MAX_MAX_AGE_SECONDS: u32 = 400 * 24 * 3600;
/// `path` when the configuration leaves it out.
pub const DEFAULT_PATH: &str = "/";

/// How a route hands out sticky keys: the cookie and its attributes, validated by `config`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CookieAssignment {
    /// The sticky cookie's name.
    pub cookie: String,
    pub max_age_seconds: u32,
    /// Starts with `/`; visible ASCII without `;`.
    pub path: String,
    /// A host name, lower case, without a leading dot.
    pub domain: Option<String>,
}

impl CookieAssignment {
    /// The `Set-Cookie` value that gives a client `key`; `secure` when the request came over HTTPS.
    /// `HttpOnly`: page scripts never need the key. `SameSite=Lax`: sent on top-level navigation
    /// from other sites, so a user arriving through a link keeps their release.
    pub fn set_cookie(&self, key: &str, secure: bool) -> String {
        let mut header = format!(
            "{}={key}; Path={}; Max-Age={}",
            self.cookie, self.path, self.max_age_seconds
        );
        if let Some(domain) = &self.domain {
            header.push_str("; Domain=");
            header.push_str(domain);
        }
        header.push_str("; HttpOnly; SameSite=Lax");
        if secure {
            header.push_str("; Secure");
        }
        header
    }
}

/// How many random bytes make a sticky key: 128 bits, so keys handed out for years by every replica
/// never repeat in practice.
pub const KEY_BYTES: usize = 16;

/// A new sticky key from the host's random bytes: all of them, in base64url without padding (22
/// characters, all valid in a cookie value and a URL).
pub fn new_key(random: [u8; KEY_BYTES]) -> String {
    URL_SAFE_NO_PAD.encode(random)
}

/// Whether a request came over HTTPS, from `x-forwarded-proto` as Envoy passes it on. An edge
/// Envoy (`use_remote_address`, as Istio's gateways run) sets it from the downstream connection,
/// replacing what the client sent, unless it trusts hops in front of it (`xff_num_trusted_hops`,
/// Istio's `numTrustedProxies`), whose value it keeps: behind a load balancer that terminates TLS,
/// that is the client's protocol. Elsewhere Envoy sets it only when the client did not, and a
/// client's claim changes only its own cookie. `:scheme` would not do: Envoy keeps an HTTP/2
/// client's own.
pub fn is_https(forwarded_proto: Option<&[u8]>) -> bool {
    forwarded_proto.is_some_and(|proto| proto.eq_ignore_ascii_case(b"https"))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn assignment(domain: Option<&str>) -> CookieAssignment {
        CookieAssignment {
            cookie: "canary-split-user".to_owned(),
            max_age_seconds: DEFAULT_MAX_AGE_SECONDS,
            path: DEFAULT_PATH.to_owned(),
            domain: domain.map(str::to_owned),
        }
    }

    #[test]
    fn set_cookie_carries_the_key_and_every_attribute() {
        assert_eq!(
            assignment(None).set_cookie("abc", false),
            "canary-split-user=abc; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            assignment(Some("example.com")).set_cookie("abc", true),
            "canary-split-user=abc; Path=/; Max-Age=2592000; Domain=example.com; HttpOnly; SameSite=Lax; Secure"
        );
    }

    fn is_url_safe(key: &str) -> bool {
        key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn keys_are_22_url_safe_characters_carrying_every_random_byte() {
        let counting: [u8; KEY_BYTES] = std::array::from_fn(|i| (i * 17) as u8);
        for random in [[0; KEY_BYTES], [0xff; KEY_BYTES], counting] {
            let key = new_key(random);
            assert_eq!(key.len(), 22, "{key}");
            assert!(is_url_safe(&key), "{key}");
            assert_eq!(URL_SAFE_NO_PAD.decode(&key).expect("base64url"), random);
        }
    }

    /// Flipping any one of the 128 bits gives another key: no bit is dropped or folded into another.
    #[test]
    fn every_bit_changes_the_key() {
        let base: [u8; KEY_BYTES] = std::array::from_fn(|i| (i * 73) as u8 ^ 0xa5);
        let mut keys = std::collections::BTreeSet::from([new_key(base)]);
        for byte in 0..KEY_BYTES {
            for bit in 0..8 {
                let mut flipped = base;
                flipped[byte] ^= 1 << bit;
                let key = new_key(flipped);
                assert!(key.len() == 22 && is_url_safe(&key), "{key}");
                assert!(keys.insert(key), "byte {byte} bit {bit} does not change the key");
            }
        }
        assert_eq!(keys.len(), 1 + 8 * KEY_BYTES);
    }

    #[test]
    fn https_only_from_x_forwarded_proto_https() {
        assert!(is_https(Some(b"https")));
        assert!(is_https(Some(b"HTTPS")));
        for other in [&b"http"[..], b"", b"https, http", b"\xff"] {
            assert!(!is_https(Some(other)), "{other:?}");
        }
        assert!(!is_https(None));
    }
}

//! Turning a request's `:authority` into the host name that routes are keyed by.

/// Longest DNS name; a longer authority cannot match any configured host.
pub const MAX_HOST_LEN: usize = 253;

/// The host part of an authority, lower-cased into `buffer`: port and one trailing dot removed,
/// so `Shop.Example.com.:8443` matches the route for `shop.example.com`. `None` when the host is
/// empty or longer than any valid host name. Works on raw bytes: a client may send anything.
pub fn normalized_host<'b>(authority: &[u8], buffer: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b [u8]> {
    let host = strip_port(authority);
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return None;
    }
    let out = buffer.get_mut(..host.len())?;
    for (dst, src) in out.iter_mut().zip(host) {
        *dst = src.to_ascii_lowercase();
    }
    Some(out)
}

fn strip_port(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        // IPv6 literal: `[::1]:8080` keeps `[::1]`.
        return match authority.iter().position(|&b| b == b']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        };
    }
    match authority.iter().position(|&b| b == b':') {
        Some(colon) => authority.get(..colon).unwrap_or(authority),
        None => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn host(authority: &[u8]) -> Option<Vec<u8>> {
        let mut buffer = [0; MAX_HOST_LEN];
        normalized_host(authority, &mut buffer).map(<[u8]>::to_vec)
    }

    #[test]
    fn lower_cases_and_drops_port_and_trailing_dot() {
        assert_eq!(
            host(b"Shop.Example.COM:8443").as_deref(),
            Some(&b"shop.example.com"[..])
        );
        assert_eq!(host(b"shop.example.com.").as_deref(), Some(&b"shop.example.com"[..]));
        assert_eq!(host(b"shop.example.com.:80").as_deref(), Some(&b"shop.example.com"[..]));
        assert_eq!(host(b"plain").as_deref(), Some(&b"plain"[..]));
    }

    #[test]
    fn keeps_ipv6_literals_whole() {
        assert_eq!(host(b"[::1]:8080").as_deref(), Some(&b"[::1]"[..]));
        assert_eq!(host(b"[::1]").as_deref(), Some(&b"[::1]"[..]));
        assert_eq!(host(b"[::1").as_deref(), Some(&b"[::1"[..]));
    }

    #[test]
    fn rejects_empty_and_overlong_hosts() {
        assert_eq!(host(b""), None);
        assert_eq!(host(b":80"), None);
        assert_eq!(host(b"."), None);
        assert_eq!(host(&[b'a'; MAX_HOST_LEN + 1]), None);
        assert!(host(&[b'a'; MAX_HOST_LEN]).is_some());
    }

    #[test]
    fn passes_non_utf8_bytes_through() {
        assert_eq!(host(b"\xff\xFEa:1").as_deref(), Some(&b"\xff\xfea"[..]));
    }
}

//! Reading one cookie out of a `Cookie` request header (RFC 6265 `name=value; name2=value2`).

/// The value of the first cookie called `name`, with optional surrounding double quotes removed.
/// Lenient on purpose: pairs without `=` and stray spaces are skipped, never an error.
pub fn find<'h>(cookie_header: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    cookie_header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (pair_name, rest) = pair.split_at(eq);
        if pair_name.trim_ascii() != name {
            return None;
        }
        let value = rest.get(1..)?.trim_ascii();
        Some(
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn finds_a_cookie_among_others() {
        let header = b"session=abc; canary=never;uid=42";
        assert_eq!(find(header, b"canary"), Some(&b"never"[..]));
        assert_eq!(find(header, b"uid"), Some(&b"42"[..]));
        assert_eq!(find(header, b"session"), Some(&b"abc"[..]));
        assert_eq!(find(header, b"missing"), None);
    }

    #[test]
    fn first_occurrence_wins_and_names_match_exactly() {
        assert_eq!(find(b"uid=1; uid=2", b"uid"), Some(&b"1"[..]));
        assert_eq!(find(b"xuid=1; uid=2", b"uid"), Some(&b"2"[..]));
        assert_eq!(find(b"UID=1", b"uid"), None);
    }

    #[test]
    fn tolerates_odd_formatting() {
        assert_eq!(find(b"  uid = 7 ;", b"uid"), Some(&b"7"[..]));
        assert_eq!(find(b"uid=\"quoted\"", b"uid"), Some(&b"quoted"[..]));
        assert_eq!(find(b"uid=", b"uid"), Some(&b""[..]));
        assert_eq!(find(b"novalue; uid=3", b"uid"), Some(&b"3"[..]));
        assert_eq!(find(b";;;", b"uid"), None);
        assert_eq!(find(b"", b"uid"), None);
    }

    #[test]
    fn keeps_non_utf8_values_as_bytes() {
        assert_eq!(find(b"uid=\xff\xfe", b"uid"), Some(&b"\xff\xfe"[..]));
    }
}

//! Reading cookies out of a `Cookie` request header (RFC 6265 `name=value; name2=value2`).

use std::ops::Range;

/// The value of the first cookie called `name`, with optional surrounding double quotes removed.
/// Lenient on purpose: pairs without `=` and stray spaces are skipped, never an error.
pub fn find<'h>(cookie_header: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    let names = [name];
    let [range] = collect(cookie_header, &names).try_into().ok()?;
    cookie_header.get(range?)
}

/// Where in `cookie_header` the value of the first cookie of each of `names` is (as `find`
/// reads it), in one pass over the header however many names there are.
pub fn collect(cookie_header: &[u8], names: &[impl AsRef<[u8]>]) -> Vec<Option<Range<usize>>> {
    let mut found = vec![None; names.len()];
    let mut missing = names.len();
    let mut start = 0;
    for pair in cookie_header.split(|&b| b == b';') {
        let pair_start = start;
        start += pair.len() + 1;
        if missing == 0 {
            break;
        }
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (pair_name, rest) = pair.split_at(eq);
        let pair_name = pair_name.trim_ascii();
        let Some(slot) = names
            .iter()
            .position(|name| name.as_ref() == pair_name)
            .and_then(|index| found.get_mut(index))
        else {
            continue;
        };
        if slot.is_some() {
            continue;
        }
        let raw = rest.get(1..).unwrap_or_default();
        let value = raw.trim_ascii();
        let mut value_start = pair_start + eq + 1 + (raw.len() - raw.trim_ascii_start().len());
        let mut value_len = value.len();
        if value_len >= 2 && value.starts_with(b"\"") && value.ends_with(b"\"") {
            value_start += 1;
            value_len -= 2;
        }
        *slot = Some(value_start..value_start + value_len);
        missing -= 1;
    }
    found
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

    /// One name at a time, rescanning the header: how cookies were read before `collect`.
    fn rescan<'h>(cookie_header: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
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

    #[test]
    fn one_pass_reads_every_name_as_rescanning_does() {
        use proptest::collection::vec;
        use proptest::sample::select;
        let names = ["a", "b", "ab", "c"];
        let piece = select(vec!["a", "b", "ab", "c", "=", ";", " ", "\"", "x", "\t"]);
        crate::properties::check(vec(piece, 0..40), |pieces| {
            let header = pieces.concat();
            let found = collect(header.as_bytes(), &names);
            for (name, range) in names.iter().zip(&found) {
                let collected = range.clone().and_then(|range| header.as_bytes().get(range));
                proptest::prop_assert_eq!(collected, rescan(header.as_bytes(), name.as_bytes()), "{:?}", header);
            }
            Ok(())
        });
    }

    #[test]
    fn collects_several_names_in_one_pass_as_find_reads_each() {
        let header = b" a=1; b = \"two\" ;c;a=3; d=\"; e=\"\"";
        let names = ["a", "b", "c", "d", "e", "z"];
        let found = collect(header, &names);
        for (name, range) in names.iter().zip(&found) {
            let collected = range.clone().and_then(|range| header.get(range));
            assert_eq!(collected, rescan(header, name.as_bytes()), "{name}");
        }
        assert_eq!(found[0].clone().and_then(|r| header.get(r)), Some(&b"1"[..]));
        assert_eq!(found[1].clone().and_then(|r| header.get(r)), Some(&b"two"[..]));
        assert_eq!(found[3].clone().and_then(|r| header.get(r)), Some(&b"\""[..]));
        assert_eq!(found[4].clone().and_then(|r| header.get(r)), Some(&b""[..]));
        assert_eq!(found[2], None);
        assert_eq!(found[5], None);
    }
}

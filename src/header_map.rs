//! Reading the header map as the proxy-wasm host serializes it (`proxy_get_header_map_pairs`):
//! a little-endian `u32` pair count, then a `u32` name length and a `u32` value length per pair,
//! then each name and value followed by a NUL byte.
//!
//! Our own reader, on bytes and bounds-checked: the SDK's turns names into `String` with
//! `unwrap()`, and a malformed map must never panic the VM.

/// Every value of header `name` (lower-case), in order. Stops at the first malformed byte.
pub fn values<'m: 'n, 'n>(serialized: &'m [u8], name: &'n [u8]) -> impl Iterator<Item = &'m [u8]> + 'n {
    pairs(serialized)
        .filter(move |(n, _)| *n == name)
        .map(|(_, value)| value)
}

fn pairs(serialized: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let count = read_u32(serialized, 0).unwrap_or(0);
    let mut lengths_at = 4;
    let mut data_at = count.saturating_mul(8).saturating_add(4);
    (0..count).map_while(move |_| {
        let name_len = read_u32(serialized, lengths_at)?;
        let value_len = read_u32(serialized, lengths_at + 4)?;
        lengths_at += 8;
        let name = serialized.get(data_at..data_at.checked_add(name_len)?)?;
        data_at = data_at.checked_add(name_len)?.checked_add(1)?;
        let value = serialized.get(data_at..data_at.checked_add(value_len)?)?;
        data_at = data_at.checked_add(value_len)?.checked_add(1)?;
        Some((name, value))
    })
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (name, value) in pairs {
            out.extend((name.len() as u32).to_le_bytes());
            out.extend((value.len() as u32).to_le_bytes());
        }
        for (name, value) in pairs {
            out.extend(*name);
            out.push(0);
            out.extend(*value);
            out.push(0);
        }
        out
    }

    #[test]
    fn finds_every_value_of_a_header() {
        let map = serialize(&[
            (b":authority", b"a"),
            (b"cookie", b"x=1"),
            (b"traffic", b"t"),
            (b"cookie", b"y=\xff"),
        ]);
        assert_eq!(
            values(&map, b"cookie").collect::<Vec<_>>(),
            vec![&b"x=1"[..], b"y=\xff"]
        );
        assert_eq!(values(&map, b"traffic").collect::<Vec<_>>(), vec![&b"t"[..]]);
        assert_eq!(values(&map, b"missing").count(), 0);
    }

    #[test]
    fn empty_and_malformed_maps_yield_what_is_readable() {
        assert_eq!(values(b"", b"cookie").count(), 0);
        assert_eq!(values(b"\x01\x00", b"cookie").count(), 0);
        let map = serialize(&[(b"cookie", b"x=1"), (b"cookie", b"y=2")]);
        // Cut inside the second value: the first is still read, nothing past the end.
        let cut = map.get(..map.len() - 3).expect("shorter");
        assert_eq!(values(cut, b"cookie").collect::<Vec<_>>(), vec![&b"x=1"[..]]);
        // A count far larger than the data, and lengths that overflow.
        assert_eq!(
            values(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"cookie").count(),
            0
        );
        for len in 0..map.len() {
            let _ = values(map.get(..len).expect("prefix"), b"cookie").count();
        }
    }
}

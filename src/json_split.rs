//! Splits a config's top-level `routes` array into the JSON text of each route, without parsing
//! the routes, so they can be parsed and validated one at a time (see `Config::from_json`).
//!
//! Deliberately narrow: it only finds value boundaries (strings with escapes, nesting) and gives
//! up (`None`) on anything unexpected, leaving the caller to parse the whole document instead.

pub struct SplitConfig<'j> {
    /// The config with `"routes": []` in place of the routes.
    pub without_routes: Vec<u8>,
    pub routes: Vec<&'j [u8]>,
}

/// `None` unless `json` is an object with exactly one `routes` key whose value is an array.
pub fn split_routes(json: &[u8]) -> Option<SplitConfig<'_>> {
    let mut at = skip_whitespace(json, 0);
    expect(json, &mut at, b'{')?;
    let mut routes_span = None;
    let mut routes = Vec::new();
    at = skip_whitespace(json, at);
    if json.get(at) == Some(&b'}') {
        return None; // no routes at all
    }
    loop {
        let key_start = at;
        at = skip_string(json, at)?;
        let key = json.get(key_start..at)?;
        at = skip_whitespace(json, at);
        expect(json, &mut at, b':')?;
        at = skip_whitespace(json, at);
        if key == b"\"routes\"" {
            if routes_span.is_some() {
                return None; // given twice: the whole-document parse decides which counts
            }
            let array_start = at;
            at = split_array(json, at, &mut routes)?;
            routes_span = Some(array_start..at);
        } else {
            at = skip_value(json, at)?;
        }
        at = skip_whitespace(json, at);
        match json.get(at)? {
            b',' => at = skip_whitespace(json, at + 1),
            b'}' => break,
            _ => return None,
        }
    }
    if skip_whitespace(json, at + 1) != json.len() {
        return None;
    }
    let span = routes_span?;
    let mut without_routes = Vec::with_capacity(json.len() - span.len() + 2);
    without_routes.extend_from_slice(json.get(..span.start)?);
    without_routes.extend_from_slice(b"[]");
    without_routes.extend_from_slice(json.get(span.end..)?);
    Some(SplitConfig { without_routes, routes })
}

/// Adds each element of the array at `at` to `elements`; returns the position after `]`.
fn split_array<'j>(json: &'j [u8], mut at: usize, elements: &mut Vec<&'j [u8]>) -> Option<usize> {
    expect(json, &mut at, b'[')?;
    at = skip_whitespace(json, at);
    if json.get(at) == Some(&b']') {
        return Some(at + 1);
    }
    loop {
        let start = at;
        at = skip_value(json, at)?;
        elements.push(json.get(start..at)?);
        at = skip_whitespace(json, at);
        match json.get(at)? {
            b',' => at = skip_whitespace(json, at + 1),
            b']' => return Some(at + 1),
            _ => return None,
        }
    }
}

/// The position after the value starting at `at` (a string, an object or array with everything
/// nested in it, or a literal). Only boundaries are checked; the JSON parser checks the rest.
fn skip_value(json: &[u8], at: usize) -> Option<usize> {
    match json.get(at)? {
        b'"' => skip_string(json, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = at;
            loop {
                match json.get(at)? {
                    b'"' => {
                        at = skip_string(json, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        _ => {
            let rest = json.get(at..)?;
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace());
            let len = len.unwrap_or(rest.len());
            (len > 0).then_some(at + len)
        }
    }
}

/// The position after the string starting at `at` (which must be `"`).
fn skip_string(json: &[u8], mut at: usize) -> Option<usize> {
    expect(json, &mut at, b'"')?;
    loop {
        match json.get(at)? {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
}

fn skip_whitespace(json: &[u8], at: usize) -> usize {
    let rest = json.get(at..).unwrap_or_default();
    at + rest.iter().take_while(|b| b.is_ascii_whitespace()).count()
}

fn expect(json: &[u8], at: &mut usize, byte: u8) -> Option<()> {
    (json.get(*at) == Some(&byte)).then(|| *at += 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn split(json: &str) -> Option<(String, Vec<String>)> {
        let split = split_routes(json.as_bytes())?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("utf-8");
        Some((
            text(&split.without_routes),
            split.routes.iter().map(|r| text(r)).collect(),
        ))
    }

    #[test]
    fn splits_routes_and_keeps_the_rest() {
        let (rest, routes) =
            split(r#" { "decision_header": "x", "routes" : [ {"a": [1, {"b": "]}"}]} , 7, "s" ] } "#).expect("splits");
        assert_eq!(rest, r#" { "decision_header": "x", "routes" : [] } "#);
        assert_eq!(routes, vec![r#"{"a": [1, {"b": "]}"}]}"#, "7", r#""s""#]);
    }

    #[test]
    fn strings_with_escapes_and_brackets_stay_whole() {
        let (_, routes) = split(r#"{"routes": [{"host": "a\"]},{[\\", "x": "\\"}, {"y": "\u005d"}]}"#).expect("splits");
        assert_eq!(
            routes,
            vec![r#"{"host": "a\"]},{[\\", "x": "\\"}"#, r#"{"y": "\u005d"}"#]
        );
        let (_, routes) = split(r#"{"routes": []}"#).expect("splits");
        assert!(routes.is_empty());
    }

    #[test]
    fn gives_up_on_anything_unexpected() {
        for json in [
            "",
            "[]",
            "{}",
            r#"{"decision_header": "x"}"#,
            r#"{"routes": {}}"#,
            r#"{"routes": [1] "#,
            r#"{"routes": [1]} x"#,
            r#"{"routes": [1], "routes": [2]}"#,
            r#"{"routes": [1,, 2]}"#,
            r#"{"routes": ["unterminated]}"#,
            r#"{"routes" [1]}"#,
            r#"{"rout\u0065s": [1]}"#,
        ] {
            assert!(split_routes(json.as_bytes()).is_none(), "{json}");
        }
    }
}

//! Changes one route's `canary_weight` in a YAML or JSON file by editing the text of that one
//! value, so comments and layout stay and a GitOps diff is one line. The edit is then proven:
//! the edited file must parse to exactly the original with that one value changed. Three parses
//! in all, whatever the number of routes.

use serde_json::Value;

/// How to read the file: all of its documents as one value, in which `pointer` names the weight.
pub struct Document<'a> {
    pub parse: &'a dyn Fn(&str) -> Result<Value, String>,
    /// JSON pointer to the `canary_weight` to change, in what `parse` returns.
    pub pointer: &'a str,
}

/// `text` with the weight at `document.pointer` set to `weight` (a number as the config writes
/// it, e.g. `12.5`), or why that cannot be done by changing one value.
pub fn set_canary_weight(text: &str, document: &Document, weight: &str) -> Result<String, String> {
    let original = (document.parse)(text)?;
    let new_value: Value = serde_json::from_str(weight).map_err(|e| format!("{weight:?} is not a number: {e}"))?;
    let current = original
        .pointer(document.pointer)
        .ok_or_else(|| format!("no value at {}", document.pointer))?;
    if *current == new_value {
        return Ok(text.to_owned());
    }
    let mut expected = original.clone();
    if let Some(slot) = expected.pointer_mut(document.pointer) {
        *slot = new_value;
    }
    let refusal = || {
        format!(
            "cannot find the one `canary_weight: {current}` line that is {} (an anchor, alias or multi-line value?)",
            document.pointer
        )
    };
    let spans: Vec<(usize, usize)> = value_spans(text).collect();
    let (start, end) = span_at_pointer(text, &spans, document)
        .and_then(|index| spans.get(index).copied())
        .ok_or_else(refusal)?;
    let edited = format!(
        "{}{weight}{}",
        text.get(..start).unwrap_or_default(),
        text.get(end..).unwrap_or_default()
    );
    // The proof: the edit changes that one value and nothing else.
    match (document.parse)(&edited) {
        Ok(parsed) if parsed == expected => Ok(edited),
        _ => Err(refusal()),
    }
}

/// Numbers no config has as a weight: candidate `i` is written as `MARKER + i`.
const MARKER: u64 = 7_700_000_000_000;

/// Which of `spans` holds the value at the pointer, in one parse (so a file of thousands of routes
/// is edited in linear time): every candidate is replaced by a marker number of its own, and the
/// marker found at the pointer names it. `None` if the value is not one of them (an alias, say).
fn span_at_pointer(text: &str, spans: &[(usize, usize)], document: &Document) -> Option<usize> {
    let mut marked = String::with_capacity(text.len() + spans.len() * 16);
    let mut copied = 0;
    for (index, &(start, end)) in spans.iter().enumerate() {
        marked.push_str(text.get(copied..start)?);
        marked.push_str(&(MARKER + index as u64).to_string());
        copied = end;
    }
    marked.push_str(text.get(copied..)?);
    let parsed = (document.parse)(&marked).ok()?;
    let marker = parsed.pointer(document.pointer)?.as_u64()?.checked_sub(MARKER)?;
    usize::try_from(marker).ok().filter(|&index| index < spans.len())
}

const KEY: &str = "canary_weight";

/// Byte ranges of every value written as `canary_weight: VALUE` (key quoted or not, value up to
/// the end of the line, a comma, a closing bracket or a comment), in YAML block or flow style or
/// in JSON. Some may be in comments or strings: the caller keeps only the one that proves right.
fn value_spans(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    text.match_indices(KEY).filter_map(move |(at, _)| {
        let before = text.get(..at)?.chars().next_back();
        let quote = before.filter(|c| matches!(c, '"' | '\''));
        let boundary = match quote {
            Some(_) => true,
            None => before.is_none_or(|c| c.is_whitespace() || matches!(c, '{' | ',' | '-')),
        };
        if !boundary {
            return None;
        }
        let mut rest = text.get(at + KEY.len()..)?;
        if let Some(quote) = quote {
            rest = rest.strip_prefix(quote)?;
        }
        let after_colon = rest.trim_start_matches([' ', '\t']).strip_prefix(':')?;
        let value = after_colon.trim_start_matches([' ', '\t']);
        let start = text.len() - value.len();
        let length = value.find([',', '}', ']', '#', '\r', '\n']).unwrap_or(value.len());
        let end = start + value.get(..length)?.trim_end().len();
        // Only a plain number can be the weight's own text (an anchor or a tag is not).
        let literal = text.get(start..end)?;
        (end > start && literal.parse::<f64>().is_ok()).then_some((start, end))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<Value, String> {
        let documents: Result<Vec<Value>, _> = serde_yaml_ng::Deserializer::from_str(text)
            .map(serde::Deserialize::deserialize)
            .collect();
        documents.map(Value::Array).map_err(|e| e.to_string())
    }

    fn json(text: &str) -> Result<Value, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    fn edit(text: &str, pointer: &str, weight: &str) -> Result<String, String> {
        set_canary_weight(text, &Document { parse: &yaml, pointer }, weight)
    }

    fn changed_lines(before: &str, after: &str) -> Vec<(String, String)> {
        assert_eq!(before.lines().count(), after.lines().count());
        before
            .lines()
            .zip(after.lines())
            .filter(|(b, a)| b != a)
            .map(|(b, a)| (b.to_owned(), a.to_owned()))
            .collect()
    }

    const SHIPPED: &str = include_str!("../../istio/wasmplugin.yaml");
    const SHIPPED_WEIGHT: &str = "/0/spec/pluginConfig/routes/0/canary_weight";

    #[test]
    fn the_shipped_wasmplugin_changes_by_one_line_and_keeps_its_comments() {
        let edited = edit(SHIPPED, SHIPPED_WEIGHT, "25").unwrap();
        let changed = changed_lines(SHIPPED, &edited);
        assert_eq!(changed.len(), 1, "{changed:?}");
        let (before, after) = &changed[0];
        assert!(before.trim().starts_with("canary_weight:"), "{before}");
        assert_eq!(*after, before.replace(before.trim(), "canary_weight: 25"));
        let comments = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.trim_start().starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert!(!comments(SHIPPED).is_empty());
        assert_eq!(comments(&edited), comments(SHIPPED));
        assert_eq!(edited.len(), SHIPPED.len() - before.len() + after.len());

        let mut expected = yaml(SHIPPED).unwrap();
        *expected.pointer_mut(SHIPPED_WEIGHT).unwrap() = 25.into();
        assert_eq!(yaml(&edited).unwrap(), expected);
    }

    #[test]
    fn fractional_weights_and_back() {
        let edited = edit(SHIPPED, SHIPPED_WEIGHT, "12.5").unwrap();
        assert!(edited.contains("      canary_weight: 12.5\n"));
        // istio/ ships canary_weight 0 (the first deploy).
        assert_eq!(edit(&edited, SHIPPED_WEIGHT, "0").unwrap(), SHIPPED);
    }

    #[test]
    fn picks_the_route_asked_for_among_equal_weights() {
        let text = "\
# first route's weight: canary_weight: 5
routes:
- {host: a, canary_weight: 5, primary: {}}   # flow style
- host: b
  \"canary_weight\" :   5    # quoted key, spaces
  primary: {}
";
        let edited = edit(text, "/0/routes/1/canary_weight", "7.25").unwrap();
        assert_eq!(
            changed_lines(text, &edited),
            [(
                "  \"canary_weight\" :   5    # quoted key, spaces".to_owned(),
                "  \"canary_weight\" :   7.25    # quoted key, spaces".to_owned()
            )]
        );
        let edited = edit(text, "/0/routes/0/canary_weight", "9").unwrap();
        assert_eq!(
            changed_lines(text, &edited),
            [(
                "- {host: a, canary_weight: 5, primary: {}}   # flow style".to_owned(),
                "- {host: a, canary_weight: 9, primary: {}}   # flow style".to_owned()
            )]
        );
    }

    #[test]
    fn edits_json_filter_configs_too() {
        let text = "{\n  \"routes\": [{\"host\": \"a\", \"canary_weight\": 10, \"primary\": {}}]\n}\n";
        let document = Document {
            parse: &json,
            pointer: "/routes/0/canary_weight",
        };
        assert_eq!(
            set_canary_weight(text, &document, "50").unwrap(),
            text.replace("\"canary_weight\": 10", "\"canary_weight\": 50")
        );
    }

    #[test]
    fn an_unchanged_weight_leaves_the_text_alone() {
        assert_eq!(edit(SHIPPED, SHIPPED_WEIGHT, "0").unwrap(), SHIPPED);
    }

    #[test]
    fn weights_quoted_in_strings_are_no_candidates() {
        let text = "note: 'ramp with canary_weight: 5'\nroutes:\n- {host: a, canary_weight: 5}\n";
        let edited = edit(text, "/0/routes/0/canary_weight", "9").unwrap();
        assert_eq!(
            changed_lines(text, &edited),
            [(
                "- {host: a, canary_weight: 5}".to_owned(),
                "- {host: a, canary_weight: 9}".to_owned()
            )]
        );
    }

    #[test]
    fn two_thousand_routes_are_edited_in_linear_time() {
        let mut text = String::from("routes:\n");
        for n in 0..2_000 {
            text += &format!("- host: h{n}.example.com  # canary_weight: 10\n  canary_weight: 10\n  primary: {{}}\n");
        }
        // Each parse is counted: a search that re-parsed per candidate would make thousands.
        let parses = std::cell::Cell::new(0);
        let counting = |text: &str| {
            parses.set(parses.get() + 1);
            yaml(text)
        };
        let pointer = "/0/routes/1234/canary_weight";
        let edited = set_canary_weight(
            &text,
            &Document {
                parse: &counting,
                pointer,
            },
            "25",
        )
        .unwrap();
        assert_eq!(parses.get(), 3);
        let changed = changed_lines(&text, &edited);
        assert_eq!(
            changed,
            [("  canary_weight: 10".to_owned(), "  canary_weight: 25".to_owned())]
        );
        let line = edited.lines().position(|l| l == "  canary_weight: 25").unwrap();
        assert_eq!(
            edited.lines().nth(line - 1).unwrap(),
            "- host: h1234.example.com  # canary_weight: 10"
        );
    }

    #[test]
    fn refuses_what_one_value_cannot_change() {
        // Route 1 shares route 0's weight through an alias: one value cannot change route 0 alone.
        let anchored = "routes:\n- {host: a, canary_weight: &w 5}\n- {host: b, canary_weight: *w}\n";
        let error = edit(anchored, "/0/routes/0/canary_weight", "9").unwrap_err();
        assert!(
            error.starts_with("cannot find the one `canary_weight: 5` line"),
            "{error}"
        );

        let next_line = "routes:\n- host: a\n  canary_weight:\n    5\n";
        assert!(edit(next_line, "/0/routes/0/canary_weight", "9").is_err());

        assert_eq!(
            edit(SHIPPED, "/0/spec/pluginConfig/routes/3/canary_weight", "9").unwrap_err(),
            "no value at /0/spec/pluginConfig/routes/3/canary_weight"
        );
    }
}

//! The shipped example config is valid, and the JSON Schema lists exactly the fields the filter
//! accepts, so neither can drift from the code.

// Test code: a failed expectation should stop the test.
#![allow(clippy::panic, clippy::expect_used, clippy::indexing_slicing)]

use canary_split::config::{
    Config, CONFIG_FIELDS, DECISION_VALUES_FIELDS, PIN_RULE_FIELDS, ROUTE_FIELDS, STICKY_FIELDS, TARGET_FIELDS,
    TOKEN_FIELDS,
};
use serde_json::Value;

fn read(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

#[test]
fn example_config_is_valid() {
    let config = Config::from_json(read("filter-config/example.json").as_bytes()).expect("example is valid");
    assert_eq!(config.routes.len(), 3);
}

#[test]
fn schema_lists_the_fields_the_filter_accepts() {
    let schema: Value = serde_json::from_str(&read("filter-config/schema.json")).expect("schema is JSON");
    let properties = |pointer: &str| -> Vec<String> {
        let object = schema.pointer(pointer).unwrap_or_else(|| panic!("{pointer} in schema"));
        assert_eq!(
            object["additionalProperties"],
            Value::Bool(false),
            "{pointer} must deny unknown fields"
        );
        let mut names: Vec<String> = object["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    };
    let sorted = |fields: &[&str]| -> Vec<String> {
        let mut names: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        names.sort();
        names
    };
    assert_eq!(properties(""), sorted(CONFIG_FIELDS));
    assert_eq!(
        properties("/properties/decision_values"),
        sorted(DECISION_VALUES_FIELDS)
    );
    assert_eq!(properties("/$defs/route"), sorted(ROUTE_FIELDS));
    assert_eq!(properties("/$defs/target"), sorted(TARGET_FIELDS));
    assert_eq!(properties("/$defs/pin_rule"), sorted(PIN_RULE_FIELDS));
    assert_eq!(properties("/$defs/pin_token"), sorted(TOKEN_FIELDS));
    assert_eq!(properties("/$defs/sticky"), sorted(STICKY_FIELDS));
}

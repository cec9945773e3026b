//! The scenario JSON Schema (`scenarios/schema.json`), generated from the
//! model so editors can validate files; a test keeps the file current.

pub fn scenario_schema_json() -> String {
    let schema = schemars::schema_for!(super::Scenario);
    let mut text = serde_json::to_string_pretty(&schema).expect("a JSON Schema always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/schema.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let current = super::scenario_schema_json();
        if std::env::var_os("CHATBENCH_BLESS").is_some() {
            std::fs::write(path, &current).expect("write scenarios/schema.json");
            return;
        }
        assert!(
            committed == current,
            "scenarios/schema.json is stale: run `CHATBENCH_BLESS=1 cargo test -p chatbench committed_schema_is_current`"
        );
    }
}

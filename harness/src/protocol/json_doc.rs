//! Reading JSON documents the way declarations point into them: dotted
//! paths (`payload.content`, `0.room`), numbers that may be strings, and
//! the harness's message id in a field or a pattern inside its text.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// An id inside a JSON document: a (dotted) field, optionally a pattern
/// inside its text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonId {
    /// A field path, dots between names: `msgId`, `payload.content`.
    pub json: String,
    /// A regular expression (Rust `regex` syntax) applied to the field's
    /// text: its first capture group (else the whole match) is the id.
    #[serde(default)]
    pub pattern: Option<String>,
}

/// How a delivered frame's id is read: a header, or a JSON field path with
/// an optional pattern inside its text.
#[derive(Debug, Clone)]
pub(crate) enum IdReader {
    Header(String),
    Json { path: String, pattern: Option<regex::Regex> },
}

impl IdReader {
    pub(crate) fn json(id: &JsonId) -> Result<Self, regex::Error> {
        Ok(IdReader::Json { path: id.json.clone(), pattern: id.pattern.as_deref().map(regex::Regex::new).transpose()? })
    }

    /// The id in a JSON document's text at this reader's path (None for a
    /// header reader, a missing path, a non-string or no match).
    pub(crate) fn id_in(&self, doc: &serde_json::Value) -> Option<String> {
        let IdReader::Json { path, pattern } = self else { return None };
        let value = json_value(doc, path)?;
        let text = value.as_str()?;
        match pattern {
            None => Some(text.to_owned()),
            Some(re) => {
                let caps = re.captures(text)?;
                caps.get(1).or_else(|| caps.get(0)).map(|m| m.as_str().to_owned())
            }
        }
    }
}

/// The value at a dotted path (`payload.content`; a number indexes an
/// array: `0.room`) of a JSON document.
pub(crate) fn json_path<'v>(doc: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    path.split('.').try_fold(doc, |v, key| match v {
        serde_json::Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => v.get(key),
    })
}

/// [`json_path`], reading on into a string that holds a JSON document
/// (ActionCable's `identifier`: `identifier.room`) where the path goes on
/// past it.
pub(crate) fn json_value<'v>(doc: &'v serde_json::Value, path: &str) -> Option<Cow<'v, serde_json::Value>> {
    let mut here = Cow::Borrowed(doc);
    for key in path.split('.') {
        here = match here {
            Cow::Borrowed(v) => step(v, key)?,
            Cow::Owned(v) => Cow::Owned(step(&v, key)?.into_owned()),
        };
    }
    Some(here)
}

/// One name of a path: a field, an array index, or a field of the JSON
/// document a string holds.
fn step<'v>(v: &'v serde_json::Value, key: &str) -> Option<Cow<'v, serde_json::Value>> {
    match v {
        serde_json::Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)).map(Cow::Borrowed),
        serde_json::Value::String(s) => {
            let inner = serde_json::from_str::<serde_json::Value>(s).ok().filter(|d| d.is_object() || d.is_array())?;
            step(&inner, key).map(|v| Cow::Owned(v.into_owned()))
        }
        _ => v.get(key).map(Cow::Borrowed),
    }
}

/// A document with every string that holds a JSON object or array read as
/// that document, all the way down (a template filled with marks, to see
/// where they land).
pub(crate) fn unfold(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => match serde_json::from_str::<serde_json::Value>(&s) {
            Ok(d) if d.is_object() || d.is_array() => unfold(d),
            _ => serde_json::Value::String(s),
        },
        serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(unfold).collect()),
        serde_json::Value::Object(m) => serde_json::Value::Object(m.into_iter().map(|(k, v)| (k, unfold(v))).collect()),
        other => other,
    }
}

/// A JSON number, or a string of digits (some servers send seqs as strings).
pub(crate) fn json_u64(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The first value under `key` in a JSON document, depth first.
pub(crate) fn find_key<'v>(doc: &'v serde_json::Value, key: &str) -> Option<&'v serde_json::Value> {
    match doc {
        serde_json::Value::Object(map) => map.get(key).or_else(|| map.values().find_map(|v| find_key(v, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| find_key(v, key)),
        _ => None,
    }
}

/// Every string in a JSON document, depth first.
pub(crate) fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_walk_nested_objects_only() {
        let v = serde_json::json!({"a": {"b": {"c": "x"}}, "n": 1, "l": [{"k": "y"}]});
        assert_eq!(json_path(&v, "a.b.c"), Some(&serde_json::json!("x")));
        assert_eq!(json_path(&v, "a.x"), None);
        assert_eq!(json_path(&v, "n.b"), None);
        assert_eq!(json_path(&v, "l.0.k"), Some(&serde_json::json!("y")), "a number indexes an array");
        assert_eq!(json_path(&v, "l.1.k"), None);
        let reader = IdReader::json(&JsonId { json: "n".into(), pattern: None }).unwrap();
        assert_eq!(reader.id_in(&v), None, "a number is not an id");
    }

    /// ActionCable's `identifier` (and `data`) are JSON documents inside
    /// strings; a path reads on into them, and only where it goes on.
    #[test]
    fn paths_read_on_into_strings_that_hold_json() {
        let v = serde_json::json!({
            "identifier": "{\"channel\":\"Chat\",\"room\":\"r \\\"1\\\"\"}",
            "deeper": "{\"data\":\"{\\\"id\\\":\\\"m7\\\"}\"}",
            "plain": "not json",
            "list": "[\"a\",\"b\"]",
        });
        assert_eq!(json_value(&v, "identifier.room").as_deref(), Some(&serde_json::json!("r \"1\"")));
        assert_eq!(json_value(&v, "deeper.data.id").as_deref(), Some(&serde_json::json!("m7")), "two strings deep");
        assert_eq!(json_value(&v, "list.1").as_deref(), Some(&serde_json::json!("b")));
        assert!(json_value(&v, "identifier").unwrap().is_string(), "where the path ends, the string itself");
        assert_eq!(json_value(&v, "plain.x"), None);
        assert_eq!(json_value(&v, "identifier.nothing"), None);
        let reader = IdReader::json(&JsonId { json: "deeper.data.id".into(), pattern: None }).unwrap();
        assert_eq!(reader.id_in(&v).as_deref(), Some("m7"));
        assert_eq!(unfold(v)["deeper"]["data"]["id"], "m7");
    }
}

//! Templates: what a declaration says a client writes, with `{room}`,
//! `{id}`, `{text}`, `{client}` and `{token}` filled in, and what a
//! subscriber must then receive. Also the checks every declaration's
//! templates get when a scenario is read.

use super::Problem;
use super::json_doc::{IdReader, JsonId, find_key, json_path, strings, unfold};
use crate::message::BodyDigest;
use std::borrow::Cow;

/// Fill `{client}`, `{room}` and `{token}` in a credentials template.
pub(crate) fn fill_credentials(template: &str, client: u32, room: &str, token: &str) -> String {
    template.replace("{client}", &client.to_string()).replace("{room}", room).replace("{token}", token)
}

/// [`fill_credentials`] for a JSON template (a Socket.IO `auth`, a
/// json_frames `hello`): the room and token go in JSON-escaped.
pub(crate) fn fill_json(template: &str, client: u32, room: &str, token: &str) -> String {
    let esc = |s: &str| fill_body("{text}", true, "", s);
    template.replace("{client}", &client.to_string()).replace("{room}", &esc(room)).replace("{token}", &esc(token))
}

/// Whether a SEND body template is JSON (it parses as JSON with its
/// placeholders filled): `{text}` then goes in JSON-escaped.
pub(crate) fn is_json_template(template: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(&template.replace("{id}", "x").replace("{text}", "x")).is_ok()
}

/// Fill a SEND body template: `{id}` as is, `{text}` JSON-escaped in a
/// JSON template, so any text keeps it valid JSON.
pub(crate) fn fill_body(template: &str, json: bool, id: &str, text: &str) -> String {
    let text: Cow<str> = if json {
        let quoted = serde_json::to_string(text).expect("a string always serializes");
        Cow::Owned(quoted[1..quoted.len() - 1].to_owned())
    } else {
        Cow::Borrowed(text)
    };
    template.replace("{id}", id).replace("{text}", &text)
}

/// Fill a JSON template: `{room}`, `{id}` and `{text}`, each JSON-escaped
/// (`{after}` is filled by the caller).
pub(crate) fn fill(template: &str, room: &str, id: &str, text: &str) -> String {
    let room_escaped = fill_body("{text}", true, "", room);
    fill_body(&template.replace("{room}", &room_escaped), true, id, text)
}

/// A placeholder of a [`Template`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Room,
    Id,
    Text,
    After,
    Ref,
    JoinRef,
    Client,
    Token,
}

impl Slot {
    const ALL: [(&'static str, Slot); 8] = [
        ("{room}", Slot::Room),
        ("{id}", Slot::Id),
        ("{text}", Slot::Text),
        ("{after}", Slot::After),
        ("{ref}", Slot::Ref),
        ("{join_ref}", Slot::JoinRef),
        ("{client}", Slot::Client),
        ("{token}", Slot::Token),
    ];
}

/// A JSON template read once: its text and placeholders, each knowing how
/// many JSON strings it sits in. A value inside one string is escaped once
/// (`"{text}"`), inside a JSON document that is itself a string value
/// twice (ActionCable's `"identifier":"{\"room\":\"{room}\"}"`), outside
/// any string not at all (`"after":{after}`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Slot(Slot, usize),
}

/// The first of the private-use characters standing for a template's
/// placeholders while it is read (JSON escaping leaves them as they are).
const FIRST_MARK: u32 = 0xF0000;

impl Template {
    pub(crate) fn new(text: &str) -> Self {
        let mut slots = Vec::new();
        let mut marked = String::with_capacity(text.len());
        let mut literal = String::new();
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match Slot::ALL.iter().find(|(name, _)| rest.starts_with(name)) {
                Some((name, slot)) if slots.len() < 0xFFFD => {
                    marked.push(char::from_u32(FIRST_MARK + slots.len() as u32).expect("a private-use character"));
                    pieces.push(std::mem::take(&mut literal));
                    slots.push(*slot);
                    rest = &rest[name.len()..];
                }
                _ => {
                    let c = rest.chars().next().expect("not empty");
                    marked.push(c);
                    literal.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        let mut depth = vec![0; slots.len()];
        string_depths(&marked, 0, &mut depth);
        let mut parts = Vec::with_capacity(2 * slots.len() + 1);
        for ((piece, slot), depth) in pieces.into_iter().zip(slots).zip(depth) {
            if !piece.is_empty() {
                parts.push(Part::Text(piece));
            }
            parts.push(Part::Slot(slot, depth));
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Template(parts)
    }

    /// Whether it has this placeholder.
    pub(crate) fn has(&self, slot: Slot) -> bool {
        self.0.iter().any(|p| matches!(p, Part::Slot(s, _) if *s == slot))
    }

    /// The template with each placeholder's value, escaped as often as it
    /// sits in strings.
    pub(crate) fn fill<'a>(&self, value: impl Fn(Slot) -> std::borrow::Cow<'a, str>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Slot(slot, depth) => out.push_str(&escaped(&value(*slot), *depth)),
            }
        }
        out
    }
}

/// `s` JSON-escaped `times` times (without the quotes).
fn escaped(s: &str, times: usize) -> Cow<'_, str> {
    let mut v = Cow::Borrowed(s);
    for _ in 0..times {
        let quoted = serde_json::to_string(&*v).expect("a string always serializes");
        v = Cow::Owned(quoted[1..quoted.len() - 1].to_owned());
    }
    v
}

/// How many strings each mark of `text` sits in, counting from `depth`:
/// a string whose text is a JSON object or array is read on into.
fn string_depths(text: &str, depth: usize, out: &mut [usize]) {
    let count = out.len();
    let mark = |c: char| (c as u32).checked_sub(FIRST_MARK).map(|i| i as usize).filter(|i| *i < count);
    let mut chars = text.char_indices();
    while let Some((start, c)) = chars.next() {
        if let Some(i) = mark(c) {
            out[i] = depth;
            continue;
        }
        if c != '"' {
            continue;
        }
        let mut end = text.len();
        let mut escape = false;
        for (j, c) in chars.by_ref() {
            match (escape, c) {
                (true, _) => escape = false,
                (false, '\\') => escape = true,
                (false, '"') => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
        }
        let literal = &text[start..end];
        let inner = serde_json::from_str::<String>(literal).unwrap_or_else(|_| literal.trim_matches('"').to_owned());
        if !inner.chars().any(|c| mark(c).is_some()) {
            continue;
        }
        let probe: String = inner.chars().map(|c| if mark(c).is_some() { '0' } else { c }).collect();
        let trimmed = probe.trim_start();
        if (trimmed.starts_with('{') || trimmed.starts_with('[')) && serde_json::from_str::<serde_json::Value>(&probe).is_ok() {
            string_depths(&inner, depth + 1, out);
        } else {
            for c in inner.chars() {
                if let Some(i) = mark(c) {
                    out[i] = depth + 1;
                }
            }
        }
    }
}

/// Marks standing for the text, id and room in a template filled once, to
/// see where they land (private-use characters: JSON leaves them as they are).
const TEXT_MARK: &str = "\u{E000}";
const ID_MARK: &str = "\u{E001}";
const ROOM_MARK: &str = "\u{E002}";

/// What a subscriber must receive at a delivery's text path, worked out
/// once per declaration: what the harness writes there, with marks for the
/// text, id and room (None: the generated text itself). Found at the path
/// in what is sent, else under the path's last name anywhere in it (a
/// server that wraps what it echoes: `payload.content` ← `content`).
#[derive(Debug, Clone)]
pub(crate) struct ExpectedText(Option<String>);

impl ExpectedText {
    /// The generated text itself.
    pub(crate) const TEXT: ExpectedText = ExpectedText(None);

    /// `filled`: the send template filled with [`ExpectedText::marks`]
    /// (`room`, `id`, `text`); `path`: where deliveries carry the text.
    pub(crate) fn new(filled: &str, path: Option<&str>) -> Self {
        let Some(path) = path else { return Self(None) };
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(filled).map(unfold) else { return Self(None) };
        let last = path.rsplit('.').next().unwrap_or(path);
        let value = json_path(&doc, path).or_else(|| find_key(&doc, last)).and_then(|v| v.as_str());
        Self(value.filter(|v| *v != TEXT_MARK).map(str::to_owned))
    }

    /// The room, id and text marks to fill a template with for [`Self::new`].
    pub(crate) fn marks() -> (&'static str, &'static str, &'static str) {
        (ROOM_MARK, ID_MARK, TEXT_MARK)
    }

    /// The digest subscribers must get for one send.
    pub(crate) fn digest(&self, room: &str, id: &str, text: &str) -> BodyDigest {
        match &self.0 {
            None => BodyDigest::of(text.as_bytes()),
            Some(t) => BodyDigest::of(t.replace(TEXT_MARK, text).replace(ID_MARK, id).replace(ROOM_MARK, room).as_bytes()),
        }
    }
}

/// A template that must be JSON once filled.
pub(crate) fn check_is_json(name: &str, filled: &str) -> Result<(), Problem> {
    serde_json::from_str::<serde_json::Value>(filled)
        .map(|_| ())
        .map_err(|e| Problem::from(format!("{name} is not JSON once filled ({e}): {filled}")))
}

/// Whether a JSON id declaration finds the harness's id in a SEND body
/// filled from `template` (a sample id and text). Servers may wrap what
/// they echo in their own object, so the path is only checked where the
/// template has it; the pattern must find the id in some string of it.
pub(crate) fn id_findable(id: &JsonId, template: &str) -> Result<(), Problem> {
    if !template.contains("{id}") {
        return Err(Problem::from(format!("the id travels in the JSON body, but the SEND body template {template:?} has no {{id}}")));
    }
    if !is_json_template(template) {
        return Err(Problem::from(format!(
            "the id travels in JSON field {:?}, but the SEND body template {template:?} is not JSON",
            id.json
        )));
    }
    id_found(id, template, &fill_body(template, true, SAMPLE_ID, "hello [x] 42"))
}

/// The sample id templates are checked with.
const SAMPLE_ID: &str = "m4294967297";

/// Whether a JSON id declaration finds the id in `body`, a send filled from
/// `template` with [`SAMPLE_ID`] (read on into strings holding JSON).
pub(crate) fn id_found(id: &JsonId, template: &str, body: &str) -> Result<(), Problem> {
    let reader = IdReader::json(id).map_err(|e| Problem::from(format!("pattern does not compile: {e}")))?;
    let sample = SAMPLE_ID;
    let doc: serde_json::Value = serde_json::from_str(body).map(unfold).map_err(|e| format!("the filled SEND body is not JSON: {e}"))?;
    let mut texts = Vec::new();
    strings(&doc, &mut texts);
    let found = match json_path(&doc, &id.json) {
        Some(_) => reader.id_in(&doc).as_deref() == Some(sample),
        None => texts.iter().filter(|t| t.contains(sample)).any(|t| {
            let one = serde_json::json!({ "x": t });
            IdReader::json(&JsonId { json: "x".into(), pattern: id.pattern.clone() })
                .is_ok_and(|r| r.id_in(&one).as_deref() == Some(sample))
        }),
    };
    if found {
        Ok(())
    } else {
        Err(Problem::from(format!(
            "{{json: {:?}{}}} does not find the id the harness writes with the SEND body template {template:?} (filled: {body})",
            id.json,
            id.pattern.as_deref().map(|p| format!(", pattern: {p:?}")).unwrap_or_default()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One rule for every adapter: what the harness wrote at the text
    /// path (id and room included), else under the path's last name
    /// anywhere in the send, else the text; worked out once, not per send.
    #[test]
    fn the_expected_text_is_what_was_written_where_deliveries_carry_it() {
        let (room, id, text) = ExpectedText::marks();
        let with =
            |template: &str, path: Option<&str>| ExpectedText::new(&fill(template, room, id, text), path).digest("r1", "m7", "hi \"x\"");
        let of = |s: &str| BodyDigest::of(s.as_bytes());
        assert_eq!(with(r#"{"c":"{text}"}"#, Some("c")), of("hi \"x\""));
        assert_eq!(with(r#"{"c":"{room}: {text} [{id}]"}"#, Some("c")), of("r1: hi \"x\" [m7]"));
        assert_eq!(with(r#"{"c":"{text} [{id}]"}"#, Some("payload.c")), of("hi \"x\" [m7]"), "a server that wraps it");
        assert_eq!(with(r#"[{"m":{"c":"<{text}>"}}]"#, Some("0.m.c")), of("<hi \"x\">"), "Socket.IO arguments");
        assert_eq!(with(r#"{"c":"{text}"}"#, None), of("hi \"x\""), "no path: the text");
        assert_eq!(with("not json {text}", Some("c")), of("hi \"x\""));
    }

    #[test]
    fn json_body_templates_get_escaped_text_and_others_raw_text() {
        let text = "say \"hi\"\\\n";
        let template = r#"{"msgId":"{id}","content":"{text}"}"#;
        assert!(is_json_template(template));
        let filled = fill_body(template, true, "m1", text);
        let v: serde_json::Value = serde_json::from_str(&filled).unwrap();
        assert_eq!(v["content"], text);
        assert!(!is_json_template("{text}") && !is_json_template("{text} ({id})"));
        assert_eq!(fill_body("{text}", false, "m1", text), text, "a bare {{text}} template is the text itself");
    }

    /// A value is escaped once per string it sits in: none outside
    /// strings, twice in a JSON document that is a string value
    /// (ActionCable's `identifier` and `data`), three times a level deeper.
    #[test]
    fn templates_escape_each_value_once_per_string_around_it() {
        let hostile = "a\"b\\c\n{room}";
        let value = |slot: Slot| -> Cow<'static, str> {
            match slot {
                Slot::After => "7".into(),
                Slot::Ref => "12".into(),
                Slot::Id => "m1".into(),
                _ => hostile.into(),
            }
        };
        let cable = Template::new(
            r#"{"command":"message","identifier":"{\"channel\":\"Chat\",\"room\":\"{room}\"}","data":"{\"id\":\"{id}\",\"body\":\"{text}\",\"n\":{after}}","ref":"{ref}","k":{ref}}"#,
        );
        let doc: serde_json::Value = serde_json::from_str(&cable.fill(value)).expect("JSON, whatever the text");
        let identifier: serde_json::Value = serde_json::from_str(doc["identifier"].as_str().unwrap()).unwrap();
        let data: serde_json::Value = serde_json::from_str(doc["data"].as_str().unwrap()).unwrap();
        assert_eq!((identifier["room"].as_str(), identifier["channel"].as_str()), (Some(hostile), Some("Chat")));
        assert_eq!((data["id"].as_str(), data["body"].as_str(), data["n"].as_u64()), (Some("m1"), Some(hostile), Some(7)));
        assert_eq!((doc["ref"].as_str(), doc["k"].as_u64()), (Some("12"), Some(12)));
        assert!(cable.has(Slot::Ref) && cable.has(Slot::After) && !cable.has(Slot::JoinRef));
        // Three levels.
        let deep = Template::new(r#"{"a":"{\"b\":\"{\\\"c\\\":\\\"{text}\\\"}\"}"}"#);
        let doc: serde_json::Value = serde_json::from_str(&deep.fill(value)).unwrap();
        let b: serde_json::Value = serde_json::from_str(doc["a"].as_str().unwrap()).unwrap();
        let c: serde_json::Value = serde_json::from_str(b["b"].as_str().unwrap()).unwrap();
        assert_eq!(c["c"], hostile);
        // A string that only looks like JSON around a value is one string.
        let plain = Template::new(r#"{"t":"[{text}]","u":"{ {text} }"}"#);
        let doc: serde_json::Value = serde_json::from_str(&plain.fill(value)).unwrap();
        assert_eq!(doc["t"].as_str(), Some(format!("[{hostile}]").as_str()));
        assert_eq!(doc["u"].as_str(), Some(format!("{{ {hostile} }}").as_str()));
        // Phoenix's array frames.
        let phoenix = Template::new(r#"["{join_ref}","{ref}","{room}","new_msg",{"body":"{text}"}]"#);
        assert_eq!(phoenix.fill(|s| if s == Slot::Text { "x".into() } else { "r".into() }), r#"["r","r","r","new_msg",{"body":"x"}]"#);
        assert_eq!(Template::new("no placeholders").fill(value), "no placeholders");
    }
}

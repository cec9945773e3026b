//! Templates: what a declaration says a client writes, with `{room}`,
//! `{id}`, `{text}`, `{client}` and `{token}` filled in, and what a
//! subscriber must then receive. Also the checks every declaration's
//! templates get when a scenario is read.

use super::Problem;
use super::json_doc::{IdReader, JsonId, find_key, json_path, strings};
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
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(filled) else { return Self(None) };
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
    let reader = IdReader::json(id).map_err(|e| Problem::from(format!("pattern does not compile: {e}")))?;
    if !template.contains("{id}") {
        return Err(Problem::from(format!("the id travels in the JSON body, but the SEND body template {template:?} has no {{id}}")));
    }
    if !is_json_template(template) {
        return Err(Problem::from(format!(
            "the id travels in JSON field {:?}, but the SEND body template {template:?} is not JSON",
            id.json
        )));
    }
    let sample = "m4294967297";
    let body = fill_body(template, true, sample, "hello [x] 42");
    let doc: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("the filled SEND body is not JSON: {e}"))?;
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
}

//! Why (nearly) every delivery is `corrupted`: most likely a declaration
//! that reads the text in the wrong place, not a server that mangles every
//! message. From the sends and delivered frames a run sampled, where the
//! sent text is in what arrived.

use crate::client::Samples;
use crate::message::{BodyDigest, MsgNo};
use crate::trace::{EventKind, Trace};
use std::collections::{BTreeMap, HashMap};

/// The share of deliveries (in tenths) that must be corrupted before the
/// declaration is named as the likely cause.
const NEARLY_ALL_TENTHS: u64 = 9;

/// JSON documents tried per frame: a frame may wrap its JSON (a STOMP
/// body, Socket.IO's `42[...]`, a record separator).
const STARTS_TRIED: usize = 8;

/// A note for a run where `corrupted` of `delivered` deliveries differ
/// from what was sent, if that is (nearly) all of them.
pub(crate) fn wrong_text_note(corrupted: u64, delivered: u64, trace: &Trace, samples: &Samples) -> Option<String> {
    if delivered == 0 || corrupted * 10 < delivered * NEARLY_ALL_TENTHS {
        return None;
    }
    let lead = format!(
        "{corrupted} of {delivered} deliveries carry another text than was sent: more likely the declaration reads the text \
         in the wrong place than the server changes every message"
    );
    Some(match text_path(trace, samples) {
        Some((path, found, of)) => format!(
            "{lead}. In {found} of {of} sampled deliveries the sent text is the JSON string at `{path}` in the frame: declare that \
             as where deliveries carry their text (json_frames frames[].text, stomp text: {{json: PATH}}, socketio and graphql_ws \
             delivery.text, mqtt text; a path relative to what the protocol hands it)"
        ),
        None => format!(
            "{lead}. No sampled delivery carried the sent text as one JSON string: check the delivery's text path and where the \
             send template puts {{text}}"
        ),
    })
}

/// The path in delivered frames where the sent text (or what subscribers
/// were to receive) is found most often: (path, in how many sampled
/// deliveries, of how many that could be compared).
fn text_path(trace: &Trace, samples: &Samples) -> Option<(String, usize, usize)> {
    let texts: HashMap<MsgNo, &str> = samples.sent.iter().map(|(m, t)| (*m, t.as_str())).collect();
    let wanted: HashMap<MsgNo, BodyDigest> = trace
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Send { msg, body, .. } if samples.delivered.iter().any(|(m, _)| *m == msg) => Some((msg, body)),
            _ => None,
        })
        .collect();
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    let mut compared = 0;
    for (msg, frame) in &samples.delivered {
        let (text, digest) = (texts.get(msg).copied(), wanted.get(msg).copied());
        if text.is_none() && digest.is_none() {
            continue;
        }
        compared += 1;
        let mut paths = Vec::new();
        for doc in json_in(frame) {
            leaves(&doc, String::new(), &mut |path, s| {
                if Some(s) == text || digest.is_some_and(|d| d == BodyDigest::of(s.as_bytes())) {
                    paths.push(path.to_owned());
                }
            });
        }
        paths.sort();
        paths.dedup();
        for p in paths {
            *found.entry(p).or_default() += 1;
        }
    }
    // The most often found, the shortest path first among equals.
    let (path, n) = found.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.len().cmp(&a.0.len())))?;
    Some((path, n, compared))
}

/// The JSON documents in a frame: the frame itself, else the first value
/// starting at each of its first `{` or `[`, read on into strings that hold
/// JSON.
fn json_in(frame: &str) -> Vec<serde_json::Value> {
    let whole = frame.trim_matches(|c: char| c.is_whitespace() || c == '\0' || c == '\u{1e}');
    if let Ok(doc) = serde_json::from_str::<serde_json::Value>(whole) {
        return vec![crate::protocol::unfold(doc)];
    }
    let starts = whole.char_indices().filter(|(_, c)| *c == '{' || *c == '[').map(|(i, _)| i).take(STARTS_TRIED);
    for i in starts {
        let mut values = serde_json::Deserializer::from_str(&whole[i..]).into_iter::<serde_json::Value>();
        if let Some(Ok(doc)) = values.next() {
            return vec![crate::protocol::unfold(doc)];
        }
    }
    Vec::new()
}

/// Every string in a document with its dotted path.
fn leaves(v: &serde_json::Value, path: String, found: &mut impl FnMut(&str, &str)) {
    let join = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match v {
        serde_json::Value::String(s) => found(&path, s),
        serde_json::Value::Array(items) => items.iter().enumerate().for_each(|(i, x)| leaves(x, join(&i.to_string()), found)),
        serde_json::Value::Object(map) => map.iter().for_each(|(k, x)| leaves(x, join(k), found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::msg_no;
    use crate::trace::{Event, EventKind};

    fn trace_with(sends: &[(MsgNo, &str)]) -> Trace {
        let mut t = Trace::default();
        for (msg, body) in sends {
            t.events.push(Event {
                t_ns: 1,
                client: 0,
                kind: EventKind::Send { room: 0, msg: *msg, scheduled_ns: 0, body: BodyDigest::of(body.as_bytes()) },
            });
        }
        t
    }

    /// The case: a STOMP server answering with its own DTO that
    /// echoes the client's `content`, declared without a text path, so the
    /// whole body is compared and every delivery is corrupted.
    #[test]
    fn a_text_path_the_declaration_lacks_is_named() {
        let (a, b) = (msg_no(1, 0), msg_no(1, 1));
        let samples = Samples {
            sent: vec![(a, "héllo \"1\"".into()), (b, "two".into())],
            delivered: vec![
                (a, "MESSAGE\ndestination:/topic/r1\ncontent-type:application/json\n\n{\"sender\":\"u1\",\"content\":\"héllo \\\"1\\\"\",\"at\":1}\0".into()),
                (b, "MESSAGE\ndestination:/topic/r1\n\n{\"sender\":\"u1\",\"content\":\"two\",\"at\":2}\0".into()),
                (msg_no(9, 9), "{\"content\":\"not sampled when sent\"}".into()),
            ],
        };
        let trace = trace_with(&[(a, "{\"content\":\"héllo \\\"1\\\"\"}"), (b, "{\"content\":\"two\"}")]);
        let note = wrong_text_note(1000, 1000, &trace, &samples).expect("every delivery corrupted");
        assert!(note.contains("1000 of 1000") && note.contains("2 of 2 sampled deliveries") && note.contains("`content`"), "{note}");
        assert_eq!(wrong_text_note(899, 1000, &trace, &samples), None, "most, not nearly all: a server's own doing");
        assert!(wrong_text_note(900, 1000, &trace, &samples).is_some());
        assert_eq!(wrong_text_note(0, 0, &trace, &samples), None);
    }

    /// Where the sent text went through a template, the digest subscribers
    /// were to get finds it; JSON inside strings and arrays are read into.
    #[test]
    fn the_expected_digest_and_json_inside_strings_are_searched() {
        let m = msg_no(2, 3);
        let samples = Samples { sent: vec![], delivered: vec![(m, "42[\"chat\",{\"data\":\"{\\\"msg\\\":\\\"[m] hi\\\"}\"}]".into())] };
        let note = wrong_text_note(5, 5, &trace_with(&[(m, "[m] hi")]), &samples).unwrap();
        assert!(note.contains("`1.data.msg`") && note.contains("1 of 1"), "{note}");
        let none = Samples { sent: vec![(m, "elsewhere".into())], delivered: vec![(m, "{\"x\":\"y\"}".into())] };
        let note = wrong_text_note(5, 5, &Trace::default(), &none).unwrap();
        assert!(note.contains("No sampled delivery carried the sent text"), "{note}");
    }
}

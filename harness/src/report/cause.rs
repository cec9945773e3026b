//! What explains a failing check, in a sentence: which dimension (room,
//! sender, node, time, fault window, body size, subscriber) sets the
//! failing messages apart from the others ([`diagnose`]; also the text's
//! class: multi-byte UTF-8, JSON-special characters); and when
//! (nearly) every delivery is `corrupted`, the declaration reading the text
//! in the wrong place, with where the sent text is in what arrived
//! ([`wrong_text_note`]).

use crate::check::{Finding, FindingKind};
use crate::client::Samples;
use crate::message::{BodyDigest, ClientId, MsgNo, TextClass};
use crate::trace::{EventKind, Trace};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Fewer failing messages than this say nothing about a dimension.
const MIN_FAILING: usize = 3;
/// Fewer passing messages (or deliveries) than this are too few to set
/// anything apart from: a value two of them lack says nothing.
const MIN_OTHERS: usize = 20;
/// A value names the failing messages when at least this share of them has
/// it (percent) ...
const FAILING_SHARE: u64 = 90;
/// ... and at most this share of the others (percent).
const OTHERS_SHARE: u64 = 50;
/// Time slices the sending window is cut into.
const TIME_SLICES: u64 = 10;
/// A send this long after a fault ended still counts as in its window.
const AFTER_FAULT_NS: u64 = 1_000_000_000;

/// For each kind of finding that names messages, the one dimension that
/// sets its messages apart from the passing ones, as a sentence with the
/// numbers (or that none does). One pass over the events per kind and
/// dimension, nothing kept per passing message or per delivery.
pub(crate) fn diagnose(trace: &Trace, findings: &[Finding]) -> Vec<String> {
    let failing_any: HashSet<MsgNo> = findings.iter().filter_map(|f| f.msg).collect();
    if failing_any.is_empty() {
        return Vec::new();
    }
    // The first send of each failing message; passing sends are counted as
    // they come (a resend counts again: few, and alike).
    let mut failing_sends: HashMap<MsgNo, Send> = HashMap::new();
    let sends = || {
        trace.events.iter().filter_map(|e| match e.kind {
            EventKind::Send { room, msg, body, .. } => {
                Some(Send { msg, sender: e.client, room, t_ns: e.t_ns, bytes: body.len, class: body.class })
            }
            _ => None,
        })
    };
    for s in sends().filter(|s| failing_any.contains(&s.msg)) {
        failing_sends.entry(s.msg).or_insert(s);
    }
    let node_of = |c: ClientId| trace.clients.get(c as usize).map_or(0, |c| c.node);
    let mut kinds: Vec<FindingKind> = findings.iter().filter(|f| f.msg.is_some()).map(|f| f.kind).collect();
    kinds.sort();
    kinds.dedup();
    // Per kind: how many failing messages, and per dimension its most
    // common value among them (the candidate).
    let mut candidates: Vec<(FindingKind, usize, Vec<Separation>)> = Vec::new();
    for kind in kinds {
        let of_kind: Vec<&Finding> = findings.iter().filter(|f| f.kind == kind && f.msg.is_some()).collect();
        let msgs: HashSet<MsgNo> = of_kind.iter().filter_map(|f| f.msg).collect();
        let failing: Vec<&Send> = msgs.iter().filter_map(|m| failing_sends.get(m)).collect();
        if failing.len() < MIN_FAILING {
            continue;
        }
        let seps = Dimension::ALL
            .iter()
            .filter_map(|&dim| {
                let values: Vec<u64> = if dim.per_subscriber() {
                    of_kind.iter().filter_map(|f| Some(dim.of_subscriber(f.client?, f.node.unwrap_or(0)))).collect()
                } else {
                    failing.iter().filter_map(|s| dim.of_send(s, trace)).collect()
                };
                let total = if dim.per_subscriber() { of_kind.len() } else { failing.len() };
                Separation::candidate(dim, &values, total)
            })
            .collect();
        candidates.push((kind, failing.len(), seps));
    }
    // One pass over the events counts the others that share each value.
    let mut passing = 0;
    for e in &trace.events {
        match e.kind {
            EventKind::Send { room, msg, body, .. } if !failing_any.contains(&msg) => {
                passing += 1;
                let s = Send { msg, sender: e.client, room, t_ns: e.t_ns, bytes: body.len, class: body.class };
                for sep in candidates.iter_mut().flat_map(|c| c.2.iter_mut()).filter(|c| !c.dim.per_subscriber()) {
                    sep.others += 1;
                    sep.others_with += usize::from(sep.dim.of_send(&s, trace) == Some(sep.key));
                }
            }
            EventKind::Deliver { .. } => {
                let node = node_of(e.client);
                for sep in candidates.iter_mut().flat_map(|c| c.2.iter_mut()).filter(|c| c.dim.per_subscriber()) {
                    sep.others += 1;
                    sep.others_with += usize::from(sep.dim.of_subscriber(e.client, node) == sep.key);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (kind, n, seps) in candidates {
        let what = format!("{n} {} message{}", kind.as_str(), if n == 1 { "" } else { "s" });
        let best = seps.into_iter().filter(Separation::marks).max_by_key(|s| (s.gap(), std::cmp::Reverse(s.dim as u8)));
        out.push(match best {
            Some(b) => format!(
                "{what}: {}% ({} of {}) {}; of the others, {}% ({} of {})",
                b.failing_pct(),
                b.failing_with,
                b.failing,
                b.dim.phrase(b.key, trace),
                b.others_pct(),
                b.others_with,
                b.others
            ),
            None if passing < MIN_OTHERS => {
                format!("{what}: nearly every message has a finding ({passing} sends have none): too few others to set them apart from")
            }
            None => format!(
                "{what}: no single room, sender, node, time slice, fault window, body size, text class or subscriber sets them apart from the others"
            ),
        });
    }
    out
}

/// A message's first send.
#[derive(Debug, Clone)]
struct Send {
    msg: MsgNo,
    sender: ClientId,
    room: u32,
    t_ns: u64,
    bytes: u32,
    class: TextClass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dimension {
    Room,
    Sender,
    SenderNode,
    Time,
    Fault,
    Size,
    MultiByte,
    JsonSpecial,
    SubscriberNode,
    Subscriber,
}

/// Body size classes: up to 64 B, to 1 KiB, to 16 KiB, more.
const SIZE_CLASSES: [(u32, &str); 4] = [(64, "up to 64 B"), (1024, "65 B to 1 KiB"), (16384, "1 to 16 KiB"), (u32::MAX, "over 16 KiB")];

impl Dimension {
    const ALL: [Dimension; 10] = [
        Dimension::Room,
        Dimension::Sender,
        Dimension::SenderNode,
        Dimension::Time,
        Dimension::Fault,
        Dimension::Size,
        Dimension::MultiByte,
        Dimension::JsonSpecial,
        Dimension::SubscriberNode,
        Dimension::Subscriber,
    ];

    fn per_subscriber(self) -> bool {
        matches!(self, Dimension::SubscriberNode | Dimension::Subscriber)
    }

    /// The time slice's length.
    fn slice_ns(trace: &Trace) -> u64 {
        let meta = &trace.meta;
        meta.sending_ended_ns.saturating_sub(meta.sending_started_ns).max(1).div_ceil(TIME_SLICES).max(1)
    }

    /// The value a send has on this dimension.
    fn of_send(self, s: &Send, trace: &Trace) -> Option<u64> {
        let meta = &trace.meta;
        Some(match self {
            Dimension::Room => u64::from(s.room),
            Dimension::Sender => u64::from(s.sender),
            Dimension::SenderNode => u64::from(trace.clients.get(s.sender as usize)?.node),
            Dimension::Time => s.t_ns.saturating_sub(meta.sending_started_ns) / Self::slice_ns(trace),
            Dimension::Fault => u64::from(meta.faults.iter().any(|f| s.t_ns >= f.start_ns && s.t_ns <= f.end_ns + AFTER_FAULT_NS)),
            Dimension::Size => SIZE_CLASSES.iter().position(|(max, _)| s.bytes <= *max).unwrap_or(3) as u64,
            Dimension::MultiByte => u64::from(s.class.has(TextClass::MULTI_BYTE)),
            Dimension::JsonSpecial => u64::from(s.class.has(TextClass::JSON_SPECIAL)),
            Dimension::SubscriberNode | Dimension::Subscriber => return None,
        })
    }

    fn of_subscriber(self, client: ClientId, node: u32) -> u64 {
        match self {
            Dimension::SubscriberNode => u64::from(node),
            _ => u64::from(client),
        }
    }

    /// What having `key` on this dimension says, as the sentence says it.
    fn phrase(self, key: u64, trace: &Trace) -> String {
        match self {
            Dimension::Room => format!("were sent to room `{}`", trace.rooms.get(key as usize).map_or("?", String::as_str)),
            Dimension::Sender => format!("were sent by client {key}"),
            Dimension::SenderNode => format!("were sent by clients of node {key}"),
            Dimension::Time => {
                let secs = |n: u64| (n * Self::slice_ns(trace)) as f64 / 1e9;
                format!("were sent between {:.1} s and {:.1} s of sending", secs(key), secs(key + 1))
            }
            Dimension::Fault if key == 1 => "were sent during a fault (or within 1 s of its end)".to_owned(),
            Dimension::Fault => "were sent outside every fault".to_owned(),
            Dimension::Size => format!("carry bodies of {}", SIZE_CLASSES[key as usize].1),
            Dimension::MultiByte if key == 1 => "contain multi-byte UTF-8".to_owned(),
            Dimension::MultiByte => "are ASCII only".to_owned(),
            Dimension::JsonSpecial if key == 1 => "contain a quote, a backslash or a control character".to_owned(),
            Dimension::JsonSpecial => "contain no quote, backslash or control character".to_owned(),
            Dimension::SubscriberNode => format!("concern clients of node {key}"),
            Dimension::Subscriber => format!("concern client {key}"),
        }
    }
}

/// How well one value of a dimension sets the failing apart.
#[derive(Debug)]
struct Separation {
    dim: Dimension,
    key: u64,
    failing_with: usize,
    failing: usize,
    others_with: usize,
    others: usize,
}

impl Separation {
    fn failing_pct(&self) -> u64 {
        (self.failing_with * 100 / self.failing.max(1)) as u64
    }

    fn others_pct(&self) -> u64 {
        (self.others_with * 100 / self.others.max(1)) as u64
    }

    fn gap(&self) -> i64 {
        self.failing_pct() as i64 - self.others_pct() as i64
    }
}

impl Separation {
    /// The value most common among `values` (of `total` failing).
    fn candidate(dim: Dimension, values: &[u64], total: usize) -> Option<Separation> {
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for v in values {
            *counts.entry(*v).or_default() += 1;
        }
        let (key, failing_with) = counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
        Some(Separation { dim, key, failing_with, failing: total, others_with: 0, others: 0 })
    }

    /// It marks the failing: nearly all of them have it, few of the others.
    fn marks(&self) -> bool {
        self.failing_pct() >= FAILING_SHARE && self.others_pct() <= OTHERS_SHARE && self.others >= MIN_OTHERS
    }
}

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

    /// A trace of 4 rooms, 4 senders on 2 nodes, 10 sends each per room
    /// spread over 10 s, bodies of 32 B (every 7th: 2 KiB; every 5th
    /// multi-byte UTF-8), a fault from
    /// 6 to 7 s, and two subscribers per room (clients 20+room on node
    /// room % 2, and 24+room on the other); `lost(send)` says which of the
    /// two miss it (bit 0, bit 1).
    fn shaped(lost: impl Fn(&Send) -> u8) -> (Trace, Vec<Finding>) {
        let mut t = Trace {
            rooms: (0..4).map(|r| format!("room-{r}")).collect(),
            clients: (0..28).map(|c| crate::trace::ClientInfo { node: (c % 2) ^ u32::from(c >= 24), ..Default::default() }).collect(),
            ..Default::default()
        };
        t.meta.sending_started_ns = 0;
        t.meta.sending_ended_ns = 10_000_000_000;
        t.meta.faults.push(crate::trace::FaultRecord { start_ns: 6_000_000_000, end_ns: 7_000_000_000, ..Default::default() });
        let mut findings = Vec::new();
        let mut k = 0;
        for room in 0..4u32 {
            for sender in 0..4u32 {
                for i in 0..10u64 {
                    k += 1;
                    let send = Send {
                        msg: msg_no(sender, k),
                        sender,
                        room,
                        t_ns: i * 1_000_000_000 + u64::from(room) * 1000,
                        bytes: if k % 7 == 0 { 2048 } else { 32 },
                        class: TextClass(if k % 5 == 0 { TextClass::MULTI_BYTE } else { 0 }),
                    };
                    let body = BodyDigest { len: send.bytes, class: send.class, ..BodyDigest::default() };
                    t.events.push(Event {
                        t_ns: send.t_ns,
                        client: sender,
                        kind: EventKind::Send { room, msg: send.msg, scheduled_ns: send.t_ns, body },
                    });
                    let missed = lost(&send);
                    for (bit, sub) in [(1, 20 + room), (2, 24 + room)] {
                        if missed & bit != 0 {
                            findings.push(Finding::new(FindingKind::Lost, "lost").msg(send.msg).client(sub, t.clients[sub as usize].node));
                        } else {
                            let deliver = EventKind::Deliver {
                                room,
                                msg: send.msg,
                                seq: 0,
                                body: Some(body),
                                label: Default::default(),
                                message_id: 0,
                            };
                            t.events.push(Event { t_ns: send.t_ns + 1, client: sub, kind: deliver });
                        }
                    }
                }
            }
        }
        (t, findings)
    }

    #[test]
    fn the_dimension_that_sets_failing_messages_apart_is_named() {
        let all = |b: bool| if b { 3 } else { 0 };
        type Cause<'a> = &'a dyn Fn(&Send) -> u8;
        let cases: [(Cause, &str); 7] = [
            (&|s| all(s.room == 2), "were sent to room `room-2`"),
            (&|s| all(s.sender == 3), "were sent by client 3"),
            (&|s| all(s.t_ns >= 6_000_000_000 && s.t_ns < 7_000_000_000), "were sent between 6.0 s and 7.0 s of sending"),
            (&|s| all(s.bytes > 1024), "carry bodies of 1 to 16 KiB"),
            (&|s| all(s.class.has(TextClass::MULTI_BYTE)), "contain multi-byte UTF-8"),
            // Half of room 1's messages, to its second subscriber only.
            (&|s| if s.room == 1 && s.t_ns % 2_000_000_000 < 1_000_000_000 { 2 } else { 0 }, "concern client 25"),
            // Every room's messages to its subscriber on node 1.
            (&|s| if s.room % 2 == 0 { 2 } else { 1 }, "concern clients of node 1"),
        ];
        for (lost, phrase) in cases {
            let (t, findings) = shaped(lost);
            let said = diagnose(&t, &findings);
            assert_eq!(said.len(), 1, "{said:?}");
            assert!(said[0].contains(phrase) && said[0].contains("lost messages: 100%"), "{phrase}: {said:?}");
        }
        // Spread evenly over every dimension: nothing is named.
        let (t, findings) = shaped(|s: &Send| u8::from(s.msg.is_multiple_of(5)));
        let said = diagnose(&t, &findings);
        assert!(said[0].contains("no single room, sender"), "{said:?}");
        // Nearly every message fails (as intruders' leaks do): the few
        // left say nothing, whatever they share.
        let (t, findings) = shaped(|s: &Send| u8::from(!(s.room == 0 && s.sender == 0 && s.t_ns < 2_000_000_000)));
        let said = diagnose(&t, &findings);
        assert!(said[0].contains("nearly every message has a finding (2 sends have none)"), "{said:?}");
        // Too few to say anything.
        let (t, findings) = shaped(|s: &Send| u8::from(s.msg == msg_no(0, 1)));
        assert!(diagnose(&t, &findings).is_empty());
    }

    proptest::proptest! {
        /// Any room, sender or time slice made to lose its messages (all,
        /// or all but a few) is the dimension named.
        #[test]
        fn an_injected_cause_is_named(dim in 0u8..3, value in 0u32..4, slice in 0u64..10, spared in 0u64..2) {
            let (cause, phrase) = match dim {
                0 => (Box::new(move |s: &Send| s.room == value) as Box<dyn Fn(&Send) -> bool>, format!("sent to room `room-{value}`")),
                1 => (Box::new(move |s: &Send| s.sender == value) as Box<dyn Fn(&Send) -> bool>, format!("sent by client {value}")),
                _ => (
                    Box::new(move |s: &Send| s.t_ns / 1_000_000_000 == slice) as Box<dyn Fn(&Send) -> bool>,
                    format!("sent between {slice}.0 s and {}.0 s", slice + 1),
                ),
            };
            // `spared`: one failing message in 16 delivered after all.
            let (t, findings) = shaped(|s: &Send| if cause(s) && !(spared == 1 && s.msg.is_multiple_of(16)) { 3 } else { 0 });
            let said = diagnose(&t, &findings);
            proptest::prop_assert_eq!(said.len(), 1);
            proptest::prop_assert!(said[0].contains(&phrase), "{}: {:?}", phrase, said);
        }
    }
}

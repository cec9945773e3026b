//! Exactly-once delivery: lost, duplicated, phantom, agreement,
//! before-start and corrupted findings.
//!
//! A message is owed once its [`Fate`] says it is stored (acked, or found in
//! history though unacked): then every subscriber that owes it must get it
//! exactly once. A message that is not stored must reach no one. Only when
//! history could not be read does the old indeterminate rule remain: at most
//! once, and if to anyone then to every subscriber that covered it.

use super::{Fate, Finding, FindingKind, TraceIndex};
use crate::trace::{FOREIGN_MSG, MsgNo};
use std::collections::{HashMap, HashSet};

pub fn check(index: &TraceIndex) -> Vec<Finding> {
    let mut findings = Vec::new();
    // For messages of unknown fate: the (room, seq) they were delivered with.
    let mut unknown_delivered: HashMap<MsgNo, u64> = HashMap::new();
    for sub in &index.subscribers {
        let mut counts: HashMap<MsgNo, u32> = HashMap::with_capacity(sub.deliveries.len());
        for d in &sub.deliveries {
            let at = |kind, detail: String| {
                Finding::new(kind, detail).room(d.room).msg(d.msg).seq(d.seq).client(sub.client, sub.node).observed(d.t_ns)
            };
            let send = index.sends.get(&d.msg);
            if d.ignored {
                // In flight after an unsubscribe: only what it carries is
                // judged, but it is evidence the message happened (owed to
                // every covering subscriber when nothing else tells).
                if send.is_some_and(|s| s.fate == Fate::Unknown) {
                    unknown_delivered.entry(d.msg).or_insert(d.seq);
                }
                match send {
                    Some(send) if send.fate != Fate::NotStored => {
                        if let Some(body) = d.body.filter(|b| *b != send.body) {
                            let detail = format!("delivered a body of {body}; the sender sent {}", send.body);
                            findings.push(at(FindingKind::Corrupted, detail).sent(send.first_sent_ns));
                        }
                    }
                    _ => findings.push(at(FindingKind::Phantom, format!("delivered as seq {}, but no stored message is it", d.seq))),
                }
                continue;
            }
            let count = counts.entry(d.msg).or_insert(0);
            *count += 1;
            let phantom = match send.map(|s| s.fate) {
                _ if d.msg == FOREIGN_MSG => Some("no client sent it".to_owned()),
                None => Some("no client sent it".to_owned()),
                Some(Fate::NotStored) => Some("its send was never acked and history does not hold it".to_owned()),
                Some(_) => None,
            };
            if let Some(why) = phantom {
                if *count == 1 {
                    findings.push(at(FindingKind::Phantom, format!("delivered as seq {}, but {why}", d.seq)));
                }
                continue;
            }
            let send = send.expect("not a phantom, so sent");
            if *count > 1 {
                findings.push(at(FindingKind::Duplicated, format!("delivery #{count} of the same message")).sent(send.first_sent_ns));
            }
            if let Some(body) = d.body
                && body != send.body
            {
                let detail = format!("delivered a body of {body}; the sender sent {}", send.body);
                findings.push(at(FindingKind::Corrupted, detail).sent(send.first_sent_ns));
            }
            if d.unrequested {
                let detail = match sub.subscribed_ns() {
                    None => "delivered before any subscription was confirmed".to_owned(),
                    Some(_) => format!(
                        "seq {} is at or below the start ({}) it subscribed at, and was sent before it subscribed",
                        d.seq,
                        sub.start()
                    ),
                };
                findings.push(at(FindingKind::BeforeStart, detail).sent(send.first_sent_ns));
            }
            if send.fate == Fate::Unknown {
                unknown_delivered.entry(d.msg).or_insert(d.seq);
            }
        }
    }
    let delivered: Vec<HashSet<MsgNo>> = index.subscribers.iter().map(|s| s.deliveries.iter().map(|d| d.msg).collect()).collect();
    // Only a room's own subscribers can owe its messages: looking at every
    // subscriber for every message was messages x subscribers (1,000 rooms
    // of 99: 49k x 99k, minutes for a 5M-event trace), not linear.
    let mut of_room: HashMap<crate::trace::RoomIdx, Vec<usize>> = HashMap::new();
    for (i, sub) in index.subscribers.iter().enumerate() {
        of_room.entry(sub.room).or_default().push(i);
    }
    for &msg in &index.send_order {
        let send = &index.sends[&msg];
        let (kind, seq) = match (send.fate, unknown_delivered.get(&msg)) {
            (Fate::Acked(seq) | Fate::Stored(seq) | Fate::Delivered(seq), _) => (FindingKind::Lost, seq),
            (Fate::Unconfirmed, _) => (FindingKind::Lost, 0),
            (Fate::Unknown, Some(&seq)) => (FindingKind::Agreement, seq),
            _ => continue,
        };
        for &i in of_room.get(&send.room).map_or(&[][..], Vec::as_slice) {
            let (sub, got) = (&index.subscribers[i], &delivered[i]);
            // Owed only because it stayed the freshness window and left
            // without it: `stale` (see `freshness`), not proof of a loss.
            if got.contains(&msg) || !sub.owes_surely(send, seq) {
                continue;
            }
            let detail = match send.fate {
                Fate::Acked(_) if sub.seq_less => "sent and acked while this subscriber was subscribed, never delivered to it".to_owned(),
                Fate::Acked(_) => format!("acked as seq {seq}, never delivered to this subscriber"),
                Fate::Stored(_) => format!("never acked but stored as seq {seq}, never delivered to this subscriber"),
                Fate::Delivered(_) => {
                    "sent while this subscriber was subscribed (no ack by design); delivered to others, never to it".to_owned()
                }
                Fate::Unconfirmed => {
                    "unconfirmed: sent while this subscriber was subscribed (no ack by design), and delivered to no one although the sender's connection stayed open past confirm_after".to_owned()
                }
                _ => format!("never acked (history unknown), delivered to others as seq {seq}, not to this subscriber"),
            };
            let finding = Finding::new(kind, detail).room(send.room).msg(msg).client(sub.client, sub.node).sent(send.first_sent_ns);
            findings.push(if send.fate == Fate::Unconfirmed { finding } else { finding.seq(seq) });
        }
    }
    findings
}

//! Deliberate guarantee-breaking for testing the harness's checkers.
//!
//! Off unless `--sabotage` is given. Never enable it outside tests.
//!
//! Per delivered frame (probabilities), at the very last step when a `msg`
//! frame is written to a socket, so no recovery logic upstream can hide it:
//! `drop` skips the frame, `dup` writes it twice, `reorder` holds it back
//! and writes it after the next one.
//!
//! Liveness (flags), each while `/healthz` stays 200: `refuse_upgrade`
//! answers every WebSocket upgrade with 503; `no_ack` stores and fans out
//! every send but never acks it; `refuse_after` answers every `subscribe`
//! with `after` with an error; `stop_fanout` hands nothing to local
//! subscribers (the fan-out source stays open).
//!
//! What a real client sees (flags, and one duration), each leaving
//! MongoDB's copy intact: `truncate` cuts every delivered body to 8
//! characters; `mislabel` names the wrong room on every delivery (protocol
//! v1's `room`; STOMP's `subscription` id); `ignore_unsubscribe` answers
//! `unsubscribed` and keeps delivering; `leak` hands every message to every
//! connection of the node, subscribed or not; `late=3s` fans every message
//! out that much later.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sabotage {
    pub drop: f64,
    pub dup: f64,
    pub reorder: f64,
    pub refuse_upgrade: bool,
    pub no_ack: bool,
    pub refuse_after: bool,
    pub stop_fanout: bool,
    pub truncate: bool,
    pub mislabel: bool,
    pub ignore_unsubscribe: bool,
    pub leak: bool,
    /// Authorization broken (with `--auth-secret`): a subscribe with
    /// `after` (a resubscribe after a reconnect) skips the room check.
    pub auth_skip_after: bool,
    /// Authorization broken: the history endpoint checks no token.
    pub auth_history_open: bool,
    /// Authorization broken: only a connection's first room is checked.
    pub auth_first_room_only: bool,
    /// Authorization broken: a granted room opens every room it is a
    /// prefix of, and every prefix of it.
    pub auth_prefix_match: bool,
    /// Authorization broken: the same by suffix.
    pub auth_suffix_match: bool,
    /// Authorization broken: room names compared without case.
    pub auth_ignore_case: bool,
    /// Authorization broken: a token's expiry is checked when the
    /// connection opens only (an open connection keeps its rights).
    pub auth_expiry_at_connect: bool,
    /// Authorization broken: the room name is checked as the client
    /// wrote it, then decoded and normalised (percent-decoding, NFKC,
    /// dot-segments, trailing separators, case) and used as that: a
    /// token for `room-1%32` opens `room-12`. For the whole process.
    pub auth_raw_name: bool,
    /// Authorization broken: a broker-style pattern (`#`, `>`, `*`, `+`,
    /// `room-*`) is taken as a room name, subscribed to without a grant
    /// check, and gets every room it covers. For the whole process.
    pub auth_wildcard: bool,
    /// Zero: off.
    pub late: std::time::Duration,
}

/// Characters `truncate` keeps of a body.
pub const TRUNCATE_TO_CHARS: usize = 8;

/// A body as `--sabotage truncate` delivers it.
pub fn truncated(body: &str) -> &str {
    body.char_indices().nth(TRUNCATE_TO_CHARS).map_or(body, |(i, _)| &body[..i])
}

impl Sabotage {
    pub fn is_off(&self) -> bool {
        *self == Sabotage::default()
    }

    /// How authorization compares names (all off unless sabotaged).
    pub fn loose(&self) -> crate::auth::Loose {
        crate::auth::Loose { prefix: self.auth_prefix_match, suffix: self.auth_suffix_match, case: self.auth_ignore_case }
    }

    fn dice_off(&self) -> bool {
        self.drop == 0.0 && self.dup == 0.0 && self.reorder == 0.0
    }
}

/// A `--sabotage` spec that does not parse (the message says why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SabotageError(String);

impl FromStr for Sabotage {
    type Err = SabotageError;

    /// `drop=0.02,dup=0.01,reorder=0.01` (probabilities per delivered
    /// frame), `late=3s`, and/or flags: `refuse_upgrade`, `no_ack`,
    /// `refuse_after`, `stop_fanout`, `truncate`, `mislabel`,
    /// `ignore_unsubscribe`, `leak`, `auth_skip_after`, `auth_history_open`,
    /// `auth_first_room_only`, `auth_prefix_match`, `auth_suffix_match`,
    /// `auth_ignore_case`, `auth_expiry_at_connect`, `auth_raw_name`,
    /// `auth_wildcard`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Sabotage::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let flag = match part {
                "refuse_upgrade" => Some(&mut out.refuse_upgrade),
                "no_ack" => Some(&mut out.no_ack),
                "refuse_after" => Some(&mut out.refuse_after),
                "stop_fanout" => Some(&mut out.stop_fanout),
                "truncate" => Some(&mut out.truncate),
                "mislabel" => Some(&mut out.mislabel),
                "ignore_unsubscribe" => Some(&mut out.ignore_unsubscribe),
                "leak" => Some(&mut out.leak),
                "auth_skip_after" => Some(&mut out.auth_skip_after),
                "auth_history_open" => Some(&mut out.auth_history_open),
                "auth_first_room_only" => Some(&mut out.auth_first_room_only),
                "auth_prefix_match" => Some(&mut out.auth_prefix_match),
                "auth_suffix_match" => Some(&mut out.auth_suffix_match),
                "auth_ignore_case" => Some(&mut out.auth_ignore_case),
                "auth_expiry_at_connect" => Some(&mut out.auth_expiry_at_connect),
                "auth_raw_name" => Some(&mut out.auth_raw_name),
                "auth_wildcard" => Some(&mut out.auth_wildcard),
                _ => None,
            };
            if let Some(flag) = flag {
                *flag = true;
                continue;
            }
            if let Some(late) = part.strip_prefix("late=") {
                out.late = humantime::parse_duration(late.trim())
                    .map_err(|e| SabotageError(format!("sabotage late: {late:?} is not a duration like 3s: {e}")))?;
                continue;
            }
            let (key, value) = part.split_once('=').ok_or_else(|| {
                SabotageError(format!(
                    "sabotage {part:?}: expected key=probability (drop, dup, reorder), late=DURATION, or a flag (refuse_upgrade, no_ack, refuse_after, stop_fanout, truncate, mislabel, ignore_unsubscribe, leak, auth_skip_after, auth_history_open, auth_first_room_only, auth_prefix_match, auth_suffix_match, auth_ignore_case, auth_expiry_at_connect, auth_raw_name, auth_wildcard)"
                ))
            })?;
            let p: f64 = value.trim().parse().map_err(|_| SabotageError(format!("sabotage {key}: {value:?} is not a number")))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(SabotageError(format!("sabotage {key}: {p} is not a probability in 0..=1")));
            }
            match key.trim() {
                "drop" => out.drop = p,
                "dup" => out.dup = p,
                "reorder" => out.reorder = p,
                other => {
                    return Err(SabotageError(format!(
                        "sabotage: unknown kind {other:?} (expected drop, dup, reorder, late, refuse_upgrade, no_ack, refuse_after, stop_fanout, truncate, mislabel, ignore_unsubscribe, leak, auth_skip_after, auth_history_open, auth_first_room_only, auth_prefix_match, auth_suffix_match, auth_ignore_case, auth_expiry_at_connect, auth_raw_name or auth_wildcard)"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// What to do with one outgoing `msg` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Write,
    Drop,
    Duplicate,
    HoldBack,
}

/// Per-connection dice.
pub struct Saboteur {
    config: Sabotage,
    rng: StdRng,
}

impl Saboteur {
    pub fn new(config: Sabotage, seed: u64) -> Self {
        Self { config, rng: StdRng::seed_from_u64(seed) }
    }

    pub fn judge(&mut self) -> Verdict {
        if self.config.dice_off() {
            return Verdict::Write;
        }
        let roll: f64 = self.rng.random();
        let c = self.config;
        if roll < c.drop {
            Verdict::Drop
        } else if roll < c.drop + c.dup {
            Verdict::Duplicate
        } else if roll < c.drop + c.dup + c.reorder {
            Verdict::HoldBack
        } else {
            Verdict::Write
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let s: Sabotage = "drop=0.5,dup=0.25".parse().unwrap();
        assert_eq!(s, Sabotage { drop: 0.5, dup: 0.25, ..Default::default() });
        let s: Sabotage = "no_ack, refuse_after".parse().unwrap();
        assert_eq!(s, Sabotage { no_ack: true, refuse_after: true, ..Default::default() });
        assert!(!s.is_off() && Sabotage::default().is_off());
        assert!("drop=2".parse::<Sabotage>().is_err());
        assert!("lose=0.1".parse::<Sabotage>().is_err());
        assert!("drop".parse::<Sabotage>().is_err());
        let s: Sabotage = "truncate,mislabel,ignore_unsubscribe,leak,late=3s".parse().unwrap();
        assert!(s.truncate && s.mislabel && s.ignore_unsubscribe && s.leak);
        assert_eq!(s.late, std::time::Duration::from_secs(3));
        assert!("late=soon".parse::<Sabotage>().is_err());
    }

    #[test]
    fn truncate_keeps_eight_characters_not_bytes() {
        assert_eq!(truncated("안녕하세요 여러분 반가워요"), "안녕하세요 여러");
        assert_eq!(truncated("short"), "short");
    }

    #[test]
    fn off_always_writes_and_on_sometimes_drops() {
        let mut off = Saboteur::new(Sabotage::default(), 1);
        assert!((0..1000).all(|_| off.judge() == Verdict::Write));
        let mut on = Saboteur::new(Sabotage { drop: 0.5, ..Default::default() }, 1);
        let drops = (0..1000).filter(|_| on.judge() == Verdict::Drop).count();
        assert!((350..650).contains(&drops), "{drops} drops of 1000 at p=0.5");
    }
}

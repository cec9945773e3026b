//! Who may read and write which room: HS256 JSON Web Tokens, verified with
//! `jsonwebtoken` (off unless the node is given a secret).
//!
//! A token's claims are `sub` (who), `rooms` (the room names it may
//! subscribe to, send into and read the history of; `"*"` for all) and
//! `exp` (seconds since the Unix epoch; required, checked with no leeway).
//! Only HS256 is accepted: `alg: none`, other algorithms, bad signatures,
//! malformed and oversize tokens are refused, never a panic.
//!
//! This module is pure (no I/O): the connection and the HTTP routes call
//! [`Verifier::verify`] and then ask the [`Grant`] about each room.

use chatbench_wire::token::{Claims, EVERY_ROOM};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest token accepted, in bytes; longer ones are refused unread.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Shortest secret accepted, in bytes (HS256 wants at least 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;
/// Why a token whose claims are not what a grant needs is refused.
const CLAIMS: &str = "the claims need sub (a string), exp (seconds since the epoch) and rooms (a list of names, or \"*\")";
/// Close code of a connection whose token expired (documented in PROTOCOL.md).
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// Checks tokens against the node's secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("Verifier(HS256)")
    }
}

/// Why a token was refused (`unauthenticated`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: give one as Authorization: Bearer, access_token, or in STOMP CONNECT")]
    Missing,
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
}

/// An HS256 secret shorter than [`MIN_SECRET_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the auth secret is {len} bytes; HS256 needs at least {MIN_SECRET_BYTES}")]
pub struct SecretTooShort {
    pub len: usize,
}

/// Name comparisons a broken server makes (TEST ONLY, from `--sabotage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loose {
    /// Either name a prefix of the other (`r1` opens `r10`, `r10` opens `r1`).
    pub prefix: bool,
    /// Either name a suffix of the other.
    pub suffix: bool,
    /// Names compared without case (`R1` opens `r1`).
    pub case: bool,
}

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub sub: String,
    rooms: Rooms,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rooms {
    All,
    These(HashSet<String>),
}

impl Grant {
    /// May the holder subscribe to, send into and read `room`?
    pub fn may(&self, room: &str) -> bool {
        match &self.rooms {
            Rooms::All => true,
            Rooms::These(rooms) => rooms.contains(room),
        }
    }

    /// [`Grant::may`], with the name comparison broken as `loose` says
    /// (TEST ONLY: `--sabotage auth_prefix_match`, `auth_suffix_match`,
    /// `auth_ignore_case`); `Loose::default()` is `may` itself.
    pub fn may_loosely(&self, room: &str, loose: Loose) -> bool {
        match &self.rooms {
            Rooms::All => true,
            Rooms::These(rooms) => {
                rooms.contains(room)
                    || rooms.iter().any(|g| {
                        let g = g.as_str();
                        (loose.prefix && (room.starts_with(g) || g.starts_with(room)))
                            || (loose.suffix && (room.ends_with(g) || g.ends_with(room)))
                            || (loose.case && g.eq_ignore_ascii_case(room))
                    })
            }
        }
    }

    /// Has the token expired at `now` (seconds since the Unix epoch)?
    pub fn expired_at(&self, now: u64) -> bool {
        now >= self.exp
    }
}

impl Verifier {
    /// A verifier for this secret; too short a secret is refused.
    pub fn new(secret: &[u8]) -> Result<Verifier, SecretTooShort> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SecretTooShort { len: secret.len() });
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Verifier { key: DecodingKey::from_secret(secret), validation })
    }

    /// Verify `token` (a bare JWT, or `Bearer <JWT>`).
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        let token = token.trim();
        // `Bearer <token>` (the scheme is case-insensitive), or the bare token.
        let token = match token.split_once(char::is_whitespace) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ if token.eq_ignore_ascii_case("bearer") => "",
            _ => token,
        };
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLong);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::Invalid("only HS256 is accepted"),
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => AuthError::Invalid(CLAIMS),
            _ => AuthError::Invalid("malformed token"),
        })?;
        let Claims { sub, rooms, exp } = claims.claims;
        // A token is good until `exp`, not at it (jsonwebtoken lets exp == now pass).
        if now_s() >= exp {
            return Err(AuthError::Expired);
        }
        let rooms = if rooms.iter().any(|r| r == EVERY_ROOM) { Rooms::All } else { Rooms::These(rooms.into_iter().collect()) };
        Ok(Grant { sub, rooms, exp })
    }
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// Each loose comparison opens exactly its confusion; none at all is `may`.
    #[test]
    fn loose_comparisons_open_exactly_their_confusions() {
        let g = Grant { sub: "a".into(), rooms: Rooms::These(["room-1".to_owned()].into()), exp: u64::MAX };
        let rooms = ["room-1", "room-12", "room-", "ROOM-1", "xroom-1", "oom-1", "room-2"];
        let opened = |loose: Loose| -> Vec<&str> { rooms.iter().copied().filter(|r| g.may_loosely(r, loose)).collect() };
        assert_eq!(opened(Loose::default()), ["room-1"]);
        assert_eq!(opened(Loose { prefix: true, ..Loose::default() }), ["room-1", "room-12", "room-"]);
        assert_eq!(opened(Loose { suffix: true, ..Loose::default() }), ["room-1", "xroom-1", "oom-1"]);
        assert_eq!(opened(Loose { case: true, ..Loose::default() }), ["room-1", "ROOM-1"]);
    }

    fn token(claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::new(SECRET).unwrap()
    }

    #[test]
    fn a_valid_token_grants_its_rooms_and_only_those() {
        let exp = now_s() + 60;
        let g = verifier().verify(&token(serde_json::json!({"sub": "ann", "rooms": ["a", "b"], "exp": exp}))).unwrap();
        assert_eq!((g.sub.as_str(), g.exp), ("ann", exp));
        assert!(g.may("a") && g.may("b") && !g.may("c"));
        let all = verifier().verify(&format!("Bearer {}", token(serde_json::json!({"sub": "op", "rooms": ["*"], "exp": exp})))).unwrap();
        assert!(all.may("anything"));
        let none = verifier().verify(&token(serde_json::json!({"sub": "x", "exp": exp}))).unwrap();
        assert!(!none.may("a"), "no rooms claim: no room");
    }

    #[test]
    fn expired_forged_unsigned_and_foreign_tokens_are_refused() {
        let v = verifier();
        let exp = now_s() + 60;
        assert_eq!(v.verify(&token(serde_json::json!({"sub": "a", "rooms": ["r"], "exp": now_s() - 1}))), Err(AuthError::Expired));
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a", "rooms": ["*"], "exp": exp}),
            &EncodingKey::from_secret(b"another secret, also 32 bytes long"),
        )
        .unwrap();
        assert_eq!(v.verify(&forged), Err(AuthError::Invalid("bad signature")));
        // alg: none, signature empty.
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
        };
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&format!(r#"{{"sub":"a","rooms":["*"],"exp":{exp}}}"#)));
        assert!(matches!(v.verify(&unsigned), Err(AuthError::Invalid(_))), "{:?}", v.verify(&unsigned));
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub": "a", "rooms": ["*"], "exp": exp}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(v.verify(&hs512), Err(AuthError::Invalid("only HS256 is accepted")));
        assert_eq!(v.verify(&token(serde_json::json!({"rooms": ["*"], "exp": exp}))), Err(AuthError::Invalid(CLAIMS)));
        assert_eq!(v.verify(&token(serde_json::json!({"sub": "a", "rooms": ["*"]}))), Err(AuthError::Invalid(CLAIMS)));
        assert_eq!(v.verify(&token(serde_json::json!({"sub": "a", "rooms": "r", "exp": exp}))), Err(AuthError::Invalid(CLAIMS)));
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        assert_eq!(v.verify("Bearer "), Err(AuthError::Missing));
        assert_eq!(v.verify(&"x".repeat(MAX_TOKEN_BYTES + 1)), Err(AuthError::TooLong));
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(Verifier::new(b"short").is_err());
    }

    proptest! {
        /// Whatever arrives as a token is refused or granted, never a panic.
        #[test]
        fn arbitrary_tokens_never_panic(raw in ".{0,600}", dots in proptest::collection::vec("[A-Za-z0-9_-]{0,80}", 0..5)) {
            let v = verifier();
            let _ = v.verify(&raw);
            let _ = v.verify(&dots.join("."));
        }
    }
}

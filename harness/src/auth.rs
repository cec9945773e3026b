//! Credentials the harness mints for the reference server (`auth` in a
//! scenario, no `token_command`): a fresh random secret per run, in a file
//! only this user can read (nodes get `--auth-secret FILE`; the secret is
//! never on a command line, in a log or in a result), and HS256 tokens
//! with the server's claims (`sub`, `rooms`, `exp`), made with
//! `jsonwebtoken` (MIT), the crate the server verifies with.

use crate::trace::Credential;
use chatbench_wire::token::{Claims, EVERY_ROOM};
use rand::RngCore;
use std::io::Write;

/// How long a member's token lives: longer than any run.
const MEMBER_TTL_S: u64 = 24 * 3600;
/// How long ago an expired intruder's token expired (well past any leeway).
const EXPIRED_AGO_S: u64 = 600;

/// Makes a token: `(sub, rooms, exp)` (see [`Minter::signer`]).
pub(crate) type Signer = std::sync::Arc<dyn Fn(&str, &[String], u64) -> String + Send + Sync>;

/// A run's secret and the file the nodes read it from (deleted on drop).
pub(crate) struct Minter {
    /// 32 random bytes as 64 hex digits: text, so nothing in it is taken
    /// for the line end a secret file may have (the server drops one).
    secret: Vec<u8>,
    file: tempfile::NamedTempFile,
}

impl Minter {
    pub(crate) fn new() -> std::io::Result<Self> {
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let secret: Vec<u8> = random.iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect();
        // 0600, in the temp dir: not in the results folder.
        let mut file = tempfile::Builder::new().prefix("chatbench-auth-").tempfile()?;
        file.write_all(&secret)?;
        file.flush()?;
        Ok(Self { secret, file })
    }

    /// The flags every node starts with.
    pub(crate) fn server_args(&self) -> Vec<String> {
        vec!["--auth-secret".to_owned(), self.file.path().display().to_string()]
    }

    /// Signs tokens after the minter is gone from reach (an `expiring`
    /// intruder's, made when sending starts): `(sub, rooms, exp)`.
    pub(crate) fn signer(&self) -> Signer {
        let secret = self.secret.clone();
        std::sync::Arc::new(move |sub: &str, rooms: &[String], exp: u64| sign(&secret, sub, rooms, exp))
    }

    /// A member's token for `rooms` (`["*"]`: every room).
    pub(crate) fn member(&self, sub: &str, rooms: &[String]) -> String {
        sign(&self.secret, sub, rooms, now_s() + MEMBER_TTL_S)
    }

    /// An intruder's token: `room` is the room it tries, `other` a room
    /// it may use instead. None for an intruder without credentials.
    pub(crate) fn intruder(&self, credential: Credential, sub: &str, room: &str, other: &str) -> Option<String> {
        match credential {
            Credential::OtherRoom | Credential::Confusable | Credential::Wildcard | Credential::Spelling => {
                Some(self.member(sub, &[other.to_owned()]))
            }
            Credential::Expired => Some(sign(&self.secret, sub, &[room.to_owned()], now_s().saturating_sub(EXPIRED_AGO_S))),
            // Replaced when sending starts by one that expires meanwhile.
            Credential::Expiring => Some(self.member(sub, &[room.to_owned()])),
            Credential::Forged => {
                let mut wrong = [0u8; 32];
                rand::rng().fill_bytes(&mut wrong);
                Some(sign(&wrong, sub, &[EVERY_ROOM.to_owned()], now_s() + MEMBER_TTL_S))
            }
            Credential::None => None,
        }
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn sign(secret: &[u8], sub: &str, rooms: &[String], exp: u64) -> String {
    let claims = Claims { sub: sub.to_owned(), rooms: rooms.to_vec(), exp };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("HS256 over serializable claims cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};

    #[derive(Debug, serde::Deserialize)]
    struct Read {
        rooms: Vec<String>,
        exp: u64,
    }

    fn verify(minter: &Minter, token: &str) -> jsonwebtoken::errors::Result<Read> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.required_spec_claims = ["exp".to_owned()].into();
        decode::<Read>(token, &DecodingKey::from_secret(&minter.secret), &v).map(|d| d.claims)
    }

    #[test]
    fn each_kind_of_credential_is_what_it_says() {
        let m = Minter::new().unwrap();
        assert_eq!(std::fs::read(m.file.path()).unwrap(), m.secret);
        assert!(m.secret.len() == 64 && m.secret.iter().all(u8::is_ascii_hexdigit));
        let token = m.member("client-1", &["r1".into(), "r2".into()]);
        // harness/tests/auth_e2e.rs looks for tokens by this header.
        assert!(token.starts_with("eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9."), "{token}");
        let member = verify(&m, &token).unwrap();
        assert_eq!(member.rooms, ["r1", "r2"]);
        assert!(member.exp > now_s() + 3600);
        assert_eq!(verify(&m, &m.intruder(Credential::OtherRoom, "i", "r1", "r2").unwrap()).unwrap().rooms, ["r2"]);
        let expired = m.intruder(Credential::Expired, "i", "r1", "r2").unwrap();
        assert_eq!(verify(&m, &expired).unwrap_err().kind(), &jsonwebtoken::errors::ErrorKind::ExpiredSignature);
        let forged = m.intruder(Credential::Forged, "i", "r1", "r2").unwrap();
        assert_eq!(verify(&m, &forged).unwrap_err().kind(), &jsonwebtoken::errors::ErrorKind::InvalidSignature);
        assert!(m.intruder(Credential::None, "i", "r1", "r2").is_none());
    }

    #[test]
    fn the_secret_file_is_private_and_goes_with_the_minter() {
        use std::os::unix::fs::PermissionsExt;
        let m = Minter::new().unwrap();
        let path = m.file.path().to_owned();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o077, 0);
        drop(m);
        assert!(!path.exists());
    }
}

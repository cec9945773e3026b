//! Tokens with a *valid* signature over fuzzed header and claims bytes, so
//! the paths past the signature check (algorithm, claims JSON, expiry,
//! rooms) see hostile input too: never a panic.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chatbench_server::auth::Verifier;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const SECRET: &[u8] = b"fuzzing secret, 32 bytes or more.";
static VERIFIER: OnceLock<Verifier> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let verifier = VERIFIER.get_or_init(|| Verifier::new(SECRET).expect("a long enough secret"));
    // header bytes 0xff claims bytes (no 0xff: a fixed HS256 header).
    let (header, claims) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], data),
    };
    let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let Ok(signature) = jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(SECRET), Algorithm::HS256) else {
        return;
    };
    let _ = verifier.verify(&format!("{message}.{signature}"));
});

//! Any bytes as a token (`Authorization`, `access_token`, STOMP `passcode`):
//! refused or granted, never a panic, never a hang.
#![no_main]

use chatbench_server::auth::Verifier;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static VERIFIER: OnceLock<Verifier> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let verifier = VERIFIER.get_or_init(|| Verifier::new(b"fuzzing secret, 32 bytes or more.").expect("a long enough secret"));
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = verifier.verify(token);
    }
});

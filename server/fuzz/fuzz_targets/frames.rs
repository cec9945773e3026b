//! Any bytes a client can send as a text frame: parsed into a request or an
//! error frame, never a panic; every error frame is valid JSON naming a code.
#![no_main]

use chatbench_server::protocol::{MAX_SEQ, Request, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_request(&text) {
        Ok(Request::Send { room, id, body }) => {
            assert!(!room.as_str().is_empty() && !id.as_str().is_empty() && !body.is_empty());
        }
        Ok(Request::Subscribe { after, .. }) => assert!(after.is_none_or(|a| a.0 <= MAX_SEQ)),
        Ok(Request::Unsubscribe { .. }) => {}
        Err(e) => {
            let frame: serde_json::Value = serde_json::from_str(&e.to_frame()).expect("error frames are JSON");
            assert_eq!(frame["op"], "error");
            assert!(frame["code"].is_string());
        }
    }
});

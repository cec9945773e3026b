//! STOMP on /stomp: any sequence of client messages and server frames
//! through one session never panics, and any bytes the codec accepts
//! re-encode to a frame that parses back to the same frame (bar the
//! content-length the encoder adds).
#![no_main]

use chatbench_server::stomp_dialect::Session;
use chatbench_stomp::{Incoming, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, Vec<(bool, String)>)| {
    let (bytes, messages) = input;
    if let Ok(Incoming::Frame(frame)) = parse(&bytes)
        && let Ok(encoded) = frame.encode()
    {
        let Ok(Incoming::Frame(back)) = parse(&encoded) else { panic!("an encoded frame did not parse: {encoded:?}") };
        let added = |f: &chatbench_stomp::Frame| f.headers.iter().filter(|(n, _)| n != "content-length").cloned().collect::<Vec<_>>();
        assert_eq!((back.command, &back.body), (frame.command, &frame.body));
        assert_eq!(added(&back), added(&frame));
    }
    let mut session = Session::new(Some(("u".into(), "p".into())), None);
    let _ = session.inbound("CONNECT\naccept-version:1.2\nlogin:u\npasscode:p\n\n\0");
    for (outbound, text) in messages {
        if outbound {
            let _ = session.outbound(&text);
        } else {
            let _ = session.inbound(&text);
        }
    }
});

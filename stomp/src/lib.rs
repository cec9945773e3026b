//! A STOMP 1.2 frame codec for STOMP over WebSocket, where each WebSocket
//! message carries one frame (or, alone, a heart-beat: end-of-lines only).
//!
//! Written here rather than taken from a crate: `stomp-parser` (MIT) has no
//! encoder for every frame and an unmaintained API, `async-stomp` is
//! EUPL-licensed, and the whole codec is the spec's grammar (about 200
//! lines), property-tested below: every frame round-trips, and any bytes
//! parse or give an error, never a panic.
//!
//! The grammar (STOMP 1.2, "Augmented BNF"): a command line, header lines
//! `name:value`, an empty line, the body, NUL, then optional end-of-lines.
//! Lines end in LF or CRLF. Header names and values are escaped (`\r`,
//! `\n`, `\c`, `\\`) in every frame but CONNECT and CONNECTED. When a header
//! repeats, the first occurrence counts. With `content-length`, the body is
//! exactly that many bytes (and may contain NUL); without it, it ends at
//! the first NUL.

use std::fmt;

/// Every command of STOMP 1.2 (client and server frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    // Client frames.
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    // Server frames.
    Connected,
    Message,
    Receipt,
    Error,
}

impl Command {
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Connected,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Connected => "CONNECTED",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    fn parse(s: &[u8]) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.as_str().as_bytes() == s)
    }

    /// CONNECT and CONNECTED headers are not escaped (STOMP 1.0 compatibility).
    fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    /// In order, repeats kept (the first one counts: see [`Frame::header`]).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What one WebSocket message held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Frame(Frame),
    /// End-of-lines only: a heart-beat.
    HeartBeat,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty frame")]
    Empty,
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("the frame ends inside its headers (no empty line before the body)")]
    UnterminatedHeaders,
    #[error("header line {0:?} has no ':'")]
    HeaderWithoutColon(String),
    #[error("header {0:?}: undefined escape sequence (STOMP 1.2 allows \\r \\n \\c \\\\)")]
    BadEscape(String),
    #[error("header {0:?} is not UTF-8")]
    NotUtf8(String),
    #[error("content-length {0:?} is not a byte count")]
    BadContentLength(String),
    #[error("the body is not followed by NUL (content-length {0:?} too long, or the frame is cut)")]
    MissingNul(Option<usize>),
    #[error("bytes after the frame's NUL that are not end-of-lines")]
    TrailingBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{command} headers are not escaped, so header {name:?} cannot carry ':' in its name or a line break")]
    Unescapable { command: Command, name: String },
}

impl Frame {
    pub fn new(command: Command) -> Self {
        Self { command, headers: Vec::new(), body: Vec::new() }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// The frame's bytes. A non-empty body gets a `content-length` header
    /// (unless the frame has one), so it may contain NUL.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64 + self.body.len());
        out.extend_from_slice(self.command.as_str().as_bytes());
        out.push(b'\n');
        let escapes = self.command.escapes_headers();
        for (name, value) in &self.headers {
            if escapes {
                escape_into(name, &mut out);
                out.push(b':');
                escape_into(value, &mut out);
            } else {
                let bad_name = name.contains([':', '\n', '\r']);
                if bad_name || value.contains(['\n', '\r']) {
                    return Err(EncodeError::Unescapable { command: self.command, name: name.clone() });
                }
                out.extend_from_slice(name.as_bytes());
                out.push(b':');
                out.extend_from_slice(value.as_bytes());
            }
            out.push(b'\n');
        }
        if !self.body.is_empty() && self.get("content-length").is_none() {
            out.extend_from_slice(format!("content-length:{}\n", self.body.len()).as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out.push(0);
        Ok(out)
    }

    /// [`Frame::encode`] as text (for WebSocket text messages); None when
    /// the body is not UTF-8.
    pub fn encode_text(&self) -> Result<Option<String>, EncodeError> {
        Ok(String::from_utf8(self.encode()?).ok())
    }
}

fn escape_into(s: &str, out: &mut Vec<u8>) {
    for b in s.bytes() {
        match b {
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b':' => out.extend_from_slice(b"\\c"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b => out.push(b),
        }
    }
}

fn unescape(raw: &[u8], line: &[u8]) -> Result<String, ParseError> {
    let lossy = || String::from_utf8_lossy(line).into_owned();
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next() {
            Some(b'r') => b'\r',
            Some(b'n') => b'\n',
            Some(b'c') => b':',
            Some(b'\\') => b'\\',
            _ => return Err(ParseError::BadEscape(lossy())),
        });
    }
    String::from_utf8(out).map_err(|_| ParseError::NotUtf8(lossy()))
}

/// Split off one line (LF or CRLF); None when there is no LF.
fn line(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = input.iter().position(|&b| b == b'\n')?;
    let line = &input[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, &input[end + 1..]))
}

fn only_eols(mut rest: &[u8]) -> bool {
    loop {
        rest = match rest {
            [] => return true,
            [b'\n', tail @ ..] | [b'\r', b'\n', tail @ ..] => tail,
            _ => return false,
        }
    }
}

/// Parse one WebSocket message's worth of STOMP.
pub fn parse(input: &[u8]) -> Result<Incoming, ParseError> {
    if input.is_empty() {
        return Err(ParseError::Empty);
    }
    if only_eols(input) {
        return Ok(Incoming::HeartBeat);
    }
    // Leading end-of-lines (heart-beats before the frame) are allowed.
    let mut rest = input;
    while let Some(tail) = rest.strip_prefix(b"\n").or_else(|| rest.strip_prefix(b"\r\n")) {
        rest = tail;
    }
    let (command_line, mut rest) = line(rest).ok_or(ParseError::UnterminatedHeaders)?;
    let command =
        Command::parse(command_line).ok_or_else(|| ParseError::UnknownCommand(String::from_utf8_lossy(command_line).into_owned()))?;
    let mut headers = Vec::new();
    loop {
        let (header, tail) = line(rest).ok_or(ParseError::UnterminatedHeaders)?;
        rest = tail;
        if header.is_empty() {
            break;
        }
        let colon = header
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| ParseError::HeaderWithoutColon(String::from_utf8_lossy(header).into_owned()))?;
        let (name, value) = (&header[..colon], &header[colon + 1..]);
        let (name, value) = if command.escapes_headers() {
            (unescape(name, header)?, unescape(value, header)?)
        } else {
            let text =
                |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| ParseError::NotUtf8(String::from_utf8_lossy(header).into_owned()));
            (text(name)?, text(value)?)
        };
        headers.push((name, value));
    }
    let frame_len = headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.clone());
    let body_len = match frame_len {
        Some(v) => Some(v.trim().parse::<usize>().map_err(|_| ParseError::BadContentLength(v.clone()))?),
        None => None,
    };
    let (body, after) = match body_len {
        Some(n) => {
            if rest.len() <= n || rest[n] != 0 {
                return Err(ParseError::MissingNul(Some(n)));
            }
            (&rest[..n], &rest[n + 1..])
        }
        None => {
            let nul = rest.iter().position(|&b| b == 0).ok_or(ParseError::MissingNul(None))?;
            (&rest[..nul], &rest[nul + 1..])
        }
    };
    if !only_eols(after) {
        return Err(ParseError::TrailingBytes);
    }
    Ok(Incoming::Frame(Frame { command, headers, body: body.to_vec() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(input: &[u8]) -> Frame {
        match parse(input).unwrap() {
            Incoming::Frame(f) => f,
            Incoming::HeartBeat => panic!("a heart-beat"),
        }
    }

    #[test]
    fn parses_the_spec_examples() {
        let f = frame(b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\0");
        assert_eq!(f.command, Command::Connect);
        assert_eq!(f.get("accept-version"), Some("1.2"));
        let f = frame(b"SEND\r\ndestination:/queue/a\r\ncontent-type:text/plain\r\n\r\nhello queue a\0\n\n");
        assert_eq!((f.get("destination"), f.body_text()), (Some("/queue/a"), Some("hello queue a")));
    }

    #[test]
    fn heart_beats_are_end_of_lines_only() {
        for beat in [&b"\n"[..], b"\r\n", b"\n\n\r\n"] {
            assert_eq!(parse(beat), Ok(Incoming::HeartBeat));
        }
    }

    #[test]
    fn the_first_of_repeated_headers_counts() {
        let f = frame(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0");
        assert_eq!(f.get("foo"), Some("World"));
        assert_eq!(f.headers.len(), 2);
    }

    #[test]
    fn escapes_decode_except_in_connect_frames() {
        let f = frame(b"MESSAGE\na\\cb:c\\\\d\\ne\\r\n\n\0");
        assert_eq!(f.get("a:b"), Some("c\\d\ne\r"));
        let f = frame(b"CONNECTED\nversion:1.2\nserver:a\\cb\n\n\0");
        assert_eq!(f.get("server"), Some("a\\cb"));
    }

    #[test]
    fn content_length_bodies_may_hold_nul() {
        let f = frame(b"SEND\ncontent-length:3\n\na\0b\0");
        assert_eq!(f.body, b"a\0b");
    }

    #[test]
    fn each_malformation_is_named() {
        let cases: [(&[u8], ParseError); 9] = [
            (b"", ParseError::Empty),
            (b"HELLO\n\n\0", ParseError::UnknownCommand("HELLO".into())),
            (b"SEND\ndestination:/a\n", ParseError::UnterminatedHeaders),
            (b"SEND\nnocolon\n\n\0", ParseError::HeaderWithoutColon("nocolon".into())),
            (b"SEND\na:b\\t\n\n\0", ParseError::BadEscape("a:b\\t".into())),
            (b"SEND\ncontent-length:x\n\n\0", ParseError::BadContentLength("x".into())),
            (b"SEND\ncontent-length:5\n\nab\0", ParseError::MissingNul(Some(5))),
            (b"SEND\n\nabc", ParseError::MissingNul(None)),
            (b"SEND\n\nabc\0xyz", ParseError::TrailingBytes),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input), Err(expected), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn connect_headers_that_cannot_be_written_are_refused() {
        let f = Frame::new(Command::Connect).header("login", "a\nb");
        assert!(matches!(f.encode(), Err(EncodeError::Unescapable { .. })));
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        let header = ("[a-z:\\\\\r\n\u{e9}-]{1,12}", "[ -~\\\\:\r\n\u{e9}\u{1F600}]{0,24}");
        (0..Command::ALL.len(), prop::collection::vec(header, 0..6), prop::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(c, headers, body)| {
                let command = Command::ALL[c];
                // CONNECT/CONNECTED cannot carry what only escaping could write.
                let headers = headers
                    .into_iter()
                    .filter(|(n, v): &(String, String)| {
                        command.escapes_headers() || !(n.contains([':', '\n', '\r']) || v.contains(['\n', '\r']))
                    })
                    // A generated content-length would not describe the body.
                    .filter(|(n, _)| n != "content-length")
                    .collect();
                Frame { command, headers, body }
            },
        )
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(f in any_frame()) {
            let bytes = f.encode().unwrap();
            let Incoming::Frame(back) = parse(&bytes).unwrap() else { panic!("a frame parsed as a heart-beat") };
            let mut expected = f.clone();
            if !f.body.is_empty() {
                expected.headers.push(("content-length".into(), f.body.len().to_string()));
            }
            prop_assert_eq!(back, expected);
        }

        #[test]
        fn any_bytes_parse_or_error_and_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn near_frames_parse_or_error_and_never_panic(f in any_frame(), cut in 0usize..200, flip in any::<u8>()) {
            let mut bytes = f.encode().unwrap();
            let at = cut % (bytes.len() + 1);
            bytes.truncate(at.max(1));
            if let Some(b) = bytes.last_mut() { *b ^= flip; }
            let _ = parse(&bytes);
        }
    }
}

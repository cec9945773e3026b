//! Message text as chat users write it: exactly the requested number of
//! UTF-8 bytes, mixing ASCII words with Hangul, emoji (4-byte and
//! multi-code-point ones) and the characters that break hand-written JSON
//! and STOMP handling (quotes, backslashes, newlines, braces, colons). A
//! server that mangles any of them fails the body check; `ascii` keeps to
//! printable ASCII words for servers that declare they take nothing else.

use crate::scenario::MessageText;
use rand::Rng;
use rand::rngs::StdRng;

/// Fragments of chat text. Every one is valid UTF-8 on its own, so any
/// concatenation is, and the filler below is one byte per character.
const CHAT: &[&str] = &[
    "hello",
    "see you at 5",
    "ok",
    "lol",
    "안녕하세요",
    "채팅",
    "메시지 보냈어요",
    "😀",
    "🎉",
    "👍🏽",
    "❤️",
    "🚀 launch",
    "\"quoted\"",
    "back\\slash",
    "line\nbreak",
    "{\"json\": true}",
    "a:b",
    "tab\there",
    "<b>&amp;</b>",
    "¿qué?",
    "naïve café",
    "日本語",
    "Ωmega",
    "100%",
];
const ASCII: &[&str] = &["hello", "see you at 5", "ok", "lol", "on my way", "sounds good", "brb", "thanks!", "10-4", "why not?"];
const FILLER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

/// Bytes JSON escaping adds to `s`.
fn escape_cost(s: &str) -> usize {
    s.bytes().filter(|b| matches!(b, b'"' | b'\\' | b'\n' | b'\t')).count()
}

/// `bytes` bytes of text (at least 1). JSON escaping grows it by at most
/// 1/32 (+ 2 bytes), so a frame built from the largest allowed message
/// stays under the servers' frame limit.
pub(crate) fn generate(rng: &mut StdRng, bytes: usize, style: MessageText) -> String {
    let pool = match style {
        MessageText::Chat => CHAT,
        MessageText::Ascii => ASCII,
    };
    let bytes = bytes.max(1);
    let budget = bytes / 32 + 2;
    let mut escapes = 0;
    let mut out = String::with_capacity(bytes);
    while out.len() < bytes {
        let left = bytes - out.len();
        let fragment = pool[rng.random_range(0..pool.len())];
        let sep = usize::from(!out.is_empty());
        let cost = escape_cost(fragment);
        if fragment.len() + sep <= left && escapes + cost <= budget && rng.random_bool(0.8) {
            escapes += cost;
            if sep == 1 {
                out.push(' ');
            }
            out.push_str(fragment);
        } else {
            out.push(FILLER[rng.random_range(0..FILLER.len())] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn exact_sizes_valid_utf8_and_the_hard_characters_show_up() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut all = String::new();
        for n in [1usize, 2, 3, 5, 17, 64, 256, 4096] {
            for _ in 0..20 {
                let t = generate(&mut rng, n, MessageText::Chat);
                assert_eq!(t.len(), n);
                all.push_str(&t);
            }
        }
        for hard in ['"', '\\', '\n', '안', '😀'] {
            assert!(all.contains(hard), "no {hard:?} in generated chat text");
        }
        for n in [1usize, 100, 60_000] {
            let t = generate(&mut rng, n, MessageText::Chat);
            let escaped = serde_json::to_string(&t).unwrap().len() - 2;
            assert!(escaped <= n + n / 32 + 2, "{n} bytes escape to {escaped}");
        }
        let ascii = generate(&mut rng, 4096, MessageText::Ascii);
        assert_eq!(ascii.len(), 4096);
        assert!(ascii.bytes().all(|b| (0x20..0x7f).contains(&b)), "{ascii}");
    }
}

//! Text from a message (or from a peer) made safe to print: a value that reaches a log line,
//! a dead-letter reason or a dead-letter header must not be able to forge a log line (CR,
//! LF), recolour a terminal (ANSI escapes), turn the log into a binary file (NUL) or
//! reorder what a reader sees (Unicode bidirectional controls), and must not make one line
//! megabytes long.
//!
//! Control characters become Rust-style escapes (`\n`, `\r`, `\t`, `\0`, `\u{1b}`), so what
//! the reader sees says what the producer sent; text beyond a limit is cut with `…`.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The longest reason kept, in characters: enough for a field name, the wrong value's start
/// and our explanation.
pub const MAX_REASON_CHARS: usize = 1_000;

/// `text` with every control and bidirectional-override character escaped, and cut after
/// `max_chars` characters. Borrowed when nothing needed changing.
pub fn printable(text: &str, max_chars: usize) -> Cow<'_, str> {
    let too_long = text.chars().nth(max_chars).is_some();
    if !too_long && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(max_chars * 2) + 8);
    for c in text.chars().take(max_chars) {
        if needs_escape(c) {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\0' => out.push_str("\\0"),
                other => {
                    let _ = write!(out, "\\u{{{:x}}}", other as u32);
                }
            }
        } else {
            out.push(c);
        }
    }
    if too_long {
        out.push('…');
    }
    Cow::Owned(out)
}

/// A rejection reason as it may be logged and stored: [`printable`] at [`MAX_REASON_CHARS`].
pub fn reason(text: String) -> String {
    match printable(&text, MAX_REASON_CHARS) {
        Cow::Borrowed(_) => text,
        Cow::Owned(escaped) => escaped,
    }
}

/// C0 and C1 controls, DEL, and the Unicode controls that reorder or hide text.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'   // zero-width spaces, LRM/RLM
            | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_as_it_is() {
        assert!(matches!(
            printable("field `priority`: \"URGENT\"", 100),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn line_breaks_escapes_and_nul_cannot_reach_the_log_raw() {
        let forged = "X\nINJECTED-LINE ERROR forged\r\u{1b}[31mred\u{0}\u{202e}";
        let shown = printable(forged, 100);
        assert_eq!(
            shown,
            "X\\nINJECTED-LINE ERROR forged\\r\\u{1b}[31mred\\0\\u{202e}"
        );
        assert!(!shown.chars().any(needs_escape));
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        let long = "a".repeat(5_000);
        let shown = printable(&long, 10);
        assert_eq!(shown, "aaaaaaaaaa…");
    }
}

//! Text from plugins and clients on its way into logs and the admin API: control
//! characters escaped (so nothing can start a line that looks like the gateway's own, or
//! move a terminal's cursor) and length bounded.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character (C0, DEL, C1, and the Unicode line and paragraph
/// separators) written as an escape: `\n`, `\r`, `\t`, or `\u{1b}`. Borrows when there is
/// none, which is the common case.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` cut to at most `max` bytes (on a character boundary), with a note of how many
/// bytes were cut.
pub fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… ({} more bytes)",
        &text[..end],
        text.len() - end
    ))
}

/// The longest error text kept from a plugin, compiler or linker message.
pub const MAX_ERROR_TEXT: usize = 1024;

/// A message from a plugin or about its bytes, made safe to log and to show: bounded to
/// [`MAX_ERROR_TEXT`] bytes, control characters escaped.
pub fn untrusted(text: &str) -> String {
    escape_control(&bounded(text, MAX_ERROR_TEXT)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("plain text"), Cow::Borrowed("plain text"));
        assert_eq!(
            escape_control("a\nFORGED\r\x1b[31m\u{2028}\u{85}"),
            "a\\nFORGED\\r\\u{1b}[31m\\u{2028}\\u{85}"
        );
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(1000);
        let cut = bounded(&text, 101);
        assert!(cut.starts_with(&"é".repeat(50)));
        assert!(cut.ends_with("(1900 more bytes)"), "{cut}");
        assert!(untrusted(&"\0".repeat(16 << 20)).len() < 8 * MAX_ERROR_TEXT);
    }
}

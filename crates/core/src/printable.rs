//! Text from events, headers, the audit trail or Zoom, made safe to print
//! on an operator's terminal. Event fields are whatever a producer (or an
//! attacker able to publish) put there: a raw `ESC ] 0 ; … BEL` retitles
//! the window, `ESC [ 2 J` clears the screen, a newline forges a table row,
//! a bidi override reorders what is shown. Every table cell and printed
//! line from such data goes through [`Printable`]; `--json` output goes
//! through [`json`].
//!
//! Escaped: C0 controls (newline and tab too: in a cell they would break
//! the row), DEL, C1 controls (U+0080–U+009F: some terminals obey 8-bit
//! CSI), the bidi marks, embeddings, overrides and isolates (U+061C,
//! U+200E–U+200F, U+202A–U+202E, U+2066–U+2069), the line and paragraph
//! separators (U+2028–U+2029) and the zero-width characters (U+200B–U+200D,
//! U+2060–U+2064, U+FEFF) that hide text. Each is shown as `\n`, `\t`, `\r` or `\u{1b}`, the form
//! Rust and JSON readers know; everything else, backslashes included, is
//! printed as it is (the escapes stay visible and unambiguous enough for
//! reading; `--json` has the exact values).

use std::fmt::{self, Display, Write};

/// `Display` that escapes what a terminal would act on (see the module).
pub struct Printable<'a>(pub &'a str);

/// Whether `c` is escaped.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Zero-width spaces and joiners, LRM and RLM.
            '\u{200b}'..='\u{200f}'
            // Line and paragraph separators, bidi embeddings and overrides.
            | '\u{2028}'..='\u{202e}'
            // Word joiner, invisible operators, bidi isolates.
            | '\u{2060}'..='\u{206f}'
            // Arabic letter mark; the byte-order mark (zero-width no-break space).
            | '\u{061c}'
            | '\u{feff}'
        )
}

impl Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                '\r' => f.write_str("\\r")?,
                c if is_unsafe(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// [`Printable`] as an owned string (for table cells).
pub fn printable(text: &str) -> String {
    if text.chars().any(is_unsafe) {
        Printable(text).to_string()
    } else {
        text.to_owned()
    }
}

/// serde_json's text with the characters it leaves raw escaped as well.
/// It escapes C0 controls (RFC 8259 requires it) but writes DEL, C1 and
/// bidi controls as they are; `\uXXXX` for them is still the same JSON
/// value. They can only stand inside strings, so the layout is untouched.
pub fn json(text: String) -> String {
    if !text.chars().any(is_unsafe) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        // Raw C0 in serde_json's output is only its own layout (newlines,
        // indentation); in strings it is escaped already.
        if is_unsafe(c) && u32::from(c) >= 0x20 {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_acts_on_and_keeps_the_rest() {
        let hostile = "a\u{1b}]0;pwned\u{7}b\u{1b}[2J\n\t\r\u{7f}\u{9b}\u{202e}\u{2066}é→\\";
        assert_eq!(
            printable(hostile),
            r"a\u{1b}]0;pwned\u{7}b\u{1b}[2J\n\t\r\u{7f}\u{9b}\u{202e}\u{2066}é→\"
        );
        assert_eq!(printable("Jane O'Brien"), "Jane O'Brien");
    }

    /// Found by the review: marks and separators that reorder or split
    /// what a terminal shows, and the zero-width ones that hide text.
    #[test]
    fn escapes_bidi_marks_separators_and_zero_width_characters() {
        for c in [
            '\u{200b}', '\u{200e}', '\u{200f}', '\u{061c}', '\u{2028}', '\u{2029}', '\u{2060}',
            '\u{feff}',
        ] {
            let shown = printable(&format!("a{c}b"));
            assert_eq!(shown, format!("a\\u{{{:x}}}b", u32::from(c)), "{c:?}");
        }
    }

    #[test]
    fn json_stays_the_same_value_without_raw_controls() {
        let value = serde_json::json!({"user": "u\u{1b}[2J\u{7f}\u{9b}\u{202e}", "n": 1});
        let text = json(serde_json::to_string_pretty(&value).unwrap());
        assert!(!text.chars().any(|c| c != '\n' && is_unsafe(c)), "{text:?}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}

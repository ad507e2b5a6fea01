//! Config errors without secrets. figment passes on the TOML parser's
//! message, which quotes the offending source line under a `|` gutter: on
//! the `amqp.url` line that is the broker password. The message keeps the
//! line and column and the parser's words; the quoted source goes, and any
//! URL's password left in the text (a value quoted by a type error) is
//! masked as well.

/// One line for a figment error: no quoted source, no URL password.
pub fn figment_error_line(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| without_source(&e.to_string()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `text` without the lines of a quoted snippet (`  |`, `2 | url = ...`,
/// `  |     ^`), on one line, with URL passwords masked.
fn without_source(text: &str) -> String {
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| !is_snippet(line))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    mask_url_passwords(&kept.join(" "))
}

/// A line of the parser's snippet: an optional line number, then `|`.
fn is_snippet(line: &str) -> bool {
    line.trim_start()
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start()
        .starts_with('|')
}

/// `scheme://user:password@host` → `scheme://user:***@host`, for every
/// URL in `text` (a word runs to whitespace or a quote).
pub fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let word_end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .unwrap_or(after.len());
        let (word, tail) = after.split_at(word_end);
        out.push_str(&mask_word(word));
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// `user:password@host/path` → `user:***@host/path` (the last `@` ends the
/// user info, as a password may hold an unencoded `@` or `/`).
fn mask_word(word: &str) -> String {
    match word.rfind('@') {
        Some(at) => match word[..at].split_once(':') {
            Some((user, _)) => format!("{user}:***{}", &word[at..]),
            None => word.to_owned(),
        },
        None => word.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_passwords_and_keeps_the_rest() {
        let cases = [
            ("amqp://u:pw@h/%2f", "amqp://u:***@h/%2f"),
            (
                "x \"amqps://u:p/w@d@h:5671\" y",
                "x \"amqps://u:***@h:5671\" y",
            ),
            ("amqp://u@h", "amqp://u@h"),
            ("http://h/a:b", "http://h/a:b"),
            ("no url", "no url"),
        ];
        for (text, masked) in cases {
            assert_eq!(mask_url_passwords(text), masked);
        }
    }

    #[test]
    fn drops_the_quoted_source_lines() {
        let message = "TOML parse error at line 2, column 38\n  |\n2 | url = \"amqp://u:s3cret@h\n  |      ^\ninvalid basic string\n";
        let line = without_source(message);
        assert_eq!(
            line,
            "TOML parse error at line 2, column 38 invalid basic string"
        );
    }
}

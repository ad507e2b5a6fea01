//! `publish`'s input, read in bounded pieces: the whole input is at most
//! [`MAX_INPUT_BYTES`] (a `--file` must be a regular file of at most that,
//! checked as `--hr-export` is), and each line is kept only up to
//! [`MAX_LINE_BYTES`]; a longer line is skipped to its end without being
//! kept (an endless line, `/dev/zero` piped in, costs no memory), and
//! reported with its length.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use crate::commands::input_file::{FileError, read_bounded};
use crate::event::MAX_PAYLOAD_BYTES;

/// The largest input read: 64 MiB (a thousand events of the 64 KiB
/// maximum; an ordinary event is a few hundred bytes).
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// The longest line kept: an event at the limit, with room for trailing
/// blanks. A kept line over [`MAX_PAYLOAD_BYTES`] is still refused by the
/// parser (and sent with `--raw`, to test the dead-lettering of large
/// messages); a longer one is never kept, so never sent.
pub const MAX_LINE_BYTES: usize = MAX_PAYLOAD_BYTES + 1024;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("standard input: over the limit of {} MiB ({limit} bytes)", limit >> 20)]
    TooLarge { limit: u64 },
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
}

/// A line's text: kept, or only its length (over [`MAX_LINE_BYTES`]).
pub enum Text {
    Kept(Vec<u8>),
    TooLong(u64),
}

/// A non-blank line with its number (from 1).
pub struct Line {
    pub number: usize,
    pub text: Text,
}

/// The lines of `file`, or of standard input when it is `None`.
pub fn read(file: Option<&Path>) -> Result<Vec<Line>, InputError> {
    let Some(path) = file else {
        let mut input = std::io::stdin().lock().take(MAX_INPUT_BYTES + 1);
        let lines = lines_of(&mut input).map_err(|source| InputError::Read {
            what: "standard input".into(),
            source,
        })?;
        if input.limit() == 0 {
            return Err(InputError::TooLarge {
                limit: MAX_INPUT_BYTES,
            });
        }
        return Ok(lines);
    };
    let data = read_bounded(path, "--file", MAX_INPUT_BYTES)?;
    lines_of(&mut data.as_slice()).map_err(|source| InputError::Read {
        what: PathBuf::from(path).display().to_string(),
        source,
    })
}

/// The non-blank lines of `reader`, each kept up to [`MAX_LINE_BYTES`].
fn lines_of(reader: &mut impl BufRead) -> std::io::Result<Vec<Line>> {
    let mut lines = Vec::new();
    let mut number = 0;
    while let Some(text) = next_line(reader)? {
        number += 1;
        let blank = |bytes: &[u8]| std::str::from_utf8(bytes).is_ok_and(|t| t.trim().is_empty());
        if matches!(&text, Text::Kept(bytes) if blank(bytes)) {
            continue;
        }
        lines.push(Line { number, text });
    }
    Ok(lines)
}

/// The next line without its `\n` or `\r\n`; `None` at the end.
fn next_line(reader: &mut impl BufRead) -> std::io::Result<Option<Text>> {
    let mut kept = Vec::new();
    let cap = MAX_LINE_BYTES as u64 + 1;
    if reader.by_ref().take(cap).read_until(b'\n', &mut kept)? == 0 {
        return Ok(None);
    }
    if kept.last() == Some(&b'\n') {
        kept.pop();
        if kept.last() == Some(&b'\r') {
            kept.pop();
        }
        return Ok(Some(Text::Kept(kept)));
    }
    if kept.len() <= MAX_LINE_BYTES {
        return Ok(Some(Text::Kept(kept)));
    }
    let len = kept.len() as u64 + skip_line(reader)?;
    Ok(Some(Text::TooLong(len)))
}

/// Skips to the end of the line (past its `\n`), keeping nothing; the
/// bytes skipped before the `\n`.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<u64> {
    let mut skipped = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(skipped);
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok(skipped + i as u64);
        }
        let n = buf.len();
        reader.consume(n);
        skipped += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line over the cap is skipped to its end, kept as its length only;
    /// the lines after it are read; CRLF and blank lines are as before.
    #[test]
    fn publish_lines_are_kept_up_to_the_cap() {
        let long = "x".repeat(MAX_LINE_BYTES + 5);
        let exact = "y".repeat(MAX_LINE_BYTES);
        let input = format!("a\r\n\n  \n{long}\n{exact}\nb");
        let lines = lines_of(&mut input.as_bytes()).unwrap();
        let got: Vec<(usize, Result<Vec<u8>, u64>)> = lines
            .into_iter()
            .map(|l| match l.text {
                Text::Kept(bytes) => (l.number, Ok(bytes)),
                Text::TooLong(len) => (l.number, Err(len)),
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, Ok(b"a".to_vec())),
                (4, Err(long.len() as u64)),
                (5, Ok(exact.into_bytes())),
                (6, Ok(b"b".to_vec())),
            ]
        );
    }
}

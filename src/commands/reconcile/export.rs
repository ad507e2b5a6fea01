//! The HR export: a CSV file with a header row. Rows that cannot be used
//! are reported with their line and left out of the plan, with whom they
//! name when their email or id can still be read; a file that cannot be
//! read, is not a regular file of at most [`MAX_EXPORT_BYTES`], or has a
//! header without the needed columns is a usage error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use csv::ByteRecord;
use serde::Serialize;

use crate::commands::input_file::{FileError, read_bounded};
use crate::commands::printable::Printable;
use crate::event::{Department, Email, FieldError, ZoomUserId};
use crate::reconcile::{ExportRow, Held};

/// The column names to read (matched case-insensitively, trimmed).
pub struct Columns {
    pub email: String,
    pub department: String,
    /// `None`: `zoom_user_id` when the file has it. `Some`: must exist.
    pub id: Option<String>,
}

/// The id column when `--id-column` is not given.
const DEFAULT_ID_COLUMN: &str = "zoom_user_id";

/// The largest export read: 64 MiB (an HR export of a few hundred
/// thousand people is a few tens of MiB).
pub const MAX_EXPORT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    File(#[from] FileError),
    /// `found` is [`found_columns`]: escaped, and only names that look
    /// like column names (a wrong file's first line may hold anything).
    #[error("{}: bad CSV header: no column {column:?} (columns: {found})", path.display())]
    MissingColumn {
        path: PathBuf,
        column: String,
        found: String,
    },
    #[error("{}: bad CSV header: {source}", path.display())]
    Header { path: PathBuf, source: csv::Error },
}

/// A row left out of the plan, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub line: u64,
    pub problem: String,
    /// Whom the row names, as far as its email and id columns can be
    /// read; `None` (`null`): it cannot say (it might be anyone's).
    pub person: Option<Person>,
}

/// Whom an unreadable row names: a valid email (lower-cased) or Zoom id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zoom_user_id: Option<String>,
}

#[derive(Debug, Default)]
pub struct Export {
    pub rows: Vec<ExportRow>,
    pub unreadable: Vec<Unreadable>,
}

impl Export {
    /// The people the unreadable rows name, for the planner to leave alone.
    pub fn held(&self) -> Held {
        let mut held = Held::default();
        for bad in &self.unreadable {
            let line = usize::try_from(bad.line).unwrap_or(usize::MAX);
            let person = bad.person.as_ref();
            let email = person.and_then(|p| p.email.as_deref());
            let id = person.and_then(|p| p.zoom_user_id.as_deref());
            held.add(line, email, id);
        }
        held
    }

    /// A readable row; a second one for the same person is also reported
    /// (it is still planned, as `ambiguous`).
    fn push(&mut self, row: ExportRow, seen: &mut Seen) {
        if let Some(problem) = seen.second(&row) {
            self.unreadable.push(Unreadable {
                line: row.line as u64,
                problem,
                person: Some(Person {
                    email: Some(row.email.to_lowercase()),
                    zoom_user_id: row.zoom_user_id.clone(),
                }),
            });
        }
        self.rows.push(row);
    }
}

/// Where the needed columns are, and how many the header has.
struct At {
    email: usize,
    department: usize,
    id: Option<usize>,
    width: usize,
}

pub fn read(path: &Path, columns: &Columns) -> Result<Export, ExportError> {
    let data = read_bounded(path, "--hr-export", MAX_EXPORT_BYTES)?;
    let lines = Lines::of(&data);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(data.as_slice());
    let at = columns_at(path, &mut reader, columns)?;
    let mut export = Export::default();
    let mut seen = Seen::default();
    let mut record = ByteRecord::new();
    loop {
        let line = |position: Option<&csv::Position>| position.map_or(0, |p| lines.at(p.byte()));
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = line(record.position());
                match record_row(&record, &at, line) {
                    Ok(row) => export.push(row, &mut seen),
                    Err(bad) => export.unreadable.push(bad),
                }
            }
            Err(e) => export.unreadable.push(Unreadable {
                line: line(e.position()),
                problem: e.to_string(),
                person: None,
            }),
        }
    }
    Ok(export)
}

/// Reads the header and finds the columns.
fn columns_at(
    path: &Path,
    reader: &mut csv::Reader<&[u8]>,
    columns: &Columns,
) -> Result<At, ExportError> {
    let header = reader
        .headers()
        .map_err(|source| ExportError::Header {
            path: path.into(),
            source,
        })?
        .clone();
    let find = |name: &str| {
        header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name.trim()))
    };
    let required = |name: &str| {
        find(name).ok_or_else(|| ExportError::MissingColumn {
            path: path.into(),
            column: name.into(),
            found: found_columns(&header),
        })
    };
    Ok(At {
        email: required(&columns.email)?,
        department: required(&columns.department)?,
        id: match &columns.id {
            Some(name) => Some(required(name)?),
            None => find(DEFAULT_ID_COLUMN),
        },
        width: header.len(),
    })
}

/// The longest header cell quoted in an error, and how many are listed.
const NAME_CAP: usize = 64;
const NAMES_CAP: usize = 20;

/// The header's cells for an error, escaped ([`Printable`]), when they
/// look like column names (at most [`NAMES_CAP`] of at most [`NAME_CAP`]
/// characters); otherwise only how many there are. A wrong file's first
/// line is not repeated to the terminal or a log.
fn found_columns(header: &csv::StringRecord) -> String {
    let names = header.len() <= NAMES_CAP && header.iter().all(|h| h.chars().count() <= NAME_CAP);
    if !names {
        return format!("{} columns, not shown", header.len());
    }
    header
        .iter()
        .map(|h| Printable(h).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One record as a row, or why not and whom it names.
fn record_row(record: &ByteRecord, at: &At, line: u64) -> Result<ExportRow, Unreadable> {
    let bad = |problem: String| Unreadable {
        line,
        problem,
        person: person(record, at),
    };
    if record.len() != at.width {
        return Err(bad(format!(
            "{} fields, the header has {}",
            record.len(),
            at.width
        )));
    }
    let mut fields = Vec::with_capacity(record.len());
    for (i, field) in record.iter().enumerate() {
        let text = std::str::from_utf8(field).map_err(|e| {
            bad(format!(
                "field {} is not UTF-8 ({e}); the export must be UTF-8",
                i + 1
            ))
        })?;
        fields.push(text);
    }
    let id = at.id.map(|i| fields[i]);
    row(line, fields[at.email], fields[at.department], id).map_err(|e| bad(e.to_string()))
}

/// Whom a record names: its email and id columns, when they can be read
/// and are valid. A record of the wrong width names no one: its columns
/// may be shifted.
fn person(record: &ByteRecord, at: &At) -> Option<Person> {
    if record.len() != at.width {
        return None;
    }
    let text = |i: usize| std::str::from_utf8(record.get(i).unwrap_or_default()).ok();
    let email = text(at.email)?;
    let id = match at.id {
        Some(i) => text(i)?,
        None => "",
    };
    let email = Email::parse(email).ok().map(|_| email.to_lowercase());
    let zoom_user_id = ZoomUserId::parse(id).ok().map(|id| id.as_str().to_owned());
    (email.is_some() || zoom_user_id.is_some()).then_some(Person {
        email,
        zoom_user_id,
    })
}

/// The first line of each email and each id, to report a second row.
#[derive(Default)]
struct Seen {
    emails: HashMap<String, usize>,
    ids: HashMap<String, usize>,
}

impl Seen {
    /// Why `row` is a second row for someone, if it is.
    fn second(&mut self, row: &ExportRow) -> Option<String> {
        let email = row.email.to_lowercase();
        let by_email = self
            .emails
            .get(&email)
            .map(|first| format!("second row for {email} (line {first})"));
        let by_id = row.zoom_user_id.as_ref().and_then(|id| {
            self.ids
                .get(id)
                .map(|first| format!("second row for zoom_user_id {id} (line {first})"))
        });
        self.emails.entry(email).or_insert(row.line);
        if let Some(id) = &row.zoom_user_id {
            self.ids.entry(id.clone()).or_insert(row.line);
        }
        by_email.or(by_id)
    }
}

/// Where each line starts, so a record's byte offset gives the line an
/// editor shows (csv's own line count is off for CRLF and blank lines).
struct Lines(Vec<usize>);

impl Lines {
    fn of(data: &[u8]) -> Self {
        Self(
            data.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    /// The 1-based line holding byte `offset`.
    fn at(&self, offset: u64) -> u64 {
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        // `<=`: after a CRLF, csv may place the record at its `\n`.
        self.0.partition_point(|&newline| newline <= offset) as u64 + 1
    }
}

/// A row checked as the daemon checks an event's fields, so every event
/// made from it is one the daemon accepts.
fn row(
    line: u64,
    email: &str,
    department: &str,
    id: Option<&str>,
) -> Result<ExportRow, FieldError> {
    Email::parse(email)?;
    let department = Department::parse(department, "department")?;
    let zoom_user_id = match id.filter(|id| !id.is_empty()) {
        Some(id) => Some(ZoomUserId::parse(id)?.as_str().to_owned()),
        None => None,
    };
    Ok(ExportRow {
        line: usize::try_from(line).unwrap_or(usize::MAX),
        email: email.to_owned(),
        department: department.as_str().to_owned(),
        zoom_user_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::input_file::Check;

    fn columns() -> Columns {
        Columns {
            email: "email".into(),
            department: "department".into(),
            id: None,
        }
    }

    fn read_text(text: &str, columns: &Columns) -> Result<Export, ExportError> {
        read_bytes(text.as_bytes(), columns)
    }

    fn read_bytes(data: &[u8], columns: &Columns) -> Result<Export, ExportError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.csv");
        std::fs::write(&path, data).unwrap();
        read(&path, columns)
    }

    fn person(email: Option<&str>, id: Option<&str>) -> Option<Person> {
        Some(Person {
            email: email.map(Into::into),
            zoom_user_id: id.map(Into::into),
        })
    }

    /// Every kind of unreadable row is reported with its line, and says
    /// whom it names when its email or id can still be read; a second row
    /// for one person is reported too (and still planned, as `ambiguous`).
    #[test]
    fn reconcile_export_unreadable_rows_name_whom_they_can() {
        let data: &[u8] = b"email,name,department,zoom_user_id\n\
            a@x.com,Ann,,\n\
            B@x.com,Jos\xe9,Sales,\n\
            c\xe9@x.com,C,Sales,\n\
            d@x.com,D,Sales\n\
            ,E,Sales,u5\n\
            not-an-email,F,Sales,\n\
            g@x.com,G,Sales,\n\
            G@x.com,G2,Support,\n\
            h@x.com,H,Sales,u8\n\
            i@x.com,I,Sales,u8\n";
        let export = read_bytes(data, &columns()).unwrap();
        let emails: Vec<&str> = export.rows.iter().map(|r| r.email.as_str()).collect();
        assert_eq!(emails, ["g@x.com", "G@x.com", "h@x.com", "i@x.com"]);
        let got: Vec<(u64, Option<Person>)> = export
            .unreadable
            .iter()
            .map(|u| (u.line, u.person.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (2, person(Some("a@x.com"), None)),
                (3, person(Some("b@x.com"), None)),
                (4, None),
                (5, None),
                (6, person(None, Some("u5"))),
                (7, None),
                (9, person(Some("g@x.com"), None)),
                (11, person(Some("i@x.com"), Some("u8"))),
            ]
        );
        let problems: Vec<&str> = export
            .unreadable
            .iter()
            .map(|u| u.problem.as_str())
            .collect();
        assert!(problems[1].contains("UTF-8"), "{problems:?}");
        assert!(
            problems[3].contains("3 fields, the header has 4"),
            "{problems:?}"
        );
        assert!(
            problems[6].contains("second row for g@x.com (line 8)"),
            "{problems:?}"
        );
        assert!(
            problems[7].contains("second row for zoom_user_id u8 (line 10)"),
            "{problems:?}"
        );
    }

    /// A directory, a device or a FIFO is refused without being read (a
    /// FIFO would block, /dev/zero never ends); so is a file over the limit.
    #[test]
    fn reconcile_export_must_be_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        for path in [dir.path(), Path::new("/dev/zero"), fifo.as_path()] {
            let e = read(path, &columns()).err().unwrap();
            assert!(
                matches!(e, ExportError::File(FileError::NotRegular { .. })),
                "{path:?}: {e}"
            );
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        let file = dir.path().join("big.csv");
        std::fs::write(&file, "email,department\n").unwrap();
        assert_eq!(read_bounded(&file, "--hr-export", 17).unwrap().len(), 17);
        let e = read_bounded(&file, "--hr-export", 16).err().unwrap();
        assert!(matches!(e, FileError::TooLarge { .. }), "{e}");
        assert_eq!(MAX_EXPORT_BYTES, 64 * 1024 * 1024);
        let e = FileError::TooLarge {
            path: file,
            flag: "--hr-export",
            limit: MAX_EXPORT_BYTES,
        };
        assert!(e.to_string().contains("over the limit of 64 MiB"), "{e}");
    }

    /// A path that became a FIFO after the first check: opening it does
    /// not wait for a writer (it would block for ever), and the open file
    /// is refused as what it is.
    #[test]
    fn reconcile_export_swapped_for_a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("export.csv");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(
                Check {
                    path: &fifo,
                    flag: "--hr-export",
                    limit: 10,
                }
                .open()
                .err()
                .map(|e| e.to_string()),
            );
        });
        let refused = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening a FIFO must not block");
        assert!(refused.unwrap().contains("a FIFO"));
    }

    /// A file that has more to read than its size said (it grew after the
    /// check; a `/proc` file always does: its size is 0) is read no further
    /// than its size and one byte, and refused, whatever the limit.
    #[test]
    fn reconcile_export_growing_past_the_limit_after_the_check_is_refused() {
        let growing = Path::new("/proc/self/mountinfo");
        let stat = std::fs::metadata(growing).unwrap();
        assert!(stat.is_file() && stat.len() == 0, "{stat:?}");
        for limit in [8, MAX_EXPORT_BYTES] {
            let e = read_bounded(growing, "--hr-export", limit).err().unwrap();
            assert!(matches!(e, FileError::Changed { size: 0, .. }), "{e}");
            assert!(
                e.to_string().contains("not a real file (procfs/sysfs)"),
                "{e}"
            );
        }
        let e = read(Path::new("/proc/self/environ"), &columns())
            .err()
            .unwrap();
        assert!(
            matches!(e, ExportError::File(FileError::Changed { .. })),
            "{e}"
        );
    }

    /// An empty regular file is read (as empty): the error is the
    /// ordinary one of a header without the columns.
    #[test]
    fn reconcile_export_empty_regular_file_is_an_empty_export() {
        let e = read_text("", &columns()).err().unwrap();
        assert!(matches!(e, ExportError::MissingColumn { .. }), "{e}");
    }

    /// The header quoted in an error: escaped, and only when it looks like
    /// column names.
    #[test]
    fn reconcile_export_missing_column_quotes_only_short_names_escaped() {
        let e = read_text("mail\u{1b}]0;x\u{7},dept\n", &columns())
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains(r"(columns: mail\u{1b}]0;x\u{7}, dept)"),
            "{e}"
        );
        let long = format!("{},dept\n", "k".repeat(NAME_CAP + 1));
        let e = read_text(&long, &columns()).err().unwrap();
        assert!(
            e.to_string().contains("(columns: 2 columns, not shown)"),
            "{e}"
        );
        let many = format!("{}\n", vec!["c"; NAMES_CAP + 1].join(","));
        let e = read_text(&many, &columns()).err().unwrap();
        assert!(e.to_string().contains("21 columns, not shown"), "{e}");
    }

    /// Lines as an editor counts them, whatever the line ends (HR tools
    /// write CRLF) and however many blank lines come between.
    #[test]
    fn reconcile_export_lines_are_physical_lines() {
        for text in [
            "email,department\nbad,Sales\nworse,Sales\n",
            "email,department\r\nbad,Sales\r\nworse,Sales\r\n",
        ] {
            let export = read_text(text, &columns()).unwrap();
            let lines: Vec<u64> = export.unreadable.iter().map(|u| u.line).collect();
            assert_eq!(lines, [2, 3], "{text:?}");
        }
        let export =
            read_text("email,department\n\nbad,Sales\n\nworse,Sales\n", &columns()).unwrap();
        let lines: Vec<u64> = export.unreadable.iter().map(|u| u.line).collect();
        assert_eq!(lines, [3, 5]);
    }

    #[test]
    fn reconcile_export_reads_rows_and_reports_bad_ones() {
        let text = "Email, Department ,zoom_user_id\n\
                    a@x.com,Sales,\n\
                    not-an-email,Sales,\n\
                    b@x.com, Engineering ,u2\n\
                    c@x.com,,\n\
                    d@x.com,Sales\n";
        let export = read_text(text, &columns()).unwrap();
        assert_eq!(export.rows.len(), 2);
        assert_eq!(export.rows[1].line, 4);
        assert_eq!(export.rows[1].department, "Engineering");
        assert_eq!(export.rows[1].zoom_user_id.as_deref(), Some("u2"));
        let lines: Vec<u64> = export.unreadable.iter().map(|u| u.line).collect();
        assert_eq!(lines, [3, 5, 6]);
    }

    #[test]
    fn reconcile_export_header_must_name_the_columns() {
        let columns = Columns {
            email: "mail".into(),
            ..columns()
        };
        let e = read_text("email,department\n", &columns).err().unwrap();
        assert!(e.to_string().contains("no column \"mail\""), "{e}");
        let id = Columns {
            id: Some("zid".into()),
            ..self::columns()
        };
        assert!(read_text("email,department\n", &id).is_err());
    }
}

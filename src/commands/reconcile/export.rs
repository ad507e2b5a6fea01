//! The HR export: a CSV file with a header row. Rows that cannot be used
//! are reported with their line and left out of the plan; a file that
//! cannot be read, or a header without the needed columns, is a usage error.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::event::{Department, Email, ZoomUserId};
use crate::reconcile::ExportRow;

/// The column names to read (matched case-insensitively, trimmed).
pub struct Columns {
    pub email: String,
    pub department: String,
    /// `None`: `zoom_user_id` when the file has it. `Some`: must exist.
    pub id: Option<String>,
}

/// The id column when `--id-column` is not given.
const DEFAULT_ID_COLUMN: &str = "zoom_user_id";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read {}: {source}", path.display())]
    Open { path: PathBuf, source: csv::Error },
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
}

#[derive(Debug, Default)]
pub struct Export {
    pub rows: Vec<ExportRow>,
    pub unreadable: Vec<Unreadable>,
}

pub fn read(path: &Path, columns: &Columns) -> Result<Export, ExportError> {
    let data = std::fs::read(path).map_err(|e| ExportError::Open {
        path: path.into(),
        source: e.into(),
    })?;
    let lines = Lines::of(&data);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(data.as_slice());
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
            found: header.iter().collect::<Vec<_>>().join(", "),
        })
    };
    let email = required(&columns.email)?;
    let department = required(&columns.department)?;
    let id = match &columns.id {
        Some(name) => Some(required(name)?),
        None => find(DEFAULT_ID_COLUMN),
    };
    let mut export = Export::default();
    for record in reader.records() {
        match record {
            Ok(record) => {
                let line = record.position().map_or(0, |p| lines.at(p.byte()));
                let field = |i: usize| record.get(i).unwrap_or_default();
                let id = id.map(field);
                match row(line, field(email), field(department), id) {
                    Ok(row) => export.rows.push(row),
                    Err(problem) => export.unreadable.push(Unreadable { line, problem }),
                }
            }
            Err(e) => export.unreadable.push(Unreadable {
                line: e.position().map_or(0, |p| lines.at(p.byte())),
                problem: e.to_string(),
            }),
        }
    }
    Ok(export)
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
fn row(line: u64, email: &str, department: &str, id: Option<&str>) -> Result<ExportRow, String> {
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

    fn columns() -> Columns {
        Columns {
            email: "email".into(),
            department: "department".into(),
            id: None,
        }
    }

    fn read_text(text: &str, columns: &Columns) -> Result<Export, ExportError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.csv");
        std::fs::write(&path, text).unwrap();
        read(&path, columns)
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

//! Tables and JSON for the commands' output.

use comfy_table::presets::ASCII_MARKDOWN;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::printable::{self, printable};

/// A table with a header row, sized to the terminal when there is one.
/// Every cell is escaped ([`printable`]): cells hold event data.
pub fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_preset(ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    for row in rows {
        table.add_row(row.iter().map(|cell| printable(cell)));
    }
    table.to_string()
}

/// Pretty JSON of anything the commands print, without a raw control
/// character ([`printable::json`]).
pub fn json(value: &impl Serialize) -> String {
    let text =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    printable::json(text)
}

pub fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// RFC 3339 to the second, in UTC.
pub fn when(at: Option<OffsetDateTime>) -> String {
    at.and_then(|at| {
        at.to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .ok()
    })
    .and_then(|at| at.format(&Rfc3339).ok())
    .unwrap_or_else(|| "-".into())
}

/// At most `max` characters, with an ellipsis when cut (the full text is in
/// `--json` and `show`).
pub fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

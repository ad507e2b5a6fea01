//! What a BambooHR webhook says happened, as BambooHR's own documents
//! define it (fixtures in `fixtures/vendor/bamboohr/`, each naming its page).
//!
//! Two shapes, each in two encodings (JSON or Form Post):
//! - event-based (`employee.updated`, `employee.created`,
//!   `employee.deleted`): `{"type": …, "timestamp": …, "data": {"companyId":
//!   "12345", "employeeId": "67890", "changedFields": ["firstName"]}}`; as a
//!   form, `type=…&data[employeeId]=…&data[changedFields][0]=…`;
//! - field-based (`employee_with_fields.*`): `{"employees": [{"action":
//!   "Updated", "changedFields": ["First Name"], "fields": {…}, "id":
//!   "12345", …}]}`; as a form, the id is the bracket key:
//!   `employees[12345][changedFields][0]=Department`.
//!
//! Read defensively: unknown fields are ignored, an id may be a string or a
//! number, field names compare without regard to case or spaces (the
//! event-based shape sends API names such as `workEmail`, the field-based
//! one display names such as `Work Email`). No BambooHR document shows
//! `data.id`, so it is not read.
//!
//! An update acts when it names the department or the work email: a new
//! hire is often entered before their mailbox exists, so their
//! `employee.created` cannot be published yet (no email), and the update
//! that adds the email is what places them.
//!
//! In a field-based Form Post the posted fields are siblings of
//! `changedFields` (`employees[12345][First+name]=John`), so a field whose
//! name or alias is `id` or `action` must not steer anything: there the id
//! comes from the bracket key alone and `action` is not read (BambooHR's
//! form example has none).

use serde_json::{Map, Value};

/// The changed fields that act, lower-cased without spaces (API names
/// `department`, `workEmail`; display names `Department`, `Work Email`).
const ACTING_FIELDS: [&str; 2] = ["department", "workemail"];
/// The most bracket segments a form key may have (`employees[1][x][0]`).
const MAX_KEY_DEPTH: usize = 4;

/// What happened to one employee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `employee.updated` (or `Updated`) naming the department or the work
    /// email.
    DepartmentChanged,
    /// `employee.created` (or `Created`): a new hire.
    Created,
    /// `employee.deleted` (or `Deleted`).
    Deleted,
}

/// One employee a webhook names, with what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// BambooHR's employee id: `[A-Za-z0-9_-]`, 1 to 64 characters.
    pub employee_id: String,
    pub kind: Kind,
}

/// Why a body is not a webhook this adapter reads: a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the form body is unreadable: {0}")]
    BadForm(&'static str),
    #[error("the body has neither \"type\" and \"data\" nor \"employees\"")]
    UnknownShape,
    #[error("an employee this webhook acts on has no usable id ([A-Za-z0-9_-], 1 to 64)")]
    BadId,
}

/// The employees the webhook names and what happened to each, without
/// repeats, in the order sent; updates not naming the department are left
/// out. Empty: nothing to do (answered 202, ignored).
pub fn notices(body: &[u8], content_type: Option<&str>) -> Result<Vec<Notice>, PayloadError> {
    let form = is_form(body, content_type);
    let value = if form {
        form_to_value(body)?
    } else {
        serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))?
    };
    let mut found: Vec<Notice> = Vec::new();
    for notice in read(&value, form)? {
        if !found.contains(&notice) {
            found.push(notice);
        }
    }
    Ok(found)
}

/// A form post by its content type; without one, anything that does not
/// start like a JSON object.
fn is_form(body: &[u8], content_type: Option<&str>) -> bool {
    match content_type.map(|c| c.trim().to_ascii_lowercase()) {
        Some(c) if c.starts_with("application/x-www-form-urlencoded") => true,
        Some(c) if c.starts_with("application/json") => false,
        _ => body.trim_ascii_start().first() != Some(&b'{'),
    }
}

fn read(value: &Value, form: bool) -> Result<Vec<Notice>, PayloadError> {
    if let Some(employees) = value.get("employees") {
        return match form {
            true => field_based_form(employees),
            false => field_based(employees),
        };
    }
    match (value.get("type"), value.get("data")) {
        (Some(kind), Some(data)) => event_based(kind, data),
        _ => Err(PayloadError::UnknownShape),
    }
}

fn event_based(kind: &Value, data: &Value) -> Result<Vec<Notice>, PayloadError> {
    let kind = kind.as_str().map(|k| k.trim().to_ascii_lowercase());
    let kind = match kind.as_deref() {
        Some("employee.updated") if names_acting_field(data) => Kind::DepartmentChanged,
        Some("employee.created") => Kind::Created,
        Some("employee.deleted") => Kind::Deleted,
        _ => return Ok(Vec::new()),
    };
    let employee_id = data
        .get("employeeId")
        .and_then(employee_id)
        .ok_or(PayloadError::BadId)?;
    Ok(vec![Notice { employee_id, kind }])
}

/// JSON: `employees` is an array of items, each with its `id`, `action`
/// and `changedFields` (the posted fields sit apart, under `fields`).
fn field_based(employees: &Value) -> Result<Vec<Notice>, PayloadError> {
    let items = employees.as_array().ok_or(PayloadError::UnknownShape)?;
    let mut notices = Vec::new();
    for item in items {
        let action = item.get("action").and_then(Value::as_str).map(str::trim);
        let kind = match action.map(str::to_ascii_lowercase).as_deref() {
            Some("created") => Kind::Created,
            Some("deleted") => Kind::Deleted,
            _ if names_acting_field(item) => Kind::DepartmentChanged,
            _ => continue,
        };
        let id = item.get("id").and_then(employee_id);
        let employee_id = id.ok_or(PayloadError::BadId)?;
        notices.push(Notice { employee_id, kind });
    }
    Ok(notices)
}

/// Form Post: `employees[<id>][changedFields][n]=…`, the posted fields
/// beside it. Only the bracket key names the employee, and only
/// `changedFields` is read: a posted field named `id` or `action` is data.
fn field_based_form(employees: &Value) -> Result<Vec<Notice>, PayloadError> {
    let by_id = employees.as_object().ok_or(PayloadError::UnknownShape)?;
    let mut notices = Vec::new();
    for (key, item) in by_id {
        if !names_acting_field(item) {
            continue;
        }
        let id = employee_id(&Value::String(key.clone())).ok_or(PayloadError::BadId)?;
        notices.push(Notice {
            employee_id: id,
            kind: Kind::DepartmentChanged,
        });
    }
    Ok(notices)
}

/// `changedFields` (an array, or a form's object of indexes) names the
/// department or the work email.
fn names_acting_field(item: &Value) -> bool {
    let names: Vec<&Value> = match item.get("changedFields") {
        Some(Value::Array(fields)) => fields.iter().collect(),
        Some(Value::Object(fields)) => fields.values().collect(),
        _ => return false,
    };
    names.into_iter().filter_map(Value::as_str).any(|f| {
        let folded: String = f
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect();
        ACTING_FIELDS.contains(&folded.as_str())
    })
}

/// The id as text, when it is safe in a URL path and an event id.
fn employee_id(id: &Value) -> Option<String> {
    let id = match id {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let safe = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    safe.then_some(id)
}

/// A Form Post as the JSON value it stands for: `a[b][0]=x` becomes
/// `{"a": {"b": {"0": "x"}}}` (indexes stay object keys: a form's
/// `employees[12345]` is an id, not a position). Pairs are `&`-joined on
/// the wire; BambooHR's pages show one per line, so a newline separates
/// them too. A key given twice, or a key that is both a value and a
/// parent, is ambiguous and refused.
fn form_to_value(body: &[u8]) -> Result<Value, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|_| PayloadError::BadForm("not UTF-8"))?;
    let mut root = Map::new();
    let lines = text.split(['\n', '\r']).filter(|l| !l.trim().is_empty());
    for (key, value) in lines.flat_map(|l| url::form_urlencoded::parse(l.as_bytes())) {
        // A posted field's own name may hold brackets (`Pay Rate [USD]`) or
        // nest deeper than anything read here: such a pair is data this
        // adapter never reads, so it is passed over, not a 400.
        let Ok(path) = key_path(&key) else {
            continue;
        };
        insert(&mut root, &path, value.into_owned())?;
    }
    if root.is_empty() {
        return Err(PayloadError::BadForm("no fields"));
    }
    Ok(Value::Object(root))
}

/// `data[changedFields][0]` → `["data", "changedFields", "0"]`.
fn key_path(key: &str) -> Result<Vec<&str>, PayloadError> {
    let (name, mut rest) = key.split_once('[').map_or((key, ""), |(n, r)| (n, r));
    let mut path = vec![name];
    while !rest.is_empty() {
        let (segment, after) = rest
            .split_once(']')
            .ok_or(PayloadError::BadForm("a '[' without its ']'"))?;
        path.push(segment);
        rest = match after {
            "" => "",
            a => a
                .strip_prefix('[')
                .ok_or(PayloadError::BadForm("text after a ']'"))?,
        };
    }
    if path.iter().any(|s| s.is_empty()) || path.len() > MAX_KEY_DEPTH {
        return Err(PayloadError::BadForm("an empty or too deep key"));
    }
    Ok(path)
}

fn insert(map: &mut Map<String, Value>, path: &[&str], value: String) -> Result<(), PayloadError> {
    let ambiguous = PayloadError::BadForm("a key given twice");
    match path {
        [] => Err(ambiguous),
        [last] => match map.insert((*last).to_owned(), Value::String(value)) {
            None => Ok(()),
            Some(_) => Err(ambiguous),
        },
        [first, rest @ ..] => {
            let child = map
                .entry((*first).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            match child {
                Value::Object(inner) => insert(inner, rest, value),
                _ => Err(ambiguous),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zds_vendor_fixtures::Fixture;

    const JSON: Option<&str> = Some("application/json");
    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn notice(id: &str, kind: Kind) -> Notice {
        Notice {
            employee_id: id.to_owned(),
            kind,
        }
    }

    /// A fixture's body as sent: JSON as is, a form's documented lines
    /// joined with `&` and its brackets percent-encoded, as a browser would.
    fn wire(fixture: &Fixture) -> Vec<u8> {
        let request = fixture.request();
        match request.body_text.as_deref() {
            Some(text) => text
                .lines()
                .collect::<Vec<_>>()
                .join("&")
                .replace('[', "%5B")
                .replace(']', "%5D")
                .into_bytes(),
            None => request.body_bytes(),
        }
    }

    /// Each documented example as BambooHR's page shows it, and on the wire.
    fn both_forms(name: &str) -> Vec<(Vec<u8>, Option<&'static str>)> {
        let fixture = Fixture::load(&format!("bamboohr/{name}"));
        let as_shown = fixture.request().body_bytes();
        let is_form = fixture.request().body_text.is_some();
        let content_type = if is_form { FORM } else { JSON };
        vec![
            (as_shown.clone(), content_type),
            (wire(&fixture), content_type),
            (as_shown, None),
        ]
    }

    #[test]
    fn the_documented_update_of_another_field_changes_nothing() {
        // BambooHR's own example changes firstName: no department change.
        for name in [
            "event.employee.updated.json",
            "event.employee.updated.form.json",
        ] {
            for (body, content_type) in both_forms(name) {
                assert_eq!(notices(&body, content_type), Ok(vec![]), "{name}");
            }
        }
    }

    #[test]
    fn the_documented_update_naming_department_yields_data_employee_id() {
        for name in [
            "event.employee.updated.json",
            "event.employee.updated.form.json",
        ] {
            for (body, content_type) in both_forms(name) {
                let body = String::from_utf8(body)
                    .unwrap()
                    .replace("firstName", "department");
                assert_eq!(
                    notices(body.as_bytes(), content_type),
                    Ok(vec![notice("67890", Kind::DepartmentChanged)]),
                    "{name}: {body}"
                );
            }
        }
    }

    #[test]
    fn the_documented_created_and_deleted_events_name_the_employee() {
        for (name, id, kind) in [
            ("event.employee.created.json", "100", Kind::Created),
            ("event.employee.created.form.json", "67890", Kind::Created),
            ("event.employee.deleted.json", "100", Kind::Deleted),
            ("event.employee.deleted.form.json", "67890", Kind::Deleted),
        ] {
            for (body, content_type) in both_forms(name) {
                assert_eq!(
                    notices(&body, content_type),
                    Ok(vec![notice(id, kind)]),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn the_documented_field_based_examples_are_read_by_display_name() {
        for name in ["fields.employees.json", "fields.employees.form.json"] {
            for (body, content_type) in both_forms(name) {
                assert_eq!(notices(&body, content_type), Ok(vec![]), "{name}");
                let text = String::from_utf8(body).unwrap();
                // The one field changed becomes Department (a form's value
                // follows '=', the JSON's name is quoted).
                let changed = text
                    .replace("First Name", "Department")
                    .replace("=First+name", "=Department");
                assert_eq!(
                    notices(changed.as_bytes(), content_type),
                    Ok(vec![notice("12345", Kind::DepartmentChanged)]),
                    "{name}: {changed}"
                );
            }
        }
    }

    #[test]
    fn field_based_actions_created_and_deleted_are_read() {
        let body = r#"{"employees":[
            {"action":"Created","changedFields":[],"fields":{},"id":"7"},
            {"action":"Deleted","changedFields":[],"fields":{},"id":8},
            {"action":"Updated","changedFields":["Department"],"id":"9"},
            {"action":"Updated","changedFields":["department"],"id":"9"}]}"#;
        assert_eq!(
            notices(body.as_bytes(), JSON),
            Ok(vec![
                notice("7", Kind::Created),
                notice("8", Kind::Deleted),
                notice("9", Kind::DepartmentChanged),
            ])
        );
    }

    /// In a field-based form the posted fields sit beside `changedFields`:
    /// a field named (or aliased) `id` or `action` must not pick another
    /// employee or turn an update into a deletion.
    #[test]
    fn a_form_field_named_id_or_action_steers_nothing() {
        let body = "employees[12345][changedFields][0]=Department&employees[12345][id]=42";
        assert_eq!(
            notices(body.as_bytes(), FORM),
            Ok(vec![notice("12345", Kind::DepartmentChanged)])
        );
        let body = "employees[12345][changedFields][0]=First+Name&employees[12345][action]=Deleted";
        assert_eq!(notices(body.as_bytes(), FORM), Ok(vec![]));
        let body = "employees[7][changedFields][0]=Department&employees[7][Pay Rate [USD]]=5";
        assert_eq!(
            notices(body.as_bytes(), FORM),
            Ok(vec![notice("7", Kind::DepartmentChanged)]),
            "a field whose name has brackets is passed over"
        );
    }

    /// A new hire entered before their mailbox: the update that adds the
    /// work email places them (API name and display name).
    #[test]
    fn an_update_naming_the_work_email_acts_too() {
        let body = r#"{"type":"employee.updated","data":{"employeeId":"5","changedFields":["workEmail"]}}"#;
        assert_eq!(
            notices(body.as_bytes(), JSON),
            Ok(vec![notice("5", Kind::DepartmentChanged)])
        );
        let body =
            r#"{"employees":[{"action":"Updated","changedFields":["Work Email"],"id":"6"}]}"#;
        assert_eq!(
            notices(body.as_bytes(), JSON),
            Ok(vec![notice("6", Kind::DepartmentChanged)])
        );
        let body = r#"{"type":" Employee.Deleted ","data":{"employeeId":"8"}}"#;
        assert_eq!(
            notices(body.as_bytes(), JSON),
            Ok(vec![notice("8", Kind::Deleted)])
        );
    }

    #[test]
    fn data_id_is_not_bamboohrs_and_is_not_read() {
        let body =
            r#"{"type":"employee.updated","data":{"id":"42","changedFields":["department"]}}"#;
        assert_eq!(notices(body.as_bytes(), JSON), Err(PayloadError::BadId));
        let body = r#"{"type":"employee.updated","data":{"employeeId":42,"changedFields":["department"]}}"#;
        assert_eq!(
            notices(body.as_bytes(), JSON),
            Ok(vec![notice("42", Kind::DepartmentChanged)])
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(matches!(
            notices(b"{not json", JSON),
            Err(PayloadError::NotJson(_))
        ));
        assert_eq!(notices(b"{}", JSON), Err(PayloadError::UnknownShape));
        assert_eq!(
            notices(br#"{"employees":"x"}"#, JSON),
            Err(PayloadError::UnknownShape)
        );
        assert_eq!(
            notices(br#"{"type":"employee.updated"}"#, JSON),
            Err(PayloadError::UnknownShape)
        );
        for id in [r#""""#, r#""../x""#, "null", r#""a b""#] {
            let body = format!(
                r#"{{"type":"employee.updated","data":{{"employeeId":{id},"changedFields":["department"]}}}}"#
            );
            assert_eq!(
                notices(body.as_bytes(), JSON),
                Err(PayloadError::BadId),
                "{id}"
            );
        }
        for form in [
            "type=employee.created&type=employee.deleted&data[employeeId]=1",
            "type=employee.created&data=1&data[employeeId]=1",
            "",
            "a[b][c][d][e]=1",
        ] {
            assert!(
                matches!(
                    notices(form.as_bytes(), FORM),
                    Err(PayloadError::BadForm(_))
                ),
                "{form}"
            );
        }
        // A key that cannot be read is passed over, as data never read.
        for form in [
            "type=employee.created&data[employeeId=1",
            "type=employee.created&data[employeeId]x=1",
        ] {
            assert_eq!(
                notices(form.as_bytes(), FORM),
                Err(PayloadError::UnknownShape),
                "{form}"
            );
        }
        assert!(matches!(
            notices(b"type=employee.created&data[employeeId]=%2e%2e%2fx", FORM),
            Err(PayloadError::BadId)
        ));
        assert!(matches!(
            notices(&[0xff, b'='], FORM),
            Err(PayloadError::BadForm(_))
        ));
    }
}

//! Which employees a BambooHR webhook says changed department.
//!
//! Two shapes are accepted, read defensively (unknown fields are ignored):
//! - event-based: `{"type": "employee.updated", "data": {"id": "42",
//!   "changedFields": ["department", ...]}}`; any other `type` changes
//!   nothing here;
//! - the classic (field-monitoring) webhook: `{"employees": [{"id": "42",
//!   "changedFields": ["department", ...], ...}, ...]}`.
//!
//! An id may be a string or a number. Field names compare without regard
//! to case. Only items naming `department` need a valid id.

use serde_json::Value;

/// The one changed field this adapter acts on.
const DEPARTMENT: &str = "department";
/// The one event type that can carry a department change.
const UPDATED: &str = "employee.updated";

/// Why a body is not a webhook this adapter reads: a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body has neither \"type\" and \"data\" nor an \"employees\" array")]
    UnknownShape,
    #[error("an employee whose department changed has no usable id ([A-Za-z0-9_-], 1 to 64)")]
    BadId,
}

/// The ids of the employees whose department changed, without repeats, in
/// the order sent. Empty: nothing to do (answered 202, ignored).
pub fn department_changes(body: &[u8]) -> Result<Vec<String>, PayloadError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let items: Vec<&Value> = if let Some(employees) = value.get("employees") {
        employees
            .as_array()
            .ok_or(PayloadError::UnknownShape)?
            .iter()
            .collect()
    } else if let Some(kind) = value.get("type") {
        if kind.as_str() != Some(UPDATED) {
            return Ok(Vec::new());
        }
        vec![value.get("data").ok_or(PayloadError::UnknownShape)?]
    } else {
        return Err(PayloadError::UnknownShape);
    };
    let mut ids = Vec::new();
    for item in items.into_iter().filter(|item| names_department(item)) {
        let id = employee_id(item).ok_or(PayloadError::BadId)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

fn names_department(item: &Value) -> bool {
    item.get("changedFields")
        .and_then(Value::as_array)
        .is_some_and(|fields| {
            fields
                .iter()
                .filter_map(Value::as_str)
                .any(|f| f.trim().eq_ignore_ascii_case(DEPARTMENT))
        })
}

/// The id as text, when it is safe in a URL path and an event id.
fn employee_id(item: &Value) -> Option<String> {
    let id = match item.get("id")? {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(body: &str) -> Result<Vec<String>, PayloadError> {
        department_changes(body.as_bytes())
    }

    #[test]
    fn an_event_naming_department_yields_its_id() {
        let body = r#"{"type":"employee.updated","data":{"id":"42","changedFields":["jobTitle","Department"]}}"#;
        assert_eq!(ids(body), Ok(vec!["42".to_owned()]));
        let body = r#"{"type":"employee.updated","data":{"id":42,"changedFields":["department"]}}"#;
        assert_eq!(ids(body), Ok(vec!["42".to_owned()]));
    }

    #[test]
    fn other_changes_and_types_yield_nothing() {
        for body in [
            r#"{"type":"employee.updated","data":{"id":"42","changedFields":["jobTitle"]}}"#,
            r#"{"type":"employee.updated","data":{"id":"42"}}"#,
            r#"{"type":"employee.created","data":{"id":"42","changedFields":["department"]}}"#,
            r#"{"employees":[{"id":"1","changedFields":["location"]}]}"#,
        ] {
            assert_eq!(ids(body), Ok(vec![]), "{body}");
        }
    }

    #[test]
    fn the_employees_array_is_read() {
        let body = r#"{"employees":[
            {"id":"1","action":"Updated","changedFields":["department"]},
            {"id":"2","changedFields":["location"]},
            {"id":"3","changedFields":["department","location"]},
            {"id":"1","changedFields":["department"]}]}"#;
        assert_eq!(ids(body), Ok(vec!["1".to_owned(), "3".to_owned()]));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(matches!(ids("not json"), Err(PayloadError::NotJson(_))));
        assert_eq!(ids("{}"), Err(PayloadError::UnknownShape));
        assert_eq!(ids(r#"{"employees":{}}"#), Err(PayloadError::UnknownShape));
        assert_eq!(
            ids(r#"{"type":"employee.updated"}"#),
            Err(PayloadError::UnknownShape)
        );
        for id in [r#""""#, r#""../x""#, "null", r#""a b""#] {
            let body = format!(
                r#"{{"type":"employee.updated","data":{{"id":{id},"changedFields":["department"]}}}}"#
            );
            assert_eq!(ids(&body), Err(PayloadError::BadId), "{id}");
        }
    }
}

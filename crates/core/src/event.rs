//! Raw message bytes → a validated [`DepartmentChange`].
//!
//! Everything the daemon later puts in a URL path or a log line passes through
//! here once, so no other module has to re-check it: an invalid message never
//! becomes a `DepartmentChange`, it becomes an [`InvalidPayload`] that is
//! dead-lettered with the reason.

use std::fmt;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Messages larger than this are rejected before any parsing.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Why a message could not become a [`DepartmentChange`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct InvalidPayload {
    /// One line for the dead-letter `detail` header and the log.
    pub detail: String,
    /// The message's `event_id`, when it could be read and is valid, so the
    /// dead letter can still carry it as `message_id`.
    pub event_id: Option<EventId>,
    /// Over [`MAX_PAYLOAD_BYTES`]: never read, dead-lettered by the broker.
    pub too_large: bool,
}

/// Why one field of an event is not valid. Its text is the dead letter's
/// `detail`, so the words are the operator's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("event_id must be 1 to 128 characters, got {0}")]
    EventIdLength(usize),
    #[error("event_id contains control characters")]
    EventIdControl,
    #[error("zoom_user_id {0:?} is not a Zoom user id ([A-Za-z0-9_-], 1 to 64 characters)")]
    NotAZoomId(String),
    #[error(
        "zoom_user_id {0:?} is a word Zoom reserves in a user id's place ({reserved}), not a user id",
        reserved = RESERVED_USER_IDS.join(", ")
    )]
    ReservedUserId(String),
    #[error("email {0:?} is not an email address")]
    NotAnEmail(String),
    #[error("{0} is empty")]
    Empty(String),
    #[error("{0} must be at most 256 characters without control characters")]
    DepartmentText(String),
    #[error("one of zoom_user_id or email is required")]
    NoUser,
    #[error("action is {0:?}: write \"move\" (the default) or \"leave\"")]
    Action(String),
    #[error("new_department is required")]
    NoNewDepartment,
    #[error("new_department must be empty when action is \"leave\"")]
    DepartmentWithLeave,
    #[error("occurred_at is not an RFC 3339 date-time: {0}")]
    OccurredAt(#[from] time::error::Parse),
}

/// The HR system's id of the event (1–128 characters, no control characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

/// A Zoom user id: `[A-Za-z0-9_-]{1,64}`, so it is safe in a URL path as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZoomUserId(String);

/// An email address used to look a user up; percent-encoded when it goes into
/// a path (see [`Email::as_path_segment`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

/// A department name as HR sent it (trimmed, non-empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Department(String);

/// Who the event is about: Zoom's id, an email, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(ZoomUserId),
    Email(Email),
    Both { id: ZoomUserId, email: Email },
}

/// The event's fields, in the order docs/how-it-works.md's event schema lists them.
pub const FIELDS: [&str; 7] = [
    "event_id",
    "zoom_user_id",
    "email",
    "previous_department",
    "new_department",
    "occurred_at",
    "action",
];

/// A validated "user changed department" event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepartmentChange {
    pub event_id: EventId,
    pub user: UserRef,
    pub previous_department: Option<Department>,
    /// For a `leave` event, [`Department::none`].
    pub new_department: Department,
    pub occurred_at: Option<OffsetDateTime>,
    /// `"action": "leave"`: the person leaves every managed group (they are
    /// no longer in any mapped department), and has no new department.
    pub leave: bool,
}

/// The wire shape; only used to get the fields out before validating them.
#[derive(Deserialize)]
struct RawEvent {
    event_id: String,
    #[serde(default)]
    zoom_user_id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    previous_department: Option<String>,
    #[serde(default)]
    new_department: Option<String>,
    #[serde(default)]
    occurred_at: Option<String>,
    /// `move` (the default) or `leave`.
    #[serde(default)]
    action: Option<String>,
}

impl DepartmentChange {
    /// The event as a producer writes it, each field once, as text: what
    /// [`DepartmentChange::parse`] reads back to the same value.
    pub fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::Map::new();
        let mut put = |key: &str, value: &str| json.insert(key.into(), value.into());
        put("event_id", self.event_id.as_str());
        if let Some(id) = self.zoom_user_id() {
            put("zoom_user_id", id.as_str());
        }
        if let Some(email) = self.email() {
            put("email", email.as_str());
        }
        if let Some(previous) = &self.previous_department {
            put("previous_department", previous.as_str());
        }
        if self.leave {
            put("action", "leave");
        } else {
            put("new_department", self.new_department.as_str());
        }
        // A parsed time always formats; one that did not would be left out.
        if let Some(Ok(at)) = self.occurred_at.map(|at| at.format(&Rfc3339)) {
            put("occurred_at", &at);
        }
        serde_json::Value::Object(json).to_string().into_bytes()
    }

    /// Parses and validates one message body.
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidPayload> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(InvalidPayload {
                detail: too_large_detail(bytes.len()),
                event_id: None,
                too_large: true,
            });
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| invalid(format!("message is not UTF-8: {e}"), None))?;
        let event_id = lenient_event_id(text);
        let raw: RawEvent = serde_json::from_str(text).map_err(|e| {
            invalid(
                format!("message is not a valid event: {e}"),
                event_id.clone(),
            )
        })?;
        Self::validate(raw).map_err(|e| invalid(e.to_string(), event_id))
    }

    fn validate(raw: RawEvent) -> Result<Self, FieldError> {
        let event_id = EventId::parse(&raw.event_id)?;
        let id = raw
            .zoom_user_id
            .filter(|s| !s.is_empty())
            .map(|s| ZoomUserId::parse(&s))
            .transpose()?;
        let email = raw
            .email
            .filter(|s| !s.is_empty())
            .map(|s| Email::parse(&s))
            .transpose()?;
        let user = match (id, email) {
            (Some(id), Some(email)) => UserRef::Both { id, email },
            (Some(id), None) => UserRef::Id(id),
            (None, Some(email)) => UserRef::Email(email),
            (None, None) => return Err(FieldError::NoUser),
        };
        let previous_department = match raw.previous_department.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) => Some(Department::parse(name, "previous_department")?),
        };
        let leave = match raw.action.as_deref().map(str::trim) {
            None | Some("" | "move") => false,
            Some("leave") => true,
            Some(other) => return Err(FieldError::Action(other.to_owned())),
        };
        let new_department = match (leave, raw.new_department.as_deref().map(str::trim)) {
            (false, None) => return Err(FieldError::NoNewDepartment),
            (false, Some(name)) => Department::parse(name, "new_department")?,
            (true, None | Some("")) => Department::none(),
            (true, Some(_)) => return Err(FieldError::DepartmentWithLeave),
        };
        let occurred_at = raw
            .occurred_at
            .map(|s| OffsetDateTime::parse(&s, &Rfc3339))
            .transpose()?;
        Ok(Self {
            event_id,
            user,
            previous_department,
            new_department,
            occurred_at,
            leave,
        })
    }

    /// The key that orders events: the same person's events are applied one
    /// after another. The Zoom id when given, else the lower-cased email.
    pub fn user_key(&self) -> String {
        match &self.user {
            UserRef::Id(id) | UserRef::Both { id, .. } => id.as_str().to_owned(),
            UserRef::Email(email) => email.as_str().to_lowercase(),
        }
    }

    /// The email, when the event carries one.
    pub fn email(&self) -> Option<&Email> {
        match &self.user {
            UserRef::Email(email) | UserRef::Both { email, .. } => Some(email),
            UserRef::Id(_) => None,
        }
    }

    /// The Zoom user id, when the event carries one.
    pub fn zoom_user_id(&self) -> Option<&ZoomUserId> {
        match &self.user {
            UserRef::Id(id) | UserRef::Both { id, .. } => Some(id),
            UserRef::Email(_) => None,
        }
    }
}

fn invalid(detail: String, event_id: Option<EventId>) -> InvalidPayload {
    InvalidPayload {
        detail,
        event_id,
        too_large: false,
    }
}

/// Why a message over the limit was refused, in the words `dead-letters
/// list` also uses for the broker's copy of it.
pub fn too_large_detail(len: usize) -> String {
    format!("message is {len} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")
}

/// Reads `event_id` from a message that may fail validation elsewhere, so its
/// dead letter can still be traced back to the HR event.
fn lenient_event_id(text: &str) -> Option<EventId> {
    #[derive(Deserialize)]
    struct OnlyId {
        event_id: String,
    }
    serde_json::from_str::<OnlyId>(text)
        .ok()
        .and_then(|raw| EventId::parse(&raw.event_id).ok())
}

impl EventId {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let len = s.chars().count();
        if !(1..=128).contains(&len) {
            return Err(FieldError::EventIdLength(len));
        }
        if s.chars().any(char::is_control) {
            return Err(FieldError::EventIdControl);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Words Zoom reads in a user id's place: `GET /users/{x}` with one of
/// them is another endpoint, not a user. `me` is the token's own user ("For
/// user-level apps, pass the `me` value instead of the userId parameter",
/// Zoom API reference, Users › Get a user,
/// <https://developers.zoom.us/docs/api/users/#tag/users/GET/users/{userId}>);
/// `email`, `vanity_name` and `summary` are the sibling endpoints
/// `GET /users/email`, `GET /users/vanity_name` and `GET /users/summary` of
/// the same reference. Refused in any case: Zoom's own ids are 22-character
/// random strings, so no real user is turned away, and whether Zoom's path
/// matching ignores case is not documented.
pub const RESERVED_USER_IDS: [&str; 4] = ["me", "email", "vanity_name", "summary"];

impl ZoomUserId {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        if !is_zoom_id(s) {
            return Err(FieldError::NotAZoomId(s.to_owned()));
        }
        if RESERVED_USER_IDS.iter().any(|w| w.eq_ignore_ascii_case(s)) {
            return Err(FieldError::ReservedUserId(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Zoom's ids (users, groups) use this alphabet; anything else could change a
/// request's path or query.
pub fn is_zoom_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Email {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let bad = || FieldError::NotAnEmail(s.to_owned());
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        match s.split_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !s.contains(['/', '\\', '?', '#', '%']) =>
            {
                Ok(Self(s.to_owned()))
            }
            _ => Err(bad()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Department {
    /// The "department" of a `leave` event: none (shown as `-`; it maps to
    /// no group, and the mapping never sees it).
    pub fn none() -> Self {
        Self("-".to_owned())
    }

    pub fn parse(s: &str, field: &str) -> Result<Self, FieldError> {
        let name = s.trim();
        if name.is_empty() {
            return Err(FieldError::Empty(field.to_owned()));
        }
        if name.chars().count() > 256 || name.chars().any(char::is_control) {
            return Err(FieldError::DepartmentText(field.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The newtypes print as the text they hold.
macro_rules! display_as_text {
    ($($newtype:ty),*) => {$(
        impl fmt::Display for $newtype {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

display_as_text!(EventId, ZoomUserId, Email, Department);

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserRef::Id(id) | UserRef::Both { id, .. } => id.fmt(f),
            UserRef::Email(email) => email.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: serde_json::Value) -> Result<DepartmentChange, InvalidPayload> {
        DepartmentChange::parse(json.to_string().as_bytes())
    }

    #[test]
    fn a_leave_event_has_no_new_department() {
        let leave = DepartmentChange::parse(
            br#"{"event_id":"e","zoom_user_id":"u1","action":"leave","previous_department":"Sales"}"#,
        )
        .unwrap();
        assert!(leave.leave);
        assert_eq!(leave.new_department.as_str(), "-");
        let cases: [(&[u8], &str); 3] = [
            (
                br#"{"event_id":"e","zoom_user_id":"u1","action":"leave","new_department":"Sales"}"#,
                "new_department must be empty when action is \"leave\"",
            ),
            (
                br#"{"event_id":"e","zoom_user_id":"u1","action":"fly","new_department":"Sales"}"#,
                "action is \"fly\"",
            ),
            (
                br#"{"event_id":"e","zoom_user_id":"u1"}"#,
                "new_department is required",
            ),
        ];
        for (body, expected) in cases {
            let error = DepartmentChange::parse(body).unwrap_err();
            assert!(error.detail.contains(expected), "{}", error.detail);
        }
    }

    #[test]
    fn parses_the_spec_example() {
        let change = event(serde_json::json!({
            "event_id": "hr-7f3a9c",
            "zoom_user_id": "KDcuGIm1QgePTO8WbOqwIQ",
            "email": "jane.doe@example.com",
            "previous_department": "Engineering",
            "new_department": " Sales ",
            "occurred_at": "2026-11-26T09:00:00Z",
            "unknown": {"ignored": true}
        }))
        .unwrap();
        assert_eq!(change.event_id.as_str(), "hr-7f3a9c");
        assert_eq!(
            change.zoom_user_id().unwrap().as_str(),
            "KDcuGIm1QgePTO8WbOqwIQ"
        );
        assert_eq!(change.new_department.as_str(), "Sales");
        assert_eq!(change.previous_department.unwrap().as_str(), "Engineering");
        assert!(change.occurred_at.is_some());
    }

    #[test]
    fn email_only_is_keyed_by_lower_case_email() {
        let change = event(serde_json::json!({
            "event_id": "e1", "email": "Jane@Example.com", "new_department": "Sales"
        }))
        .unwrap();
        assert_eq!(change.user_key(), "jane@example.com");
        assert!(change.zoom_user_id().is_none());
    }

    /// `me` is not an id: Zoom's user endpoints take it for the token's own
    /// user (`GET /users/me`), so it would act on someone else entirely.
    #[test]
    fn rejects_the_reserved_user_id_me_in_any_case() {
        for id in ["me", "ME", "Me", "mE"] {
            let json = serde_json::json!({
                "event_id": "e1", "zoom_user_id": id, "new_department": "Sales"
            });
            let err = event(json).unwrap_err();
            assert!(err.detail.contains("reserves"), "{id}: {err}");
        }
        assert!(ZoomUserId::parse("meme").is_ok());
    }

    #[test]
    fn rejects_path_changing_user_ids() {
        for id in [
            "../../users/me",
            "abc?x=1",
            "a/b",
            "a#b",
            "a%2Fb",
            "a b",
            "a\nb",
            "",
        ] {
            let json = serde_json::json!({
                "event_id": "e1", "zoom_user_id": id, "new_department": "Sales"
            });
            let result = event(json);
            if id.is_empty() {
                // An empty id counts as absent: then an email is required.
                assert!(result.unwrap_err().detail.contains("required"));
            } else {
                let err = result.unwrap_err();
                assert!(err.detail.contains("zoom_user_id"), "{id}: {err}");
                assert_eq!(err.event_id.unwrap().as_str(), "e1");
            }
        }
    }

    #[test]
    fn rejects_bad_emails() {
        for email in [
            "no-at-sign",
            "a@b/c",
            "a@b?c",
            "a b@c",
            "@x",
            "x@",
            "a%2f@b",
        ] {
            let err = event(serde_json::json!({
                "event_id": "e1", "email": email, "new_department": "Sales"
            }))
            .unwrap_err();
            assert!(err.detail.contains("email"), "{email}: {err}");
        }
    }

    #[test]
    fn rejects_oversize_non_utf8_and_malformed() {
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(
            DepartmentChange::parse(&big)
                .unwrap_err()
                .detail
                .contains("limit")
        );
        let err = DepartmentChange::parse(&[0xff, 0xfe, 0x00]).unwrap_err();
        assert!(err.detail.contains("UTF-8"));
        let err = DepartmentChange::parse(b"{not json").unwrap_err();
        assert!(err.detail.contains("not a valid event"));
        assert!(err.event_id.is_none());
    }

    #[test]
    fn requires_fields_and_checks_their_rules() {
        let cases = [
            (
                serde_json::json!({"zoom_user_id": "u1", "new_department": "S"}),
                "event_id",
            ),
            (
                serde_json::json!({"event_id": "e", "zoom_user_id": "u1"}),
                "new_department",
            ),
            (
                serde_json::json!({"event_id": "e", "new_department": "S"}),
                "required",
            ),
            (
                serde_json::json!({"event_id": "x".repeat(129), "zoom_user_id": "u", "new_department": "S"}),
                "event_id",
            ),
            (
                serde_json::json!({"event_id": "e", "zoom_user_id": "u", "new_department": "  "}),
                "new_department",
            ),
            (
                serde_json::json!({"event_id": "e", "zoom_user_id": "u", "new_department": "S", "occurred_at": "yesterday"}),
                "occurred_at",
            ),
            (
                serde_json::json!({"event_id": 7, "zoom_user_id": "u", "new_department": "S"}),
                "invalid type",
            ),
        ];
        for (json, expected) in cases {
            let err = event(json.clone()).unwrap_err();
            assert!(err.detail.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn blank_previous_department_counts_as_absent() {
        let change = event(serde_json::json!({
            "event_id": "e", "zoom_user_id": "u", "previous_department": " ", "new_department": "S"
        }))
        .unwrap();
        assert!(change.previous_department.is_none());
    }
}

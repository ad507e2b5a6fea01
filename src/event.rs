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

/// Properties over generated input: arbitrary bytes, JSON with the real
/// field names and path-changing values, and valid events. Whatever the
/// parser accepts must reach Zoom as exactly the path the client meant.
#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use percent_encoding::percent_decode_str;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    use serde_json::{Map, Value};
    use time::UtcOffset;
    use url::Url;

    use super::*;
    use crate::mapping::{GroupId, Mapping};
    use crate::zoom::api_url;

    /// `zoom.api_base_url` as configured: with and without a trailing slash,
    /// a deeper prefix, and no path at all.
    const BASES: [&str; 4] = [
        "https://api.zoom.us/v2",
        "https://api.zoom.us/v2/",
        "http://127.0.0.1:9080/zoom/v2",
        "http://zoom.internal",
    ];

    /// Text that changes a request if it reaches a URL unencoded, that a URL
    /// parser or a server treats specially, or that is not ASCII.
    const HOSTILE: &[&str] = &[
        "/",
        "?",
        "#",
        "%",
        ".",
        "..",
        "%2e%2e",
        "%2F",
        "%00",
        "\\",
        "@",
        ";",
        "&",
        "=",
        "+",
        ":",
        "[",
        "]",
        "|",
        " ",
        "\t",
        "\n",
        "\r",
        "\0",
        "\u{7f}",
        "\u{85}",
        "\u{a0}",
        "é",
        "\u{202e}",
        "\u{ff0e}\u{ff0e}",
        "\u{ff0f}",
        "\u{2215}",
        "𝔘",
    ];

    fn hostile_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            3 => prop::sample::select(HOSTILE).prop_map(str::to_owned),
            3 => "[A-Za-z0-9_-]{1,6}",
            1 => any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
    }

    /// Zoom's alphabet (so some ids pass), dots only, or anything.
    fn id_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[A-Za-z0-9_-]{1,64}",
            1 => "[.]{1,3}",
            2 => hostile_text(),
        ]
    }

    /// `local@domain` with hostile parts, a plain address, or anything.
    fn email_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => (hostile_text(), hostile_text()).prop_map(|(l, d)| format!("{l}@{d}")),
            2 => ("[a-z0-9.+_-]{1,20}", "[a-z0-9.-]{1,20}").prop_map(|(l, d)| format!("{l}@{d}")),
            1 => hostile_text(),
        ]
    }

    /// `[departments]` as an operator might write it, typos and all.
    fn mapping_table() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map(hostile_text(), id_text(), 1..4)
    }

    /// A field's value: mostly text of the given kind, sometimes absent,
    /// `null` or a number.
    fn field(text: impl Strategy<Value = String>) -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            20 => text.prop_map(|s| Some(Value::from(s))),
            4 => Just(None),
            1 => Just(Some(Value::Null)),
            1 => any::<i64>().prop_map(|n| Some(Value::from(n))),
        ]
    }

    /// Objects with the schema's field names and arbitrary values.
    fn event_json() -> impl Strategy<Value = Vec<u8>> {
        let action = prop_oneof![
            3 => Just("move".to_owned()),
            1 => Just("leave".to_owned()),
            1 => hostile_text(),
        ];
        let at = prop_oneof![
            3 => Just("2026-11-26T09:00:00Z".to_owned()),
            1 => hostile_text(),
        ];
        // Required: present and text most of the time.
        let event_id = prop_oneof![
            4 => "[a-z0-9-]{1,20}".prop_map(|s| Some(Value::from(s))),
            1 => field(hostile_text()),
        ];
        let department = || prop_oneof!["[A-Za-z &]{1,12}", hostile_text()];
        (
            event_id,
            field(id_text()),
            field(email_text()),
            field(department()),
            field(department()),
            field(at),
            field(action),
        )
            .prop_map(|(event_id, id, email, previous, new, at, action)| {
                let values = [event_id, id, email, previous, new, at, action];
                let object: Map<String, Value> = FIELDS
                    .into_iter()
                    .zip(values)
                    .filter_map(|(name, value)| Some((name.to_owned(), value?)))
                    .collect();
                serde_json::to_vec(&object).unwrap()
            })
    }

    /// Random bytes (rarely JSON), and generated events with one byte
    /// changed (often still JSON, rarely still valid).
    fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            (event_json(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
                |(mut bytes, at, byte)| {
                    if !bytes.is_empty() {
                        let i = at.index(bytes.len());
                        bytes[i] = byte;
                    }
                    bytes
                }
            ),
        ]
    }

    /// The request the client sends for `segments` under `base`, read as a
    /// server reads it: the URL text parsed again (dot segments resolved),
    /// then each segment under the base percent-decoded. Also the raw
    /// segments. Fails when the URL left the base's origin or path, or
    /// carries a query or a fragment.
    fn fail(why: String) -> TestCaseError {
        TestCaseError::fail(why)
    }

    fn served(base: &Url, segments: &[&str]) -> Result<(Vec<String>, Vec<String>), TestCaseError> {
        let sent = api_url(base, segments);
        let served = Url::parse(sent.as_str()).map_err(|e| fail(format!("{sent}: {e}")))?;
        if served.origin() != base.origin() {
            return Err(fail(format!("{served}: another origin")));
        }
        if served.query().is_some() || served.fragment().is_some() {
            return Err(fail(format!("{served}: a query or a fragment")));
        }
        let prefix = format!("{}/", base.path().trim_end_matches('/'));
        let rest = served
            .path()
            .strip_prefix(&prefix)
            .ok_or_else(|| fail(format!("{served}: outside {prefix}")))?;
        let raw: Vec<String> = rest.split('/').map(str::to_owned).collect();
        let decoded = raw
            .iter()
            .map(|s| percent_decode_str(s).decode_utf8().map(|d| d.into_owned()))
            .collect::<Result<_, _>>()
            .map_err(|e| fail(format!("{served}: {e}")))?;
        Ok((raw, decoded))
    }

    /// `segments` reach the server as exactly those segments under every
    /// base: none added, dropped or merged, none a dot segment, none holding
    /// a separator once decoded (some servers decode `%2F` before routing).
    fn assert_served_as_built(segments: &[&str]) -> Result<Vec<String>, TestCaseError> {
        let mut raw_segments = Vec::new();
        for base in BASES {
            let base = Url::parse(base).unwrap();
            let (raw, decoded) = served(&base, segments)?;
            prop_assert_eq!(&decoded, segments, "raw {:?} under {}", raw, base);
            for segment in &decoded {
                prop_assert!(!matches!(segment.as_str(), "" | "." | ".."), "{:?}", raw);
                prop_assert!(!segment.contains(['/', '\\', '?', '#']), "{:?}", raw);
            }
            raw_segments = raw;
        }
        Ok(raw_segments)
    }

    /// `/users/{id or email}`: one segment.
    fn assert_user_path(user: &str) -> Result<(), TestCaseError> {
        assert_served_as_built(&["users", user]).map(drop)
    }

    /// `^/groups/[^/?#%]+/members/[^/?#]+$` (and the add path without the
    /// user): a group id is never even percent-encoded.
    fn assert_member_path(group: &str, user: &str) -> Result<(), TestCaseError> {
        let raw = assert_served_as_built(&["groups", group, "members", user])?;
        prop_assert_eq!(raw.len(), 4);
        prop_assert!(!raw[1].contains('%'), "{:?}", raw);
        let raw = assert_served_as_built(&["groups", group, "members"])?;
        prop_assert!(!raw[1].contains('%'), "{:?}", raw);
        Ok(())
    }

    /// What every accepted event must satisfy: its user id and email reach
    /// Zoom as the one segment they are, in each path they are used in, and
    /// it reads back the same when a producer writes it again (the parser
    /// keeps nothing it could not have been sent).
    fn assert_usable(change: &DepartmentChange) -> Result<(), TestCaseError> {
        if let Some(id) = change.zoom_user_id() {
            assert_user_path(id.as_str())?;
            assert_member_path("grp_eng_0001", id.as_str())?;
        }
        if let Some(email) = change.email() {
            assert_user_path(email.as_str())?;
        }
        let again = DepartmentChange::parse(&change.to_json());
        prop_assert_eq!(again.as_ref(), Ok(change));
        Ok(())
    }

    /// An accepted event is usable; a refused one has a reason and, when
    /// it names an event id for the dead letter, a valid one.
    fn check_any(bytes: &[u8]) -> Result<(), TestCaseError> {
        match DepartmentChange::parse(bytes) {
            Ok(change) => assert_usable(&change),
            Err(error) => {
                prop_assert!(!error.detail.is_empty());
                if let Some(id) = &error.event_id {
                    prop_assert!(EventId::parse(id.as_str()).is_ok(), "{:?}", id);
                }
                Ok(())
            }
        }
    }

    /// Characters of a valid department, event id or email part.
    fn text_without(
        reject: fn(char) -> bool,
        len: std::ops::RangeInclusive<usize>,
    ) -> impl Strategy<Value = String> {
        prop::collection::vec(
            any::<char>().prop_filter("rejected", move |c| !reject(*c)),
            len,
        )
        .prop_map(String::from_iter)
    }

    fn department() -> impl Strategy<Value = String> {
        text_without(char::is_control, 1..=40).prop_filter_map("blank", |s| {
            let name = s.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
    }

    fn email() -> impl Strategy<Value = String> {
        let part = || {
            text_without(
                |c| c.is_whitespace() || c.is_control() || "@/\\?#%".contains(c),
                1..=20,
            )
        };
        (part(), part()).prop_map(|(local, domain)| format!("{local}@{domain}"))
    }

    /// A date-time as a producer writes it (any year RFC 3339 can hold, any
    /// offset in whole minutes), and the instant it means.
    fn occurred_at() -> impl Strategy<Value = (String, OffsetDateTime)> {
        (
            -62_135_596_800i64..=253_402_300_799,
            0u32..1_000_000_000,
            -1439i32..=1439,
        )
            .prop_filter_map("out of range", |(seconds, nanos, minutes)| {
                let at = OffsetDateTime::from_unix_timestamp(seconds)
                    .ok()?
                    .replace_nanosecond(nanos)
                    .ok()?
                    .checked_to_offset(UtcOffset::from_whole_seconds(minutes * 60).ok()?)?;
                Some((at.format(&Rfc3339).ok()?, at))
            })
    }

    /// A valid event: its JSON as a producer writes it, and the
    /// `DepartmentChange` it must parse to.
    fn valid_event() -> impl Strategy<Value = (Vec<u8>, DepartmentChange)> {
        let pad = || prop::sample::select(&["", " ", "\t", "  "][..]);
        (
            text_without(char::is_control, 1..=128),
            proptest::option::of("[A-Za-z0-9_-]{1,64}"),
            proptest::option::of(email()),
            proptest::option::of(department()),
            department(),
            (pad(), pad()),
            proptest::option::of(occurred_at()),
            prop::sample::select(&[None, Some("move"), Some("leave")][..]),
        )
            .prop_filter("no user", |(_, id, email, ..)| {
                id.is_some() || email.is_some()
            })
            .prop_map(
                |(event_id, id, email, previous, new, (before, after), at, action)| {
                    let leave = action == Some("leave");
                    let mut json = Map::new();
                    let mut put = |key: &str, value: String| json.insert(key.into(), value.into());
                    put("event_id", event_id.clone());
                    if let Some(id) = &id {
                        put("zoom_user_id", id.clone());
                    }
                    if let Some(email) = &email {
                        put("email", email.clone());
                    }
                    if let Some(previous) = &previous {
                        put("previous_department", format!("{before}{previous}{after}"));
                    }
                    if !leave {
                        put("new_department", format!("{before}{new}{after}"));
                    }
                    if let Some((text, _)) = &at {
                        put("occurred_at", text.clone());
                    }
                    if let Some(action) = action {
                        put("action", action.to_owned());
                    }
                    let user = match (id, email) {
                        (Some(id), Some(email)) => UserRef::Both {
                            id: ZoomUserId(id),
                            email: Email(email),
                        },
                        (Some(id), None) => UserRef::Id(ZoomUserId(id)),
                        (None, email) => UserRef::Email(Email(email.unwrap())),
                    };
                    let change = DepartmentChange {
                        event_id: EventId(event_id),
                        user,
                        previous_department: previous.map(Department),
                        new_department: if leave {
                            Department::none()
                        } else {
                            Department(new)
                        },
                        occurred_at: at.map(|(_, at)| at),
                        leave,
                    };
                    (serde_json::to_vec(&json).unwrap(), change)
                },
            )
    }

    proptest! {
        #![proptest_config(Config::with_cases(2000))]

        /// Bytes, JSON or not: an event or a typed error, never a panic;
        /// an accepted event is usable, a refused one names a valid id or
        /// none.
        #[test]
        fn any_bytes_give_an_event_or_a_typed_error(bytes in any_bytes()) {
            check_any(&bytes)?;
        }

        /// JSON with the real field names and path-changing values: only
        /// ids and emails that reach Zoom as one exact segment are accepted.
        #[test]
        fn accepted_ids_and_emails_stay_one_path_segment(bytes in event_json()) {
            check_any(&bytes)?;
        }

        /// The mapping's group ids (operator config, not events) are checked
        /// at start-up: any group id the mapping accepts stays one segment,
        /// never percent-encoded, with any accepted user id after it.
        #[test]
        fn mapped_group_ids_stay_one_path_segment(
            table in mapping_table(),
            user in id_text(),
        ) {
            let Ok(user) = ZoomUserId::parse(&user) else { return Ok(()) };
            for group in table.values() {
                if let Ok(group) = GroupId::parse(group) {
                    assert_member_path(group.as_str(), user.as_str())?;
                }
            }
            if let Ok(mapping) = Mapping::new(&table) {
                for department in table.keys() {
                    let group = mapping.group_of(department).unwrap();
                    assert_member_path(group.as_str(), user.as_str())?;
                }
            }
        }

        /// The newtypes' own parsers, which also check the ids that come
        /// from Zoom's answers (a user looked up by email, a user's groups):
        /// whatever they accept stays one segment in each path it is used in.
        #[test]
        fn every_parsed_id_and_email_stays_one_path_segment(
            text in prop_oneof![id_text(), email_text(), hostile_text()],
        ) {
            if let Ok(id) = ZoomUserId::parse(&text) {
                assert_user_path(id.as_str())?;
                assert_member_path("grp_eng_0001", id.as_str())?;
            }
            if let Ok(group) = GroupId::parse(&text) {
                assert_member_path(group.as_str(), "u1")?;
            }
            if let Ok(email) = Email::parse(&text) {
                assert_user_path(email.as_str())?;
            }
        }

        /// A valid event written as a producer writes it parses to the same
        /// fields (departments trimmed, the date-time's instant and offset
        /// kept).
        #[test]
        fn valid_events_survive_a_round_trip((json, expected) in valid_event()) {
            let change = DepartmentChange::parse(&json);
            prop_assert_eq!(change.as_ref(), Ok(&expected), "{}", String::from_utf8_lossy(&json));
            let change = change.unwrap();
            prop_assert_eq!(
                change.occurred_at.map(|at| at.offset()),
                expected.occurred_at.map(|at| at.offset())
            );
            assert_usable(&change)?;
        }
    }

    /// The properties above hold vacuously if nothing is accepted: the JSON
    /// strategy must reach accepted events, including ones whose email a
    /// naive path builder would get wrong, and group ids the mapping takes.
    #[test]
    fn the_generated_json_reaches_accepted_events() {
        let config = Config::with_cases(1);
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
        let mut runner = TestRunner::new_with_rng(config, rng);
        let strategy = event_json();
        let (mut accepted, mut hostile_emails) = (0, 0);
        for _ in 0..4000 {
            let bytes = strategy.new_tree(&mut runner).unwrap().current();
            if let Ok(change) = DepartmentChange::parse(&bytes) {
                accepted += 1;
                let email = change.email().map_or("", Email::as_str);
                hostile_emails += usize::from(
                    email.contains(|c: char| !c.is_ascii_alphanumeric() && !"@.".contains(c)),
                );
            }
        }
        assert!(accepted >= 250, "{accepted} of 4000 accepted");
        assert!(
            hostile_emails >= 150,
            "{hostile_emails} accepted emails with odd characters"
        );
        let tables = mapping_table();
        let mappings = (0..2000)
            .map(|_| tables.new_tree(&mut runner).unwrap().current())
            .filter(|table| Mapping::new(table).is_ok())
            .count();
        assert!(mappings >= 300, "{mappings} of 2000 mappings accepted");
    }
}

//! Properties over generated input: arbitrary bytes, JSON with the real
//! field names and path-changing values, and valid events. Whatever the
//! parser accepts must reach Zoom as exactly the path the client meant.
//! (Moved here from the event parser: the property is about the URL this
//! client builds from what the parser accepts.)
use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use url::Url;

use super::api_url;
use zds_core::event::*;
use zds_core::mapping::{GroupId, Mapping};

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
                        id: ZoomUserId::parse(&id).expect("a generated valid id"),
                        email: Email::parse(&email).expect("a generated valid email"),
                    },
                    (Some(id), None) => UserRef::Id(ZoomUserId::parse(&id).expect("a valid id")),
                    (None, email) => {
                        UserRef::Email(Email::parse(&email.unwrap()).expect("a valid email"))
                    }
                };
                let change = DepartmentChange {
                    event_id: EventId::parse(&event_id).expect("a generated valid event id"),
                    user,
                    previous_department: previous
                        .map(|d| Department::parse(&d, "previous_department").expect("valid")),
                    new_department: if leave {
                        Department::none()
                    } else {
                        Department::parse(&new, "new_department").expect("a valid department")
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

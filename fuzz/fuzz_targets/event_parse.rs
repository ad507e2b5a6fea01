//! Any bytes through `DepartmentChange::parse`: it never panics, and what it
//! accepts is safe to use. An accepted event's user id and email each stay
//! one path segment under the API base once a server decodes the request
//! line, and the event reads back the same when written as JSON again (so
//! the parser keeps nothing it could not have been sent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use url::Url;
use zoom_dept_sync::event::{DepartmentChange, EventId};
use zoom_dept_sync::zoom::api_url;

fuzz_target!(|bytes: &[u8]| {
    match DepartmentChange::parse(bytes) {
        Ok(change) => {
            check_paths(&change);
            check_round_trip(&change);
        }
        Err(error) => {
            assert!(!error.detail.is_empty());
            // The dead letter's message_id must itself be a valid event id.
            if let Some(id) = error.event_id {
                assert!(EventId::parse(id.as_str()).is_ok(), "{id}");
            }
        }
    }
});

/// `GET /users/{id}` and `GET /users/{email}`, and the group-member paths
/// with the id, as the Zoom client builds them.
fn check_paths(change: &DepartmentChange) {
    let base = Url::parse("https://api.zoom.us/v2").unwrap();
    if let Some(id) = change.zoom_user_id() {
        check_path(&base, &["users", id.as_str()]);
        check_path(&base, &["groups", "grp_1", "members", id.as_str()]);
    }
    if let Some(email) = change.email() {
        check_path(&base, &["users", email.as_str()]);
    }
}

/// Parses the URL the client sends as a server would (the text, again) and
/// checks it names exactly `segments` under the base: no dot segment, no
/// extra or missing segment, no query, no fragment, each segment decoding
/// to the value it was built from.
fn check_path(base: &Url, segments: &[&str]) {
    let sent = Url::parse(api_url(base, segments).as_str()).unwrap();
    assert_eq!(sent.origin(), base.origin());
    assert_eq!((sent.query(), sent.fragment()), (None, None), "{sent}");
    let rest = sent.path().strip_prefix("/v2/").unwrap();
    let raw: Vec<&str> = rest.split('/').collect();
    assert_eq!(raw.len(), segments.len(), "{sent}");
    for (raw, want) in raw.iter().zip(segments) {
        let decoded = percent_decode_str(raw).decode_utf8().unwrap();
        assert_eq!(&decoded, want, "{sent}");
        assert!(!matches!(&*decoded, "" | "." | ".."), "{sent}");
        assert!(!decoded.contains(['/', '\\', '?', '#']), "{sent}");
    }
}

/// Writes the accepted event as a producer would and parses it again.
fn check_round_trip(change: &DepartmentChange) {
    let again = DepartmentChange::parse(&change.to_json()).unwrap();
    assert_eq!(&again, change);
}

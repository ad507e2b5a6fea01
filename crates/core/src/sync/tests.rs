//! One test per row of "What each kind of event costs in Zoom calls"
//! (docs/how-it-works.md), and the rules around it, against an in-memory
//! Zoom: the calls made, in order, and each user's final groups.

use std::collections::BTreeMap;

use super::in_memory::{InMemoryDirectory, rejected};
use super::*;
use crate::brake::BrakeSettings;
use crate::outcome::DeadLetter;
use crate::outcome::ZoomAnswer;

const U: &str = "KDcuGIm1QgePTO8WbOqwIQ";
const MAIL: &str = "jane.doe@example.com";

fn mapping() -> Mapping {
    let table: BTreeMap<String, String> = [
        ("Engineering", "grp_eng"),
        ("Sales", "grp_sales"),
        ("Support", "grp_support"),
    ]
    .into_iter()
    .map(|(d, g)| (d.to_owned(), g.to_owned()))
    .collect();
    Mapping::new(&table).expect("mapping")
}

fn event(fields: &str) -> DepartmentChange {
    let json = format!(r#"{{"event_id": "e1", {fields}}}"#);
    DepartmentChange::parse(json.as_bytes()).expect("a valid event")
}

fn brake(max_changes: u32) -> Brake {
    Brake::new(BrakeSettings {
        max_changes,
        max_removals: max_changes,
        window_secs: 60,
    })
}

/// Remembers nothing.
struct Forgetful;

impl People for Forgetful {
    fn learn(&self, _: &Email, _: &ZoomUserId) {}
    fn found_by_email(&self, _: &Email, _: &ZoomUserId) {}
}

/// Notes each pair it is told, with how many calls Zoom had seen by then.
struct Told<'a> {
    zoom: &'a InMemoryDirectory,
    pairs: std::sync::Mutex<Vec<(&'static str, String, usize)>>,
}

impl People for Told<'_> {
    fn learn(&self, email: &Email, _: &ZoomUserId) {
        let calls = self.zoom.calls().len();
        (self.pairs.lock().unwrap()).push(("learn", email.as_str().to_owned(), calls));
    }
    fn found_by_email(&self, email: &Email, _: &ZoomUserId) {
        let calls = self.zoom.calls().len();
        (self.pairs.lock().unwrap()).push(("found", email.as_str().to_owned(), calls));
    }
}

struct Case {
    unmapped: Unmapped,
    set_primary: bool,
    brake: Brake,
    known: Known,
}

impl Default for Case {
    fn default() -> Self {
        Self {
            unmapped: Unmapped::DeadLetter,
            set_primary: false,
            brake: brake(0),
            known: Known::default(),
        }
    }
}

impl Case {
    async fn run(self, zoom: &InMemoryDirectory, change: &DepartmentChange) -> Synced {
        let mapping = mapping();
        let policy = Policy {
            mapping: &mapping,
            people: &Forgetful,
            unmapped: self.unmapped,
            brake: &self.brake,
            set_primary: self.set_primary,
        };
        apply(&policy, zoom, change, self.known).await
    }
}

async fn run(zoom: &InMemoryDirectory, change: &DepartmentChange) -> Synced {
    Case::default().run(zoom, change).await
}

fn dead_letter_reason(outcome: &Outcome) -> Option<FailureReason> {
    match outcome {
        Outcome::DeadLetter(DeadLetter { reason, .. }) => Some(*reason),
        _ => None,
    }
}

fn patch(from: &str, to: &str) -> String {
    format!("PATCH /groups/{from}/members/{U} move {to}")
}

#[tokio::test]
async fn id_with_a_mapped_source_costs_one_patch() {
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_eng"]);
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "previous_department": "Engineering", "new_department": "Sales""#
    ));
    let synced = run(&zoom, &change).await;
    assert!(matches!(synced.outcome, Outcome::Applied));
    assert_eq!(zoom.calls(), [patch("grp_eng", "grp_sales")]);
    assert_eq!(zoom.groups_of(U), ["grp_sales"]);
    let groups = (synced.from_group.unwrap(), synced.to_group.unwrap());
    assert_eq!(
        (groups.0.as_str(), groups.1.as_str()),
        ("grp_eng", "grp_sales")
    );
}

#[tokio::test]
async fn the_same_group_before_and_after_costs_no_call() {
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_eng"]);
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "previous_department": "Engineering", "new_department": "engineering ""#
    ));
    let synced = run(&zoom, &change).await;
    assert!(matches!(synced.outcome, Outcome::Skipped { .. }));
    assert!(zoom.calls().is_empty());
}

#[tokio::test]
async fn an_unmapped_target_costs_no_call_and_is_dead_lettered_or_skipped() {
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_eng"]);
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "previous_department": "Engineering", "new_department": "Legal""#
    ));
    let synced = run(&zoom, &change).await;
    assert_eq!(
        dead_letter_reason(&synced.outcome),
        Some(FailureReason::UnmappedDepartment)
    );
    let skip = Case {
        unmapped: Unmapped::Skip,
        ..Case::default()
    };
    assert!(matches!(
        skip.run(&zoom, &change).await.outcome,
        Outcome::Skipped { .. }
    ));
    assert!(zoom.calls().is_empty());
    assert_eq!(zoom.groups_of(U), ["grp_eng"]);
}

#[tokio::test]
async fn source_unknown_and_already_in_the_target_costs_one_get() {
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_sales", "grp_other"]);
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "new_department": "Sales""#
    ));
    let synced = run(&zoom, &change).await;
    assert!(matches!(synced.outcome, Outcome::AlreadyApplied));
    assert_eq!(zoom.calls(), [format!("GET /users/{U}")]);
    assert_eq!(zoom.groups_of(U), ["grp_other", "grp_sales"]);
}

#[tokio::test]
async fn source_unknown_in_one_managed_group_costs_a_get_and_a_patch() {
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_other", "grp_eng"]);
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "new_department": "Sales""#
    ));
    let synced = run(&zoom, &change).await;
    assert!(matches!(synced.outcome, Outcome::Applied));
    assert_eq!(
        zoom.calls(),
        [format!("GET /users/{U}"), patch("grp_eng", "grp_sales")]
    );
    assert_eq!(zoom.groups_of(U), ["grp_other", "grp_sales"]);
}

#[tokio::test]
async fn source_unknown_in_no_managed_group_costs_a_get_and_a_post() {
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_other"]);
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "new_department": "Sales""#
    ));
    let synced = run(&zoom, &change).await;
    assert!(matches!(synced.outcome, Outcome::Added));
    assert_eq!(
        zoom.calls(),
        [
            format!("GET /users/{U}"),
            format!("POST /groups/grp_sales/members {U}")
        ]
    );
    assert_eq!(zoom.groups_of(U), ["grp_other", "grp_sales"]);
}

#[tokio::test]
async fn source_unknown_in_k_managed_groups_costs_a_get_a_patch_and_k_minus_1_deletes() {
    let zoom = InMemoryDirectory::default().with_user(
        U,
        MAIL,
        &["grp_support", "grp_other", "grp_eng", "grp_x"],
    );
    let mapping_with_x = event(&format!(
        r#""zoom_user_id": "{U}", "new_department": "Sales""#
    ));
    let synced = run(&zoom, &mapping_with_x).await;
    assert!(matches!(synced.outcome, Outcome::Applied));
    // k = 2 managed groups (grp_x and grp_other are not in the mapping):
    // moved from the first by id, removed from the other.
    assert_eq!(
        zoom.calls(),
        [
            format!("GET /users/{U}"),
            patch("grp_eng", "grp_sales"),
            format!("DELETE /groups/grp_support/members/{U}"),
        ]
    );
    assert_eq!(zoom.groups_of(U), ["grp_other", "grp_sales", "grp_x"]);
}

#[tokio::test]
async fn email_only_with_a_known_source_costs_two_calls_then_one_once_cached() {
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_eng"]);
    let change = event(&format!(
        r#""email": "{MAIL}", "previous_department": "Engineering", "new_department": "Sales""#
    ));
    let first = run(&zoom, &change).await;
    assert!(matches!(first.outcome, Outcome::Applied));
    assert_eq!(
        zoom.calls(),
        [format!("GET /users/{MAIL}"), patch("grp_eng", "grp_sales")]
    );
    let (email, id) = first.resolved.expect("the lookup's answer, to cache");
    assert_eq!((email.as_str(), id.as_str()), (MAIL, U));
    assert_eq!(first.learned.len(), 1);

    let back = event(&format!(
        r#""email": "{MAIL}", "previous_department": "Sales", "new_department": "Engineering""#
    ));
    let cached = Case {
        known: Known {
            cached_id: Some(id),
            brake_exempt: false,
        },
        ..Case::default()
    };
    let second = cached.run(&zoom, &back).await;
    assert!(matches!(second.outcome, Outcome::Applied));
    assert_eq!(zoom.calls().len(), 3, "one PATCH once the id is cached");
    assert_eq!(zoom.calls()[2], patch("grp_sales", "grp_eng"));
    assert!(second.resolved.is_none());
    assert_eq!(zoom.groups_of(U), ["grp_eng"]);
}

#[tokio::test]
async fn email_only_with_the_source_unknown_costs_a_lookup_by_email_and_the_write() {
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_eng"]);
    let change = event(&format!(r#""email": "{MAIL}", "new_department": "Sales""#));
    let synced = run(&zoom, &change).await;
    assert!(matches!(synced.outcome, Outcome::Applied));
    assert_eq!(
        zoom.calls(),
        [format!("GET /users/{MAIL}"), patch("grp_eng", "grp_sales")]
    );
    assert_eq!(synced.user.unwrap().as_str(), U);
}

#[tokio::test]
async fn a_patch_answered_404_costs_one_check_and_a_duplicate_is_already_applied() {
    // A redelivered event: the user was moved already.
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_sales"]);
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "previous_department": "Engineering", "new_department": "Sales""#
    ));
    let synced = run(&zoom, &change).await;
    assert!(matches!(synced.outcome, Outcome::AlreadyApplied));
    assert_eq!(
        zoom.calls(),
        [patch("grp_eng", "grp_sales"), format!("GET /users/{U}")]
    );
}

#[tokio::test]
async fn a_patch_answered_400_not_in_the_target_is_dead_lettered_with_zooms_code() {
    let zoom = InMemoryDirectory::default()
        .with_user(U, MAIL, &["grp_eng"])
        .failing("PATCH", rejected(400, 300));
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "previous_department": "Engineering", "new_department": "Sales""#
    ));
    let synced = run(&zoom, &change).await;
    let Outcome::DeadLetter(dead) = &synced.outcome else {
        panic!("expected a dead letter, got {:?}", synced.outcome);
    };
    assert_eq!(dead.reason, FailureReason::ZoomRejected);
    let answer = dead.zoom.as_ref().expect("Zoom's answer");
    assert_eq!((answer.status, answer.code), (Some(400), Some(300)));
    assert_eq!(zoom.calls().len(), 2, "the PATCH and one check");
    assert_eq!(zoom.groups_of(U), ["grp_eng"]);
}

#[tokio::test]
async fn a_duplicate_cut_before_leaving_another_group_leaves_it() {
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_sales", "grp_support"]);
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "previous_department": "Engineering", "new_department": "Sales""#
    ));
    let synced = run(&zoom, &change).await;
    assert!(matches!(synced.outcome, Outcome::AlreadyApplied));
    assert_eq!(
        zoom.calls()[2],
        format!("DELETE /groups/grp_support/members/{U}")
    );
    assert_eq!(zoom.groups_of(U), ["grp_sales"]);
}

#[tokio::test]
async fn transient_failures_past_the_budget_are_retries_exhausted() {
    let exhausted = CallFailure::Exhausted(ZoomAnswer {
        status: Some(503),
        code: None,
        message: "unavailable".into(),
        message_from_zoom: false,
    });
    let zoom = InMemoryDirectory::default()
        .with_user(U, MAIL, &["grp_eng"])
        .failing("PATCH", exhausted);
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "previous_department": "Engineering", "new_department": "Sales""#
    ));
    let synced = run(&zoom, &change).await;
    assert_eq!(
        dead_letter_reason(&synced.outcome),
        Some(FailureReason::RetriesExhausted)
    );
    assert_eq!(zoom.calls().len(), 1, "no duplicate check after a 5xx");
}

#[tokio::test]
async fn an_unknown_email_is_rejected_with_1001_and_forgets_a_cached_id() {
    let zoom = InMemoryDirectory::default();
    let change = event(&format!(
        r#""email": "{MAIL}", "previous_department": "Engineering", "new_department": "Sales""#
    ));
    let synced = run(&zoom, &change).await;
    let Outcome::DeadLetter(dead) = &synced.outcome else {
        panic!("expected a dead letter");
    };
    assert_eq!(dead.zoom.as_ref().unwrap().code, Some(1001));
    assert!(synced.forget_email);
    assert!(synced.resolved.is_none());
}

#[tokio::test]
async fn leave_removes_every_managed_group_and_keeps_the_others() {
    let zoom =
        InMemoryDirectory::default().with_user(U, MAIL, &["grp_eng", "grp_other", "grp_sales"]);
    let change = event(&format!(r#""zoom_user_id": "{U}", "action": "leave""#));
    let synced = run(&zoom, &change).await;
    assert!(matches!(synced.outcome, Outcome::Applied));
    assert_eq!(
        zoom.calls(),
        [
            format!("GET /users/{U}"),
            format!("DELETE /groups/grp_eng/members/{U}"),
            format!("DELETE /groups/grp_sales/members/{U}"),
        ]
    );
    assert_eq!(zoom.groups_of(U), ["grp_other"]);
}

#[tokio::test]
async fn leave_of_a_user_zoom_does_not_know_is_already_applied() {
    let zoom = InMemoryDirectory::default();
    let change = event(&format!(r#""zoom_user_id": "{U}", "action": "leave""#));
    let synced = run(&zoom, &change).await;
    assert!(matches!(synced.outcome, Outcome::AlreadyApplied));
    assert_eq!(zoom.calls().len(), 1);
}

#[tokio::test]
async fn set_primary_follows_a_move() {
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_eng"]);
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "previous_department": "Engineering", "new_department": "Sales""#
    ));
    let case = Case {
        set_primary: true,
        ..Case::default()
    };
    let synced = case.run(&zoom, &change).await;
    assert!(matches!(synced.outcome, Outcome::Applied));
    assert_eq!(
        zoom.calls(),
        [
            patch("grp_eng", "grp_sales"),
            format!("PATCH /groups/grp_sales/members/{U} set_primary"),
        ]
    );
}

#[tokio::test]
async fn the_engaged_brake_holds_the_event_before_any_write() {
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_eng", "grp_support"]);
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "new_department": "Sales""#
    ));
    // One write allowed; this event needs two (a move and a removal).
    let case = Case {
        brake: brake(1),
        ..Case::default()
    };
    let synced = case.run(&zoom, &change).await;
    assert!(matches!(
        synced.outcome,
        Outcome::Requeue {
            cause: RequeueCause::Brake,
            ..
        }
    ));
    assert_eq!(zoom.calls(), [format!("GET /users/{U}")], "no write at all");
    assert_eq!(zoom.groups_of(U), ["grp_eng", "grp_support"]);
}

#[tokio::test]
async fn an_approved_plan_passes_the_engaged_brake() {
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_eng", "grp_support"]);
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "new_department": "Sales""#
    ));
    let case = Case {
        brake: brake(1),
        known: Known {
            cached_id: None,
            brake_exempt: true,
        },
        ..Case::default()
    };
    assert!(matches!(
        case.run(&zoom, &change).await.outcome,
        Outcome::Applied
    ));
    assert_eq!(zoom.groups_of(U), ["grp_sales"]);
}

#[tokio::test]
async fn a_rate_limit_past_the_budget_goes_back_to_the_queue() {
    let until = std::time::Instant::now();
    let zoom = InMemoryDirectory::default()
        .with_user(U, MAIL, &["grp_eng"])
        .failing("PATCH", CallFailure::RateLimited { until });
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "previous_department": "Engineering", "new_department": "Sales""#
    ));
    let synced = run(&zoom, &change).await;
    assert!(matches!(
        synced.outcome,
        Outcome::Requeue {
            cause: RequeueCause::RateLimited { .. },
            ..
        }
    ));
}

#[tokio::test]
async fn what_a_lookup_reveals_is_told_before_the_next_call() {
    // An id-only event of the same person, arriving while this one still
    // runs (a slow or retried PATCH), must already find its line.
    let zoom = InMemoryDirectory::default().with_user(U, MAIL, &["grp_eng"]);
    let told = Told {
        zoom: &zoom,
        pairs: std::sync::Mutex::default(),
    };
    let change = event(&format!(r#""email": "{MAIL}", "new_department": "Sales""#));
    let (mapping, brake) = (mapping(), brake(0));
    let policy = Policy {
        mapping: &mapping,
        people: &told,
        unmapped: Unmapped::DeadLetter,
        brake: &brake,
        set_primary: false,
    };
    let synced = apply(&policy, &zoom, &change, Known::default()).await;
    assert!(matches!(synced.outcome, Outcome::Applied));
    assert_eq!(
        *told.pairs.lock().unwrap(),
        [("found", MAIL.to_owned(), 1)],
        "told after the GET by email, before the PATCH"
    );

    let by_id = InMemoryDirectory::default().with_user(U, MAIL, &["grp_sales"]);
    let told = Told {
        zoom: &by_id,
        pairs: std::sync::Mutex::default(),
    };
    let policy = Policy {
        people: &told,
        ..policy
    };
    let change = event(&format!(
        r#""zoom_user_id": "{U}", "new_department": "Engineering""#
    ));
    apply(&policy, &by_id, &change, Known::default()).await;
    assert_eq!(
        *told.pairs.lock().unwrap(),
        [("learn", MAIL.to_owned(), 1)],
        "the user record's email is told before the PATCH"
    );
}

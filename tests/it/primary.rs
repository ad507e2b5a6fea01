//! `worker.set_primary`: after a move or add, the target becomes the user's
//! primary group; one more call, skipped when Zoom already reports it.

use std::time::Duration;

use zoom_fake::{FakeConfig, FakeHandle};

use crate::helpers::{TestApp, event, eventually};

/// The user's (groups, primary group) in the fake.
fn user(zoom: &FakeHandle, id: &str) -> (Vec<String>, Option<String>) {
    let state = zoom.state();
    let user = state.users.iter().find(|u| u.id == id).expect("user");
    let mut groups = user.groups.clone();
    groups.sort();
    (groups, user.primary_group.clone())
}

#[tokio::test]
async fn the_target_becomes_the_primary_group_after_every_move_or_add() {
    // U1: in a licence group (primary) and Engineering. U2: already in
    // Sales, primary. U3: in no group.
    let seed = FakeConfig::default()
        .group("grp_lic", "Licensed")
        .group("grp_eng", "Engineering")
        .group("grp_sales", "Sales")
        .user("U1", "u1@example.com", &["grp_lic", "grp_eng"])
        .user("U2", "u2@example.com", &["grp_sales"])
        .user("U3", "u3@example.com", &[]);
    let zoom = crate::helpers::spawn_zoom(seed).await;
    let mut app = TestApp::spawn_with(|s| {
        crate::helpers::use_zoom(s, &zoom);
        s.worker.set_primary = true;
    })
    .await;
    app.publish_json(event("e1", "U1", Some("Engineering"), "Sales"))
        .await;
    app.publish_json(event("e2", "U2", None, "Sales")).await;
    app.publish_json(event("e3", "U3", None, "Sales")).await;
    eventually("all three settled", Duration::from_secs(10), || async {
        app.queue_state(&app.queue).await.0 == 0 && zoom.counters().total.calls >= 7
    })
    .await;
    app.stop_and_assert_queues_empty().await;

    let sales = Some("grp_sales".to_owned());
    assert_eq!(
        user(&zoom, "U1"),
        (vec!["grp_lic".into(), "grp_sales".into()], sales.clone())
    );
    assert_eq!(user(&zoom, "U2"), (vec!["grp_sales".into()], sales.clone()));
    assert_eq!(user(&zoom, "U3"), (vec!["grp_sales".into()], sales));
    // U1: move + set_primary; U2: lookup + set_primary (Zoom's documented
    // Get a user answer has no primary group, so the daemon cannot see that
    // Sales already is); U3: lookup, add, set_primary.
    let medium = zoom.counters().medium;
    let light = zoom.counters().light;
    assert_eq!((medium.ok, light.ok), (5, 2), "{medium:?} {light:?}");
}

//! The demo of docker-compose.yml's `demo` profile, without Docker: the
//! shipped `demo/` files (zoom-fake's seed, the daemon's config, the sample
//! events) against `zoom-fake` in-process and the real broker. What the
//! README's Quick start promises the demo shows must be what happens: the moves land, one
//! move is retried after a 429, one event is dead-lettered with Zoom's code.

use std::path::Path;
use std::time::Duration;

use zoom_dept_sync::config::Settings;
use zoom_fake::{self as fake, FakeConfig, FakeHandle};

use crate::helpers::{TestApp, eventually, header_int, header_str};

fn demo_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("demo")
        .join(name)
}

/// The user's groups in the fake, sorted.
fn groups_of(fake: &FakeHandle, user: &str) -> Vec<String> {
    let state = fake.state();
    let user = state.users.iter().find(|u| u.id == user).expect("user");
    let mut groups = user.groups.clone();
    groups.sort();
    groups
}

#[tokio::test]
async fn the_demo_moves_retries_and_dead_letters_against_zoom_fake() {
    let seed = FakeConfig::from_file(&demo_file("zoom-fake.seed.toml")).expect("demo seed");
    let fake = fake::spawn(seed, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("zoom-fake starts");
    // docker-compose.yml's demo credentials, which the demo seed accepts.
    let env = |name: &str| match name {
        "ZOOM_ACCOUNT_ID" => Some("demo-account".to_owned()),
        "ZOOM_CLIENT_ID" => Some("demo-client".to_owned()),
        "ZOOM_CLIENT_SECRET" => Some("demo-secret".to_owned()),
        _ => None,
    };
    let demo = Settings::load(&demo_file("config.toml"), &env).expect("demo config loads");
    let mut app = TestApp::spawn_with(|s| {
        // The demo's own settings; only the addresses and queue names are
        // the test's.
        s.zoom = demo.zoom.clone();
        s.credentials = demo.credentials.clone();
        s.zoom.api_base_url = fake.api_base_url();
        s.zoom.oauth_token_url = fake.token_url();
        s.retry = demo.retry.clone();
        s.worker = demo.worker.clone();
        s.mapping = demo.mapping.clone();
    })
    .await;

    let events = std::fs::read_to_string(demo_file("events.jsonl")).expect("demo events");
    for line in events.lines().filter(|l| !l.trim().is_empty()) {
        app.publish(line.as_bytes()).await;
    }
    let letters = app.dead_letters(1).await;
    eventually(
        "every demo event is settled",
        Duration::from_secs(20),
        || async { app.queue_state(&app.queue).await.0 == 0 && fake.counters().total.calls >= 9 },
    )
    .await;
    app.stop_and_assert_queues_empty().await;

    let letter: serde_json::Value = serde_json::from_slice(&letters[0].data).unwrap();
    assert_eq!(letter["event_id"], "demo-6", "the unknown user's event");
    assert_eq!(
        header_str(&letters[0], "failure-reason").as_deref(),
        Some("zoom_rejected")
    );
    assert_eq!(header_int(&letters[0], "zoom-error-code"), Some(1001));
    for (user, expected) in [
        ("u1", vec!["grp_support"]),
        ("u2", vec!["grp_support"]),
        ("u3", vec!["grp_mkt"]),
        ("u4", vec!["grp_sales"]),
        ("u5", vec!["grp_mkt"]),
        ("u6", vec!["grp_eng"]),
    ] {
        assert_eq!(groups_of(&fake, user), expected, "{user}'s groups");
    }
    let counters = fake.counters();
    assert_eq!(
        counters.medium.faults, 1,
        "the scripted 429 was answered once"
    );
}

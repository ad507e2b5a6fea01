//! `reconcile`: the binary against zoom-fake (in-process) and the real
//! broker. The plan, nothing published or written without `--apply`, the
//! events with `--apply` and the daemon bringing Zoom to the plan, the
//! threshold, and paging through a large group.

use std::path::PathBuf;
use std::process::Command;

use lapin::options::BasicGetOptions;
use serde_json::{Value, json};
use zoom_fake::{FakeConfig, FakeHandle};

use crate::helpers::{
    ACCOUNT_ID, CLIENT_ID, CLIENT_SECRET, TestApp, amqp_url, clean_env, header_str,
};

/// A config file for `app` and an export, in a temp dir.
struct Run {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Run {
    fn new(app: &TestApp, export: &str) -> Self {
        Self::with_bytes(app, export.as_bytes())
    }

    /// An export that need not be UTF-8.
    fn with_bytes(app: &TestApp, export: &[u8]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, app.config_toml()).expect("write config");
        std::fs::write(dir.path().join("export.csv"), export).expect("write export");
        Self { dir, config }
    }

    /// `reconcile --json` with `args`: (exit code, the JSON plan, stderr).
    async fn reconcile(&self, args: &[&str]) -> (i32, Value, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"));
        command
            .arg("reconcile")
            .arg("--config")
            .arg(&self.config)
            .arg("--hr-export")
            .arg(self.dir.path().join("export.csv"))
            .arg("--json")
            .args(args);
        clean_env(&mut command, &amqp_url());
        let out = tokio::process::Command::from(command)
            .output()
            .await
            .expect("run zoom-dept-sync");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let plan = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("not a JSON plan ({e}): {stdout}\nstderr: {stderr}");
        });
        (out.status.code().unwrap_or(-1), plan, stderr)
    }
}

/// The drift of test 1: three in the wrong group, one in two managed
/// groups, one in none, one unmapped department, one not in Zoom, one email
/// twice, two in place, and a managed member missing from the export.
fn drifted() -> FakeConfig {
    FakeConfig::default()
        .group("grp_eng", "Engineering")
        .group("grp_sales", "Sales")
        .group("grp_support", "Support")
        .group("grp_mkt", "Marketing")
        .group("grp_all", "Everyone")
        .user("u1", "a1@ex.com", &["grp_eng"])
        .user("u2", "a2@ex.com", &["grp_sales"])
        .user("u3", "a3@ex.com", &["grp_support"])
        .user("u4", "two@ex.com", &["grp_sales", "grp_eng"])
        .user("u5", "none@ex.com", &["grp_all"])
        .user("u6", "legal@ex.com", &["grp_eng"])
        .user("u7", "dup@ex.com", &["grp_mkt"])
        .user("u8", "ok1@ex.com", &["grp_eng"])
        .user("u9", "ok2@ex.com", &["grp_mkt"])
        .user("u10", "left@ex.com", &["grp_support"])
}

const EXPORT: &str = "email,department\n\
    a1@ex.com,Sales\n\
    a2@ex.com,Support\n\
    a3@ex.com,Engineering\n\
    two@ex.com,Sales\n\
    none@ex.com,Marketing\n\
    legal@ex.com,Legal\n\
    ghost@ex.com,Sales\n\
    dup@ex.com,Sales\n\
    OK1@EX.COM,Engineering\n\
    ok2@ex.com,Marketing\n\
    Dup@ex.com,Marketing\n";

async fn app_on(fake: &FakeHandle) -> TestApp {
    let (api, token) = (fake.api_base_url(), fake.token_url());
    TestApp::prepare_with(move |s| {
        s.zoom.api_base_url = api;
        s.zoom.oauth_token_url = token;
    })
    .await
}

fn actions(plan: &Value) -> Vec<(String, String)> {
    plan["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let email = e["email"].as_str().unwrap_or_default().to_owned();
            (email, e["action"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(e, a)| ((*e).to_owned(), (*a).to_owned()))
        .collect()
}

fn groups_of(fake: &FakeHandle) -> Vec<(String, Vec<String>)> {
    fake.state()
        .users
        .into_iter()
        .map(|u| {
            let mut groups = u.groups;
            groups.sort();
            (u.id, groups)
        })
        .collect()
}

const FIRST_PLAN: [(&str, &str); 11] = [
    ("a1@ex.com", "move"),
    ("a2@ex.com", "move"),
    ("a3@ex.com", "move"),
    ("two@ex.com", "remove-extra"),
    ("none@ex.com", "add"),
    ("legal@ex.com", "unmapped-department"),
    ("ghost@ex.com", "not-in-zoom"),
    ("dup@ex.com", "ambiguous"),
    ("OK1@EX.COM", "ok"),
    ("ok2@ex.com", "ok"),
    ("left@ex.com", "not-in-export"),
];

#[tokio::test]
async fn reconcile_plans_every_action_and_changes_nothing_without_apply() {
    let fake = crate::helpers::spawn_zoom(drifted()).await;
    let before = groups_of(&fake);
    let app = app_on(&fake).await;
    let run = Run::new(&app, EXPORT);

    let (code, plan, stderr) = run.reconcile(&[]).await;

    assert_eq!(code, 1, "the second dup@ row is unreadable: {stderr}");
    assert_eq!(actions(&plan), pairs(&FIRST_PLAN));
    assert_eq!(
        plan["unreadable_rows"],
        json!([{"line": 12, "problem": "second row for dup@ex.com (line 9)",
                "person": {"email": "dup@ex.com"}}])
    );
    let entry = |i: usize| &plan["entries"][i];
    assert_eq!(entry(0)["current_groups"], json!(["grp_eng"]));
    assert_eq!(entry(0)["wanted_group"], "grp_sales");
    assert_eq!(entry(3)["current_groups"], json!(["grp_eng", "grp_sales"]));
    assert_eq!(entry(4)["zoom_user_id"], "u5", "found by the lookup");
    assert_eq!(entry(7)["lines"], json!([9, 12]));
    assert_eq!(
        plan["totals"],
        json!({"move": 3, "add": 1, "remove-extra": 1, "ok": 2,
               "unmapped-department": 1, "not-in-zoom": 1, "ambiguous": 1, "not-in-export": 1})
    );
    assert_eq!(
        (plan["changes"].as_u64(), plan["managed_members"].as_u64()),
        (Some(5), Some(9))
    );
    assert_eq!(plan["apply"], false);
    assert_eq!(app.queue_state(&app.queue).await.0, 0, "nothing published");
    let counters = fake.counters();
    assert_eq!(
        counters.medium.calls, 4,
        "one member page per managed group"
    );
    assert_eq!(counters.light.calls, 2, "two lookups (none@, ghost@)");
    assert_eq!(counters.heavy.calls, 0);
    assert_eq!(groups_of(&fake), before, "no write reached Zoom");
}

#[tokio::test]
async fn reconcile_apply_publishes_events_the_daemon_brings_zoom_to_the_plan() {
    let fake = crate::helpers::spawn_zoom(drifted()).await;
    let mut app = app_on(&fake).await;
    let run = Run::new(&app, EXPORT);
    let as_of = "2026-11-26T09:00:00Z";

    let (code, plan, stderr) = run
        .reconcile(&[
            "--apply",
            "--skip-unreadable",
            "--max-changes",
            "5",
            "--as-of",
            as_of,
        ])
        .await;
    assert_eq!(code, 1, "the second dup@ row is still reported: {stderr}");
    assert!(stderr.contains("published 5 events"), "{stderr}");
    let run_id = plan["run_id"].as_str().expect("run id").to_owned();

    // Take the events off the queue, check them, and put them back for
    // the daemon.
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let got = app
            .channel
            .basic_get(app.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
            .expect("an event");
        let delivery = got.delivery;
        assert_eq!(
            header_str(&delivery, "reconcile-run-id").as_deref(),
            Some(run_id.as_str())
        );
        bodies.push(serde_json::from_slice::<Value>(&delivery.data).unwrap());
        app.publish_with(&delivery.data, delivery.properties.clone())
            .await;
    }
    let id = |n: usize| format!("reconcile-{run_id}-{n}");
    assert_eq!(
        bodies,
        [
            json!({"event_id": id(1), "zoom_user_id": "u1", "email": "a1@ex.com",
                   "previous_department": "engineering", "new_department": "Sales", "occurred_at": as_of}),
            json!({"event_id": id(2), "zoom_user_id": "u2", "email": "a2@ex.com",
                   "previous_department": "sales", "new_department": "Support", "occurred_at": as_of}),
            json!({"event_id": id(3), "zoom_user_id": "u3", "email": "a3@ex.com",
                   "previous_department": "support", "new_department": "Engineering", "occurred_at": as_of}),
            json!({"event_id": id(4), "zoom_user_id": "u4", "email": "two@ex.com",
                   "new_department": "Sales", "occurred_at": as_of}),
            json!({"event_id": id(5), "zoom_user_id": "u5", "email": "none@ex.com",
                   "new_department": "Marketing", "occurred_at": as_of}),
        ]
    );

    app.start().await;
    crate::helpers::eventually(
        "the daemon applied the events",
        std::time::Duration::from_secs(20),
        || async {
            app.queue_state(&app.queue).await.0 == 0
                && fake.state().users[0].groups == ["grp_sales"]
        },
    )
    .await;
    app.stop_and_assert_queues_empty().await;
    let expected = [
        ("u1", vec!["grp_sales"]),
        ("u10", vec!["grp_support"]),
        ("u2", vec!["grp_support"]),
        ("u3", vec!["grp_eng"]),
        ("u4", vec!["grp_sales"]),
        ("u5", vec!["grp_all", "grp_mkt"]),
        ("u6", vec!["grp_eng"]),
        ("u7", vec!["grp_mkt"]),
        ("u8", vec!["grp_eng"]),
        ("u9", vec!["grp_mkt"]),
    ];
    let expected: Vec<(String, Vec<String>)> = expected
        .iter()
        .map(|(u, g)| ((*u).to_owned(), g.iter().map(|g| (*g).to_owned()).collect()))
        .collect();
    assert_eq!(groups_of(&fake), expected);

    // Again: nothing to publish, everyone `ok`. Zoom's documented List
    // group members answer says nothing of primary groups (and so neither
    // does zoom-fake's), so reconcile sees no primary-group drift: the
    // added user's primary group (grp_all) is not reported as
    // `set-primary`, with or without `worker.set_primary`.
    let (code, again, stderr) = run.reconcile(&["--apply", "--skip-unreadable"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(again["changes"], 0);
    assert_eq!(again["events"], json!([]));
    let mut second = pairs(&FIRST_PLAN);
    for row in second.iter_mut().take(5) {
        row.1 = "ok".to_owned();
    }
    assert_eq!(actions(&again), second);
    assert_eq!(app.queue_state(&app.queue).await.0, 0);
    let state = fake.state();
    let u5 = state.users.iter().find(|u| u.id == "u5").unwrap();
    assert_eq!(u5.primary_group.as_deref(), Some("grp_all"), "unseen drift");

    let (api, token) = (fake.api_base_url(), fake.token_url());
    let primary = TestApp::prepare_with(move |s| {
        s.zoom.api_base_url = api;
        s.zoom.oauth_token_url = token;
        s.worker.set_primary = true;
    })
    .await;
    let (code, third, stderr) = Run::new(&primary, EXPORT)
        .reconcile(&["--apply", "--skip-unreadable"])
        .await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(third["changes"], 0, "{third}");
}

#[tokio::test]
async fn reconcile_refuses_a_plan_over_the_threshold_unless_allowed() {
    let fake = crate::helpers::spawn_zoom(drifted()).await;
    let app = app_on(&fake).await;
    let run = Run::new(&app, EXPORT);

    let (code, plan, stderr) = run.reconcile(&["--apply"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("changes 5 people of 9 managed members, over the limit of 1"),
        "{stderr}"
    );
    assert_eq!(plan["apply"], false);
    assert_eq!(app.queue_state(&app.queue).await.0, 0, "nothing published");

    let (code, plan, stderr) = run.reconcile(&["--apply", "--allow-large"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("1 unreadable row (line 12)"), "{stderr}");
    assert_eq!(plan["apply"], false);
    assert_eq!(app.queue_state(&app.queue).await.0, 0, "nothing published");

    let allowed = ["--apply", "--allow-large", "--skip-unreadable"];
    let (code, plan, stderr) = run.reconcile(&allowed).await;
    assert_eq!(code, 1, "the unreadable row is still reported: {stderr}");
    assert!(stderr.contains("published 5 events"), "{stderr}");
    assert_eq!(plan["apply"], true);
    assert_eq!(app.queue_state(&app.queue).await.0, 5, "published");
}

#[tokio::test]
async fn reconcile_lists_members_across_pages() {
    let mut seed = FakeConfig::default()
        .group("grp_eng", "Engineering")
        .group("grp_sales", "Sales")
        .group("grp_support", "Support")
        .group("grp_mkt", "Marketing");
    for i in 0..700 {
        seed = seed.user(
            &format!("u{i:03}"),
            &format!("p{i:03}@ex.com"),
            &["grp_eng"],
        );
    }
    let fake = crate::helpers::spawn_zoom(seed).await;
    let app = app_on(&fake).await;
    let run = Run::new(&app, "email,department\np000@ex.com,Engineering\n");

    let (code, plan, stderr) = run.reconcile(&[]).await;

    assert_eq!(code, 0, "{stderr}");
    assert_eq!(plan["managed_members"], 700, "every member seen");
    assert_eq!(plan["totals"], json!({"ok": 1, "not-in-export": 699}));
    assert_eq!(
        fake.counters().medium.calls,
        3 + 3,
        "three pages of grp_eng (300, 300, 100), one of each other group"
    );
}

#[tokio::test]
async fn reconcile_bad_header_is_a_usage_error() {
    let fake = crate::helpers::spawn_zoom(drifted()).await;
    let app = app_on(&fake).await;
    let run = Run::new(&app, "mail,dept\na@ex.com,Sales\n");
    let mut command = Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"));
    command
        .args(["reconcile", "--config"])
        .arg(&run.config)
        .arg("--hr-export")
        .arg(run.dir.path().join("export.csv"))
        .env("ZOOM_ACCOUNT_ID", ACCOUNT_ID)
        .env("ZOOM_CLIENT_ID", CLIENT_ID)
        .env("ZOOM_CLIENT_SECRET", CLIENT_SECRET);
    let out = command.output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad CSV header: no column \"email\""),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(fake.counters().total.calls, 0);
}

/// `--remove-unlisted`: a member of a managed group who is not in the export
/// gets a `leave` event, and the daemon takes them out of every managed
/// group (other groups stay).
#[tokio::test]
async fn reconcile_remove_unlisted_takes_leavers_out_of_the_managed_groups() {
    let seed = FakeConfig::default()
        .group("grp_eng", "Engineering")
        .group("grp_sales", "Sales")
        .group("grp_support", "Support")
        .group("grp_mkt", "Marketing")
        .group("grp_all", "Everyone")
        .user("u1", "stays@ex.com", &["grp_eng"])
        .user("u2", "left@ex.com", &["grp_sales", "grp_eng", "grp_all"]);
    let fake = crate::helpers::spawn_zoom(seed).await;
    let mut app = app_on(&fake).await;
    let run = Run::new(&app, "email,department\nstays@ex.com,Engineering\n");

    let dir = tempfile::tempdir().unwrap();
    let plan_out = dir.path().join("plan.json");
    let plan_out_arg = plan_out.to_str().unwrap();
    let (code, plan, stderr) = run
        .reconcile(&[
            "--apply",
            "--remove-unlisted",
            "--allow-large",
            "--plan-out",
            plan_out_arg,
        ])
        .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(plan["changes"], 1, "{plan}");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_out).unwrap()).unwrap();
    assert_eq!(
        written["published"], 1,
        "the plan file says what was published"
    );
    let got = app
        .channel
        .basic_get(app.queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("the leave event");
    let event: Value = serde_json::from_slice(&got.delivery.data).unwrap();
    assert_eq!(event["action"], "leave", "{event}");
    assert_eq!(event["zoom_user_id"], "u2");
    assert!(event.get("new_department").is_none(), "{event}");
    app.publish_with(&got.delivery.data, got.delivery.properties.clone())
        .await;

    app.start().await;
    crate::helpers::eventually(
        "the daemon removed the leaver",
        std::time::Duration::from_secs(20),
        || async {
            let state = fake.state();
            let u2 = state.users.iter().find(|u| u.id == "u2").unwrap();
            u2.groups == ["grp_all"]
        },
    )
    .await;
    app.stop_and_assert_queues_empty().await;
    let (_, again, _) = run.reconcile(&["--remove-unlisted"]).await;
    assert_eq!(again["changes"], 0, "{again}");
}

/// Two rows that cannot be read: an empty department (the email is fine)
/// and a Latin-1 byte (in the name column). `--remove-unlisted --apply`
/// refuses and publishes nothing; with `--skip-unreadable` the other
/// changes go through and those two people are neither moved nor removed.
#[tokio::test]
async fn reconcile_two_unreadable_rows_keep_both_people_where_they_are() {
    let seed = FakeConfig::default()
        .group("grp_eng", "Engineering")
        .group("grp_sales", "Sales")
        .group("grp_support", "Support")
        .group("grp_mkt", "Marketing")
        .user("u1", "empty@ex.com", &["grp_eng"])
        .user("u2", "latin@ex.com", &["grp_sales"])
        .user("u3", "mover@ex.com", &["grp_eng"])
        .user("u4", "left@ex.com", &["grp_support"])
        .user("u5", "stays@ex.com", &["grp_mkt"]);
    let fake = crate::helpers::spawn_zoom(seed).await;
    let before = groups_of(&fake);
    let mut app = app_on(&fake).await;
    let export: &[u8] = b"email,name,department\n\
        empty@ex.com,Emma,\n\
        latin@ex.com,Jos\xe9,Engineering\n\
        mover@ex.com,Mo,Sales\n\
        stays@ex.com,Sam,Marketing\n";
    let run = Run::with_bytes(&app, export);
    let apply = ["--remove-unlisted", "--apply", "--allow-large"];

    let (code, plan, stderr) = run.reconcile(&apply).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("2 unreadable rows (lines 2, 3)"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing published"), "{stderr}");
    assert_eq!(plan["apply"], false);
    let lines: Vec<u64> = plan["unreadable_rows"]
        .as_array()
        .expect("unreadable rows")
        .iter()
        .map(|u| u["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 3], "{plan}");
    assert_eq!(app.queue_state(&app.queue).await.0, 0, "nothing published");
    assert_eq!(groups_of(&fake), before);

    let skip = [
        "--remove-unlisted",
        "--apply",
        "--allow-large",
        "--skip-unreadable",
    ];
    let (code, plan, stderr) = run.reconcile(&skip).await;
    assert_eq!(code, 1, "the rows are still reported: {stderr}");
    assert_eq!(
        actions(&plan),
        pairs(&[
            ("mover@ex.com", "move"),
            ("stays@ex.com", "ok"),
            ("empty@ex.com", "unreadable-row"),
            ("latin@ex.com", "unreadable-row"),
            ("left@ex.com", "not-in-export"),
        ]),
        "{plan}"
    );
    assert_eq!(plan["apply"], true);
    assert_eq!(
        app.queue_state(&app.queue).await.0,
        2,
        "the move and the leave"
    );
    app.start().await;
    crate::helpers::eventually(
        "the daemon applied the move and the leave",
        std::time::Duration::from_secs(20),
        || async {
            let state = fake.state();
            let of = |id: &str| {
                state
                    .users
                    .iter()
                    .find(|u| u.id == id)
                    .unwrap()
                    .groups
                    .clone()
            };
            of("u3") == ["grp_sales"] && of("u4").is_empty()
        },
    )
    .await;
    app.stop_and_assert_queues_empty().await;
    let after = groups_of(&fake);
    assert_eq!(after[0], before[0], "empty@ kept: {after:?}");
    assert_eq!(after[1], before[1], "latin@ kept: {after:?}");
}

/// A row that cannot say whom it names (a Latin-1 byte in the email):
/// `--remove-unlisted` removes no one, even with `--skip-unreadable`.
#[tokio::test]
async fn reconcile_an_unidentifiable_row_stops_every_removal() {
    let seed = FakeConfig::default()
        .group("grp_eng", "Engineering")
        .group("grp_sales", "Sales")
        .group("grp_support", "Support")
        .group("grp_mkt", "Marketing")
        .user("u1", "jos\u{e9}@ex.com", &["grp_eng"])
        .user("u2", "mover@ex.com", &["grp_eng"]);
    let fake = crate::helpers::spawn_zoom(seed).await;
    let app = app_on(&fake).await;
    let export: &[u8] = b"email,department\njos\xe9@ex.com,Engineering\nmover@ex.com,Sales\n";
    let run = Run::with_bytes(&app, export);

    let (code, plan, stderr) = run
        .reconcile(&[
            "--remove-unlisted",
            "--apply",
            "--allow-large",
            "--skip-unreadable",
        ])
        .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--remove-unlisted: no one removed"),
        "{stderr}"
    );
    assert_eq!(
        actions(&plan),
        pairs(&[
            ("mover@ex.com", "move"),
            ("jos\u{e9}@ex.com", "not-in-export")
        ]),
        "{plan}"
    );
    assert_eq!(plan["changes"], 1, "{plan}");
    assert_eq!(app.queue_state(&app.queue).await.0, 1, "the move only");
}

/// `--hr-export` must be a regular file of at most 64 MiB: a directory or
/// a device is refused (exit 2) without reading it.
#[tokio::test]
async fn reconcile_refuses_an_export_that_is_not_a_regular_file() {
    let fake = crate::helpers::spawn_zoom(drifted()).await;
    let app = app_on(&fake).await;
    let run = Run::new(&app, EXPORT);
    for path in [run.dir.path().to_owned(), PathBuf::from("/dev/zero")] {
        let out = Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"))
            .args(["reconcile", "--config"])
            .arg(&run.config)
            .arg("--hr-export")
            .arg(&path)
            .env("ZOOM_ACCOUNT_ID", ACCOUNT_ID)
            .env("ZOOM_CLIENT_ID", CLIENT_ID)
            .env("ZOOM_CLIENT_SECRET", CLIENT_SECRET)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("not a regular file"), "{path:?}: {stderr}");
    }
    assert_eq!(fake.counters().total.calls, 0);
}

//! `explain`: what the daemon would do for one person, with one lookup and
//! no write; `--apply` publishes that one event through the queue.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::Tool;
use crate::helpers::{TestApp, eventually, groups_of, mapped_zoom, spawn_zoom, use_zoom};

async fn explain(tool: &Tool, args: &[&str]) -> Value {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    all.push("--json");
    let (code, out, err) = tool.run_async(&all).await;
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn calls(explained: &Value) -> Vec<(String, String, String)> {
    explained["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (text("method"), text("path"), text("category"))
        })
        .collect()
}

#[tokio::test]
async fn explain_shows_groups_target_and_calls_without_writing() {
    let seed = mapped_zoom()
        .group("grp_lic", "Licensed")
        .user("U1", "u1@example.com", &["grp_eng", "grp_lic"])
        .user("U2", "u2@example.com", &[]);
    let zoom = spawn_zoom(seed).await;
    let mut app = TestApp::spawn_with(|s| use_zoom(s, &zoom)).await;
    let tool = Tool::new(&app, "");

    let u1 = explain(&tool, &["--user", "U1", "--department", "Sales"]).await;
    assert_eq!(u1["zoom_user_id"], "U1");
    assert_eq!(u1["groups"][0]["id"], "grp_eng");
    assert_eq!(u1["groups"][0]["managed"], true);
    // Departments as the mapping compares them (case-folded).
    assert_eq!(
        u1["groups"][0]["departments"],
        serde_json::json!(["engineering"])
    );
    assert_eq!(u1["groups"][1]["id"], "grp_lic");
    assert_eq!(u1["groups"][1]["managed"], false);
    assert_eq!(u1["target_group"], "grp_sales");
    let want = |m: &str, p: &str, c: &str| (m.to_owned(), p.to_owned(), c.to_owned());
    assert_eq!(
        calls(&u1),
        [
            want("GET", "/users/U1", "light"),
            want("PATCH", "/groups/grp_eng/members/U1", "medium"),
        ]
    );
    assert!(u1["daemon"].as_str().unwrap().starts_with("ready"), "{u1}");

    let u2 = explain(
        &tool,
        &["--email", "u2@example.com", "--department", "Sales"],
    )
    .await;
    assert_eq!(
        calls(&u2),
        [
            want("GET", "/users/U2", "light"),
            want("POST", "/groups/grp_sales/members", "medium"),
        ]
    );
    let legal = explain(&tool, &["--user", "U1", "--department", "Legal"]).await;
    assert!(calls(&legal).is_empty());
    assert!(
        legal["note"].as_str().unwrap().contains("maps to no group"),
        "{legal}"
    );

    let counters = zoom.counters();
    assert_eq!(counters.medium.calls, 0, "no write: {counters:?}");
    assert_eq!(counters.light.calls, 3, "one lookup each: {counters:?}");
    assert_eq!(groups_of(&zoom, "U1"), ["grp_eng", "grp_lic"]);

    // --apply: that one event, through the queue and the daemon.
    let applied = explain(&tool, &["--user", "U1", "--department", "Sales", "--apply"]).await;
    assert!(
        applied["published"]
            .as_str()
            .unwrap()
            .starts_with("explain-"),
        "{applied}"
    );
    eventually("the daemon applied it", Duration::from_secs(10), || async {
        groups_of(&zoom, "U1") == ["grp_lic", "grp_sales"]
    })
    .await;
    app.stop_and_assert_queues_empty().await;
}

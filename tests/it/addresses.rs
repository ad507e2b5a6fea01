//! Several broker addresses (`amqp.urls`, or a comma-separated `AMQP_URL`):
//! tried in turn, the first that answers is used, and `/readyz` and the
//! log name the node in use, never the password. The cluster tests
//! (`cluster.rs`) lose nodes under load; these need one broker only.

use crate::helpers::{
    TestApp, Tool, amqp_url, event, free_local_port, groups_of, mapped_zoom, spawn_zoom, use_zoom,
    wait_for_calls,
};

/// `amqp_url()` with its port swapped for one nothing listens on.
fn dead_address() -> String {
    let live = url::Url::parse(&amqp_url()).expect("AMQP_URL is a URL");
    let mut dead = live.clone();
    dead.set_port(Some(free_local_port().port())).unwrap();
    dead.to_string()
}

fn host_port(url: &str) -> String {
    let url = url::Url::parse(url).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5672))
}

#[tokio::test]
async fn a_dead_first_address_is_passed_over_and_readyz_names_the_node_in_use() {
    let zoom = spawn_zoom(mapped_zoom().user("U1", "u1@example.com", &["grp_eng"])).await;
    let urls = vec![dead_address().into(), amqp_url().into()];
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.amqp.urls = urls;
    })
    .await;
    app.wait_until_consuming().await;
    app.publish_json(event("e1", "U1", Some("Engineering"), "Sales"))
        .await;
    wait_for_calls(&zoom, 1).await;
    let (status, body) = app.http_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let line = format!("broker: {}", host_port(&amqp_url()));
    assert!(body.lines().any(|l| l == line), "{line:?} not in {body}");
    let password = url::Url::parse(&amqp_url()).unwrap();
    if let Some(password) = password.password() {
        assert!(!body.contains(&format!(":{password}@")), "{body}");
    }
    app.stop_and_assert_queues_empty().await;
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
}

/// A command takes the same list from `AMQP_URL`, comma-separated, and
/// passes over the dead address too.
#[tokio::test]
async fn a_command_tries_each_address_of_a_comma_separated_amqp_url() {
    let app = TestApp::prepare_with(|_| {}).await;
    app.publish_json(event("e1", "U1", None, "Sales")).await;
    let tool = Tool::new(&app, "");
    let list = format!("{},{}", dead_address(), amqp_url());
    let mut command = tool.command(&["status", "--json"]);
    command.env("AMQP_URL", &list);
    let (_, out, err) = crate::helpers::output(command.output().unwrap());
    // (`status` exits 1 here: no daemon answers `/readyz`.)
    let status: serde_json::Value = serde_json::from_str(&out).expect(&err);
    assert_eq!(status["input"]["ready"], 1, "{status}");
    assert!(err.contains("trying the next"), "{err}");
    // Every address dead: the error names each, never a password.
    let mut command = tool.command(&["status", "--json"]);
    command.env("AMQP_URL", format!("{},{}", dead_address(), dead_address()));
    let (code, out, err) = crate::helpers::output(command.output().unwrap());
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("no broker address answered"), "{err}");
    assert!(!err.contains(":guest@"), "{err}");
}

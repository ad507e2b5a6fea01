//! `POST /v1/bamboohr`, in-process, against the real broker and a wiremock
//! BambooHR API: what reaches the input queue for each answer. The webhooks
//! are BambooHR's own documented examples (`fixtures/vendor/bamboohr/`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::BasicGetOptions;
use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{basic_auth, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};
use zds_vendor_fixtures::Fixture;
use zoom_dept_sync::config::{BambooHrSettings, OnDelete, RetrySettings};
use zoom_dept_sync::ingest::bamboohr::BambooHr;
use zoom_dept_sync::ingest::bamboohr::signature::{WebhookKey, sign};
use zoom_dept_sync::ingest::signature::Secrets;
use zoom_dept_sync::ingest::{self, Ingest};

use crate::helpers::{ReceiverQueue, amqp_url, unix_now};

const KEY: &str = "bamboo-webhook-key";
const API_KEY: &str = "bamboo-api-key";
/// The employee of BambooHR's documented `employee.updated` example.
const EMPLOYEE: &str = "67890";

struct Receiver {
    base: String,
    /// `/metrics` (`ingest.probe_listen`).
    probes: String,
    target: ReceiverQueue,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    client: reqwest::Client,
    api: MockServer,
    /// Webhooks sent by `post_fixture`.
    sent: std::sync::atomic::AtomicI64,
}

impl Receiver {
    async fn start() -> Self {
        Self::start_with(None, OnDelete::Ignore).await
    }

    /// Publishing to `queue` (declared here when `None`), deletions as
    /// `on_delete` says.
    async fn start_with(queue: Option<String>, on_delete: OnDelete) -> Self {
        let api = MockServer::start().await;
        // A daemon's queue is declared by its test app, with its arguments.
        let target = ReceiverQueue::open("ingest-bamboohr", queue).await;
        let amqp = target.receiver_settings(amqp_url()).await;
        let settings = BambooHrSettings {
            company_domain: "acme".into(),
            api_base_url: format!("{}/api/gateway.php", api.uri()),
            on_delete,
        };
        let retry = RetrySettings {
            initial_interval_ms: 50,
            max_interval_ms: 200,
            max_elapsed_secs: 10,
        };
        let hr = BambooHr::new(
            &settings,
            &retry,
            WebhookKey::new(KEY).expect("key"),
            SecretString::from(API_KEY),
            false,
        )
        .expect("client");
        let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let shutdown = CancellationToken::new();
        let server = ingest::serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Arc::new(Ingest::new(&amqp, secrets).with_bamboohr(hr)),
            shutdown.clone(),
        )
        .await
        .expect("serve");
        Self {
            base: format!("http://{}", server.local_addr),
            probes: format!("http://{}", server.probe_addr),
            target,
            shutdown,
            task: server.task,
            client: reqwest::Client::new(),
            api,
            sent: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Answers the lookup of employee 67890 with `response`.
    async fn api_answers(&self, response: ResponseTemplate) {
        self.api_answers_for(EMPLOYEE, response).await;
    }

    /// Answers the lookup of employee `id` with `response`.
    async fn api_answers_for(&self, id: &str, response: ResponseTemplate) {
        Mock::given(method("GET"))
            .and(path(format!("/api/gateway.php/acme/v1/employees/{id}")))
            .and(query_param("fields", "department,workEmail"))
            .and(header("accept", "application/json"))
            .and(basic_auth(API_KEY, "x"))
            .respond_with(response)
            .mount(&self.api)
            .await;
    }

    async fn post_signed(&self, ts: &str, body: &[u8]) -> (u16, Option<String>, String) {
        let signature = sign(&WebhookKey::new(KEY).expect("key"), ts, body);
        self.post(ts, &signature, body).await
    }

    async fn post(&self, ts: &str, signature: &str, body: &[u8]) -> (u16, Option<String>, String) {
        self.post_as("application/json", ts, signature, body).await
    }

    /// A documented example, signed, sent with its content type. Each is
    /// stamped a second later than the last (BambooHR stamps each send), so
    /// two sends about one employee are two events, not a duplicate.
    async fn post_fixture(&self, fixture: &Fixture, body: &[u8]) -> (u16, Option<String>, String) {
        let content_type = fixture.request().header("content-type").expect("type");
        let sent = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ts = (unix_now() + sent).to_string();
        let signature = sign(&WebhookKey::new(KEY).expect("key"), &ts, body);
        self.post_as(content_type, &ts, &signature, body).await
    }

    async fn post_as(
        &self,
        content_type: &str,
        ts: &str,
        signature: &str,
        body: &[u8],
    ) -> (u16, Option<String>, String) {
        let response = self
            .client
            .post(format!("{}/v1/bamboohr", self.base))
            .header("X-BambooHR-Timestamp", ts)
            .header("X-BambooHR-Signature", signature)
            .header("content-type", content_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("request");
        crate::helpers::status_retry_after_body(response).await
    }

    async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.probes);
        let response = self.client.get(url).send().await.expect("metrics");
        response.text().await.unwrap_or_default()
    }

    async fn ready_messages(&self) -> u32 {
        self.target.ready_messages().await
    }

    async fn api_calls(&self) -> usize {
        self.api.received_requests().await.unwrap_or_default().len()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        self.target.delete().await;
    }
}

/// BambooHR's documented `employee.updated` JSON example, with
/// `changedFields` set to `fields` (the example changes `firstName`).
fn webhook(fields: &[&str]) -> Vec<u8> {
    let mut body = Fixture::load("bamboohr/event.employee.updated.json")
        .request()
        .body
        .clone()
        .expect("JSON body");
    body["data"]["changedFields"] = json!(fields);
    body.to_string().into_bytes()
}

/// A documented example's body as sent: JSON as shown; a form's lines
/// `&`-joined, as on the wire. `edit` changes the text first.
fn documented(name: &str, edit: impl Fn(String) -> String) -> (Fixture, Vec<u8>) {
    let fixture = Fixture::load(&format!("bamboohr/{name}"));
    let text = String::from_utf8(fixture.request().body_bytes()).expect("text");
    let wire = edit(text).lines().collect::<Vec<_>>().join("&");
    (fixture, wire.into_bytes())
}

/// BambooHR's Get Employee answer (`id` a number, as its sample shows), with
/// the two fields the lookup asks for.
fn employee_answer(department: &str, email: &str) -> ResponseTemplate {
    let mut body = Fixture::load("bamboohr/employee_api.get.json")
        .response_body()
        .clone();
    body["department"] = json!(department);
    body["workEmail"] = json!(email);
    ResponseTemplate::new(200).set_body_json(body)
}

async fn next_event(r: &Receiver) -> serde_json::Value {
    let got = r
        .target
        .channel
        .basic_get(
            r.target.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("get")
        .expect("a message");
    serde_json::from_slice(&got.delivery.data).expect("JSON")
}

#[tokio::test]
async fn ingest_bamboohr_a_department_change_publishes_the_api_state_once() {
    let r = Receiver::start().await;
    r.api_answers(employee_answer("Sales", "ann@example.com"))
        .await;
    let ts = unix_now();
    let body = webhook(&["jobTitle", "department"]);
    let (status, _, text) = r.post_signed(&ts.to_string(), &body).await;
    assert_eq!(status, 202, "{text}");
    assert!(text.contains("accepted"), "{text}");
    let got = r
        .target
        .channel
        .basic_get(
            r.target.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("get")
        .expect("a message");
    let event: serde_json::Value = serde_json::from_slice(&got.delivery.data).expect("JSON");
    // bamboohr-<id>-<timestamp>-<8 hex of the published state>
    let event_id = event["event_id"].as_str().expect("event_id").to_owned();
    let digest = event_id
        .strip_prefix(&format!("bamboohr-{EMPLOYEE}-{ts}-"))
        .unwrap_or_else(|| panic!("{event_id}"));
    assert!(
        digest.len() == 8 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{event_id}"
    );
    let occurred_at = time::OffsetDateTime::from_unix_timestamp(ts)
        .expect("ts")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    assert_eq!(
        event,
        json!({
            "event_id": event_id,
            "email": "ann@example.com",
            "new_department": "Sales",
            "occurred_at": occurred_at,
        })
    );
    let message_id = got.delivery.properties.message_id().clone();
    assert_eq!(
        message_id.as_ref().map(|s| s.as_str()),
        Some(event_id.as_str())
    );

    // BambooHR retries the same webhook: answered, published once.
    let (status, _, text) = r.post_signed(&ts.to_string(), &body).await;
    assert_eq!((status, text.contains("duplicate")), (202, true), "{text}");
    assert_eq!(r.ready_messages().await, 0, "a repeat publishes nothing");
    let metrics = r.metrics().await;
    for line in [
        r#"zoom_dept_sync_ingest_requests_total{source="bamboohr",result="accepted"} 1"#,
        r#"zoom_dept_sync_ingest_requests_total{source="bamboohr",result="duplicate"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    r.stop().await;
}

#[tokio::test]
async fn ingest_bamboohr_other_changes_and_bad_signatures_publish_nothing() {
    let r = Receiver::start().await;
    let ts = unix_now().to_string();
    let (status, _, text) = r.post_signed(&ts, &webhook(&["jobTitle"])).await;
    assert_eq!((status, text.contains("ignored")), (202, true), "{text}");

    let body = webhook(&["department"]);
    let wrong = sign(&WebhookKey::new("other").expect("key"), &ts, &body);
    assert_eq!(r.post(&ts, &wrong, &body).await.0, 401, "wrong key");
    let stale = (unix_now() - 301).to_string();
    assert_eq!(r.post_signed(&stale, &body).await.0, 401, "stale");
    let (status, _, _) = r.post_signed(&ts, b"not json").await;
    assert_eq!(status, 400);

    assert_eq!(
        r.api_calls().await,
        0,
        "nothing unverified or ignored is looked up"
    );
    assert_eq!(r.ready_messages().await, 0);
    let metrics = r.metrics().await;
    for line in [
        r#"zoom_dept_sync_ingest_requests_total{source="bamboohr",result="ignored"} 1"#,
        r#"zoom_dept_sync_ingest_requests_total{source="bamboohr",result="bad_signature"} 2"#,
        r#"zoom_dept_sync_ingest_requests_total{source="bamboohr",result="invalid"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    r.stop().await;
}

#[tokio::test]
async fn ingest_bamboohr_an_api_5xx_is_a_503_to_retry() {
    let r = Receiver::start().await;
    r.api_answers(ResponseTemplate::new(500)).await;
    let started = std::time::Instant::now();
    let (status, retry_after, text) = r
        .post_signed(&unix_now().to_string(), &webhook(&["department"]))
        .await;
    assert_eq!(status, 503, "{text}");
    assert!(retry_after.is_some(), "Retry-After");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(r.api_calls().await >= 2, "a short retry");
    assert_eq!(r.ready_messages().await, 0);
    r.stop().await;
}

#[tokio::test]
async fn ingest_bamboohr_an_api_4xx_is_a_422_not_retried() {
    let r = Receiver::start().await;
    r.api_answers(ResponseTemplate::new(404)).await;
    let (status, retry_after, text) = r
        .post_signed(&unix_now().to_string(), &webhook(&["department"]))
        .await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("404"), "{text}");
    assert_eq!(retry_after, None);
    assert_eq!(r.api_calls().await, 1, "a 4xx is not retried");
    assert_eq!(r.ready_messages().await, 0);
    let metrics = r.metrics().await;
    let line = r#"zoom_dept_sync_ingest_requests_total{source="bamboohr",result="rejected"} 1"#;
    assert!(metrics.contains(line), "{line} in {metrics}");
    r.stop().await;
}

/// Every documented shape and encoding of a department change publishes
/// the employee's state from the API: event-based JSON and Form Post (as
/// shown, and percent-encoded as a browser sends it), field-based JSON and
/// Form Post (the id a bracket key there).
#[tokio::test]
async fn ingest_bamboohr_every_documented_shape_of_a_department_change_publishes() {
    let r = Receiver::start().await;
    r.api_answers(employee_answer("Sales", "ann@example.com"))
        .await;
    r.api_answers_for("12345", employee_answer("Support", "bryony@example.com"))
        .await;
    let to_department = |t: String| {
        t.replace("firstName", "department")
            .replace("First Name", "Department")
            .replace("=First+name", "=Department")
    };
    let cases = [
        ("event.employee.updated.json", EMPLOYEE, "Sales"),
        ("event.employee.updated.form.json", EMPLOYEE, "Sales"),
        ("fields.employees.json", "12345", "Support"),
        ("fields.employees.form.json", "12345", "Support"),
    ];
    for (name, id, department) in cases {
        let (fixture, body) = documented(name, to_department);
        let (status, _, text) = r.post_fixture(&fixture, &body).await;
        assert_eq!(
            (status, text.contains("accepted")),
            (202, true),
            "{name}: {text}"
        );
        let event = next_event(&r).await;
        assert_eq!(event["new_department"], department, "{name}");
        let event_id = event["event_id"].as_str().expect("id");
        assert!(
            event_id.starts_with(&format!("bamboohr-{id}-")),
            "{name}: {event_id}"
        );
        // The same form, brackets percent-encoded as a browser sends them.
        if fixture.request().body_text.is_some() {
            let encoded = String::from_utf8(body)
                .unwrap()
                .replace('[', "%5B")
                .replace(']', "%5D");
            let (status, _, text) = r.post_fixture(&fixture, encoded.as_bytes()).await;
            assert_eq!(status, 202, "{name} percent-encoded: {text}");
            let _ = next_event(&r).await;
        }
    }
    // BambooHR's own examples as documented change firstName: ignored.
    for name in ["event.employee.updated.json", "fields.employees.form.json"] {
        let (fixture, body) = documented(name, |t| t);
        let (status, _, text) = r.post_fixture(&fixture, &body).await;
        assert_eq!(
            (status, text.contains("ignored")),
            (202, true),
            "{name}: {text}"
        );
    }
    assert_eq!(r.ready_messages().await, 0);
    r.stop().await;
}

/// `employee.created` (JSON and Form Post) publishes the new hire's
/// department; `employee.deleted` is ignored by default (no lookup) and a
/// `leave` with `on_delete = "leave"`.
#[tokio::test]
async fn ingest_bamboohr_a_new_hire_publishes_and_a_deletion_leaves_only_when_asked() {
    let r = Receiver::start().await;
    r.api_answers_for("100", employee_answer("Engineering", "new@example.com"))
        .await;
    r.api_answers(employee_answer("Sales", "ann@example.com"))
        .await;
    for (name, id) in [
        ("event.employee.created.json", "100"),
        ("event.employee.created.form.json", EMPLOYEE),
    ] {
        let (fixture, body) = documented(name, |t| t);
        let (status, _, text) = r.post_fixture(&fixture, &body).await;
        assert_eq!(
            (status, text.contains("accepted")),
            (202, true),
            "{name}: {text}"
        );
        let event = next_event(&r).await;
        assert!(
            event["event_id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("bamboohr-{id}-created-")),
            "{event}"
        );
        assert!(event.get("action").is_none(), "{event}");
    }
    let calls = r.api_calls().await;
    for name in [
        "event.employee.deleted.json",
        "event.employee.deleted.form.json",
    ] {
        let (fixture, body) = documented(name, |t| t);
        let (status, _, text) = r.post_fixture(&fixture, &body).await;
        assert_eq!(
            (status, text.contains("ignored")),
            (202, true),
            "{name}: {text}"
        );
    }
    assert_eq!(
        r.api_calls().await,
        calls,
        "an ignored deletion is not looked up"
    );
    assert_eq!(r.ready_messages().await, 0);
    r.stop().await;

    let r = Receiver::start_with(None, OnDelete::Leave).await;
    r.api_answers_for("100", employee_answer("Engineering", "gone@example.com"))
        .await;
    let (fixture, body) = documented("event.employee.deleted.json", |t| t);
    let (status, _, text) = r.post_fixture(&fixture, &body).await;
    assert_eq!((status, text.contains("accepted")), (202, true), "{text}");
    let event = next_event(&r).await;
    assert_eq!(event["action"], "leave", "{event}");
    assert_eq!(event["email"], "gone@example.com", "{event}");
    assert!(event.get("new_department").is_none(), "{event}");
    // BambooHR no longer answers for the employee: a 422 that says what to do.
    let (fixture, body) = documented("event.employee.deleted.form.json", |t| t);
    r.api_answers(ResponseTemplate::new(404)).await;
    let (status, _, text) = r.post_fixture(&fixture, &body).await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("reconcile --remove-unlisted"), "{text}");
    r.stop().await;
}

/// End to end, BambooHR's documented webhooks through the receiver and the
/// daemon into zoom-fake: a department change moves the person, a new hire
/// is added to their department's group, a deletion (with `on_delete =
/// "leave"`) takes the person out of every managed group.
#[tokio::test]
async fn ingest_bamboohr_documented_webhooks_move_add_and_remove_people_in_zoom() {
    use zoom_fake::FakeConfig;

    let seed = FakeConfig::default()
        .group("grp_eng", "Engineering")
        .group("grp_sales", "Sales")
        .group("grp_all", "Everyone")
        .user("U1", "ann@example.com", &["grp_eng", "grp_all"])
        .user("U2", "new@example.com", &[])
        .user("U3", "gone@example.com", &["grp_sales", "grp_all"]);
    let zoom = crate::helpers::spawn_zoom(seed).await;
    let mut app = crate::helpers::TestApp::spawn_with(|s| {
        crate::helpers::use_zoom(s, &zoom);
    })
    .await;
    let r = Receiver::start_with(Some(app.queue.clone()), OnDelete::Leave).await;
    r.api_answers(employee_answer("Sales", "ann@example.com"))
        .await;
    r.api_answers_for("100", employee_answer("Engineering", "new@example.com"))
        .await;
    r.api_answers_for("555", employee_answer("Sales", "gone@example.com"))
        .await;
    let webhooks = [
        documented("event.employee.updated.form.json", |t| {
            t.replace("firstName", "department")
        }),
        documented("event.employee.created.json", |t| t),
        documented("event.employee.deleted.json", |t| {
            t.replace("\"100\"", "\"555\"")
        }),
    ];
    for (fixture, body) in &webhooks {
        let (status, _, text) = r.post_fixture(fixture, body).await;
        assert_eq!(status, 202, "{}: {text}", fixture.title);
    }
    let groups = |id: &str| {
        let state = zoom.state();
        let user = state.users.iter().find(|u| u.id == id).expect("user");
        let mut groups = user.groups.clone();
        groups.sort();
        groups
    };
    crate::helpers::eventually("all three applied", Duration::from_secs(15), || async {
        groups("U1") == ["grp_all", "grp_sales"]
            && groups("U2") == ["grp_eng"]
            && groups("U3") == ["grp_all"]
    })
    .await;
    app.stop_and_assert_queues_empty().await;
    r.stop().await;
}

/// One employee BambooHR no longer answers for does not cost the others of
/// the webhook: the rest are published, and the answer (422) names the one.
#[tokio::test]
async fn ingest_bamboohr_one_refused_employee_does_not_drop_the_others() {
    let r = Receiver::start_with(None, OnDelete::Leave).await;
    r.api_answers_for("100", ResponseTemplate::new(404)).await;
    r.api_answers_for("200", employee_answer("Sales", "bob@example.com"))
        .await;
    let body = json!({"employees": [
        {"action": "Deleted", "changedFields": [], "fields": {}, "id": "100"},
        {"action": "Updated", "changedFields": ["Department"], "id": "200"},
    ]});
    let fixture = Fixture::load("bamboohr/fields.employees.json");
    let (status, _, text) = r.post_fixture(&fixture, body.to_string().as_bytes()).await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("employee 100"), "{text}");
    let event = next_event(&r).await;
    assert_eq!(event["email"], "bob@example.com", "{event}");
    assert_eq!(event["new_department"], "Sales", "{event}");
    assert_eq!(r.ready_messages().await, 0);
    r.stop().await;
}

/// Two webhooks about one employee in the same second, the department
/// changed between them: both are published (the second is no duplicate);
/// the same request again publishes nothing and costs no lookup.
#[tokio::test]
async fn ingest_bamboohr_two_changes_in_one_second_are_two_events() {
    let r = Receiver::start().await;
    let ts = unix_now().to_string();
    let bodies = [
        webhook(&["department"]),
        webhook(&["department", "division"]),
    ];
    for (department, body) in ["Sales", "Support"].into_iter().zip(&bodies) {
        r.api.reset().await;
        r.api_answers(employee_answer(department, "ann@example.com"))
            .await;
        let (status, _, text) = r.post_signed(&ts, body).await;
        assert_eq!((status, text.contains("accepted")), (202, true), "{text}");
        assert_eq!(next_event(&r).await["new_department"], department);
    }
    let calls = r.api_calls().await;
    let (status, _, text) = r.post_signed(&ts, &bodies[1]).await;
    assert_eq!((status, text.contains("duplicate")), (202, true), "{text}");
    assert_eq!(r.ready_messages().await, 0);
    assert_eq!(r.api_calls().await, calls, "a copy costs no lookup");
    r.stop().await;
}

/// A webhook naming `ids`, each a department change, in the documented
/// `fields.employees` shape.
fn employees_webhook(ids: &[String]) -> Vec<u8> {
    let employees: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| json!({"action": "Updated", "changedFields": ["Department"], "id": id}))
        .collect();
    json!({ "employees": employees }).to_string().into_bytes()
}

/// Six copies of one signed webhook naming three employees cost three
/// lookups: the copy is known before any lookup (two in turn, four at
/// once), answered 202 `duplicate`, and publishes nothing more.
#[tokio::test]
async fn ingest_bamboohr_copies_of_one_webhook_cost_one_lookup_per_employee() {
    let r = Arc::new(Receiver::start().await);
    let ids: Vec<String> = (1..=3).map(|i| format!("{i}00")).collect();
    for id in &ids {
        let email = format!("e{id}@example.com");
        r.api_answers_for(id, employee_answer("Sales", &email))
            .await;
    }
    let body = employees_webhook(&ids);
    let ts = unix_now().to_string();
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(r.post_signed(&ts, &body).await);
    }
    let together: Vec<_> = (0..4)
        .map(|_| {
            let (r, ts, body) = (Arc::clone(&r), ts.clone(), body.clone());
            tokio::spawn(async move { r.post_signed(&ts, &body).await })
        })
        .collect();
    for copy in together {
        answers.push(copy.await.unwrap());
    }
    assert_eq!(r.api_calls().await, 3, "one lookup per employee");
    assert!(answers[0].2.contains("accepted"), "{answers:?}");
    for (status, _, text) in &answers[1..] {
        assert_eq!((*status, text.contains("duplicate")), (202, true), "{text}");
    }
    assert_eq!(r.ready_messages().await, 3);
    let metrics = r.metrics().await;
    assert!(
        metrics.contains(r#"source="bamboohr",result="duplicate"} 5"#),
        "{metrics}"
    );
    Arc::into_inner(r).expect("one owner").stop().await;
}

/// One employee over the cap and the webhook is refused whole: 413 naming
/// the cap (final: BambooHR retries only 5xx), no lookup, nothing published.
#[tokio::test]
async fn ingest_bamboohr_a_webhook_over_the_employee_cap_costs_no_lookup() {
    use zoom_dept_sync::ingest::bamboohr::MAX_EMPLOYEES;
    let r = Receiver::start().await;
    let ids: Vec<String> = (0..=MAX_EMPLOYEES).map(|i| i.to_string()).collect();
    let (status, _, text) = r
        .post_signed(&unix_now().to_string(), &employees_webhook(&ids))
        .await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains(&MAX_EMPLOYEES.to_string()), "{text}");
    assert_eq!(r.api_calls().await, 0);
    assert_eq!(r.ready_messages().await, 0);
    let metrics = r.metrics().await;
    assert!(
        metrics.contains(r#"source="bamboohr",result="too_large"} 1"#),
        "{metrics}"
    );
    r.stop().await;
}

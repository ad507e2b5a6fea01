//! `zoom-fake` in-process on 127.0.0.1:0, asked over real HTTP: statuses,
//! Zoom's bodies and the rate-limit headers.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zds_vendor_fixtures::Fixture;
use zoom_fake::{
    self as fake, Category, FakeConfig, FakeHandle, FaultsConfig, Limits, ScriptedFault,
    SeedProblem, SpawnError,
};

/// A running fake and a client holding one of its tokens.
struct Api {
    fake: FakeHandle,
    http: reqwest::Client,
    token: String,
}

impl Api {
    async fn start(config: FakeConfig) -> Self {
        let fake = fake::spawn(config, "127.0.0.1:0".parse().expect("address"))
            .await
            .expect("fake starts");
        let http = reqwest::Client::new();
        let token = token(&http, &fake).await;
        Self { fake, http, token }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let url = format!("{}{path}", self.fake.base_url());
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("fake answers")
    }

    async fn get(&self, path: &str) -> Response {
        self.call(Method::GET, path, None).await
    }

    async fn move_user(&self, from: &str, user: &str, to: &str) -> Response {
        let body = json!({"action": "move", "target_group_id": to});
        let path = format!("/v2/groups/{from}/members/{user}");
        self.call(Method::PATCH, &path, Some(body)).await
    }
}

async fn token(http: &reqwest::Client, fake: &FakeHandle) -> String {
    let answer: Value = http
        .post(format!(
            "{}?grant_type=account_credentials&account_id=acct",
            fake.token_url()
        ))
        .basic_auth("client", Some("secret"))
        .send()
        .await
        .expect("token endpoint answers")
        .json()
        .await
        .expect("token JSON");
    assert_eq!(answer["token_type"], "bearer");
    assert_eq!(answer["expires_in"], 3600);
    answer["access_token"].as_str().expect("a token").to_owned()
}

fn seed() -> FakeConfig {
    FakeConfig::default()
        .group("grp_eng", "Engineering")
        .group("grp_sales", "Sales")
        .user("u1", "jane.doe@example.com", &["grp_eng"])
        .user("u2", "bob@example.com", &["grp_sales"])
}

/// Status and Zoom's `{code, message}`.
async fn zoom_error(response: Response) -> (u16, i64, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error body is JSON");
    let code = body["code"].as_i64().expect("code");
    (
        status,
        code,
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn zoom_fake_move_changes_memberships_and_state_shows_it() {
    let api = Api::start(seed()).await;
    let moved = api.move_user("grp_eng", "u1", "grp_sales").await;
    assert_eq!(moved.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&moved, "x-ratelimit-category"), Some("Medium"));

    let user: Value = api
        .get("/v2/users/JANE.DOE@example.com")
        .await
        .json()
        .await
        .expect("user");
    assert_eq!(user["id"], "u1");
    assert_eq!(user["group_ids"], json!(["grp_sales"]));
    assert!(
        user.get("primary_group_id").is_none(),
        "Zoom documents none"
    );
    assert_eq!(
        (user["type"].as_i64(), user["status"].as_str()),
        (Some(1), Some("active"))
    );

    let state: Value = reqwest::get(format!("{}/_state", api.fake.base_url()))
        .await
        .expect("state")
        .json()
        .await
        .expect("state JSON");
    assert_eq!(state["groups"][0]["id"], "grp_eng");
    assert_eq!(state["groups"][0]["members"], json!([]));
    assert_eq!(state["groups"][1]["members"], json!(["u1", "u2"]));
    assert_eq!(state["users"][0]["groups"], json!(["grp_sales"]));
    assert_eq!(state["counters"]["medium"]["ok"], 1);
    assert_eq!(state["counters"]["light"]["ok"], 1);
    assert_eq!(state["counters"]["total"]["calls"], 2);
    assert_eq!(api.fake.state().groups[1].members, ["u1", "u2"]);
}

#[tokio::test]
async fn zoom_fake_adds_removes_and_sets_primary() {
    let api = Api::start(seed()).await;
    let body = json!({"members": [{"id": "u2"}, {"email": "JANE.doe@example.com"}]});
    let added = api
        .call(Method::POST, "/v2/groups/grp_eng/members", Some(body))
        .await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let added: Value = added.json().await.expect("added JSON");
    assert_eq!(added["ids"], "u2,u1");
    let at = added["added_at"].as_str().expect("added_at");
    assert!(OffsetDateTime::parse(at, &Rfc3339).is_ok(), "{at}");

    let primary = json!({"action": "set_primary"});
    let path = "/v2/groups/grp_eng/members/u2";
    let set = api.call(Method::PATCH, path, Some(primary)).await;
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let removed = api
        .call(Method::DELETE, "/v2/groups/grp_sales/members/u2", None)
        .await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&removed, "x-ratelimit-category"), Some("Light"));
    let user = &api.fake.state().users[1];
    assert_eq!(
        (user.groups.clone(), user.primary_group.as_deref()),
        (vec!["grp_eng".to_owned()], Some("grp_eng"))
    );
}

#[tokio::test]
async fn zoom_fake_errors_have_zooms_codes_and_messages() {
    let api = Api::start(seed()).await;
    let cases = [
        (
            api.move_user("grp_nope", "u1", "grp_sales").await,
            404,
            4130,
            "A group with this grp_nope does not exist.",
        ),
        (
            api.move_user("grp_eng", "u1", "grp_nope").await,
            404,
            4130,
            "A group with this grp_nope does not exist.",
        ),
        (
            api.move_user("grp_eng", "ghost", "grp_sales").await,
            404,
            1001,
            "User does not exist: ghost.",
        ),
        (
            api.move_user("grp_sales", "u1", "grp_eng").await,
            404,
            4131,
            "Group member does not exist.",
        ),
        (
            api.call(Method::DELETE, "/v2/groups/grp_sales/members/u1", None)
                .await,
            404,
            4131,
            "Group member does not exist.",
        ),
        (
            api.get("/v2/users/nobody@example.com").await,
            404,
            1001,
            "User does not exist: nobody@example.com.",
        ),
    ];
    for (response, status, code, message) in cases {
        assert_eq!(
            zoom_error(response).await,
            (status, code, message.to_owned())
        );
    }

    let bad_body = api
        .call(
            Method::PATCH,
            "/v2/groups/grp_eng/members/u1",
            Some(json!({"action": "jump"})),
        )
        .await;
    let (status, code, message) = zoom_error(bad_body).await;
    assert_eq!((status, code), (400, 300));
    assert!(!message.is_empty());

    let url = format!("{}/v2/users/u1", api.fake.base_url());
    for request in [api.http.get(&url), api.http.get(&url).bearer_auth("forged")] {
        let refused = request.send().await.expect("answer");
        assert_eq!(
            zoom_error(refused).await,
            (401, 124, "Invalid access token.".to_owned())
        );
    }
    let no_basic = api
        .http
        .post(format!(
            "{}?grant_type=account_credentials&account_id=a",
            api.fake.token_url()
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(no_basic.status(), StatusCode::UNAUTHORIZED);
    let body: Value = no_basic.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_client");
    assert!(body["reason"].as_str().is_some_and(|r| !r.is_empty()));

    let unknown = api.get("/v2/meetings").await;
    assert_eq!(zoom_error(unknown).await.0, 404);
}

#[tokio::test]
async fn zoom_fake_pages_group_members_with_next_page_token() {
    let mut config = FakeConfig::default()
        .group("grp_big", "Big")
        .group("grp_other", "Other");
    for i in 0..7 {
        config = config.user(&format!("u{i}"), &format!("u{i}@example.com"), &["grp_big"]);
    }
    let api = Api::start(config).await;
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    let mut first_token = String::new();
    loop {
        let path = format!("/v2/groups/grp_big/members?page_size=3&next_page_token={token}");
        let page: Value = api.get(&path).await.json().await.expect("page JSON");
        pages += 1;
        assert_eq!(
            (page["page_size"].as_u64(), page["total_records"].as_u64()),
            (Some(3), Some(7))
        );
        for member in page["members"].as_array().expect("members") {
            assert_eq!(member["type"], 1);
            assert!(member.get("primary_group").is_none(), "Zoom documents none");
            seen.push(member["id"].as_str().expect("id").to_owned());
        }
        token = page["next_page_token"].as_str().expect("token").to_owned();
        if pages == 1 {
            first_token = token.clone();
        }
        if token.is_empty() {
            break;
        }
        assert!(pages < 5, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["u0", "u1", "u2", "u3", "u4", "u5", "u6"]);

    // A made-up token, and a real one used on another group's listing.
    for stale in ["made-up", first_token.as_str()] {
        let path = format!("/v2/groups/grp_other/members?next_page_token={stale}");
        let (status, code, _) = zoom_error(api.get(&path).await).await;
        assert_eq!((status, code), (400, 300), "token {stale:?}");
    }

    let groups: Value = api
        .get("/v2/groups")
        .await
        .json()
        .await
        .expect("groups JSON");
    assert_eq!(groups["total_records"], 2);
    assert_eq!(
        groups["groups"][0],
        json!({"id": "grp_big", "name": "Big", "total_members": 7})
    );
}

/// Fires `count` concurrent `GET /groups` (Medium) at the start of a fresh
/// window; (answers 200, the 429 responses).
async fn medium_burst(api: &Api, count: usize) -> (usize, Vec<Response>) {
    tokio::time::sleep(api.fake.next_window_in() + Duration::from_millis(20)).await;
    let calls = (0..count).map(|_| api.get("/v2/groups"));
    let answers = futures_util::future::join_all(calls).await;
    let ok = answers
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    let limited: Vec<Response> = answers
        .into_iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(ok + limited.len(), count, "every answer is 200 or 429");
    (ok, limited)
}

#[tokio::test]
async fn zoom_fake_per_second_limit_refuses_exactly_the_excess() {
    let api = Api::start(seed()).await;
    // A burst that straddles a window boundary (a very slow machine) sees
    // fewer 429s, never more; a later one starting at a window's start
    // sees exactly the excess.
    let mut limited = Vec::new();
    for _ in 0..3 {
        let (ok, refused) = medium_burst(&api, 25).await;
        assert!(
            refused.len() <= 5 && ok >= 20,
            "{ok} ok, {} refused",
            refused.len()
        );
        limited = refused;
        if limited.len() == 5 {
            break;
        }
    }
    assert_eq!(limited.len(), 5, "25 Medium calls against 20/s");
    for response in limited {
        assert_eq!(header(&response, "x-ratelimit-category"), Some("Medium"));
        assert_eq!(header(&response, "x-ratelimit-type"), Some("QPS"));
        assert_eq!(header(&response, "x-ratelimit-limit"), Some("20"));
        assert_eq!(header(&response, "x-ratelimit-remaining"), Some("0"));
        let (status, code, message) = zoom_error(response).await;
        assert_eq!((status, code), (429, 429));
        assert_eq!(
            message,
            "You have reached the maximum per-second rate limit for this API. Try again later."
        );
    }
    let counters = api.fake.state().counters;
    assert!(counters.medium.limited_qps >= 5);
    assert_eq!(counters.light.calls, 0);
}

#[tokio::test]
async fn zoom_fake_light_429_leaves_medium_calls_alone() {
    let mut config = seed();
    config.limits = Limits {
        light: Some(1),
        ..Limits::unlimited()
    };
    let api = Api::start(config).await;
    let mut light_429 = None;
    for _ in 0..5 {
        let answer = api.get("/v2/users/u1").await;
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            light_429 = Some(answer);
            break;
        }
    }
    let light_429 = light_429.expect("a second Light call in one window is refused");
    assert_eq!(header(&light_429, "x-ratelimit-category"), Some("Light"));
    assert_eq!(header(&light_429, "x-ratelimit-limit"), Some("1"));
    for _ in 0..5 {
        let medium = api.get("/v2/groups").await;
        assert_eq!(medium.status(), StatusCode::OK);
        assert_eq!(header(&medium, "x-ratelimit-category"), Some("Medium"));
    }
    assert_eq!(api.fake.state().counters.medium.limited_qps, 0);
}

#[tokio::test]
async fn zoom_fake_daily_limit_sends_retry_after_at_next_utc_midnight() {
    let mut config = seed();
    config.limits = Limits::unlimited();
    config.limits.daily.medium = Some(2);
    let api = Api::start(config).await;
    let before = OffsetDateTime::now_utc();
    for _ in 0..2 {
        assert_eq!(api.get("/v2/groups").await.status(), StatusCode::OK);
    }
    let refused = api.get("/v2/groups").await;
    let after = OffsetDateTime::now_utc();
    assert_eq!(header(&refused, "x-ratelimit-type"), Some("Daily-limit"));
    assert_eq!(header(&refused, "x-ratelimit-category"), Some("Medium"));
    assert_eq!(header(&refused, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&refused, "x-ratelimit-remaining"), Some("0"));
    let retry_after = header(&refused, "retry-after")
        .expect("Retry-After")
        .to_owned();
    let at = OffsetDateTime::parse(&retry_after, &Rfc3339).expect("ISO-8601 date-time");
    let midnight_after = |t: OffsetDateTime| {
        t.date()
            .next_day()
            .expect("a next day")
            .midnight()
            .assume_utc()
    };
    assert!(
        at == midnight_after(before) || at == midnight_after(after),
        "{retry_after} is the next midnight UTC"
    );
    assert!(retry_after.ends_with("T00:00:00Z"), "{retry_after}");
    let (status, code, message) = zoom_error(refused).await;
    assert_eq!((status, code), (429, 429));
    let documented = Fixture::load("zoom/error.429.daily.json");
    assert_eq!(
        message,
        documented.response_body()["message"].as_str().unwrap()
    );
    assert_eq!(
        api.get("/v2/users/u1").await.status(),
        StatusCode::OK,
        "Light has no daily limit"
    );
    assert_eq!(api.fake.state().counters.medium.limited_daily, 1);
}

#[tokio::test]
async fn zoom_fake_scripted_fault_fires_exactly_times() {
    let mut config = seed();
    config.faults = FaultsConfig {
        script: vec![
            ScriptedFault {
                method: Some("GET".into()),
                path_prefix: Some("/v2/users/u1".into()),
                status: 503,
                times: 2,
                code: None,
                message: None,
                category: None,
                retry_after: None,
                limit_type: None,
            },
            ScriptedFault {
                method: Some("PATCH".into()),
                path_prefix: None,
                status: 429,
                times: 1,
                code: None,
                message: None,
                category: Some(Category::Heavy),
                retry_after: Some("3".into()),
                limit_type: None,
            },
        ],
        ..FaultsConfig::default()
    };
    let api = Api::start(config).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = api.get("/v2/users/u1").await;
        assert_eq!(header(&answer, "retry-after"), None, "none unless scripted");
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(statuses, [503, 503, 200, 200]);
    assert_eq!(api.get("/v2/users/u2").await.status(), StatusCode::OK);

    let limited = api.move_user("grp_eng", "u1", "grp_sales").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&limited, "x-ratelimit-category"), Some("Heavy"));
    assert_eq!(header(&limited, "x-ratelimit-type"), Some("QPS"));
    assert_eq!(header(&limited, "x-ratelimit-limit"), Some("10"));
    assert_eq!(header(&limited, "retry-after"), Some("3"), "as scripted");
    assert_eq!(
        api.fake.state().users[0].groups,
        ["grp_eng"],
        "a faulted call changes nothing"
    );
    let retried = api.move_user("grp_eng", "u1", "grp_sales").await;
    assert_eq!(retried.status(), StatusCode::NO_CONTENT);
    let counters = api.fake.state().counters;
    assert_eq!((counters.light.faults, counters.medium.faults), (2, 1));

    api.fake.reset();
    let state = api.fake.state();
    assert_eq!(
        state.users[0].groups,
        ["grp_eng"],
        "reset restores the seed"
    );
    assert_eq!(state.counters.total.calls, 0);
    assert_eq!(
        api.get("/v2/users/u1").await.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "and the script"
    );
}

#[tokio::test]
async fn zoom_fake_faults_scripted_at_run_time_answer_zooms_body_until_cleared() {
    let api = Api::start(seed()).await;
    api.fake
        .script(ScriptedFault::new("PATCH", 503, 0, "busy").times(1));
    api.fake.script_until_cleared(ScriptedFault::new(
        "PATCH",
        404,
        4130,
        "Group does not exist: grp_sales.",
    ));
    api.fake.script_for(
        ScriptedFault::new("GET", 500, 500, "down").path_prefix("/v2/users/"),
        Duration::from_secs(60),
    );
    let busy = api.move_user("grp_eng", "u1", "grp_sales").await;
    assert_eq!(zoom_error(busy).await, (503, 0, "busy".into()));
    for _ in 0..2 {
        let gone = api.move_user("grp_eng", "u1", "grp_sales").await;
        assert_eq!(
            zoom_error(gone).await,
            (404, 4130, "Group does not exist: grp_sales.".into())
        );
    }
    assert_eq!(zoom_error(api.get("/v2/users/u1").await).await.0, 500);
    assert_eq!(api.get("/v2/groups").await.status(), StatusCode::OK);
    assert_eq!(api.fake.state().users[0].groups, ["grp_eng"]);

    api.fake.clear_faults();
    let moved = api.move_user("grp_eng", "u1", "grp_sales").await;
    assert_eq!(moved.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.get("/v2/users/u1").await.status(), StatusCode::OK);
    let counters = api.fake.counters();
    assert_eq!((counters.medium.faults, counters.light.faults), (3, 1));
    assert!(api.fake.first_to_last() > Duration::ZERO);
    api.fake.reset();
    assert_eq!(api.fake.first_to_last(), Duration::ZERO);
}

#[tokio::test]
async fn zoom_fake_hung_call_answers_504() {
    let mut config = seed();
    config.faults = FaultsConfig {
        timeout_rate: 1.0,
        timeout_ms: 50,
        ..FaultsConfig::default()
    };
    let api = Api::start(config).await;
    let (status, code, _) = zoom_error(api.get("/v2/users/u1").await).await;
    assert_eq!((status, code), (504, 504));
    let granted = token(&api.http, &api.fake).await;
    assert!(!granted.is_empty(), "the token endpoint is never faulted");
}

#[tokio::test]
async fn zoom_fake_limits_change_at_run_time() {
    let api = Api::start(seed()).await;
    api.fake.set_limits(Limits {
        medium: Some(0),
        ..Limits::unlimited()
    });
    assert_eq!(
        api.get("/v2/groups").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    api.fake.set_limits(Limits::unlimited());
    assert_eq!(api.get("/v2/groups").await.status(), StatusCode::OK);
    api.fake.shutdown().await;
}

#[tokio::test]
async fn zoom_fake_refuses_bad_seeds() {
    let broken = FakeConfig::default().user("u1", "a@example.com", &["grp_missing"]);
    let refused = fake::spawn(broken, "127.0.0.1:0".parse().expect("address")).await;
    assert!(matches!(
        refused,
        Err(SpawnError::Seed(SeedProblem::UnknownGroup { .. }))
    ));
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Every field of `ours` is in Zoom's documented `theirs`, with the same
/// JSON type, recursively (the first item of an array stands for all).
fn same_shape(ours: &Value, theirs: &Value, at: &str) {
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) => {
            for (key, value) in o {
                let documented = t
                    .get(key)
                    .unwrap_or_else(|| panic!("{at}.{key} is not in Zoom's documented answer"));
                same_shape(value, documented, &format!("{at}.{key}"));
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            if let (Some(o), Some(t)) = (o.first(), t.first()) {
                same_shape(o, t, &format!("{at}[0]"));
            }
        }
        (o, t) => assert_eq!(
            std::mem::discriminant(o),
            std::mem::discriminant(t),
            "{at}: {o} is not of the documented type of {t}"
        ),
    }
}

/// zoom-fake answers as Zoom's own documents show (fixtures/vendor/zoom):
/// the same fields with the same types, the same statuses, codes, messages
/// and rate-limit headers. The success bodies have exactly the documented
/// fields, except Get a user, of whose many documented fields the fake
/// sends the ones the daemon reads and a few more, none undocumented.
#[tokio::test]
async fn zoom_fake_answers_have_zooms_documented_shapes() {
    let api = Api::start(seed()).await;
    let documented = |name: &str| Fixture::load(&format!("zoom/{name}"));
    let body = |name: &str| documented(name).response_body().clone();

    let user: Value = api.get("/v2/users/u1").await.json().await.expect("user");
    same_shape(&user, &body("users.get.200.json"), "user");
    for read in ["id", "email", "group_ids"] {
        assert!(user.get(read).is_some(), "the daemon reads {read}");
    }
    let members: Value = api
        .get("/v2/groups/grp_eng/members?page_size=1")
        .await
        .json()
        .await
        .expect("members");
    let members_doc = body("groups.members.list.200.json");
    assert_eq!(keys(&members), keys(&members_doc));
    assert_eq!(
        keys(&members["members"][0]),
        keys(&members_doc["members"][0])
    );
    same_shape(&members, &members_doc, "members");
    let groups: Value = api.get("/v2/groups").await.json().await.expect("groups");
    let groups_doc = body("groups.list.200.json");
    assert_eq!(keys(&groups), keys(&groups_doc));
    assert_eq!(keys(&groups["groups"][0]), keys(&groups_doc["groups"][0]));
    same_shape(&groups, &groups_doc, "groups");

    let add = documented("groups.members.add.request.json");
    let mut request = add.request().body.clone().expect("documented request");
    request["members"] = json!([{"id": "u2", "email": "bob@example.com"}]);
    same_shape(
        &request,
        add.request().body.as_ref().unwrap(),
        "add request",
    );
    let added = api
        .call(Method::POST, "/v2/groups/grp_eng/members", Some(request))
        .await;
    let added_doc = documented("groups.members.add.201.json");
    assert_eq!(Some(added.status().as_u16()), added_doc.response().status);
    let added: Value = added.json().await.expect("added");
    assert_eq!(keys(&added), keys(added_doc.response_body()));
    same_shape(&added, added_doc.response_body(), "added");

    for (name, path) in [
        (
            "groups.members.update.move.json",
            "/v2/groups/grp_eng/members/u1",
        ),
        (
            "groups.members.update.set_primary.json",
            "/v2/groups/grp_sales/members/u1",
        ),
    ] {
        let fixture = documented(name);
        let mut request = fixture.request().body.clone().expect("documented request");
        if request.get("target_group_id").is_some() {
            request["target_group_id"] = json!("grp_sales");
        }
        let answer = api.call(Method::PATCH, path, Some(request)).await;
        assert_eq!(
            Some(answer.status().as_u16()),
            fixture.response().status,
            "{name}"
        );
    }
    let removed = api
        .call(Method::DELETE, "/v2/groups/grp_eng/members/u2", None)
        .await;
    let removed_doc = documented("groups.members.delete.204.json");
    assert_eq!(
        Some(removed.status().as_u16()),
        removed_doc.response().status
    );

    let token: Value = api
        .http
        .post(format!(
            "{}?grant_type=account_credentials&account_id=acct",
            api.fake.token_url()
        ))
        .basic_auth("client", Some("secret"))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token JSON");
    let token_doc = body("oauth.token.200.json");
    same_shape(&token, &token_doc, "token");
    for read in ["access_token", "token_type", "expires_in"] {
        assert!(token.get(read).is_some(), "{read}");
    }
}

/// zoom-fake's error answers are Zoom's documented ones: status, code and
/// message (the documents' placeholders filled in).
#[tokio::test]
async fn zoom_fake_errors_are_zooms_documented_ones() {
    let api = Api::start(seed()).await;
    let cases = [
        (
            "error.1001.json",
            api.get("/v2/users/ghost").await,
            "$userId",
            "ghost",
        ),
        (
            "error.4130.json",
            api.get("/v2/groups/grp_nope/members").await,
            "{groupId}",
            "grp_nope",
        ),
        (
            "error.4131.json",
            api.call(Method::DELETE, "/v2/groups/grp_sales/members/u1", None)
                .await,
            "",
            "",
        ),
        (
            "error.300.json",
            api.call(
                Method::PATCH,
                "/v2/groups/grp_eng/members/u1",
                Some(json!({"action": "move", "target_group_id": ""})),
            )
            .await,
            "",
            "",
        ),
    ];
    for (name, response, placeholder, value) in cases {
        let fixture = Fixture::load(&format!("zoom/{name}"));
        let documented = fixture.response_body();
        let message = documented["message"]
            .as_str()
            .unwrap()
            .replace(placeholder, value);
        let expected = (
            fixture.response().status.unwrap(),
            documented["code"].as_i64().unwrap(),
            message,
        );
        assert_eq!(zoom_error(response).await, expected, "{name}");
    }

    // The per-second 429: documented status, code, message and headers.
    api.fake.set_limits(Limits {
        light: Some(1),
        ..Limits::unlimited()
    });
    let mut refused = None;
    for _ in 0..5 {
        let answer = api.get("/v2/users/u1").await;
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("a 429 within five calls at 1/s");
    let documented = Fixture::load("zoom/error.429.qps.json");
    for name in [
        "x-ratelimit-category",
        "x-ratelimit-type",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
    ] {
        assert!(header(&refused, name).is_some(), "{name}");
    }
    assert_eq!(
        header(&refused, "x-ratelimit-type"),
        documented.response().header("x-ratelimit-type")
    );
    let (status, code, message) = zoom_error(refused).await;
    let body = documented.response_body();
    assert_eq!(
        (status, code, message.as_str()),
        (
            429,
            body["code"].as_i64().unwrap(),
            body["message"].as_str().unwrap()
        )
    );
}

/// The request log: what a test asserts Zoom received (method, path,
/// query, `Authorization`, body, status), the token call included, in
/// arrival order; `reset` empties it.
#[tokio::test]
async fn the_fake_logs_each_request_with_its_auth_body_and_answer() {
    let api = Api::start(seed()).await;
    assert_eq!(
        api.move_user("grp_eng", "u1", "grp_sales").await.status(),
        204
    );
    assert_eq!(api.get("/v2/users/nobody@example.com").await.status(), 404);

    let all = api.fake.requests();
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(
        (all[0].method.as_str(), all[0].path.as_str()),
        ("POST", "/oauth/token")
    );
    assert_eq!(
        all[0].query.as_deref(),
        Some("grant_type=account_credentials&account_id=acct")
    );
    let calls = api.fake.api_requests();
    assert_eq!(calls.len(), 2);
    let patch = &calls[0];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.path, "/v2/groups/grp_eng/members/u1");
    let bearer = format!("Bearer {}", api.token);
    assert_eq!(patch.header("Authorization"), Some(bearer.as_str()));
    assert_eq!(patch.header("content-type"), Some("application/json"));
    assert_eq!(
        patch.json(),
        Some(json!({"action": "move", "target_group_id": "grp_sales"}))
    );
    assert_eq!(patch.status, Some(204));
    assert_eq!(calls[1].status, Some(404));
    assert_eq!(api.fake.requests_not_kept(), 0);

    api.fake.reset();
    assert!(api.fake.requests().is_empty(), "reset empties the log");
}

/// A scripted 429 may be a daily-limit one, with the `Retry-After` asked.
#[tokio::test]
async fn a_scripted_429_can_be_daily_with_its_retry_after() {
    let api = Api::start(seed()).await;
    let reset = "2026-12-04T00:00:00Z";
    api.fake.script(
        ScriptedFault::new("PATCH", 429, 429, "daily")
            .daily()
            .retry_after(reset),
    );
    let limited = api.move_user("grp_eng", "u1", "grp_sales").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&limited, "x-ratelimit-type"), Some("Daily-limit"));
    assert_eq!(header(&limited, "retry-after"), Some(reset));
    assert_eq!(
        api.fake.state().users[0].groups,
        ["grp_eng"],
        "nothing changed"
    );

    api.fake.script(
        ScriptedFault::new("PATCH", 429, 429, "busy")
            .untyped()
            .retry_after("1"),
    );
    let untyped = api.move_user("grp_eng", "u1", "grp_sales").await;
    assert_eq!(untyped.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&untyped, "x-ratelimit-type"), None, "no type at all");
    assert_eq!(header(&untyped, "retry-after"), Some("1"));
}

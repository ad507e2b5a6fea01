//! `zoom-fake` in-process on 127.0.0.1:0, asked over real HTTP: statuses,
//! Zoom's bodies and the rate-limit headers.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zoom_dept_sync::fake::{
    self, Category, FakeConfig, FakeHandle, FaultsConfig, Limits, ScriptedFault, SeedProblem,
    SpawnError,
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
    assert_eq!(user["primary_group_id"], "grp_sales");
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
            "Group does not exist: grp_nope.",
        ),
        (
            api.move_user("grp_eng", "u1", "grp_nope").await,
            404,
            4130,
            "Group does not exist: grp_nope.",
        ),
        (
            api.move_user("grp_eng", "ghost", "grp_sales").await,
            404,
            1001,
            "User does not exist: ghost.",
        ),
        (
            api.move_user("grp_sales", "u1", "grp_eng").await,
            400,
            4134,
            "The user is not a member of this group.",
        ),
        (
            api.call(Method::DELETE, "/v2/groups/grp_sales/members/u1", None)
                .await,
            404,
            4134,
            "The user is not a member of this group.",
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
            assert_eq!(member["primary_group"], true);
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
    assert_eq!(
        message,
        "You have exceeded the daily rate limit of (2) requests permitted for this particular API. \
         This limit resets at GMT 00:00:00."
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
            },
            ScriptedFault {
                method: Some("PATCH".into()),
                path_prefix: None,
                status: 429,
                times: 1,
                code: None,
                message: None,
                category: Some(Category::Heavy),
            },
        ],
        ..FaultsConfig::default()
    };
    let api = Api::start(config).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(api.get("/v2/users/u1").await.status().as_u16());
    }
    assert_eq!(statuses, [503, 503, 200, 200]);
    assert_eq!(api.get("/v2/users/u2").await.status(), StatusCode::OK);

    let limited = api.move_user("grp_eng", "u1", "grp_sales").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&limited, "x-ratelimit-category"), Some("Heavy"));
    assert_eq!(header(&limited, "x-ratelimit-type"), Some("QPS"));
    assert_eq!(header(&limited, "x-ratelimit-limit"), Some("10"));
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

    let dir = tempfile::tempdir().expect("temp dir");
    let seed = dir.path().join("seed.toml");
    std::fs::write(&seed, "[[groups]]\nid = \"g\"\nnmae = \"G\"\n").expect("write seed");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_zoom-fake"))
        .arg("--seed")
        .arg(&seed)
        .output()
        .expect("zoom-fake runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("nmae") && stderr.contains("seed.toml"),
        "{stderr}"
    );
}

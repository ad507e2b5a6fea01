//! A stateful Zoom for wiremock: users with their groups, moves that only
//! work from a group the user is in, and scripted failures. Tests that care
//! about where each user *ends* use it instead of fixed answers.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{TOKEN_PATH, zoom_error};

#[derive(Default)]
struct State {
    /// id → (email, groups)
    users: HashMap<String, (String, BTreeSet<String>)>,
    /// Answers given instead of the real one, per method, in order.
    failures: HashMap<String, VecDeque<ResponseTemplate>>,
    /// Failures for every call of a method from now on (e.g. 403 always).
    always: HashMap<String, ResponseTemplate>,
    /// Failures for every call of a method until an instant.
    until: HashMap<String, (std::time::Instant, ResponseTemplate)>,
    /// When each API call came.
    times: Vec<std::time::Instant>,
}

#[derive(Clone, Default)]
pub struct FakeZoom {
    state: Arc<Mutex<State>>,
    delay: Duration,
}

impl FakeZoom {
    pub fn with_delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// Answers every API path of `zoom` (not the token endpoint).
    pub async fn mount(&self, zoom: &MockServer) {
        Mock::given(ApiPath)
            .respond_with(self.clone())
            .mount(zoom)
            .await;
    }

    pub fn add_user(&self, id: &str, email: &str, groups: &[&str]) {
        let groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self.lock()
            .users
            .insert(id.to_owned(), (email.to_owned(), groups));
    }

    /// The next `method` call answers `answer` instead (queued in order).
    pub fn fail_next(&self, method: &str, answer: ResponseTemplate) {
        self.lock()
            .failures
            .entry(method.to_owned())
            .or_default()
            .push_back(answer);
    }

    /// Every `method` call answers `answer` until [`FakeZoom::heal`].
    pub fn fail_always(&self, method: &str, answer: ResponseTemplate) {
        self.lock().always.insert(method.to_owned(), answer);
    }

    /// Every `method` call answers `answer` for the next `period`.
    pub fn fail_for(&self, method: &str, answer: ResponseTemplate, period: Duration) {
        let until = std::time::Instant::now() + period;
        self.lock().until.insert(method.to_owned(), (until, answer));
    }

    pub fn heal(&self) {
        self.lock().always.clear();
    }

    /// The user's groups now.
    pub fn groups_of(&self, id: &str) -> Vec<String> {
        self.lock()
            .users
            .get(id)
            .map(|(_, g)| g.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Time from the first API call to the last.
    pub fn first_to_last(&self) -> Duration {
        let state = self.lock();
        match (state.times.first(), state.times.last()) {
            (Some(first), Some(last)) => last.duration_since(*first),
            _ => Duration::ZERO,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn answer(&self, request: &Request) -> ResponseTemplate {
        let method = request.method.as_str().to_owned();
        let mut state = self.lock();
        state.times.push(std::time::Instant::now());
        if let Some(answer) = state.always.get(&method) {
            return answer.clone();
        }
        if let Some((until, answer)) = state.until.get(&method)
            && std::time::Instant::now() < *until
        {
            return answer.clone();
        }
        if let Some(answer) = state.failures.get_mut(&method).and_then(|q| q.pop_front()) {
            return answer;
        }
        let segments: Vec<String> = request
            .url
            .path_segments()
            .map(|s| s.map(str::to_owned).collect())
            .unwrap_or_default();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["v2", "users", who]) => state.get_user(who),
            ("PATCH", ["v2", "groups", from, "members", id]) => {
                let body: serde_json::Value = request.body_json().unwrap_or_default();
                let to = body["target_group_id"].as_str().unwrap_or_default();
                state.move_member(from, id, to)
            }
            ("POST", ["v2", "groups", group, "members"]) => {
                let body: serde_json::Value = request.body_json().unwrap_or_default();
                let id = body["members"][0]["id"].as_str().unwrap_or_default();
                state.add_member(group, id)
            }
            ("DELETE", ["v2", "groups", group, "members", id]) => state.remove_member(group, id),
            _ => ResponseTemplate::new(404),
        }
    }
}

impl State {
    fn get_user(&self, who: &str) -> ResponseTemplate {
        let found = self
            .users
            .iter()
            .find(|(id, (email, _))| id.as_str() == who || email.eq_ignore_ascii_case(who));
        match found {
            Some((id, (email, groups))) => {
                ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "id": id, "email": email, "group_ids": groups,
                }))
            }
            None => zoom_error(404, 1001, &format!("User does not exist: {who}.")),
        }
    }

    fn move_member(&mut self, from: &str, id: &str, to: &str) -> ResponseTemplate {
        match self.users.get_mut(id) {
            Some((_, groups)) if groups.contains(from) => {
                groups.remove(from);
                groups.insert(to.to_owned());
                ResponseTemplate::new(204)
            }
            Some(_) => zoom_error(400, 4134, "The user is not a member of this group."),
            None => zoom_error(404, 1001, &format!("User does not exist: {id}.")),
        }
    }

    fn add_member(&mut self, group: &str, id: &str) -> ResponseTemplate {
        match self.users.get_mut(id) {
            Some((_, groups)) => {
                groups.insert(group.to_owned());
                ResponseTemplate::new(201)
            }
            None => zoom_error(404, 1001, &format!("User does not exist: {id}.")),
        }
    }

    fn remove_member(&mut self, group: &str, id: &str) -> ResponseTemplate {
        let removed = self
            .users
            .get_mut(id)
            .is_some_and(|(_, groups)| groups.remove(group));
        if removed {
            ResponseTemplate::new(204)
        } else {
            zoom_error(404, 4134, "The user is not a member of this group.")
        }
    }
}

impl Respond for FakeZoom {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.answer(request).set_delay(self.delay)
    }
}

/// Matches every request but the token endpoint's.
struct ApiPath;

impl wiremock::Match for ApiPath {
    fn matches(&self, request: &Request) -> bool {
        request.url.path() != TOKEN_PATH
    }
}

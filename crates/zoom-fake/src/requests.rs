//! What the fake received, in order: a test asserts what Zoom would have
//! seen (method, path, query, `Authorization`, body) on the same stand-in
//! that keeps the directory, instead of a second, stateless one.

/// The log keeps the first this many requests: a benchmark's hundred
/// thousand calls must not grow it without bound; a test makes far fewer.
pub const KEPT: usize = 10_000;

/// One request as it arrived, and the status it was answered with (`None`
/// while the fake is still answering: a slow call is in the log at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Names in lower case, in the order they came.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status: Option<u16>,
    /// When it arrived: a test measures a client's pace from these.
    pub at: std::time::Instant,
}

impl ReceivedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A call to Zoom's API (`/v2/...`), not the token endpoint or the
    /// fake's own `/_state`.
    pub fn is_api(&self) -> bool {
        self.path.starts_with("/v2/")
    }
}

/// The first [`KEPT`] requests, and how many came after.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    kept: Vec<ReceivedRequest>,
    not_kept: u64,
    /// Bumped by [`RequestLog::clear`], so an answer to a request from
    /// before it does not land on another entry.
    generation: u64,
}

/// Where a recorded request is, to add its status when it is answered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    generation: u64,
    index: usize,
}

impl RequestLog {
    /// Logs a request on arrival.
    pub(crate) fn record(&mut self, request: ReceivedRequest) -> Option<Slot> {
        if self.kept.len() >= KEPT {
            self.not_kept += 1;
            return None;
        }
        self.kept.push(request);
        Some(Slot {
            generation: self.generation,
            index: self.kept.len() - 1,
        })
    }

    /// The status the request in `slot` was answered with.
    pub(crate) fn answered(&mut self, slot: Slot, status: u16) {
        if slot.generation == self.generation
            && let Some(request) = self.kept.get_mut(slot.index)
        {
            request.status = Some(status);
        }
    }

    pub(crate) fn kept(&self) -> Vec<ReceivedRequest> {
        self.kept.clone()
    }

    pub(crate) fn not_kept(&self) -> u64 {
        self.not_kept
    }

    pub(crate) fn clear(&mut self) {
        self.kept.clear();
        self.not_kept = 0;
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str) -> ReceivedRequest {
        ReceivedRequest {
            method: "PATCH".into(),
            path: path.into(),
            query: None,
            headers: vec![("authorization".into(), "Bearer t".into())],
            body: br#"{"action":"move"}"#.to_vec(),
            status: None,
            at: std::time::Instant::now(),
        }
    }

    #[test]
    fn a_header_is_found_in_any_case_and_a_json_body_parses() {
        let r = request("/v2/groups/g/members/u");
        assert_eq!(r.header("Authorization"), Some("Bearer t"));
        assert_eq!(r.header("content-type"), None);
        assert_eq!(r.json(), Some(serde_json::json!({"action": "move"})));
        assert!(r.is_api());
        assert!(!request("/oauth/token").is_api());
    }

    #[test]
    fn the_log_keeps_the_first_requests_and_counts_the_rest() {
        let mut log = RequestLog::default();
        for _ in 0..KEPT + 3 {
            log.record(request("/v2/users/u"));
        }
        assert_eq!((log.kept().len(), log.not_kept()), (KEPT, 3));
        log.clear();
        assert_eq!((log.kept().len(), log.not_kept()), (0, 0));
    }

    #[test]
    fn an_answer_lands_on_its_request_and_not_after_a_clear() {
        let mut log = RequestLog::default();
        let first = log.record(request("/v2/users/a")).expect("kept");
        let second = log.record(request("/v2/users/b")).expect("kept");
        log.answered(second, 404);
        assert_eq!(log.kept()[0].status, None, "still in flight");
        assert_eq!(log.kept()[1].status, Some(404));
        log.clear();
        let third = log.record(request("/v2/users/c")).expect("kept");
        log.answered(first, 204);
        assert_eq!(log.kept()[0].status, None, "the old answer is dropped");
        log.answered(third, 204);
        assert_eq!(log.kept()[0].status, Some(204));
    }
}

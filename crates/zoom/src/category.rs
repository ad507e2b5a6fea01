//! Zoom's rate-limit categories. Zoom counts calls per account and per
//! category: a 429 in one category says nothing about another, so each has
//! its own budget here. The API reference labels every endpoint.

use std::fmt;

use reqwest::header::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Light,
    Medium,
    Heavy,
}

/// Which limit a 429 says was hit (`X-RateLimit-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitType {
    /// The per-second limit: others on the account, or we, went too fast.
    PerSecond,
    /// The daily limit: nothing helps before it resets.
    Daily,
    /// A lock on one resource (Zoom's rate-limits page: "Concurrent
    /// requests to a single resource may fail with a 429 HTTP status code.
    /// For example: Too many concurrent requests. …"). Not the account's
    /// limit: it says nothing about the category's rate.
    PerResource,
    /// A 429 without the header.
    Unknown,
}

impl Category {
    pub const ALL: [Category; 3] = [Category::Light, Category::Medium, Category::Heavy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Light => "light",
            Self::Medium => "medium",
            Self::Heavy => "heavy",
        }
    }

    /// `X-RateLimit-Category` (`Light`, `Medium`, `Heavy`; Zoom's
    /// "Resource-intensive" calls share the Heavy budget).
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get("x-ratelimit-category")?.to_str().ok()?.trim();
        match value.to_ascii_lowercase().as_str() {
            "light" => Some(Self::Light),
            "medium" => Some(Self::Medium),
            "heavy" | "resource-intensive" => Some(Self::Heavy),
            _ => None,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl LimitType {
    /// `X-RateLimit-Type`: `QPS` or `Daily-limit`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let value = headers
            .get("x-ratelimit-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase());
        match value.as_deref() {
            Some("qps") => Self::PerSecond,
            Some(v) if v.starts_with("daily") => Self::Daily,
            _ => Self::Unknown,
        }
    }

    /// The limit a 429 names: `X-RateLimit-Type` when present; without it,
    /// Zoom's message for a lock on one resource (it documents no code or
    /// header for that answer, only the text: fixture
    /// `zoom/error.429.concurrent.json`).
    /// Only Zoom's own JSON `message` counts (`from_zoom`): a proxy's 429
    /// page that mentions "concurrent connections" is no per-user lock.
    /// Zoom's two documented lock texts: "Too many concurrent requests. …"
    /// and "Too many requests submitted to … of this user".
    pub fn from_answer(headers: &HeaderMap, message: &str, from_zoom: bool) -> Self {
        let lowered = message.to_ascii_lowercase();
        let lock = lowered.contains("concurrent") || lowered.contains("this user");
        match Self::from_headers(headers) {
            Self::Unknown if from_zoom && lock => Self::PerResource,
            named => named,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerSecond => "per_second",
            Self::Daily => "daily",
            Self::PerResource => "per_resource",
            Self::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn zoom_headers_name_the_category_and_the_limit() {
        let h = headers(&[
            ("x-ratelimit-category", "Medium"),
            ("x-ratelimit-type", "QPS"),
        ]);
        assert_eq!(Category::from_headers(&h), Some(Category::Medium));
        assert_eq!(LimitType::from_headers(&h), LimitType::PerSecond);
        let h = headers(&[
            ("x-ratelimit-category", "Resource-intensive"),
            ("x-ratelimit-type", "Daily-limit"),
        ]);
        assert_eq!(Category::from_headers(&h), Some(Category::Heavy));
        assert_eq!(LimitType::from_headers(&h), LimitType::Daily);
    }

    #[test]
    fn odd_or_missing_headers_name_nothing() {
        let h = headers(&[("x-ratelimit-category", "Ultra"), ("x-ratelimit-type", "")]);
        assert_eq!(Category::from_headers(&h), None);
        assert_eq!(LimitType::from_headers(&h), LimitType::Unknown);
        assert_eq!(Category::from_headers(&HeaderMap::new()), None);
    }

    /// Zoom's documented 429 answers (fixtures/vendor/zoom): per second
    /// and daily by their headers, a lock on one user by its message only.
    #[test]
    fn each_documented_429_names_its_limit() {
        for (name, category, limit) in [
            (
                "error.429.qps.json",
                Some(Category::Medium),
                LimitType::PerSecond,
            ),
            (
                "error.429.daily.json",
                Some(Category::Heavy),
                LimitType::Daily,
            ),
            ("error.429.concurrent.json", None, LimitType::PerResource),
        ] {
            let fixture = zds_vendor_fixtures::Fixture::load(&format!("zoom/{name}"));
            let response = fixture.response();
            assert_eq!(response.status, Some(429), "{name}");
            let pairs: Vec<(&'static str, &str)> = ["x-ratelimit-category", "x-ratelimit-type"]
                .into_iter()
                .filter_map(|h| response.header(h).map(|v| (h, v)))
                .collect();
            let h = headers(&pairs);
            let message = fixture.response_body()["message"].as_str().unwrap();
            assert_eq!(Category::from_headers(&h), category, "{name}");
            assert_eq!(LimitType::from_answer(&h, message, true), limit, "{name}");
        }
        // The same words from a proxy (not Zoom's JSON) are no lock.
        let proxy = "429 Too many concurrent connections";
        assert_eq!(
            LimitType::from_answer(&HeaderMap::new(), proxy, false),
            LimitType::Unknown
        );
        let presence = "Too many requests submitted to update the presence status of this user.";
        assert_eq!(
            LimitType::from_answer(&HeaderMap::new(), presence, true),
            LimitType::PerResource
        );
    }
}

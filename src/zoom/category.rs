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

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerSecond => "per_second",
            Self::Daily => "daily",
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
}

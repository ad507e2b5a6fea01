//! The receiver's own metrics, on its own `/metrics`: it may run without the
//! consumer (`ingest`), and beside it (`run --with-ingest`) on another port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// How a request ended: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accepted,
    Duplicate,
    BadSignature,
    Invalid,
    TooLarge,
    Unavailable,
    /// Signed and valid, but nothing to do (BambooHR: no department change).
    Ignored,
    /// The HR API refused the lookup (a 4xx), or its data is no valid event.
    Rejected,
}

impl Answer {
    pub fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::BadSignature => "bad_signature",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
            Self::Ignored => "ignored",
            Self::Rejected => "rejected",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The endpoint: `events` for `POST /v1/events`, `bamboohr` for
    /// `POST /v1/bamboohr`.
    source: &'static str,
    result: &'static str,
}

pub struct IngestMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
}

impl IngestMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("zoom_dept_sync");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "ingest_requests",
            "Webhook requests by source and result",
            requests.clone(),
        );
        Self { registry, requests }
    }

    pub fn count(&self, source: &'static str, answer: Answer) {
        self.requests
            .get_or_create(&RequestLabels {
                source,
                result: answer.label(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

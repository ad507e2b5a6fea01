//! The daemon's Prometheus metrics, in one place so every name and label is
//! visible together. Served at `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use zds_core::outcome::Outcome;
use zds_zoom::category::LimitType;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub reason: &'static str,
    /// Zoom's error code, or empty when no Zoom answer caused it.
    pub zoom_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: String,
    /// The HTTP status, or `timeout` / `error` when no answer came.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuarantineLabels {
    /// The Zoom error code the dead letters shared.
    pub code: String,
    /// The department most of them were for, or empty.
    pub department: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    /// Zoom's rate-limit category: `light`, `medium`, `heavy`.
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitedLabels {
    pub category: &'static str,
    /// `per_second`, `daily`, or `unknown` (no `X-RateLimit-Type`).
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventKindLabels {
    /// What the event needed: see [`Metrics::calls_per_event`].
    pub kind: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub events_consumed: Counter,
    pub outcomes: Family<OutcomeLabels, Counter>,
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    pub events_in_flight: Gauge,
    pub zoom_calls: Family<CallLabels, Counter>,
    pub zoom_call_seconds: Histogram,
    pub zoom_retries: Counter,
    pub rate_limit_waits: Counter,
    pub broker_reconnects: Counter,
    pub last_success: Gauge<f64, AtomicU64>,
    rate_configured: Family<CategoryLabels, FloatGauge>,
    rate_effective: Family<CategoryLabels, FloatGauge>,
    rate_limited: Family<RateLimitedLabels, Counter>,
    calls_per_event: Family<EventKindLabels, Histogram>,
    /// 1 while consuming is stopped by a quarantine, for its code.
    quarantined: Family<QuarantineLabels, Gauge>,
    /// The labels set to 1 now, so lifting sets the same series to 0.
    quarantine_labels: Mutex<Option<QuarantineLabels>>,
    /// 1 while the brake holds a burst of writes (see [`zds_core::brake`]).
    pub brake_engaged: Gauge,
    /// 1 while `/readyz` answers 200; set from the health state at each
    /// scrape ([`Metrics::set_ready`]), so it never lags it.
    ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("zoom_dept_sync");
        let m = Self {
            events_consumed: Counter::default(),
            outcomes: Family::default(),
            dead_letters: Family::default(),
            events_in_flight: Gauge::default(),
            zoom_calls: Family::default(),
            zoom_call_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            zoom_retries: Counter::default(),
            rate_limit_waits: Counter::default(),
            broker_reconnects: Counter::default(),
            last_success: Gauge::default(),
            rate_configured: Family::default(),
            rate_effective: Family::default(),
            rate_limited: Family::default(),
            calls_per_event: Family::new_with_constructor(|| {
                Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0])
            }),
            quarantined: Family::default(),
            quarantine_labels: Mutex::new(None),
            brake_engaged: Gauge::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        // At 0 from the start, so `increase()` sees the first dead letter.
        m.outcomes.get_or_create_owned(&OutcomeLabels {
            outcome: "dead_lettered",
        });
        m.register_rates(&mut registry);
        registry.register(
            "events_consumed",
            "Deliveries taken from the input queue",
            m.events_consumed.clone(),
        );
        registry.register("events", "Events by final outcome", m.outcomes.clone());
        registry.register(
            "dead_letters",
            "Events dead-lettered, by reason and Zoom error code",
            m.dead_letters.clone(),
        );
        registry.register(
            "events_in_flight",
            "Events being processed now",
            m.events_in_flight.clone(),
        );
        registry.register(
            "zoom_calls",
            "Zoom API requests, by method and status",
            m.zoom_calls.clone(),
        );
        registry.register(
            "zoom_call_duration_seconds",
            "Zoom API request latency",
            m.zoom_call_seconds.clone(),
        );
        registry.register(
            "zoom_retries",
            "Zoom calls retried after a transient failure",
            m.zoom_retries.clone(),
        );
        registry.register(
            "rate_limit_waits",
            "Calls held back by a 429 from Zoom",
            m.rate_limit_waits.clone(),
        );
        registry.register(
            "broker_reconnects",
            "Broker sessions opened after a loss",
            m.broker_reconnects.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last event settled without a dead letter",
            m.last_success.clone(),
        );
        registry.register(
            "quarantined",
            "1 while consuming is stopped because most recent events were dead-lettered with one Zoom code",
            m.quarantined.clone(),
        );
        registry.register(
            "brake_engaged",
            "1 while the brake holds a burst of writes (brake.max_changes / max_removals within window_secs) until `resume`",
            m.brake_engaged.clone(),
        );
        registry.register(
            "ready",
            "1 while /readyz answers 200 (connected, consuming, not paused or quarantined), else 0",
            m.ready.clone(),
        );
        Self { registry, ..m }
    }

    fn register_rates(&self, registry: &mut Registry) {
        registry.register(
            "zoom_rate_limit_per_second",
            "Client-side limit per Zoom rate-limit category, as configured",
            self.rate_configured.clone(),
        );
        registry.register(
            "zoom_rate_effective_per_second",
            "The rate each category paces at now: lowered after a 429 within our limit, won back while calls succeed",
            self.rate_effective.clone(),
        );
        registry.register(
            "zoom_rate_limited",
            "429 answers from Zoom, by the category and the limit they name",
            self.rate_limited.clone(),
        );
        registry.register(
            "zoom_calls_per_event",
            "Zoom API calls one event cost, by what the event needed",
            self.calls_per_event.clone(),
        );
    }

    /// A category's configured rate at start-up (its effective rate too).
    /// Its 429 counters start at 0, so `increase()` sees the first one (a
    /// series that appears at 1 has no increase to Prometheus).
    pub fn rate_configured(&self, category: &'static str, per_second: f64) {
        let labels = CategoryLabels { category };
        self.rate_configured.get_or_create(&labels).set(per_second);
        self.rate_effective.get_or_create(&labels).set(per_second);
        for limit in [
            LimitType::PerSecond,
            LimitType::Daily,
            LimitType::PerResource,
            LimitType::Unknown,
        ] {
            self.rate_limited.get_or_create_owned(&RateLimitedLabels {
                category,
                limit: limit.as_str(),
            });
        }
    }

    pub fn rate_effective(&self, category: &'static str, per_second: f64) {
        self.rate_effective
            .get_or_create(&CategoryLabels { category })
            .set(per_second);
    }

    pub fn rate_limited(&self, category: &'static str, limit: &'static str) {
        self.rate_limited
            .get_or_create(&RateLimitedLabels { category, limit })
            .inc();
    }

    /// One event's Zoom calls. `kind`: `move` (id and a mapped previous
    /// department), `move_by_email` (the same, email only), `lookup` (source
    /// unknown: the user's groups decide), `lookup_by_email`, `no_call`.
    pub fn calls_per_event(&self, kind: &'static str, calls: u32) {
        self.calls_per_event
            .get_or_create(&EventKindLabels { kind })
            .observe(f64::from(calls));
    }

    /// Consuming stopped: `quarantined{code, department}` is 1.
    pub fn quarantine_started(&self, code: i64, department: Option<&str>) {
        let labels = QuarantineLabels {
            code: code.to_string(),
            department: department.unwrap_or_default().to_owned(),
        };
        self.quarantine_lifted();
        self.quarantined.get_or_create(&labels).set(1);
        *self
            .quarantine_labels
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(labels);
    }

    /// The quarantine was lifted: its series goes back to 0 (kept, so a
    /// dashboard shows when it ended). Does nothing when none was in force.
    pub fn quarantine_lifted(&self) {
        let labels = self
            .quarantine_labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(labels) = labels {
            self.quarantined.get_or_create(&labels).set(0);
        }
    }

    /// What `/readyz` would answer now: `ready` is 1 or 0.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Counts an event's final outcome (after it was settled).
    pub fn record_outcome(&self, outcome: &Outcome) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
        match outcome {
            Outcome::DeadLetter(dl) => {
                let zoom_code = dl
                    .zoom
                    .as_ref()
                    .and_then(|z| z.code)
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                self.dead_letters
                    .get_or_create(&DeadLetterLabels {
                        reason: dl.reason.as_str(),
                        zoom_code,
                    })
                    .inc();
            }
            Outcome::Requeue { .. } => {}
            _ => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                self.last_success.set(now.as_secs_f64());
            }
        }
    }

    pub fn record_call(&self, method: &str, status: Option<u16>, timed_out: bool, took: Duration) {
        let status = match (status, timed_out) {
            (Some(s), _) => s.to_string(),
            (None, true) => "timeout".into(),
            (None, false) => "error".into(),
        };
        self.zoom_calls
            .get_or_create(&CallLabels {
                method: method.to_owned(),
                status,
            })
            .inc();
        self.zoom_call_seconds.observe(took.as_secs_f64());
    }

    /// The Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The Zoom client's reports, into this registry.
impl zds_zoom::CallMetrics for Metrics {
    fn call(&self, method: &str, status: Option<u16>, timed_out: bool, elapsed: Duration) {
        self.record_call(method, status, timed_out, elapsed);
    }
    fn retry(&self) {
        self.zoom_retries.inc();
    }
    fn rate_limit_wait(&self) {
        self.rate_limit_waits.inc();
    }
    fn rate_configured(&self, category: &'static str, per_second: f64) {
        Metrics::rate_configured(self, category, per_second);
    }
    fn rate_effective(&self, category: &'static str, per_second: f64) {
        Metrics::rate_effective(self, category, per_second);
    }
    fn rate_limited(&self, category: &'static str, limit: &'static str) {
        Metrics::rate_limited(self, category, limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zds_core::outcome::FailureReason;

    #[test]
    fn encodes_outcomes_and_dead_letters() {
        let m = Metrics::new();
        m.record_outcome(&Outcome::Applied);
        m.record_outcome(&Outcome::Applied);
        m.record_outcome(&Outcome::dead_letter(FailureReason::InvalidPayload, "bad"));
        m.record_call("PATCH", Some(204), false, Duration::from_millis(20));
        let text = m.encode();
        assert!(
            text.contains("zoom_dept_sync_events_total{outcome=\"applied\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "zoom_dept_sync_dead_letters_total{reason=\"invalid_payload\",zoom_code=\"\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("zoom_dept_sync_zoom_calls_total{method=\"PATCH\",status=\"204\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn alerting_counters_start_at_zero() {
        let m = Metrics::new();
        m.rate_configured("medium", 10.0);
        let text = m.encode();
        for series in [
            "zoom_dept_sync_events_total{outcome=\"dead_lettered\"} 0",
            "zoom_dept_sync_zoom_rate_limited_total{category=\"medium\",limit=\"per_second\"} 0",
            "zoom_dept_sync_zoom_rate_limited_total{category=\"medium\",limit=\"daily\"} 0",
            "zoom_dept_sync_zoom_rate_limited_total{category=\"medium\",limit=\"unknown\"} 0",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
        m.record_outcome(&Outcome::dead_letter(FailureReason::InvalidPayload, "bad"));
        m.rate_limited("medium", "daily");
        let text = m.encode();
        for series in [
            "zoom_dept_sync_events_total{outcome=\"dead_lettered\"} 1",
            "zoom_dept_sync_zoom_rate_limited_total{category=\"medium\",limit=\"daily\"} 1",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }

    #[test]
    fn ready_is_one_or_zero() {
        let m = Metrics::new();
        assert!(
            m.encode().contains("\nzoom_dept_sync_ready 0\n"),
            "{}",
            m.encode()
        );
        m.set_ready(true);
        assert!(
            m.encode().contains("\nzoom_dept_sync_ready 1\n"),
            "{}",
            m.encode()
        );
        m.set_ready(false);
        assert!(
            m.encode().contains("\nzoom_dept_sync_ready 0\n"),
            "{}",
            m.encode()
        );
    }

    #[test]
    fn a_quarantine_is_one_while_in_force() {
        let m = Metrics::new();
        m.quarantine_started(4130, Some("Sales"));
        let series = "zoom_dept_sync_quarantined{code=\"4130\",department=\"Sales\"}";
        assert!(
            m.encode().contains(&format!("{series} 1")),
            "{}",
            m.encode()
        );
        m.quarantine_lifted();
        m.quarantine_lifted();
        assert!(
            m.encode().contains(&format!("{series} 0")),
            "{}",
            m.encode()
        );
    }
}

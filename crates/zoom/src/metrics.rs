//! What the client reports about its calls. The daemon's Prometheus
//! registry implements it; the commands, which expose no metrics, pass
//! [`NoMetrics`]. The client does not know Prometheus.

use std::time::Duration;

pub trait CallMetrics: Send + Sync {
    /// One HTTP call's answer (`None`: no answer; `timed_out` tells why).
    fn call(&self, method: &str, status: Option<u16>, timed_out: bool, elapsed: Duration);
    /// A transient failure retried.
    fn retry(&self);
    /// A call held back by the client's own rate budget.
    fn rate_limit_wait(&self);
    /// A category's configured budget, per second.
    fn rate_configured(&self, category: &'static str, per_second: f64);
    /// A category's budget now (the adaptive share lowers it).
    fn rate_effective(&self, category: &'static str, per_second: f64);
    /// A 429, by category and the kind of limit Zoom named.
    fn rate_limited(&self, category: &'static str, limit: &'static str);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl CallMetrics for NoMetrics {
    fn call(&self, _: &str, _: Option<u16>, _: bool, _: Duration) {}
    fn retry(&self) {}
    fn rate_limit_wait(&self) {}
    fn rate_configured(&self, _: &'static str, _: f64) {}
    fn rate_effective(&self, _: &'static str, _: f64) {}
    fn rate_limited(&self, _: &'static str, _: &'static str) {}
}

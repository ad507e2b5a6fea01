//! An audit trail for a test: its own outcome exchange and stream, read
//! back as JSON records, deleted afterwards.

use std::time::Duration;

use serde_json::Value;
use zoom_dept_sync::broker::admin::Admin;
use zoom_dept_sync::config::OutcomesSettings;

use crate::helpers::{TestApp, unique_name};

pub struct Trail {
    pub exchange: String,
    pub stream: String,
}

impl Trail {
    pub fn new() -> Self {
        let exchange = unique_name("outcomes");
        let stream = format!("{exchange}.trail");
        Self { exchange, stream }
    }

    /// `[outcomes]` for this trail, with `max_age`.
    pub fn settings(&self, max_age: &str) -> OutcomesSettings {
        OutcomesSettings {
            exchange: Some(self.exchange.clone()),
            stream: Some(self.stream.clone()),
            max_age: max_age.into(),
        }
    }

    /// Every record in the stream, in order.
    pub async fn records(&self, app: &TestApp) -> Vec<Value> {
        let admin = Admin::connect(&app.settings.amqp, "test").await.unwrap();
        let mut records = Vec::new();
        admin
            .read_stream(&self.stream, None, Duration::from_millis(500), |body| {
                records.push(serde_json::from_slice(body).unwrap());
                std::ops::ControlFlow::Continue(())
            })
            .await
            .unwrap();
        admin.close().await;
        records
    }

    /// Deletes the exchange (the daemon declares it again on its next
    /// session).
    pub async fn delete_exchange(&self, app: &TestApp) {
        app.channel
            .exchange_delete(self.exchange.as_str().into(), Default::default())
            .await
            .unwrap();
    }

    /// Removes the stream and the exchange.
    pub async fn delete(&self, app: &TestApp) {
        let _ = app
            .channel
            .queue_delete(self.stream.as_str().into(), Default::default())
            .await;
        let _ = app
            .channel
            .exchange_delete(self.exchange.as_str().into(), Default::default())
            .await;
    }
}

/// The records of one event.
pub fn of<'a>(records: &'a [Value], event_id: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["event_id"] == event_id)
        .collect()
}

//! Row 1: the bare loop, consume → PATCH → ack and nothing else, as its own
//! process (the bench re-runs itself with `--bare-loop`), so its CPU and
//! memory are measured as the daemon's are. It is this machine's ceiling
//! for the same work: no parsing beyond the id, no ordering, no retries.

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::Semaphore;

use crate::measure::ProcStats;
use crate::setup::token;

pub struct Args {
    pub amqp_url: String,
    pub queue: String,
    pub zoom: String,
    pub count: usize,
    pub prefetch: u16,
    pub concurrency: usize,
}

impl Args {
    pub fn to_argv(&self) -> Vec<String> {
        vec![
            "--bare-loop".into(),
            self.amqp_url.clone(),
            self.queue.clone(),
            self.zoom.clone(),
            self.count.to_string(),
            self.prefetch.to_string(),
            self.concurrency.to_string(),
        ]
    }

    pub fn from_argv(argv: &[String]) -> Option<Self> {
        let [url, queue, zoom, count, prefetch, concurrency] = argv else {
            return None;
        };
        Some(Self {
            amqp_url: url.clone(),
            queue: queue.clone(),
            zoom: zoom.clone(),
            count: count.parse().ok()?,
            prefetch: prefetch.parse().ok()?,
            concurrency: concurrency.parse().ok()?,
        })
    }
}

/// The child: runs the loop until `count` deliveries are acked, then prints
/// its CPU seconds and peak RSS (KiB) on one line.
pub async fn child(args: Args) {
    let http = reqwest::Client::new();
    let token = token(&http, &format!("{}/oauth/token", args.zoom), "bench").await;
    let connection = Connection::connect(&args.amqp_url, ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(args.prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            args.queue.as_str().into(),
            "bare".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let slots = Arc::new(Semaphore::new(args.concurrency));
    for _ in 0..args.count {
        let delivery = consumer.next().await.expect("a delivery").expect("ok");
        let permit = Arc::clone(&slots).acquire_owned().await.expect("slot");
        let (http, token, zoom) = (http.clone(), token.clone(), args.zoom.clone());
        tokio::spawn(async move {
            let event: serde_json::Value = serde_json::from_slice(&delivery.data).expect("json");
            let user = event["zoom_user_id"].as_str().unwrap_or_default();
            let status = http
                .patch(format!("{zoom}/v2/groups/grp_eng/members/{user}"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"action": "move", "target_group_id": "grp_sales"}))
                .send()
                .await
                .expect("PATCH")
                .status();
            assert!(status.is_success(), "bare loop PATCH answered {status}");
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
            drop(permit);
        });
    }
    // Every slot free again: every task has acked.
    let all = u32::try_from(args.concurrency).expect("concurrency");
    let _ = slots.acquire_many(all).await.expect("slots");
    let _ = connection.close(200, "".into()).await;
    let me = ProcStats::of("self");
    println!("{} {}", me.cpu.as_secs_f64(), me.peak_rss_kib);
}

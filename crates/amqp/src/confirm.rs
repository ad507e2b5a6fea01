//! One `mandatory` publish and the broker's confirm, shared by every
//! publisher (dead letters, outcome records, the toolbox, the receiver):
//! each adds its own deadline and reads nacks and returns its own way.

use lapin::Confirmation;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};

/// Publishes `body` to `exchange` with `routing_key`, `mandatory` (so an
/// unroutable message comes back in the confirmation instead of being
/// dropped), and waits for the confirm. Not bounded: callers wrap it in
/// their deadline.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<Confirmation, lapin::Error> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            body,
            properties,
        )
        .await?
        .await
}

/// Why a dead letter or an outcome record was not published, and whether
/// the cause (a deleted dead-letter queue) was put right already.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct PublishError {
    pub why: String,
    pub repaired: bool,
}

//! The cluster harness proves itself (issue 23): a quorum queue on three
//! local nodes keeps every confirmed message, in order, when its leader's
//! VM is killed, and the killed node comes back into the cluster.

use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::time::Instant;

use crate::cluster_harness::{CLUSTER_LOCK, RabbitCluster};
use crate::helpers::unique_name;

const MESSAGES: usize = 20;

#[tokio::test]
async fn a_quorum_queue_keeps_its_messages_when_its_leader_is_killed() {
    let _one_cluster_at_a_time = CLUSTER_LOCK.lock().await;
    let started = Instant::now();
    let cluster = RabbitCluster::start().await;
    eprintln!("cluster started in {:?}", started.elapsed());
    assert_eq!(cluster.running().await, [0, 1, 2], "three running nodes");

    let queue = unique_name("cluster-smoke");
    let on_a = connect(&cluster.url(0)).await;
    publish_confirmed(&on_a, &queue).await;
    drop(on_a);

    let leader = cluster.leader(&queue).await;
    let at = Instant::now();
    cluster.kill(leader).await;
    eprintln!("killed node {leader} (the leader) in {:?}", at.elapsed());

    let survivor = &cluster.urls()[(leader + 1) % 3];
    let at = Instant::now();
    let bodies = read_all(survivor, &queue).await;
    eprintln!("read back from a survivor in {:?}", at.elapsed());
    let expected: Vec<String> = (0..MESSAGES).map(body).collect();
    assert_eq!(bodies, expected, "every confirmed message, in order");

    let at = Instant::now();
    cluster.restart(leader).await;
    eprintln!("restarted node {leader} in {:?}", at.elapsed());
    assert_eq!(
        cluster.running().await,
        [0, 1, 2],
        "the killed node rejoined"
    );
    let new_leader = cluster.leader(&queue).await;
    assert!(new_leader < 3, "the queue has a leader again: {new_leader}");

    // A rolling restart's first step: a graceful stop (the way back is
    // `restart`, as above). The cluster's drop stops the rest.
    let follower = (new_leader + 1) % 3;
    let at = Instant::now();
    cluster.stop_node(follower).await;
    eprintln!("stopped node {follower} in {:?}", at.elapsed());
    let others: Vec<usize> = (0..3).filter(|&i| i != follower).collect();
    assert_eq!(cluster.running().await, others, "two running nodes");
    eprintln!("whole test: {:?}", started.elapsed());
}

fn body(i: usize) -> String {
    format!("message-{i}")
}

async fn connect(url: &str) -> Channel {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect to a cluster node");
    connection.create_channel().await.expect("channel")
}

/// Declares `queue` as a durable quorum queue and publishes the messages,
/// each persistent and confirmed by the broker before the next.
async fn publish_confirmed(channel: &Channel, queue: &str) {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
        .await
        .expect("declare the quorum queue");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    for i in 0..MESSAGES {
        let confirmation = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body(i).as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirmation");
        assert!(confirmation.is_ack(), "message {i} confirmed");
    }
}

/// Takes the messages off `queue` on a surviving node. While the queue
/// elects a new leader a get fails and closes its channel; each failure
/// gets a new connection until the deadline.
async fn read_all(url: &str, queue: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut bodies = Vec::new();
    let mut channel = connect(url).await;
    while bodies.len() < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "read {} of {MESSAGES} messages before the deadline",
            bodies.len()
        );
        match channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
        {
            Ok(Some(message)) => {
                message
                    .delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .expect("ack");
                bodies.push(String::from_utf8_lossy(&message.delivery.data).into_owned());
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                channel = connect(url).await;
            }
        }
    }
    bodies
}

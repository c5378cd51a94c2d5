//! The queue contract suite against [`SqsQueue`] on moto's SQS, in real time (SQS keeps its own
//! clock), each case on queues of its own; plus what only SQS makes a question: the redrive
//! policy `create_queues` sets, names too long for SQS, and a missing queue named.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use relaycast_aws::moto::{unique, MotoServer};
use relaycast_aws::queue::{create_queues, SqsQueue};
use relaycast_core::ports::contract::{run_queue_contract, QueueFixture};
use relaycast_core::ports::{dead_letter_queue, ManualClock, Queue, QueueError};

/// Receives before dead-lettering: few, so the real-time dead-letter case is short, and as
/// many as the extend case's three deliveries.
const MAX_RECEIVES: u32 = 3;
/// The hop limit of the long-delay case: its chain of re-sends runs in seconds.
const TEST_HOP: Duration = Duration::from_secs(2);

/// The SQS client and queue prefix of a fresh tag on `server`.
async fn fresh(server: &MotoServer) -> (aws_sdk_sqs::Client, String) {
    let settings = server.settings(&unique("q"));
    let client = aws_sdk_sqs::Client::new(&relaycast_aws::sdk_config(&settings).await);
    (client, settings.queue_prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_contract() {
    let server = MotoServer::shared();
    run_queue_contract(|| {
        let server = Arc::clone(&server);
        async move {
            let (client, prefix) = fresh(&server).await;
            let queue =
                SqsQueue::new(client.clone(), prefix.clone()).creating_missing(MAX_RECEIVES);
            let hopping = SqsQueue::new(client, prefix.clone())
                .creating_missing(MAX_RECEIVES)
                .with_max_hop(TEST_HOP);
            QueueFixture {
                queue: Arc::new(queue),
                clock: ManualClock::starting_now(),
                real_time: true,
                max_receives: MAX_RECEIVES,
                max_name_len: 80 - prefix.len() - "-dlq".len(),
                long_delay_hops: Some((Arc::new(hopping), TEST_HOP)),
                guard: Box::new(server),
            }
        }
    })
    .await;
}

/// `create_queues` makes each queue with its dead-letter queue and a redrive policy counting
/// `max_receives`, as the stack does; a poison message lands there with its body, and is
/// kept there however often it is received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redrive_policy_moves_poison_to_the_dead_letter_queue() {
    let server = MotoServer::shared();
    let (client, prefix) = fresh(&server).await;
    create_queues(&client, &prefix, &["jobs"], 3).await.unwrap();
    // Made twice with the same attributes is fine (a test re-run, a developer's second start).
    create_queues(&client, &prefix, &["jobs"], 3).await.unwrap();
    let url = client
        .get_queue_url()
        .queue_name(format!("{prefix}jobs"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attrs = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap();
    let policy: serde_json::Value =
        serde_json::from_str(&attrs.attributes().unwrap()[&QueueAttributeName::RedrivePolicy])
            .unwrap();
    assert!(
        policy["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{prefix}jobs-dlq")),
        "{policy}"
    );
    assert_eq!(policy["maxReceiveCount"].as_u64(), Some(3), "{policy}");

    // Not `creating_missing`: the queues must be the ones made above.
    let q = SqsQueue::new(client, prefix);
    let vis = Duration::from_secs(1);
    let id = q.send("jobs", "poison", Duration::ZERO).await.unwrap();
    for n in 1..=3 {
        let got = q
            .receive("jobs", 10, vis, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "delivery {n}");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    assert!(q
        .receive("jobs", 10, vis, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    let dlq = dead_letter_queue("jobs");
    for _ in 0..4 {
        let dead = q
            .receive(&dlq, 10, vis, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].id.as_str(), dead[0].body.as_str()),
            (id.as_str(), "poison")
        );
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
}

/// A name that fits the port but not SQS once prefixed is refused before any request; a queue
/// that was never made is named in the error (deployments do not make queues at first use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_too_long_for_sqs_and_missing_queues_are_told() {
    let server = MotoServer::shared();
    let (client, prefix) = fresh(&server).await;
    let q = SqsQueue::new(client, prefix.clone());
    let too_long = "x".repeat(81 - prefix.len());
    match q.send(&too_long, "x", Duration::ZERO).await {
        Err(QueueError::Invalid(msg)) => assert!(msg.contains("too long"), "{msg}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    match q.send("never-made", "x", Duration::ZERO).await {
        Err(QueueError::Backend(msg)) => {
            assert!(msg.contains(&format!("{prefix}never-made")), "{msg}");
            assert!(msg.contains("does not exist"), "{msg}");
        }
        other => panic!("expected Backend, got {other:?}"),
    }
}

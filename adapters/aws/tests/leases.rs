//! The lease race and fencing scenario every adapter set runs (`app::scenarios`), on the AWS
//! adapters over moto: DynamoDB's conditional writes give one holder at a time and refuse a
//! stale holder's writes.

use std::sync::Arc;

use relaycast_aws::moto::{provision, MotoServer};
use relaycast_core::ports::ManualClock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_hold_one_task_and_a_stale_holder_is_refused() {
    let server = MotoServer::start();
    let settings = server.settings(&format!("leases-{}", std::process::id()));
    provision(&settings, 5).await.unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let ports = relaycast_aws::open_aws(
        &settings,
        Arc::new(clock.clone()),
        5,
        relaycast_aws::Checks::Existence,
    )
    .await
    .unwrap();
    relaycast_core::app::scenarios::lease_race_and_fencing(ports, clock).await;
}

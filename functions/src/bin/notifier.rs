//! `relaycast-notifier`: delivers the callback outbox on AWS Lambda, fed by the callbacks SQS
//! queue, answering partial batch failures.

use relaycast_functions::lambda;
use relaycast_functions::notifier::Notifier;

#[tokio::main]
async fn main() -> Result<(), lambda::LambdaError> {
    lambda::serve(|ctx| Ok(Notifier::new(ctx)?), lambda::notifier).await
}

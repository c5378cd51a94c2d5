//! `relaycast-scheduler`: one scheduler tick per EventBridge scheduled event (every minute) on
//! AWS Lambda.

use relaycast_functions::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda::LambdaError> {
    lambda::serve(Ok, lambda::scheduler).await
}

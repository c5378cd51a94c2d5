//! `relaycast-callbacks`: the inbound event callbacks (CSS, nginx-rtmp, SRS) on AWS Lambda
//! behind API Gateway (HTTP API, payload format 2.0), serving the routes `relaycast up` mounts.

use relaycast_functions::{callback_routes, lambda};

#[tokio::main]
async fn main() -> Result<(), lambda::LambdaError> {
    lambda::serve(|ctx| Ok(callback_routes(ctx)), lambda::http).await
}

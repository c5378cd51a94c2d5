//! `relaycast-api`: the control APIs (the CDNetworks relay API and `/v1`) on AWS Lambda behind
//! API Gateway (HTTP API, payload format 2.0), serving the router `relaycast up` mounts.

use relaycast_functions::{api_routes, lambda};

#[tokio::main]
async fn main() -> Result<(), lambda::LambdaError> {
    lambda::serve(|ctx| Ok(api_routes(ctx)), lambda::http).await
}

//! `relaycast-recordings`: turns the recordings bucket's object-created notifications (S3 to
//! the object-notices SQS queue) into media records on AWS Lambda.

use relaycast_functions::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda::LambdaError> {
    lambda::serve(Ok, lambda::recordings).await
}

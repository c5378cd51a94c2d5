//! moto's server mode on 127.0.0.1, for tests: one process per [`MotoServer`], on a free port,
//! stopped when the handle drops. moto is a test peer like nginx or ffmpeg: when it is missing or
//! does not come up, [`MotoServer::start`] panics with what to install, so a test never passes
//! without it.
//!
//! moto runs each request on a thread of its own and does not lock its DynamoDB tables, so two
//! conditional writes on one item can both pass their check (a lost update DynamoDB never
//! makes). The server is therefore started with DynamoDB's requests taken one at a time
//! ([`SERIAL_DYNAMODB`]). Its SQS has the same flaw: two concurrent receives can both take one
//! visible message (delivered twice within its visibility timeout), and two concurrent deletes
//! can lose one (the message comes back). So SQS's operations run one at a time too, except
//! that a long poll lets go while it waits, so it still waits beside other requests. S3's
//! requests stay concurrent.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relaycast_core::config::AwsSettings;

/// Starts `moto.server` with its argument list, DynamoDB's requests (those with an
/// `X-Amz-Target: DynamoDB_…` header) served under one lock. Flask computes a response within
/// the call, so the lock covers the whole of a request. Every method of moto's SQS backend
/// runs under a second lock, which a receive's long poll releases while it waits for messages
/// (it waits on the queue's own condition, which a send notifies under the lock, so the two
/// never wait on each other).
const SERIAL_DYNAMODB: &str = r#"
import inspect, sys, threading
import moto.server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.sqs.models import Queue, SQSBackend
lock = threading.Lock()
call = DomainDispatcherApplication.__call__
def serial_dynamodb(self, environ, start_response):
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
        with lock:
            return call(self, environ, start_response)
    return call(self, environ, start_response)
DomainDispatcherApplication.__call__ = serial_dynamodb

sqs_lock = threading.Lock()
held = threading.local()
def serial_sqs(method):
    def run(*args, **kwargs):
        if getattr(held, "depth", 0):
            held.depth += 1
            try:
                return method(*args, **kwargs)
            finally:
                held.depth -= 1
        with sqs_lock:
            held.depth = 1
            try:
                return method(*args, **kwargs)
            finally:
                held.depth = 0
    return run
for name, method in list(vars(SQSBackend).items()):
    if inspect.isfunction(method) and not name.startswith("_"):
        setattr(SQSBackend, name, serial_sqs(method))
wait_for_messages = Queue.wait_for_messages
def wait_unlocked(self, timeout):
    holding = getattr(held, "depth", 0) > 0
    if holding:
        sqs_lock.release()
    try:
        return wait_for_messages(self, timeout)
    finally:
        if holding:
            sqs_lock.acquire()
Queue.wait_for_messages = wait_unlocked
moto.server.main(sys.argv[1:])
"#;

/// A running `moto_server`.
pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Starts moto on a free port of 127.0.0.1 and waits until it answers.
    pub fn start() -> MotoServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new("python3")
            .args(["-c", SERIAL_DYNAMODB, "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto's server (python3 -m moto.server): {e}; run scripts/install-deps.sh test"));
        let mut server = MotoServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("moto's server exited at start ({status}): is moto[server] installed? run scripts/install-deps.sh test");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "moto's server did not listen on 127.0.0.1:{port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Settings for this server: region `us-east-1`, names made unique by `tag` so that cases
    /// sharing one server never see each other's resources. Sets moto's fake credentials in the
    /// process environment when none are set (the SDK's chain reads them from there).
    pub fn settings(&self, tag: &str) -> AwsSettings {
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        }
        AwsSettings {
            region: Some("us-east-1".into()),
            endpoint_url: Some(self.endpoint()),
            table: format!("{tag}-records"),
            queue_prefix: format!("{tag}-"),
            bucket: format!("{tag}-recordings"),
        }
    }
}

impl MotoServer {
    /// One server for the tests of a test binary that run at once: each holds an `Arc`, and the
    /// last to finish stops it (a `static` would never be dropped and leave the process behind).
    pub fn shared() -> std::sync::Arc<MotoServer> {
        use std::sync::{Arc, Mutex, Weak};
        static SERVER: Mutex<Weak<MotoServer>> = Mutex::new(Weak::new());
        let mut shared = SERVER.lock().unwrap();
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(MotoServer::start());
        *shared = Arc::downgrade(&server);
        server
    }
}

/// A name no other case of this process uses, for resources of one case on a shared server.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the resources `settings` name, as the stack makes them: the table, every queue of
/// [`QUEUES`](relaycast_core::ports::queue::QUEUES) with its dead-letter queue (dead-lettering
/// after `max_receives`), and the bucket, so that [`crate::open_aws`] opens on them. What
/// exists already is kept, so provisioning twice is fine.
pub async fn provision(settings: &AwsSettings, max_receives: u32) -> Result<(), crate::AwsError> {
    let sdk = crate::sdk_config(settings).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let table_exists = dynamodb
        .describe_table()
        .table_name(&settings.table)
        .send()
        .await
        .is_ok();
    if !table_exists {
        crate::store::create_table(&dynamodb, &settings.table).await?;
    }
    crate::queue::create_queues(
        &aws_sdk_sqs::Client::new(&sdk),
        &settings.queue_prefix,
        relaycast_core::ports::queue::QUEUES,
        max_receives,
    )
    .await?;
    crate::objects::create_bucket(&crate::objects::s3_client(settings).await, &settings.bucket)
        .await
}

//! moto's server mode on 127.0.0.1, for tests: one process per [`MotoServer`], on a free port,
//! stopped when the handle drops. moto is a test peer like nginx or ffmpeg: when it is missing or
//! does not come up, [`MotoServer::start`] panics with what to install, so a test never passes
//! without it.
//!
//! moto runs each request on a thread of its own and does not lock its DynamoDB tables, so two
//! conditional writes on one item can both pass their check (a lost update DynamoDB never
//! makes). The server is therefore started with DynamoDB's requests taken one at a time
//! ([`SERIAL_DYNAMODB`]); SQS and S3 requests stay concurrent, so long polls still wait beside
//! other requests.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relaycast_core::config::AwsSettings;

/// Starts `moto.server` with its argument list, DynamoDB's requests (those with an
/// `X-Amz-Target: DynamoDB_…` header) served under one lock. Flask computes a response within
/// the call, so the lock covers the whole of a request.
const SERIAL_DYNAMODB: &str = r#"
import sys, threading
import moto.server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
lock = threading.Lock()
call = DomainDispatcherApplication.__call__
def serial_dynamodb(self, environ, start_response):
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
        with lock:
            return call(self, environ, start_response)
    return call(self, environ, start_response)
DomainDispatcherApplication.__call__ = serial_dynamodb
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

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

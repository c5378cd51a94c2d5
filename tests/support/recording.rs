//! The recording rig of the end-to-end tests (`recording_e2e`, `playback_browser`): `relaycast
//! up` with a real nginx-rtmp origin whose `on_publish` hooks reach relaycast, a bound push
//! domain, ffmpeg publishers and a receiver of the record notices. A test binary includes it
//! with `#[path = "support/recording.rs"] mod recording;` next to `mod media` (the workers'
//! harness) and `mod support`, which it uses.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};

use crate::media;
use crate::support::{
    eventually, write_config, Api, CallbackReceiver, Received, RelaycastProcess, ACME,
};

/// The `CallbackKey` of the templates [`Rig::template`] makes.
pub const RECORD_KEY: &str = "reckey123";

/// `relaycast up` with `roles`, the test accounts and quick lease and scheduler timings.
pub fn start_relaycast(dir: &std::path::Path, roles: &str) -> RelaycastProcess {
    start_relaycast_with(dir, roles, &[])
}

/// [`start_relaycast`] with `extra_env` too (the AWS-mode test's `RELAYCAST_AWS__*`).
pub fn start_relaycast_with(
    dir: &std::path::Path,
    roles: &str,
    extra_env: &[(&str, &str)],
) -> RelaycastProcess {
    let config = write_config(dir);
    let mut env = vec![
        ("RELAYCAST_TIMING__SCHEDULER_TICK_MS", "200"),
        ("RELAYCAST_TIMING__LEASE_TTL_MS", "3000"),
        ("RELAYCAST_TIMING__LEASE_HEARTBEAT_MS", "1000"),
        ("RELAYCAST_QUEUE__VISIBILITY_TIMEOUT_MS", "5000"),
        ("RELAYCAST_LOG_FILTER", "info"),
    ];
    env.extend_from_slice(extra_env);
    RelaycastProcess::start(
        &dir.join("data"),
        &env,
        &["--config", config.to_str().unwrap(), "--roles", roles],
    )
}

/// The stack of one test: an nginx-rtmp origin hooked to relaycast, relaycast, a signed client
/// and a receiver of the record notices.
pub struct Rig {
    pub nginx: media::Nginx,
    pub relaycast: RelaycastProcess,
    pub api: Api,
    pub receiver: CallbackReceiver,
    pub dir: tempfile::TempDir,
    _heavy: media::HeavyGuard,
}

impl Rig {
    /// Starts the stack with `relaycast up --roles roles` and the push domain `ingest.test`
    /// pulled from the origin; waits for the other media tests of this binary first.
    pub async fn start(roles: &str) -> Rig {
        Rig::start_with(roles, &[]).await
    }

    /// [`Rig::start`] with `extra_env` for relaycast.
    pub async fn start_with(roles: &str, extra_env: &[(&str, &str)]) -> Rig {
        let heavy = media::heavy(&[]).await;
        let dir = tempfile::tempdir().unwrap();
        let relaycast = start_relaycast_with(dir.path(), roles, extra_env);
        let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
        let hooks = api.v1_ok("GET", "/v1/hooks", &[], None).await;
        let nginx = media::Nginx::start_with_hooks(&format!(
            "{}&domain=ingest.test",
            hooks["NginxRtmpUrl"].as_str().unwrap()
        ));
        let receiver = CallbackReceiver::start().await;
        let pull = format!("rtmp://127.0.0.1:{}/{{app}}/{{stream}}", nginx.rtmp_port);
        api.v1_ok(
            "POST",
            "/v1/domains",
            &[],
            Some(json!({ "DomainName": "ingest.test", "PullUrlTemplate": pull })),
        )
        .await;
        Rig {
            nginx,
            relaycast,
            api,
            receiver,
            dir,
            _heavy: heavy,
        }
    }

    /// A recording template with `params` (Tencent's fields) and the record callback.
    pub async fn template(&self, name: &str, params: Value) -> u64 {
        let mut body = json!({ "TemplateName": name, "RecordNotifyUrl": self.receiver.url, "CallbackKey": RECORD_KEY });
        body.as_object_mut()
            .unwrap()
            .extend(params.as_object().unwrap().clone());
        self.api
            .v1_ok("POST", "/v1/record-templates", &[], Some(body))
            .await["TemplateId"]
            .as_u64()
            .unwrap()
    }

    /// Binds `template` to the app `app` of `ingest.test`: its streams are recorded.
    pub async fn bind(&self, app: &str, template: u64) {
        self.api
            .v1_ok(
                "POST",
                "/v1/record-rules",
                &[],
                Some(
                    json!({ "DomainName": "ingest.test", "AppName": app, "TemplateId": template }),
                ),
            )
            .await;
    }

    /// Publishes a 320x240 test stream to the origin's hooked app as `stream`, until dropped.
    pub fn publish(&self, stream: &str) -> media::Publisher {
        self.publish_at_rate(stream, 1)
    }

    /// [`Rig::publish`], `speed` seconds of stream per second.
    pub fn publish_at_rate(&self, stream: &str, speed: u32) -> media::Publisher {
        let p = media::Publisher::start_at_rate(&self.nginx.hooked_url(stream), 320, 240, speed);
        assert!(
            self.nginx
                .wait_publishing(stream, Duration::from_secs(10))
                .is_some(),
            "{stream} not published"
        );
        p
    }

    /// The record notices (event 100 with our `file_id`) of `stream` received so far.
    pub fn notices(&self, stream: &str) -> Vec<Received> {
        self.receiver
            .received()
            .into_iter()
            .filter(|r| {
                r.body["event_type"] == 100
                    && r.body["stream_id"] == stream
                    && r.body["task_id"].as_str().is_some_and(|t| !t.is_empty())
            })
            .collect()
    }

    /// Waits up to `within` for `n` record notices of `stream`; returns all that came.
    pub async fn wait_notices(&self, stream: &str, n: usize, within: Duration) -> Vec<Received> {
        eventually(
            &format!("{n} record notices of {stream}"),
            within,
            || async {
                let got = self.notices(stream);
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }

    /// `POST /v1/media/search` with `body`.
    pub async fn search(&self, body: Value) -> Value {
        self.api
            .v1_ok("POST", "/v1/media/search", &[], Some(body))
            .await
    }
}

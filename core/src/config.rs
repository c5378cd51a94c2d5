//! Settings shared by every host (the all-in-one `relaycast up`, Lambda functions, ECS workers).
//!
//! Layers: defaults → TOML file → `RELAYCAST_*` environment variables. Every duration the seeds
//! define is a setting here with the seed's value as its default, so tests can shorten what they
//! would otherwise have to wait for.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::domain::auth::SecretKey;

/// Everything a relaycast process can be configured with. Unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address the HTTP server listens on. Default `127.0.0.1:8080`.
    pub http_addr: String,
    /// Base URL clients reach this host at, for playback links. Default `http://{http_addr}`.
    pub public_url: Option<String>,
    /// Where the embedded store, queue and objects live. Default `./relaycast-data`.
    pub data_dir: PathBuf,
    /// Which parts this process runs: `api`, `notifier`, `scheduler`, `relay`, `recorder`;
    /// `workers` means every worker (relay and recorder), `all` everything. Default `["all"]`.
    pub roles: Vec<String>,
    /// Log line format: `text` or `json`. Default `text`.
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `relaycast=debug`. Default `info`.
    pub log_filter: String,
    /// Allow sources, destinations and callback URLs on private, loopback and link-local
    /// addresses. Default false: user URLs pointing inside the operator's network are refused.
    pub allow_private_targets: bool,
    /// The system ffmpeg binary; relaycast never downloads one. Default `/usr/bin/ffmpeg`.
    pub ffmpeg_path: PathBuf,
    /// The picture (PNG or JPEG) destinations get while every source of a relay is down;
    /// scaled to the stream's size. Default none: black.
    pub slate_image: Option<PathBuf>,
    /// UTC offset used where the wire formats times as `YYYY-MM-DD HH:MM:SS`. Default `+08:00`
    /// (the CDNetworks API's examples are in China Standard Time).
    pub display_utc_offset: String,
    /// API accounts declared by the operator; stored at start.
    pub accounts: Vec<AccountSettings>,
    /// Queue behaviour.
    pub queue: QueueSettings,
    /// Durations from the seeds and for workers.
    pub timing: TimingSettings,
    /// Callback delivery limits.
    pub callbacks: CallbackSettings,
    /// Limits of the HTTP functions, the same in every host.
    pub http: HttpSettings,
    /// The AWS resources to run on (DynamoDB, SQS, S3). Absent, the default: the embedded
    /// adapters in `data_dir`.
    pub aws: Option<AwsSettings>,
}

/// Where the AWS adapters find their resources (the outputs of `infra/relaycast.yaml`).
/// Region and credentials come from the standard AWS chain (`AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// profiles, the ECS or Lambda role); `endpoint_url` points every client elsewhere (moto, a VPC
/// endpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// The region, when the standard chain should not decide it.
    #[serde(default)]
    pub region: Option<String>,
    /// One endpoint for DynamoDB, SQS and S3 instead of AWS's own (e.g. `http://127.0.0.1:5000`).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// The records table, e.g. `relaycast-records`.
    pub table: String,
    /// Prefix of the SQS queue names: queue `relay-jobs` is `{queue_prefix}relay-jobs`, its
    /// dead-letter queue `{queue_prefix}relay-jobs-dlq`. Default `relaycast-`.
    #[serde(default = "default_queue_prefix")]
    pub queue_prefix: String,
    /// The recordings bucket.
    pub bucket: String,
}

fn default_queue_prefix() -> String {
    "relaycast-".into()
}

/// Limits of the HTTP functions (API, inbound callbacks, `/v1`), applied alike by `relaycast up`
/// and the Lambda functions, so a request a deployment would refuse is refused locally too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// The largest request body taken, in bytes; a larger one is answered 413 before it is
    /// read further. Default 6 291 456 (6 MiB, the largest payload a Lambda function is
    /// invoked with).
    pub max_body_bytes: usize,
}

/// Lambda's limit on a synchronous invocation's payload.
pub const LAMBDA_MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: LAMBDA_MAX_PAYLOAD_BYTES,
        }
    }
}

/// How the notifier shares its work among customer endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackSettings {
    /// Deliveries in flight at once, in all. Default 128.
    pub concurrency: usize,
    /// Deliveries in flight at once to one endpoint (scheme, host and port), so that one dead
    /// or slow receiver cannot hold up the others; below `concurrency`. Default 32.
    pub endpoint_concurrency: usize,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        Self {
            concurrency: 128,
            endpoint_concurrency: 32,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8080".into(),
            public_url: None,
            data_dir: PathBuf::from("./relaycast-data"),
            roles: vec!["all".into()],
            log_format: LogFormat::Text,
            log_filter: "info".into(),
            allow_private_targets: false,
            ffmpeg_path: PathBuf::from("/usr/bin/ffmpeg"),
            slate_image: None,
            display_utc_offset: "+08:00".into(),
            accounts: Vec::new(),
            queue: QueueSettings::default(),
            timing: TimingSettings::default(),
            callbacks: CallbackSettings::default(),
            http: HttpSettings::default(),
            aws: None,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, one line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// An API account declared in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// The account name (`n` in n/r/k auth).
    pub name: String,
    /// The secret API key (`k = md5(r + key)`); never printed.
    pub key: SecretKey,
    /// Whether the account may call the API. Default true.
    #[serde(default = "yes")]
    pub api_enabled: bool,
    /// Calls allowed per 5 minutes. Default 100 (seed 001).
    #[serde(default = "default_call_limit")]
    pub call_limit: u32,
    /// Destination hosts this account may push to; empty means any.
    #[serde(default)]
    pub allowed_push_hosts: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_call_limit() -> u32 {
    100
}

/// Queue behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Receives after which a message moves to its dead-letter queue. Default 5.
    pub max_receives: u32,
    /// How long a received job stays hidden before another worker may take it, in ms;
    /// workers extend it while they run. Default 60 000.
    pub visibility_timeout_ms: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_receives: 5,
            visibility_timeout_ms: 60_000,
        }
    }
}

/// Durations from the seeds and for workers, all in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimingSettings {
    /// A lease not renewed for this long is stale and its task is re-queued. Default 30 000.
    pub lease_ttl_ms: u64,
    /// How often a worker renews its leases. Default 10 000.
    pub lease_heartbeat_ms: u64,
    /// How often the scheduler looks for due tasks and stale leases. Default 1 000.
    pub scheduler_tick_ms: u64,
    /// An `r` seen within this window is refused as a replay. Default 300 000 (5 min).
    pub replay_window_ms: u64,
    /// The window of an account's call limit. Default 300 000 (5 min, seed 001).
    pub rate_window_ms: u64,
    /// A callback with no answer within this time counts as failed. Default 20 000 (seed 002).
    pub callback_timeout_ms: u64,
    /// Time between two attempts at a callback that was not answered with 200, for every
    /// notice but push, stop, record and porn events (relay tasks' codes 0–5 and 90–92,
    /// snapshots, push exceptions, recording status). Default 120 000 (2 min, seed 002).
    pub callback_retry_interval_ms: u64,
    /// Attempts after the first at such a callback before it is a dead letter. Default 5
    /// (seed 002).
    pub callback_retries: u32,
    /// Time between two attempts at a push, stop, record or porn-detection callback. Default
    /// 60 000 (1 min, seed 002).
    pub stream_callback_retry_interval_ms: u64,
    /// Attempts after the first at such a callback before it is a dead letter. Default 12
    /// (seed 002).
    pub stream_callback_retries: u32,
    /// A starting task that no worker has taken up after this long failed to start: callback
    /// code 92. Default 60 000.
    pub start_timeout_ms: u64,
    /// A source that delivers nothing for this long is down; fail over. Default 3 000.
    pub source_stall_timeout_ms: u64,
    /// A live source quiet this long while its backup, pulled beside it as a hot standby,
    /// delivers is down: fail over without waiting for the stall timeout (destinations'
    /// players see about this long without a new frame, and no reconnect). Adaptive: a
    /// source whose delivery jitters gets 1.5 × the largest gap between its tags over the
    /// last 10 s when that is more (at most 3/4 of `source_stall_timeout_ms`). 0 turns this
    /// off. Default 400.
    pub standby_failover_ms: u64,
    /// A destination that cannot publish for this long is given up (callback code 3) while the
    /// others go on. Default 300 000 (5 min).
    pub push_give_up_ms: u64,
    /// How long destinations are kept alive with a slate when every source is down.
    /// Default 300 000 (5 min).
    pub slate_duration_ms: u64,
    /// How long an SIGTERM drain may take before children are killed. Default 10 000.
    pub drain_timeout_ms: u64,
}

impl Default for TimingSettings {
    fn default() -> Self {
        Self {
            lease_ttl_ms: 30_000,
            lease_heartbeat_ms: 10_000,
            scheduler_tick_ms: 1_000,
            replay_window_ms: 300_000,
            rate_window_ms: 300_000,
            callback_timeout_ms: 20_000,
            callback_retry_interval_ms: 120_000,
            callback_retries: 5,
            stream_callback_retry_interval_ms: 60_000,
            stream_callback_retries: 12,
            start_timeout_ms: 60_000,
            source_stall_timeout_ms: 3_000,
            standby_failover_ms: 400,
            push_give_up_ms: 300_000,
            slate_duration_ms: 300_000,
            drain_timeout_ms: 10_000,
        }
    }
}

/// A process role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The HTTP functions: control API, inbound callbacks, recordings API.
    Api,
    /// Delivers the callback outbox.
    Notifier,
    /// Starts due tasks, expires ended ones, re-queues tasks whose lease went stale.
    Scheduler,
    /// Runs relay jobs.
    Relay,
    /// Runs record jobs.
    Recorder,
}

/// Why settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// The file, or an environment override, does not parse or has an unknown key.
    #[error("invalid config {origin}: {reason}")]
    Parse { origin: String, reason: String },
    /// A value is out of range.
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: String, reason: String },
}

const ENV_PREFIX: &str = "RELAYCAST_";

impl Settings {
    /// Loads defaults, then the TOML file at `path` (if any), then `RELAYCAST_*` variables from
    /// `env` (`RELAYCAST_HTTP_ADDR`, `RELAYCAST_TIMING__LEASE_TTL_MS`: `__` goes one table
    /// deeper; values are read as TOML literals when they parse as one, else as strings).
    /// `RELAYCAST_CONFIG` names the file and is not a setting.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        origin: path.display().to_string(),
                        reason: one_line(&e),
                    })?
            }
            None => toml::Table::new(),
        };
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != "RELAYCAST_CONFIG")
            .collect();
        overrides.sort();
        for (name, value) in overrides {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            set_path(&mut table, &path, env_value(&value)).map_err(|reason| {
                ConfigError::Parse {
                    origin: format!("environment {name}"),
                    reason,
                }
            })?;
        }
        let origin = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "environment".into());
        let settings: Settings =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin,
                    reason: one_line(&e),
                })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason: reason.into(),
            })
        };
        if self.http_addr.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "http_addr",
                "must be an IP address and port such as 127.0.0.1:8080",
            );
        }
        self.roles()?;
        if self.utc_offset().is_none() {
            return invalid("display_utc_offset", "must look like +08:00 or -05:30");
        }
        for account in &self.accounts {
            if account.name.is_empty() || account.name.len() > 64 {
                return invalid("accounts.name", "must be 1 to 64 characters");
            }
            if account.key.expose().len() < 8 {
                return invalid(
                    "accounts.key",
                    &format!(
                        "key of account {} must be at least 8 characters",
                        account.name
                    ),
                );
            }
        }
        if let Some(image) = &self.slate_image {
            if !image.is_file() {
                return invalid(
                    "slate_image",
                    &format!("{} is not a readable file", image.display()),
                );
            }
        }
        if self.http.max_body_bytes == 0 {
            return invalid("http.max_body_bytes", "must be at least 1");
        }
        if self.queue.max_receives == 0 {
            return invalid("queue.max_receives", "must be at least 1");
        }
        if self.callbacks.endpoint_concurrency == 0
            || self.callbacks.endpoint_concurrency >= self.callbacks.concurrency
        {
            return invalid(
                "callbacks.endpoint_concurrency",
                "must be at least 1 and below callbacks.concurrency, so that one dead endpoint cannot take every delivery slot",
            );
        }
        if let Some(aws) = &self.aws {
            if aws.table.is_empty() || aws.bucket.is_empty() {
                return invalid(
                    "aws",
                    "aws.table and aws.bucket must name the stack's table and bucket",
                );
            }
            if let Some(endpoint) = &aws.endpoint_url {
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return invalid("aws.endpoint_url", "must be an http:// or https:// URL");
                }
            }
        }
        if self.timing.lease_heartbeat_ms == 0
            || self.timing.lease_heartbeat_ms >= self.timing.lease_ttl_ms
        {
            return invalid(
                "timing.lease_heartbeat_ms",
                "must be above 0 and below timing.lease_ttl_ms",
            );
        }
        Ok(())
    }

    /// The roles this process runs, with `workers` and `all` expanded.
    pub fn roles(&self) -> Result<Vec<Role>, ConfigError> {
        let mut roles = Vec::new();
        for name in &self.roles {
            let add: &[Role] = match name.trim() {
                "api" => &[Role::Api],
                "notifier" => &[Role::Notifier],
                "scheduler" => &[Role::Scheduler],
                "relay" => &[Role::Relay],
                "recorder" => &[Role::Recorder],
                "workers" => &[Role::Relay, Role::Recorder],
                "all" => &[Role::Api, Role::Notifier, Role::Scheduler, Role::Relay, Role::Recorder],
                other => {
                    return Err(ConfigError::Invalid {
                        key: "roles".into(),
                        reason: format!(
                            "unknown role {other:?} (known: api, notifier, scheduler, relay, recorder, workers, all)"
                        ),
                    })
                }
            };
            for role in add {
                if !roles.contains(role) {
                    roles.push(*role);
                }
            }
        }
        if roles.is_empty() {
            return Err(ConfigError::Invalid {
                key: "roles".into(),
                reason: "at least one role is needed".into(),
            });
        }
        Ok(roles)
    }

    /// `display_utc_offset` as a chrono offset.
    pub fn utc_offset(&self) -> Option<chrono::FixedOffset> {
        let s = self.display_utc_offset.as_str();
        let (sign, rest) = match s.as_bytes().first()? {
            b'+' => (1, &s[1..]),
            b'-' => (-1, &s[1..]),
            _ => return None,
        };
        let (h, m) = rest.split_once(':')?;
        let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
        if h > 23 || m > 59 || rest.len() != 5 {
            return None;
        }
        chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60))
    }

    /// The base URL for links to this host.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_addr))
    }
}

fn env_value(raw: &str) -> toml::Value {
    // Parse as a TOML literal (numbers, booleans, arrays) and fall back to a plain string, so
    // `RELAYCAST_HTTP_ADDR=127.0.0.1:9000` needs no quoting.
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty setting name".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set_path(inner, rest, value),
                _ => Err(format!("{first} is not a table")),
            }
        }
    }
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(s.http_addr, "127.0.0.1:8080");
        assert_eq!(s.data_dir, PathBuf::from("./relaycast-data"));
        assert_eq!(s.roles().unwrap().len(), 5);
        assert_eq!(
            (
                s.timing.callback_retries,
                s.timing.callback_retry_interval_ms
            ),
            (5, 120_000)
        );
        assert_eq!(s.http.max_body_bytes, 6 * 1024 * 1024);
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "http_addr = \"127.0.0.1:9000\"\nroles = [\"api\"]\n[timing]\nlease_ttl_ms = 5000\n[[accounts]]\nname = \"acme\"\nkey = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&path),
            env(&[
                ("RELAYCAST_HTTP_ADDR", "127.0.0.1:9100"),
                ("RELAYCAST_HTTP__MAX_BODY_BYTES", "1000"),
                ("RELAYCAST_TIMING__LEASE_HEARTBEAT_MS", "1000"),
                ("RELAYCAST_ALLOW_PRIVATE_TARGETS", "true"),
                ("RELAYCAST_CONFIG", "ignored"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.http_addr, "127.0.0.1:9100");
        assert_eq!(s.http.max_body_bytes, 1000);
        assert_eq!(s.timing.lease_ttl_ms, 5000);
        assert_eq!(s.timing.lease_heartbeat_ms, 1000);
        assert!(s.allow_private_targets);
        assert_eq!(s.roles().unwrap(), vec![Role::Api]);
        assert_eq!(s.accounts[0].call_limit, 100);
        assert_eq!(
            s.accounts[0].key.expose(),
            "0123456789abcdef0123456789abcdef"
        );
        assert!(
            !format!("{s:?}").contains("0123456789abcdef"),
            "a key must never print"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "htp_addr = \"x\"\n").unwrap();
        let err = Settings::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("htp_addr"), "{err}");

        std::fs::write(&path, "http_addr = [\n").unwrap();
        let err = Settings::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid config"), "{err}");
        assert!(!err.contains('\n'));

        let err = Settings::load(None, env(&[("RELAYCAST_NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");

        let err = Settings::load(None, env(&[("RELAYCAST_ROLES", "[\"api\", \"dancer\"]")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dancer"), "{err}");

        let roles = Settings::load(None, env(&[("RELAYCAST_ROLES", "[\"workers\"]")]))
            .unwrap()
            .roles()
            .unwrap();
        assert_eq!(roles, [Role::Relay, Role::Recorder]);

        let err = Settings::load(
            None,
            env(&[("RELAYCAST_CALLBACKS__ENDPOINT_CONCURRENCY", "128")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("callbacks.endpoint_concurrency"), "{err}");
        let err = Settings::load(None, env(&[("RELAYCAST_HTTP_ADDR", "localhost")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http_addr"), "{err}");
    }

    #[test]
    fn utc_offsets() {
        let mut s = Settings::default();
        assert_eq!(s.utc_offset().unwrap().local_minus_utc(), 8 * 3600);
        s.display_utc_offset = "-05:30".into();
        assert_eq!(
            s.utc_offset().unwrap().local_minus_utc(),
            -(5 * 3600 + 1800)
        );
        s.display_utc_offset = "8".into();
        assert!(s.utc_offset().is_none());
    }
}

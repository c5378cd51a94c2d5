//! `relaycast up`: one process hosting the HTTP functions, the background loops and the workers
//! on the embedded adapters, with roles choosing which parts run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use relaycast_adapters::{open_ports, OpenError, Opened};
use relaycast_core::config::{Role, Settings};
use relaycast_core::domain::auth::{Account, SecretKey};
use relaycast_core::ports::{Clock, Condition, Ports, StoreError, TypedStore};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::http::{host_routes, observe_requests, HostState};

/// Why the host could not start or stopped with an error. Each message is one line naming the
/// problem.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Settings are unusable.
    #[error(transparent)]
    Config(#[from] relaycast_core::config::ConfigError),
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    /// The data directory cannot be created or written.
    #[error("data directory {path} is not usable: {reason}")]
    DataDir { path: PathBuf, reason: String },
    /// An adapter could not be opened.
    #[error("cannot open {what}: {reason}")]
    Adapter { what: &'static str, reason: String },
    /// The adapter set could not be opened.
    #[error(transparent)]
    Open(OpenError),
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(String),
}

/// Starts hosts.
pub struct Host;

/// A started host. Dropping it does not stop it; call [`RunningHost::shutdown`].
pub struct RunningHost {
    /// The address the HTTP server listens on (useful with port 0).
    pub addr: SocketAddr,
    /// The adapters the host runs on.
    pub ports: Ports,
    /// The settings in force.
    pub settings: Arc<Settings>,
    shutdown: CancellationToken,
    tasks: JoinSet<Result<(), HostError>>,
}

impl Host {
    /// Binds, opens the data directory and the embedded adapters, and starts every part the
    /// roles ask for. Checks that can fail run before anything is written: a bad config or a
    /// port in use leaves the data directory untouched.
    pub async fn start(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<RunningHost, HostError> {
        settings.validate()?;
        let roles = settings.roles()?;
        let listener =
            TcpListener::bind(&settings.http_addr)
                .await
                .map_err(|e| HostError::Bind {
                    addr: settings.http_addr.clone(),
                    reason: e.to_string(),
                })?;
        let addr = listener.local_addr().map_err(|e| HostError::Bind {
            addr: settings.http_addr.clone(),
            reason: e.to_string(),
        })?;
        let mut settings = settings;
        // With port 0 the public URL must name the port actually bound.
        settings.http_addr = addr.to_string();
        let settings = Arc::new(settings);

        let Opened {
            ports,
            local_objects: objects,
        } = open_ports(&settings, clock).await?;

        provision_accounts(&ports, &settings).await?;

        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let metrics = crate::telemetry::metrics_handle();

        let ctx = relaycast_functions::Context::new(ports.clone(), settings.clone());
        let mut router = host_routes(HostState {
            queue: ports.queue.clone(),
            objects,
            metrics,
        });
        if roles.contains(&Role::Api) {
            router = router.merge(relaycast_functions::http_routes(ctx.clone()));
        }
        if roles.contains(&Role::Scheduler) {
            let (ctx, stop) = (ctx.clone(), shutdown.clone());
            tasks.spawn(async move {
                relaycast_functions::scheduler::run(ctx, stop).await;
                Ok(())
            });
        }
        if roles.contains(&Role::Relay) {
            let worker = relaycast_workers::relay::worker::RelayWorker::new(
                ports.clone(),
                settings.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                worker.run().await;
                Ok(())
            });
        }
        if roles.contains(&Role::Recorder) {
            let recorder = relaycast_workers::recorder::worker::RecorderWorker::new(
                ports.clone(),
                settings.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                recorder.run().await;
                Ok(())
            });
        }
        if roles.contains(&Role::Notifier) {
            let notifier =
                relaycast_functions::notifier::Notifier::new(ctx.clone()).map_err(|e| {
                    HostError::Adapter {
                        what: "the notifier",
                        reason: e.to_string(),
                    }
                })?;
            let stop = shutdown.clone();
            tasks.spawn(async move {
                notifier.run(stop).await;
                Ok(())
            });
            // Object notices become media records and the record notices it delivers.
            let (ctx, stop) = (ctx.clone(), shutdown.clone());
            tasks.spawn(async move {
                relaycast_functions::recordings::run(ctx, stop).await;
                Ok(())
            });
        }
        let router = router.layer(axum::middleware::from_fn(observe_requests));
        let stop = shutdown.clone();
        tasks.spawn(async move {
            // The peer address reaches handlers (the inbound hooks record the ingest node's IP).
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(|e| HostError::Serve(e.to_string()))
        });

        tracing::info!(%addr, roles = ?roles, data_dir = %settings.data_dir.display(), "relaycast up");
        Ok(RunningHost {
            addr,
            ports,
            settings,
            shutdown,
            tasks,
        })
    }
}

impl RunningHost {
    /// Runs until SIGINT/SIGTERM or until a part fails, then drains.
    pub async fn run_until_signal(mut self) -> Result<(), HostError> {
        let result = tokio::select! {
            _ = shutdown_signal() => Ok(()),
            Some(joined) = self.tasks.join_next() => flatten(joined),
        };
        self.shutdown().await;
        result
    }

    /// Asks every part to stop and waits for them, up to the drain timeout.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let drain = Duration::from_millis(self.settings.timing.drain_timeout_ms);
        let drained = tokio::time::timeout(drain, async {
            while let Some(joined) = self.tasks.join_next().await {
                if let Err(e) = flatten(joined) {
                    tracing::warn!(error = %e, "part stopped with an error during shutdown");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("drain timed out; aborting remaining parts");
            self.tasks.abort_all();
        }
        tracing::info!("relaycast stopped");
    }
}

fn flatten(joined: Result<Result<(), HostError>, tokio::task::JoinError>) -> Result<(), HostError> {
    joined.map_err(|e| HostError::Serve(format!("a part panicked: {e}")))?
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

impl From<OpenError> for HostError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Embedded(relaycast_embedded::EmbeddedError::DataDir { path, reason }) => {
                HostError::DataDir { path, reason }
            }
            OpenError::Embedded(relaycast_embedded::EmbeddedError::Adapter { what, reason }) => {
                HostError::Adapter { what, reason }
            }
            other => HostError::Open(other),
        }
    }
}

/// Stores the accounts the config declares (the config wins over what is stored), or, when it
/// declares none and none exists, creates a development account and prints it once.
async fn provision_accounts(ports: &Ports, settings: &Settings) -> Result<(), HostError> {
    let fail = |e: StoreError| HostError::Adapter {
        what: "store",
        reason: e.to_string(),
    };
    relaycast_core::app::auth::store_declared_accounts(ports, &settings.accounts)
        .await
        .map_err(fail)?;
    if settings.accounts.is_empty()
        && ports
            .store
            .load::<Account>(DEV_ACCOUNT)
            .await
            .map_err(fail)?
            .is_none()
    {
        let account = Account::new(DEV_ACCOUNT, SecretKey::generate());
        match ports.store.save(&account, Condition::Absent).await {
            Ok(_) => {
                // Printed once, on creation: the key is not shown again.
                println!(
                    "development account created: n={} key={}",
                    account.name,
                    account.secret_key.expose()
                );
            }
            Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

/// The name of the account created when the config declares none.
pub const DEV_ACCOUNT: &str = "dev";

//! A DNS resolver for outbound HTTP to user-supplied URLs (callbacks, watermark images): names
//! are resolved, and any answer inside the operator's network is refused, so a user cannot point
//! a public-looking name at an internal address. IP literals never reach a resolver; callers check
//! them with [`crate::domain::targets::check_url_host`].

use std::net::SocketAddr;

use crate::domain::targets::check_resolved;

/// Resolves with the system resolver and refuses internal addresses unless `allow_private`.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// The operator's `allow_private_targets`.
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ips: Vec<_> = addrs.iter().map(|a| a.ip()).collect();
            check_resolved(&host, &ips, allow_private)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

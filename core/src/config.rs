//! The SDK's configuration: the home directory, the guest assets directory,
//! the accelerator and how registries are reached. A caller sets a process default
//! ([`Config::set_default`]) and overrides it for one scope of async work
//! ([`Config::scope`]), so a binding can give each client its own home and
//! tests can run side by side in one process. Each field falls back, on its
//! own, from the scope to the process default to the environment
//! (`MSB_HOME`, `MSB_KERNEL_DIR`, `MSB_ACCEL`) to the built-in default. Every
//! call resolves the configuration once, when it starts, into an
//! [`MsbHome`]; nothing below the entry points reads the environment.

use std::future::Future;
use std::path::PathBuf;
use std::sync::RwLock;

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::AccelMode;
use crate::home::{MsbHome, RegistrySettings};

/// Where the SDK keeps its state and how it runs guests. `None` fields fall
/// back to the next level (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The home directory (snapshots, sandboxes, images, database).
    pub home: Option<PathBuf>,
    /// The directory holding the guest kernel, modules and init.
    pub guest_assets_dir: Option<PathBuf>,
    /// The accelerator (`auto` picks KVM only where a probe boot works).
    pub accel: Option<AccelMode>,
    /// Registry hosts (`host` or `host:port`) reached over plain HTTP when
    /// TLS fails, besides `localhost` and `127.0.0.1` (env
    /// `MSB_REGISTRY_INSECURE`, comma-separated).
    pub registry_insecure_hosts: Option<Vec<String>>,
    /// A PEM file of extra CA certificates for registries (env `MSB_REGISTRY_CA`).
    pub registry_ca: Option<PathBuf>,
    /// Pull a missing image when a sandbox is created from it (env
    /// `MSB_IMPLICIT_PULL`, `0` or `1`; default on).
    pub implicit_pull: Option<bool>,
    /// The directory of Docker's `config.json`, whose `auths` give registry
    /// credentials per host (env `DOCKER_CONFIG`, else `~/.docker`).
    pub docker_config_dir: Option<PathBuf>,
    /// The DNS server (`IP:PORT`) sandboxes' queries are forwarded to (env
    /// `MSB_DNS_UPSTREAM`; default: the host's first `nameserver`).
    pub dns_upstream: Option<std::net::SocketAddr>,
}

/// Environment variable: extra insecure registry hosts, comma-separated.
pub const MSB_REGISTRY_INSECURE_ENV: &str = "MSB_REGISTRY_INSECURE";
/// Environment variable: a PEM file of CA certificates for registries.
pub const MSB_REGISTRY_CA_ENV: &str = "MSB_REGISTRY_CA";
/// Environment variable: `0` turns off the implicit pull.
pub const MSB_IMPLICIT_PULL_ENV: &str = "MSB_IMPLICIT_PULL";
/// Environment variable: the DNS server (`IP:PORT`) sandboxes' queries go to.
pub const MSB_DNS_UPSTREAM_ENV: &str = "MSB_DNS_UPSTREAM";

static PROCESS_DEFAULT: RwLock<Config> = RwLock::new(Config {
    home: None,
    guest_assets_dir: None,
    accel: None,
    registry_insecure_hosts: None,
    registry_ca: None,
    implicit_pull: None,
    docker_config_dir: None,
    dns_upstream: None,
});

tokio::task_local! {
    static SCOPED: Config;
}

impl Config {
    /// A configuration with every field unset (everything falls back).
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the home directory.
    pub fn home(mut self, dir: impl Into<PathBuf>) -> Self {
        self.home = Some(dir.into());
        self
    }

    /// Set the guest assets directory.
    pub fn guest_assets_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.guest_assets_dir = Some(dir.into());
        self
    }

    /// Set the accelerator.
    pub fn accel(mut self, accel: AccelMode) -> Self {
        self.accel = Some(accel);
        self
    }

    /// Set the extra registry hosts reached over plain HTTP.
    pub fn registry_insecure_hosts(mut self, hosts: Vec<String>) -> Self {
        self.registry_insecure_hosts = Some(hosts);
        self
    }

    /// Set a PEM file of extra CA certificates for registries.
    pub fn registry_ca(mut self, file: impl Into<PathBuf>) -> Self {
        self.registry_ca = Some(file.into());
        self
    }

    /// Turn the implicit pull (on sandbox creation) on or off.
    pub fn implicit_pull(mut self, on: bool) -> Self {
        self.implicit_pull = Some(on);
        self
    }

    /// Forward sandboxes' DNS queries to this server instead of the host's.
    pub fn dns_upstream(mut self, server: std::net::SocketAddr) -> Self {
        self.dns_upstream = Some(server);
        self
    }

    /// Set the directory of Docker's `config.json` (registry credentials).
    pub fn docker_config_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.docker_config_dir = Some(dir.into());
        self
    }

    /// Make `config` the process default: every call outside a
    /// [`scope`](Self::scope) uses it (its unset fields still fall back to
    /// the environment).
    pub fn set_default(config: Config) {
        *PROCESS_DEFAULT.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The process default set by [`set_default`](Self::set_default).
    pub fn process_default() -> Config {
        PROCESS_DEFAULT
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Run `work` with this configuration overriding the process default
    /// for every SDK call made inside it (on this task). Scopes nest: an
    /// inner scope's set fields win, its unset fields come from the outer
    /// scope.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        let merged = self.over(Self::scoped().unwrap_or_default());
        SCOPED.scope(merged, work).await
    }

    /// The configuration in force here, field by field: this scope's, else
    /// the process default's (environment fallbacks not applied).
    pub fn current() -> Config {
        let default = Self::process_default();
        match Self::scoped() {
            Some(scoped) => scoped.over(default),
            None => default,
        }
    }

    /// Resolve the configuration in force into a home: unset fields take the
    /// environment, then the built-in defaults.
    pub fn resolve() -> MicrosandboxResult<MsbHome> {
        Self::current().resolve_self()
    }

    /// Resolve this configuration as a scope would be: unset fields take the
    /// process default, then the environment. For blocking work that runs
    /// outside [`scope`](Self::scope) (a binding's worker thread).
    pub fn resolve_as_scope(&self) -> MicrosandboxResult<MsbHome> {
        self.clone().over(Self::process_default()).resolve_self()
    }

    /// Resolve this configuration (not the one in force) into a home.
    pub fn resolve_self(&self) -> MicrosandboxResult<MsbHome> {
        let root = match &self.home {
            Some(dir) => dir.clone(),
            None => MsbHome::root_from_env()?,
        };
        let accel = match self.accel {
            Some(accel) => accel,
            None => AccelMode::from_env()?,
        };
        Ok(MsbHome::at(root)
            .with_guest_assets_dir(self.guest_assets_dir.clone())
            .with_accel(accel)
            .with_registry(self.registry_settings()?)
            .with_dns_upstream(self.dns_upstream_setting()?))
    }

    /// The DNS server for sandboxes: set, else the environment, else none
    /// (the runtime then uses the host's resolver).
    fn dns_upstream_setting(&self) -> MicrosandboxResult<Option<std::net::SocketAddr>> {
        if self.dns_upstream.is_some() {
            return Ok(self.dns_upstream);
        }
        match std::env::var(MSB_DNS_UPSTREAM_ENV) {
            Ok(v) if !v.is_empty() => v.parse().map(Some).map_err(|_| {
                MicrosandboxError::InvalidConfig(format!(
                    "{MSB_DNS_UPSTREAM_ENV}={v} is not IP:PORT"
                ))
            }),
            _ => Ok(None),
        }
    }

    /// The registry settings: set fields, else the environment, else defaults.
    fn registry_settings(&self) -> MicrosandboxResult<RegistrySettings> {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let insecure_hosts = match &self.registry_insecure_hosts {
            Some(hosts) => hosts.clone(),
            None => env(MSB_REGISTRY_INSECURE_ENV)
                .map(|v| {
                    v.to_string_lossy()
                        .split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        };
        let implicit_pull = match self.implicit_pull {
            Some(on) => on,
            None => match env(MSB_IMPLICIT_PULL_ENV)
                .as_deref()
                .and_then(|v| v.to_str())
            {
                None | Some("1") => true,
                Some("0") => false,
                Some(other) => {
                    return Err(MicrosandboxError::InvalidConfig(format!(
                        "{MSB_IMPLICIT_PULL_ENV}={other} is not 0 or 1"
                    )));
                }
            },
        };
        // Docker's own lookup: $DOCKER_CONFIG, else ~/.docker.
        let docker_config_dir = self.docker_config_dir.clone().or_else(|| {
            env("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".docker")))
        });
        Ok(RegistrySettings {
            insecure_hosts,
            ca_file: self
                .registry_ca
                .clone()
                .or_else(|| env(MSB_REGISTRY_CA_ENV).map(PathBuf::from)),
            docker_config_dir,
            implicit_pull,
        })
    }

    fn scoped() -> Option<Config> {
        SCOPED.try_with(Config::clone).ok()
    }

    /// `self`'s set fields, `base`'s where `self` has none.
    fn over(self, base: Config) -> Config {
        Config {
            home: self.home.or(base.home),
            guest_assets_dir: self.guest_assets_dir.or(base.guest_assets_dir),
            accel: self.accel.or(base.accel),
            registry_insecure_hosts: self
                .registry_insecure_hosts
                .or(base.registry_insecure_hosts),
            registry_ca: self.registry_ca.or(base.registry_ca),
            implicit_pull: self.implicit_pull.or(base.implicit_pull),
            docker_config_dir: self.docker_config_dir.or(base.docker_config_dir),
            dns_upstream: self.dns_upstream.or(base.dns_upstream),
        }
    }
}

impl MsbHome {
    /// The home of the configuration in force (scope, process default,
    /// environment; see [`Config`]). Defined here, beside [`Config::resolve`],
    /// so that `home` stays below `config`.
    pub fn resolve() -> MicrosandboxResult<Self> {
        Config::resolve()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scopes_override_field_by_field_and_nest() {
        let outer = Config::new().home("/outer").accel(AccelMode::Tcg);
        outer
            .scope(async {
                assert_eq!(Config::current().home, Some(PathBuf::from("/outer")));
                Config::new()
                    .home("/inner")
                    .scope(async {
                        let c = Config::current();
                        assert_eq!(c.home, Some(PathBuf::from("/inner")));
                        assert_eq!(c.accel, Some(AccelMode::Tcg));
                        let home = Config::resolve().unwrap();
                        assert_eq!(home.root(), std::path::Path::new("/inner"));
                        assert_eq!(home.accel(), AccelMode::Tcg);
                    })
                    .await;
                assert_eq!(Config::current().home, Some(PathBuf::from("/outer")));
            })
            .await;
    }

    #[tokio::test]
    async fn concurrent_scopes_do_not_see_each_other() {
        let task = |dir: &'static str| {
            tokio::spawn(Config::new().home(dir).scope(async move {
                for _ in 0..50 {
                    assert_eq!(Config::resolve().unwrap().root(), std::path::Path::new(dir));
                    tokio::task::yield_now().await;
                }
            }))
        };
        let (a, b) = (task("/a"), task("/b"));
        a.await.unwrap();
        b.await.unwrap();
    }
}

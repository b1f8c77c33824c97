//! Where microsandbox keeps its state on disk (`MSB_HOME`, default
//! `~/.microsandbox`) and the bare-name rule that maps a snapshot name to a
//! directory under it. Everything that needs a path under the home asks here.
//! An [`MsbHome`] is also the resolved [`Config`](crate::Config) of one call:
//! it carries the guest assets directory and accelerator ([`AccelMode`])
//! chosen for it, so work below the entry points never consults the
//! environment. It is resolved by `config` (which sits above this module).

use std::path::{Path, PathBuf};

use crate::error::{MicrosandboxError, MicrosandboxResult};

/// Environment variable that overrides the home directory.
pub const MSB_HOME_ENV: &str = "MSB_HOME";

/// Name of the home directory under the user's `$HOME` when `MSB_HOME` is unset.
pub const DEFAULT_HOME_DIR_NAME: &str = ".microsandbox";

/// Environment variable choosing the accelerator.
pub const MSB_ACCEL_ENV: &str = "MSB_ACCEL";

/// The accelerator a caller asks for: a fixed one, or `Auto` (KVM only
/// after a probe boot succeeded on this host kernel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AccelMode {
    /// KVM where it runs guests, otherwise TCG.
    #[default]
    Auto,
    /// Always KVM.
    Kvm,
    /// Always TCG (software emulation).
    Tcg,
}

impl AccelMode {
    /// The mode named by `MSB_ACCEL` (`Auto` when unset or empty).
    pub fn from_env() -> MicrosandboxResult<Self> {
        match std::env::var(MSB_ACCEL_ENV) {
            Ok(value) => value.parse().map_err(|_| {
                MicrosandboxError::InvalidConfig(format!(
                    "{MSB_ACCEL_ENV}={value} is not one of auto, kvm, tcg"
                ))
            }),
            Err(_) => Ok(Self::Auto),
        }
    }

    /// Stable name: `auto`, `kvm` or `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

impl std::str::FromStr for AccelMode {
    type Err = MicrosandboxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" | "" => Ok(Self::Auto),
            "kvm" => Ok(Self::Kvm),
            "tcg" => Ok(Self::Tcg),
            other => Err(MicrosandboxError::InvalidConfig(format!(
                "accelerator {other:?} is not one of auto, kvm, tcg"
            ))),
        }
    }
}

/// The microsandbox home directory and the well-known folders inside it,
/// with the guest assets directory and accelerator of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsbHome {
    root: PathBuf,
    guest_assets_dir: Option<PathBuf>,
    accel: AccelMode,
    registry: RegistrySettings,
    dns_upstream: Option<std::net::SocketAddr>,
}

/// Hosts that always get plain HTTP (after a failed TLS attempt): a
/// registry on this machine.
pub const DEFAULT_INSECURE_REGISTRIES: &[&str] = &["localhost", "127.0.0.1"];

/// How registries are reached, resolved from [`Config`](crate::Config) and
/// the environment once per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Hosts (`host` or `host:port`) that may be reached over plain HTTP, in
    /// addition to [`DEFAULT_INSECURE_REGISTRIES`].
    pub insecure_hosts: Vec<String>,
    /// A PEM file of extra CA certificates trusted for registries.
    pub ca_file: Option<PathBuf>,
    /// The directory of Docker's `config.json` (credentials per host).
    pub docker_config_dir: Option<PathBuf>,
    /// Pull an image that is not present when a sandbox is created from it.
    pub implicit_pull: bool,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            insecure_hosts: Vec::new(),
            ca_file: None,
            docker_config_dir: None,
            implicit_pull: true,
        }
    }
}

impl RegistrySettings {
    /// Whether `registry` (`host` or `host:port`) may be reached over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let host = match registry.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => registry,
        };
        DEFAULT_INSECURE_REGISTRIES
            .iter()
            .map(|h| h.to_string())
            .chain(self.insecure_hosts.iter().cloned())
            .any(|h| h == registry || h == host)
    }
}

impl MsbHome {
    /// The home directory named by the environment: `MSB_HOME`, else
    /// `$HOME/.microsandbox`.
    pub(crate) fn root_from_env() -> MicrosandboxResult<PathBuf> {
        if let Some(dir) = std::env::var_os(MSB_HOME_ENV).filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => Ok(Path::new(&home).join(DEFAULT_HOME_DIR_NAME)),
            None => Err(MicrosandboxError::InvalidConfig(format!(
                "cannot locate the microsandbox home: set {MSB_HOME_ENV} or HOME"
            ))),
        }
    }

    /// A home rooted at an explicit directory, with no explicit guest
    /// assets directory and automatic acceleration.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            guest_assets_dir: None,
            accel: AccelMode::Auto,
            registry: RegistrySettings::default(),
            dns_upstream: None,
        }
    }

    /// The same home with an explicit guest assets directory (`None`: search;
    /// see [`runtime::guest_assets_search`](crate::runtime::guest_assets_search)).
    pub fn with_guest_assets_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.guest_assets_dir = dir;
        self
    }

    /// The same home with another accelerator.
    pub fn with_accel(mut self, accel: AccelMode) -> Self {
        self.accel = accel;
        self
    }

    /// The same home with other registry settings.
    pub fn with_registry(mut self, registry: RegistrySettings) -> Self {
        self.registry = registry;
        self
    }

    /// The same home with another DNS server for sandboxes (`None`: the
    /// environment's, else the host's).
    pub fn with_dns_upstream(mut self, server: Option<std::net::SocketAddr>) -> Self {
        self.dns_upstream = server;
        self
    }

    /// The DNS server set for sandboxes' queries, if any.
    pub fn dns_upstream(&self) -> Option<std::net::SocketAddr> {
        self.dns_upstream
    }

    /// How registries are reached.
    pub fn registry(&self) -> &RegistrySettings {
        &self.registry
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The guest assets directory set explicitly, if any.
    pub fn guest_assets_dir(&self) -> Option<&Path> {
        self.guest_assets_dir.as_deref()
    }

    /// The accelerator asked for.
    pub fn accel(&self) -> AccelMode {
        self.accel
    }

    /// Default directory of snapshot artifacts; bare names resolve here.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Per-sandbox state directories.
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    /// OCI blobs and built root images, by digest.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Guest kernel and modules installed into the home (one place the
    /// guest assets are searched).
    pub fn kernel_dir(&self) -> PathBuf {
        self.root.join("kernel")
    }

    /// Derived files that can always be rebuilt (initramfs images, probes).
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// SQLite databases (snapshot index, sandbox registry).
    pub fn db_dir(&self) -> PathBuf {
        self.root.join("db")
    }
}

/// A bare name is not empty, has no `/`, and does not start with `.` or `~`.
/// Bare names resolve under the snapshots directory; anything else is a path.
pub fn is_bare_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.starts_with('.') && !s.starts_with('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_follow_the_seed_rule() {
        for name in ["baseline", "after-pip-install", "a.b", "x~y", "ünï"] {
            assert!(is_bare_name(name), "{name}");
        }
        for not_name in ["", "a/b", "/abs", "./rel", ".hidden", "~", "~/snap", ".."] {
            assert!(!is_bare_name(not_name), "{not_name}");
        }
    }
}

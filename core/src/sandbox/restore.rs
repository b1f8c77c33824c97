//! Sandboxes from snapshots by name: `restore` (a full snapshot forks, no
//! boot; a disk snapshot boots cold), its overrides ([`RestoreBuilder`]),
//! and the preview's names for saving and deleting snapshots. A fork gets
//! its own copy of the upper disk, maps the snapshot's RAM copy-on-write
//! and is given its own identity (hostname, clock, entropy) before it is
//! handed out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::registry::{self, SandboxConfig, SandboxRecord, SandboxState};
use super::{Sandbox, SandboxHandle, UPPER_FILE, pinned_image, validate_name};
use crate::control::{CallOpts, Control, long_call};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::network::NetworkConfig;
use crate::runtime::{self, BootRequest, ForkRam, Identity, RestoreFrom};
use crate::sandbox_store;
use crate::snapshot::{Snapshot, SnapshotHandle, SnapshotKind, VmSection};

/// Overrides for [`Snapshot::restore_with`]: memory, CPUs, environment.
#[derive(Debug, Clone, Default)]
pub struct RestoreBuilder {
    memory_mib: Option<u32>,
    cpus: Option<u32>,
    env: BTreeMap<String, String>,
}

impl RestoreBuilder {
    /// Guest memory in MiB. A fork may have less than its snapshot (the
    /// balloon takes the rest back), never more: its RAM is the snapshot's.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = Some(mib);
        self
    }

    /// Online virtual CPUs. A fork may have fewer than its snapshot (the
    /// rest are taken offline in the guest), never more.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = Some(cpus);
        self
    }

    /// Set an environment variable for every command of the new sandbox.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
}

impl Snapshot {
    /// Fork a new sandbox called `sandbox_name` from this snapshot. A full
    /// snapshot continues exactly where it was captured (no boot) on its
    /// own copy-on-write disk; a disk snapshot boots cold from its upper.
    pub async fn restore(&self, sandbox_name: impl Into<String>) -> MicrosandboxResult<Sandbox> {
        self.restore_with(sandbox_name, |b| b).await
    }

    /// [`restore`](Self::restore) with overrides: memory and CPUs (down
    /// only, for a full snapshot; `InvalidConfig` for more) and env.
    pub async fn restore_with(
        &self,
        name: impl Into<String>,
        f: impl FnOnce(RestoreBuilder) -> RestoreBuilder,
    ) -> MicrosandboxResult<Sandbox> {
        let (home, snap, name) = (MsbHome::resolve()?, self.clone(), name.into());
        let overrides = f(RestoreBuilder::default());
        let handle = long_call(CallOpts::default(), move |control| {
            restore_blocking(&home, &snap, &name, overrides, control)
        })
        .await?;
        Ok(Sandbox { handle })
    }

    /// Keep this snapshot under the bare `name` in the snapshots directory
    /// (durably, and indexed), so it outlives its source sandbox. Load it
    /// again with [`Snapshot::get`].
    pub async fn save_named(&self, name: &str) -> MicrosandboxResult<()> {
        let (home, snap, name) = (MsbHome::resolve()?, self.clone(), name.to_string());
        crate::control::blocking(move || {
            crate::snapshot::full::save_named_blocking(&home, &snap, &name).map(|_| ())
        })
        .await
    }

    /// Delete the named snapshot: the preview's name for
    /// [`Snapshot::remove`] without `force`.
    pub async fn delete(name: &str) -> MicrosandboxResult<()> {
        Snapshot::remove(name, false).await
    }
}

impl SnapshotHandle {
    /// Open this snapshot and [`restore`](Snapshot::restore) it.
    pub async fn restore(&self, sandbox_name: impl Into<String>) -> MicrosandboxResult<Sandbox> {
        self.open().await?.restore(sandbox_name).await
    }

    /// Open this snapshot and [`restore_with`](Snapshot::restore_with) it.
    pub async fn restore_with(
        &self,
        name: impl Into<String>,
        f: impl FnOnce(RestoreBuilder) -> RestoreBuilder,
    ) -> MicrosandboxResult<Sandbox> {
        self.open().await?.restore_with(name, f).await
    }
}

/// Restore `snap` as the new sandbox `name`. Blocking.
pub(crate) fn restore_blocking(
    home: &MsbHome,
    snap: &Snapshot,
    name: &str,
    overrides: RestoreBuilder,
    control: &Control,
) -> MicrosandboxResult<SandboxHandle> {
    validate_name(name)?;
    let Some(vm) = snap.vm() else {
        let mut builder = Sandbox::builder(name).from_snapshot(snap.path().to_string_lossy());
        if let Some(mib) = overrides.memory_mib {
            builder = builder.memory_mib(mib);
        }
        if let Some(cpus) = overrides.cpus {
            builder = builder.cpus(cpus);
        }
        for (k, v) in overrides.env {
            builder = builder.env(k, v);
        }
        return builder.create_blocking(home, control);
    };
    debug_assert_eq!(snap.kind(), SnapshotKind::Full);
    check_overrides(vm, &overrides)?;
    snap.verify_stamped(home, control)?;
    // Held until the fork's row names the image (see `image::lock`).
    let _store = crate::image::StoreLock::shared(home)?;
    let image = pinned_image(home, snap)?;
    let claim = sandbox_store::claim(home, name)?;
    let dir = claim.dir.clone();
    let mut env = vm.env.clone();
    env.extend(overrides.env.clone());
    let fork = Fork {
        snap,
        vm,
        name,
        lower_path: image.lower_path,
        env,
        working_dir: vm.working_dir.clone(),
        memory_mib: overrides.memory_mib,
        cpus: overrides.cpus,
        ram_mode: ForkRam::Mapped,
        network: None,
    };
    let forked = fork.run(home, &dir, control);
    if forked.is_err() {
        let _ = crate::publish::remove_dir_atomically(&dir);
    }
    drop(claim);
    forked
}

/// Memory and CPUs may go down, not up.
fn check_overrides(vm: &VmSection, overrides: &RestoreBuilder) -> MicrosandboxResult<()> {
    let machine = &vm.machine;
    if let Some(mib) = overrides.memory_mib
        && (mib > machine.memory_mib || mib < 64)
    {
        return Err(MicrosandboxError::InvalidConfig(format!(
            "memory_mib {mib}: a fork runs in its snapshot's RAM ({} MiB), so it can keep \
             64..={} MiB (the balloon returns the rest) but never gain more",
            machine.memory_mib, machine.memory_mib
        )));
    }
    if let Some(cpus) = overrides.cpus
        && (cpus > machine.cpus || cpus == 0)
    {
        return Err(MicrosandboxError::InvalidConfig(format!(
            "cpus {cpus}: a fork has its snapshot's {} vCPUs; it can take some offline \
             (1..={}) but cannot add any (the CPU state saved is for {} vCPUs)",
            machine.cpus, machine.cpus, machine.cpus
        )));
    }
    Ok(())
}

/// A new sandbox forked from a full snapshot, and how it differs from it.
pub(super) struct Fork<'a> {
    pub snap: &'a Snapshot,
    pub vm: &'a VmSection,
    pub name: &'a str,
    pub lower_path: PathBuf,
    /// The environment of its commands.
    pub env: BTreeMap<String, String>,
    pub working_dir: String,
    /// Less memory than the snapshot's (balloon).
    pub memory_mib: Option<u32>,
    /// Fewer CPUs than the snapshot's (taken offline).
    pub cpus: Option<u32>,
    /// Whose RAM it runs in (unless it shrinks: then its own, private).
    pub ram_mode: ForkRam,
    /// Its network (`None`: what a fork of this snapshot gets by default).
    pub network: Option<NetworkConfig>,
}

impl Fork<'_> {
    /// Start the fork in the claimed directory `dir` (the caller holds its
    /// lock) and register it; on failure its VM is gone (the caller
    /// removes `dir`).
    pub(super) fn run(
        self,
        home: &MsbHome,
        dir: &Path,
        control: &Control,
    ) -> MicrosandboxResult<SandboxHandle> {
        let Fork {
            snap,
            vm,
            name,
            lower_path,
            env,
            working_dir,
            memory_mib,
            cpus,
            ram_mode,
            network,
        } = self;
        let upper = dir.join(UPPER_FILE);
        let from = snap.upper_path();
        crate::sparse::copy_sparse(&from, &upper).map_err(|e| MicrosandboxError::io(&from, e))?;
        let config = SandboxConfig {
            image_ref: snap.image_ref().to_string(),
            image_manifest_digest: snap.image_manifest_digest().to_string(),
            lower_path,
            memory_mib: vm.machine.memory_mib,
            cpus: vm.machine.cpus,
            env,
            working_dir,
            vm_name: runtime::vm_name(dir),
            network: network.unwrap_or_else(|| runtime::fork_network(&vm.machine)),
        };
        let req = BootRequest {
            vm_name: config.vm_name.clone(),
            sandbox_dir: dir.to_path_buf(),
            lower: config.lower_path.clone(),
            upper,
            memory_mib: config.memory_mib,
            cpus: config.cpus,
            hostname: name.to_string(),
            network: config.network.clone(),
            dns_upstream: home.dns_upstream(),
        };
        let shrink = memory_mib.filter(|&m| m < vm.machine.memory_mib);
        let from = RestoreFrom {
            ram: snap.path().join(&vm.ram.file),
            state: snap.path().join(&vm.state.file),
            machine: vm.machine.clone(),
            ram_mode: if shrink.is_some() {
                ForkRam::OwnPrivate
            } else {
                ram_mode
            },
        };
        let cpus_online = cpus.filter(|&c| c < vm.machine.cpus);
        let identity = Identity::new(name, cpus_online);
        let running = runtime::restore(home, &req, &from, &identity, control)?;
        let finish = (|| {
            if let Some(mib) = shrink {
                runtime::set_balloon(dir, &config.vm_name, mib)?;
            }
            let record = SandboxRecord {
                name: name.to_string(),
                config: config.clone(),
                state: SandboxState::Running,
                pid: Some(running.pid),
                created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            };
            registry::insert(home, &record)?;
            Ok(SandboxHandle::from_record(home, record))
        })();
        if finish.is_err() {
            runtime::kill(dir, &config.vm_name, running.pid);
        }
        finish
    }
}

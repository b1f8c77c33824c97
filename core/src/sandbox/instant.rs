//! Instant create: the first sandbox of a shape boots cold and leaves a
//! base full snapshot of the freshly booted guest in
//! `MSB_HOME/cache/base/<key>/`; later creates of the same shape fork it
//! instead of booting. The key covers everything that shapes the booted
//! guest (`docs/full-snapshots.md`), so a change of any part makes a new
//! base; a base that no longer restores is dropped and the create boots cold.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::restore::Fork;
use super::{SandboxHandle, registry};
use crate::control::Control;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::image::ImageInfo;
use crate::network::NetworkConfig;
use crate::publish;
use crate::runtime;
use crate::sandbox_store::registry::SandboxState;
use crate::snapshot::Snapshot;

/// Everything a base is keyed by, besides the runtime's side.
pub(super) struct Shape<'a> {
    pub image: &'a ImageInfo,
    pub memory_mib: u32,
    pub cpus: u32,
    pub upper_size_bytes: u64,
    /// With a network card (any policy but `none`; the policy itself is
    /// the host's business, so bases are shared across policies).
    pub nic: bool,
}

/// The directory of the base snapshot for `shape`.
pub(super) fn base_dir(home: &MsbHome, shape: &Shape<'_>) -> MicrosandboxResult<PathBuf> {
    // The root disk's file identity too: a base's page cache must meet the
    // very bytes it booted over, and a root disk rebuilt after `image rm`
    // equals the old one only if both were built reproducibly (disks built
    // before that rule differ).
    let lower = fs::metadata(&shape.image.lower_path)
        .map_err(|e| MicrosandboxError::io(&shape.image.lower_path, e))?;
    let mut key = Sha256::new();
    key.update(runtime::boot_shape(home)?);
    key.update(format!(
        " image={} lower={}:{}:{}.{}:{} memory={} cpus={} upper={} nic={}",
        shape.image.manifest_digest,
        lower.dev(),
        lower.ino(),
        lower.mtime(),
        lower.mtime_nsec(),
        lower.len(),
        shape.memory_mib,
        shape.cpus,
        shape.upper_size_bytes,
        shape.nic
    ));
    Ok(home
        .cache_dir()
        .join("base")
        .join(&hex::encode(key.finalize())[..32]))
}

/// The sandbox a base is forked into.
pub(super) struct NewSandbox<'a> {
    pub name: &'a str,
    /// Its directory, already claimed.
    pub dir: &'a Path,
    pub image: &'a ImageInfo,
    /// The environment of its commands.
    pub env: BTreeMap<String, String>,
    /// Its own network (the base only decides whether it has a card).
    pub network: NetworkConfig,
}

/// Fork the base in `base` as the sandbox `new`. `Ok(None)` when there is no usable
/// base: a broken or incompatible one is removed, so the caller boots cold.
pub(super) fn fork_base(
    home: &MsbHome,
    base: &Path,
    new: NewSandbox<'_>,
    control: &Control,
) -> MicrosandboxResult<Option<SandboxHandle>> {
    let NewSandbox {
        name,
        dir,
        image,
        env,
        network,
    } = new;
    if !base.exists() {
        return Ok(None);
    }
    // Structure only (sizes, vm.json against its digest): the cache is as
    // trusted as the rest of the home, and hashing the RAM on every create
    // would cost more than the fork.
    let snap = match Snapshot::open_dir(base) {
        Ok(snap) if snap.vm().is_some() => snap,
        _ => {
            drop_base(base);
            return Ok(None);
        }
    };
    let vm = snap.vm().expect("checked: a full snapshot");
    let fork = Fork {
        snap: &snap,
        vm,
        name,
        lower_path: image.lower_path.clone(),
        env,
        working_dir: image.working_dir.clone(),
        memory_mib: None,
        cpus: None,
        // Its own shared RAM: a sandbox made by instant create is captured
        // as fast as a cold-booted one (the base was captured from one).
        ram_mode: crate::runtime::ForkRam::OwnShared,
        network: Some(network),
    };
    match fork.run(home, dir, control) {
        Ok(handle) => Ok(Some(handle)),
        Err(
            e @ (MicrosandboxError::SnapshotIncompatible { .. }
            | MicrosandboxError::SnapshotIntegrity { .. }
            | MicrosandboxError::ManifestInvalid { .. }
            | MicrosandboxError::Runtime(_)),
        ) => {
            log::warn!("instant create: base {} dropped: {e}", base.display());
            drop_base(base);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Capture the freshly booted sandbox `name` as the base in `base` (unless
/// one is there), then let it run on. Leaving the base is best effort (a
/// failure costs only the next create its speed); the sandbox running on
/// after it is not.
pub(super) fn leave_base(home: &MsbHome, name: &str, base: &Path) -> MicrosandboxResult<()> {
    if base.exists() {
        return Ok(());
    }
    // The create is done: a cancellation now would only lose the base.
    let detached = Control::detached();
    let snap = match crate::snapshot::full::capture_blocking(home, name, &detached) {
        Ok(snap) => snap,
        Err(e) => {
            // A failed capture resumes the sandbox itself.
            log::warn!("instant create: no base left for the next create: {e}");
            return Ok(());
        }
    };
    if let Err(e) = place(snap.path(), base) {
        log::warn!("instant create: no base left for the next create: {e}");
    }
    let rec = registry::get(home, name)?;
    let dir = crate::sandbox_store::sandbox_dir(home, name);
    runtime::resume(&dir, &rec.config.vm_name)?;
    registry::set_state(home, name, SandboxState::Running, rec.pid)
}

/// Move the captured artifact to `base`; another create of the same shape
/// may have left one first, which is as good.
fn place(artifact: &Path, base: &Path) -> MicrosandboxResult<()> {
    let parent = publish::parent_of(base);
    fs::create_dir_all(parent).map_err(|e| MicrosandboxError::io(parent, e))?;
    let moved = publish::rename_noreplace(artifact, base);
    if moved.is_err() {
        let _ = fs::remove_dir_all(artifact);
    }
    match moved {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(MicrosandboxError::io(base, e))
        }
        _ => Ok(()),
    }
}

/// Remove a base that cannot be used (renamed away first, so a concurrent
/// create never sees half of it).
fn drop_base(base: &Path) {
    let _ = publish::remove_dir_atomically(base);
}

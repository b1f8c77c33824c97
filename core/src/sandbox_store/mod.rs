//! The state a sandbox leaves on disk, below both [`sandbox`](crate::sandbox)
//! (which boots and stops sandboxes) and [`snapshot`](crate::snapshot) (which
//! captures a stopped one): the registry rows ([`registry`]), the layout of a
//! sandbox directory (`MSB_HOME/sandboxes/<name>/`, its upper disk
//! [`UPPER_FILE`]) and the directory lock ([`DirLock`]) every state change
//! holds. It knows nothing of VMs beyond asking `runtime` whether a pid is
//! still one of ours, and asking it to reap what a killed call left.
//!
//! Crash recovery (`docs/crash-safety.md`): a name is claimed by renaming a
//! staging directory that already holds the lock into place ([`claim`]),
//! and the lock is held until the registry row exists; a directory without
//! a row whose lock nobody holds was left by a killed create or remove, and
//! [`reap_abandoned`] (run by `Sandbox::list` and by a claim of that name)
//! kills its VM and deletes it.

pub mod registry;

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::{publish, runtime};
use registry::SandboxRecord;

/// File name of the writable upper disk in a sandbox directory.
pub const UPPER_FILE: &str = "upper.ext4";

/// The directory of the sandbox called `name`.
pub(crate) fn sandbox_dir(home: &MsbHome, name: &str) -> PathBuf {
    home.sandboxes_dir().join(name)
}

/// An exclusive `flock` on a sandbox directory, held for a state change so
/// two processes never boot, stop or capture the same sandbox at once.
/// Released when dropped.
pub(crate) struct DirLock {
    _lock: Flock<File>,
}

/// File name of the lock in a sandbox directory.
pub(crate) const LOCK_FILE: &str = ".lock";

impl DirLock {
    /// Wait for and take the lock of the sandbox directory `dir`
    /// (`SandboxNotFound` if a remove took the directory away).
    pub(crate) fn acquire(dir: &Path) -> MicrosandboxResult<Self> {
        let path = dir.join(LOCK_FILE);
        let file = File::create(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => MicrosandboxError::SandboxNotFound {
                name: dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            },
            _ => MicrosandboxError::io(&path, e),
        })?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| MicrosandboxError::io(&path, errno.into()))?;
        Ok(Self { _lock: lock })
    }

    /// Take the lock of `dir` if nobody holds it (`None` when someone does,
    /// or the directory is gone).
    fn try_acquire(dir: &Path) -> Option<Self> {
        let file = File::create(dir.join(LOCK_FILE)).ok()?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
        Some(Self { _lock: lock })
    }
}

/// A new sandbox's directory, claimed under its name with its lock held:
/// hold it until the sandbox's registry row exists (or the directory is
/// removed again), so nobody takes it for a killed create's leftover.
pub(crate) struct ClaimedDir {
    pub dir: PathBuf,
    _lock: DirLock,
}

/// Claim the directory of a new sandbox called `name` (`SandboxAlreadyExists`
/// if taken). The directory appears already locked: it is made and locked
/// under a hidden staging name and renamed into place. A directory of that
/// name that a killed call left behind is reaped first.
pub(crate) fn claim(home: &MsbHome, name: &str) -> MicrosandboxResult<ClaimedDir> {
    let root = home.sandboxes_dir();
    std::fs::create_dir_all(&root).map_err(|e| MicrosandboxError::io(&root, e))?;
    let staging = publish::staging_dir(&root, name)?;
    let lock = DirLock::acquire(staging.path())?;
    let dir = root.join(name);
    for _attempt in 0..2 {
        match publish::rename_noreplace(staging.path(), &dir) {
            Ok(()) => {
                // Renamed away: nothing left for the TempDir to delete.
                let _ = staging.keep();
                return Ok(ClaimedDir { dir, _lock: lock });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !reap_if_abandoned(home, name, &dir)? {
                    break;
                }
            }
            Err(e) => return Err(MicrosandboxError::io(&dir, e)),
        }
    }
    Err(MicrosandboxError::SandboxAlreadyExists { name: name.into() })
}

/// Delete what killed calls left in the sandboxes directory: directories
/// without a registry row whose lock nobody holds (a create or remove that
/// never finished; their VM, if one runs, is killed), staging and trash of
/// dead processes, and the VMs and run directories of sandboxes recorded
/// as not running (a start that never finished).
pub(crate) fn reap_abandoned(home: &MsbHome) -> MicrosandboxResult<()> {
    let root = home.sandboxes_dir();
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(());
    };
    publish::remove_abandoned_staging(&root);
    let recorded = registry::recorded_states(home)?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let has_row = recorded
            .binary_search_by(|(n, _)| n.as_str().cmp(&name))
            .is_ok();
        if name.starts_with('.') || has_row {
            continue;
        }
        reap_if_abandoned(home, &name, &entry.path())?;
    }
    // A row that records a VM is reconciled with it by the read that lists
    // it; only a row recorded without one can hide a VM nobody owns, so the
    // others cost no lock and no second read here.
    for (name, state) in recorded {
        if !state.has_vm() {
            reap_stray_vm(home, &name)?;
        }
    }
    Ok(())
}

/// Reap the sandbox directory `dir` of `name` if it has no registry row and
/// nobody holds its lock; whether it did.
fn reap_if_abandoned(home: &MsbHome, name: &str, dir: &Path) -> MicrosandboxResult<bool> {
    let Some(_lock) = DirLock::try_acquire(dir) else {
        return Ok(false);
    };
    match registry::get(home, name) {
        Err(MicrosandboxError::SandboxNotFound { .. }) => {}
        Err(e) => return Err(e),
        Ok(_) => return Ok(false),
    }
    log::warn!(
        "removing sandbox directory {} left by an interrupted call",
        dir.display()
    );
    runtime::reap(dir, &runtime::vm_name(dir));
    publish::remove_dir_atomically(dir)?;
    Ok(true)
}

/// Kill the VM of sandbox `name` if its row says it has none (a start
/// killed mid-boot leaves a detached QEMU), unless a call holds its lock.
fn reap_stray_vm(home: &MsbHome, name: &str) -> MicrosandboxResult<()> {
    let dir = sandbox_dir(home, name);
    let vm_name = runtime::vm_name(&dir);
    if !runtime::has_leftovers(&dir, &vm_name) {
        return Ok(());
    }
    let Some(_lock) = DirLock::try_acquire(&dir) else {
        return Ok(());
    };
    match registry::get(home, name) {
        Ok(record) if !record.state.has_vm() => runtime::reap(&dir, &record.config.vm_name),
        Ok(_) | Err(MicrosandboxError::SandboxNotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// A sandbox held still: its directory locked and its registry row read
/// under the lock, so the recorded state cannot change while it is held.
pub(crate) struct LockedSandbox {
    _lock: DirLock,
    /// The registry row, read under the lock.
    pub record: SandboxRecord,
    /// The sandbox directory.
    pub dir: PathBuf,
}

impl LockedSandbox {
    /// Lock the sandbox called `name` (`SandboxNotFound` if there is none).
    pub(crate) fn acquire(home: &MsbHome, name: &str) -> MicrosandboxResult<Self> {
        let record = registry::get(home, name)?;
        let dir = sandbox_dir(home, &record.name);
        let lock = DirLock::acquire(&dir)?;
        let record = registry::get(home, &record.name)?;
        Ok(Self {
            _lock: lock,
            record,
            dir,
        })
    }

    /// Path of the sandbox's upper disk.
    pub(crate) fn upper_path(&self) -> PathBuf {
        self.dir.join(UPPER_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_nobody_holds_any_more_is_reaped_and_the_name_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let home = MsbHome::at(tmp.path());
        let held = claim(&home, "k").unwrap();
        std::fs::write(held.dir.join(UPPER_FILE), "half-made").unwrap();
        // Held: a create in progress, neither taken nor reaped.
        assert_eq!(
            claim(&home, "k").err().map(|e| e.kind()),
            Some("SandboxAlreadyExists")
        );
        reap_abandoned(&home).unwrap();
        assert!(held.dir.join(UPPER_FILE).exists());
        // Released without a row, as a killed create leaves it.
        let dir = held.dir.clone();
        drop(held);
        reap_abandoned(&home).unwrap();
        assert!(!dir.exists());
        let again = claim(&home, "k").unwrap();
        drop(again);
        // A claim of the name reaps such a directory itself.
        let again = claim(&home, "k").unwrap();
        assert!(!again.dir.join(UPPER_FILE).exists());
        let leftovers: Vec<_> = std::fs::read_dir(home.sandboxes_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("k")]);
    }
}

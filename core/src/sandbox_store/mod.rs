//! The state a sandbox leaves on disk, below both [`sandbox`](crate::sandbox)
//! (which boots and stops sandboxes) and [`snapshot`](crate::snapshot) (which
//! captures a stopped one): the registry rows ([`registry`]), the layout of a
//! sandbox directory (`MSB_HOME/sandboxes/<name>/`, its upper disk
//! [`UPPER_FILE`]) and the directory lock ([`DirLock`]) every state change
//! holds. It knows nothing of VMs beyond asking `runtime` whether a pid is
//! still one of ours.

pub mod registry;

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
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

impl DirLock {
    /// Wait for and take the lock of the sandbox directory `dir`
    /// (`SandboxNotFound` if a remove took the directory away).
    pub(crate) fn acquire(dir: &Path) -> MicrosandboxResult<Self> {
        let path = dir.join(".lock");
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

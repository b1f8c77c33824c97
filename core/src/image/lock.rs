//! The image store's lock: an `flock` on `images/.lock` that keeps a remove
//! from deleting a blob or root disk another process (or thread) has put in
//! the store but not yet registered.
//!
//! The rule: whatever adds to the store (a load, a pull, the image of an
//! imported snapshot) holds the lock **shared** from before it looks at or
//! places blobs and root disks until its `images` row is written; a save
//! holds it shared while it reads. A remove holds it **exclusive** while it
//! deletes rows and sweeps files, so it never sees a file that a pending
//! row will need, and nobody registers an image whose files it is deleting.
//! Adders never wait for each other.

use std::fs::{self, File, OpenOptions};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;

/// The store's lock, held until dropped.
pub(crate) struct StoreLock {
    _lock: Flock<File>,
}

impl StoreLock {
    /// Wait for and take the lock shared (adding to or reading the store).
    pub(crate) fn shared(home: &MsbHome) -> MicrosandboxResult<Self> {
        Self::take(home, FlockArg::LockShared)
    }

    /// Wait for and take the lock exclusive (removing from the store).
    pub(crate) fn exclusive(home: &MsbHome) -> MicrosandboxResult<Self> {
        Self::take(home, FlockArg::LockExclusive)
    }

    fn take(home: &MsbHome, how: FlockArg) -> MicrosandboxResult<Self> {
        let dir = home.images_dir();
        fs::create_dir_all(&dir).map_err(|e| MicrosandboxError::io(&dir, e))?;
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| MicrosandboxError::io(&path, e))?;
        let lock = Flock::lock(file, how)
            .map_err(|(_, errno)| MicrosandboxError::io(&path, errno.into()))?;
        Ok(Self { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn an_exclusive_lock_waits_for_shared_holders_who_do_not_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let home = MsbHome::at(dir.path());
        let first = StoreLock::shared(&home).unwrap();
        let second = StoreLock::shared(&home).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _held = StoreLock::exclusive(&home).unwrap();
                tx.send(()).unwrap();
            });
            assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
            drop((first, second));
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
        });
    }
}

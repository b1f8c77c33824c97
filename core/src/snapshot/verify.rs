//! Verifying an artifact's content: the upper file must be a regular file
//! of the recorded size whose digest, under the algorithm the manifest
//! names, matches the recorded one. Opening an artifact
//! ([`Snapshot::open_dir`]) runs only the structural part
//! ([`check_upper_file`](Snapshot::check_upper_file)); the public entry
//! points are on [`Snapshot`] in the façade.

use std::fs::File;
use std::path::PathBuf;

use serde::Serialize;

use super::Snapshot;
use super::integrity::{self, IntegrityAlgorithm};
use super::manifest::{MANIFEST_FILE, UpperIntegrity, VmFile, is_sha256_digest};
use crate::control::Control;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;

/// Result of [`Snapshot::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotVerifyReport {
    /// The snapshot's manifest digest.
    pub digest: String,
    /// The artifact directory.
    pub path: PathBuf,
    /// What the upper-layer check found.
    pub upper: UpperVerifyStatus,
}

/// Upper-layer content verification result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UpperVerifyStatus {
    /// The manifest records no integrity descriptor.
    NotRecorded,
    /// The recorded digest matched the content.
    Verified {
        /// The integrity algorithm's name.
        algorithm: String,
        /// The digest computed (equal to the recorded one).
        digest: String,
    },
}

impl Snapshot {
    /// [`verify_controlled`](Self::verify_controlled), skipped when this
    /// home verified the same files before: a stamp in
    /// `cache/verified/<digest>` records each file's device, inode, size,
    /// mtime and ctime at that verification, and any write to a file (or
    /// its replacement) changes them. For boots and forks, which check an
    /// artifact on every use.
    pub(crate) fn verify_stamped(
        &self,
        home: &MsbHome,
        control: &Control,
    ) -> MicrosandboxResult<()> {
        let stamp = self.stamp_path(home);
        let fingerprint = self.fingerprint();
        if fingerprint.is_some() && std::fs::read_to_string(&stamp).ok() == fingerprint {
            return Ok(());
        }
        self.verify_controlled(control)?;
        self.write_stamp(home);
        Ok(())
    }

    /// Record that this artifact's files, as they are now, hold what its
    /// manifest says (best effort: a missing stamp only costs a verify).
    pub(crate) fn write_stamp(&self, home: &MsbHome) {
        let stamp = self.stamp_path(home);
        if let (Some(fingerprint), Some(dir)) = (self.fingerprint(), stamp.parent()) {
            let _ = std::fs::create_dir_all(dir);
            let tmp = stamp.with_extension("tmp");
            if std::fs::write(&tmp, fingerprint).is_ok() {
                let _ = std::fs::rename(&tmp, &stamp);
            }
        }
    }

    fn stamp_path(&self, home: &MsbHome) -> PathBuf {
        let hex = self
            .digest
            .split_once(':')
            .map_or(&*self.digest, |(_, h)| h);
        home.cache_dir().join("verified").join(hex)
    }

    /// Identity and change times of every file of the artifact.
    fn fingerprint(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let mut out = String::new();
        for file in super::full::artifact_files(self) {
            let m = std::fs::symlink_metadata(self.path.join(&file)).ok()?;
            out.push_str(&format!(
                "{} {} {} {} {}.{} {}.{}\n",
                file.display(),
                m.dev(),
                m.ino(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ));
        }
        Some(out)
    }

    pub(crate) fn verify_controlled(
        &self,
        control: &Control,
    ) -> MicrosandboxResult<SnapshotVerifyReport> {
        let upper = match &self.manifest.upper.integrity {
            None => {
                self.check_upper_file()?;
                UpperVerifyStatus::NotRecorded
            }
            Some(recorded) => self.verify_upper(recorded, control)?,
        };
        // A full snapshot's VM files always carry digests; any mismatch is
        // an error, so the report's shape stays that of a disk snapshot.
        if let Some(vm) = &self.vm {
            self.verify_file(&vm.state, control)?;
            self.verify_file(&vm.ram, control)?;
        }
        Ok(SnapshotVerifyReport {
            digest: self.digest.clone(),
            path: self.path.clone(),
            upper,
        })
    }

    fn verify_upper(
        &self,
        recorded: &UpperIntegrity,
        control: &Control,
    ) -> MicrosandboxResult<UpperVerifyStatus> {
        let manifest_path = self.path.join(MANIFEST_FILE);
        let algorithm = IntegrityAlgorithm::require(&recorded.algorithm, &manifest_path)?;
        if !is_sha256_digest(&recorded.digest) {
            return Err(MicrosandboxError::manifest_invalid(
                &manifest_path,
                format!(
                    "upper.integrity.digest must be sha256:<64 lowercase hex> for {algorithm}, got {:?}",
                    recorded.digest
                ),
            ));
        }
        let upper_path = self.upper_path();
        // Hash the same open file whose size was checked, so a swap between
        // the check and the read cannot pass.
        let file = self.check_upper_file()?;
        let computed =
            integrity::digest_open_file(&file, self.manifest.upper.size_bytes, algorithm, control)
                .map_err(|e| MicrosandboxError::io(&upper_path, e))?;
        if computed != recorded.digest {
            return Err(MicrosandboxError::integrity(
                &self.path,
                format!(
                    "upper digest mismatch ({algorithm}): manifest={}, file={computed}",
                    recorded.digest
                ),
            ));
        }
        Ok(UpperVerifyStatus::Verified {
            algorithm: algorithm.name().to_string(),
            digest: computed,
        })
    }

    /// Check one VM file's digest against the manifest.
    fn verify_file(&self, recorded: &VmFile, control: &Control) -> MicrosandboxResult<()> {
        let manifest_path = self.path.join(MANIFEST_FILE);
        let algorithm = IntegrityAlgorithm::require(&recorded.integrity.algorithm, &manifest_path)?;
        let file = self.check_file(recorded)?;
        let path = self.path.join(&recorded.file);
        let computed = integrity::digest_open_file(&file, recorded.size_bytes, algorithm, control)
            .map_err(|e| MicrosandboxError::io(&path, e))?;
        if computed != recorded.integrity.digest {
            return Err(MicrosandboxError::integrity(
                &self.path,
                format!(
                    "{} digest mismatch ({algorithm}): manifest={}, file={computed}",
                    recorded.file, recorded.integrity.digest
                ),
            ));
        }
        Ok(())
    }

    /// The error for a file of this artifact that is not there: the
    /// artifact is damaged (`SnapshotIntegrity`), unless its manifest is gone
    /// too: then a remove took the whole directory away after this artifact
    /// was opened (`SnapshotNotFound`), which is no damage.
    fn file_missing(&self, what: &str) -> MicrosandboxError {
        if self.path.join(MANIFEST_FILE).exists() {
            MicrosandboxError::integrity(&self.path, format!("{what} is missing"))
        } else {
            MicrosandboxError::SnapshotNotFound {
                what: format!("{} (removed while it was being read)", self.path.display()),
            }
        }
    }

    /// Open a VM file and check it is a regular file of the recorded size.
    pub(super) fn check_file(&self, recorded: &VmFile) -> MicrosandboxResult<File> {
        let path = self.path.join(&recorded.file);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.file_missing(&recorded.file));
            }
            Err(e) => return Err(MicrosandboxError::io(&path, e)),
        };
        if !meta.file_type().is_file() {
            return Err(MicrosandboxError::integrity(
                &self.path,
                format!("{} is not a regular file", recorded.file),
            ));
        }
        let file = File::open(&path).map_err(|e| MicrosandboxError::io(&path, e))?;
        let len = file
            .metadata()
            .map_err(|e| MicrosandboxError::io(&path, e))?
            .len();
        if len != recorded.size_bytes {
            return Err(MicrosandboxError::integrity(
                &self.path,
                format!(
                    "{} size mismatch: manifest says {}, file is {len}",
                    recorded.file, recorded.size_bytes
                ),
            ));
        }
        Ok(file)
    }

    /// Open the upper file and check it is a regular file of the recorded size.
    pub(super) fn check_upper_file(&self) -> MicrosandboxResult<File> {
        let upper_path = self.upper_path();
        let meta = match std::fs::symlink_metadata(&upper_path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.file_missing(&format!("upper file {}", self.manifest.upper.file)));
            }
            Err(e) => return Err(MicrosandboxError::io(&upper_path, e)),
        };
        if !meta.file_type().is_file() {
            return Err(MicrosandboxError::integrity(
                &self.path,
                format!(
                    "upper file {} is not a regular file (symlinks may leave the artifact)",
                    self.manifest.upper.file
                ),
            ));
        }
        let file = File::open(&upper_path).map_err(|e| MicrosandboxError::io(&upper_path, e))?;
        let len = file
            .metadata()
            .map_err(|e| MicrosandboxError::io(&upper_path, e))?
            .len();
        if len != self.manifest.upper.size_bytes {
            return Err(MicrosandboxError::integrity(
                &self.path,
                format!(
                    "upper size mismatch: manifest says {}, file is {len}",
                    self.manifest.upper.size_bytes
                ),
            ));
        }
        Ok(file)
    }
}

//! Capturing a stopped sandbox's upper disk as a snapshot artifact. The
//! artifact is built in a hidden temp sibling of its destination (upper
//! copied sparse, synced; manifest written last) and renamed into place in
//! one step, so a crash leaves either nothing visible or a complete artifact.
//! The index row is added afterwards, best effort.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use super::integrity::{self, IntegrityAlgorithm};
use super::manifest::{
    ImageRef, MANIFEST_FILE, MANIFEST_MAX_BYTES, MANIFEST_SCHEMA, Manifest, RESERVED_LABEL_PREFIX,
    SnapshotFormat, UpperIntegrity, UpperLayer,
};
use super::{Snapshot, index};
use crate::control::{CallOpts, Control};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::{MsbHome, is_bare_name};
use crate::publish;
use crate::sandbox_store::{LockedSandbox, UPPER_FILE};
use crate::sparse::copy_sparse;

/// Where to place a new snapshot artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotDestination {
    /// A bare name resolved under the default snapshots directory.
    Name(String),
    /// An explicit path to the artifact directory.
    Path(PathBuf),
}

/// Inputs to [`Snapshot::create`]; usually built with [`SnapshotBuilder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// Name of the source sandbox; must be stopped or crashed.
    pub source_sandbox: String,
    /// Where to write the artifact.
    pub destination: SnapshotDestination,
    /// User labels.
    pub labels: Vec<(String, String)>,
    /// Overwrite an existing artifact at the destination.
    pub force: bool,
    /// Compute and record upper-layer integrity (with the default
    /// algorithm, `msb-merkle-sha256-v1`; the builder's
    /// [`integrity_algorithm`](SnapshotBuilder::integrity_algorithm) picks
    /// another).
    pub record_integrity: bool,
}

/// The reference's other name for [`SnapshotConfig`].
pub type SnapshotSpec = SnapshotConfig;

/// Builder for a [`SnapshotConfig`]; see [`Snapshot::builder`].
#[derive(Debug, Clone)]
pub struct SnapshotBuilder {
    source_sandbox: String,
    destination: Option<SnapshotDestination>,
    /// How many times a destination was set: exactly one is allowed.
    destinations_set: u32,
    labels: Vec<(String, String)>,
    force: bool,
    record_integrity: bool,
    integrity_algorithm: IntegrityAlgorithm,
}

impl SnapshotBuilder {
    pub(crate) fn new(source_sandbox: String) -> Self {
        Self {
            source_sandbox,
            destination: None,
            destinations_set: 0,
            labels: Vec::new(),
            force: false,
            record_integrity: false,
            integrity_algorithm: IntegrityAlgorithm::DEFAULT,
        }
    }

    /// Set the destination explicitly. Exactly one destination may be set
    /// (this, [`name`](Self::name) or [`path`](Self::path)); a second one
    /// makes [`build`](Self::build) fail with `InvalidConfig`.
    pub fn destination(mut self, dest: SnapshotDestination) -> Self {
        self.destination = Some(dest);
        self.destinations_set += 1;
        self
    }

    /// A bare name under the default snapshots directory.
    pub fn name(self, name: impl Into<String>) -> Self {
        self.destination(SnapshotDestination::Name(name.into()))
    }

    /// An explicit artifact directory.
    pub fn path(self, path: impl Into<PathBuf>) -> Self {
        self.destination(SnapshotDestination::Path(path.into()))
    }

    /// Add a label (sorted by key in the manifest).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// Overwrite an existing artifact at the destination.
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }

    /// Record upper-layer integrity with the default algorithm.
    pub fn record_integrity(mut self) -> Self {
        self.record_integrity = true;
        self
    }

    /// Record upper-layer integrity with `algorithm` (e.g. the 0.6.6
    /// exchange algorithm `msb-sparse-sha256-v1` for older readers).
    pub fn integrity_algorithm(mut self, algorithm: IntegrityAlgorithm) -> Self {
        self.record_integrity = true;
        self.integrity_algorithm = algorithm;
        self
    }

    /// The config, or `InvalidConfig` when no destination or more than one
    /// was set, a name is not a bare name, a label key is empty, or a
    /// non-default integrity algorithm was chosen (the config cannot carry
    /// it: use [`create`](Self::create)).
    pub fn build(self) -> MicrosandboxResult<SnapshotConfig> {
        if self.integrity_algorithm != IntegrityAlgorithm::DEFAULT {
            return Err(MicrosandboxError::InvalidConfig(format!(
                "a SnapshotConfig records integrity with {}; for {} call .create() on the builder",
                IntegrityAlgorithm::DEFAULT,
                self.integrity_algorithm
            )));
        }
        self.checked()
    }

    /// [`build`](Self::build)'s checks, whatever the algorithm.
    fn checked(self) -> MicrosandboxResult<SnapshotConfig> {
        if self.destinations_set > 1 {
            return Err(MicrosandboxError::InvalidConfig(
                "set exactly one destination: .name(), .path() or .destination(), once".into(),
            ));
        }
        let destination = self.destination.ok_or_else(|| {
            MicrosandboxError::InvalidConfig(
                "a snapshot needs a destination: set .name() or .path()".into(),
            )
        })?;
        match &destination {
            SnapshotDestination::Name(name) => check_snapshot_name(name)?,
            SnapshotDestination::Path(path) if path.as_os_str().as_encoded_bytes().contains(&0) => {
                return Err(MicrosandboxError::InvalidConfig(format!(
                    "snapshot path {path:?} contains a NUL byte"
                )));
            }
            SnapshotDestination::Path(path) if path.as_os_str().is_empty() => {
                return Err(MicrosandboxError::InvalidConfig(
                    "the snapshot path is empty".into(),
                ));
            }
            _ => {}
        }
        let mut label_bytes = 0u64;
        for (key, value) in &self.labels {
            if key.is_empty() {
                return Err(MicrosandboxError::InvalidConfig(
                    "label keys must not be empty".into(),
                ));
            }
            label_bytes += (key.len() + value.len()) as u64;
        }
        // Cheap and early (before any copy): the exact check of the whole
        // manifest follows in `create_blocking`.
        if label_bytes > MANIFEST_MAX_BYTES {
            return Err(labels_too_large(self.labels.len(), label_bytes));
        }
        Ok(SnapshotConfig {
            source_sandbox: self.source_sandbox,
            destination,
            labels: self.labels,
            force: self.force,
            record_integrity: self.record_integrity,
        })
    }

    /// Build and create in one step (with the chosen integrity algorithm).
    pub async fn create(self) -> MicrosandboxResult<Snapshot> {
        let algorithm = self.integrity_algorithm;
        create(self.checked()?, algorithm).await
    }
}

/// Longest snapshot name, in bytes: a name is a directory name (255 bytes
/// on Linux filesystems), and its staging sibling
/// (`.<name>.creating-<pid>-<random>`) needs room too.
pub const MAX_SNAPSHOT_NAME_BYTES: usize = 200;

/// A snapshot name (a bare name in the default snapshots directory):
/// `InvalidConfig` unless it is bare (no `/`, not starting with `.` or
/// `~`), has no NUL byte and is at most [`MAX_SNAPSHOT_NAME_BYTES`] long.
pub(crate) fn check_snapshot_name(name: &str) -> MicrosandboxResult<()> {
    let problem = if name.len() > MAX_SNAPSHOT_NAME_BYTES {
        format!(
            "is {} bytes long: at most {MAX_SNAPSHOT_NAME_BYTES} (it becomes a directory name)",
            name.len()
        )
    } else if name.contains('\0') {
        "contains a NUL byte".into()
    } else if !is_bare_name(name) {
        "is not a bare snapshot name (no '/', not starting with '.' or '~'); use a path for paths"
            .into()
    } else {
        return Ok(());
    };
    let shown: String = name.chars().take(64).collect();
    Err(MicrosandboxError::InvalidConfig(format!(
        "snapshot name {shown:?}{} {problem}",
        if shown.len() < name.len() { "…" } else { "" }
    )))
}

/// `InvalidConfig` for labels that make a manifest of `bytes` bytes, more
/// than [`MANIFEST_MAX_BYTES`].
fn labels_too_large(count: usize, bytes: u64) -> MicrosandboxError {
    MicrosandboxError::InvalidConfig(format!(
        "{count} labels make a manifest of {bytes} bytes; a manifest holds at most {MANIFEST_MAX_BYTES}"
    ))
}

/// Capture per `config`, recording integrity with `algorithm`.
pub(crate) async fn create(
    config: SnapshotConfig,
    algorithm: IntegrityAlgorithm,
) -> MicrosandboxResult<Snapshot> {
    let home = MsbHome::resolve()?;
    crate::control::long_call(CallOpts::default(), move |control| {
        create_blocking(&home, &config, algorithm, control)
    })
    .await
}

/// Capture per `config`. Blocking.
pub(crate) fn create_blocking(
    home: &MsbHome,
    config: &SnapshotConfig,
    algorithm: IntegrityAlgorithm,
    control: &Control,
) -> MicrosandboxResult<Snapshot> {
    if let Some((key, _)) = config
        .labels
        .iter()
        .find(|(k, _)| k.starts_with(RESERVED_LABEL_PREFIX))
    {
        return Err(MicrosandboxError::InvalidConfig(format!(
            "label {key:?}: labels starting with {RESERVED_LABEL_PREFIX:?} are reserved"
        )));
    }
    let dest = match &config.destination {
        SnapshotDestination::Name(name) => home.snapshots_dir().join(name),
        SnapshotDestination::Path(path) => path.clone(),
    };
    // Hold the sandbox's lock so it cannot boot while its disk is copied.
    let sandbox = LockedSandbox::acquire(home, &config.source_sandbox)?;
    let record = &sandbox.record;
    if record.state.has_vm() {
        return Err(MicrosandboxError::SnapshotSandboxRunning {
            name: record.name.clone(),
        });
    }
    if dest.exists() && !config.force {
        return Err(MicrosandboxError::SnapshotAlreadyExists { path: dest });
    }
    let parent = publish::parent_of(&dest).to_path_buf();
    fs::create_dir_all(&parent).map_err(|e| MicrosandboxError::io(&parent, e))?;
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    publish::remove_abandoned_staging(&parent);
    let staging = publish::staging_dir(&parent, &base)?;

    let upper = staging.path().join(UPPER_FILE);
    let source_upper = sandbox.upper_path();
    copy_sparse(&source_upper, &upper).map_err(|e| MicrosandboxError::io(&source_upper, e))?;
    control.check()?;
    let size_bytes = fs::metadata(&upper)
        .map_err(|e| MicrosandboxError::io(&upper, e))?
        .len();
    let integrity = if config.record_integrity {
        let digest = integrity::upper_digest_controlled(&upper, algorithm, control)?;
        Some(UpperIntegrity {
            algorithm: algorithm.name().to_string(),
            digest,
        })
    } else {
        None
    };
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        format: SnapshotFormat::Raw,
        fstype: "ext4".into(),
        image: ImageRef {
            reference: record.config.image_ref.clone(),
            manifest_digest: record.config.image_manifest_digest.clone(),
        },
        parent: None,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        labels: config.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        upper: UpperLayer {
            file: UPPER_FILE.into(),
            size_bytes,
            integrity,
        },
        source_sandbox: Some(record.name.clone()),
    };
    manifest.validate(&staging.path().join(MANIFEST_FILE))?;
    let canonical = manifest.canonical_bytes();
    if canonical.len() as u64 > MANIFEST_MAX_BYTES {
        // Written, it would be an artifact no reader opens.
        return Err(labels_too_large(
            config.labels.len(),
            canonical.len() as u64,
        ));
    }
    publish::write_synced(&staging.path().join(MANIFEST_FILE), &canonical)?;
    publish::sync_dir(staging.path())?;

    publish_artifact(home, &staging.keep(), &dest, config.force)
}

/// Move the synced artifact in `staging` to `dest` (over an existing one
/// only with `replace`; `SnapshotAlreadyExists` otherwise), sync its parent,
/// open it and index it (best effort).
pub(crate) fn publish_artifact(
    home: &MsbHome,
    staging: &std::path::Path,
    dest: &std::path::Path,
    replace: bool,
) -> MicrosandboxResult<Snapshot> {
    // The artifact and its row appear together (see `NamesLock`).
    let _names = index::NamesLock::take(home)?;
    publish::publish_dir(staging, dest, replace).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            MicrosandboxError::SnapshotAlreadyExists {
                path: dest.to_path_buf(),
            }
        } else {
            MicrosandboxError::io(dest, e)
        }
    })?;
    publish::sync_dir(publish::parent_of(dest))?;
    let snap = Snapshot::open_dir(dest)?;
    index::record_best_effort(home, &snap);
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_destination_is_allowed() {
        let kind = |b: SnapshotBuilder| b.build().map(|_| ()).unwrap_err().kind();
        assert_eq!(kind(Snapshot::builder("sb")), "InvalidConfig");
        assert_eq!(
            kind(Snapshot::builder("sb").name("a").path("/b")),
            "InvalidConfig"
        );
        assert_eq!(
            kind(Snapshot::builder("sb").path("/b").name("a")),
            "InvalidConfig"
        );
        assert_eq!(
            kind(Snapshot::builder("sb").name("a").name("b")),
            "InvalidConfig"
        );
        let config = Snapshot::builder("sb").name("a").build().unwrap();
        assert_eq!(config.destination, SnapshotDestination::Name("a".into()));
    }

    #[test]
    fn a_config_cannot_silently_drop_the_chosen_algorithm() {
        let builder = Snapshot::builder("sb")
            .name("a")
            .integrity_algorithm(IntegrityAlgorithm::SparseSha256V1);
        assert_eq!(builder.build().unwrap_err().kind(), "InvalidConfig");
    }
}

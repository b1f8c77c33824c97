//! Snapshot artifacts: a directory holding `manifest.json` and the captured
//! upper file. The artifact directory is the source of truth; anything else
//! (the index, archives) is derived from it. This module is the façade: it
//! opens artifacts (structure only, never the upper's content), holds the
//! accessors and the static entry points (capture, index lookups, removal,
//! reindex, export, import, verify), and hands the work to its parts:
//! [`create`] (capture), `verify` (content checks), [`index`], [`archive`],
//! [`integrity`] (digest algorithms) and [`manifest`] (the format).

pub mod archive;
pub mod create;
pub(crate) mod full;
mod handle;
pub mod index;
pub mod integrity;
pub mod manifest;
pub mod remote;
pub(crate) mod resolve;
mod verify;
mod views;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use archive::ExportOpts;
pub use create::{
    MAX_SNAPSHOT_NAME_BYTES, SnapshotBuilder, SnapshotConfig, SnapshotDestination, SnapshotSpec,
};
pub use handle::SnapshotHandle;
pub use integrity::IntegrityAlgorithm;
pub use manifest::{
    ImageRef, MachineShape, Manifest, SnapshotFormat, SnapshotKind, UpperIntegrity, UpperLayer,
    VM_FILE, VM_LABEL, VmFile, VmSection,
};
pub use verify::{SnapshotVerifyReport, UpperVerifyStatus};

use crate::control::{CallOpts, Control, long_call};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::progress::ProgressCallback;
use manifest::{MANIFEST_FILE, MANIFEST_MAX_BYTES};

/// An opened snapshot artifact: its directory, parsed manifest and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    path: PathBuf,
    manifest: Manifest,
    digest: String,
    /// The VM half of a full snapshot (`vm.json`), checked against the manifest.
    vm: Option<VmSection>,
}

impl Snapshot {
    /// Start configuring a snapshot of the stopped sandbox `source_sandbox`.
    pub fn builder(source_sandbox: impl Into<String>) -> SnapshotBuilder {
        SnapshotBuilder::new(source_sandbox.into())
    }

    /// Capture a stopped (or crashed) sandbox's upper disk per `config`,
    /// then index it (best effort).
    pub async fn create(config: SnapshotConfig) -> MicrosandboxResult<Self> {
        create::create(config, IntegrityAlgorithm::DEFAULT).await
    }

    /// The indexed snapshot with this name, digest or path.
    pub async fn get(name_or_digest: impl Into<String>) -> MicrosandboxResult<SnapshotHandle> {
        let (home, key) = (MsbHome::resolve()?, name_or_digest.into());
        crate::control::blocking(move || index::get(&home, &key)).await
    }

    /// [`get`](Self::get) in `home`, on the calling thread: for bindings
    /// that run it on their own worker thread (one thread hop per call
    /// instead of three, which dominates a lookup this small).
    pub fn get_blocking(
        home: &MsbHome,
        name_or_digest: &str,
    ) -> MicrosandboxResult<SnapshotHandle> {
        index::get(home, name_or_digest)
    }

    /// Every indexed snapshot, newest first.
    pub async fn list() -> MicrosandboxResult<Vec<SnapshotHandle>> {
        let home = MsbHome::resolve()?;
        crate::control::blocking(move || index::list(&home)).await
    }

    /// Every indexed snapshot, newest first, handed to `visit` one at a
    /// time (on a worker thread) until it returns `false`: a listing of any
    /// size in constant memory, for callers that consume it as a stream.
    pub async fn list_each(
        mut visit: impl FnMut(SnapshotHandle) -> bool + Send + 'static,
    ) -> MicrosandboxResult<()> {
        let home = MsbHome::resolve()?;
        crate::control::blocking(move || index::for_each(&home, &mut visit)).await
    }

    /// The valid artifacts directly inside `dir`, by path; never touches the
    /// index. Entries without a manifest, hidden ones and malformed ones are
    /// skipped.
    pub async fn list_dir(dir: impl AsRef<Path>) -> MicrosandboxResult<Vec<Self>> {
        let dir = dir.as_ref().to_path_buf();
        crate::control::blocking(move || list_dir_blocking(&dir)).await
    }

    /// Remove an artifact (by name, digest or path) and its index row.
    /// `SnapshotHasChildren` while indexed children exist, unless `force`.
    pub async fn remove(path_or_name: impl Into<String>, force: bool) -> MicrosandboxResult<()> {
        let (home, key) = (MsbHome::resolve()?, path_or_name.into());
        crate::control::blocking(move || index::remove(&home, &key, force)).await
    }

    /// Rebuild the index from the artifacts in `dir`. Returns how many
    /// artifacts were indexed. See [`reindex_default`](Self::reindex_default)
    /// for the default snapshots directory.
    pub async fn reindex(dir: impl AsRef<Path>) -> MicrosandboxResult<usize> {
        let (home, dir) = (MsbHome::resolve()?, dir.as_ref().to_path_buf());
        long_call(CallOpts::default(), move |control| {
            index::reindex(&home, &dir, control)
        })
        .await
    }

    /// [`reindex`](Self::reindex) the default snapshots directory.
    pub async fn reindex_default() -> MicrosandboxResult<usize> {
        let home = MsbHome::resolve()?;
        let dir = home.snapshots_dir();
        long_call(CallOpts::default(), move |control| {
            index::reindex(&home, &dir, control)
        })
        .await
    }

    /// Bundle a snapshot (name, digest or artifact path) into an archive at
    /// `out`: `.tar.zst` unless `opts.plain_tar`. The snapshot (and, with
    /// `with_parents`, each ancestor) is verified first. `out` is replaced
    /// only once the archive is complete; its parent directories are created.
    pub async fn export(
        name_or_path: impl Into<String>,
        out: impl AsRef<Path>,
        opts: ExportOpts,
    ) -> MicrosandboxResult<()> {
        Self::export_with(name_or_path, out, opts, CallOpts::default()).await
    }

    /// [`export`](Self::export), reporting bytes stored to `call.progress`
    /// and obeying `call.cancel`.
    pub async fn export_with(
        name_or_path: impl Into<String>,
        out: impl AsRef<Path>,
        opts: ExportOpts,
        call: CallOpts,
    ) -> MicrosandboxResult<()> {
        let (home, key) = (MsbHome::resolve()?, name_or_path.into());
        let out = out.as_ref().to_path_buf();
        long_call(call, move |control| {
            archive::export_blocking(&home, &key, &out, opts, control)
        })
        .await
    }

    /// Unpack an archive (`.tar.zst` or `.tar`, told apart by magic bytes)
    /// into `dest` (default: the snapshots directory), bundled image files
    /// into the image store, and index everything. Hostile or damaged
    /// archives fail with `ArchiveInvalid` and leave nothing behind. Returns
    /// the head snapshot.
    pub async fn import(
        archive: impl AsRef<Path>,
        dest: Option<&Path>,
    ) -> MicrosandboxResult<SnapshotHandle> {
        Self::import_with(archive, dest, CallOpts::default()).await
    }

    /// [`import`](Self::import), reporting archive bytes read to
    /// `call.progress` and obeying `call.cancel`.
    pub async fn import_with(
        archive: impl AsRef<Path>,
        dest: Option<&Path>,
        call: CallOpts,
    ) -> MicrosandboxResult<SnapshotHandle> {
        let (home, archive) = (MsbHome::resolve()?, archive.as_ref().to_path_buf());
        let dest = dest.map(Path::to_path_buf);
        long_call(call, move |control| {
            archive::import_blocking(&home, &archive, dest.as_deref(), control)
        })
        .await
    }

    /// Open an artifact by bare name (under the snapshots directory of
    /// `MSB_HOME`) or by path. Checks the manifest, recomputes its digest and
    /// checks the upper file exists with the recorded size; never reads the
    /// upper's content (see [`verify`](Self::verify)).
    /// Keys resolve in the one documented order (`resolve.rs`), so a
    /// digest opens too.
    pub async fn open(path_or_name: impl AsRef<str>) -> MicrosandboxResult<Self> {
        let (home, key) = (MsbHome::resolve()?, path_or_name.as_ref().to_string());
        crate::control::blocking(move || resolve::resolve(&home, &key)?.open()).await
    }

    /// Open the artifact in directory `dir`. Blocking.
    pub fn open_dir(dir: &Path) -> MicrosandboxResult<Self> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let bytes = read_manifest_bytes(dir, &manifest_path)?;
        let manifest = Manifest::parse(&bytes, &manifest_path)?;
        let vm = match manifest.labels.get(manifest::VM_LABEL) {
            Some(digest) => Some(read_vm_section(dir, &manifest, digest)?),
            None => None,
        };
        let snapshot = Self {
            path: dir.to_path_buf(),
            digest: manifest.digest(),
            manifest,
            vm,
        };
        snapshot.check_upper_file()?;
        if let Some(vm) = &snapshot.vm {
            snapshot.check_file(&vm.state)?;
            snapshot.check_file(&vm.ram)?;
        }
        Ok(snapshot)
    }

    /// The VM half of a full snapshot (`None` for a disk snapshot).
    pub fn vm(&self) -> Option<&VmSection> {
        self.vm.as_ref()
    }

    /// Disk-only, or the whole VM (see `docs/full-snapshots.md`).
    pub fn kind(&self) -> SnapshotKind {
        self.manifest.kind()
    }

    /// Canonical manifest digest, the snapshot's identity (`sha256:<hex>`).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The artifact directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Apparent size of the captured upper layer in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.manifest.upper.size_bytes
    }

    /// Path of the captured upper file.
    pub fn upper_path(&self) -> PathBuf {
        self.path.join(&self.manifest.upper.file)
    }

    /// Bytes the upper file occupies on disk (it is sparse: usually far less
    /// than [`size_bytes`](Self::size_bytes)).
    pub async fn upper_allocated_bytes(&self) -> MicrosandboxResult<u64> {
        use std::os::unix::fs::MetadataExt;
        let path = self.upper_path();
        crate::control::blocking(move || {
            let meta = std::fs::metadata(&path).map_err(|e| MicrosandboxError::io(&path, e))?;
            Ok(meta.blocks() * 512)
        })
        .await
    }

    /// Image reference the snapshot was taken from.
    pub fn image_ref(&self) -> &str {
        &self.manifest.image.reference
    }

    /// Digest of the pinned OCI image manifest.
    pub fn image_manifest_digest(&self) -> &str {
        &self.manifest.image.manifest_digest
    }

    /// On-disk format of the upper layer.
    pub fn format(&self) -> SnapshotFormat {
        self.manifest.format
    }

    /// Filesystem inside the upper layer.
    pub fn fstype(&self) -> &str {
        &self.manifest.fstype
    }

    /// Parent snapshot digest, `None` for a root.
    pub fn parent(&self) -> Option<&str> {
        self.manifest.parent.as_deref()
    }

    /// RFC 3339 creation time as recorded.
    pub fn created_at(&self) -> &str {
        &self.manifest.created_at
    }

    /// User labels, sorted by key.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.manifest.labels
    }

    /// Name of the sandbox the snapshot was taken from, if recorded.
    pub fn source_sandbox(&self) -> Option<&str> {
        self.manifest.source_sandbox.as_deref()
    }

    /// Recompute the upper layer's digest and compare it with the manifest.
    /// `NotRecorded` when no integrity was recorded; `SnapshotIntegrity` on a
    /// mismatch; `IntegrityAlgorithmUnsupported` for an unknown algorithm.
    pub async fn verify(&self) -> MicrosandboxResult<SnapshotVerifyReport> {
        self.verify_with(CallOpts::default()).await
    }

    /// [`verify`](Self::verify), reporting hashing progress to
    /// `call.progress` and obeying `call.cancel`.
    pub async fn verify_with(&self, call: CallOpts) -> MicrosandboxResult<SnapshotVerifyReport> {
        let snapshot = self.clone();
        long_call(call, move |control| snapshot.verify_controlled(control)).await
    }

    /// Blocking form of [`verify`](Self::verify), reporting to `progress`.
    pub fn verify_blocking(
        &self,
        progress: Option<&ProgressCallback>,
    ) -> MicrosandboxResult<SnapshotVerifyReport> {
        self.verify_controlled(&Control::new(CallOpts {
            progress: progress.cloned(),
            cancel: None,
        }))
    }
}

/// Open every artifact directly inside `dir`, in parallel; skips the rest.
pub(crate) fn list_dir_blocking(dir: &Path) -> MicrosandboxResult<Vec<Snapshot>> {
    use rayon::prelude::*;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(MicrosandboxError::io(dir, e)),
    };
    let mut candidates: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    candidates.sort();
    Ok(candidates
        .par_iter()
        .filter_map(|path| Snapshot::open_dir(path).ok())
        .collect())
}

/// Read and check `vm.json` of the full snapshot in `dir`: its digest must
/// be the one its manifest records.
fn read_vm_section(dir: &Path, manifest: &Manifest, digest: &str) -> MicrosandboxResult<VmSection> {
    let path = dir.join(manifest::VM_FILE);
    let bytes = match read_small_file(&path) {
        Ok(bytes) => bytes,
        Err(MicrosandboxError::SnapshotNotFound { .. }) => {
            return Err(MicrosandboxError::integrity(
                dir,
                format!("{} is missing", manifest::VM_FILE),
            ));
        }
        Err(e) => return Err(e),
    };
    let actual = manifest::sha256_digest_string(&bytes);
    if actual != digest {
        return Err(MicrosandboxError::integrity(
            dir,
            format!(
                "{} digest mismatch: manifest={digest}, file={actual}",
                manifest::VM_FILE
            ),
        ));
    }
    VmSection::parse(&bytes, manifest, &path)
}

/// A plain file of at most [`MANIFEST_MAX_BYTES`]; `SnapshotNotFound` if
/// absent, or if no file can have that path (a name longer than the
/// filesystem allows, a NUL byte).
fn read_small_file(path: &Path) -> MicrosandboxResult<Vec<u8>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if no_such_file(&e) => {
            return Err(MicrosandboxError::SnapshotNotFound {
                what: path.display().to_string(),
            });
        }
        Err(e) => return Err(MicrosandboxError::io(path, e)),
    };
    if !meta.file_type().is_file() {
        return Err(MicrosandboxError::manifest_invalid(
            path,
            "not a regular file",
        ));
    }
    let file = File::open(path).map_err(|e| MicrosandboxError::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(MANIFEST_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| MicrosandboxError::io(path, e))?;
    if bytes.len() as u64 > MANIFEST_MAX_BYTES {
        return Err(MicrosandboxError::manifest_invalid(
            path,
            format!("larger than {MANIFEST_MAX_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// Read `manifest.json` of `dir`, refusing anything that is not a plain,
/// reasonably small file.
/// Whether `e` says there is no file at the path looked up: it is absent,
/// or no file can have that path (a component longer than the filesystem
/// allows, a NUL byte). A key that names nothing is not found, not an I/O
/// failure.
fn no_such_file(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::InvalidFilename | ErrorKind::InvalidInput
    )
}

fn read_manifest_bytes(dir: &Path, manifest_path: &Path) -> MicrosandboxResult<Vec<u8>> {
    let not_found = |why: &str| MicrosandboxError::SnapshotNotFound {
        what: format!("{} ({why})", dir.display()),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(not_found("not a directory")),
        Err(e) if no_such_file(&e) => {
            return Err(not_found("no such artifact directory"));
        }
        Err(e) => return Err(MicrosandboxError::io(dir, e)),
    }
    let meta = match std::fs::symlink_metadata(manifest_path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_found("no manifest.json"));
        }
        Err(e) => return Err(MicrosandboxError::io(manifest_path, e)),
    };
    if !meta.file_type().is_file() {
        return Err(MicrosandboxError::manifest_invalid(
            manifest_path,
            "manifest.json is not a regular file",
        ));
    }
    let file = File::open(manifest_path).map_err(|e| MicrosandboxError::io(manifest_path, e))?;
    let mut bytes = Vec::new();
    file.take(MANIFEST_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| MicrosandboxError::io(manifest_path, e))?;
    if bytes.len() as u64 > MANIFEST_MAX_BYTES {
        return Err(MicrosandboxError::manifest_invalid(
            manifest_path,
            format!("manifest is larger than {MANIFEST_MAX_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

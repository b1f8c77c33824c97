//! Full snapshots: capturing a running sandbox whole (device state, RAM and
//! disk, the guest paused) into an artifact kept in the sandbox's own
//! directory (`<sandbox>/snapshots/<id>/`, gone with the sandbox), and
//! saving an artifact under a name in the snapshots directory, where the
//! index sees it. Booting a sandbox from one is `sandbox`'s business.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::Snapshot;
use super::integrity::{self, IntegrityAlgorithm};
use super::manifest::{
    ImageRef, MANIFEST_FILE, MANIFEST_SCHEMA, Manifest, SnapshotFormat, UpperIntegrity, UpperLayer,
    VM_FILE, VM_LABEL, VmFile, VmSection, sha256_digest_string,
};
use crate::control::Control;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::publish;
use crate::runtime;
use crate::sandbox_store::registry::{self, SandboxState};
use crate::sandbox_store::{LockedSandbox, UPPER_FILE};
use crate::sparse::copy_sparse;

/// File name of the saved device state in a full snapshot.
pub const STATE_FILE: &str = "vm.state";

/// File name of the saved guest RAM in a full snapshot.
pub const RAM_FILE: &str = "vm.ram";

/// Directory, inside a sandbox's directory, of its unnamed full snapshots.
pub const UNNAMED_DIR: &str = "snapshots";

/// Pause the running sandbox `name` and capture it whole. The sandbox is
/// left `paused`; on failure it runs on as before and nothing is left.
pub(crate) fn capture_blocking(
    home: &MsbHome,
    name: &str,
    control: &Control,
) -> MicrosandboxResult<Snapshot> {
    let sandbox = LockedSandbox::acquire(home, name)?;
    let record = &sandbox.record;
    let pid = match (record.state, record.pid) {
        // A paused sandbox has not run since its last capture (QEMU will
        // not save it twice): that snapshot is the one to use.
        (SandboxState::Running, Some(pid)) => pid,
        (state, _) => {
            return Err(MicrosandboxError::SandboxNotRunning {
                name: record.name.clone(),
                state: state.to_string(),
            });
        }
    };
    control.check()?;
    let parent = sandbox.dir.join(UNNAMED_DIR);
    fs::create_dir_all(&parent).map_err(|e| MicrosandboxError::io(&parent, e))?;
    publish::remove_abandoned_staging(&parent);
    let staging = publish::staging_dir(&parent, "full")?;
    let config = &record.config;
    let (machine, ram) = runtime::capture(
        &sandbox.dir,
        &config.vm_name,
        pid,
        config.memory_mib,
        config.cpus,
        &staging.path().join(STATE_FILE),
    )?;
    let written = (|| {
        registry::set_state(home, &record.name, SandboxState::Paused, Some(pid))?;
        let source_upper = sandbox.upper_path();
        let upper_file =
            fs::File::open(&source_upper).map_err(|e| MicrosandboxError::io(&source_upper, e))?;
        let (extents, len) = layout(&upper_file, &source_upper)?;
        let upper = copy_described(
            &upper_file,
            &source_upper,
            0,
            &extents,
            len,
            staging.path(),
            UPPER_FILE,
        )?;
        let ram_origin = sandbox.dir.join("<guest RAM>");
        let ram = copy_described(
            &ram.file,
            &ram_origin,
            ram.base,
            &ram.extents,
            ram.len,
            staging.path(),
            RAM_FILE,
        )?;
        let state = describe(&staging.path().join(STATE_FILE), control)?;
        let vm = VmSection {
            machine,
            state,
            ram,
            env: config.env.clone(),
            working_dir: config.working_dir.clone(),
        };
        let vm_bytes = vm.canonical_bytes();
        let vm_path = staging.path().join(VM_FILE);
        fs::write(&vm_path, &vm_bytes).map_err(|e| MicrosandboxError::io(&vm_path, e))?;
        let labels = BTreeMap::from([(VM_LABEL.to_string(), sha256_digest_string(&vm_bytes))]);
        let manifest = Manifest {
            schema: MANIFEST_SCHEMA,
            format: SnapshotFormat::Raw,
            fstype: "ext4".into(),
            image: ImageRef {
                reference: config.image_ref.clone(),
                manifest_digest: config.image_manifest_digest.clone(),
            },
            parent: None,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            labels,
            upper: UpperLayer {
                file: UPPER_FILE.into(),
                size_bytes: upper.size_bytes,
                integrity: Some(upper.integrity),
            },
            source_sandbox: Some(record.name.clone()),
        };
        let manifest_path = staging.path().join(MANIFEST_FILE);
        manifest.validate(&manifest_path)?;
        // Not synced: an unnamed snapshot lives no longer than its sandbox's
        // VM; `save_named` makes it durable.
        fs::write(&manifest_path, manifest.canonical_bytes())
            .map_err(|e| MicrosandboxError::io(&manifest_path, e))?;
        let id = &manifest.digest()["sha256:".len()..][..16];
        let dest = parent.join(id);
        publish::publish_dir(&staging.keep(), &dest, false)
            .map_err(|e| MicrosandboxError::io(&dest, e))?;
        let snap = Snapshot::open_dir(&dest)?;
        // Its digests were computed from the bytes as they were written.
        snap.write_stamp(home);
        Ok(snap)
    })();
    if written.is_err() {
        let _ = runtime::resume(&sandbox.dir, &config.vm_name);
        let _ = registry::set_state(home, &record.name, SandboxState::Running, Some(pid));
    }
    written
}

/// A written file of the artifact, hashed and described for the manifest.
fn describe(path: &Path, control: &Control) -> MicrosandboxResult<VmFile> {
    let size_bytes = fs::metadata(path)
        .map_err(|e| MicrosandboxError::io(path, e))?
        .len();
    let algorithm = IntegrityAlgorithm::DEFAULT;
    let digest = integrity::upper_digest_controlled(path, algorithm, control)?;
    Ok(vm_file(path, size_bytes, digest))
}

/// Copy `src` (named `origin` in errors; read at `base + offset`; data
/// only in `extents`, `len` bytes) to `dir/name`, sparse, hashing it on the
/// way: one pass over the data.
fn copy_described(
    src: &fs::File,
    origin: &Path,
    base: u64,
    extents: &[(u64, u64)],
    len: u64,
    dir: &Path,
    name: &str,
) -> MicrosandboxResult<VmFile> {
    let path = dir.join(name);
    let out = fs::File::create_new(&path).map_err(|e| MicrosandboxError::io(&path, e))?;
    let digest = integrity::copy_with_merkle_digest(src, base, extents, len, &out)
        .map_err(|e| MicrosandboxError::io(origin, e))?;
    Ok(vm_file(&path, len, digest))
}

/// A file's length and data extents.
fn layout(file: &fs::File, path: &Path) -> MicrosandboxResult<(Vec<(u64, u64)>, u64)> {
    let len = file
        .metadata()
        .map_err(|e| MicrosandboxError::io(path, e))?
        .len();
    let extents =
        crate::sparse::data_extents(file, len).map_err(|e| MicrosandboxError::io(path, e))?;
    Ok((extents, len))
}

fn vm_file(path: &Path, size_bytes: u64, digest: String) -> VmFile {
    VmFile {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size_bytes,
        integrity: UpperIntegrity {
            algorithm: IntegrityAlgorithm::DEFAULT.name().to_string(),
            digest,
        },
    }
}

/// Save `snap` (any kind) under the bare `name` in the snapshots directory,
/// durably, and index it. Files are hard-linked where the filesystem allows
/// (artifacts are never written after they are published), else copied.
pub(crate) fn save_named_blocking(
    home: &MsbHome,
    snap: &Snapshot,
    name: &str,
) -> MicrosandboxResult<Snapshot> {
    super::create::check_snapshot_name(name)?;
    // Re-read the source: it must still be whole.
    let snap = Snapshot::open_dir(snap.path())?;
    let parent = home.snapshots_dir();
    fs::create_dir_all(&parent).map_err(|e| MicrosandboxError::io(&parent, e))?;
    let dest = parent.join(name);
    if dest.exists() {
        return Err(MicrosandboxError::SnapshotAlreadyExists { path: dest });
    }
    publish::remove_abandoned_staging(&parent);
    let staging = publish::staging_dir(&parent, name)?;
    for file in artifact_files(&snap) {
        let from = snap.path().join(&file);
        let to = staging.path().join(&file);
        if fs::hard_link(&from, &to).is_err() {
            copy_sparse(&from, &to).map_err(|e| MicrosandboxError::io(&from, e))?;
        }
        let synced = fs::File::open(&to).and_then(|f| f.sync_all());
        synced.map_err(|e| MicrosandboxError::io(&to, e))?;
    }
    publish::sync_dir(staging.path())?;
    super::create::publish_artifact(home, &staging.keep(), &dest, false)
}

/// Every file an artifact consists of, the manifest first.
pub(crate) fn artifact_files(snap: &Snapshot) -> Vec<PathBuf> {
    let m = snap.manifest();
    let mut files = vec![PathBuf::from(MANIFEST_FILE), PathBuf::from(&m.upper.file)];
    if let Some(vm) = snap.vm() {
        files.push(PathBuf::from(VM_FILE));
        files.push(PathBuf::from(&vm.state.file));
        files.push(PathBuf::from(&vm.ram.file));
    }
    files
}

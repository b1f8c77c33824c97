//! Snapshots over the C ABI: artifacts (`MsbSnapshot`, read as the core's
//! JSON view, `docs/json.md`), index handles (`MsbSnapshotHandleList`, read
//! as borrowed field views so that a listing of thousands converts without
//! a serialization round trip), and the static entry points; restoring an
//! artifact into a new sandbox (a fork, for a full snapshot), keeping it
//! under a name, and deleting by name (`docs/full-snapshots.md`).

use std::ffi::{c_char, c_void};
use std::path::Path;

use microsandbox::{ExportOpts, Snapshot, SnapshotHandle};

use crate::sandbox::{MsbSandbox, boxed_sandbox};
use crate::{
    MsbCancel, MsbConfig, MsbProgressFn, MsbResult, MsbStr, arg_opt_str, arg_pairs, arg_str,
    block_on, call_opts, free_box, guard, put, put_json, put_string,
};

/// An opened snapshot artifact.
pub struct MsbSnapshot {
    pub(crate) snapshot: Snapshot,
}

/// Artifacts, as `Snapshot.list_dir` returns them.
pub struct MsbSnapshotList {
    snapshots: Vec<Snapshot>,
}

/// Index handles, as `Snapshot.list` returns them (one for get / import).
pub struct MsbSnapshotHandleList {
    handles: Vec<SnapshotHandle>,
    views: Vec<MsbSnapshotHandleView>,
}

/// The fields of one index handle, borrowed from its list.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MsbSnapshotHandleView {
    /// Manifest digest.
    pub digest: MsbStr,
    /// Name alias (meaningful when `has_name`).
    pub name: MsbStr,
    /// Parent digest (meaningful when `has_parent`).
    pub parent_digest: MsbStr,
    /// Image reference.
    pub image_ref: MsbStr,
    /// `raw` or `qcow2`.
    pub format: MsbStr,
    /// Canonical artifact directory.
    pub path: MsbStr,
    /// Apparent upper size at index time (meaningful when `has_size_bytes`).
    pub size_bytes: u64,
    /// Creation time: seconds since the Unix epoch (UTC).
    pub created_at_unix: i64,
    /// Creation time: nanoseconds within the second.
    pub created_at_nanos: u32,
    /// Indexed snapshots whose parent this is.
    pub child_count: u64,
    /// `disk` or `full` (static).
    pub kind: MsbStr,
    /// Whether `name` is set.
    pub has_name: bool,
    /// Whether `parent_digest` is set.
    pub has_parent: bool,
    /// Whether `size_bytes` is set.
    pub has_size_bytes: bool,
}

fn view_of(h: &SnapshotHandle) -> MsbSnapshotHandleView {
    let created = h.created_at().and_utc();
    MsbSnapshotHandleView {
        digest: MsbStr::of(h.digest().as_bytes()),
        name: h.name().map_or(MsbStr::EMPTY, |n| MsbStr::of(n.as_bytes())),
        parent_digest: h
            .parent_digest()
            .map_or(MsbStr::EMPTY, |p| MsbStr::of(p.as_bytes())),
        image_ref: MsbStr::of(h.image_ref().as_bytes()),
        format: MsbStr::of(h.format().as_str().as_bytes()),
        path: MsbStr::of(h.path().as_os_str().as_encoded_bytes()),
        size_bytes: h.size_bytes().unwrap_or(0),
        created_at_unix: created.timestamp(),
        created_at_nanos: created.timestamp_subsec_nanos(),
        child_count: h.child_count(),
        kind: MsbStr::of(h.kind().as_str().as_bytes()),
        has_name: h.name().is_some(),
        has_parent: h.parent_digest().is_some(),
        has_size_bytes: h.size_bytes().is_some(),
    }
}

fn handle_list(handles: Vec<SnapshotHandle>) -> *mut MsbSnapshotHandleList {
    let views = handles.iter().map(view_of).collect();
    Box::into_raw(Box::new(MsbSnapshotHandleList { handles, views }))
}

fn boxed_snapshot(snapshot: Snapshot) -> *mut MsbSnapshot {
    Box::into_raw(Box::new(MsbSnapshot { snapshot }))
}

fn snapshot_ref<'a>(
    snap: *const MsbSnapshot,
) -> Result<&'a Snapshot, microsandbox::MicrosandboxError> {
    // SAFETY: NULL or a live snapshot of this ABI.
    unsafe { snap.as_ref() }
        .map(|s| &s.snapshot)
        .ok_or_else(|| microsandbox::MicrosandboxError::InvalidConfig("snapshot is NULL".into()))
}

/// Capture the stopped sandbox `source` into a new artifact: exactly one of
/// `name` (under the snapshots directory) or `path`; `count` labels.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn msb_snapshot_create(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    source: *const c_char,
    name: *const c_char,
    path: *const c_char,
    label_keys: *const *const c_char,
    label_values: *const *const c_char,
    label_count: usize,
    force: bool,
    record_integrity: bool,
    out: *mut *mut MsbSnapshot,
) -> MsbResult {
    guard(|| {
        let mut builder = Snapshot::builder(arg_str(source, "source")?);
        if let Some(name) = arg_opt_str(name, "name")? {
            builder = builder.name(name);
        }
        if let Some(path) = arg_opt_str(path, "path")? {
            builder = builder.path(path);
        }
        for (k, v) in arg_pairs(label_keys, label_values, label_count, "labels")? {
            builder = builder.label(k, v);
        }
        if force {
            builder = builder.force();
        }
        if record_integrity {
            builder = builder.record_integrity();
        }
        let snapshot = block_on(config, cancel, builder.create())?;
        put(out, boxed_snapshot(snapshot))
    })
}

/// Open an artifact by bare name, digest or path (metadata only).
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_open(
    config: *const MsbConfig,
    path_or_name: *const c_char,
    out: *mut *mut MsbSnapshot,
) -> MsbResult {
    guard(|| {
        let key = arg_str(path_or_name, "path_or_name")?;
        let snapshot = block_on(config, std::ptr::null(), Snapshot::open(key))?;
        put(out, boxed_snapshot(snapshot))
    })
}

/// The artifact's JSON view (`docs/json.md`, "Snapshot"); free the string
/// with `msb_string_free`.
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_json(snap: *const MsbSnapshot, out: *mut *mut c_char) -> MsbResult {
    guard(|| put_json(out, snapshot_ref(snap)?))
}

/// Recompute the artifact's recorded integrity; the report as JSON
/// (`docs/json.md`, "SnapshotVerifyReport"). Progress goes to `progress`.
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_verify(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    snap: *const MsbSnapshot,
    progress: MsbProgressFn,
    user: *mut c_void,
    out_json: *mut *mut c_char,
) -> MsbResult {
    guard(|| {
        let snapshot = snapshot_ref(snap)?;
        let opts = call_opts(cancel, progress, user);
        let report = block_on(config, cancel, snapshot.verify_with(opts))?;
        put_json(out_json, &report)
    })
}

/// Restore the artifact as the new sandbox `name`: a full snapshot forks
/// (no boot), a disk snapshot boots cold. Overrides: `memory_mib` and
/// `cpus` 0 to keep the snapshot's (a fork may only lower them), and
/// `env_count` variables added to the environment.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn msb_snapshot_restore(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    snap: *const MsbSnapshot,
    name: *const c_char,
    memory_mib: u32,
    cpus: u32,
    env_keys: *const *const c_char,
    env_values: *const *const c_char,
    env_count: usize,
    out: *mut *mut MsbSandbox,
) -> MsbResult {
    guard(|| {
        let snapshot = snapshot_ref(snap)?;
        let name = arg_str(name, "name")?;
        let env = arg_pairs(env_keys, env_values, env_count, "env")?;
        let restore = snapshot.restore_with(name, |mut b| {
            if memory_mib > 0 {
                b = b.memory_mib(memory_mib);
            }
            if cpus > 0 {
                b = b.cpus(cpus);
            }
            for (k, v) in env {
                b = b.env(k, v);
            }
            b
        });
        let sandbox = block_on(config, cancel, restore)?;
        put(out, boxed_sandbox(sandbox))
    })
}

/// Keep the artifact under the bare `name` in the snapshots directory,
/// durably and indexed (`SnapshotAlreadyExists` if the name is taken).
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_save_named(
    config: *const MsbConfig,
    snap: *const MsbSnapshot,
    name: *const c_char,
) -> MsbResult {
    guard(|| {
        let snapshot = snapshot_ref(snap)?;
        let name = arg_str(name, "name")?;
        block_on(config, std::ptr::null(), snapshot.save_named(name))
    })
}

/// Delete the named snapshot (`msb_snapshot_remove` without `force`).
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_delete(config: *const MsbConfig, name: *const c_char) -> MsbResult {
    guard(|| {
        let name = arg_str(name, "name")?;
        block_on(config, std::ptr::null(), Snapshot::delete(name))
    })
}

/// Release an artifact.
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_free(snap: *mut MsbSnapshot) {
    free_box(snap);
}

/// The indexed snapshot with this name, digest or path.
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_get(
    config: *const MsbConfig,
    name_or_digest: *const c_char,
    out: *mut *mut MsbSnapshotHandleList,
) -> MsbResult {
    guard(|| {
        let key = arg_str(name_or_digest, "name_or_digest")?;
        let handle = block_on(config, std::ptr::null(), Snapshot::get(key))?;
        put(out, handle_list(vec![handle]))
    })
}

/// Every indexed snapshot, newest first.
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_list(
    config: *const MsbConfig,
    out: *mut *mut MsbSnapshotHandleList,
) -> MsbResult {
    guard(|| {
        let handles = block_on(config, std::ptr::null(), Snapshot::list())?;
        put(out, handle_list(handles))
    })
}

/// The views of every handle of `list`: `*out_views` points at `*out_count`
/// views owned by `list` (valid until it is freed).
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_handle_list_views(
    list: *const MsbSnapshotHandleList,
    out_views: *mut *const MsbSnapshotHandleView,
    out_count: *mut usize,
) -> MsbResult {
    guard(|| {
        // SAFETY: NULL or a live list.
        let list = unsafe { list.as_ref() }
            .ok_or_else(|| microsandbox::MicrosandboxError::InvalidConfig("list is NULL".into()))?;
        debug_assert_eq!(list.views.len(), list.handles.len());
        put(out_views, list.views.as_ptr())?;
        put(out_count, list.views.len())
    })
}

/// Release a handle list.
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_handle_list_free(list: *mut MsbSnapshotHandleList) {
    free_box(list);
}

/// The valid artifacts directly inside `dir` (never touches the index).
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_list_dir(
    config: *const MsbConfig,
    dir: *const c_char,
    out: *mut *mut MsbSnapshotList,
) -> MsbResult {
    guard(|| {
        let dir = arg_str(dir, "dir")?;
        let snapshots = block_on(config, std::ptr::null(), Snapshot::list_dir(dir))?;
        put(out, Box::into_raw(Box::new(MsbSnapshotList { snapshots })))
    })
}

/// How many artifacts `list` holds.
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_list_count(list: *const MsbSnapshotList) -> usize {
    crate::shielded(0, || {
        // SAFETY: NULL or a live list.
        unsafe { list.as_ref() }.map_or(0, |l| l.snapshots.len())
    })
}

/// A new handle on the `index`th artifact of `list` (free it on its own).
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_list_get(
    list: *const MsbSnapshotList,
    index: usize,
    out: *mut *mut MsbSnapshot,
) -> MsbResult {
    guard(|| {
        // SAFETY: NULL or a live list.
        let snapshot = unsafe { list.as_ref() }
            .and_then(|l| l.snapshots.get(index))
            .ok_or_else(|| {
                microsandbox::MicrosandboxError::InvalidConfig("index out of range".into())
            })?;
        put(out, boxed_snapshot(snapshot.clone()))
    })
}

/// Release an artifact list.
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_list_free(list: *mut MsbSnapshotList) {
    free_box(list);
}

/// Remove an artifact and its index row (`SnapshotHasChildren` unless `force`).
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_remove(
    config: *const MsbConfig,
    path_or_name: *const c_char,
    force: bool,
) -> MsbResult {
    guard(|| {
        let key = arg_str(path_or_name, "path_or_name")?;
        block_on(config, std::ptr::null(), Snapshot::remove(key, force))
    })
}

/// Rebuild the index from the artifacts in `dir` (NULL or empty: the
/// default snapshots directory); how many were indexed.
#[unsafe(no_mangle)]
pub extern "C" fn msb_snapshot_reindex(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    dir: *const c_char,
    out_count: *mut u64,
) -> MsbResult {
    guard(|| {
        let count = match arg_opt_str(dir, "dir")? {
            Some(dir) => block_on(config, cancel, Snapshot::reindex(dir))?,
            None => block_on(config, cancel, Snapshot::reindex_default())?,
        };
        put(out_count, count as u64)
    })
}

/// Bundle a snapshot into an archive at `out_path`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn msb_snapshot_export(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    name_or_path: *const c_char,
    out_path: *const c_char,
    with_parents: bool,
    with_image: bool,
    plain_tar: bool,
    progress: MsbProgressFn,
    user: *mut c_void,
) -> MsbResult {
    guard(|| {
        let key = arg_str(name_or_path, "name_or_path")?;
        let out = arg_str(out_path, "out_path")?;
        let opts = ExportOpts {
            with_parents,
            with_image,
            plain_tar,
        };
        let call = call_opts(cancel, progress, user);
        block_on(config, cancel, Snapshot::export_with(key, out, opts, call))
    })
}

/// Unpack an archive into `dest` (NULL or empty: the snapshots directory);
/// the head snapshot's handle.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn msb_snapshot_import(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    archive: *const c_char,
    dest: *const c_char,
    progress: MsbProgressFn,
    user: *mut c_void,
    out: *mut *mut MsbSnapshotHandleList,
) -> MsbResult {
    guard(|| {
        let archive = arg_str(archive, "archive")?;
        let dest = arg_opt_str(dest, "dest")?.map(Path::new);
        let call = call_opts(cancel, progress, user);
        let handle = block_on(config, cancel, Snapshot::import_with(archive, dest, call))?;
        put(out, handle_list(vec![handle]))
    })
}

/// Push a snapshot to `reference` (`host/repo:tag`) as an OCI artifact
/// (progress phases `export`, then `push`); its manifest digest into
/// `*out_digest` (free it with `msb_string_free`).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn msb_snapshot_push(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    name_or_path: *const c_char,
    reference: *const c_char,
    progress: MsbProgressFn,
    user: *mut c_void,
    out_digest: *mut *mut c_char,
) -> MsbResult {
    guard(|| {
        let key = arg_str(name_or_path, "name_or_path")?;
        let reference = arg_str(reference, "reference")?;
        let call = call_opts(cancel, progress, user);
        let digest = block_on(config, cancel, Snapshot::push_with(key, reference, call))?;
        put_string(out_digest, digest)
    })
}

/// Pull the snapshot artifact `reference` and import it into `dest` (NULL
/// or empty: the snapshots directory), progress phases `pull`, then
/// `import`; the head snapshot's handle.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn msb_snapshot_pull(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    reference: *const c_char,
    dest: *const c_char,
    progress: MsbProgressFn,
    user: *mut c_void,
    out: *mut *mut MsbSnapshotHandleList,
) -> MsbResult {
    guard(|| {
        let reference = arg_str(reference, "reference")?;
        let dest = arg_opt_str(dest, "dest")?.map(Path::new);
        let call = call_opts(cancel, progress, user);
        let handle = block_on(config, cancel, Snapshot::pull_with(reference, dest, call))?;
        put(out, handle_list(vec![handle]))
    })
}

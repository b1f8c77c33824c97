//! Snapshot entry points: create, open, get, list, list_dir, remove,
//! reindex, export, import, verify, push and pull through a registry, and
//! the full-VM ones (kind, restore with overrides, save_named, delete), as
//! Promises over the core's calls.

use std::path::PathBuf;

use microsandbox::sandbox::RestoreBuilder;
use microsandbox::snapshot::SnapshotKind;
use microsandbox::{ExportOpts, Snapshot, SnapshotHandle, SnapshotVerifyReport, UpperVerifyStatus};
use napi::Env;
use napi::bindgen_prelude::{
    AsyncTask, BigInt, BigUint64Array, Float64Array, PromiseRaw, Uint8Array, Uint32Array,
};
use napi_derive::napi;

use crate::call::{
    BlockingTask, CancelToken, NativeConfig, ProgressFn, blocking_task, spawn, spawn_with_call_opts,
};
use crate::sandbox::{NativeSandbox, pairs, spawn_sandbox};

/// The overrides of `restoreWith` (unset: the snapshot's own).
#[napi(object)]
pub struct NativeRestoreSpec {
    /// Guest memory in MiB (at most the snapshot's, for a full one).
    pub memory_mib: Option<u32>,
    /// Online vCPUs (at most the snapshot's, for a full one).
    pub cpus: Option<u32>,
    /// Environment variables as `[key, value]` pairs.
    pub env: Vec<Vec<String>>,
}

impl NativeRestoreSpec {
    fn apply(self, mut b: RestoreBuilder) -> RestoreBuilder {
        if let Some(mib) = self.memory_mib {
            b = b.memory_mib(mib);
        }
        if let Some(cpus) = self.cpus {
            b = b.cpus(cpus);
        }
        for (k, v) in pairs(self.env) {
            b = b.env(k, v);
        }
        b
    }
}

/// Overrides of `restore_with` from an optional spec (none: unchanged).
fn overrides(spec: Option<NativeRestoreSpec>) -> impl FnOnce(RestoreBuilder) -> RestoreBuilder {
    move |b| match spec {
        Some(spec) => spec.apply(b),
        None => b,
    }
}

/// An opened artifact (the core's `Snapshot`).
#[napi]
pub struct NativeSnapshot {
    inner: Snapshot,
}

#[napi]
impl NativeSnapshot {
    /// The artifact directory.
    #[napi(getter, catch_unwind)]
    pub fn path(&self) -> String {
        self.inner.path().to_string_lossy().into_owned()
    }

    /// Canonical manifest digest.
    #[napi(getter, catch_unwind)]
    pub fn digest(&self) -> String {
        self.inner.digest().to_string()
    }

    /// Apparent size of the upper layer.
    #[napi(getter, catch_unwind)]
    pub fn size_bytes(&self) -> BigInt {
        BigInt::from(self.inner.size_bytes())
    }

    /// Source image reference.
    #[napi(getter, catch_unwind)]
    pub fn image_ref(&self) -> String {
        self.inner.image_ref().to_string()
    }

    /// Pinned image manifest digest.
    #[napi(getter, catch_unwind)]
    pub fn image_manifest_digest(&self) -> String {
        self.inner.image_manifest_digest().to_string()
    }

    /// `raw` or `qcow2`.
    #[napi(getter, catch_unwind)]
    pub fn format(&self) -> String {
        self.inner.format().as_str().to_string()
    }

    /// Filesystem inside the upper.
    #[napi(getter, catch_unwind)]
    pub fn fstype(&self) -> String {
        self.inner.fstype().to_string()
    }

    /// Parent digest, or null.
    #[napi(getter, catch_unwind)]
    pub fn parent(&self) -> Option<String> {
        self.inner.parent().map(str::to_string)
    }

    /// RFC 3339 creation time.
    #[napi(getter, catch_unwind)]
    pub fn created_at(&self) -> String {
        self.inner.created_at().to_string()
    }

    /// Labels as `[key, value]` pairs sorted by key.
    #[napi(getter, catch_unwind)]
    pub fn labels(&self) -> Vec<Vec<String>> {
        self.inner
            .labels()
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect()
    }

    /// Recorded source sandbox, or null.
    #[napi(getter, catch_unwind)]
    pub fn source_sandbox(&self) -> Option<String> {
        self.inner.source_sandbox().map(str::to_string)
    }

    /// `disk` or `full`.
    #[napi(getter, catch_unwind)]
    pub fn kind(&self) -> String {
        self.inner.kind().as_str().to_string()
    }

    /// A full snapshot's `vm.json` as JSON text, or null for a disk one.
    #[napi(getter, catch_unwind)]
    pub fn vm_json(&self) -> Option<String> {
        self.inner
            .vm()
            .and_then(|vm| serde_json::to_string(vm).ok())
    }

    /// A new sandbox `name` from this snapshot (a fork, for a full one),
    /// with `spec`'s overrides if given.
    #[napi(ts_return_type = "Promise<NativeSandbox>")]
    pub fn restore<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
        name: String,
        spec: Option<NativeRestoreSpec>,
        cancel: Option<&CancelToken>,
    ) -> napi::Result<PromiseRaw<'env, NativeSandbox>> {
        let snap = self.inner.clone();
        let work = async move { snap.restore_with(name, overrides(spec)).await };
        spawn_sandbox(env, config, cancel, work)
    }

    /// Keep this snapshot under the bare `name` (durable and indexed).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save_named<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
        name: String,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let snap = self.inner.clone();
        let work = async move { snap.save_named(&name).await };
        spawn(env, config, None, None, work, Ok)
    }

    /// Recompute the upper's digest and compare it with the manifest.
    #[napi(ts_return_type = "Promise<NativeVerifyReport>")]
    pub fn verify<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
        cancel: Option<&CancelToken>,
        progress: Option<ProgressFn>,
    ) -> napi::Result<PromiseRaw<'env, NativeVerifyReport>> {
        let snapshot = self.inner.clone();
        spawn_with_call_opts(
            env,
            config,
            cancel,
            progress,
            |call| async move { snapshot.verify_with(call).await },
            |report| Ok(NativeVerifyReport::from(report)),
        )
    }
}

impl From<Snapshot> for NativeSnapshot {
    fn from(inner: Snapshot) -> Self {
        Self { inner }
    }
}

/// `snap.verify()`'s report; `upper_kind` is `notRecorded` or `verified`.
#[napi(object)]
pub struct NativeVerifyReport {
    /// Manifest digest.
    pub digest: String,
    /// Artifact directory.
    pub path: String,
    /// `notRecorded` or `verified`.
    pub upper_kind: String,
    /// Algorithm (verified only).
    pub upper_algorithm: Option<String>,
    /// Recomputed digest (verified only).
    pub upper_digest: Option<String>,
}

impl From<SnapshotVerifyReport> for NativeVerifyReport {
    fn from(report: SnapshotVerifyReport) -> Self {
        let (upper_kind, upper_algorithm, upper_digest) = match report.upper {
            UpperVerifyStatus::NotRecorded => ("notRecorded", None, None),
            UpperVerifyStatus::Verified { algorithm, digest } => {
                ("verified", Some(algorithm), Some(digest))
            }
        };
        Self {
            digest: report.digest,
            path: report.path.to_string_lossy().into_owned(),
            upper_kind: upper_kind.to_string(),
            upper_algorithm,
            upper_digest,
        }
    }
}

/// Index rows as one compact table (what `Snapshot.list()` returns): the text fields of every row concatenated in
/// one string, with typed arrays for offsets, sizes, times and flags. The
/// TS layer's handles read their fields from it when asked, so 10,000 rows
/// cross the boundary as a handful of values instead of 80,000.
#[napi(object)]
pub struct NativeHandleTable {
    /// Rows.
    pub count: u32,
    /// Digest, name, parent digest, image reference and path of each row.
    pub text: String,
    /// End of each of those five fields per row, in UTF-16 units of `text`.
    pub ends: Uint32Array,
    /// Bit 0: has a name; 1: has a parent; 2: has a size; 3: format qcow2;
    /// 4: kind full.
    pub flags: Uint8Array,
    /// Apparent upper size at index time (when bit 2 is set).
    pub sizes: BigUint64Array,
    /// Creation time, milliseconds since the epoch (UTC).
    pub created_at_ms: Float64Array,
}

/// [`NativeHandleTable`] before it reaches JS (built off the JS thread).
#[derive(Default)]
pub struct HandleRows {
    text: String,
    ends: Vec<u32>,
    flags: Vec<u8>,
    sizes: Vec<u64>,
    created_at_ms: Vec<f64>,
    utf16_len: u32,
}

impl HandleRows {
    fn push(&mut self, h: &SnapshotHandle) {
        let fields = [
            h.digest(),
            h.name().unwrap_or_default(),
            h.parent_digest().unwrap_or_default(),
            h.image_ref(),
            &h.path().to_string_lossy(),
        ];
        for field in fields {
            self.text.push_str(field);
            let units = if field.is_ascii() {
                field.len()
            } else {
                field.encode_utf16().count()
            };
            self.utf16_len += units as u32;
            self.ends.push(self.utf16_len);
        }
        let flag = |on: bool, bit: u8| if on { 1 << bit } else { 0 };
        self.flags.push(
            flag(h.name().is_some(), 0)
                | flag(h.parent_digest().is_some(), 1)
                | flag(h.size_bytes().is_some(), 2)
                | flag(h.format().as_str() == "qcow2", 3)
                | flag(h.kind() == SnapshotKind::Full, 4),
        );
        self.sizes.push(h.size_bytes().unwrap_or(0));
        self.created_at_ms
            .push(h.created_at().and_utc().timestamp_millis() as f64);
    }

    fn into_table(self) -> NativeHandleTable {
        NativeHandleTable {
            count: self.flags.len() as u32,
            text: self.text,
            ends: Uint32Array::new(self.ends),
            flags: Uint8Array::new(self.flags),
            sizes: BigUint64Array::new(self.sizes),
            created_at_ms: Float64Array::new(self.created_at_ms),
        }
    }
}

/// A live index handle (from `Snapshot.get()` or `import`): it can open
/// and remove its artifact.
#[napi]
pub struct NativeSnapshotHandle {
    inner: SnapshotHandle,
}

#[napi]
impl NativeSnapshotHandle {
    /// Manifest digest.
    #[napi(getter, catch_unwind)]
    pub fn digest(&self) -> String {
        self.inner.digest().to_string()
    }

    /// Bare name, if any.
    #[napi(getter, catch_unwind)]
    pub fn name(&self) -> Option<String> {
        self.inner.name().map(str::to_string)
    }

    /// Parent digest, if any.
    #[napi(getter, catch_unwind)]
    pub fn parent_digest(&self) -> Option<String> {
        self.inner.parent_digest().map(str::to_string)
    }

    /// Image reference.
    #[napi(getter, catch_unwind)]
    pub fn image_ref(&self) -> String {
        self.inner.image_ref().to_string()
    }

    /// `raw` or `qcow2`.
    #[napi(getter, catch_unwind)]
    pub fn format(&self) -> String {
        self.inner.format().as_str().to_string()
    }

    /// Apparent upper size at index time, if recorded.
    #[napi(getter, catch_unwind)]
    pub fn size_bytes(&self) -> Option<BigInt> {
        self.inner.size_bytes().map(BigInt::from)
    }

    /// Creation time, milliseconds since the epoch (UTC).
    #[napi(getter, catch_unwind)]
    pub fn created_at_ms(&self) -> f64 {
        self.inner.created_at().and_utc().timestamp_millis() as f64
    }

    /// Artifact directory.
    #[napi(getter, catch_unwind)]
    pub fn path(&self) -> String {
        self.inner.path().to_string_lossy().into_owned()
    }

    /// `disk` or `full`.
    #[napi(getter, catch_unwind)]
    pub fn kind(&self) -> String {
        self.inner.kind().as_str().to_string()
    }

    /// Open the artifact and restore it as the new sandbox `name`.
    #[napi(ts_return_type = "Promise<NativeSandbox>")]
    pub fn restore<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
        name: String,
        spec: Option<NativeRestoreSpec>,
        cancel: Option<&CancelToken>,
    ) -> napi::Result<PromiseRaw<'env, NativeSandbox>> {
        let handle = self.inner.clone();
        spawn_sandbox(env, config, cancel, async move {
            handle.restore_with(name, overrides(spec)).await
        })
    }

    /// Open the underlying artifact.
    #[napi(ts_return_type = "Promise<NativeSnapshot>")]
    pub fn open<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
    ) -> napi::Result<PromiseRaw<'env, NativeSnapshot>> {
        let handle = self.inner.clone();
        spawn(
            env,
            config,
            None,
            None,
            async move { handle.open().await },
            |s| Ok(NativeSnapshot::from(s)),
        )
    }

    /// Remove the artifact and its index row.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn remove<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
        force: bool,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let handle = self.inner.clone();
        spawn(
            env,
            config,
            None,
            None,
            async move { handle.remove(force).await },
            Ok,
        )
    }
}

/// What `Snapshot.builder(...).create()` collected.
#[napi(object)]
pub struct NativeSnapshotSpec {
    /// The stopped sandbox to capture.
    pub source_sandbox: String,
    /// Bare name destination.
    pub name: Option<String>,
    /// Explicit path destination.
    pub path: Option<String>,
    /// Labels, in call order.
    pub labels: Vec<Vec<String>>,
    /// Overwrite an existing destination.
    pub force: bool,
    /// Record an integrity digest.
    pub record_integrity: bool,
}

/// Create a snapshot from a builder's settings (the core checks them).
#[napi(ts_return_type = "Promise<NativeSnapshot>")]
pub fn snapshot_create<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    spec: NativeSnapshotSpec,
    cancel: Option<&CancelToken>,
) -> napi::Result<PromiseRaw<'env, NativeSnapshot>> {
    let mut builder = Snapshot::builder(spec.source_sandbox);
    if let Some(name) = spec.name {
        builder = builder.name(name);
    }
    if let Some(path) = spec.path {
        builder = builder.path(path);
    }
    for pair in spec.labels {
        let mut it = pair.into_iter();
        builder = builder.label(it.next().unwrap_or_default(), it.next().unwrap_or_default());
    }
    if spec.force {
        builder = builder.force();
    }
    if spec.record_integrity {
        builder = builder.record_integrity();
    }
    spawn(env, config, cancel, None, builder.create(), |s| {
        Ok(NativeSnapshot::from(s))
    })
}

/// Open an artifact by bare name, digest or path.
#[napi(ts_return_type = "Promise<NativeSnapshot>")]
pub fn snapshot_open<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    path_or_name: String,
) -> napi::Result<PromiseRaw<'env, NativeSnapshot>> {
    spawn(
        env,
        config,
        None,
        None,
        async move { Snapshot::open(path_or_name).await },
        |s| Ok(NativeSnapshot::from(s)),
    )
}

/// The indexed snapshot with this name, digest or path. A small lookup:
/// it runs on libuv's worker pool in one hop (see [`BlockingTask`]).
#[napi(ts_return_type = "Promise<NativeSnapshotHandle>")]
pub fn snapshot_get(
    config: Option<NativeConfig>,
    name_or_digest: String,
) -> AsyncTask<BlockingTask<NativeSnapshotHandle>> {
    blocking_task(config, move |home| {
        Snapshot::get_blocking(&home, &name_or_digest)
            .map(|inner| move || Ok(NativeSnapshotHandle { inner }))
    })
}

/// Every indexed snapshot, newest first, as one table.
#[napi(ts_return_type = "Promise<NativeHandleTable>")]
pub fn snapshot_list<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
) -> napi::Result<PromiseRaw<'env, NativeHandleTable>> {
    let work = async move {
        let rows = std::sync::Arc::new(std::sync::Mutex::new(HandleRows::default()));
        let sink = rows.clone();
        Snapshot::list_each(move |h| {
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(&h);
            true
        })
        .await?;
        let rows = std::mem::take(&mut *rows.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(rows)
    };
    spawn(env, config, None, None, work, |rows| Ok(rows.into_table()))
}

/// The valid artifacts directly inside `dir`.
#[napi(ts_return_type = "Promise<NativeSnapshot[]>")]
pub fn snapshot_list_dir<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    dir: String,
) -> napi::Result<PromiseRaw<'env, Vec<NativeSnapshot>>> {
    spawn(env, config, None, None, Snapshot::list_dir(dir), |list| {
        Ok(list.into_iter().map(NativeSnapshot::from).collect())
    })
}

/// Remove an artifact and its index row.
#[napi(ts_return_type = "Promise<void>")]
pub fn snapshot_remove<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    path_or_name: String,
    force: bool,
) -> napi::Result<PromiseRaw<'env, ()>> {
    spawn(
        env,
        config,
        None,
        None,
        Snapshot::remove(path_or_name, force),
        Ok,
    )
}

/// Delete the named snapshot (`Snapshot::delete`: remove without force).
#[napi(ts_return_type = "Promise<void>")]
pub fn snapshot_delete<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    name: String,
) -> napi::Result<PromiseRaw<'env, ()>> {
    let work = async move { Snapshot::delete(&name).await };
    spawn(env, config, None, None, work, Ok)
}

/// Rebuild the index from `dir` (default: the snapshots directory).
#[napi(ts_return_type = "Promise<number>")]
pub fn snapshot_reindex<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    dir: Option<String>,
    cancel: Option<&CancelToken>,
) -> napi::Result<PromiseRaw<'env, u32>> {
    let work = async move {
        match dir {
            Some(dir) => Snapshot::reindex(dir).await,
            None => Snapshot::reindex_default().await,
        }
    };
    spawn(env, config, cancel, None, work, |n| {
        u32::try_from(n).map_err(|_| napi::Error::from_reason("more than 2^32 artifacts"))
    })
}

/// Bundle a snapshot into an archive.
#[napi(ts_return_type = "Promise<void>")]
#[allow(clippy::too_many_arguments)]
pub fn snapshot_export<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    name_or_path: String,
    out: String,
    with_parents: bool,
    with_image: bool,
    plain_tar: bool,
    cancel: Option<&CancelToken>,
    progress: Option<ProgressFn>,
) -> napi::Result<PromiseRaw<'env, ()>> {
    let opts = ExportOpts {
        with_parents,
        with_image,
        plain_tar,
    };
    spawn_with_call_opts(
        env,
        config,
        cancel,
        progress,
        |call| Snapshot::export_with(name_or_path, out, opts, call),
        Ok,
    )
}

/// Unpack an archive into `dest` (default: the snapshots directory).
#[napi(ts_return_type = "Promise<NativeSnapshotHandle>")]
pub fn snapshot_import<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    archive: String,
    dest: Option<String>,
    cancel: Option<&CancelToken>,
    progress: Option<ProgressFn>,
) -> napi::Result<PromiseRaw<'env, NativeSnapshotHandle>> {
    let work = |call| async move {
        Snapshot::import_with(archive, dest.map(PathBuf::from).as_deref(), call).await
    };
    spawn_with_call_opts(env, config, cancel, progress, work, |inner| {
        Ok(NativeSnapshotHandle { inner })
    })
}

/// Push a snapshot to a registry reference as an OCI artifact (progress
/// `export`, then `push`); the artifact's manifest digest.
#[napi(ts_return_type = "Promise<string>")]
pub fn snapshot_push<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    name_or_path: String,
    reference: String,
    cancel: Option<&CancelToken>,
    progress: Option<ProgressFn>,
) -> napi::Result<PromiseRaw<'env, String>> {
    spawn_with_call_opts(
        env,
        config,
        cancel,
        progress,
        |call| Snapshot::push_with(name_or_path, reference, call),
        Ok,
    )
}

/// Pull a snapshot artifact and import it into `dest` (default: the
/// snapshots directory), progress `pull`, then `import`.
#[napi(ts_return_type = "Promise<NativeSnapshotHandle>")]
pub fn snapshot_pull<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    reference: String,
    dest: Option<String>,
    cancel: Option<&CancelToken>,
    progress: Option<ProgressFn>,
) -> napi::Result<PromiseRaw<'env, NativeSnapshotHandle>> {
    let work = |call| async move {
        Snapshot::pull_with(reference, dest.map(PathBuf::from).as_deref(), call).await
    };
    spawn_with_call_opts(env, config, cancel, progress, work, |inner| {
        Ok(NativeSnapshotHandle { inner })
    })
}

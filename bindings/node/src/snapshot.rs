//! Snapshot entry points: create, open, get, list, list_dir, remove,
//! reindex, export, import, verify, as Promises over the core's calls.

use std::path::PathBuf;

use microsandbox::{ExportOpts, Snapshot, SnapshotHandle, SnapshotVerifyReport, UpperVerifyStatus};
use napi::Env;
use napi::bindgen_prelude::{BigInt, PromiseRaw};
use napi_derive::napi;

use crate::call::{CancelToken, NativeConfig, Progress, ProgressFn, call_opts, spawn};

/// An opened artifact (the core's `Snapshot`).
#[napi]
pub struct NativeSnapshot {
    inner: Snapshot,
}

#[napi]
impl NativeSnapshot {
    /// The artifact directory.
    #[napi(getter)]
    pub fn path(&self) -> String {
        self.inner.path().to_string_lossy().into_owned()
    }

    /// Canonical manifest digest.
    #[napi(getter)]
    pub fn digest(&self) -> String {
        self.inner.digest().to_string()
    }

    /// Apparent size of the upper layer.
    #[napi(getter)]
    pub fn size_bytes(&self) -> BigInt {
        BigInt::from(self.inner.size_bytes())
    }

    /// Source image reference.
    #[napi(getter)]
    pub fn image_ref(&self) -> String {
        self.inner.image_ref().to_string()
    }

    /// Pinned image manifest digest.
    #[napi(getter)]
    pub fn image_manifest_digest(&self) -> String {
        self.inner.image_manifest_digest().to_string()
    }

    /// `raw` or `qcow2`.
    #[napi(getter)]
    pub fn format(&self) -> String {
        self.inner.format().as_str().to_string()
    }

    /// Filesystem inside the upper.
    #[napi(getter)]
    pub fn fstype(&self) -> String {
        self.inner.fstype().to_string()
    }

    /// Parent digest, or null.
    #[napi(getter)]
    pub fn parent(&self) -> Option<String> {
        self.inner.parent().map(str::to_string)
    }

    /// RFC 3339 creation time.
    #[napi(getter)]
    pub fn created_at(&self) -> String {
        self.inner.created_at().to_string()
    }

    /// Labels as `[key, value]` pairs sorted by key.
    #[napi(getter)]
    pub fn labels(&self) -> Vec<Vec<String>> {
        self.inner
            .labels()
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect()
    }

    /// Recorded source sandbox, or null.
    #[napi(getter)]
    pub fn source_sandbox(&self) -> Option<String> {
        self.inner.source_sandbox().map(str::to_string)
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
        let progress = Progress::new(progress);
        let opts = call_opts(cancel.map(|c| &c.inner), progress.as_ref());
        spawn(
            env,
            config,
            cancel,
            progress,
            async move { snapshot.verify_with(opts).await },
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

/// An index row as plain data (what `Snapshot.list()` returns: read-only).
#[napi(object)]
pub struct NativeHandleData {
    /// Manifest digest.
    pub digest: String,
    /// Bare name, if any.
    pub name: Option<String>,
    /// Parent digest, if any.
    pub parent_digest: Option<String>,
    /// Image reference.
    pub image_ref: String,
    /// `raw` or `qcow2`.
    pub format: String,
    /// Apparent upper size at index time.
    pub size_bytes: Option<BigInt>,
    /// Creation time, milliseconds since the epoch (UTC).
    pub created_at_ms: f64,
    /// Artifact directory.
    pub path: String,
}

impl From<&SnapshotHandle> for NativeHandleData {
    fn from(h: &SnapshotHandle) -> Self {
        Self {
            digest: h.digest().to_string(),
            name: h.name().map(str::to_string),
            parent_digest: h.parent_digest().map(str::to_string),
            image_ref: h.image_ref().to_string(),
            format: h.format().as_str().to_string(),
            size_bytes: h.size_bytes().map(BigInt::from),
            created_at_ms: h.created_at().and_utc().timestamp_millis() as f64,
            path: h.path().to_string_lossy().into_owned(),
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
    /// The row's fields.
    #[napi]
    pub fn data(&self) -> NativeHandleData {
        NativeHandleData::from(&self.inner)
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

/// The indexed snapshot with this name, digest or path.
#[napi(ts_return_type = "Promise<NativeSnapshotHandle>")]
pub fn snapshot_get<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    name_or_digest: String,
) -> napi::Result<PromiseRaw<'env, NativeSnapshotHandle>> {
    spawn(
        env,
        config,
        None,
        None,
        Snapshot::get(name_or_digest),
        |inner| Ok(NativeSnapshotHandle { inner }),
    )
}

/// Every indexed snapshot, newest first, as plain rows.
#[napi(ts_return_type = "Promise<NativeHandleData[]>")]
pub fn snapshot_list<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
) -> napi::Result<PromiseRaw<'env, Vec<NativeHandleData>>> {
    spawn(env, config, None, None, Snapshot::list(), |handles| {
        Ok(handles.iter().map(NativeHandleData::from).collect())
    })
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
    let progress = Progress::new(progress);
    let call = call_opts(cancel.map(|c| &c.inner), progress.as_ref());
    let opts = ExportOpts {
        with_parents,
        with_image,
        plain_tar,
    };
    spawn(
        env,
        config,
        cancel,
        progress,
        Snapshot::export_with(name_or_path, out, opts, call),
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
    let progress = Progress::new(progress);
    let call = call_opts(cancel.map(|c| &c.inner), progress.as_ref());
    let work = async move {
        Snapshot::import_with(archive, dest.map(PathBuf::from).as_deref(), call).await
    };
    spawn(env, config, cancel, progress, work, |inner| {
        Ok(NativeSnapshotHandle { inner })
    })
}

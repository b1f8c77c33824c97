//! `Snapshot` (an opened artifact) and `SnapshotHandle` (an index row), with
//! the snapshot entry points as static methods, and `RestoreBuilder` (the
//! overrides of `restore_with`). Accessors read the core objects on demand,
//! so a listing of thousands converts cheaply.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use microsandbox::sandbox::RestoreBuilder;
use microsandbox::{ExportOpts, Snapshot, SnapshotHandle, SnapshotVerifyReport, UpperVerifyStatus};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::call::{convert_all, spawn, spawn_cancellable, spawn_quick, spawn_with_call_opts};
use crate::sandbox::Booted;

/// An opened snapshot artifact: its manifest, digest and location.
#[pyclass(name = "Snapshot", module = "microsandbox._native", frozen)]
pub(crate) struct PySnapshot {
    pub(crate) inner: Snapshot,
}

impl From<Snapshot> for PySnapshot {
    fn from(inner: Snapshot) -> Self {
        Self { inner }
    }
}

impl PySnapshot {
    fn source(&self) -> Source {
        Source::Artifact(Box::new(self.inner.clone()))
    }
}

#[pymethods]
impl PySnapshot {
    /// Capture the stopped sandbox `source_sandbox` into a new artifact.
    #[staticmethod]
    #[pyo3(signature = (source_sandbox, *, name=None, path=None, labels=None, force=false, record_integrity=false))]
    fn create(
        py: Python<'_>,
        source_sandbox: String,
        name: Option<String>,
        path: Option<PathBuf>,
        labels: Option<BTreeMap<String, String>>,
        force: bool,
        record_integrity: bool,
    ) -> PyResult<Bound<'_, PyAny>> {
        let mut builder = Snapshot::builder(source_sandbox);
        if let Some(name) = name {
            builder = builder.name(name);
        }
        if let Some(path) = path {
            builder = builder.path(path);
        }
        for (key, value) in labels.unwrap_or_default() {
            builder = builder.label(key, value);
        }
        if force {
            builder = builder.force();
        }
        if record_integrity {
            builder = builder.record_integrity();
        }
        spawn_cancellable(py, |_| async move {
            builder.create().await.map(PySnapshot::from)
        })
    }

    /// Open an artifact by bare name, digest or path.
    #[staticmethod]
    fn open(py: Python<'_>, path_or_name: PathBuf) -> PyResult<Bound<'_, PyAny>> {
        let key = path_or_name.to_string_lossy().into_owned();
        spawn(py, async move {
            Snapshot::open(key).await.map(PySnapshot::from)
        })
    }

    /// The indexed snapshot with this name, digest or path.
    #[staticmethod]
    fn get(py: Python<'_>, name_or_digest: String) -> PyResult<Bound<'_, PyAny>> {
        spawn_quick(py, move |home| {
            Snapshot::get_blocking(home, &name_or_digest).map(PySnapshotHandle::from)
        })
    }

    /// Every indexed snapshot, newest first.
    #[staticmethod]
    fn list(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move {
            let handles = Snapshot::list().await?;
            Ok(handles
                .into_iter()
                .map(PySnapshotHandle::from)
                .collect::<Vec<_>>())
        })
    }

    /// The valid artifacts directly inside `dir` (never touches the index).
    #[staticmethod]
    fn list_dir(py: Python<'_>, dir: PathBuf) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move {
            Snapshot::list_dir(dir)
                .await
                .map(convert_all::<_, PySnapshot>)
        })
    }

    /// Remove an artifact (name, digest or path) and its index row.
    #[staticmethod]
    #[pyo3(signature = (path_or_name, *, force=false))]
    fn remove(py: Python<'_>, path_or_name: PathBuf, force: bool) -> PyResult<Bound<'_, PyAny>> {
        let key = path_or_name.to_string_lossy().into_owned();
        spawn(py, async move { Snapshot::remove(key, force).await })
    }

    /// Rebuild the index from `dir` (default: the snapshots directory);
    /// returns how many artifacts were indexed.
    #[staticmethod]
    #[pyo3(signature = (dir=None))]
    fn reindex(py: Python<'_>, dir: Option<PathBuf>) -> PyResult<Bound<'_, PyAny>> {
        spawn_cancellable(py, |_| async move {
            match dir {
                Some(dir) => Snapshot::reindex(dir).await,
                None => Snapshot::reindex_default().await,
            }
        })
    }

    /// Bundle a snapshot into an archive at `out`.
    #[staticmethod]
    #[pyo3(signature = (path_or_name, out, *, with_parents=false, with_image=false, plain_tar=false, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn export(
        py: Python<'_>,
        path_or_name: PathBuf,
        out: PathBuf,
        with_parents: bool,
        with_image: bool,
        plain_tar: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'_, PyAny>> {
        let key = path_or_name.to_string_lossy().into_owned();
        let opts = ExportOpts {
            with_parents,
            with_image,
            plain_tar,
        };
        spawn_with_call_opts(py, progress, |call| async move {
            Snapshot::export_with(key, out, opts, call).await
        })
    }

    /// Unpack an archive into `dest` (default: the snapshots directory) and
    /// index it; returns the head snapshot's handle.
    #[staticmethod]
    #[pyo3(name = "import_", signature = (archive, *, dest=None, progress=None))]
    fn import(
        py: Python<'_>,
        archive: PathBuf,
        dest: Option<PathBuf>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'_, PyAny>> {
        spawn_with_call_opts(py, progress, |call| async move {
            Snapshot::import_with(archive, dest.as_deref(), call)
                .await
                .map(PySnapshotHandle::from)
        })
    }

    /// Push the snapshot `path_or_name` to a registry `reference` as an OCI
    /// artifact (progress `export`, then `push`); its manifest digest.
    #[staticmethod]
    #[pyo3(signature = (path_or_name, reference, *, progress=None))]
    fn push(
        py: Python<'_>,
        path_or_name: PathBuf,
        reference: String,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'_, PyAny>> {
        let key = path_or_name.to_string_lossy().into_owned();
        spawn_with_call_opts(py, progress, |call| async move {
            Snapshot::push_with(key, reference, call).await
        })
    }

    /// Pull the snapshot artifact `reference` and import it into `dest`
    /// (default: the snapshots directory), progress `pull`, then `import`.
    #[staticmethod]
    #[pyo3(signature = (reference, *, dest=None, progress=None))]
    fn pull(
        py: Python<'_>,
        reference: String,
        dest: Option<PathBuf>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'_, PyAny>> {
        spawn_with_call_opts(py, progress, |call| async move {
            Snapshot::pull_with(reference, dest.as_deref(), call)
                .await
                .map(PySnapshotHandle::from)
        })
    }

    /// Delete the named snapshot (`remove` without `force`).
    #[staticmethod]
    fn delete(py: Python<'_>, name: String) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move { Snapshot::delete(&name).await })
    }

    /// Fork a new sandbox `name` from this snapshot (a disk snapshot boots cold).
    fn restore<'py>(&self, py: Python<'py>, name: String) -> Awaitable<'py> {
        fork(py, self.source(), name, None)
    }

    /// `restore` with the overrides `f` sets on the `RestoreBuilder` it is given.
    fn restore_with<'py>(&self, py: Python<'py>, name: String, f: PyFn<'py>) -> Awaitable<'py> {
        fork(py, self.source(), name, Some(f))
    }

    /// Keep this snapshot under the bare `name` in the snapshots directory
    /// (indexed), so it outlives its source sandbox.
    fn save_named<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let snapshot = self.inner.clone();
        spawn(py, async move { snapshot.save_named(&name).await })
    }

    /// Check the manifest and the upper layer's recorded integrity.
    #[pyo3(signature = (*, progress=None))]
    fn verify<'py>(
        &self,
        py: Python<'py>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let snapshot = self.inner.clone();
        spawn_with_call_opts(py, progress, |call| async move {
            snapshot.verify_with(call).await.map(VerifyReport)
        })
    }

    /// The artifact directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    /// The canonical manifest digest (`sha256:<hex>`).
    #[getter]
    fn digest(&self) -> &str {
        self.inner.digest()
    }

    /// `disk` or `full`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind().as_str()
    }

    /// The upper layer's apparent size in bytes.
    #[getter]
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }

    /// The image reference the snapshot was taken on.
    #[getter]
    fn image_ref(&self) -> &str {
        self.inner.image_ref()
    }

    /// The pinned image's manifest digest.
    #[getter]
    fn image_manifest_digest(&self) -> &str {
        self.inner.image_manifest_digest()
    }

    /// `raw` or `qcow2`.
    #[getter]
    fn format(&self) -> &'static str {
        self.inner.format().as_str()
    }

    /// The upper layer's filesystem type.
    #[getter]
    fn fstype(&self) -> &str {
        self.inner.fstype()
    }

    /// The parent snapshot's digest, if any.
    #[getter]
    fn parent(&self) -> Option<&str> {
        self.inner.parent()
    }

    /// The RFC 3339 creation time from the manifest.
    #[getter]
    fn created_at(&self) -> &str {
        self.inner.created_at()
    }

    /// The user labels, sorted by key.
    #[getter]
    fn labels<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (key, value) in self.inner.labels() {
            dict.set_item(key, value)?;
        }
        Ok(dict)
    }

    /// The sandbox the snapshot was taken of, if recorded.
    #[getter]
    fn source_sandbox(&self) -> Option<&str> {
        self.inner.source_sandbox()
    }

    fn __repr__(&self) -> String {
        format!(
            "Snapshot(digest={:?}, path={:?})",
            self.inner.digest(),
            self.inner.path()
        )
    }
}

/// A lightweight handle backed by an index row.
#[pyclass(name = "SnapshotHandle", module = "microsandbox._native", frozen)]
pub(crate) struct PySnapshotHandle {
    inner: SnapshotHandle,
}

impl From<SnapshotHandle> for PySnapshotHandle {
    fn from(inner: SnapshotHandle) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl PySnapshotHandle {
    /// The snapshot's digest.
    #[getter]
    fn digest(&self) -> &str {
        self.inner.digest()
    }

    /// `disk` or `full`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind().as_str()
    }

    /// The bare name, when the artifact lives in the snapshots directory.
    #[getter]
    fn name(&self) -> Option<&str> {
        self.inner.name()
    }

    /// The parent's digest, if any.
    #[getter]
    fn parent_digest(&self) -> Option<&str> {
        self.inner.parent_digest()
    }

    /// The image reference.
    #[getter]
    fn image_ref(&self) -> &str {
        self.inner.image_ref()
    }

    /// `raw` or `qcow2`.
    #[getter]
    fn format(&self) -> &'static str {
        self.inner.format().as_str()
    }

    /// The upper layer's apparent size, when recorded.
    #[getter]
    fn size_bytes(&self) -> Option<u64> {
        self.inner.size_bytes()
    }

    /// The creation time, timezone-aware (UTC).
    #[getter]
    fn created_at(&self) -> DateTime<Utc> {
        self.inner.created_at().and_utc()
    }

    /// The artifact directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    /// Open the artifact this row points to.
    fn open<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.clone();
        spawn(py, async move { handle.open().await.map(PySnapshot::from) })
    }

    /// Open the snapshot and fork a new sandbox `name` from it.
    fn restore<'py>(&self, py: Python<'py>, name: String) -> Awaitable<'py> {
        fork(py, Source::Row(self.inner.clone()), name, None)
    }

    /// Open the snapshot and `restore_with` it.
    fn restore_with<'py>(&self, py: Python<'py>, name: String, f: PyFn<'py>) -> Awaitable<'py> {
        fork(py, Source::Row(self.inner.clone()), name, Some(f))
    }

    /// Remove the artifact and its row.
    #[pyo3(signature = (force=false))]
    fn remove<'py>(&self, py: Python<'py>, force: bool) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.clone();
        spawn(py, async move { handle.remove(force).await })
    }

    fn __repr__(&self) -> String {
        format!(
            "SnapshotHandle(digest={:?}, name={:?})",
            self.inner.digest(),
            self.inner.name()
        )
    }
}

/// The overrides of `restore_with`: memory and CPUs (down only, for a full
/// snapshot) and environment. Each setter returns a new builder.
#[pyclass(name = "RestoreBuilder", module = "microsandbox._native", frozen)]
#[derive(Clone, Default)]
pub(crate) struct PyRestoreBuilder {
    inner: RestoreBuilder,
}

#[pymethods]
impl PyRestoreBuilder {
    /// Guest memory in MiB (at most the snapshot's).
    fn memory_mib(&self, mib: u32) -> Self {
        Self {
            inner: self.inner.clone().memory_mib(mib),
        }
    }

    /// Online vCPUs (at most the snapshot's).
    fn cpus(&self, cpus: u32) -> Self {
        Self {
            inner: self.inner.clone().cpus(cpus),
        }
    }

    /// An environment variable for every command of the new sandbox.
    fn env(&self, key: String, value: String) -> Self {
        Self {
            inner: self.inner.clone().env(key, value),
        }
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}

/// A native call's awaitable.
type Awaitable<'py> = PyResult<Bound<'py, PyAny>>;

/// A Python callable.
type PyFn<'py> = Bound<'py, PyAny>;

/// What a restore starts from: an opened artifact or an index row.
enum Source {
    Artifact(Box<Snapshot>),
    Row(SnapshotHandle),
}

/// Restore `source` as the new sandbox `name`, with the overrides `f` makes
/// (none without `f`): the awaitable of a `Sandbox`.
fn fork<'py>(
    py: Python<'py>,
    source: Source,
    name: String,
    f: Option<PyFn<'py>>,
) -> Awaitable<'py> {
    let overrides = f.map(|f| overrides(&f)).transpose()?.unwrap_or_default();
    spawn_cancellable(py, |_| async move {
        match source {
            Source::Artifact(snapshot) => snapshot.restore_with(name, |_| overrides).await,
            Source::Row(handle) => handle.restore_with(name, |_| overrides).await,
        }
        .map(Booted)
    })
}

/// The overrides `f` makes of a fresh `RestoreBuilder` (it must return one).
fn overrides(f: &Bound<'_, PyAny>) -> PyResult<RestoreBuilder> {
    let built = f.call1((PyRestoreBuilder::default(),))?;
    let built = built.cast::<PyRestoreBuilder>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(
            "restore_with: the function must return the RestoreBuilder (e.g. `lambda b: b.memory_mib(128)`)",
        )
    })?;
    Ok(built.get().inner.clone())
}

/// A verify report as the dict of `microsandbox.SnapshotVerifyReport`.
struct VerifyReport(SnapshotVerifyReport);

impl<'py> IntoPyObject<'py> for VerifyReport {
    type Target = PyDict;
    type Output = Bound<'py, PyDict>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let report = PyDict::new(py);
        report.set_item("digest", self.0.digest)?;
        report.set_item("path", self.0.path)?;
        let upper = PyDict::new(py);
        match self.0.upper {
            UpperVerifyStatus::NotRecorded => upper.set_item("kind", "not_recorded")?,
            UpperVerifyStatus::Verified { algorithm, digest } => {
                upper.set_item("kind", "verified")?;
                upper.set_item("algorithm", algorithm)?;
                upper.set_item("digest", digest)?;
            }
        }
        report.set_item("upper", upper)?;
        Ok(report)
    }
}

//! Core errors into Python exceptions. Each kind of
//! `MicrosandboxError::KINDS` has its own subclass of `MicrosandboxError`,
//! defined in `microsandbox/errors.py` and looked up here by kind (never by
//! parsing a message); panics become kind `Runtime`. The test hooks at the
//! bottom push errors and panics through the same paths real calls use.

use std::any::Any;
use std::path::PathBuf;

use microsandbox::MicrosandboxError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use crate::call;

/// `microsandbox.errors.ERRORS_BY_KIND`, read once.
static ERRORS_BY_KIND: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

/// The Python exception for `err`: the subclass registered for its kind
/// (the base class when a kind has none), with `.kind` set.
pub(crate) fn to_py_err(err: MicrosandboxError) -> PyErr {
    Python::attach(|py| {
        let kind = err.kind();
        let message = err.to_string();
        match exception_for(py, kind, &message) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    })
}

fn exception_for<'py>(py: Python<'py>, kind: &str, message: &str) -> PyResult<Bound<'py, PyAny>> {
    let table = ERRORS_BY_KIND.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
        let module = py.import("microsandbox.errors")?;
        Ok(module
            .getattr("ERRORS_BY_KIND")?
            .cast_into::<PyDict>()?
            .unbind())
    })?;
    let table = table.bind(py);
    let class = match table.get_item(kind)? {
        Some(class) => class,
        None => py
            .import("microsandbox.errors")?
            .getattr("MicrosandboxError")?,
    };
    class.call1((message, kind))
}

/// The error of kind `Runtime` a caught panic turns into.
pub(crate) fn panic_error(payload: Box<dyn Any + Send>) -> MicrosandboxError {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    MicrosandboxError::Runtime(format!(
        "internal panic in the microsandbox binding: {what}"
    ))
}

/// Run a synchronous binding body, turning a panic into a `Runtime` error.
pub(crate) fn catch_sync<T>(body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => Err(to_py_err(panic_error(payload))),
    }
}

/// Every error kind of the core, in its order (`MicrosandboxError::KINDS`).
#[pyfunction]
pub(crate) fn kinds() -> Vec<&'static str> {
    MicrosandboxError::KINDS.to_vec()
}

/// Test hook: an awaitable failing with a core error of `kind`, converted
/// exactly as a real call's error is.
#[pyfunction]
pub(crate) fn fail_with_kind_for_test<'py>(
    py: Python<'py>,
    kind: String,
) -> PyResult<Bound<'py, PyAny>> {
    call::spawn(py, async move { Err::<(), _>(sample_error(&kind)) })
}

/// Test hook: an awaitable whose work panics.
#[pyfunction]
pub(crate) fn panic_for_test(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    call::spawn(py, async move {
        let result: Result<(), MicrosandboxError> = Ok(());
        if result.is_ok() {
            panic!("deliberate panic for the boundary test");
        }
        result
    })
}

/// Test hook: a synchronous call whose body panics.
#[pyfunction]
pub(crate) fn panic_sync_for_test() -> PyResult<()> {
    catch_sync(|| panic!("deliberate synchronous panic for the boundary test"))
}

/// A core error of `kind` (one per variant of the core's enum).
fn sample_error(kind: &str) -> MicrosandboxError {
    use MicrosandboxError as E;
    let path = PathBuf::from("/test");
    match kind {
        "SnapshotAlreadyExists" => E::SnapshotAlreadyExists { path },
        "SnapshotNotFound" => E::SnapshotNotFound {
            what: "test".into(),
        },
        "SnapshotSandboxRunning" => E::SnapshotSandboxRunning {
            name: "test".into(),
        },
        "SnapshotIntegrity" => E::SnapshotIntegrity {
            path,
            reason: "test".into(),
        },
        "ManifestInvalid" => E::ManifestInvalid {
            path,
            reason: "test".into(),
        },
        "IntegrityAlgorithmUnsupported" => E::IntegrityAlgorithmUnsupported {
            path,
            algorithm: "test".into(),
            supported: "none".into(),
        },
        "ArchiveInvalid" => E::ArchiveInvalid {
            path,
            reason: "test".into(),
        },
        "SnapshotHasChildren" => E::SnapshotHasChildren {
            digest: "test".into(),
            children: 1,
        },
        "InvalidConfig" => E::InvalidConfig("test".into()),
        "SandboxNotFound" => E::SandboxNotFound {
            name: "test".into(),
        },
        "SandboxAlreadyExists" => E::SandboxAlreadyExists {
            name: "test".into(),
        },
        "SandboxNotRunning" => E::SandboxNotRunning {
            name: "test".into(),
            state: "stopped".into(),
        },
        "SandboxNotPaused" => E::SandboxNotPaused {
            name: "test".into(),
            state: "running".into(),
        },
        "SnapshotIncompatible" => E::SnapshotIncompatible {
            path,
            reason: "test".into(),
        },
        "ImageNotFound" => E::ImageNotFound {
            reference: "test".into(),
        },
        "ImageInUse" => E::ImageInUse {
            reference: "test".into(),
            users: "snapshot test".into(),
        },
        "Registry" => E::Registry {
            reference: "test".into(),
            reason: "test".into(),
        },
        "Runtime" => E::Runtime("test".into()),
        "Cancelled" => E::Cancelled,
        "Io" => E::Io {
            path,
            source: std::io::Error::other("test"),
        },
        other => E::Runtime(format!(
            "the binding cannot build an error of kind {other:?}"
        )),
    }
}

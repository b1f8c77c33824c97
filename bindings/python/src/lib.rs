//! The extension module `microsandbox._native`: a thin shell over the
//! `microsandbox` core crate. Each file owns one part of the surface
//! (snapshots, sandboxes, exec, images, configuration); `call.rs` owns how a
//! core call becomes a Python awaitable (configuration scope, cancellation,
//! progress, panics) and `errors.rs` how a core error becomes an exception.
//! The pure-Python package `microsandbox` re-exports these types.

mod call;
mod config;
mod errors;
mod exec;
mod image;
mod sandbox;
mod snapshot;

use pyo3::prelude::*;

/// The module's contents.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<config::PyConfig>()?;
    m.add_function(wrap_pyfunction!(config::set_default_config, m)?)?;
    m.add_class::<call::PyCancelToken>()?;
    m.add_class::<call::PyNativeTask>()?;
    m.add_function(wrap_pyfunction!(call::drain, m)?)?;
    m.add_class::<call::PyProgressEvent>()?;
    m.add_class::<snapshot::PySnapshot>()?;
    m.add_class::<snapshot::PySnapshotHandle>()?;
    m.add_class::<snapshot::PyRestoreBuilder>()?;
    m.add_class::<sandbox::PySandbox>()?;
    m.add_class::<sandbox::PySandboxHandle>()?;
    m.add_class::<exec::PyExecOutput>()?;
    m.add_class::<exec::PyExecEvent>()?;
    m.add_class::<exec::PyExitStatus>()?;
    m.add_class::<exec::PyExecProcess>()?;
    m.add_class::<exec::PyExecStdin>()?;
    m.add_class::<image::PyImage>()?;
    m.add_class::<image::PyImageInfo>()?;
    m.add_function(wrap_pyfunction!(image::normalise_reference, m)?)?;
    m.add_function(wrap_pyfunction!(errors::kinds, m)?)?;
    m.add_function(wrap_pyfunction!(errors::fail_with_kind_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(errors::panic_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(errors::panic_sync_for_test, m)?)?;
    Ok(())
}

//! `microsandbox.Config`: the core's `Config` (home, guest assets directory,
//! accelerator). The scope in force is a `contextvars.ContextVar` in
//! `microsandbox/_support.py` (so it follows asyncio tasks); every call reads
//! it when it starts and runs inside the core's `Config::scope`.

use std::path::PathBuf;

use microsandbox::{AccelMode, Config};
use pyo3::prelude::*;

use crate::call::support;
use crate::errors::{catch_sync, to_py_err};

/// Where the SDK keeps its state and how it runs guests; unset fields fall
/// back to the enclosing scope, the process default, then the environment.
#[pyclass(name = "Config", module = "microsandbox._native", frozen)]
#[derive(Clone)]
pub(crate) struct PyConfig {
    pub(crate) inner: Config,
}

#[pymethods]
impl PyConfig {
    #[new]
    #[pyo3(signature = (home=None, guest_assets_dir=None, accel=None))]
    fn new(
        home: Option<PathBuf>,
        guest_assets_dir: Option<PathBuf>,
        accel: Option<String>,
    ) -> PyResult<Self> {
        catch_sync(|| {
            let accel = accel
                .map(|a| a.parse::<AccelMode>())
                .transpose()
                .map_err(to_py_err)?;
            Ok(Self {
                inner: Config {
                    home,
                    guest_assets_dir,
                    accel,
                    ..Config::default()
                },
            })
        })
    }

    /// The home directory, if set.
    #[getter]
    fn home(&self) -> Option<PathBuf> {
        self.inner.home.clone()
    }

    /// The guest assets directory, if set.
    #[getter]
    fn guest_assets_dir(&self) -> Option<PathBuf> {
        self.inner.guest_assets_dir.clone()
    }

    /// `auto`, `kvm` or `tcg`, if set.
    #[getter]
    fn accel(&self) -> Option<&'static str> {
        self.inner.accel.map(AccelMode::as_str)
    }

    /// This configuration's set fields over `outer`'s (how scopes nest).
    fn over(&self, outer: Option<&PyConfig>) -> PyConfig {
        let Some(outer) = outer else {
            return self.clone();
        };
        let (inner, outer) = (&self.inner, &outer.inner);
        PyConfig {
            inner: Config {
                home: inner.home.clone().or_else(|| outer.home.clone()),
                guest_assets_dir: inner
                    .guest_assets_dir
                    .clone()
                    .or_else(|| outer.guest_assets_dir.clone()),
                accel: inner.accel.or(outer.accel),
                ..Config::default()
            },
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Config(home={:?}, guest_assets_dir={:?}, accel={:?})",
            self.inner.home,
            self.inner.guest_assets_dir,
            self.inner.accel.map(AccelMode::as_str)
        )
    }
}

/// Make `config` the process default (calls outside any `use_config` scope).
#[pyfunction]
pub(crate) fn set_default_config(config: &PyConfig) {
    Config::set_default(config.inner.clone());
}

/// The configuration of the `use_config` scope in force (empty outside any).
pub(crate) fn current_config(py: Python<'_>) -> PyResult<Config> {
    let scoped = support(py)?
        .config
        .bind(py)
        .call_method0(pyo3::intern!(py, "get"))?;
    if scoped.is_none() {
        return Ok(Config::new());
    }
    Ok(scoped.cast::<PyConfig>()?.get().inner.clone())
}

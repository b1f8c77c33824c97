//! `Sandbox` (a running sandbox) and `SandboxHandle` (a registry entry),
//! with the sandbox entry points as static methods. `async with` on a
//! `Sandbox` stops it on exit. `snapshot()` without a name captures the
//! whole VM (a full snapshot, the sandbox left paused); `resume()` continues it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use microsandbox::{MicrosandboxError, Sandbox, SandboxHandle};
use pyo3::prelude::*;

use crate::call::{convert_all, spawn, spawn_cancellable};
use crate::errors::to_py_err;
use crate::exec::{ExecArgs, exec_buffered, exec_stream};
use crate::snapshot::PySnapshot;

/// A running sandbox: a `SandboxHandle` (whose methods it inherits) that was
/// booted by this process, plus the sandbox entry points. `async with` stops
/// it on exit.
#[pyclass(name = "Sandbox", module = "microsandbox._native", frozen, extends = PySandboxHandle)]
pub(crate) struct PySandbox;

/// `ports` of `Sandbox.create`: a mapping `{host: guest}` or an iterable
/// of `(host, guest)` pairs; a number outside 1-65535 is `InvalidConfig`.
fn published_ports(ports: Option<Bound<'_, PyAny>>) -> PyResult<Vec<(u16, u16)>> {
    let Some(ports) = ports else {
        return Ok(Vec::new());
    };
    let pairs: Vec<(i64, i64)> = match ports.cast::<pyo3::types::PyMapping>() {
        Ok(mapping) => mapping.items()?.extract()?,
        Err(_) => ports
            .try_iter()?
            .map(|pair| pair?.extract())
            .collect::<PyResult<_>>()?,
    };
    // Only the conversion; 0 is refused by the core's rules.
    let port = |value: i64| {
        u16::try_from(value).map_err(|_| {
            to_py_err(MicrosandboxError::InvalidConfig(format!(
                "port {value} is out of range: use 1-65535"
            )))
        })
    };
    pairs
        .into_iter()
        .map(|(host, guest)| Ok((port(host)?, port(guest)?)))
        .collect()
}

/// A booted sandbox on its way to Python (a subclass instance needs its base).
pub(crate) struct Booted(pub(crate) Sandbox);

impl<'py> IntoPyObject<'py> for Booted {
    type Target = PySandbox;
    type Output = Bound<'py, PySandbox>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PySandbox>> {
        let base = PySandboxHandle::from(self.0.handle().clone());
        Bound::new(py, PyClassInitializer::from(base).add_subclass(PySandbox))
    }
}

#[pymethods]
impl PySandbox {
    /// Create and boot a sandbox from an image or a snapshot. `instant`
    /// unset keeps the core's default (instant create on). `network` is the
    /// policy (`none`, `public`, `all`; unset: `public`), `allow` extra
    /// hosts, addresses or CIDRs, `ports` host-to-guest published ports as
    /// a mapping `{host: guest}` or `(host, guest)` pairs.
    #[staticmethod]
    #[pyo3(signature = (name, *, image=None, from_snapshot=None, memory_mib=None, cpus=None, env=None, instant=None, network=None, allow=Vec::new(), ports=None))]
    #[allow(clippy::too_many_arguments)]
    fn create<'py>(
        py: Python<'py>,
        name: String,
        image: Option<String>,
        from_snapshot: Option<PathBuf>,
        memory_mib: Option<u32>,
        cpus: Option<u32>,
        env: Option<BTreeMap<String, String>>,
        instant: Option<bool>,
        network: Option<String>,
        allow: Vec<String>,
        ports: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut builder = Sandbox::builder(name);
        if let Some(policy) = network {
            builder = builder.network(policy);
        }
        for entry in allow {
            builder = builder.allow(entry);
        }
        for (host, guest) in published_ports(ports)? {
            builder = builder.port(host, guest);
        }
        if let Some(instant) = instant {
            builder = builder.instant(instant);
        }
        if let Some(image) = image {
            builder = builder.image(image);
        }
        if let Some(snapshot) = from_snapshot {
            builder = builder.from_snapshot(snapshot.to_string_lossy().into_owned());
        }
        if let Some(mib) = memory_mib {
            builder = builder.memory_mib(mib);
        }
        if let Some(cpus) = cpus {
            builder = builder.cpus(cpus);
        }
        for (key, value) in env.unwrap_or_default() {
            builder = builder.env(key, value);
        }
        spawn_cancellable(py, |_| async move { builder.create().await.map(Booted) })
    }

    /// The sandbox called `name`.
    #[staticmethod]
    fn get(py: Python<'_>, name: String) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move {
            Sandbox::get(name).await.map(PySandboxHandle::from)
        })
    }

    /// Every sandbox, by name.
    #[staticmethod]
    fn list(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move {
            Sandbox::list().await.map(convert_all::<_, PySandboxHandle>)
        })
    }

    /// Stop (if running) and delete the sandbox called `name`.
    #[staticmethod]
    fn remove(py: Python<'_>, name: String) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move { Sandbox::remove(name).await })
    }

    /// Its registry entry.
    #[getter]
    fn handle(slf: PyRef<'_, Self>) -> PySandboxHandle {
        PySandboxHandle::from(slf.as_super().inner.clone())
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.unbind();
        spawn(py, async move { Ok(this) })
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        slf: PyRef<'py, Self>,
        _exc: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let handle = slf.as_super().inner.clone();
        spawn(slf.py(), async move { handle.stop().await })
    }

    fn __repr__(slf: PyRef<'_, Self>) -> String {
        format!("Sandbox(name={:?})", slf.as_super().inner.name())
    }
}

/// A sandbox as recorded in the registry.
#[pyclass(
    name = "SandboxHandle",
    module = "microsandbox._native",
    frozen,
    subclass
)]
pub(crate) struct PySandboxHandle {
    inner: SandboxHandle,
}

impl From<SandboxHandle> for PySandboxHandle {
    fn from(inner: SandboxHandle) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl PySandboxHandle {
    /// The sandbox's name.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// `running`, `paused`, `stopped` or `crashed`, when the handle was read.
    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state().as_str()
    }

    /// The image reference it was created from.
    #[getter]
    fn image_ref(&self) -> &str {
        self.inner.image_ref()
    }

    /// The sandbox directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    /// RFC 3339 creation time.
    #[getter]
    fn created_at(&self) -> &str {
        self.inner.created_at()
    }

    /// The current state, checked against the VM process.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.clone();
        spawn(py, async move { Ok(handle.status().await?.as_str()) })
    }

    /// Run a command and wait for it (the sandbox must be running).
    #[pyo3(signature = (cmd, args=None, *, env=None, cwd=None, timeout=None, output_limit=None))]
    #[allow(clippy::too_many_arguments)]
    fn exec<'py>(
        &self,
        py: Python<'py>,
        cmd: String,
        args: Option<Vec<String>>,
        env: Option<BTreeMap<String, String>>,
        cwd: Option<String>,
        timeout: Option<f64>,
        output_limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = ExecArgs::new(cmd, args, env, cwd, timeout, output_limit)?;
        exec_buffered(py, self.inner.clone(), args)
    }

    /// Start a command and return its process.
    #[pyo3(signature = (cmd, args=None, *, env=None, cwd=None, timeout=None))]
    fn exec_stream<'py>(
        &self,
        py: Python<'py>,
        cmd: String,
        args: Option<Vec<String>>,
        env: Option<BTreeMap<String, String>>,
        cwd: Option<String>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = ExecArgs::new(cmd, args, env, cwd, timeout, None)?;
        exec_stream(py, self.inner.clone(), args)
    }

    /// Boot the stopped or crashed sandbox again.
    fn start<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.clone();
        spawn_cancellable(py, |_| async move { handle.start().await.map(Booted) })
    }

    /// Shut down cleanly.
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.clone();
        spawn(py, async move { handle.stop().await })
    }

    /// Stop the VM if it runs and delete the sandbox.
    fn remove<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.clone();
        spawn(py, async move { handle.remove().await })
    }

    /// Without a name: capture the running sandbox whole (a full snapshot;
    /// the sandbox stays paused until `resume`). With a name: snapshot the
    /// stopped sandbox's disk under that bare name.
    #[pyo3(signature = (name=None))]
    fn snapshot<'py>(&self, py: Python<'py>, name: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.clone();
        spawn_cancellable(py, |_| async move {
            match name {
                Some(name) => handle.snapshot(&name).await,
                None => handle.snapshot_full().await,
            }
            .map(PySnapshot::from)
        })
    }

    /// Continue the sandbox paused by a full snapshot.
    fn resume<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.clone();
        spawn(py, async move { handle.resume().await })
    }

    /// Snapshot the stopped sandbox to an explicit path.
    fn snapshot_to<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.clone();
        spawn_cancellable(py, |_| async move {
            handle.snapshot_to(path).await.map(PySnapshot::from)
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "SandboxHandle(name={:?}, state={:?})",
            self.inner.name(),
            self.inner.state().as_str()
        )
    }
}

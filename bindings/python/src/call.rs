//! How a core call becomes a Python awaitable: it runs on the tokio runtime
//! of pyo3-async-runtimes (off the event loop, GIL released) inside the
//! core's `Config::scope` of the configuration in force at the call (the
//! `contextvars` scope of `microsandbox.use_config`); panics are caught and
//! errors converted by `errors.rs`; the outcome settles an asyncio future on
//! the loop's thread (`call_soon_threadsafe`), and interpreter exit waits for
//! outcomes on their way (`drain`). Long calls also get a
//! `CancellationToken`: the awaitable is wrapped by
//! `microsandbox._support.guard`, which fires the token when the asyncio task
//! is cancelled and waits for the core to clean up before re-raising.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use microsandbox::{
    CallOpts, CancellationToken, MicrosandboxResult, MsbHome, ProgressCallback, ProgressEvent,
};
use pyo3::IntoPyObjectExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::config::current_config;
use crate::errors::{panic_error, to_py_err};

/// What the binding uses from `microsandbox._support`, looked up once.
pub(crate) struct Support {
    /// The `use_config` scope (`ContextVar`).
    pub(crate) config: Py<PyAny>,
    /// Wraps a short call's future in a coroutine.
    run: Py<PyAny>,
    /// Wraps a long call's future: cancellation fires its token.
    guard: Py<PyAny>,
    /// Settles a future on its loop's thread.
    settle: Py<PyAny>,
    /// Ends an async iteration on `None`.
    pub(crate) end_on_none: Py<PyAny>,
}

static SUPPORT: PyOnceLock<Support> = PyOnceLock::new();

pub(crate) fn support(py: Python<'_>) -> PyResult<&Support> {
    SUPPORT.get_or_try_init(py, || {
        let module = py.import("microsandbox._support")?;
        let get = |name: &str| module.getattr(name).map(Bound::unbind);
        Ok(Support {
            config: get("CONFIG")?,
            run: get("run")?,
            guard: get("guard")?,
            settle: get("settle")?,
            end_on_none: get("end_on_none")?,
        })
    })
}

/// A short call: a coroutine of `work`'s result under the configuration in
/// force. Cancelling it drops the work.
pub(crate) fn spawn<'py, T, F>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = MicrosandboxResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let (future, task) = spawn_future(py, work)?;
    support(py)?.run.bind(py).call1((future, task))
}

/// A call as small as an index lookup: `work` runs on the runtime's
/// blocking pool with the home of the configuration in force, and settles
/// the asyncio future from there. One thread hop out and one back (an async
/// task plus the core's own blocking hop would add two, which dominate a
/// lookup of ~20 µs).
pub(crate) fn spawn_quick<'py, T, F>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: FnOnce(&MsbHome) -> MicrosandboxResult<T> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let config = current_config(py)?;
    let (future, event_loop, target) = loop_future(py)?;
    let in_flight = InFlight::start();
    let task = pyo3_async_runtimes::tokio::get_runtime().spawn_blocking(move || {
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| work(&config.resolve_as_scope()?)));
        Python::attach(|py| settle(py, &event_loop, &target, outcome));
        drop(in_flight);
    });
    let task = PyNativeTask {
        abort: task.abort_handle(),
    };
    support(py)?.run.bind(py).call1((future, task))
}

/// A long call: `start` gets the call's token (for the calls that take it in
/// their options); the work also runs in the token's scope. Cancelling the
/// asyncio task fires the token and waits for the core to clean up.
pub(crate) fn spawn_cancellable<'py, T, F>(
    py: Python<'py>,
    start: impl FnOnce(CancellationToken) -> F,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = MicrosandboxResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let token = CancellationToken::new();
    let work = start(token.clone());
    let scoped = token.clone();
    let (future, _task) = spawn_future(py, async move { scoped.scope(work).await })?;
    let token = Bound::new(py, PyCancelToken { token })?;
    support(py)?.guard.bind(py).call1((future, token))
}

/// A long call taking `CallOpts`: `start` gets the caller's progress
/// callback (forwarded to the event loop) and the call's token.
pub(crate) fn spawn_with_call_opts<'py, T, F>(
    py: Python<'py>,
    progress: Option<Py<PyAny>>,
    start: impl FnOnce(CallOpts) -> F,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = MicrosandboxResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let progress = progress_callback(py, progress)?;
    spawn_cancellable(py, |cancel| {
        start(CallOpts {
            progress,
            cancel: Some(cancel),
        })
    })
}

/// Every core object of a listing as its Python class.
pub(crate) fn convert_all<A, B: From<A>>(items: Vec<A>) -> Vec<B> {
    items.into_iter().map(B::from).collect()
}

/// Spawn `work` on the runtime under the configuration in force; its
/// outcome settles a new asyncio future of the running loop (through
/// `call_soon_threadsafe`, so on the loop's thread). Returns the future and
/// the task's abort handle.
fn spawn_future<'py, T, F>(py: Python<'py>, work: F) -> PyResult<(Bound<'py, PyAny>, PyNativeTask)>
where
    F: Future<Output = MicrosandboxResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let config = current_config(py)?;
    let (future, event_loop, target) = loop_future(py)?;
    let in_flight = InFlight::start();
    let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
        let outcome = AssertUnwindSafe(config.scope(work)).catch_unwind().await;
        // The GIL is held only to convert the result and queue it on the
        // loop (the loop's thread waits in its selector without it).
        Python::attach(|py| settle(py, &event_loop, &target, outcome));
        drop(in_flight);
    });
    Ok((
        future,
        PyNativeTask {
            abort: task.abort_handle(),
        },
    ))
}

/// A new future of the running loop: itself, the loop and the future to
/// settle from another thread.
fn loop_future(py: Python<'_>) -> PyResult<(Bound<'_, PyAny>, Py<PyAny>, Py<PyAny>)> {
    let event_loop = pyo3_async_runtimes::get_running_loop(py)?;
    let future = event_loop.call_method0("create_future")?;
    let target = future.clone().unbind();
    Ok((future, event_loop.unbind(), target))
}

/// Hand `outcome` to the loop that owns `target`.
fn settle<T>(
    py: Python<'_>,
    event_loop: &Py<PyAny>,
    target: &Py<PyAny>,
    outcome: std::thread::Result<MicrosandboxResult<T>>,
) where
    T: for<'a> IntoPyObject<'a>,
{
    let (ok, value) = match outcome {
        Ok(Ok(value)) => match value.into_py_any(py) {
            Ok(obj) => (true, obj),
            Err(err) => (false, err.into_value(py).into_any()),
        },
        Ok(Err(err)) => (false, to_py_err(err).into_value(py).into_any()),
        Err(payload) => (
            false,
            to_py_err(panic_error(payload)).into_value(py).into_any(),
        ),
    };
    let delivered = support(py).and_then(|support| {
        event_loop.bind(py).call_method1(
            intern!(py, "call_soon_threadsafe"),
            (support.settle.bind(py), target.bind(py), ok, value),
        )
    });
    match delivered {
        // The loop is closed: nobody waits for this result.
        Err(err) if err.is_instance_of::<PyRuntimeError>(py) => {}
        Err(err) => err.write_unraisable(py, None),
        Ok(_) => {}
    }
}

/// Counts the calls whose outcome has not been handed to Python yet, so
/// that interpreter exit can wait for them (`drain`): a thread that enters
/// Python while the interpreter finalizes crashes the process.
struct InFlight;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

impl InFlight {
    fn start() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// At interpreter exit (`atexit`): wait, GIL released, until no call is
/// about to enter Python, for at most `timeout` seconds.
#[pyfunction]
pub(crate) fn drain(py: Python<'_>, timeout: f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
    py.detach(|| {
        while IN_FLIGHT.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// The runtime task of a short call, aborted when its asyncio task is
/// cancelled (dropping the core's future cancels it).
#[pyclass(name = "NativeTask", module = "microsandbox._native", frozen)]
pub(crate) struct PyNativeTask {
    abort: tokio::task::AbortHandle,
}

#[pymethods]
impl PyNativeTask {
    /// Drop the work.
    fn abort(&self) {
        self.abort.abort();
    }
}

/// The core's cancellation token, fired by `microsandbox._support.guard`.
#[pyclass(name = "CancelToken", module = "microsandbox._native", frozen)]
pub(crate) struct PyCancelToken {
    token: CancellationToken,
}

#[pymethods]
impl PyCancelToken {
    /// Fire the token: the call stops and cleans up.
    fn cancel(&self) {
        self.token.cancel();
    }

    /// Whether the token fired.
    #[getter]
    fn cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// One progress report of a long call.
#[pyclass(name = "ProgressEvent", module = "microsandbox._native", frozen)]
pub(crate) struct PyProgressEvent {
    /// `hash`, `export` or `import`.
    #[pyo3(get)]
    phase: &'static str,
    /// Bytes finished so far.
    #[pyo3(get)]
    done_bytes: u64,
    /// Bytes in all.
    #[pyo3(get)]
    total_bytes: u64,
}

#[pymethods]
impl PyProgressEvent {
    fn __repr__(&self) -> String {
        format!(
            "ProgressEvent(phase={:?}, done_bytes={}, total_bytes={})",
            self.phase, self.done_bytes, self.total_bytes
        )
    }
}

/// A core progress callback that hands each event to the Python `callback`
/// on the event loop running now (`call_soon_threadsafe`, so events arrive in
/// order, on the loop's thread, before the call's result).
fn progress_callback(
    py: Python<'_>,
    callback: Option<Py<PyAny>>,
) -> PyResult<Option<ProgressCallback>> {
    let Some(callback) = callback else {
        return Ok(None);
    };
    let event_loop = pyo3_async_runtimes::get_running_loop(py)?.unbind();
    let forward = move |event: ProgressEvent| {
        Python::attach(|py| {
            let event = PyProgressEvent {
                phase: event.phase.as_str(),
                done_bytes: event.done_bytes,
                total_bytes: event.total_bytes,
            };
            // A closed loop has no one left to tell.
            let _ = event_loop
                .bind(py)
                .call_method1("call_soon_threadsafe", (callback.bind(py), event));
        })
    };
    Ok(Some(Arc::new(forward)))
}

//! Running commands: the buffered `exec` (`ExecOutput`) and the streaming
//! `exec_stream` (`ExecProcess`: an async iterator of `ExecEvent`s, its
//! `stdin` writer, `signal(n)`, `wait()`). Semantics are the core's
//! (`docs/exec.md`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use microsandbox::{
    ExecEvent, ExecOptions, ExecOutput, ExecStdin, ExecStream, ExitStatus, MicrosandboxError,
    MicrosandboxResult, SandboxHandle,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::{Mutex, mpsc};

use crate::call::{spawn, spawn_cancellable};
use crate::errors::{catch_sync, to_py_err};

/// A command line and its options, as the Python call gave them.
pub(crate) struct ExecArgs {
    argv: (String, Vec<String>),
    opts: ExecOptions,
}

impl ExecArgs {
    pub(crate) fn new(
        cmd: String,
        args: Option<Vec<String>>,
        env: Option<BTreeMap<String, String>>,
        cwd: Option<String>,
        timeout: Option<f64>,
        output_limit: Option<usize>,
    ) -> PyResult<Self> {
        let timeout = timeout
            .map(|secs| {
                Duration::try_from_secs_f64(secs)
                    .map_err(|_| PyValueError::new_err(format!("timeout {secs} is not a duration")))
            })
            .transpose()?;
        Ok(Self {
            argv: (cmd, args.unwrap_or_default()),
            opts: ExecOptions {
                env: env.unwrap_or_default(),
                cwd,
                timeout,
                output_limit,
                cancel: None,
            },
        })
    }
}

/// The buffered exec: cancelling the task kills the command.
pub(crate) fn exec_buffered(
    py: Python<'_>,
    handle: SandboxHandle,
    args: ExecArgs,
) -> PyResult<Bound<'_, PyAny>> {
    let ExecArgs {
        argv: (cmd, argv),
        mut opts,
    } = args;
    spawn_cancellable(py, |cancel| async move {
        opts.cancel = Some(cancel);
        handle
            .exec_with(cmd, argv, opts)
            .await
            .map(PyExecOutput::from)
    })
}

/// The streaming exec: resolves to an `ExecProcess` once the command started.
pub(crate) fn exec_stream(
    py: Python<'_>,
    handle: SandboxHandle,
    args: ExecArgs,
) -> PyResult<Bound<'_, PyAny>> {
    let ExecArgs {
        argv: (cmd, argv),
        opts,
    } = args;
    spawn(py, async move {
        let mut stream = handle.exec_stream(cmd, argv, opts).await?;
        let stdin = stream.take_stdin();
        let (signals, signal_rx) = mpsc::unbounded_channel();
        Ok(PyExecProcess {
            events: Arc::new(Mutex::new(Events {
                stream,
                signal_rx,
                exit: None,
            })),
            signals,
            stdin: Arc::new(Mutex::new(stdin)),
        })
    })
}

/// What a finished command produced.
#[pyclass(name = "ExecOutput", module = "microsandbox._native", frozen)]
pub(crate) struct PyExecOutput {
    inner: ExecOutput,
}

impl From<ExecOutput> for PyExecOutput {
    fn from(inner: ExecOutput) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl PyExecOutput {
    /// Exit status, or 128 + signal number.
    #[getter]
    fn exit_code(&self) -> i32 {
        self.inner.exit_code
    }

    /// Same as `exit_code`.
    #[getter]
    fn code(&self) -> i32 {
        self.inner.exit_code
    }

    /// The signal that killed the command, if one did.
    #[getter]
    fn signal(&self) -> Option<i32> {
        self.inner.signal
    }

    /// The timeout killed the command.
    #[getter]
    fn timed_out(&self) -> bool {
        self.inner.timed_out
    }

    /// Standard output (up to the output limit).
    #[getter]
    fn stdout<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.stdout)
    }

    /// Standard error (up to the output limit).
    #[getter]
    fn stderr<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.stderr)
    }

    /// Standard output went past the output limit.
    #[getter]
    fn stdout_truncated(&self) -> bool {
        self.inner.stdout_truncated
    }

    /// Standard error went past the output limit.
    #[getter]
    fn stderr_truncated(&self) -> bool {
        self.inner.stderr_truncated
    }

    fn __repr__(&self) -> String {
        format!(
            "ExecOutput(exit_code={}, stdout={} bytes, stderr={} bytes)",
            self.inner.exit_code,
            self.inner.stdout.len(),
            self.inner.stderr.len()
        )
    }
}

/// How a command ended.
#[pyclass(name = "ExitStatus", module = "microsandbox._native", frozen, get_all)]
pub(crate) struct PyExitStatus {
    /// Exit status, or 128 + signal number.
    code: i32,
    /// The signal that killed the command, if one did.
    signal: Option<i32>,
    /// The timeout killed the command.
    timed_out: bool,
}

impl From<ExitStatus> for PyExitStatus {
    fn from(status: ExitStatus) -> Self {
        Self {
            code: status.code,
            signal: status.signal,
            timed_out: status.timed_out,
        }
    }
}

#[pymethods]
impl PyExitStatus {
    fn __repr__(&self) -> String {
        format!(
            "ExitStatus(code={}, signal={:?}, timed_out={})",
            self.code, self.signal, self.timed_out
        )
    }
}

/// One event of a running command: `stdout`/`stderr` carry `data`; `exit`
/// (the last) carries `code`, `signal` and `timed_out`.
#[pyclass(name = "ExecEvent", module = "microsandbox._native", frozen)]
pub(crate) struct PyExecEvent {
    inner: ExecEvent,
}

#[pymethods]
impl PyExecEvent {
    /// `stdout`, `stderr` or `exit`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.inner {
            ExecEvent::Stdout(_) => "stdout",
            ExecEvent::Stderr(_) => "stderr",
            ExecEvent::Exit(_) => "exit",
        }
    }

    /// The chunk (empty for `exit`).
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        match &self.inner {
            ExecEvent::Stdout(data) | ExecEvent::Stderr(data) => PyBytes::new(py, data),
            ExecEvent::Exit(_) => PyBytes::new(py, b""),
        }
    }

    /// The exit status (`exit` only).
    #[getter]
    fn code(&self) -> Option<i32> {
        self.exit().map(|s| s.code)
    }

    /// The signal that killed the command (`exit` only, when one did).
    #[getter]
    fn signal(&self) -> Option<i32> {
        self.exit().and_then(|s| s.signal)
    }

    /// Whether the timeout killed the command (`exit` only).
    #[getter]
    fn timed_out(&self) -> Option<bool> {
        self.exit().map(|s| s.timed_out)
    }

    fn __repr__(&self) -> String {
        match &self.inner {
            ExecEvent::Stdout(d) => format!("ExecEvent(kind='stdout', {} bytes)", d.len()),
            ExecEvent::Stderr(d) => format!("ExecEvent(kind='stderr', {} bytes)", d.len()),
            ExecEvent::Exit(s) => format!(
                "ExecEvent(kind='exit', code={}, signal={:?}, timed_out={})",
                s.code, s.signal, s.timed_out
            ),
        }
    }
}

impl PyExecEvent {
    fn exit(&self) -> Option<&ExitStatus> {
        match &self.inner {
            ExecEvent::Exit(status) => Some(status),
            _ => None,
        }
    }
}

/// The reading side of a command: whoever holds it delivers queued signals
/// while waiting for the next event (the core signals through the stream).
struct Events {
    stream: ExecStream,
    signal_rx: mpsc::UnboundedReceiver<i32>,
    exit: Option<ExitStatus>,
}

impl Events {
    async fn next(&mut self) -> MicrosandboxResult<Option<ExecEvent>> {
        loop {
            self.deliver_signals()?;
            tokio::select! {
                event = self.stream.next() => {
                    let event = event?;
                    if let Some(ExecEvent::Exit(status)) = &event {
                        self.exit = Some(*status);
                    }
                    self.deliver_signals()?;
                    return Ok(event);
                }
                Some(signal) = self.signal_rx.recv() => self.stream.signal(signal)?,
            }
        }
    }

    fn deliver_signals(&mut self) -> MicrosandboxResult<()> {
        while let Ok(signal) = self.signal_rx.try_recv() {
            self.stream.signal(signal)?;
        }
        Ok(())
    }
}

/// A running command (`async for event in proc`).
#[pyclass(name = "ExecProcess", module = "microsandbox._native", frozen)]
pub(crate) struct PyExecProcess {
    events: Arc<Mutex<Events>>,
    signals: mpsc::UnboundedSender<i32>,
    stdin: Arc<Mutex<Option<ExecStdin>>>,
}

#[pymethods]
impl PyExecProcess {
    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let events = self.events.clone();
        let next = spawn(py, async move {
            let event = events.lock().await.next().await?;
            Ok(event.map(|inner| PyExecEvent { inner }))
        })?;
        crate::call::support(py)?
            .end_on_none
            .bind(py)
            .call1((next,))
    }

    /// The command's stdin.
    #[getter]
    fn stdin(&self) -> PyExecStdin {
        PyExecStdin {
            stdin: self.stdin.clone(),
        }
    }

    /// Send signal `signal` (e.g. `signal.SIGINT`) to the command's process
    /// group; a no-op once it exited.
    fn signal(&self, signal: i32) -> PyResult<()> {
        catch_sync(|| {
            if self.signals.send(signal).is_err() {
                return Ok(());
            }
            // Nobody is reading: deliver it now; otherwise the reader does.
            if let Ok(mut events) = self.events.try_lock() {
                events.deliver_signals().map_err(to_py_err)?;
            }
            Ok(())
        })
    }

    /// Read (and drop) the remaining output; the exit status.
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let events = self.events.clone();
        spawn(py, async move {
            let mut events = events.lock().await;
            loop {
                if let Some(status) = events.exit {
                    return Ok(PyExitStatus::from(status));
                }
                if events.next().await?.is_none() {
                    return Err(MicrosandboxError::Runtime(
                        "the command's stream ended without an exit".into(),
                    ));
                }
            }
        })
    }
}

/// The stdin of a running command.
#[pyclass(name = "ExecStdin", module = "microsandbox._native", frozen)]
pub(crate) struct PyExecStdin {
    stdin: Arc<Mutex<Option<ExecStdin>>>,
}

#[pymethods]
impl PyExecStdin {
    /// Write all of `data`, waiting while the guest is behind.
    fn write<'py>(&self, py: Python<'py>, data: Vec<u8>) -> PyResult<Bound<'py, PyAny>> {
        let stdin = self.stdin.clone();
        spawn(py, async move {
            match stdin.lock().await.as_mut() {
                Some(writer) => writer.write(&data).await,
                None => Err(closed_stdin()),
            }
        })
    }

    /// Close stdin: the command reads end of file.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stdin = self.stdin.clone();
        spawn(py, async move {
            match stdin.lock().await.take() {
                Some(writer) => writer.close(),
                None => Ok(()),
            }
        })
    }
}

fn closed_stdin() -> MicrosandboxError {
    MicrosandboxError::Io {
        path: "<stdin>".into(),
        source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
    }
}

//! Commands over the C ABI: the buffered exec (`MsbExecOutput`) and the
//! streaming one (`MsbExecStream`: a blocking `msb_exec_next`, stdin writes,
//! close, signals). A stream is used from several threads at once (one
//! reading events, one writing stdin, one signalling), so its reader and
//! its stdin sit behind separate locks, and a signal sent while a reader
//! waits is queued and delivered within one poll interval.

use std::collections::BTreeMap;
use std::ffi::c_char;
use std::sync::Mutex;
use std::time::Duration;

use microsandbox::{ExecEvent, ExecOptions, ExecOutput, ExecStdin, ExecStream, MicrosandboxError};

use crate::sandbox::{MsbSandboxHandle, handle_ref};
use crate::{
    MsbCancel, MsbConfig, MsbResult, MsbStr, arg_opt_str, arg_pairs, arg_str, arg_strs, block_on,
    free_box, guard, put,
};

/// How often a waiting `msb_exec_next` delivers queued signals.
const SIGNAL_POLL: Duration = Duration::from_millis(10);

/// Options of one command.
#[repr(C)]
pub struct MsbExecOptions {
    /// `env_count` variable names, added to (and overriding) the sandbox's.
    pub env_keys: *const *const c_char,
    /// Their values.
    pub env_values: *const *const c_char,
    /// How many variables.
    pub env_count: usize,
    /// Working directory (NULL or empty: the sandbox's).
    pub cwd: *const c_char,
    /// Kill the command's process group after this many milliseconds (0: never).
    pub timeout_ms: u64,
    /// Buffered exec: keep at most this many bytes of each output (when
    /// `has_output_limit`).
    pub output_limit: u64,
    /// Whether `output_limit` applies.
    pub has_output_limit: bool,
}

/// A finished command's buffered result.
pub struct MsbExecOutput {
    output: ExecOutput,
}

/// The fields of an [`MsbExecOutput`], borrowed from it.
#[repr(C)]
pub struct MsbExecOutputView {
    /// Exit status, or 128 + signal.
    pub exit_code: i32,
    /// The signal that killed it (when `has_signal`).
    pub signal: i32,
    /// Whether `signal` is set.
    pub has_signal: bool,
    /// The exec's timeout killed it.
    pub timed_out: bool,
    /// Standard output bytes.
    pub stdout: MsbStr,
    /// Standard error bytes.
    pub stderr: MsbStr,
    /// Stdout went past the output limit.
    pub stdout_truncated: bool,
    /// Stderr went past the output limit.
    pub stderr_truncated: bool,
}

/// A running command.
pub struct MsbExecStream {
    reader: tokio::sync::Mutex<Option<ExecStream>>,
    stdin: tokio::sync::Mutex<Option<ExecStdin>>,
    pending_signals: Mutex<Vec<i32>>,
}

/// What an event is.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MsbExecEventKind {
    /// A chunk of standard output in `data`.
    Stdout = 0,
    /// A chunk of standard error in `data`.
    Stderr = 1,
    /// The command exited: `code`, `signal`, `timed_out`.
    Exit = 2,
    /// No more events (after the exit).
    End = 3,
}

/// One event of a stream. `data` is owned: release it with `msb_bytes_free(data, len)`.
#[repr(C)]
pub struct MsbExecEvent {
    /// What the event is.
    pub kind: MsbExecEventKind,
    /// Output bytes (Stdout / Stderr), else NULL.
    pub data: *mut u8,
    /// Number of bytes in `data`.
    pub len: usize,
    /// Exit status, or 128 + signal (Exit).
    pub code: i32,
    /// The killing signal (Exit, when `has_signal`).
    pub signal: i32,
    /// Whether `signal` is set.
    pub has_signal: bool,
    /// The timeout killed it (Exit).
    pub timed_out: bool,
}

fn exec_options(
    opts: *const MsbExecOptions,
    cancel: *const MsbCancel,
) -> Result<ExecOptions, MicrosandboxError> {
    let mut out = ExecOptions {
        // SAFETY: NULL or a live token.
        cancel: unsafe { cancel.as_ref() }.map(|t| t.token.clone()),
        ..ExecOptions::default()
    };
    // SAFETY: NULL or options valid for the call.
    let Some(opts) = (unsafe { opts.as_ref() }) else {
        return Ok(out);
    };
    out.env = arg_pairs(opts.env_keys, opts.env_values, opts.env_count, "env")?
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    out.cwd = arg_opt_str(opts.cwd, "cwd")?.map(str::to_string);
    if opts.timeout_ms > 0 {
        out.timeout = Some(Duration::from_millis(opts.timeout_ms));
    }
    if opts.has_output_limit {
        out.output_limit = Some(usize::try_from(opts.output_limit).unwrap_or(usize::MAX));
    }
    Ok(out)
}

fn argv(
    cmd: *const c_char,
    args: *const *const c_char,
    count: usize,
) -> Result<(String, Vec<String>), MicrosandboxError> {
    let cmd = arg_str(cmd, "cmd")?.to_string();
    let args = arg_strs(args, count, "args")?;
    Ok((cmd, args))
}

/// The sandbox, command line and options of an exec call.
fn command<'a>(
    h: *const MsbSandboxHandle,
    cmd: *const c_char,
    args: *const *const c_char,
    arg_count: usize,
    opts: *const MsbExecOptions,
    cancel: *const MsbCancel,
) -> Result<
    (
        &'a microsandbox::SandboxHandle,
        String,
        Vec<String>,
        ExecOptions,
    ),
    MicrosandboxError,
> {
    let (cmd, args) = argv(cmd, args, arg_count)?;
    Ok((handle_ref(h)?, cmd, args, exec_options(opts, cancel)?))
}

/// Run `cmd` with `arg_count` args in the running sandbox and wait for it.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn msb_exec(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    h: *const MsbSandboxHandle,
    cmd: *const c_char,
    args: *const *const c_char,
    arg_count: usize,
    opts: *const MsbExecOptions,
    out: *mut *mut MsbExecOutput,
) -> MsbResult {
    guard(|| {
        let (handle, cmd, args, opts) = command(h, cmd, args, arg_count, opts, cancel)?;
        let output = block_on(config, cancel, handle.exec_with(cmd, args, opts))?;
        put(out, Box::into_raw(Box::new(MsbExecOutput { output })))
    })
}

/// The fields of `out` (borrowed: valid until it is freed).
#[unsafe(no_mangle)]
pub extern "C" fn msb_exec_output_view(
    out: *const MsbExecOutput,
    view: *mut MsbExecOutputView,
) -> MsbResult {
    guard(|| {
        // SAFETY: NULL or a live output.
        let o = &unsafe { out.as_ref() }
            .ok_or_else(|| MicrosandboxError::InvalidConfig("output is NULL".into()))?
            .output;
        put(
            view,
            MsbExecOutputView {
                exit_code: o.exit_code,
                signal: o.signal.unwrap_or(0),
                has_signal: o.signal.is_some(),
                timed_out: o.timed_out,
                stdout: MsbStr::of(&o.stdout),
                stderr: MsbStr::of(&o.stderr),
                stdout_truncated: o.stdout_truncated,
                stderr_truncated: o.stderr_truncated,
            },
        )
    })
}

/// Release a buffered result.
#[unsafe(no_mangle)]
pub extern "C" fn msb_exec_output_free(out: *mut MsbExecOutput) {
    free_box(out);
}

/// Start `cmd` and return at once with its stream. `cancel` (nullable)
/// kills the command when fired, at any later point too.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn msb_exec_stream(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    h: *const MsbSandboxHandle,
    cmd: *const c_char,
    args: *const *const c_char,
    arg_count: usize,
    opts: *const MsbExecOptions,
    out: *mut *mut MsbExecStream,
) -> MsbResult {
    guard(|| {
        let (handle, cmd, args, opts) = command(h, cmd, args, arg_count, opts, cancel)?;
        let mut stream = block_on(config, cancel, handle.exec_stream(cmd, args, opts))?;
        let stdin = stream.take_stdin();
        put(
            out,
            Box::into_raw(Box::new(MsbExecStream {
                reader: tokio::sync::Mutex::new(Some(stream)),
                stdin: tokio::sync::Mutex::new(stdin),
                pending_signals: Mutex::new(Vec::new()),
            })),
        )
    })
}

fn stream_ref<'a>(s: *const MsbExecStream) -> Result<&'a MsbExecStream, MicrosandboxError> {
    // SAFETY: NULL or a live stream.
    unsafe { s.as_ref() }.ok_or_else(|| MicrosandboxError::InvalidConfig("stream is NULL".into()))
}

fn deliver_signals(stream: &MsbExecStream, reader: &ExecStream) -> Result<(), MicrosandboxError> {
    let pending = std::mem::take(
        &mut *stream
            .pending_signals
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    pending.into_iter().try_for_each(|sig| reader.signal(sig))
}

/// Wait for the next event (kind `End` after the exit). `cancel` (nullable)
/// kills the command and ends the wait with `Cancelled`.
#[unsafe(no_mangle)]
pub extern "C" fn msb_exec_next(
    s: *const MsbExecStream,
    cancel: *const MsbCancel,
    event: *mut MsbExecEvent,
) -> MsbResult {
    guard(|| {
        let stream = stream_ref(s)?;
        // SAFETY: NULL or a live token.
        let token = unsafe { cancel.as_ref() }.map(|t| t.token.clone());
        let next = crate::runtime().block_on(async {
            let mut guard = stream.reader.lock().await;
            loop {
                if token.as_ref().is_some_and(|t| t.is_cancelled()) {
                    // Dropping the stream kills the command's process group.
                    guard.take();
                    return Err(MicrosandboxError::Cancelled);
                }
                let Some(reader) = guard.as_mut() else {
                    return Ok(None);
                };
                deliver_signals(stream, reader)?;
                if let Ok(next) = tokio::time::timeout(SIGNAL_POLL, reader.next()).await {
                    return next;
                }
            }
        })?;
        let mut ev = MsbExecEvent {
            kind: MsbExecEventKind::End,
            data: std::ptr::null_mut(),
            len: 0,
            code: 0,
            signal: 0,
            has_signal: false,
            timed_out: false,
        };
        match next {
            Some(ExecEvent::Stdout(data)) | Some(ExecEvent::Stderr(data)) if data.is_empty() => {}
            Some(ExecEvent::Stdout(data)) => {
                (ev.kind, ev.len, ev.data) = (
                    MsbExecEventKind::Stdout,
                    data.len(),
                    Box::into_raw(data.into_boxed_slice()).cast(),
                )
            }
            Some(ExecEvent::Stderr(data)) => {
                (ev.kind, ev.len, ev.data) = (
                    MsbExecEventKind::Stderr,
                    data.len(),
                    Box::into_raw(data.into_boxed_slice()).cast(),
                )
            }
            Some(ExecEvent::Exit(status)) => {
                ev.kind = MsbExecEventKind::Exit;
                ev.code = status.code;
                ev.signal = status.signal.unwrap_or(0);
                ev.has_signal = status.signal.is_some();
                ev.timed_out = status.timed_out;
            }
            None => {}
        }
        put(event, ev)
    })
}

/// Write all of `data` to the command's stdin (waits on back-pressure).
#[unsafe(no_mangle)]
pub extern "C" fn msb_exec_write_stdin(
    s: *const MsbExecStream,
    data: *const u8,
    len: usize,
) -> MsbResult {
    guard(|| {
        let stream = stream_ref(s)?;
        let data = if len == 0 {
            &[][..]
        } else {
            // SAFETY: the caller passes `len` readable bytes.
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        crate::runtime().block_on(async {
            match stream.stdin.lock().await.as_mut() {
                Some(stdin) => stdin.write(data).await,
                None => Err(MicrosandboxError::Io {
                    path: "stdin".into(),
                    source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
                }),
            }
        })
    })
}

/// Close the command's stdin (end of file); closing twice does nothing.
#[unsafe(no_mangle)]
pub extern "C" fn msb_exec_close_stdin(s: *const MsbExecStream) -> MsbResult {
    guard(|| {
        let stream = stream_ref(s)?;
        let stdin = crate::runtime().block_on(async { stream.stdin.lock().await.take() });
        stdin.map_or(Ok(()), ExecStdin::close)
    })
}

/// Send signal number `signal` to the command's process group (a no-op
/// after the exit).
#[unsafe(no_mangle)]
pub extern "C" fn msb_exec_signal(s: *const MsbExecStream, signal: i32) -> MsbResult {
    guard(|| {
        let stream = stream_ref(s)?;
        stream
            .pending_signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(signal);
        if let Ok(reader) = stream.reader.try_lock()
            && let Some(reader) = reader.as_ref()
        {
            deliver_signals(stream, reader)?;
        }
        Ok(())
    })
}

/// Release a stream; a command still running is killed.
#[unsafe(no_mangle)]
pub extern "C" fn msb_exec_stream_free(s: *mut MsbExecStream) {
    if !s.is_null() {
        // Dropping the ExecStream sends the kill over the agent connection,
        // which must happen inside the runtime.
        let _enter = crate::runtime().enter();
        free_box(s);
    }
}

//! A streaming exec seen from JS: `next()` (a Promise of the next event or
//! null), stdin writes with back-pressure, and signals that reach the
//! command even while a `next()` is pending.
//!
//! The core's `ExecStream::next` takes `&mut self` while `signal` takes
//! `&self`, so one task owns the stream and serves both: it pulls one event
//! at a time (output keeps waiting in the guest until JS asks for it) and
//! applies signals as they come. Dropping the JS object ends the task,
//! which drops the stream and so kills the command, as in the core.

use std::sync::Arc;

use microsandbox::{ExecEvent, ExecStdin, ExecStream, MicrosandboxError, MicrosandboxResult};
use napi::Env;
use napi::bindgen_prelude::{Buffer, PromiseRaw};
use napi_derive::napi;
use tokio::sync::{Mutex, mpsc};

use crate::call::spawn;

type Next = MicrosandboxResult<Option<ExecEvent>>;

/// One event of a running command.
#[napi(object)]
pub struct NativeExecEvent {
    /// `stdout`, `stderr` or `exit`.
    #[napi(js_name = "type")]
    pub kind: String,
    /// Output bytes (`stdout`/`stderr`).
    pub data: Option<Buffer>,
    /// Exit code (`exit`).
    pub code: Option<i32>,
    /// Killing signal (`exit`), if any.
    pub signal: Option<i32>,
    /// Killed by the timeout (`exit`).
    pub timed_out: Option<bool>,
}

impl From<ExecEvent> for NativeExecEvent {
    fn from(ev: ExecEvent) -> Self {
        let output = |kind: &str, data: Vec<u8>| Self {
            kind: kind.into(),
            data: Some(data.into()),
            code: None,
            signal: None,
            timed_out: None,
        };
        match ev {
            ExecEvent::Stdout(data) => output("stdout", data),
            ExecEvent::Stderr(data) => output("stderr", data),
            ExecEvent::Exit(status) => Self {
                kind: "exit".into(),
                data: None,
                code: Some(status.code),
                signal: status.signal,
                timed_out: Some(status.timed_out),
            },
        }
    }
}

/// A running command.
#[napi]
pub struct NativeExecStream {
    events: Arc<Mutex<mpsc::Receiver<Next>>>,
    signals: mpsc::UnboundedSender<i32>,
    stdin: Arc<Mutex<Option<ExecStdin>>>,
}

impl NativeExecStream {
    pub(crate) fn new(mut stream: ExecStream) -> Self {
        let stdin = stream.take_stdin();
        let (events_tx, events_rx) = mpsc::channel(1);
        let (signals_tx, signals_rx) = mpsc::unbounded_channel();
        napi::bindgen_prelude::spawn(pump(stream, signals_rx, events_tx));
        Self {
            events: Arc::new(Mutex::new(events_rx)),
            signals: signals_tx,
            stdin: Arc::new(Mutex::new(stdin)),
        }
    }
}

/// Own `stream`: hand its events over one at a time, apply signals, stop
/// after the last event or when the JS side is gone.
async fn pump(
    mut stream: ExecStream,
    mut signals: mpsc::UnboundedReceiver<i32>,
    events: mpsc::Sender<Next>,
) {
    let mut pending: Option<Next> = None;
    loop {
        let waiting = pending.is_some();
        tokio::select! {
            signal = signals.recv() => match signal {
                Some(n) => { let _ = stream.signal(n); }
                None => return,
            },
            permit = events.reserve(), if waiting => {
                let (Ok(permit), Some(next)) = (permit, pending.take()) else { return };
                let last = !matches!(next, Ok(Some(ExecEvent::Stdout(_) | ExecEvent::Stderr(_))));
                permit.send(next);
                if last {
                    return;
                }
            }
            next = stream.next(), if !waiting => pending = Some(next),
        }
    }
}

fn broken_pipe() -> MicrosandboxError {
    MicrosandboxError::Io {
        path: "stdin".into(),
        source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
    }
}

#[napi]
impl NativeExecStream {
    /// The next event, or null after the exit.
    #[napi(ts_return_type = "Promise<NativeExecEvent | null>")]
    pub fn next<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<PromiseRaw<'env, Option<NativeExecEvent>>> {
        let events = self.events.clone();
        let work = async move { events.lock().await.recv().await.unwrap_or(Ok(None)) };
        spawn(env, None, None, None, work, |ev| {
            Ok(ev.map(NativeExecEvent::from))
        })
    }

    /// Write to the command's stdin; settles once the guest took it in
    /// (waits while it is 1 MiB behind).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write_stdin<'env>(
        &self,
        env: &'env Env,
        data: Buffer,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let (stdin, data) = (self.stdin.clone(), data.to_vec());
        let work = async move {
            match stdin.lock().await.as_mut() {
                Some(w) => w.write(&data).await,
                None => Err(broken_pipe()),
            }
        };
        spawn(env, None, None, None, work, Ok)
    }

    /// Close stdin (end of file); closing twice does nothing.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close_stdin<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let stdin = self.stdin.clone();
        let work = async move {
            match stdin.lock().await.take() {
                Some(w) => w.close(),
                None => Ok(()),
            }
        };
        spawn(env, None, None, None, work, Ok)
    }

    /// Send signal number `signal` to the command's process group.
    #[napi(catch_unwind)]
    pub fn signal(&self, signal: i32) {
        let _ = self.signals.send(signal);
    }
}

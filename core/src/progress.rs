//! Progress reporting for long operations (verify, export, import).
//! A progress callback is a plain `Fn(ProgressEvent)` that any binding can
//! forward to its own language: the event is `Copy` and holds no borrows.
//! The tracker is also where long loops check for cancellation: every loop
//! that reports progress stops there once its call is cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::control::Control;

/// What a long operation is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgressPhase {
    /// Hashing an upper layer to check or record its integrity.
    Hash,
    /// Writing an archive (bytes of snapshot data and image files stored).
    Export,
    /// Reading an archive (bytes of the archive file consumed).
    Import,
}

impl ProgressPhase {
    /// Stable name of the phase, identical in every SDK.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::Export => "export",
            Self::Import => "import",
        }
    }
}

/// One progress report: `done_bytes` of `total_bytes` are finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressEvent {
    /// What the operation is doing.
    pub phase: ProgressPhase,
    /// Bytes finished so far.
    pub done_bytes: u64,
    /// Bytes in all (the last event has `done_bytes == total_bytes`).
    pub total_bytes: u64,
}

/// A progress sink. Called from worker threads, possibly concurrently.
pub type ProgressCallback = Arc<dyn Fn(ProgressEvent) + Send + Sync>;

/// Accumulates work from many threads and forwards it to a callback, at most
/// about once per `step` bytes so that slow callbacks (a binding crossing into
/// another runtime) do not throttle the work.
pub(crate) struct ProgressTracker<'a> {
    control: &'a Control,
    callback: Option<&'a ProgressCallback>,
    phase: ProgressPhase,
    total: u64,
    done: AtomicU64,
    step: u64,
}

impl<'a> ProgressTracker<'a> {
    pub(crate) fn new(control: &'a Control, phase: ProgressPhase, total: u64) -> Self {
        let tracker = Self {
            control,
            callback: control.progress(),
            phase,
            total,
            done: AtomicU64::new(0),
            step: (total / 200).max(4 << 20),
        };
        tracker.emit(0);
        tracker
    }

    /// Record `bytes` more finished work; an error once the call is
    /// cancelled (it maps to `Cancelled`).
    pub(crate) fn advance(&self, bytes: u64) -> std::io::Result<()> {
        self.control.check_io()?;
        if self.callback.is_none() {
            return Ok(());
        }
        let before = self.done.fetch_add(bytes, Ordering::Relaxed);
        let after = before + bytes;
        if before / self.step != after / self.step {
            self.emit(after.min(self.total));
        }
        Ok(())
    }

    /// Report completion.
    pub(crate) fn finish(&self) {
        self.emit(self.total);
    }

    fn emit(&self, done_bytes: u64) {
        if let Some(callback) = self.callback {
            callback(ProgressEvent {
                phase: self.phase,
                done_bytes,
                total_bytes: self.total,
            });
        }
    }
}

/// A reader that reports the bytes passing through it to a tracker.
pub(crate) struct CountingReader<'t, 'a, R> {
    pub(crate) inner: R,
    pub(crate) tracker: &'t ProgressTracker<'a>,
}

impl<R: std::io::Read> std::io::Read for CountingReader<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tracker.advance(n as u64)?;
        Ok(n)
    }
}

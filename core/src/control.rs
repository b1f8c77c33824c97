//! Control over a long call (verify, create, export, import, reindex, boot,
//! exec, image load): cancellation in, progress out.
//!
//! A call is cancelled when its future is dropped or when the
//! [`CancellationToken`] it runs under is fired. Either way the blocking
//! work sees it at its next check (every long loop checks at least every
//! few milliseconds, where it reports progress), removes what it staged and
//! returns [`MicrosandboxError::Cancelled`]. Firing a token lets the call
//! return that error once cleanup is done; dropping the future returns at
//! once and the cleanup finishes on the worker thread.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{MicrosandboxError, MicrosandboxResult, cancelled_io};
use crate::progress::{ProgressCallback, ProgressEvent, ProgressPhase};

/// A cancellation signal shared by a caller and the calls it starts.
/// Clones share the signal. Calls made inside [`scope`](Self::scope) obey it.
#[derive(Debug, Clone, Default)]
pub struct CancellationToken {
    fired: Arc<AtomicBool>,
}

tokio::task_local! {
    static SCOPED: CancellationToken;
}

impl CancellationToken {
    /// A token that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fire the token: every call running under it stops and returns
    /// `Cancelled`; calls started under it later fail at once.
    pub fn cancel(&self) {
        self.fired.store(true, Ordering::Release);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Run `work` with this token governing every SDK call made inside it
    /// (on this task).
    pub async fn scope<F: Future>(&self, work: F) -> F::Output {
        SCOPED.scope(self.clone(), work).await
    }

    fn scoped() -> Option<Self> {
        SCOPED.try_with(Self::clone).ok()
    }
}

/// Per-call options of the calls that report progress
/// ([`Snapshot::verify_with`](crate::Snapshot::verify_with),
/// [`Snapshot::export_with`](crate::Snapshot::export_with),
/// [`Snapshot::import_with`](crate::Snapshot::import_with),
/// [`Image::load_with`](crate::image::Image::load_with)).
#[derive(Clone, Default)]
pub struct CallOpts {
    /// Receives the call's progress events, ending at the total.
    pub progress: Option<ProgressCallback>,
    /// Cancels the call when fired (as does a token whose
    /// [`scope`](CancellationToken::scope) the call runs in).
    pub cancel: Option<CancellationToken>,
}

impl std::fmt::Debug for CallOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOpts")
            .field("progress", &self.progress.is_some())
            .field("cancel", &self.cancel)
            .finish()
    }
}

/// What the blocking part of one long call answers to: the caller's
/// tokens, the call's own drop signal, and the progress callback.
pub(crate) struct Control {
    token: Option<CancellationToken>,
    scoped: Option<CancellationToken>,
    dropped: Arc<AtomicBool>,
    progress: Option<ProgressCallback>,
}

impl Control {
    /// Control of a call started here: obeys `opts.cancel` and the scoped
    /// token, if any.
    pub(crate) fn new(opts: CallOpts) -> Self {
        Self {
            token: opts.cancel,
            scoped: CancellationToken::scoped(),
            dropped: Arc::default(),
            progress: opts.progress,
        }
    }

    /// Control that never cancels and reports nowhere, for steps that must
    /// run to their end (a clean shutdown).
    pub(crate) fn detached() -> Self {
        Self {
            token: None,
            scoped: None,
            dropped: Arc::default(),
            progress: None,
        }
    }

    /// The same call's cancellation, reporting nowhere: for a step whose
    /// progress is not the call's (the verify before an export).
    pub(crate) fn without_progress(&self) -> Self {
        Self {
            token: self.token.clone(),
            scoped: self.scoped.clone(),
            dropped: self.dropped.clone(),
            progress: None,
        }
    }

    /// Whether the call must stop.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
            || [&self.token, &self.scoped]
                .into_iter()
                .flatten()
                .any(CancellationToken::is_cancelled)
    }

    /// `Cancelled` once the call must stop.
    pub(crate) fn check(&self) -> MicrosandboxResult<()> {
        if self.is_cancelled() {
            Err(MicrosandboxError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// [`check`](Self::check) for I/O loops: the error maps back to
    /// `Cancelled` through [`MicrosandboxError::io`].
    pub(crate) fn check_io(&self) -> io::Result<()> {
        if self.is_cancelled() {
            Err(cancelled_io())
        } else {
            Ok(())
        }
    }

    /// The caller's progress callback.
    pub(crate) fn progress(&self) -> Option<&ProgressCallback> {
        self.progress.as_ref()
    }
}

/// Run a long call's blocking `work` off the async runtime under a fresh
/// [`Control`]: `opts.cancel` and the scoped token cancel it, and so does
/// dropping the returned future.
pub(crate) async fn long_call<T, F>(opts: CallOpts, work: F) -> MicrosandboxResult<T>
where
    F: FnOnce(&Control) -> MicrosandboxResult<T> + Send + 'static,
    T: Send + 'static,
{
    let control = Control::new(opts);
    control.check()?;
    let on_drop = CancelOnDrop(Some(control.dropped.clone()));
    let result = tokio::task::spawn_blocking(move || work(&control)).await;
    on_drop.disarm();
    result.map_err(|e| MicrosandboxError::Runtime(format!("blocking task failed: {e}")))?
}

/// Run blocking work (hashing, copying, file walks) off the async runtime's
/// worker threads.
pub(crate) async fn blocking<T, F>(work: F) -> MicrosandboxResult<T>
where
    F: FnOnce() -> MicrosandboxResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| MicrosandboxError::Runtime(format!("blocking task failed: {e}")))?
}

/// Fires a call's drop signal unless disarmed: the future was dropped
/// before the work finished.
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(dropped) = &self.0 {
            dropped.store(true, Ordering::Release);
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn spin_until_cancelled(control: &Control) -> MicrosandboxResult<u32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            control.check()?;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(0)
    }

    #[tokio::test]
    async fn a_fired_token_cancels_the_call_it_scopes() {
        let token = CancellationToken::new();
        let fire = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            fire.cancel();
        });
        let start = Instant::now();
        let err = token
            .scope(long_call(CallOpts::default(), spin_until_cancelled))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "Cancelled");
        assert!(start.elapsed() < Duration::from_secs(2));
        let again = token.scope(long_call(CallOpts::default(), |_| Ok(1))).await;
        assert_eq!(again.unwrap_err().kind(), "Cancelled");
        let explicit = CallOpts {
            cancel: Some(token.clone()),
            ..CallOpts::default()
        };
        assert_eq!(
            long_call(explicit, |_| Ok(1)).await.unwrap_err().kind(),
            "Cancelled"
        );
    }

    #[tokio::test]
    async fn dropping_the_future_stops_the_work() {
        let (tx, rx) = std::sync::mpsc::channel();
        let call = long_call(CallOpts::default(), move |control| {
            let result = spin_until_cancelled(control);
            let _ = tx.send(result.is_err());
            result
        });
        let _ = tokio::time::timeout(Duration::from_millis(50), call).await;
        let stopped = rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert!(stopped, "the blocking work did not see the drop");
    }

    #[test]
    fn cancelled_io_errors_map_to_the_cancelled_kind() {
        let err = MicrosandboxError::io("/x", cancelled_io());
        assert_eq!(err.kind(), "Cancelled");
        let other = MicrosandboxError::io("/x", io::Error::from(io::ErrorKind::Interrupted));
        assert_eq!(other.kind(), "Io");
    }
}

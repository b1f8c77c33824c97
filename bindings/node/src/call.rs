//! The boundary every native call crosses: the per-call configuration and
//! cancel token, the Promise bridge that turns a core error into a JS error
//! whose `code` is the core's kind, panic catching, progress callbacks and
//! exact u64 <-> BigInt conversion.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;

use futures::FutureExt;
use microsandbox::{
    AccelMode, CallOpts, CancellationToken, Config, MicrosandboxError, MsbHome, ProgressCallback,
    ProgressEvent,
};
use napi::bindgen_prelude::{AsyncTask, BigInt, PromiseRaw, ToNapiValue, TypeName, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, JsError, Status, Task};
use napi_derive::napi;

/// The configuration a JS call runs under (`Config` of the TS layer; unset
/// fields fall back as the core documents).
#[napi(object)]
#[derive(Default)]
pub struct NativeConfig {
    /// The home directory.
    pub home: Option<String>,
    /// The guest assets directory.
    pub guest_assets_dir: Option<String>,
    /// `auto`, `kvm` or `tcg`.
    pub accel: Option<String>,
}

impl NativeConfig {
    fn to_core(&self) -> Result<Config, MicrosandboxError> {
        let mut config = Config::new();
        config.home = self.home.as_ref().map(PathBuf::from);
        config.guest_assets_dir = self.guest_assets_dir.as_ref().map(PathBuf::from);
        if let Some(accel) = &self.accel {
            config.accel = Some(accel.parse::<AccelMode>()?);
        }
        Ok(config)
    }
}

/// A cancellation token the TS layer fires from an `AbortSignal`.
#[napi]
#[derive(Default)]
pub struct CancelToken {
    pub(crate) inner: CancellationToken,
}

#[napi]
impl CancelToken {
    /// A token that has not fired.
    #[napi(constructor, catch_unwind)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Fire the token: calls running under it stop with `Cancelled`.
    #[napi(catch_unwind)]
    pub fn cancel(&self) {
        self.inner.cancel();
    }
}

/// One progress report as JS sees it.
#[napi(object)]
pub struct NativeProgressEvent {
    /// `hash`, `export` or `import`.
    pub phase: String,
    /// Bytes finished so far.
    pub done_bytes: BigInt,
    /// Bytes in all.
    pub total_bytes: BigInt,
}

/// A JS progress callback; weak, so it never keeps the process alive.
/// `null` is the flush marker (see [`Progress::flush`]); the TS layer
/// drops it.
pub type ProgressFn = ThreadsafeFunction<
    Option<NativeProgressEvent>,
    (),
    Option<NativeProgressEvent>,
    Status,
    false,
    true,
>;

/// A progress callback shared with the core's worker threads.
#[derive(Clone)]
pub struct Progress(Arc<ProgressFn>);

impl Progress {
    fn new(callback: Option<ProgressFn>) -> Option<Self> {
        callback.map(|f| Self(Arc::new(f)))
    }

    fn callback(&self) -> ProgressCallback {
        let f = self.0.clone();
        Arc::new(move |event: ProgressEvent| {
            let event = NativeProgressEvent {
                phase: event.phase.as_str().to_string(),
                done_bytes: BigInt::from(event.done_bytes),
                total_bytes: BigInt::from(event.total_bytes),
            };
            f.call(Some(event), ThreadsafeFunctionCallMode::Blocking);
        })
    }

    /// Wait until every event queued so far has reached JS (the queue is
    /// FIFO), so the Promise settles after the last event.
    async fn flush(&self) {
        let _ = self.0.call_async(None).await;
    }
}

/// `CallOpts` for a core call under `cancel` and `progress`.
fn call_opts(cancel: Option<&CancellationToken>, progress: Option<&Progress>) -> CallOpts {
    CallOpts {
        progress: progress.map(Progress::callback),
        cancel: cancel.cloned(),
    }
}

/// Run `work` on the tokio runtime under `config` and `cancel` (as the
/// core's scopes), catching panics (kind `Runtime`), and settle a Promise:
/// resolved with `convert`'s value, or rejected with an error whose `code`
/// is the core's kind.
pub(crate) fn spawn<'env, T, V, F, C>(
    env: &'env Env,
    config: Option<NativeConfig>,
    cancel: Option<&CancelToken>,
    progress: Option<Progress>,
    work: F,
    convert: C,
) -> napi::Result<PromiseRaw<'env, V>>
where
    T: Send + 'static,
    V: ToNapiValue,
    F: Future<Output = Result<T, MicrosandboxError>> + Send + 'static,
    C: FnOnce(T) -> napi::Result<V> + 'static,
{
    let token = cancel.map(|c| c.inner.clone()).unwrap_or_default();
    let config = config.unwrap_or_default().to_core();
    let fut = async move {
        let result = AssertUnwindSafe(async move {
            let config = config?;
            config.scope(token.scope(work)).await
        })
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(panic_error(panic)));
        if let Some(progress) = progress {
            progress.flush().await;
        }
        Ok::<_, napi::Error>(result)
    };
    env.spawn_future_with_callback(fut, move |env, result| match result {
        // Converting to JS values runs on the JS thread: a panic there is
        // caught too and rejects like any other `Runtime` error.
        Ok(value) => std::panic::catch_unwind(AssertUnwindSafe(|| convert(value)))
            .unwrap_or_else(|panic| Err(js_error(env, &panic_error(panic)))),
        Err(err) => Err(js_error(env, &err)),
    })
}

/// [`spawn`] of a long call that reports progress: `start` gets the
/// `CallOpts` wired to `cancel` and `progress` and returns the core's work.
pub(crate) fn spawn_with_call_opts<'env, T, V, F, C>(
    env: &'env Env,
    config: Option<NativeConfig>,
    cancel: Option<&CancelToken>,
    progress: Option<ProgressFn>,
    start: impl FnOnce(CallOpts) -> F,
    convert: C,
) -> napi::Result<PromiseRaw<'env, V>>
where
    T: Send + 'static,
    V: ToNapiValue,
    F: Future<Output = Result<T, MicrosandboxError>> + Send + 'static,
    C: FnOnce(T) -> napi::Result<V> + 'static,
{
    let progress = Progress::new(progress);
    let call = call_opts(cancel.map(|c| &c.inner), progress.as_ref());
    spawn(env, config, cancel, progress, start(call), convert)
}

fn panic_error(panic: Box<dyn std::any::Any + Send>) -> MicrosandboxError {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    MicrosandboxError::Runtime(format!("panic in the native binding: {what}"))
}

/// A JS `Error` with `code` = the core's kind and the core's message,
/// wrapped so the Promise rejects with exactly this object.
pub(crate) fn js_error(env: &Env, err: &MicrosandboxError) -> napi::Error {
    let error = napi::Error::new(err.kind().to_string(), err.to_string());
    // SAFETY: `env` is the live environment of the JS thread this callback
    // runs on; `into_value` returns a JS value owned by that environment.
    let value = unsafe { JsError::from(error).into_value(env.raw()) };
    // SAFETY: `value` was just created in `env` and is a valid JS value.
    let unknown = unsafe { Unknown::from_raw_unchecked(env.raw(), value) };
    napi::Error::from(unknown)
}

/// An exact u64 from a JS BigInt; `InvalidConfig` for a negative value or
/// one above 2^64-1 (never truncated).
pub(crate) fn to_u64(value: &BigInt, what: &str) -> Result<u64, MicrosandboxError> {
    let (negative, low, lossless) = value.get_u64();
    let zero_above = value.words.iter().skip(1).all(|w| *w == 0);
    if negative && !(low == 0 && zero_above) || !(lossless || zero_above) {
        return Err(MicrosandboxError::InvalidConfig(format!(
            "{what} must be an integer between 0 and 2^64-1"
        )));
    }
    Ok(low)
}

/// Converts a blocking call's result to JS, on the JS thread.
type Convert<V> = Box<dyn FnOnce() -> napi::Result<V> + Send>;

/// The blocking part of a [`BlockingTask`], run on the worker thread.
type BlockingWork<V> = Box<dyn FnOnce() -> Result<Convert<V>, MicrosandboxError> + Send>;

/// A blocking core call run on libuv's worker pool: one thread hop out and
/// one back, for lookups too small to pay for the tokio runtime's hops.
pub struct BlockingTask<V> {
    work: Option<BlockingWork<V>>,
}

/// A Promise of `work` run in the home `config` resolves to, on libuv's
/// worker pool; `work` returns the conversion to run on the JS thread.
pub(crate) fn blocking_task<V, C, F>(
    config: Option<NativeConfig>,
    work: F,
) -> AsyncTask<BlockingTask<V>>
where
    V: ToNapiValue + TypeName + 'static,
    F: FnOnce(MsbHome) -> Result<C, MicrosandboxError> + Send + 'static,
    C: FnOnce() -> napi::Result<V> + Send + 'static,
{
    let config = config.unwrap_or_default().to_core();
    AsyncTask::new(BlockingTask {
        work: Some(Box::new(move || {
            let home = config?.resolve_self()?;
            work(home).map(|c| Box::new(c) as Convert<V>)
        })),
    })
}

impl<V: ToNapiValue + TypeName + 'static> Task for BlockingTask<V> {
    type Output = Result<Convert<V>, MicrosandboxError>;
    type JsValue = V;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let work = self
            .work
            .take()
            .ok_or_else(|| napi::Error::from_reason("task ran twice"))?;
        Ok(
            std::panic::catch_unwind(AssertUnwindSafe(work))
                .unwrap_or_else(|p| Err(panic_error(p))),
        )
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<V> {
        match output {
            Ok(convert) => std::panic::catch_unwind(AssertUnwindSafe(convert))
                .unwrap_or_else(|panic| Err(js_error(&env, &panic_error(panic)))),
            Err(err) => Err(js_error(&env, &err)),
        }
    }
}

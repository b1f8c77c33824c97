//! The C ABI of microsandbox, for the Go SDK (cgo) and any C caller.
//!
//! Shape: opaque handles (`MsbSnapshot*`, `MsbSandbox*`, …) released with
//! their `msb_*_free`; every function returns an `MsbError*` (NULL on
//! success) and hands results through out-pointers; strings out are owned
//! `char*` released with [`msb_string_free`]. Every export runs its body
//! under `catch_unwind`, so a panic comes out as an error of kind `Runtime`.
//! The core's async calls run on one lazily created multi-thread tokio
//! runtime; a C call blocks its calling thread until the core is done.
//! This file owns the shared machinery (runtime, errors, strings, config,
//! cancellation, progress); the surface lives in the modules below.

// Every export takes pointers from C by nature; what each must point at is
// its documented contract (the header), and the helpers below check NULL.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod exec;
mod image;
mod sandbox;
mod snapshot;
mod testing;

use std::ffi::{CStr, CString, c_char, c_void};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::OnceLock;

use microsandbox::{
    AccelMode, CallOpts, CancellationToken, Config, MicrosandboxError, ProgressCallback,
    ProgressEvent, ProgressPhase,
};

pub use exec::*;
pub use image::*;
pub use sandbox::*;
pub use snapshot::*;
pub use testing::*;

/// An error: its stable kind (one of [`msb_error_kind_at`]) and message.
pub struct MsbError {
    kind: &'static CStr,
    message: CString,
}

/// A borrowed run of bytes (not NUL-terminated), valid while the object it
/// was read from lives.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MsbStr {
    /// First byte (NULL when `len` is 0).
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl MsbStr {
    /// The bytes of `bytes`; NULL when empty (an empty slice's pointer is
    /// dangling, and Go's stack scanner rejects such values).
    fn of(bytes: &[u8]) -> Self {
        if bytes.is_empty() {
            return Self::EMPTY;
        }
        Self {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    const EMPTY: Self = Self {
        ptr: std::ptr::null(),
        len: 0,
    };
}

/// Configuration of one call: home, guest assets directory, accelerator.
/// Unset fields come from the process default, then the environment.
pub struct MsbConfig {
    config: Config,
}

/// A cancellation token: firing it stops every call it was passed to.
pub struct MsbCancel {
    token: CancellationToken,
}

/// One progress report of a long call.
#[repr(C)]
pub struct MsbProgressEvent {
    /// `"hash"`, `"export"`, `"import"`, `"load"`, `"pull"` or `"push"` (static, NUL-terminated).
    pub phase: *const c_char,
    /// Bytes finished so far.
    pub done_bytes: u64,
    /// Bytes in all; the last event has `done_bytes == total_bytes`.
    pub total_bytes: u64,
}

/// A progress callback; called from worker threads, in order.
pub type MsbProgressFn =
    Option<unsafe extern "C" fn(user: *mut c_void, event: *const MsbProgressEvent)>;

/// The result of every export: NULL on success.
pub type MsbResult = *mut MsbError;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("msb-c")
            .build()
            .expect("the tokio runtime of the C ABI cannot start")
    })
}

static KIND_NAMES: OnceLock<Vec<CString>> = OnceLock::new();

fn kind_names() -> &'static [CString] {
    KIND_NAMES.get_or_init(|| {
        MicrosandboxError::KINDS
            .iter()
            .map(|k| CString::new(*k).expect("kinds hold no NUL"))
            .collect()
    })
}

fn static_kind(kind: &str) -> &'static CStr {
    let names = kind_names();
    let at = MicrosandboxError::KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_else(|| {
            MicrosandboxError::KINDS
                .iter()
                .position(|k| *k == "Runtime")
                .unwrap_or(0)
        });
    names[at].as_c_str()
}

fn c_string(text: impl Into<Vec<u8>>) -> CString {
    let mut bytes = text.into();
    bytes.retain(|b| *b != 0);
    CString::new(bytes).unwrap_or_default()
}

/// The one conversion of a core error into the ABI's error.
fn error_from(err: &MicrosandboxError) -> MsbResult {
    Box::into_raw(Box::new(MsbError {
        kind: static_kind(err.kind()),
        message: c_string(err.to_string()),
    }))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Run an export's body: its error, or a panic, becomes an `MsbError*`.
fn guard(body: impl FnOnce() -> Result<(), MicrosandboxError>) -> MsbResult {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => std::ptr::null_mut(),
        Ok(Err(err)) => error_from(&err),
        Err(payload) => error_from(&MicrosandboxError::Runtime(format!(
            "panic in the microsandbox C ABI: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// Run a core future to its end on the runtime, inside the call's
/// configuration scope and cancellation token.
fn block_on<F: Future>(config: *const MsbConfig, cancel: *const MsbCancel, work: F) -> F::Output {
    // SAFETY: the caller passes NULL or a live config / token from this ABI.
    let (config, token) = unsafe { (config.as_ref(), cancel.as_ref()) };
    // Quick calls (get, list) pass neither a token nor, often, a config:
    // no scope is cheaper than an empty one.
    let scoped = async move {
        match token {
            Some(t) => t.token.scope(work).await,
            None => work.await,
        }
    };
    match config {
        Some(c) => runtime().block_on(c.config.clone().scope(scoped)),
        None => runtime().block_on(scoped),
    }
}

fn call_opts(cancel: *const MsbCancel, progress: MsbProgressFn, user: *mut c_void) -> CallOpts {
    // SAFETY: NULL or a live token from this ABI.
    let token = unsafe { cancel.as_ref() }.map(|t| t.token.clone());
    CallOpts {
        progress: progress.map(|f| progress_callback(f, user)),
        cancel: token,
    }
}

fn progress_callback(
    f: unsafe extern "C" fn(*mut c_void, *const MsbProgressEvent),
    user: *mut c_void,
) -> ProgressCallback {
    let user = user as usize;
    std::sync::Arc::new(move |event: ProgressEvent| {
        let event = MsbProgressEvent {
            phase: phase_name(event.phase).as_ptr(),
            done_bytes: event.done_bytes,
            total_bytes: event.total_bytes,
        };
        // SAFETY: the caller promised `f` may be called with its `user` from
        // any thread until the call that took it returns.
        unsafe { f(user as *mut c_void, &event) };
    })
}

/// The phase's stable name as a static C string. The match is exhaustive,
/// so a phase added to the core does not build here until it is named.
fn phase_name(phase: ProgressPhase) -> &'static CStr {
    let name = match phase {
        ProgressPhase::Hash => c"hash",
        ProgressPhase::Export => c"export",
        ProgressPhase::Import => c"import",
        ProgressPhase::Load => c"load",
        ProgressPhase::Pull => c"pull",
        ProgressPhase::Push => c"push",
    };
    debug_assert_eq!(name.to_bytes(), phase.as_str().as_bytes());
    name
}

/// A required string argument.
fn arg_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, MicrosandboxError> {
    if ptr.is_null() {
        return Err(MicrosandboxError::InvalidConfig(format!("{what} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string that outlives the call.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| MicrosandboxError::InvalidConfig(format!("{what} is not UTF-8")))
}

/// An optional string argument (NULL or empty: none).
fn arg_opt_str<'a>(ptr: *const c_char, what: &str) -> Result<Option<&'a str>, MicrosandboxError> {
    if ptr.is_null() {
        return Ok(None);
    }
    arg_str(ptr, what).map(|s| (!s.is_empty()).then_some(s))
}

/// `count` key/value string pairs.
fn arg_pairs(
    keys: *const *const c_char,
    values: *const *const c_char,
    count: usize,
    what: &str,
) -> Result<Vec<(String, String)>, MicrosandboxError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if keys.is_null() || values.is_null() {
        return Err(MicrosandboxError::InvalidConfig(format!(
            "{what} arrays are NULL"
        )));
    }
    // SAFETY: the caller passes two arrays of `count` strings.
    let (keys, values) = unsafe {
        (
            std::slice::from_raw_parts(keys, count),
            std::slice::from_raw_parts(values, count),
        )
    };
    keys.iter()
        .zip(values)
        .map(|(k, v)| {
            Ok((
                arg_str(*k, what)?.to_string(),
                arg_str(*v, what)?.to_string(),
            ))
        })
        .collect()
}

/// `count` strings (NULL allowed when `count` is 0).
fn arg_strs(
    items: *const *const c_char,
    count: usize,
    what: &str,
) -> Result<Vec<String>, MicrosandboxError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if items.is_null() {
        return Err(MicrosandboxError::InvalidConfig(format!("{what} is NULL")));
    }
    // SAFETY: the caller passes an array of `count` strings.
    let items = unsafe { std::slice::from_raw_parts(items, count) };
    items
        .iter()
        .map(|item| arg_str(*item, what).map(str::to_string))
        .collect()
}

/// Store `value` through a required out-pointer.
fn put<T>(out: *mut T, value: T) -> Result<(), MicrosandboxError> {
    if out.is_null() {
        return Err(MicrosandboxError::InvalidConfig(
            "out-pointer is NULL".into(),
        ));
    }
    // SAFETY: non-null, and the caller passes a writable out-pointer.
    unsafe { out.write(value) };
    Ok(())
}

fn put_string(out: *mut *mut c_char, text: impl Into<Vec<u8>>) -> Result<(), MicrosandboxError> {
    put(out, c_string(text).into_raw())
}

fn put_json(out: *mut *mut c_char, value: &impl serde::Serialize) -> Result<(), MicrosandboxError> {
    let text = serde_json::to_string(value)
        .map_err(|e| MicrosandboxError::Runtime(format!("cannot serialize a view: {e}")))?;
    put_string(out, text)
}

/// Run an export that reports no error: a panic yields `fallback` instead
/// of unwinding into the caller.
fn shielded<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// Release a boxed object; a panic in its drop stays on this side.
fn free_box<T>(ptr: *mut T) {
    if !ptr.is_null() {
        // SAFETY: `ptr` came from `Box::into_raw` of this ABI and is freed once.
        let owned = unsafe { Box::from_raw(ptr) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(owned)));
    }
}

/// The kind of `err` (static; never free it).
#[unsafe(no_mangle)]
pub extern "C" fn msb_error_kind(err: *const MsbError) -> *const c_char {
    shielded(c"Runtime".as_ptr(), || {
        // SAFETY: NULL or a live error.
        match unsafe { err.as_ref() } {
            Some(e) => e.kind.as_ptr(),
            None => c"".as_ptr(),
        }
    })
}

/// The message of `err` (owned by `err`).
#[unsafe(no_mangle)]
pub extern "C" fn msb_error_message(err: *const MsbError) -> *const c_char {
    shielded(c"".as_ptr(), || {
        // SAFETY: NULL or a live error.
        match unsafe { err.as_ref() } {
            Some(e) => e.message.as_ptr(),
            None => c"".as_ptr(),
        }
    })
}

/// Release an error.
#[unsafe(no_mangle)]
pub extern "C" fn msb_error_free(err: *mut MsbError) {
    free_box(err);
}

/// How many error kinds the core has (`MicrosandboxError::KINDS`).
#[unsafe(no_mangle)]
pub extern "C" fn msb_error_kinds_count() -> usize {
    MicrosandboxError::KINDS.len()
}

/// The `index`th error kind (static), or NULL past the end.
#[unsafe(no_mangle)]
pub extern "C" fn msb_error_kind_at(index: usize) -> *const c_char {
    shielded(std::ptr::null(), || {
        kind_names()
            .get(index)
            .map_or(std::ptr::null(), |k| k.as_ptr())
    })
}

/// Release a string this ABI returned.
#[unsafe(no_mangle)]
pub extern "C" fn msb_string_free(text: *mut c_char) {
    if !text.is_null() {
        // SAFETY: `text` came from `CString::into_raw` of this ABI.
        let owned = unsafe { CString::from_raw(text) };
        shielded((), move || drop(owned));
    }
}

/// Release a byte buffer this ABI returned (`ptr`, `len` as given).
#[unsafe(no_mangle)]
pub extern "C" fn msb_bytes_free(ptr: *mut u8, len: usize) {
    if !ptr.is_null() {
        // SAFETY: `ptr`/`len` came from a boxed slice of this ABI.
        let owned = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) };
        shielded((), move || drop(owned));
    }
}

/// A configuration: each argument NULL or empty to leave it unset; `accel`
/// is `auto`, `kvm` or `tcg`.
#[unsafe(no_mangle)]
pub extern "C" fn msb_config_new(
    home: *const c_char,
    guest_assets_dir: *const c_char,
    accel: *const c_char,
    out: *mut *mut MsbConfig,
) -> MsbResult {
    guard(|| {
        let mut config = Config::new();
        if let Some(home) = arg_opt_str(home, "home")? {
            config = config.home(home);
        }
        if let Some(dir) = arg_opt_str(guest_assets_dir, "guest_assets_dir")? {
            config = config.guest_assets_dir(dir);
        }
        if let Some(accel) = arg_opt_str(accel, "accel")? {
            config = config.accel(parse_accel(accel)?);
        }
        put(out, Box::into_raw(Box::new(MsbConfig { config })))
    })
}

fn parse_accel(name: &str) -> Result<AccelMode, MicrosandboxError> {
    match name {
        "auto" => Ok(AccelMode::Auto),
        "kvm" => Ok(AccelMode::Kvm),
        "tcg" => Ok(AccelMode::Tcg),
        other => Err(MicrosandboxError::InvalidConfig(format!(
            "accel '{other}' is not one of auto, kvm, tcg"
        ))),
    }
}

/// Release a configuration.
#[unsafe(no_mangle)]
pub extern "C" fn msb_config_free(config: *mut MsbConfig) {
    free_box(config);
}

/// Make `config` (or, when NULL, an empty one) the process default.
#[unsafe(no_mangle)]
pub extern "C" fn msb_config_set_default(config: *const MsbConfig) -> MsbResult {
    guard(|| {
        // SAFETY: NULL or a live config.
        let config = unsafe { config.as_ref() }
            .map(|c| c.config.clone())
            .unwrap_or_default();
        Config::set_default(config);
        Ok(())
    })
}

/// Register the guest assets directory shipped with the caller's package
/// (searched after `$MSB_HOME/kernel`; see docs/config.md).
#[unsafe(no_mangle)]
pub extern "C" fn msb_register_shipped_assets_dir(dir: *const c_char) -> MsbResult {
    guard(|| {
        let dir = arg_str(dir, "dir")?;
        microsandbox::runtime::assets::register_shipped_assets_dir(PathBuf::from(dir));
        Ok(())
    })
}

/// A token that has not fired.
#[unsafe(no_mangle)]
pub extern "C" fn msb_cancel_new() -> *mut MsbCancel {
    shielded(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(MsbCancel {
            token: CancellationToken::new(),
        }))
    })
}

/// Fire `token`: the calls it was passed to stop with kind `Cancelled`.
#[unsafe(no_mangle)]
pub extern "C" fn msb_cancel_fire(token: *const MsbCancel) {
    // SAFETY: NULL or a live token.
    if let Some(t) = unsafe { token.as_ref() } {
        shielded((), || t.token.cancel());
    }
}

/// Release a token (after the calls it was passed to returned).
#[unsafe(no_mangle)]
pub extern "C" fn msb_cancel_free(token: *mut MsbCancel) {
    free_box(token);
}

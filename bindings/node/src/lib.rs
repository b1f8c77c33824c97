//! The Node.js addon of microsandbox (napi-rs): a thin layer that runs the
//! core's calls on napi's tokio runtime and settles Promises. The public
//! API is the TypeScript package `sdk-ts/`, which wraps these functions;
//! nothing here decides anything the core does not.
//!
//! Every fallible call rejects with a JS `Error` whose `code` is the core's
//! error kind (see `call.rs`); panics become kind `Runtime`.

pub mod call;
pub mod exec;
pub mod image;
pub mod sandbox;
pub mod snapshot;

use microsandbox::MicrosandboxError;
use napi::Env;
use napi::bindgen_prelude::{BigInt, PromiseRaw};
use napi_derive::napi;

/// Every error kind of the core, in its order (`MicrosandboxError::KINDS`).
#[napi(catch_unwind)]
pub fn kinds() -> Vec<String> {
    MicrosandboxError::KINDS
        .iter()
        .map(|k| k.to_string())
        .collect()
}

/// Test hook: a Promise rejected with a core error of `kind`, through the
/// same conversion as every real error.
#[napi(ts_return_type = "Promise<void>")]
pub fn test_hook_error<'env>(env: &'env Env, kind: String) -> napi::Result<PromiseRaw<'env, ()>> {
    let work = async move { Err::<(), _>(error_of_kind(&kind)) };
    call::spawn(env, None, None, None, work, Ok)
}

/// Test hook: a call that panics inside the native code.
#[napi(ts_return_type = "Promise<void>")]
pub fn test_hook_panic<'env>(env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
    let work = async move {
        if !kinds().is_empty() {
            panic!("test hook panic");
        }
        Ok::<(), MicrosandboxError>(())
    };
    call::spawn(env, None, None, None, work, Ok)
}

/// Test hook: a u64 through the BigInt conversion both ways (rejects
/// lossy input with `InvalidConfig`, as every size argument does).
#[napi(ts_return_type = "Promise<bigint>")]
pub fn test_hook_u64<'env>(
    env: &'env Env,
    value: BigInt,
) -> napi::Result<PromiseRaw<'env, BigInt>> {
    let work = async move { call::to_u64(&value, "value") };
    call::spawn(env, None, None, None, work, |n| Ok(BigInt::from(n)))
}

/// A core error of `kind` (for the test hook); `InvalidConfig` naming the
/// unknown kind otherwise.
fn error_of_kind(kind: &str) -> MicrosandboxError {
    use MicrosandboxError as E;
    let s = || "test".to_string();
    match kind {
        "SnapshotAlreadyExists" => E::SnapshotAlreadyExists {
            path: "/test".into(),
        },
        "SnapshotNotFound" => E::SnapshotNotFound { what: s() },
        "SnapshotSandboxRunning" => E::SnapshotSandboxRunning { name: s() },
        "SnapshotIntegrity" => E::SnapshotIntegrity {
            path: "/test".into(),
            reason: s(),
        },
        "ManifestInvalid" => E::ManifestInvalid {
            path: "/test".into(),
            reason: s(),
        },
        "IntegrityAlgorithmUnsupported" => E::IntegrityAlgorithmUnsupported {
            path: "/test".into(),
            algorithm: s(),
            supported: s(),
        },
        "ArchiveInvalid" => E::ArchiveInvalid {
            path: "/test".into(),
            reason: s(),
        },
        "SnapshotHasChildren" => E::SnapshotHasChildren {
            digest: s(),
            children: 1,
        },
        "SandboxNotFound" => E::SandboxNotFound { name: s() },
        "SandboxAlreadyExists" => E::SandboxAlreadyExists { name: s() },
        "SandboxNotRunning" => E::SandboxNotRunning {
            name: s(),
            state: "stopped".into(),
        },
        "SandboxNotPaused" => E::SandboxNotPaused {
            name: s(),
            state: "running".into(),
        },
        "SnapshotIncompatible" => E::SnapshotIncompatible {
            path: "/test".into(),
            reason: s(),
        },
        "ImageNotFound" => E::ImageNotFound { reference: s() },
        "ImageInUse" => E::ImageInUse {
            reference: s(),
            users: "snapshot test".into(),
        },
        "Registry" => E::Registry {
            reference: "test".into(),
            reason: s(),
        },
        "Runtime" => E::Runtime(s()),
        "Cancelled" => E::Cancelled,
        "Io" => E::Io {
            path: "/test".into(),
            source: std::io::Error::other("test"),
        },
        "InvalidConfig" => E::InvalidConfig(s()),
        other => E::InvalidConfig(format!("test hook: unknown kind {other}")),
    }
}

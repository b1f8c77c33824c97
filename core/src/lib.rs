//! microsandbox: run untrusted code in microVM sandboxes and capture a
//! stopped sandbox's disk as a content-addressed snapshot. This crate holds
//! all the logic; the CLI and the TypeScript, Go and Python bindings are thin
//! shells over it. Every fallible call returns a [`MicrosandboxError`] with a
//! stable [`kind`](MicrosandboxError::kind).

pub mod config;
pub mod control;
mod db;
pub mod error;
pub mod home;
pub mod image;
pub mod progress;
mod publish;
pub mod runtime;
pub mod sandbox;
pub mod snapshot;
pub mod sparse;
mod tools;

pub use config::Config;
pub use control::CancellationToken;
pub use error::{MicrosandboxError, MicrosandboxResult};
pub use home::MsbHome;
pub use progress::{ProgressCallback, ProgressEvent, ProgressPhase};
pub use runtime::AccelMode;
pub use sandbox::{ExecOutput, Sandbox, SandboxBuilder, SandboxHandle, SandboxState};
pub use snapshot::{
    ExportOpts, ImportOpts, IntegrityAlgorithm, Snapshot, SnapshotBuilder, SnapshotConfig,
    SnapshotDestination, SnapshotFormat, SnapshotHandle, SnapshotVerifyReport, UpperVerifyStatus,
    VerifyOpts,
};

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

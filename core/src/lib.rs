//! microsandbox: run untrusted code in microVM sandboxes and capture a
//! stopped sandbox's disk as a content-addressed snapshot. This crate holds
//! all the logic; the CLI and the TypeScript, Go and Python bindings are thin
//! shells over it. Every fallible call returns a [`MicrosandboxError`] with a
//! stable [`kind`](MicrosandboxError::kind).
//!
//! # Layering
//!
//! Modules are stacked; a module may use only the modules on lower lines
//! (never one on its own line or above), so there are no import cycles. A
//! unit test (`layering.rs`) reads the sources and enforces this table.
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | 9 | `fuzzing` | fuzzing entry points over the parsers of untrusted input (not API) |
//! | 8 | `sandbox` | booting, running, stopping sandboxes |
//! | 7 | `snapshot` | artifacts, index, integrity, archives, capture |
//! | 6 | `registry` | pulling images from OCI registries into the image store |
//! | 5 | `image`, `sandbox_store` | the image store layout; sandbox registry, directory layout and lock |
//! | 4 | `runtime` | QEMU, guest assets, the agent, streaming exec, VM names |
//! | 3 | `config`, `db`, `network` | resolving the configuration; the SQLite connection; the network policy and user-mode stack |
//! | 2 | `control`, `home`, `publish`, `sparse`, `tools` | cancellation and progress; paths under the home; atomic publication; sparse files; external tools |
//! | 1 | `progress` | progress event types |
//! | 0 | `error`, `digest` | the error type; content digest strings |
//!
//! The crate root only declares modules and re-exports their public items.

pub mod config;
pub mod control;
mod db;
pub mod digest;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod home;
pub mod image;
#[cfg(test)]
mod layering;
pub mod network;
pub mod progress;
mod publish;
pub mod registry;
pub mod runtime;
pub mod sandbox;
mod sandbox_store;
pub mod snapshot;
pub mod sparse;
mod tools;

pub use config::Config;
pub use control::{CallOpts, CancellationToken};
pub use error::{MicrosandboxError, MicrosandboxResult};
pub use home::{MsbHome, RegistrySettings};
pub use network::{NetworkConfig, NetworkPolicy, PublishedPort};
pub use progress::{ProgressCallback, ProgressEvent, ProgressPhase};
pub use registry::normalise_reference;
pub use runtime::AccelMode;
pub use sandbox::{
    ExecEvent, ExecOptions, ExecOutput, ExecStdin, ExecStream, ExitStatus, RestoreBuilder, Sandbox,
    SandboxBuilder, SandboxHandle, SandboxState,
};
pub use snapshot::{
    ExportOpts, IntegrityAlgorithm, Snapshot, SnapshotBuilder, SnapshotConfig, SnapshotDestination,
    SnapshotFormat, SnapshotHandle, SnapshotKind, SnapshotVerifyReport, UpperVerifyStatus,
};

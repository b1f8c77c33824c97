//! The PID 1 internals of `msb-guest-init`, split by concern: [`sys`] holds
//! the syscalls `nix` does not wrap safely (and all `unsafe`), [`log`] writes
//! diagnostics to the console, [`boot`] takes the VM from the kernel's
//! hand-off to the merged root and back down to a clean power-off, [`reaper`]
//! owns `wait`, and [`agent`] serves the protocol.

pub mod agent;
pub mod boot;
pub mod exec;
pub mod log;
pub mod reaper;
pub mod sys;

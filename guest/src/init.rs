//! The PID 1 internals of `msb-guest-init`, split by concern: [`sys`] holds
//! the syscalls `nix` does not wrap safely (and all `unsafe`), [`log`] writes
//! diagnostics to the console, [`boot`] takes the VM from the kernel's
//! hand-off to the merged root and back down to a clean power-off, [`net`] configures the network card, [`reaper`]
//! owns `wait`, [`agent`] serves the protocol and [`exec`] runs the
//! commands it asks for.

pub mod agent;
pub mod boot;
pub mod exec;
pub mod log;
pub mod net;
pub mod reaper;
pub mod sys;

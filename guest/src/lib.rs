//! `microsandbox-guest`: what the host and the guest share.
//!
//! The library half of this crate is the agent [`protocol`] (message types and
//! framing) and the guest network's addressing ([`netconf`]), used by the guest's PID 1 (the `msb-guest-init` binary, in
//! `src/main.rs`) and by the host runtime in `core`. It depends on std, serde
//! and serde_json only.

pub mod netconf;
pub mod protocol;

pub use protocol::{GuestMessage, HostMessage, ProtocolError};

//! No build step: present only so that the `[build-dependencies]` of this
//! crate (host-side features shared with the proc macros) take effect.

fn main() {}

//! Reference harness for `snapshots-rust.mdx` (the Rust snapshot API
//! reference, copied next to this crate). `build.rs` turns every ```rust
//! block and every type table of the page into generated Rust in `OUT_DIR`;
//! `tests/reference.rs` compiles it against `microsandbox` and runs the
//! examples that need no VM. This library is intentionally empty.

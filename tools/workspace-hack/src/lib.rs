//! Empty on purpose: its manifest enables, for a few shared dependencies, the
//! features a whole-workspace build gives them, so that a build of one
//! binding alone (maturin, `cargo build -p microsandbox-c`) reuses the core
//! `make test` already compiled instead of compiling it again.

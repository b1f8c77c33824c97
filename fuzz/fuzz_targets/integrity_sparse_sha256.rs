//! Fuzz target `integrity_sparse_sha256`: see `microsandbox::fuzzing::integrity_sparse_sha256` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| microsandbox::fuzzing::integrity_sparse_sha256(data));

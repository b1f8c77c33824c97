//! Fuzz target `integrity_merkle`: see `microsandbox::fuzzing::integrity_merkle` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| microsandbox::fuzzing::integrity_merkle(data));

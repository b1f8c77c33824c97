//! Fuzz target `manifest`: see `microsandbox::fuzzing::manifest` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| microsandbox::fuzzing::manifest(data));

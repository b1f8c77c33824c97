//! Fuzz target `archive_import`: see `microsandbox::fuzzing::archive_import` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| microsandbox::fuzzing::archive_import(data));

//! Fuzz target `netd_frames`: see `microsandbox::fuzzing::netd_frames` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| microsandbox::fuzzing::netd_frames(data));

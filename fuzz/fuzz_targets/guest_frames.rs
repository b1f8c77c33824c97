//! Fuzz target `guest_frames`: see `microsandbox::fuzzing::guest_frames` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| microsandbox::fuzzing::guest_frames(data));

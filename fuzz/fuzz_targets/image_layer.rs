//! Fuzz target `image_layer`: see `microsandbox::fuzzing::image_layer` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| microsandbox::fuzzing::image_layer(data));

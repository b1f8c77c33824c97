#!/bin/sh
# Regenerate the valid seeds of fuzz/corpus/<target>/ from the crate itself
# (real manifests, exported archives, layouts, layers, guest and network
# frames): the ignored test `write_seed_corpus` of core/tests/fuzz_smoke.rs.
# Files it does not write (inputs libFuzzer found, kept after `cargo fuzz
# cmin`) are left alone.
set -eu
cd "$(dirname "$0")/.."
mkdir -p target/test-tmp
TMPDIR="$PWD/target/test-tmp" cargo test -p microsandbox --test fuzz_smoke -- \
    --ignored --exact write_seed_corpus
du -sh fuzz/corpus

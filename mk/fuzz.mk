# `make fuzz`: build every cargo-fuzz target (fuzz/, libFuzzer, nightly)
# and run each for FUZZ_SECONDS (default 600), FUZZ_JOBS at a time
# (default 1); execs/s, corpus size and crashes per target go to
# target/fuzz-report.txt and a crash fails the target (fuzz/run.sh,
# docs/fuzzing.md). FUZZ_TARGETS picks some. The nightly toolchain and
# cargo-fuzz are installed as root, else the command is printed.
# The smoke run of `make test` is core/tests/fuzz_smoke.rs, part of
# `cargo test --workspace`: it needs no target here.
FUZZ_SECONDS ?= 600
FUZZ_JOBS ?= 1
FUZZ_TARGETS ?=

.PHONY: fuzz fuzz-setup fuzz-seed

fuzz-setup:
	fuzz/setup.sh

fuzz: fuzz-setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) fuzz/run.sh $(FUZZ_TARGETS)

# Regenerate the valid seeds of fuzz/corpus from the crate.
fuzz-seed:
	fuzz/seed.sh

# The two commands of the README: `make demo` and `make test`. Both install
# what is missing (scripts/setup.sh) and are safe to run again.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH):/usr/sbin:/sbin
CARGO ?= cargo

.PHONY: demo test setup build bench conformance-cases clean

demo: setup build
	@scripts/demo.sh

test: setup
	python3 tests/conformance/generate.py --check
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

setup:
	@scripts/setup.sh

build:
	$(CARGO) build --release -p msb-cli

# Benchmarks of the issues' targets, each beside its baseline, in one run.
bench: setup
	$(CARGO) build --release -p msb-bench
	./target/release/bench-verify --runs 7

# Regenerate tests/conformance/cases/ after changing the vectors or reference.
conformance-cases:
	python3 tests/conformance/generate.py

clean:
	$(CARGO) clean
	rm -rf bench/data

# The two commands of the README: `make demo` and `make test`. Both install
# what is missing (scripts/setup.sh, scripts/setup-runtime.sh) and are safe to
# run again. Nothing here touches ~/.microsandbox: the guest kernel goes to
# target/runtime and every test or demo uses a temporary MSB_HOME.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH):/usr/sbin:/sbin
export MSB_KERNEL_DIR := $(CURDIR)/target/runtime
# No target here may reach a registry on the internet: a sandbox of a missing
# image is an error, not an implicit pull (the registry tests use their own
# registry on 127.0.0.1 and turn it on explicitly).
export MSB_IMPLICIT_PULL := 0
# Test homes live here, so leftover VMs of this run can be found by path.
TEST_TMP := $(CURDIR)/target/test-tmp
CARGO ?= cargo
# Each SDK's make file (mk/<language>.mk) appends its test target here;
# `make test` runs them after the Rust tests, with the same TEST_TMP.
SDK_TESTS :=
# Hardening smoke runs (mk/fuzz.mk, mk/kill.mk, ...) append their make target
# here; `make test` runs them after the SDKs' tests, with the same TEST_TMP.
HARDEN_TESTS :=
.DEFAULT_GOAL := demo
include $(wildcard mk/*.mk)

.PHONY: demo test setup build bench conformance-cases check-no-vms clean

demo: setup build
	@scripts/demo.sh

test: setup
	python3 tests/conformance/generate.py --check
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	rm -rf $(TEST_TMP) && mkdir -p $(TEST_TMP)
	TMPDIR=$(TEST_TMP) $(CARGO) test --workspace --no-fail-fast; status=$$?; \
	  for t in $(SDK_TESTS) $(HARDEN_TESTS); do \
	    TMPDIR=$(TEST_TMP) $(MAKE) --no-print-directory $$t || status=1; \
	  done; \
	  scripts/check-no-vms.sh $(TEST_TMP) && exit $$status

setup:
	@scripts/setup.sh
	@scripts/setup-runtime.sh $(MSB_KERNEL_DIR)

build:
	$(CARGO) build --release -p msb-cli

# Benchmarks of the issues' targets, each beside its baseline, in one run.
# The index benchmark compares against the microsandbox 0.6.6 release from
# PyPI, installed into a venv under target/.
VENV_066 := $(CURDIR)/target/venv-066
bench: setup $(VENV_066)/bin/python
	$(CARGO) build --release -p msb-bench -p msb-cli
	./target/release/bench-verify --runs 7
	./target/release/bench-capture --runs 7
	./target/release/bench-archive --runs 7 --python $(VENV_066)/bin/python
	./target/release/bench-index --sizes 1000,10000 --python $(VENV_066)/bin/python
	./target/release/bench-boot --boots 50
	./target/release/bench-exec --msb ./target/release/msb
	$(MAKE) --no-print-directory bench-fullvm
	$(MAKE) --no-print-directory bench-pull
	$(MAKE) --no-print-directory bench-net

$(VENV_066)/bin/python:
	python3 -m venv $(VENV_066)
	$(VENV_066)/bin/pip install -q microsandbox==0.6.6

# Regenerate tests/conformance/cases/ after changing the vectors or reference.
conformance-cases:
	python3 tests/conformance/generate.py

clean:
	$(CARGO) clean
	rm -rf bench/data

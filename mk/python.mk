# The Python SDK (sdk-python/, bindings/python/): `make test-python` builds
# the extension (cargo's dev profile) into a wheel, installs it into the
# tooling venv, type-checks (mypy --strict), runs pytest and the packaging
# test; `make dist-python` builds the release wheel into target/dist/python;
# `make bench-python` runs the benchmarks against the release build.
SDK_TESTS += test-python

PY_VENV := $(CURDIR)/target/venv-py
PY_GUEST := $(CURDIR)/sdk-python/microsandbox/microsandbox-guest
PY_WHEELS_DEV := $(CURDIR)/target/wheels-py-dev
PY_DIST := $(CURDIR)/target/dist/python
# Debian 12 has glibc 2.36 and no zig or docker, so the wheel is built on
# the host; its symbols need up to GLIBC_2.34 (maturin's audit rejects
# manylinux_2_28), so it is tagged manylinux_2_34.
PY_COMPAT ?= manylinux_2_34
MATURIN := $(PY_VENV)/bin/maturin
# PROFILE=release (as for every SDK's dist target) builds with cargo's
# release profile; anything else, the dev profile.
PY_PROFILE = $(if $(filter release,$(PROFILE)),release,dev)

.PHONY: test-python dist-python bench-python py-setup py-guest-assets py-wheel-dev

py-setup:
	@scripts/setup-python.sh $(PY_VENV)

# The guest assets ride in the wheel as microsandbox/microsandbox-guest/,
# next to the extension module, where the core looks for them.
py-guest-assets: setup
	@rm -rf $(PY_GUEST) && mkdir -p $(PY_GUEST)
	@cd $(CURDIR)/target/runtime && cp -a $$(ls -d vmlinux vmlinuz modules modules.order modules.builtin msb-guest-init msb-netd version 2>/dev/null) $(PY_GUEST)/

py-wheel-dev: py-setup py-guest-assets
	rm -rf $(PY_WHEELS_DEV)
	cd sdk-python && nice $(MATURIN) build --profile dev --compatibility $(PY_COMPAT) \
	  --interpreter $(PY_VENV)/bin/python -o $(PY_WHEELS_DEV) --quiet
	$(PY_VENV)/bin/pip install -q --force-reinstall --no-deps $(PY_WHEELS_DEV)/microsandbox-*.whl

test-python: py-wheel-dev
	cd sdk-python && $(PY_VENV)/bin/mypy --strict --config-file pyproject.toml tests/typing_sample.py microsandbox
	cd sdk-python && $(PY_VENV)/bin/pytest -q -p no:cacheprovider tests
	sdk-python/tests/packaging_test.sh $(PY_WHEELS_DEV)/microsandbox-*.whl

dist-python: py-setup py-guest-assets
	rm -rf $(PY_DIST)
	cd sdk-python && nice $(MATURIN) build --profile $(PY_PROFILE) \
	  --compatibility $(PY_COMPAT) --interpreter $(PY_VENV)/bin/python -o $(PY_DIST) --quiet
	@ls -l $(PY_DIST)

bench-python: setup bench-sdk-baseline
	$(MAKE) --no-print-directory dist-python PROFILE=release
	$(PY_VENV)/bin/pip install -q --force-reinstall --no-deps $(PY_DIST)/microsandbox-*.whl
	$(PY_VENV)/bin/python bench/python/bench.py --baseline $(BENCH_SDK_BASELINE) --data $(BENCH_SDK_DATA) --json $(BENCH_SDK_OUT)/python.json

# Issue 21's Debian python image and networking benchmark.
# `make image-debian` builds local/debian-python:bookworm's OCI archive with
# mmdebstrap from deb.debian.org (scripts/build-debian-image.sh), cached in
# target/images by the script's content: `make demo` and `make test` (its
# after-pip-install flow, core/tests/pip_flow_e2e.rs) build it once per
# machine. These two targets, and that test's `pip install` from PyPI, are
# the ones that reach the internet (the Debian mirror and PyPI), as the host
# does; no image is pulled from a registry.
# `make bench-net`: boot to first exec with networking on (`public`) beside
# off (`none`), and a 100 MB download in the guest beside curl on the host
# (bench/src/net.rs).
.PHONY: image-debian bench-net

image-debian:
	@scripts/build-debian-image.sh >/dev/null

demo test: image-debian

bench-net: setup
	$(CARGO) build --release -p msb-bench --bin bench-net
	TMPDIR=$(TEST_TMP) ./target/release/bench-net --runs 7 --downloads 3

# `make bench-pull`: issue 20's registry figures — a cold pull of a ~100 MB
# image beside `skopeo copy docker://… dir:…` of it in the same run, and a
# re-pull of a present image (bench/src/pull.rs). The registry is Debian's
# docker-registry on 127.0.0.1 (scripts/setup-registry.sh installs it).
.PHONY: bench-pull

bench-pull: setup
	$(CARGO) build --release -p msb-bench --bin bench-pull
	TMPDIR=$(TEST_TMP) ./target/release/bench-pull --runs 5

# Issue 22's concurrency suites at full length. `make test` already runs
# them briefly (cargo test --workspace: cli/tests/concurrency.rs with an
# 8 s storm and one image-rm race, core/tests/concurrency_e2e.rs,
# core/tests/limits.rs). `make test-concurrency` runs the storm for 60 s
# and twelve image-rm races (delays cycling through the race window).
.PHONY: test-concurrency

test-concurrency: setup
	mkdir -p $(TEST_TMP)
	TMPDIR=$(TEST_TMP) MSB_IMPLICIT_PULL=0 \
	MSB_CONC_SECONDS=60 MSB_CONC_ROUNDS=12 \
		$(CARGO) test -p msb-cli --test concurrency -- --nocapture
	TMPDIR=$(TEST_TMP) MSB_IMPLICIT_PULL=0 \
		$(CARGO) test -p microsandbox --test concurrency_e2e --test limits -- --nocapture

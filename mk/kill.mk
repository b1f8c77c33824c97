# Issue 22, point 2: kill -9 anywhere (harden/, docs/crash-safety.md).
# `make kill-test`: the full run, 100 killed runs of every operation, ending
# with a table (op / runs / kills before first output / violations / wall
# time). `make kill-smoke` (2 runs per operation, part of `make test`
# through HARDEN_TESTS). KILL_SEED=<n> replays a run's kill points; the
# seed is printed at the start and on every violation.
KILL_SEED ?=
kill_args = --msb ./target/debug/msb $(if $(KILL_SEED),--seed $(KILL_SEED),)

HARDEN_TESTS += kill-smoke

.PHONY: kill-test kill-smoke kill-harness

# The msb under test is the one of the workspace's test build: `make test`
# has just built it (this is then a no-op), whereas building msb-cli alone
# resolves other dependency features and compiles the core again (~1 min).
kill-harness:
	nice $(CARGO) build -p msb-harden
	nice $(CARGO) test --workspace --no-run --quiet

kill-test: setup kill-harness
	mkdir -p $(TEST_TMP)
	TMPDIR=$(TEST_TMP) nice -n 10 ./target/debug/kill-harness $(kill_args) --runs 100

kill-smoke: kill-harness
	mkdir -p $(TEST_TMP)
	TMPDIR=$(TEST_TMP) ./target/debug/kill-harness $(kill_args) --runs 2 --measure 1

# Issue 22, point 4: a guest cannot hurt its host. `make test` runs
# core/tests/guest_abuse.rs with the other Rust suites (80 MiB of stdout);
# `make guest-abuse` runs it with its ignored case too: a whole GiB to a
# buffered and to a streamed exec (TCG moves ~7 MiB/s on a loaded
# 2-core machine: ~7 minutes in all).
.PHONY: guest-abuse

guest-abuse: setup
	mkdir -p $(TEST_TMP)
	TMPDIR=$(TEST_TMP) $(CARGO) test -p microsandbox --test guest_abuse -- --include-ignored --nocapture

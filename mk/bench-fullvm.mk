# `make bench-fullvm`: the full-VM snapshot figures of issue 19 (save,
# restore to first exec, 10 forks, instant create, RAM file size, PSS of 20
# live forks), each beside a cold boot measured in the same run
# (bench/src/fullvm.rs). Also part of `make bench`.
.PHONY: bench-fullvm

bench-fullvm: setup
	$(CARGO) build --release -p msb-bench --bin bench-fullvm
	TMPDIR=$(TEST_TMP) ./target/release/bench-fullvm --runs 5 --forks 20

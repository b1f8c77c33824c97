# `make bench-sdk`: the three SDK benchmarks (bench-go, bench-ts,
# bench-python, each against the release build) one after another, on one
# data directory made once by bench-sdk-baseline, then one table of every
# SDK's measures beside Rust's from the same run (bench/sdk_table.py).
# Each bench-<sdk> target writes its medians to $(BENCH_SDK_OUT)/<sdk>.json.
BENCH_SDK_DATA := $(CURDIR)/bench/data/sdk
BENCH_SDK_OUT := $(CURDIR)/target/bench-sdk
BENCH_SDK_BASELINE := $(CURDIR)/target/release/bench-sdk-baseline

.PHONY: bench-sdk bench-sdk-baseline

bench-sdk-baseline:
	nice $(CARGO) build --release -p msb-bench --bin bench-sdk-baseline
	mkdir -p $(BENCH_SDK_OUT) $(BENCH_SDK_DATA)

bench-sdk:
	rm -f $(BENCH_SDK_OUT)/*.json
	status=0; for t in bench-go bench-ts bench-python; do \
	  $(MAKE) --no-print-directory $$t || status=1; \
	done; \
	echo; echo "SDK benchmarks (medians; each SDK beside Rust in the same run; targets: SDK.md \"Speed\")"; \
	python3 bench/sdk_table.py $(BENCH_SDK_OUT)/go.json $(BENCH_SDK_OUT)/ts.json $(BENCH_SDK_OUT)/python.json || status=1; \
	exit $$status

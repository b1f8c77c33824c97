# The TypeScript SDK (sdk-ts/, addon bindings/node/): `make test-ts` builds
# the addon (dev profile, shared with the Rust tests), type-checks and
# compiles the package and its tests, runs them with `node --test`, then
# installs the npm tarballs into an empty project outside the checkout and
# runs the typical flow there. `make dist-ts [PROFILE=release]` writes the
# tarballs to target/dist/ts/; `make bench-ts` runs the benchmarks against
# the release build beside the Rust ones.
SDK_TESTS += test-ts
TS_SDK := $(CURDIR)/sdk-ts
TS_ADDON := $(TS_SDK)/npm/linux-x64-gnu/microsandbox.linux-x64-gnu.node
TS_DIST := $(CURDIR)/target/dist/ts
PROFILE ?= dev
TS_PROFILE_DIR = $(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

.PHONY: test-ts dist-ts bench-ts ts-addon ts-build

ts-addon:
	@scripts/setup-ts.sh
	nice $(CARGO) build -p microsandbox-node --profile $(PROFILE)
	cp target/$(TS_PROFILE_DIR)/libmicrosandbox_node.so $(TS_ADDON)

ts-build: ts-addon
	cd $(TS_SDK) && rm -rf dist dist-test && npx tsc -p tsconfig.json && npx tsc -p tsconfig.test.json

test-ts: ts-build
	cd $(TS_SDK) && RUST_BACKTRACE=0 node --test dist-test/test/*.test.js
	$(MAKE) --no-print-directory dist-ts PROFILE=$(PROFILE)
	$(TS_SDK)/package-test/run.sh $(TS_DIST)

dist-ts: ts-build
	$(TS_SDK)/scripts/stage.sh target/$(TS_PROFILE_DIR)/libmicrosandbox_node.so $(MSB_KERNEL_DIR) $(TS_DIST)

bench-ts: bench-sdk-baseline
	$(MAKE) --no-print-directory ts-build PROFILE=release
	node bench/ts/bench.js --baseline $(BENCH_SDK_BASELINE) --data $(BENCH_SDK_DATA) --json $(BENCH_SDK_OUT)/ts.json

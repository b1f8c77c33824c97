# The Go SDK (sdk-go over bindings/c). `make test` runs test-go; dist-go
# writes the installable module directory target/dist/go (PROFILE=release
# for what we publish); bench-go runs bench/go against the release build.
# The second test run is built with GOEXPERIMENT=cgocheck2: the modern
# spelling of GODEBUG=cgocheck=2 (which Go >= 1.21 refuses at run time).
GO := $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
GO_SDK := $(CURDIR)/sdk-go
GO_DIST := $(CURDIR)/target/dist/go
go_profile = $(if $(filter release,$(PROFILE)),release,debug)
go_cargo_flags = $(if $(filter release,$(PROFILE)),--release,)

SDK_TESTS += test-go

.PHONY: go-native test-go dist-go bench-go go-header-check

# The static library and the guest assets, where the module's cgo flags
# and its asset registration look for them (both gitignored).
go-native:
	@scripts/setup-go.sh
	nice $(CARGO) build -p microsandbox-c $(go_cargo_flags)
	mkdir -p $(GO_SDK)/lib/linux_amd64
	cp target/$(go_profile)/libmicrosandbox_c.a $(GO_SDK)/lib/linux_amd64/
	rm -rf $(GO_SDK)/microsandbox-guest && mkdir -p $(GO_SDK)/microsandbox-guest
	cp -r $(MSB_KERNEL_DIR)/. $(GO_SDK)/microsandbox-guest/

# The checked-in header equals a fresh cbindgen generation, and a
# deliberately drifted copy is caught.
go-header-check:
	bindings/c/generate-header.sh --check
	mkdir -p target/c-header
	sed 's/msb_snapshot_open/msb_snapshot_opened/' bindings/c/include/microsandbox.h > target/c-header/drifted.h
	@if bindings/c/generate-header.sh --check target/c-header/drifted.h >/dev/null 2>&1; then \
	  echo "header drift check: a drifted header was NOT caught" >&2; exit 1; \
	else echo "header drift check: a drifted header is caught"; fi

test-go: go-native go-header-check
	cd sdk-go && unformatted="$$($(dir $(GO))gofmt -l .)" && test -z "$$unformatted" || { echo "gofmt: $$unformatted" >&2; exit 1; }
	cd sdk-go && $(GO) vet ./...
	cd sdk-go && $(GO) test -count=1 ./...
	cd sdk-go && GOEXPERIMENT=cgocheck2 $(GO) test -count=1 ./...
	$(MAKE) --no-print-directory dist-go
	sdk-go/packaging-test.sh $(GO_DIST)

# The module as a user gets it: sources (no tests), header, static
# library for linux/amd64, guest assets.
dist-go: go-native
	rm -rf $(GO_DIST) && mkdir -p $(GO_DIST)/include $(GO_DIST)/lib/linux_amd64
	cd sdk-go && cp go.mod README.md $$(ls *.go | grep -v '_test\.go$$') $(GO_DIST)/
	mkdir -p $(GO_DIST)/internal/packaging/flow
	cp sdk-go/internal/packaging/flow/main.go $(GO_DIST)/internal/packaging/flow/
	cp bindings/c/include/microsandbox.h $(GO_DIST)/include/
	cp sdk-go/lib/linux_amd64/libmicrosandbox_c.a $(GO_DIST)/lib/linux_amd64/
	cp -r sdk-go/microsandbox-guest $(GO_DIST)/
	@echo "dist-go: $(GO_DIST) ($(go_profile))"

bench-go:
	$(MAKE) --no-print-directory go-native PROFILE=release
	nice $(CARGO) build --release -p msb-bench --bin bench-sdk-baseline
	cd bench/go && $(GO) run . --baseline $(CURDIR)/target/release/bench-sdk-baseline --data $(CURDIR)/bench/data/go

# anneal — build, test, benchmark, lint and demo.
GO          ?= go
BIN         ?= bin/anneal
SITE        ?= examples/site-repo
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 60s

.PHONY: build test unit lint fmt-check vet staticcheck bench fuzz demo clean

# A static binary (no cgo): the same file runs as the daemon and, served
# to installed nodes at /agent/anneal, as `anneal agent`. It is stamped with
# `git describe` (anneal --version, /api/v1/status, anneal_build_info).
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null)
build:
	CGO_ENABLED=0 $(GO) build $(if $(VERSION),-ldflags "-X main.versionOverride=$(VERSION)") -o $(BIN) ./cmd/anneal

# The whole suite CI runs: format, vet, staticcheck, then every test with the
# race detector (the fuzz targets' checked-in seed corpora run as tests).
test: lint unit

unit:
	$(GO) test -race -count=1 -timeout 30m ./...

lint: fmt-check vet staticcheck

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

# Benchmarks: Go benchmarks, then the 10,000-node validation comparison
# against the CUE CLI (see bench/README.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) run ./bench/validate -nodes 10000

fuzz:
	$(GO) test ./schema -run '^$$' -fuzz FuzzLoad -fuzztime $(FUZZTIME) -fuzzminimizetime 5s

# The main job on embedded defaults: the example site converged against
# the simulated lab (anneal lab), then a patch set bump rolled out and
# reverted. Needs only Go (git is go-git inside the demo program). The
# dashboard's address is printed when serve starts; KEEP=1 leaves serve and
# the lab running at the end, with the dashboard, until Ctrl-C.
demo: build
	$(GO) run ./examples/demo -anneal $(BIN) -site $(SITE)$(if $(KEEP), -keep)

clean:
	rm -rf bin

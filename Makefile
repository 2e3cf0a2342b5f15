# anneal — build, test, benchmark, lint and demo.
GO          ?= go
BIN         ?= bin/anneal
SITE        ?= examples/site-repo
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 60s

.PHONY: build test unit lint fmt-check vet staticcheck bench fuzz demo clean

build:
	$(GO) build -o $(BIN) ./cmd/anneal

# The whole suite CI runs: format, vet, staticcheck, then every test with the
# race detector (the fuzz targets' checked-in seed corpora run as tests).
test: lint unit

unit:
	$(GO) test -race -count=1 ./...

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

# The main job on embedded defaults. Today: build, validate the example
# site and print what it compiles to (addresses, DNS zones). Converging it
# against the simulated lab comes with the lab; converging real BIND and
# PowerDNS is `anneal apply` (see README).
demo: build
	@echo "== anneal validate --site $(SITE)"
	@$(BIN) validate --site $(SITE)
	@echo
	@echo "== anneal nodes --site $(SITE)   (addresses derived from each node's hostIndex)"
	@$(BIN) nodes --site $(SITE)
	@echo
	@echo "== anneal dns export --site $(SITE)   (the records anneal would keep in each zone)"
	@$(BIN) dns export --site $(SITE) --out bin/zones
	@echo "-- bin/zones/west.example.net.zone (head)"
	@head -12 bin/zones/west.example.net.zone
	@echo
	@echo "== a broken site: every finding, with file:line:column, and nothing applied"
	@$(BIN) validate --site examples/broken-sites/duplicate-mac || echo "(exit code $$?: invalid)"

clean:
	rm -rf bin

# Gatehouse: the two commands are `make run` and `make test`.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
PKGS      := ./...
FUZZTIME  ?= 10s
BENCHTIME ?= 1s

.PHONY: all build run demo test unit fmt-check vet fuzz e2e bench clean

all: build

build: $(BIN)/gatehouse $(BIN)/gatehousectl

$(BIN)/gatehouse: FORCE
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $@ ./cmd/gatehouse

$(BIN)/gatehousectl: FORCE
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $@ ./cmd/gatehousectl

FORCE:

## run: the demo (JWKS on loopback, a few decisions), then the server keeps serving until Ctrl-C.
run: build
	./scripts/demo.sh --serve

## demo: the same decisions, then exit.
demo: build
	./scripts/demo.sh

## test: everything CI runs.
test: fmt-check vet unit fuzz

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

## unit: unit, Rego, OPA-Envoy compatibility and end-to-end tests (test/ builds and runs the binaries), with the race detector.
unit:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -run '^TestAllocationBudget$$' ./authz/

## fuzz: a short run of each fuzz target.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./authz/jwt/
	$(GO) test -run '^$$' -fuzz '^FuzzResolve$$' -fuzztime $(FUZZTIME) ./authz/clientip/
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./authz/
	$(GO) test -run '^$$' -fuzz '^FuzzNativeMatchesRego$$' -fuzztime $(FUZZTIME) ./authz/

e2e:
	$(GO) test -count=1 -v ./test/...

## bench: benchmarks, each a ratio against a baseline measured in the same run (see docs/operations.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./policy/... ./authz/... | awk -f scripts/benchratio.awk

clean:
	rm -rf $(BIN)

# Gatehouse: the two commands are `make run` and `make test`.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -s -w -X github.com/gatehouse-dev/gatehouse/internal/version.version=$(VERSION) -X github.com/gatehouse-dev/gatehouse/internal/version.revision=$(REVISION)
PKGS      := ./...
BENCHTIME ?= 1s
# The forward-auth end-to-end tests run real proxies: NGINX from the Debian
# package, Caddy built with `go install` at a pinned version into a cache dir.
CADDY_VERSION ?= v2.11.9
TOOLS_DIR     ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/gatehouse-tools
CADDY         := $(TOOLS_DIR)/caddy-$(CADDY_VERSION)/caddy

.PHONY: all build run demo test unit fmt-check vet fuzz e2e bench soak clean proxies nginx caddy

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
test: fmt-check vet proto-check proxies unit fuzz test-deploy observability-check test-image

## proxies: the real proxies the forward-auth end-to-end tests drive. Where
## they cannot be installed, those tests skip (CI sets GATEHOUSE_REQUIRE_PROXIES=1
## so that they fail instead).
proxies: nginx caddy

nginx:
	@if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing nginx-light for the forward-auth tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends nginx-light || \
		{ apt-get update && apt-get install -y --no-install-recommends nginx-light; } || \
		echo "WARNING: nginx could not be installed: the NGINX forward-auth tests will skip"; \
	else \
		echo "WARNING: nginx is missing and cannot be installed here (needs root and apt-get): the NGINX forward-auth tests will skip"; \
	fi

caddy: $(CADDY)

$(CADDY):
	@mkdir -p $(dir $@)
	GOBIN=$(dir $@) $(GO) install github.com/caddyserver/caddy/v2/cmd/caddy@$(CADDY_VERSION) || \
		echo "WARNING: caddy $(CADDY_VERSION) could not be built: the Caddy forward-auth tests will skip"

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

## unit: unit, Rego, OPA-Envoy compatibility and end-to-end tests (test/ builds and runs the binaries), with the race detector.
unit:
	GATEHOUSE_CADDY=$(CADDY) $(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -run '^TestAllocationBudget$$' ./authz/

## fuzz: a short run of each fuzz target. The budgets are counts of executions (about 10 s each on a
## 2-CPU machine), not durations: Go 1.26's fuzzing coordinator can fail a target with a bare "context
## deadline exceeded" when a -fuzztime duration ends while a worker is busy (golang/go#75804, fixed in
## Go 1.27), which a loaded CI machine hits; a count has no deadline to race.
FUZZ_VERIFY     ?= 50000x
FUZZ_RESOLVE    ?= 400000x
FUZZ_CHECK      ?= 30000x
FUZZ_NATIVE     ?= 5000x
FUZZ_MATCHER    ?= 20000x
FUZZ_JSON       ?= 80000x
FUZZ_SUBREQUEST ?= 40000x
FUZZ_PARSE      ?= 60000x
FUZZ_AUTHZ      ?= 10000x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZ_VERIFY) ./authz/jwt/
	$(GO) test -run '^$$' -fuzz '^FuzzParseFast$$' -fuzztime $(FUZZ_PARSE) ./authz/jwt/
	$(GO) test -run '^$$' -fuzz '^FuzzResolve$$' -fuzztime $(FUZZ_RESOLVE) ./authz/clientip/
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZ_CHECK) ./authz/
	$(GO) test -run '^$$' -fuzz '^FuzzNativeMatchesRego$$' -fuzztime $(FUZZ_NATIVE) ./authz/
	$(GO) test -run '^$$' -fuzz '^FuzzMatcher$$' -fuzztime $(FUZZ_MATCHER) ./policy/
	$(GO) test -run '^$$' -fuzz '^FuzzAppendJSONString$$' -fuzztime $(FUZZ_JSON) ./authz/
	$(GO) test -run '^$$' -fuzz '^FuzzSubrequest$$' -fuzztime $(FUZZ_SUBREQUEST) ./authz/forwardauth/
	$(GO) test -run '^$$' -fuzz '^FuzzAuthorizationMatchesRego$$' -fuzztime $(FUZZ_AUTHZ) ./policy/

e2e: proxies
	GATEHOUSE_CADDY=$(CADDY) $(GO) test -count=1 -v ./test/...

## bench: per-stage Go benchmarks (ratios to a baseline of the same run), then the end-to-end harness:
## Gatehouse beside a no-op ext_authz server, and OPA-Envoy with OPA_ENVOY=<binary> (see docs/performance.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./policy/... ./authz/... | awk -f scripts/benchratio.awk
	$(GO) run ./test/bench

## soak: the real server under steady load (not in CI): SOAK_DURATION (default 10m), SOAK_RATE
## (default half the measured maximum, at most 500/s), SOAK_RELOAD_EVERY (default 1m). Fails on any
## error or wrong decision; prints latency, VmRSS and threads (figures in docs/operations.md).
SOAK_DURATION     ?= 10m
SOAK_RELOAD_EVERY ?= 1m
soak:
	GATEHOUSE_SOAK=1 SOAK_DURATION=$(SOAK_DURATION) SOAK_RELOAD_EVERY=$(SOAK_RELOAD_EVERY) SOAK_RATE=$(SOAK_RATE) \
		$(GO) test -count=1 -v -run '^TestSoak$$' -timeout 0 ./test/

clean:
	rm -rf $(BIN)

.PHONY: test-deploy test-k8s

## test-deploy: the manifests under deploy/, in their own Go module (test/deploy): every file decodes
## strictly into its Kubernetes, Istio, Gateway API or Envoy type, kustomize builds, cross-references hold.
test-deploy:
	cd test/deploy && $(GO) vet ./... && $(GO) vet -tags k8s ./... && $(GO) test -count=1 ./...

## test-k8s: a real etcd and kube-apiserver on loopback accept every rendered manifest with server-side
## dry-run. The binaries are built once by scripts/k8s-binaries.sh into $${XDG_CACHE_HOME:-~/.cache}/gatehouse-k8s.
test-k8s:
	@set -e; bins=$$(GO=$(GO) ./scripts/k8s-binaries.sh); eval "$$bins"; \
	cd test/deploy && ETCD="$$ETCD" KUBE_APISERVER="$$KUBE_APISERVER" \
	$(GO) test -tags k8s -count=1 -timeout 20m -run '^TestServerSideDryRun$$' ./...

## proto: regenerate the admin API's Go code (proto/**/*.pb.go) with buf (buf.yaml, buf.gen.yaml)
## and the pinned generators, all built with `go install` into bin/tools: no system protoc (buf
## compiles the .proto files itself and carries the well-known types). The first run builds buf
## (a few minutes); later runs reuse bin/tools.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
TOOLS := $(CURDIR)/$(BIN)/tools
BUF   := $(TOOLS)/buf

.PHONY: proto proto-tools proto-check observability-check

# go-tool BINARY PACKAGE VERSION: install PACKAGE@VERSION into $(TOOLS) unless
# $(TOOLS)/BINARY already reports VERSION (the last word of `BINARY --version`).
define go-tool
	@v=$$("$(TOOLS)/$(1)" --version 2>/dev/null | awk '{print $$NF}'); \
	if [ "$${v#v}" = "$(patsubst v%,%,$(3))" ]; then exit 0; fi; \
	echo "installing $(2)@$(3) into $(TOOLS)"; \
	GOBIN="$(TOOLS)" $(GO) install $(2)@$(3)
endef

## proto-tools: buf, protoc-gen-go and protoc-gen-go-grpc at the pinned versions (each installed only
## when bin/tools lacks that version).
proto-tools:
	$(call go-tool,buf,github.com/bufbuild/buf/cmd/buf,$(BUF_VERSION))
	$(call go-tool,protoc-gen-go,google.golang.org/protobuf/cmd/protoc-gen-go,$(PROTOC_GEN_GO_VERSION))
	$(call go-tool,protoc-gen-go-grpc,google.golang.org/grpc/cmd/protoc-gen-go-grpc,$(PROTOC_GEN_GO_GRPC_VERSION))

proto: proto-tools
	$(BUF) generate

## proto-check: the committed generated code is what `make proto` produces: buf generates into a
## temporary directory (the work tree is not touched) and every file must match, none be missing.
proto-check: proto-tools
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(BUF) generate -o "$$tmp"; \
	(cd "$$tmp" && find proto -name '*.pb.go' | sort) > "$$tmp/generated.list"; \
	find proto -name '*.pb.go' | sort > "$$tmp/committed.list"; \
	if ! cmp -s "$$tmp/committed.list" "$$tmp/generated.list"; then \
		echo "the generated files in proto/ are not the ones make proto writes (run make proto, remove stale files, commit):"; \
		diff "$$tmp/committed.list" "$$tmp/generated.list" || true; exit 1; fi; \
	for f in $$(cat "$$tmp/generated.list"); do \
		if ! cmp -s "$$tmp/$$f" "$$f"; then \
			echo "$$f differs from what make proto generates from proto/ (run make proto and commit):"; \
			diff -u "$$f" "$$tmp/$$f" | head -40; exit 1; fi; \
	done; \
	echo "proto-check: $$(wc -l < "$$tmp/generated.list") generated files match proto/"

## observability-check: the dashboards and alert rules in deploy/observability
## parse and name only metrics a real /metrics scrape exposes (a test-only module).
observability-check:
	cd test/observability && $(GO) test -count=1 ./...

.PHONY: image image-push release test-image

## image: the container image, an OCI image layout in bin/image: an index over linux/amd64 and
## linux/arm64, built from static binaries with no Docker daemon and no base image by tools/image (a Go
## module of its own). Two builds of one commit have one digest, printed last (docs/releasing.md).
IMAGE_PLATFORMS   ?= linux/amd64,linux/arm64
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_ARGS = --repo $(CURDIR) --version $(VERSION) --revision "$(REVISION)" --created $(SOURCE_DATE_EPOCH) \
	--ldflags "$(LDFLAGS)" --platforms $(IMAGE_PLATFORMS)
image:
	cd tools/image && GO=$(GO) $(GO) run . image $(IMAGE_ARGS) --out $(CURDIR)/$(BIN)/image

## image-push: push the image index: make image-push IMAGE=registry.example.com/gatehouse:TAG
## (credentials from the default keychain: docker login, credential helpers).
image-push:
	@[ -n "$(IMAGE)" ] || { echo "usage: make image-push IMAGE=registry.example.com/gatehouse:TAG"; exit 2; }
	$(MAKE) --no-print-directory image
	cd tools/image && $(GO) run . push --layout $(CURDIR)/$(BIN)/image $(IMAGE)

## release: bin/release: binaries for linux and darwin (amd64, arm64), SHA256SUMS, an SBOM per binary,
## the image as an OCI archive, the packaged Helm chart (docs/releasing.md).
release:
	cd tools/image && GO=$(GO) $(GO) run . release $(IMAGE_ARGS) --out $(CURDIR)/$(BIN)/release

## test-image: build the image twice (same digest), push and pull it through an in-process registry,
## run its entrypoint as 65532 on a read-only root and check it with its own gatehousectl; the SBOMs.
test-image:
	cd tools/image && $(GO) vet ./... && GATEHOUSE_LDFLAGS="$(LDFLAGS)" $(GO) test -count=1 -timeout 20m ./...

# ccproxy — make targets. `make run` starts a local gateway, `make test` runs
# every check CI runs. Both find or start Postgres and Redis first
# (scripts/services.sh).

SHELL        := /bin/bash
GO           ?= go
# Releases are tags vMAJOR.MINOR.PATCH (CHANGELOG.md); between tags the
# version is git describe's v0.1.0-3-gabc1234, or v0.0.0-<commit> before
# the first tag; -dirty marks uncommitted changes. `ccproxy version` prints it.
VERSION      ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null) && echo $$v || echo v0.0.0-$$(git describe --always --dirty 2>/dev/null || echo dev))
COMMIT       ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS      := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
TOOLS_HASH   := $(shell cat tools/go.mod tools/go.sum | sha256sum | cut -c1-12)
TOOLS_BIN    ?= $(HOME)/.cache/ccproxy/tools-$(TOOLS_HASH)
STATICCHECK  := $(TOOLS_BIN)/staticcheck
LOCAL_KMS    := $(TOOLS_BIN)/local-kms
TEST_FLAGS   ?= -race -count=1 -timeout 20m
# 1 s per benchmark keeps `make bench` to a few minutes on the 2-core machine;
# raise BENCH_TIME (or -count) for less noisy numbers.
BENCH_TIME   ?= 1s
BENCH_FLAGS  ?= -run '^$$' -bench . -benchmem -count 1 -benchtime $(BENCH_TIME) -timeout 15m

export CCPROXY_LOCAL_KMS := $(LOCAL_KMS)
# The fault-injection tests start their own Postgres and Redis servers; when
# a server binary is missing they fail instead of skipping, so a broken
# install can never turn them into silent skips (scripts/services.sh
# installs both on Debian).
export CCPROXY_REQUIRE_FAULT_TESTS := 1

.PHONY: all build run test lint vet services tools bench bench-anchor clean e2e-deps e2e-releases mutate soak dashboard dashboard-check browser-deps dashboard-perf image

all: build

build: dashboard ## build bin/ccproxy (with the dashboard) and bin/ccproxy-statusline
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ccproxy ./cmd/ccproxy
	$(GO) build -o bin/ccproxy-statusline ./cmd/ccproxy-statusline

# The container image without a Docker daemon: the static binary (with the
# dashboard) in an OCI image layout, bin/image, and a tarball for
# `docker load` / `kind load image-archive`, bin/ccproxy-image.tar, tagged
# $(IMAGE_TAG). The Dockerfile builds the same image where Docker is at hand.
IMAGE_ARCH ?= $(shell $(GO) env GOARCH)
IMAGE_TAG  ?= ccproxy:dev
image: dashboard ## container image: bin/image (OCI layout) and bin/ccproxy-image.tar; prints its digest
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o bin/image-rootfs/ccproxy ./cmd/ccproxy
	$(GO) run ./cmd/ccproxy-image -binary bin/image-rootfs/ccproxy -arch $(IMAGE_ARCH) -version $(VERSION) -revision $(COMMIT) \
		-out bin/image -tar bin/ccproxy-image.tar -tag $(IMAGE_TAG)

run: services build ## the whole gateway on 127.0.0.1:8080 (ccproxy dev); prints the lines for Claude Code
	bin/ccproxy dev

services: ## find or start Postgres and Redis (installing them on Debian when root)
	@bash scripts/services.sh ccproxy

# Tool binaries are cached outside the work tree, keyed by tools/go.sum, so a
# fresh clone (CI) reuses them.
$(STATICCHECK) $(LOCAL_KMS): tools/go.mod tools/go.sum
	@mkdir -p $(TOOLS_BIN)
	cd tools && $(GO) build -o $(TOOLS_BIN)/ honnef.co/go/tools/cmd/staticcheck github.com/nsmithuk/local-kms

tools: $(STATICCHECK) $(LOCAL_KMS)

# Our packages: an npm package under dashboard/node_modules may carry Go
# files of its own (eslint's dependency flatted does), which ./... matches.
GO_PACKAGES = $(shell $(GO) list ./... | grep -v /node_modules/)

vet:
	$(GO) vet $(GO_PACKAGES)

lint: vet $(STATICCHECK) ## go vet + staticcheck
	$(STATICCHECK) $(GO_PACKAGES)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The end-to-end tests install Claude Code with npm (cached in ~/.cache/ccproxy/e2e).
e2e-deps:
	@command -v npm >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; } || \
		{ echo "npm is required for the end-to-end tests (apt-get install npm)"; exit 1; }

test: services tools lint e2e-deps dashboard dashboard-check browser-deps ## everything CI runs: lint, unit, fuzz seeds, integration, end to end, dashboard in a browser
	CCPROXY_REQUIRE_BROWSER_TESTS=1 $(GO) test $(TEST_FLAGS) $(GO_PACKAGES)

# Every Claude Code release of test/e2e/internal/claudecode/releases.txt
# (one a month over the last year, and the releases whose requests changed)
# through Plan, Bedrock and the Plan-429 fallback; `make test` runs only
# the releases marked ci there. Releases are installed once into
# ~/.cache/ccproxy/e2e (docs/claude-code.md).
e2e-releases: services e2e-deps ## every Claude Code release of the last year end to end (a few minutes)
	CCPROXY_E2E_RELEASES=all $(GO) test -count=1 -timeout 40m -run '^TestClaudeCodeReleases$$' -v ./test/e2e/

# The admin dashboard (dashboard/): React + TypeScript, built by Vite into
# dashboard/dist, which go:embed puts into the binary. A plain `go build` of
# a clean clone embeds a placeholder page instead (dashboard/embed.go).
# npm ci runs when package-lock.json changes; the build when a source does.
DASHBOARD_SRC := $(shell find dashboard/src dashboard/index.html dashboard/vite.config.ts dashboard/tsconfig.json dashboard/scripts -type f 2>/dev/null)

dashboard: dashboard/dist/index.html ## build the admin dashboard into dashboard/dist

dashboard/node_modules/.ci-stamp: dashboard/package-lock.json dashboard/package.json
	@$(MAKE) --no-print-directory e2e-deps
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||a===20&&b<19) { console.error("the dashboard needs Node.js >= 20.19 (have "+process.versions.node+")"); process.exit(1) }'
	cd dashboard && npm ci --no-audit --no-fund
	@touch $@

dashboard/dist/index.html: dashboard/node_modules/.ci-stamp $(DASHBOARD_SRC)
	cd dashboard && npm run build

dashboard-check: dashboard/node_modules/.ci-stamp ## ESLint, TypeScript and the vitest tests of the dashboard
	cd dashboard && npm run lint && npm run typecheck && npm test

# The browser tests (test/e2e/dashboard_test.go) drive Debian's chromium
# with playwright-core; never a browser download of a test tool.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		{ echo "chromium is required for the dashboard's browser tests (apt-get install chromium)"; exit 1; }

# The chaos soak (test/e2e/soak): mixed traffic through extproc, admin and
# the control plane as separate processes on their own Postgres and Redis
# while they are killed and restarted at random; `make test` runs it for
# 60 s. SOAK_SEED=<seed printed by a run> replays its schedule;
# SOAK_REPORT=<file> also writes the summary there.
SOAK_DURATION ?= 10m
SOAK_TIMEOUT  ?= 60m
soak: services ## chaos soak for SOAK_DURATION (default 10m); summary in the output (docs/reliability.md)
	SOAK_DURATION=$(SOAK_DURATION) $(GO) test -count=1 -timeout $(SOAK_TIMEOUT) -run '^TestSoak$$' -v ./test/e2e/soak/

# Breaks, one at a time, each condition listed in test/mutate/mutations.go
# and runs the owning package's tests: every mutation must be caught.
mutate: services tools ## mutation check of the conditions correctness rests on (a few minutes)
	$(GO) run ./test/mutate

# Go benchmarks (go test runs them one package at a time), then the extproc
# server's CPU per request measured by the project's Envoy-playing driver,
# cmd/extproc-bench (scripts/bench-extproc.sh; BENCH_DURATION, BENCH_REPEAT,
# BENCH_CONCURRENCY, BENCH_PIN tune it, BENCH_SERVERS compares servers).
bench: services tools ## Go benchmarks + extproc CPU per request (numbers go to docs/performance.md)
	$(GO) test $(BENCH_FLAGS) $(GO_PACKAGES)
	GO='$(GO)' bash scripts/bench-extproc.sh

# ccproxy against Envoy AI Gateway's ext_proc server, interleaved, by the same
# driver (docs/performance.md says how to build AIGW_EXTPROC).
bench-anchor: ## extproc CPU per request against Envoy AI Gateway's (AIGW_EXTPROC=path/to/its/extproc)
	@test -n "$(AIGW_EXTPROC)" || { echo "set AIGW_EXTPROC to Envoy AI Gateway's extproc binary (docs/performance.md)"; exit 2; }
	bash scripts/bench-anchor.sh -p $(AIGW_EXTPROC)

# The dashboard on 5 million usage events: first load after login in
# chromium, every API call of the pages, the first page's gzip bytes
# (scripts/dashboard-perf.sh; builds the benchmark database once, minutes).
dashboard-perf: services build browser-deps ## dashboard speed on 5M usage events (numbers go to docs/performance.md)
	bash scripts/dashboard-perf.sh

clean:
	rm -rf bin dashboard/node_modules
	find dashboard/dist -mindepth 1 ! -name .gitkeep -delete 2>/dev/null || true

# Regenerates the Go code for proto/ (committed, so builds and CI need no
# protoc). Needs protoc (Debian: apt-get install protobuf-compiler); the Go
# plugins are the versions pinned in tools/go.mod.
.PHONY: proto
proto: ## regenerate proto/**/*.pb.go
	@mkdir -p $(TOOLS_BIN)
	cd tools && $(GO) build -o $(TOOLS_BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	PATH="$(TOOLS_BIN):$$PATH" protoc -I proto \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		$$(find proto -name '*.proto')

# claudepool: common tasks. `make test` is the command CI runs.

GO          ?= go
CLI_VERSION := 2.1.330
CLI_DIR     := $(CURDIR)/.cli
CLI         := $(CLI_DIR)/node_modules/.bin/claude
BIN         := $(CURDIR)/bin
STATICCHECK := $(BIN)/staticcheck
# The e2e suite finds the pinned CLI through this variable.
export CLAUDEPOOL_CLI ?= $(CLI)

.PHONY: all test unit e2e bench bench-e2e bench-load cli demo lint fmt vet staticcheck cover tidy soak fuzz clean

all: lint test

## test: every test with the race detector, the e2e suite against the real CLI included, and prom/'s
test: cli
	$(GO) test -race -count=1 -timeout 20m ./...
	cd prom && $(GO) test -race -count=1 ./...

## unit: the tests that need no real CLI
unit:
	CLAUDEPOOL_SKIP_E2E=1 $(GO) test -race -count=1 ./...
	cd prom && $(GO) test -race -count=1 ./...

## e2e: the real-CLI suite only
e2e: cli
	$(GO) test -race -count=1 -run 'E2E' -v .

## cli: install the pinned Claude Code CLI into .cli/ (no global install)
cli:
	@CLI_VERSION=$(CLI_VERSION) sh scripts/install-cli.sh "$(CLI_DIR)" >/dev/null

## bench: acquire and stream benchmarks against the fake CLI
bench:
	CLAUDEPOOL_SKIP_E2E=1 $(GO) test -run '^$$' -bench . -benchmem -benchtime 2s -count 1 ./...

## bench-e2e: cold, warm, reused and warm-with-model chats with and without the gateway, a 10-turn conversation sticky vs rendered, and an image chat vs a text chat, against the real CLI
bench-e2e: cli
	$(GO) test -run '^$$' -bench '^BenchmarkE2E$$' -benchtime 20x -count 1 .
	$(GO) test -run '^$$' -bench '^BenchmarkE2EImage$$' -benchtime 20x -count 1 .
	$(GO) test -run '^$$' -bench '^BenchmarkE2EConversation$$' -benchtime 3x -count 1 .

## bench-load: 1, 4 and 8 callers chatting back to back against the real CLI, and 1 with held conversations off,
## for CLAUDEPOOL_LOAD_SECONDS (default 20) each, each beside the raw CLI driven directly under the same load
## (CLAUDEPOOL_LOAD_RAW=0 skips that baseline; CLAUDEPOOL_LOAD_RAW_PAUSE=600ms makes its callers pause after each chat;
## CLAUDEPOOL_LOAD_MAX_USES sets the pools' MaxUses)
bench-load: cli
	$(GO) test -run '^$$' -bench 'E2ELoad' -benchtime 1x -count 1 -timeout 30m .

.PHONY: bench-stream-load bench-memory
## bench-stream-load: C callers (CLAUDEPOOL_STREAM_LOAD_CALLERS, default 8,32,64) run conversations of 1-4 turns
## with 1-5 s think times for CLAUDEPOOL_STREAM_LOAD_SECONDS (default 60) each through a warm pool of the real CLI,
## replies of 300-800 tokens streamed at 60-100 tokens/s after a 500 ms first byte, each beside the raw CLI driven
## directly under the same load (CLAUDEPOOL_STREAM_LOAD_RAW=0 skips it; CLAUDEPOOL_STREAM_LOAD_COALESCE sets the
## gateway's delta window)
bench-stream-load: cli
	$(GO) test -run '^$$' -bench '^BenchmarkE2EStreamLoad$$' -benchtime 1x -count 1 -timeout 60m .

## bench-memory: the CLI runtime's memory settings (Bun, mimalloc, JavaScriptCore) A/B, each on a pool of its own:
## private memory and Pss idle and after 20 chats, overhead, stream time and CPU a chat; then one process of the
## raw CLI over 600 chats: its private memory and CPU a chat as it ages
bench-memory: cli
	$(GO) test -run '^$$' -bench '^BenchmarkE2EMemorySettings$$' -benchtime 20x -count 1 -timeout 30m .
	$(GO) test -run '^$$' -bench '^BenchmarkE2EProcessGrowth$$' -benchtime 600x -count 1 -timeout 30m .

## demo: stream a reply from the real CLI against an in-process mock API, with a latency table
demo: cli
	$(GO) run ./examples/demo -cli "$(CLAUDEPOOL_CLI)"

## soak: thousands of chats with random faults against the fake CLI
soak:
	CLAUDEPOOL_SOAK=1 CLAUDEPOOL_SKIP_E2E=1 $(GO) test -race -count=1 -run 'Soak' -timeout 30m -v .

## fuzz: run each fuzz target for a bounded time
fuzz:
	@for t in $$($(GO) test -list '^Fuzz' . | grep '^Fuzz'); do \
		echo "== $$t"; CLAUDEPOOL_SKIP_E2E=1 $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} . || exit 1; \
	done

## lint: gofmt check, go vet, staticcheck, go mod tidy check (the root and prom/ modules)
lint: fmt vet staticcheck tidy

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	cd prom && $(GO) vet ./...

$(STATICCHECK):
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

staticcheck: $(STATICCHECK)
	$(STATICCHECK) ./...
	cd prom && $(STATICCHECK) ./...

tidy:
	@cp go.mod /tmp/claudepool.go.mod.bak; cp go.sum /tmp/claudepool.go.sum.bak; \
	$(GO) mod tidy; \
	if ! git diff --quiet -- go.mod go.sum; then echo "go mod tidy changed go.mod/go.sum"; git diff -- go.mod go.sum; \
		cp /tmp/claudepool.go.mod.bak go.mod; cp /tmp/claudepool.go.sum.bak go.sum; exit 1; fi
	@cd prom && cp go.mod /tmp/claudepool-prom.go.mod.bak; cp go.sum /tmp/claudepool-prom.go.sum.bak; \
	$(GO) mod tidy; \
	if ! git diff --quiet -- go.mod go.sum; then echo "go mod tidy changed prom/go.mod or prom/go.sum"; git diff -- go.mod go.sum; \
		cp /tmp/claudepool-prom.go.mod.bak go.mod; cp /tmp/claudepool-prom.go.sum.bak go.sum; exit 1; fi

## cover: unit tests with a coverage report
cover:
	CLAUDEPOOL_SKIP_E2E=1 $(GO) test -race -count=1 -coverprofile=coverage.out ./...
	$(GO) tool cover -func=coverage.out | tail -n 1

clean:
	rm -rf $(BIN) coverage.out

.PHONY: cluster-demo
## cluster-demo: 3 replicas behind HAProxy (installed from the distribution if
## missing) with consistent hashing on X-Conversation-Key, 30 conversations of
## 5 turns, one replica killed mid-run; stops everything it started.
## Not part of `make test`: it installs packages and runs for minutes.
cluster-demo: cli
	bash examples/cluster/run.sh

.PHONY: bench-tools
AGENT_SDK_DIR := testdata/agentsdk
## bench-tools: a chat that calls a Go tool twice on the real CLI, warm and cold through the pool and
## through the official TypeScript Agent SDK driving the same CLI (pinned in testdata/agentsdk, installed
## there with npm ci when missing; without npm or the registry that way is skipped and the rest runs)
bench-tools: cli
	@want=$$(sed -n 's/.*"@anthropic-ai\/claude-agent-sdk": "\([^"]*\)".*/\1/p' $(AGENT_SDK_DIR)/package.json); \
	got=$$(sed -n 's/^  "version": "\([^"]*\)".*/\1/p' $(AGENT_SDK_DIR)/node_modules/@anthropic-ai/claude-agent-sdk/package.json 2>/dev/null); \
	if [ "$$got" != "$$want" ]; then \
		npm ci --prefix $(AGENT_SDK_DIR) --omit=optional --no-audit --no-fund >&2 || \
			echo "bench-tools: npm could not install @anthropic-ai/claude-agent-sdk $$want; the benchmark skips its way" >&2; \
	fi
	$(GO) test -run '^$$' -bench '^BenchmarkE2ETool$$' -benchtime 10x -count 1 -timeout 30m .

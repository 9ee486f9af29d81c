# pullship's build. Every target exports the Go toolchain pullship is built
# with; the go command fetches it from the module proxy on first use.
export GOTOOLCHAIN := go1.27.3
export CGO_ENABLED ?= 1

GO          ?= go
BIN         := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 10s

.PHONY: all build test lint fuzz bench demo demo-clean docs clean

all: build

build:
	$(GO) build -o $(BIN)/pullship ./bundler/cmd/pullship
	$(GO) build -o $(BIN)/pullship-agent ./agent/cmd/pullship-agent

## test: every test, with the race detector (Docker tests run when an engine is reachable; with CI=true they fail without one)
test:
	$(GO) test -race -timeout 30m ./...
	bash scripts/readme-check.sh

## lint: go vet and staticcheck
lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## fuzz: run every fuzz target for FUZZTIME each
fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

## bench: benchmarks against baselines measured in the same run
bench: build
	bash scripts/bench.sh

## demo: a local release repository, agents converging on it, the fleet status
demo: build
	bash scripts/demo.sh

demo-clean:
	bash scripts/demo.sh clean

## docs: regenerate the command reference in docs/cli
docs:
	rm -rf docs/cli
	$(GO) run ./bundler/internal/gendocs docs/cli

clean:
	rm -rf $(BIN)

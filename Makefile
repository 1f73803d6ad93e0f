# indexgate build. `make test` is what CI runs (.ci/run); `make demo` runs the
# end-to-end demo on 127.0.0.1.

GO        ?= go
GOFLAGS   ?=
BIN       := bin
# Reproducible wasm: no paths, no VCS stamp, so CI can check that the
# committed built-ins match their sources.
WASMFLAGS := -trimpath -buildvcs=false -buildmode=c-shared
WASMENV   := GOOS=wasip1 GOARCH=wasm
BUILTINS  := legacy ha
EXAMPLES  := $(notdir $(wildcard examples/*))
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: all wasm check-wasm examples conformance build test bench demo clean

all: build

## wasm: build the built-in filter modules into filters/builtin (embedded by the router)
wasm:
	@for f in $(BUILTINS); do \
	  echo "wasm  filters/$$f -> filters/builtin/$$f.wasm"; \
	  $(WASMENV) $(GO) build $(WASMFLAGS) -o filters/builtin/$$f.wasm ./filters/$$f || exit 1; \
	done

## check-wasm: fail when the committed built-ins differ from what `make wasm` builds
check-wasm:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	for f in $(BUILTINS); do \
	  $(WASMENV) $(GO) build $(WASMFLAGS) -o $$tmp/$$f.wasm ./filters/$$f || exit 1; \
	  if ! cmp -s $$tmp/$$f.wasm filters/builtin/$$f.wasm; then \
	    echo "check-wasm: filters/builtin/$$f.wasm is stale: run 'make wasm' and commit it"; exit 1; \
	  fi; \
	done; echo "check-wasm: built-in modules match their sources"

## examples: build every example filter module into bin/examples
examples:
	@mkdir -p $(BIN)/examples
	@for e in $(EXAMPLES); do \
	  echo "wasm  examples/$$e -> $(BIN)/examples/$$e.wasm"; \
	  $(WASMENV) $(GO) build $(WASMFLAGS) -o $(BIN)/examples/$$e.wasm ./examples/$$e || exit 1; \
	done

## build: the controller and router binaries
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

## conformance: run every example filter through `router filters test`
conformance: examples build
	@for e in $(EXAMPLES); do \
	  $(BIN)/router filters test $(BIN)/examples/$$e.wasm || exit 1; \
	done

## test: everything CI checks
test: check-wasm conformance
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) ./...

## demo: controller + 3 routers on 127.0.0.1 under load, kill -9, hot swap, convergence check
demo: build examples
	$(BIN)/demo --bin $(BIN) --swap-module $(BIN)/examples/strictha.wasm

## bench: the benchmarks recorded in docs/benchmarks.md
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf $(BIN)

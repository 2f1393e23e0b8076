# Gastown. `make run` starts the coordinator on the embedded default;
# `make test` installs what it needs and runs every check.

GO        ?= go
BIN       := $(CURDIR)/bin
NATS      := $(BIN)/nats
NATS_VER  := v0.5.0
DATA_DIR  ?= ./data
LISTEN    ?= 127.0.0.1:4222
# A well-known secret for `make run` only; the binary never invents one.
DEV_SECRET := gastown-development-secret-do-not-use-in-production

export PATH := $(BIN):$(PATH)

# Stamped into the binary (`gastown version`): builds may carry
# -buildvcs=false, so the commit is passed in explicitly.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
COMMIT_AT ?= $(shell git log -1 --format=%cI 2>/dev/null)
LDFLAGS   := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.commitTime=$(COMMIT_AT)

.PHONY: run build test tools vet fuzz bench soak demo clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gastown ./cmd/gastown

run: build
	@if [ -z "$$GASTOWN_JWT_SECRET" ]; then \
	  echo "make run: GASTOWN_JWT_SECRET is not set; using a DEVELOPMENT secret (never do this in production)" >&2; \
	  export GASTOWN_JWT_SECRET="$(DEV_SECRET)" GASTOWN_DEV_SECRET=1; \
	fi; \
	exec $(BIN)/gastown coordinator --listen $(LISTEN) --data-dir $(DATA_DIR)

tools: $(NATS)

$(NATS):
	@mkdir -p $(BIN)
	@echo "installing the nats CLI $(NATS_VER) into $(BIN) (takes a couple of minutes the first time)"
	GOBIN=$(BIN) $(GO) install github.com/nats-io/natscli/nats@$(NATS_VER)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt would change:"; gofmt -l .; exit 1; }

# Each fuzz target runs briefly here and for longer in `make soak`.
FUZZ_TIME ?= 5s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZ_TIME) $$pkg || exit 1; \
	  done; \
	done

test: tools vet
	@# Build every test binary first, so no test runs while others compile.
	$(GO) test -race -count=1 -run '^$$' ./... > /dev/null
	@# One package at a time: the end-to-end tests run real processes and
	@# time heartbeats; on 2 shared cores they must not compete with each other.
	$(GO) test -race -p 1 -timeout 15m ./...
	$(MAKE) fuzz FUZZ_TIME=3s

bench:
	@# One program, one run: every figure next to a baseline measured in the same run (see BENCHMARKS.md).
	$(GO) run ./bench -json bench.json -cpuprofile bench-cpu.out $(BENCH_FLAGS)

soak: tools
	GASTOWN_SOAK=1 $(GO) test -race -timeout 60m -run 'Soak|Rotation' ./...
	$(MAKE) fuzz FUZZ_TIME=60s

demo: build
	BIN=$(BIN)/gastown scripts/demo.sh

clean:
	rm -rf $(BIN) $(DATA_DIR)

# Gastown. `make run` starts the coordinator on the embedded default;
# `make test` installs what it needs and runs every check.

GO        ?= go
BIN       := $(CURDIR)/bin
NATS      := $(BIN)/nats
NATS_VER  := v0.5.0
# The real nats-server that clusters run (tests' real-process clusters too);
# the same version as the embedded one in go.mod.
NATS_SERVER     := $(BIN)/nats-server
NATS_SERVER_VER := v2.15.2
# `make cluster`: where its directory goes, and its ports. CLUSTER_BASE_PORT
# is node 1's client port (nodes listen on base, base+1, ...); routes are on
# base+2000, monitoring on base+4000, the coordinators' metrics on base+5242.
CLUSTER_DIR       ?= ./cluster
CLUSTER_BASE_PORT ?= 4222
CLUSTER_NODES     ?= 3
CLUSTER_COORDINATORS ?= 2
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

.PHONY: run build token test tools nats-server cluster vet fuzz bench soak demo demo-mcp clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gastown ./cmd/gastown

run: build
	@echo "make run: the binary is $(BIN)/gastown; the nats CLI is $(NATS) (make tools builds it)" >&2
	@if [ -z "$$GASTOWN_JWT_SECRET" ]; then \
	  echo "make run: GASTOWN_JWT_SECRET is not set; using a DEVELOPMENT secret (never do this in production)" >&2; \
	  export GASTOWN_JWT_SECRET="$(DEV_SECRET)" GASTOWN_DEV_SECRET=1; \
	fi; \
	echo "make run: mint a container token this coordinator accepts with: make -s token TOWN=<town>" >&2; \
	if [ -z "$$GASTOWN_ADMIN_PASSWORD" ]; then \
	  echo "make run: GASTOWN_ADMIN_PASSWORD is not set: the admin verbs are disabled (set it, here and for them, to use them)" >&2; \
	fi; \
	exec $(BIN)/gastown coordinator --listen $(LISTEN) --data-dir $(DATA_DIR)

# A container token for TOWN, signed as `make run` signs: with
# GASTOWN_JWT_SECRET when set, else the development secret; OWNER=U
# names the town's owner. Only the token goes to stdout:
# GASTOWN_CONTAINER_TOKEN=$$(make -s token TOWN=demo).
token:
	@test -n "$(TOWN)" || { echo "make token: give the town: make -s token TOWN=demo" >&2; exit 2; }
	@$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gastown ./cmd/gastown
	@GASTOWN_JWT_SECRET="$${GASTOWN_JWT_SECRET:-$(DEV_SECRET)}" $(BIN)/gastown token mint --town "$(TOWN)" $(if $(OWNER),--user "$(OWNER)")

tools: $(NATS)

$(NATS):
	@mkdir -p $(BIN)
	@echo "installing the nats CLI $(NATS_VER) into $(BIN) (takes a couple of minutes the first time)"
	GOBIN=$(BIN) $(GO) install github.com/nats-io/natscli/nats@$(NATS_VER)

# The nats-server binary, installed like the nats CLI: not a requirement
# in go.mod.
nats-server: $(NATS_SERVER)

$(NATS_SERVER):
	@mkdir -p $(BIN)
	@echo "installing nats-server $(NATS_SERVER_VER) into $(BIN)"
	GOBIN=$(BIN) $(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VER)

# A cluster on loopback: 3 nats-server nodes and 2 coordinators, until
# Ctrl-C. Its directory (configs, credentials, data, logs) is made once by
# `gastown cluster init` and reused; remove it to start over.
cluster: build nats-server
	@if [ -z "$$GASTOWN_JWT_SECRET" ]; then \
	  echo "make cluster: GASTOWN_JWT_SECRET is not set; using a DEVELOPMENT secret (never do this in production)" >&2; \
	  export GASTOWN_JWT_SECRET="$(DEV_SECRET)" GASTOWN_DEV_SECRET=1; \
	fi; \
	if [ -z "$$GASTOWN_ADMIN_PASSWORD" ]; then \
	  echo "make cluster: GASTOWN_ADMIN_PASSWORD is not set: the admin verbs are disabled (set it, here and for them, to use them)" >&2; \
	fi; \
	if [ ! -e "$(CLUSTER_DIR)/cluster.json" ]; then \
	  $(BIN)/gastown cluster init --dir "$(CLUSTER_DIR)" --nodes $(CLUSTER_NODES) \
	    --client-base $(CLUSTER_BASE_PORT) --cluster-base $$(($(CLUSTER_BASE_PORT)+2000)) \
	    --monitor-base $$(($(CLUSTER_BASE_PORT)+4000)) >&2 || exit 1; \
	else \
	  echo "make cluster: reusing $(CLUSTER_DIR), with the ports it was made with (remove it to start over)" >&2; \
	fi; \
	exec $(BIN)/gastown cluster up --dir "$(CLUSTER_DIR)" --coordinators $(CLUSTER_COORDINATORS) \
	  --nats-server $(NATS_SERVER) --metrics-base $$(($(CLUSTER_BASE_PORT)+5242))

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt would change:"; gofmt -l .; exit 1; }

# Each fuzz target runs briefly here and for longer in `make soak`.
# `make test` gives each a count of executions, not a duration: Go 1.26's
# fuzzer can fail a target with a spurious "context deadline exceeded"
# when a duration runs out on a loaded machine (go.dev/issue/75804, fixed
# in Go 1.27); a count has no deadline to race.
# Only the packages whose tests hold a fuzz target are listed: listing
# builds a package's test binary, and most packages have none.
FUZZ_TIME ?= 5s
fuzz:
	@for pkg in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZ_TIME) $$pkg || exit 1; \
	  done; \
	done

test: tools nats-server vet
	@# Build every test binary first, so no test runs while others compile.
	$(GO) test -race -count=1 -run '^$$' ./... > /dev/null
	@# One package at a time: the end-to-end tests run real processes and
	@# time heartbeats; on 2 shared cores they must not compete with each other.
	$(GO) test -race -p 1 -timeout 15m ./...
	@# The bus's tests again, on a 3-node cluster through the auth callout
	@# (those that need the embedded server itself skip, saying so).
	GASTOWN_TEST_BUS=cluster $(GO) test -race -count=1 ./bus/
	$(MAKE) fuzz FUZZ_TIME=10000x

bench: nats-server
	@# One program, one run: every figure next to a baseline measured in the same run (see BENCHMARKS.md).
	$(GO) run ./bench -json bench.json -cpuprofile bench-cpu.out -nats-server $(NATS_SERVER) $(BENCH_FLAGS)

soak: tools nats-server
	GASTOWN_SOAK=1 $(GO) test -race -timeout 60m -run 'Soak|Rotation' ./...
	$(MAKE) fuzz FUZZ_TIME=60s

demo: build
	BIN=$(BIN)/gastown scripts/demo.sh

# The same demo with every agent call made through `gastown mcp`: the
# simulated agents are MCP clients, as real coding agents are.
demo-mcp: build
	BIN=$(BIN)/gastown SIM_FLAGS=--via-mcp scripts/demo.sh

# The gastown binary and the data only: the nats CLI in bin/ takes minutes
# to build, and stays.
clean:
	rm -f $(BIN)/gastown
	rm -rf $(DATA_DIR)

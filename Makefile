# fleetboot — `make help` lists the targets. CI runs exactly `make test`.
SHELL   := bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO      ?= go
BIN     := bin/fleetboot
# Packages whose tests start QEMU; they run in `make e2e` (and in `make test`).
PKGS    := ./...

.PHONY: help deps build run test unit e2e demo lint bench fuzz fuzz-long clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

deps: ## install test dependencies (apt packages, pinned MinIO), cached
	./test/deps.sh

build: ## build the static fleetboot binary into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/fleetboot

run: build ## run fleetboot on its embedded defaults (coordinator + NATS + edge, data in ./fleetboot-data)
	./$(BIN) dev

test: deps lint ## everything: lint, unit, integration and end-to-end tests (with -race), brief fuzzing, compose
	$(GO) test -race -count=1 -timeout 40m $(PKGS)
	$(MAKE) fuzz FUZZTIME=5s FUZZ="$(FUZZ_QUICK)"
	$(MAKE) compose-test

# Fuzz targets: package:Target. `make fuzz FUZZTIME=5m` fuzzes each longer.
FUZZ     := ./proto:FuzzParseMAC ./edge/dhcp:FuzzParse ./edge/tftp:FuzzResolve ./edge/tftp:FuzzParseRequest ./edge/httpboot:FuzzRender ./edge/httpboot:FuzzPath ./edge/tftp:FuzzRequest ./edge/httpboot:FuzzRequest ./shared/selector:FuzzParse ./cmd/fleetboot/cli:FuzzParseImportCSV
# The quick set for make test: targets whose inputs run in microseconds. The
# socket-driven ones (TFTP/HTTP FuzzRequest) run their seeds in go test; a 5 s
# fuzz run can end inside one of their slow inputs and report a deadline.
FUZZ_QUICK := ./proto:FuzzParseMAC ./edge/dhcp:FuzzParse ./edge/tftp:FuzzResolve ./edge/tftp:FuzzParseRequest ./edge/httpboot:FuzzRender ./edge/httpboot:FuzzPath ./shared/selector:FuzzParse
FUZZTIME ?= 30s
fuzz: ## run every fuzz target for FUZZTIME (default 30s each)
	@set -e; for f in $(FUZZ); do \
	  echo "fuzz $${f#*:} in $${f%%:*} for $(FUZZTIME)"; \
	  GO=$(GO) ./test/fuzz-one.sh "$${f%%:*}" "$${f#*:}" $(FUZZTIME); \
	done

# Not part of make test (about 10 minutes a target, over an hour in all).
# Finds the targets in the sources itself; FUZZTIME=1m for a shorter pass.
# 10m unless FUZZTIME was given (environment or command line).
fuzz-long: FUZZTIME := $(if $(filter environment command line,$(origin FUZZTIME)),$(FUZZTIME),10m)
fuzz-long: ## every fuzz target in the tree for 10 minutes each: executions, new coverage, crashes (bin/fuzz-long/)
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./test/fuzz-long.sh

unit: ## tests without the root-only network and QEMU parts
	$(GO) test -short -count=1 $(PKGS)

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

e2e: deps build ## all end-to-end scenarios (issue 6 a-h) and reference boots: QEMU VMs in namespaces (root)
	FLEETBOOT_E2E_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -v -timeout 30m ./test/e2e/

demo: deps build ## boot one VM through MinIO + coordinator + edge in a namespace, console on this terminal (root)
	FLEETBOOT_BIN=$(BIN) ./test/e2e/demo.sh

# A micro-benchmark that fails does not keep test/bench from running: each
# step notes its failure in bin/bench-failed, the table is printed, then the
# failures (again, so they are not lost above the table) and the exit status.
BENCH_FAILS := 'BEGIN { n = 5 } /--- FAIL/ { n = 0; print substr($$0, index($$0, "--- FAIL")); next } \
	n < 5 && /^[ \t]/ { n++; print; next } { n = 5 } /^(FAIL\t|panic: )/'
bench: deps build ## Go benchmarks, then test/bench: fleetboot vs dnsmasq, Kea, tftpd-hpa, nginx, MinIO side by side (root), table at the end
	@mkdir -p bin; rm -f bin/bench-failed
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v /test/bench) 2>&1 \
		| tee bin/bench-micro.log || echo "micro-benchmarks (full output: bin/bench-micro.log)" >> bin/bench-failed
	@# -v: without it Go cuts a benchmark's log after ten lines. Full output: bin/bench.log.
	set -o pipefail; FLEETBOOT_E2E_BIN=$(CURDIR)/$(BIN) $(GO) test -v -run '^$$' -bench . -benchtime 1x -timeout 60m \
		./test/bench/ | tee bin/bench.log | grep -E '^(Benchmark.*[0-9] ns/op|ok|FAIL|PASS|--- FAIL)|SUMMARY\|' \
		|| echo "test/bench (full output: bin/bench.log)" >> bin/bench-failed
	@echo; echo "fleetboot against reference servers, same machine, same run (full output: bin/bench.log):"; \
	printf '%-5s | %-34s | %-10s | %-16s | %s\n' area figure server value "fleetboot / reference"; \
	grep -o 'SUMMARY|.*' bin/bench.log | sed 's/^SUMMARY| //'
	@if [ -s bin/bench-failed ]; then \
		echo; echo "FAILED:"; sed 's/^/  /' bin/bench-failed; \
		awk $(BENCH_FAILS) bin/bench-micro.log; exit 1; \
	fi

clean:
	rm -rf bin

.PHONY: images compose-test

images: ## container images FROM scratch: fleetboot, nats-server, MinIO, busybox client, init job
	VERSION=$(VERSION) ./deploy/images.sh

compose-test: images ## docker-compose.yml end to end: 3 NATS, 2 coordinators, 2 sites, outages (needs Docker)
	$(GO) test -tags compose -count=1 -timeout 20m -v ./test/compose/

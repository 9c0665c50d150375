// Package e2e runs segpilot's whole pipeline against each destination's
// simulator (Autopilot, Ortto) and checks what the destination ends up
// holding, exactly.
package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/local"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

const (
	listTitle = "VIP customers"
	apiKey    = "KEY-e2e-0123456789"
)

// configYAML is an export to d like the shipped example's; mode and rate
// vary. An Ortto export may create its fields: the simulator starts empty.
func configYAML(d destination, mode string, rps int) string {
	conn, _, _ := strings.Cut(strings.TrimSpace(d.connection), ":")
	extra := ""
	if d.kind == "ortto" {
		extra = "    createFields: true\n"
	}
	return `connections:
` + d.connection + `    consent: true
    requestsPerSecond: ` + strconv.Itoa(rps) + `
exports:
  vip-newsletter:
    connection: ` + conn + `
    segment: vip-customers
    list: ` + listTitle + `
    match:
      email: EmailAddress
      firstName: FirstName
      lastName: LastName
      custom:
        LoyaltyTier: ` + d.custom["LoyaltyTier"] + `
        LifetimeOrders: ` + d.custom["LifetimeOrders"] + `
` + extra + `    mode: ` + mode + `
`
}

type fixedKey string

func (k fixedKey) Secret(context.Context, string) (string, error) { return string(k), nil }

// harness is a local pipeline wired to a destination's simulator on
// loopback.
type harness struct {
	t    testing.TB
	d    destination
	sim  simulator
	p    *local.Pipeline
	dir  string
	url  string               // the simulator's base URL
	logs *testutil.SyncBuffer // every log line, at debug level
	// inFlight counts requests the simulator is still handling: a client
	// that gives up (cancel, timeout) returns before the server finishes.
	inFlight *atomic.Int64
	stop     func()
	// procs stands in for the processes sharing the bucket: the harness's
	// own pipeline is process "harness"; a test kills others.
	procs *processTable
	// intercept, when set, sees each request first and may answer it
	// itself (true), in the simulator's place.
	intercept *atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]
	// poll is how often drop looks whether its runs ended: testPoll, or
	// cliPoll in a benchmark.
	poll time.Duration
}

// testPoll is how often the suites' waits look whether a run ended: often,
// so that a test ends with its runs.
const testPoll = 2 * time.Millisecond

// cliPoll is how often segpilot's own wait looks (pollEvery in
// cmd/segpilot). A benchmark waits as the CLI does: at testPoll the wait's
// 5,000 looks at the bucket in a 10 s run took a quarter of the process's
// allocations, CPU beside the run it measures.
const cliPoll = 250 * time.Millisecond

// failUpserts answers 503 to every upsert request holding email, as a
// destination failing for those contacts would, whatever the retries;
// "" stops it.
func (h *harness) failUpserts(email string) {
	if email == "" {
		h.intercept.Store(nil)
		return
	}
	f := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost || !strings.HasSuffix(h.d.upsertRoute, strings.TrimPrefix(r.URL.Path, "/v1")) {
			return false
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return true
		}
		if !bytes.Contains(body, []byte(`"`+email+`"`)) {
			r.Body = io.NopCloser(bytes.NewReader(body))
			return false
		}
		http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
		return true
	}
	h.intercept.Store(&f)
}

// processTable is local mode's view of the processes on a host, for
// pipelines in one test process: a pipeline is a process of its own name,
// and a test kills it.
type processTable struct {
	mu   sync.Mutex
	dead map[string]bool
}

func (p *processTable) process(name string) local.Processes { return process{table: p, name: name} }

func (p *processTable) kill(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead == nil {
		p.dead = map[string]bool{}
	}
	p.dead[name] = true
}

type process struct {
	table *processTable
	name  string
}

func (p process) Self() string { return p.name }

func (p process) Alive(owner string) (bool, error) {
	p.table.mu.Lock()
	defer p.table.mu.Unlock()
	return !p.table.dead[owner], nil
}

// waitIdle waits until the simulator has handled every request a killed
// run abandoned mid-flight (idle for a while, since an abandoned request can
// still be in the socket), so counters read afterwards include them.
func (h *harness) waitIdle() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for idleSince := time.Now(); time.Since(idleSince) < 100*time.Millisecond; time.Sleep(time.Millisecond) {
		if h.inFlight.Load() != 0 {
			idleSince = time.Now()
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("simulator still handling %d requests", h.inFlight.Load())
		}
	}
}

// baseURLs points another pipeline at the harness's simulator.
func baseURLs(h *harness) map[string]string { return map[string]string{h.d.kind: h.url} }

// noWait skips the state machine's retry waits: tests assert outcomes, not time.
func noWait(ctx context.Context, d time.Duration) error { return ctx.Err() }

func newHarness(t testing.TB, d destination, simOpts simOptions, config string, options ...func(*local.Options)) *harness {
	t.Helper()
	s := d.newSim(simOpts)
	inFlight := &atomic.Int64{}
	serving := &atomic.Pointer[simulator]{}
	serving.Store(&s)
	intercept := &atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		if f := intercept.Load(); f != nil && (*f)(w, r) {
			return
		}
		(*serving.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	logs := &testutil.SyncBuffer{}
	// Only hang faults need a short client timeout. Elsewhere a slow answer
	// on a loaded 2-core CI machine under -race (seen: > 2 s) must not be
	// retried, or the suites' exact request counts drift.
	clientTimeout := 30 * time.Second
	if simOpts.Faults.HangRate > 0 {
		clientTimeout = 2 * time.Second
	}
	procs := &processTable{}
	opts := local.Options{
		BucketDir: dir, Secrets: fixedKey(apiKey), BaseURLs: map[string]string{d.kind: srv.URL + "/v1"},
		Processes:     procs.process("harness"),
		Log:           slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		RetrySleep:    noWait,
		ClientTimeout: clientTimeout,
	}
	for _, o := range options {
		o(&opts)
	}
	p, err := local.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Runner.Wait) // before its bucket folder goes: executions end on their own goroutines
	h := &harness{t: t, d: d, sim: s, p: p, dir: dir, url: srv.URL + "/v1", logs: logs, inFlight: inFlight,
		stop: func() { srv.Close(); serving.Store(nil) }, procs: procs, intercept: intercept, poll: testPoll}
	h.put(run.ConfigKey, []byte(config))
	return h
}

// release stops the simulator's server and lets go of the simulator and the
// pipeline, so that a benchmark's next iteration does not run beside the
// heap of the last one (a 100,000-contact simulator per iteration: the
// collector's work then delays workers and bunches their requests).
func (h *harness) release() {
	h.stop()
	h.sim, h.p = nil, nil
}

func (h *harness) put(key string, data []byte) store.ObjectInfo {
	h.t.Helper()
	info, err := h.p.Store.Put(context.Background(), key, bytes.NewReader(data), store.PutOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return info
}

// drop puts a segment file and runs ingest on it, as the S3 trigger does,
// and waits for its runs to end.
func (h *harness) drop(name string, data []byte) []run.Result {
	h.t.Helper()
	key := "segments/vip-customers/" + name
	info := h.put(key, data)
	res, err := h.p.Service.Start(context.Background(), run.StartRequest{Trigger: run.TriggerS3,
		Source: run.Source{Key: key, ETag: info.ETag, Size: info.Size}})
	if err == nil {
		res, err = awaitEvery(context.Background(), h.p.Service, res, h.poll)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return res
}

// awaitAll is ingest followed by the CLI's wait: Start, then Await each
// delivery it left running or queued.
func awaitAll(ctx context.Context, svc *run.Service, req run.StartRequest) ([]run.Result, error) {
	res, err := svc.Start(ctx, req)
	if err != nil {
		return res, err
	}
	return awaitResults(ctx, svc, res)
}

// awaitResults waits for each result's delivery to end.
func awaitResults(ctx context.Context, svc *run.Service, res []run.Result) ([]run.Result, error) {
	return awaitEvery(ctx, svc, res, testPoll)
}

// awaitEvery waits for each result's delivery to end, looking every poll.
func awaitEvery(ctx context.Context, svc *run.Service, res []run.Result, poll time.Duration) ([]run.Result, error) {
	for i, r := range res {
		var err error
		if res[i], err = svc.Await(ctx, r, poll); err != nil {
			return res, err
		}
	}
	return res, nil
}

// refresh invokes refresh (the schedule, or a person) and waits for its runs.
func (h *harness) refresh(req run.RefreshRequest) []run.Result {
	h.t.Helper()
	res, err := h.p.Service.Refresh(context.Background(), req)
	if err == nil {
		res, err = awaitResults(context.Background(), h.p.Service, res)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return res
}

func (h *harness) report(r run.Result) *run.Report {
	h.t.Helper()
	rep, err := run.ReadReport(context.Background(), h.p.Store, r.Export, r.RunID)
	if err != nil {
		h.t.Fatalf("report of %s: %v", r.RunID, err)
	}
	return rep
}

func generate(t testing.TB, o sample.Options) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := sample.Write(&b, o); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// contact is what the destination should hold for one profile.
type contact struct {
	first, last, tier string
	orders            float64
}

// expected is an oracle independent of segpilot's reader: the valid,
// deduplicated (last row wins) profiles of a generated file.
func expected(t testing.TB, data []byte) map[string]contact {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(data))
	if _, err := r.Read(); err != nil {
		t.Fatal(err)
	}
	out := map[string]contact{}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		email := strings.ToLower(rec[1])
		at := strings.Index(email, "@")
		orders, oerr := strconv.Atoi(rec[5])
		if at < 1 || strings.Count(email, "@") != 1 || strings.ContainsAny(email, " <>") ||
			!strings.Contains(email[at:], ".") || oerr != nil {
			continue
		}
		out[email] = contact{first: rec[2], last: rec[3], tier: rec[4], orders: float64(orders)}
	}
	return out
}

// assertState checks the destination holds want, all on the list, and
// nobody else on the list.
func (h *harness) assertState(want map[string]contact) {
	h.t.Helper()
	got := h.sim.holds()
	for email, w := range want {
		c, ok := got[email]
		if !ok {
			h.t.Errorf("%s missing from %s", email, h.d.kind)
			continue
		}
		if c.first != w.first || c.last != w.last || c.tier != w.tier || c.orders != w.orders {
			h.t.Errorf("%s holds %+v, want %+v", email, c, w)
		}
	}
	members := h.sim.members()
	wantMembers := slices.Sorted(maps.Keys(want))
	if strings.Join(members, ",") != strings.Join(wantMembers, ",") {
		h.t.Errorf("list %q has %d members, want %d", listTitle, len(members), len(wantMembers))
	}
}

// contactRequests counts the requests that upserted or removed contacts.
func (h *harness) contactRequests() int {
	c := h.sim.Counters()
	n := 0
	for _, route := range []string{h.d.upsertRoute, h.d.removeRoute} {
		for _, v := range c.ByRoute[route] {
			n += v
		}
		if h.d.upsertRoute == h.d.removeRoute {
			break
		}
	}
	return n
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// firstKeys returns up to n keys of m in order, to show in a failure.
func firstKeys[V any](m map[string]V, n int) []string {
	keys := slices.Sorted(maps.Keys(m))
	return keys[:min(n, len(keys))]
}

//go:build unix

package lambdatest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/autopilot"
	"github.com/segpilot/segpilot/shared/autopilot/sim"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/run"
)

// BenchmarkFirstInvoke measures a cold start of each function under the
// runtime interface emulator: first-invoke-ms runs from starting the
// emulator to the answer of its first invocation, warm-invoke-ms is a second
// invocation of the same container. Every answer is checked, and each
// invocation gets events of its own (a new file, run or batch), so none is
// cut short by the functions' idempotency. ns/op leaves out the preparation.
func BenchmarkFirstInvoke(b *testing.B) {
	rie := rieBinary(b)
	bootstraps := hostBuild(b)
	prepare := map[string]func(*testing.B, *benchWorld) func(i int) invocations{
		"ingest":    ingestInvocations,
		"syncbatch": syncbatchInvocations,
		"finalize":  finalizeInvocations,
		"refresh":   refreshInvocations,
	}
	for _, fn := range functions {
		b.Run(fn, func(b *testing.B) {
			w := newBenchWorld(b, rie, bootstraps)
			next := prepare[fn](b, w)
			sc := &scope{TB: b}
			b.Cleanup(sc.stop) // also when an iteration fails
			var first, warm time.Duration
			i := 0
			for b.Loop() {
				b.StopTimer()
				inv := next(i)
				i++
				b.StartTimer()

				start := time.Now()
				e := startEmulator(sc, rie, fn, bootstraps[fn], w.env)
				inv.first(e)
				first += time.Since(start)

				if inv.between != nil {
					b.StopTimer()
					inv.between()
					b.StartTimer()
				}

				start = time.Now()
				inv.warm(e)
				warm += time.Since(start)
				sc.stop()
			}
			perOp := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(b.N) }
			b.ReportMetric(perOp(first), "first-invoke-ms")
			b.ReportMetric(perOp(warm), "warm-invoke-ms")
		})
	}
}

// invocations are one iteration's two invocations of a function; each
// invokes the emulator and fails the benchmark unless the answer shows the
// work was done.
type invocations struct {
	first, warm func(*emulator)
	between     func() // untimed, between the two; optional
}

// scope collects the cleanups of one iteration, so its emulator is stopped
// before the next cold start rather than when the benchmark ends.
type scope struct {
	testing.TB
	cleanups []func()
}

func (s *scope) Cleanup(f func()) { s.cleanups = append(s.cleanups, f) }

// stop runs the collected cleanups, last first.
func (s *scope) stop() {
	for len(s.cleanups) > 0 {
		f := s.cleanups[len(s.cleanups)-1]
		s.cleanups = s.cleanups[:len(s.cleanups)-1]
		f()
	}
}

// benchWorld is one sub-benchmark's S3, Secrets Manager, Step Functions and
// Autopilot on loopback, with the example config in the bucket.
type benchWorld struct {
	rie        string
	bootstraps map[string]string
	bkt        *s3store.Store
	sfn        *fakeSFN
	env        []string
	cfgVersion string
	segment    []byte // a 300-row sample file, as TestFunctions exports
	files      uint64 // segment files put so far (putSegment)
}

func newBenchWorld(b *testing.B, rie string, bootstraps map[string]string) *benchWorld {
	b.Helper()
	s3URL, bkt := newS3(b, bucket)
	secretsSrv := httptest.NewServer(fakeSecrets{values: map[string]string{secretID: `{"apiKey":"` + apiKey + `"}`}})
	b.Cleanup(secretsSrv.Close)
	sfn := &fakeSFN{arn: machineARN}
	sfnSrv := httptest.NewServer(sfn)
	b.Cleanup(sfnSrv.Close)
	apSrv := httptest.NewServer(sim.New(sim.Options{APIKey: apiKey}))
	b.Cleanup(apSrv.Close)

	// The list exists already, so every cold ingest makes the same one
	// lookup (creating it would also make it wait for its pacing).
	ap, err := autopilot.New(autopilot.Options{BaseURL: apSrv.URL + "/v1", APIKey: apiKey, RequestsPerSecond: 100})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := ap.EnsureList(context.Background(), listTitle); err != nil {
		b.Fatal(err)
	}

	// The example config on the simulator at the full budget, as in TestFunctions.
	example := testutil.ExampleConfig(b, "autopilot")
	cfgYAML := strings.Replace(string(example), "https://api2.autopilothq.com", apSrv.URL, 1)
	cfgYAML = strings.Replace(cfgYAML, "requestsPerSecond: 5 ", "requestsPerSecond: 100 ", 1)
	cfg, err := config.Load(run.ConfigKey, []byte(cfgYAML))
	if err != nil {
		b.Fatalf("the edited example config does not load: %v", err)
	}
	putObject(b, bkt, run.ConfigKey, []byte(cfgYAML))

	var csv bytes.Buffer
	if _, err := sample.Write(&csv, sample.Options{Rows: 300, Seed: 11, Invalid: 20, Dupes: 50}); err != nil {
		b.Fatal(err)
	}
	return &benchWorld{rie: rie, bootstraps: bootstraps, bkt: bkt, sfn: sfn, cfgVersion: cfg.Version, segment: csv.Bytes(),
		env: functionEnv(b, s3URL, secretsSrv.URL, sfnSrv.URL)}
}

// helper runs a function warm, for the preparation the measured one needs.
func (w *benchWorld) helper(b *testing.B, fn string) *emulator {
	b.Helper()
	return startEmulator(b, w.rie, fn+" (preparing)", w.bootstraps[fn], w.env)
}

// putSegment puts the sample file as segments/vip-customers/<name> and
// returns the S3 event announcing it now (events/s3-put.json's shape; names
// here need no URL-encoding) and the id of the run it starts.
func (w *benchWorld) putSegment(b *testing.B, name string) (event []byte, runID string) {
	b.Helper()
	key := "segments/vip-customers/" + name
	// The same contacts under other names each time: every run has all
	// 300 to send again, whatever the snapshot the last one left.
	w.files++
	var data bytes.Buffer
	if _, err := sample.Write(&data, sample.Options{Rows: 300, Seed: 11 + w.files, Invalid: 20, Dupes: 50}); err != nil {
		b.Fatal(err)
	}
	info := putObject(b, w.bkt, key, data.Bytes())
	ev := readJSON(b, "events/s3-put.json")
	record := ev["Records"].([]any)[0].(map[string]any)
	record["eventTime"] = time.Now().UTC().Format(time.RFC3339Nano)
	object := record["s3"].(map[string]any)["object"].(map[string]any)
	object["key"], object["eTag"], object["size"], object["versionId"] = key, info.ETag, info.Size, info.VersionID
	src := run.Source{Key: key, ETag: info.ETag, Size: info.Size, VersionID: info.VersionID}
	return mustJSON(b, ev), run.RunID(exportName, src, w.cfgVersion)
}

// expectStarted invokes ingest with event and fails unless it started runID.
func expectStarted(b *testing.B, e *emulator, event []byte, runID string) {
	b.Helper()
	var res []run.Result
	e.call(b, event, &res)
	if len(res) != 1 || res[0].RunID != runID || res[0].Status != run.StatusRunning || !res[0].Started {
		b.Fatalf("%s answered %+v; want run %s started", e.name, res, runID)
	}
}

// executionInput is what Step Functions was given to run runID.
func (w *benchWorld) executionInput(b *testing.B, runID string) []byte {
	b.Helper()
	execs, _ := w.sfn.snapshot()
	// Executions are named <run>-<attempt>, the attempt the export's epoch.
	i := slices.IndexFunc(execs, func(x execution) bool { return strings.HasPrefix(x.Name, runID+"-") })
	if i < 0 {
		b.Fatalf("no execution %s started; started: %+v", runID, execs)
	}
	return []byte(execs[i].Input)
}

// startRun starts a run of a new file through a warm ingest and returns the
// execution input and the run's batches.
func (w *benchWorld) startRun(b *testing.B, ingest *emulator, name string) (input []byte, exec run.Execution, batches []int) {
	b.Helper()
	event, runID := w.putSegment(b, name)
	expectStarted(b, ingest, event, runID)
	input = w.executionInput(b, runID)
	if err := json.Unmarshal(input, &exec); err != nil {
		b.Fatalf("execution input %s: %v", input, err)
	}
	var items []struct {
		Batch int `json:"batch"`
	}
	getObject(b, w.bkt, exec.ItemsKey, &items)
	if len(items) < 2 {
		b.Fatalf("run %s has %d batches; want several", runID, len(items))
	}
	for _, it := range items {
		batches = append(batches, it.Batch)
	}
	return input, exec, batches
}

// closeRun finalizes the run of an execution input through a warm finalize,
// which frees the export for its next file.
func closeRun(b *testing.B, finalize *emulator, input []byte) {
	b.Helper()
	var exec run.Execution
	if err := json.Unmarshal(input, &exec); err != nil {
		b.Fatal(err)
	}
	var rep run.Report
	finalize.call(b, input, &rep)
	if rep.RunID != exec.RunID || !rep.Outcome.Reconciles() {
		b.Fatalf("preparing: finalizing %s answered %+v", exec.RunID, rep)
	}
}

// mapItem is the syncbatch event for a group of one batch.
func mapItem(b *testing.B, w *benchWorld, exec run.Execution, batch int, workerRPS float64) []byte {
	b.Helper()
	var items []run.Item
	getObject(b, w.bkt, exec.ItemsKey, &items)
	for _, it := range items {
		if it.Batch == batch {
			return groupEvent(b, exec, workerRPS, it)
		}
	}
	b.Fatalf("run %s has no batch %d", exec.RunID, batch)
	return nil
}

// ingestInvocations: each invocation announces a new file, so each plans and
// starts a run. Each run is closed before the next file arrives, untimed, so
// every file finds the export idle rather than queued behind a run.
func ingestInvocations(b *testing.B, w *benchWorld) func(int) invocations {
	finalize := w.helper(b, "finalize")
	var open string // the run started last, not closed yet
	closeOpen := func() {
		if open != "" {
			closeRun(b, finalize, w.executionInput(b, open))
			open = ""
		}
	}
	start := func(name string) func(*emulator) {
		event, runID := w.putSegment(b, name)
		return func(e *emulator) {
			expectStarted(b, e, event, runID)
			open = runID
		}
	}
	return func(i int) invocations {
		closeOpen()
		first := start(fmt.Sprintf("bench-%d-first.csv", i))
		var warm func(*emulator)
		return invocations{
			first: first,
			between: func() {
				closeOpen()
				warm = start(fmt.Sprintf("bench-%d-warm.csv", i)) // its file arrives after the first run closed
			},
			warm: func(e *emulator) { warm(e) },
		}
	}
}

// syncbatchInvocations: the first and the second batch of a new run, each
// sent and its result written; between them, untimed, the container's
// pacing interval passes, so the warm invoke measures the function, not its
// rate limiter.
func syncbatchInvocations(b *testing.B, w *benchWorld) func(int) invocations {
	ingest, finalize := w.helper(b, "ingest"), w.helper(b, "finalize")
	var open []byte // the last iteration's run
	return func(i int) invocations {
		if open != nil {
			closeRun(b, finalize, open)
		}
		input, exec, batches := w.startRun(b, ingest, fmt.Sprintf("bench-%d.csv", i))
		open = input
		// A share of 1,000 requests/s: a cold container's first request
		// waits a random phase of one interval (here at most 1 ms, at the
		// run's own share 400 ms), which is pacing, not start-up.
		const share = 1000.0
		send := func(batch int) func(*emulator) {
			event := mapItem(b, w, exec, batch, share)
			return func(e *emulator) {
				var res run.GroupSummary
				e.call(b, event, &res)
				if res.First != batch || res.Sent == 0 || res.Skipped != 0 {
					b.Fatalf("syncbatch answered %+v for batch %d of %s; want it sent", res, batch, exec.RunID)
				}
			}
		}
		pacing := time.Duration(float64(time.Second) / share)
		return invocations{first: send(batches[0]), warm: send(batches[1]), between: func() { time.Sleep(pacing) }}
	}
}

// finalizeInvocations: each invocation closes a new run whose batches were
// all sent; the warm one's run starts once the first one's has closed.
func finalizeInvocations(b *testing.B, w *benchWorld) func(int) invocations {
	ingest, syncbatch := w.helper(b, "ingest"), w.helper(b, "syncbatch")
	sentRun := func(name string) func(*emulator) {
		// The last finalize promoted a snapshot of these very contacts;
		// without it the new run has every contact to send again.
		if err := w.bkt.Delete(context.Background(), "state/"+exportName+"/snapshot"); err != nil {
			b.Fatal(err)
		}
		input, exec, batches := w.startRun(b, ingest, name)
		for _, batch := range batches {
			// Preparation, not measured: one worker may use the whole budget.
			var res run.GroupSummary
			syncbatch.call(b, mapItem(b, w, exec, batch, 100), &res)
			if res.Sent == 0 {
				b.Fatalf("preparing: batch %d of %s answered %+v", batch, exec.RunID, res)
			}
		}
		return func(e *emulator) {
			var rep run.Report
			e.call(b, input, &rep)
			if rep.RunID != exec.RunID || rep.Status != run.StatusSucceeded || !rep.Outcome.Reconciles() ||
				!rep.SnapshotPromoted || rep.Batches.Settled != len(batches) {
				b.Fatalf("finalize answered %+v; want %s succeeded with %d batches settled", rep, exec.RunID, len(batches))
			}
		}
	}
	return func(i int) invocations {
		var warm func(*emulator)
		return invocations{
			first:   sentRun(fmt.Sprintf("bench-%d-first.csv", i)),
			between: func() { warm = sentRun(fmt.Sprintf("bench-%d-warm.csv", i)) },
			warm:    func(e *emulator) { warm(e) },
		}
	}
}

// refreshInvocations: a dry run of the export, which plans the newest file
// and changes nothing, so every invocation does the same work.
func refreshInvocations(b *testing.B, w *benchWorld) func(int) invocations {
	key := "segments/vip-customers/bench.csv"
	info := putObject(b, w.bkt, key, w.segment)
	runID := run.RunID(exportName, run.Source{Key: key, ETag: info.ETag, Size: info.Size, VersionID: info.VersionID}, w.cfgVersion)
	event := mustJSON(b, readJSON(b, "events/manual-dry-run.json"))
	dryRun := func(e *emulator) {
		var res []run.Result
		e.call(b, event, &res)
		if len(res) != 1 || res[0].RunID != runID || res[0].Status != run.StatusDryRun || res[0].Started ||
			res[0].Counts.Rows == 0 {
			b.Fatalf("refresh answered %+v; want a dry run of %s", res, runID)
		}
	}
	return func(int) invocations { return invocations{first: dryRun, warm: dryRun} }
}

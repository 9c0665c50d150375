//go:build unix

package lambdatest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/autopilot/sim"
	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

const (
	bucket     = "segpilot-data" // the bucket events/s3-put.json names
	exportName = "vip-newsletter"
	listTitle  = "VIP customers"
	secretID   = "segpilot/autopilot"
	apiKey     = "ak-LAMBDATEST-3c9f1e0b7d2a4f68"
	wrongKey   = "ak-REVOKED-8e1d5b2c9a7f3e04"
	machineARN = "arn:aws:states:eu-west-1:123456789012:stateMachine:segpilot-export"
)

// readJSON reads a file of the repository as a JSON object.
// functionEnv is what every function runs with here: dummy credentials, no
// shared AWS config, the loopback endpoints, and debug-level JSON logs (the
// most the functions ever log, for the key-leak check).
func functionEnv(t testing.TB, s3URL, secretsURL, sfnURL string) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"TMPDIR=" + t.TempDir(),
		"AWS_ACCESS_KEY_ID=AKIDLAMBDATEST",
		"AWS_SECRET_ACCESS_KEY=not-a-secret",
		"AWS_REGION=eu-west-1",
		"AWS_CONFIG_FILE=" + filepath.Join(t.TempDir(), "none"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(t.TempDir(), "none"),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_LAMBDA_LOG_FORMAT=JSON",
		"AWS_LAMBDA_LOG_LEVEL=DEBUG",
		"BUCKET=" + bucket,
		"STATE_MACHINE_ARN=" + machineARN,
		awsx.EnvS3Endpoint + "=" + s3URL,
		awsx.EnvSecretsEndpoint + "=" + secretsURL,
		awsx.EnvSFNEndpoint + "=" + sfnURL,
	}
}

func readJSON(t testing.TB, rel string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return v
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// groupEvent is the syncbatch event for a group of a run's batches, in
// events/syncbatch-group.json's shape, as the Map's ItemBatcher builds it.
func groupEvent(t testing.TB, exec run.Execution, workerRPS float64, items ...run.Item) []byte {
	t.Helper()
	ev := readJSON(t, "events/syncbatch-group.json")
	in := ev["BatchInput"].(map[string]any)
	in["export"], in["runId"], in["listId"], in["workerRps"] = exec.Export, exec.RunID, exec.ListID, workerRPS
	in["attempt"], in["plan"] = exec.Attempt, exec.Plan
	ev["Items"] = items
	return mustJSON(t, ev)
}

// aslContract reads what the state machine takes from its execution input
// ($.x paths of the Map state) and the keys of the BatchInput its
// ItemBatcher gives each syncbatch group.
func aslContract(t testing.TB) (inputFields, batchInputKeys []string) {
	t.Helper()
	var asl struct {
		States struct {
			SyncBatches struct {
				ItemReader struct {
					Parameters map[string]string
				}
				ItemBatcher struct {
					MaxItemsPerBatchPath string
					BatchInput           map[string]string
				}
				MaxConcurrencyPath string
				ResultWriter       struct {
					Parameters map[string]string
				}
			}
		}
	}
	raw, err := os.ReadFile("../../statemachine/export.asl.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &asl); err != nil {
		t.Fatal(err)
	}
	m := asl.States.SyncBatches
	paths := []string{m.ItemReader.Parameters["Key.$"], m.MaxConcurrencyPath, m.ResultWriter.Parameters["Prefix.$"],
		m.ItemBatcher.MaxItemsPerBatchPath}
	for k, p := range m.ItemBatcher.BatchInput {
		paths = append(paths, p)
		batchInputKeys = append(batchInputKeys, strings.TrimSuffix(k, ".$")) // "k.$": the value is a path
	}
	for _, p := range paths {
		if f, ok := strings.CutPrefix(p, "$."); ok { // "$$.Map..." is the context object
			inputFields = append(inputFields, f)
		}
	}
	slices.Sort(inputFields)
	if len(inputFields) < 5 {
		t.Fatalf("the ASL's Map state reads only %v from the input; has its shape changed?", inputFields)
	}
	slices.Sort(batchInputKeys)
	return inputFields, batchInputKeys
}

func putObject(t testing.TB, st *s3store.Store, key string, body []byte) store.ObjectInfo {
	t.Helper()
	info, err := st.Put(context.Background(), key, bytes.NewReader(body), store.PutOptions{})
	if err != nil {
		t.Fatalf("putting %s: %v", key, err)
	}
	return info
}

func getObject(t testing.TB, st *s3store.Store, key string, v any) {
	t.Helper()
	rc, _, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("getting %s: %v", key, err)
	}
	defer rc.Close()
	raw, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decoding %s: %v", key, err)
	}
}

// TestFunctions runs one export through the four built bootstraps, each under
// the emulator, event by event as S3, Step Functions and EventBridge would
// deliver them, with the sample events' shapes.
func TestFunctions(t *testing.T) {
	t.Parallel()
	rie := rieBinary(t)
	bootstraps := hostBuild(t)

	// The world: S3, Secrets Manager, Step Functions and Autopilot on loopback.
	s3URL, bkt := newS3(t, bucket)
	secretsSrv := httptest.NewServer(fakeSecrets{values: map[string]string{secretID: `{"apiKey":"` + apiKey + `"}`}})
	t.Cleanup(secretsSrv.Close)
	// The same secret, holding a key Autopilot no longer accepts.
	revokedSrv := httptest.NewServer(fakeSecrets{values: map[string]string{secretID: wrongKey}})
	t.Cleanup(revokedSrv.Close)
	sfn := &fakeSFN{arn: machineARN}
	sfnSrv := httptest.NewServer(sfn)
	t.Cleanup(sfnSrv.Close)
	autopilot := sim.New(sim.Options{APIKey: apiKey})
	apSrv := httptest.NewServer(autopilot)
	t.Cleanup(apSrv.Close)

	// The shipped example config, pointed at the simulator, at the full
	// budget so the batches are not paced for seconds.
	example := testutil.ExampleConfig(t, "autopilot")
	cfgYAML := strings.Replace(string(example), "https://api2.autopilothq.com", apSrv.URL, 1)
	cfgYAML = strings.Replace(cfgYAML, "requestsPerSecond: 5 ", "requestsPerSecond: 100 ", 1)
	cfg, err := config.Load(run.ConfigKey, []byte(cfgYAML))
	if err != nil {
		t.Fatalf("the edited example config does not load: %v", err)
	}
	putObject(t, bkt, run.ConfigKey, []byte(cfgYAML))

	// The segment file at the key events/s3-put.json names (URL-encoded there).
	s3Event := readJSON(t, "events/s3-put.json")
	object := s3Event["Records"].([]any)[0].(map[string]any)["s3"].(map[string]any)["object"].(map[string]any)
	segmentKey, err := url.QueryUnescape(object["key"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var csv bytes.Buffer
	rows, err := sample.Write(&csv, sample.Options{Rows: 300, Seed: 11, Invalid: 20, Dupes: 50})
	if err != nil {
		t.Fatal(err)
	}
	seg := putObject(t, bkt, segmentKey, csv.Bytes())
	// The sample's shape is kept; only the object's identity is made to
	// match the file put here.
	if seg.VersionID == "" {
		t.Fatal("the versioned fake bucket gave no version id")
	}
	object["eTag"], object["size"], object["versionId"] = seg.ETag, seg.Size, seg.VersionID
	src := run.Source{Key: segmentKey, ETag: seg.ETag, Size: seg.Size, VersionID: seg.VersionID}
	runID := run.RunID(exportName, src, cfg.Version)

	// Each function reads the connection's own secret (apiKeySecret).
	base := functionEnv(t, s3URL, secretsSrv.URL, sfnSrv.URL)
	ingest := startEmulator(t, rie, "ingest", bootstraps["ingest"], base)
	syncbatch := startEmulator(t, rie, "syncbatch", bootstraps["syncbatch"], base)
	revoked := startEmulator(t, rie, "syncbatch (revoked key)", bootstraps["syncbatch"], functionEnv(t, s3URL, revokedSrv.URL, sfnSrv.URL))
	finalize := startEmulator(t, rie, "finalize", bootstraps["finalize"], base)
	refresh := startEmulator(t, rie, "refresh", bootstraps["refresh"], base)
	emulators := []*emulator{ingest, syncbatch, revoked, finalize, refresh}

	// Ingest: one run, started once, with the input the ASL reads.
	var started []run.Result
	ingest.call(t, mustJSON(t, s3Event), &started)
	if len(started) != 1 || started[0].Export != exportName || started[0].RunID != runID ||
		started[0].Status != run.StatusRunning || !started[0].Started {
		t.Fatalf("ingest answered %+v; want one started running run %s", started, runID)
	}
	execs, _ := sfn.snapshot()
	if len(execs) != 1 || execs[0].Name != runID+"-1" {
		t.Fatalf("StartExecution calls accepted: %+v; want one named %s-1 (attempt 1)", execs, runID)
	}
	inputFields, batchInputKeys := aslContract(t)
	var input map[string]any
	if err := json.Unmarshal([]byte(execs[0].Input), &input); err != nil {
		t.Fatalf("execution input %s: %v", execs[0].Input, err)
	}
	for _, f := range inputFields {
		if v, ok := input[f]; !ok || v == "" || v == 0.0 {
			t.Errorf("execution input %s: the ASL reads $.%s, got %v", execs[0].Input, f, v)
		}
	}
	var exec run.Execution
	if err := json.Unmarshal([]byte(execs[0].Input), &exec); err != nil {
		t.Fatal(err)
	}
	concurrency, workerRPS := run.Pacing(100)
	wantExec := run.Execution{Export: exportName, RunID: runID, Attempt: 1, Plan: "none",
		ItemsKey:         "runs/" + exportName + "/" + runID + "/plans/none/items.json",
		MapResultsPrefix: "runs/" + exportName + "/" + runID + "/attempts/1/map",
		ListID:           exec.ListID, Concurrency: concurrency, WorkerRPS: workerRPS, StartedAt: exec.StartedAt, GroupSize: exec.GroupSize}
	if exec != wantExec || exec.StartedAt.IsZero() {
		t.Errorf("execution input = %+v, want %+v", exec, wantExec)
	}
	lists := autopilot.Dump().Lists
	if len(lists) != 1 || lists[0].Title != listTitle || lists[0].ID != exec.ListID {
		t.Fatalf("simulator lists = %+v; want one %q with the execution's listId %s", lists, listTitle, exec.ListID)
	}

	// The same event again (S3 delivers at least once): no second run.
	var again []run.Result
	ingest.call(t, mustJSON(t, s3Event), &again)
	if len(again) != 1 || again[0].RunID != runID || again[0].Started {
		t.Fatalf("duplicate delivery answered %+v; want run %s not started again", again, runID)
	}
	// The lock names the run's execution, which Step Functions says runs:
	// the duplicate does not even try to start it.
	if execs, calls := sfn.snapshot(); len(execs) != 1 || calls != 1 {
		t.Fatalf("after a duplicate delivery: %d executions from %d StartExecution calls; want 1 from 1", len(execs), calls)
	}

	// Syncbatch groups as the Map's ItemBatcher builds them, on the sample's shape.
	template := readJSON(t, "events/syncbatch-group.json")
	if got := slices.Sorted(maps.Keys(template["BatchInput"].(map[string]any))); !slices.Equal(got, batchInputKeys) {
		t.Fatalf("events/syncbatch-group.json's BatchInput has fields %v; the ASL's ItemBatcher passes %v", got, batchInputKeys)
	}
	var groups []run.Item
	getObject(t, bkt, exec.ItemsKey, &groups)
	items := run.BatchItems(groups)
	if len(items) < 3 {
		t.Fatalf("items.json lists %d batches; want several for %d rows", len(items), rows)
	}
	for _, it := range items {
		if it.Length == 0 || it.CRC32C == "" {
			t.Fatalf("items.json item %+v: want each batch's byte range in %s and its checksum", it, plan.BatchesFile)
		}
	}

	// A plan changed after planning is refused before anything is sent.
	tampered := slices.Clone(items[:2])
	tampered[1].CRC32C = "AAAAAA=="
	if _, lerr := syncbatch.invoke(t, groupEvent(t, exec, exec.WorkerRPS, tampered...)); lerr == nil || lerr.ErrorType != "Corrupt" {
		t.Fatalf("syncbatch with a wrong checksum answered %+v; want errorType Corrupt", lerr)
	}
	if n := autopilot.Counters().ByRoute["POST /contacts"][200]; n != 0 {
		t.Fatalf("a refused group sent %d bulk upserts", n)
	}

	// A refused key stops the group with the error type the ASL catches.
	if _, lerr := revoked.invoke(t, groupEvent(t, exec, exec.WorkerRPS, items[0])); lerr == nil || lerr.ErrorType != "Unauthorized" {
		t.Fatalf("syncbatch with a revoked key answered %+v; want errorType Unauthorized", lerr)
	}

	// The first batch alone, then a group of the rest: one ranged GET each.
	var first, rest run.GroupSummary
	syncbatch.call(t, groupEvent(t, exec, exec.WorkerRPS, items[0]), &first)
	syncbatch.call(t, groupEvent(t, exec, exec.WorkerRPS, items[1:]...), &rest)
	if first.First != items[0].Batch || first.Sent == 0 || first.Skipped != 0 ||
		rest.First != items[1].Batch || rest.Last != items[len(items)-1].Batch || rest.Sent == 0 || rest.Skipped != 0 {
		t.Fatalf("the groups answered %+v and %+v; want every batch sent", first, rest)
	}
	sent := first.Sent + rest.Sent
	// A retried group (Step Functions retries, or redrives) sends nothing again.
	var retried run.GroupSummary
	syncbatch.call(t, groupEvent(t, exec, exec.WorkerRPS, items...), &retried)
	if retried.Skipped != len(items) || retried.Sent != 0 {
		t.Fatalf("a repeated group answered %+v; want every batch skipped", retried)
	}
	state := autopilot.Dump()
	if got := len(state.Lists[0].Members); got != sent {
		t.Fatalf("list %q holds %d contacts; syncbatch reported %d sent", listTitle, got, sent)
	}
	if !slices.Contains(state.Lists[0].Members, sample.Email(1)) {
		t.Fatalf("list %q lacks %s", listTitle, sample.Email(1))
	}

	// Finalize gets the execution input (events/finalize.json's shape).
	finalizeTemplate := readJSON(t, "events/finalize.json")
	for k := range finalizeTemplate {
		if _, ok := input[k]; !ok {
			t.Errorf("events/finalize.json has %q, which the execution input lacks", k)
		}
	}
	var rep run.Report
	finalize.call(t, []byte(execs[0].Input), &rep)
	o := rep.Outcome
	if rep.Status != run.StatusSucceeded || !o.Reconciles() || o.Rows != rows || o.Sent != sent ||
		o.Rejected == 0 || o.Duplicates == 0 || !rep.SnapshotPromoted || rep.Batches.Settled != len(items) {
		t.Fatalf("finalize answered %+v; want succeeded, reconciling %d rows, %d sent, promoted", rep, rows, sent)
	}
	var stored run.Report
	getObject(t, bkt, "runs/"+exportName+"/"+runID+"/report.json", &stored)
	if stored.Status != rep.Status || stored.Outcome != rep.Outcome || stored.RunID != runID {
		t.Fatalf("report.json = %+v; want what finalize answered, %+v", stored, rep)
	}
	if !strings.Contains(finalize.out.String(), `"_aws"`) {
		t.Errorf("finalize wrote no Embedded Metric Format record to stdout:\n%s", finalize.out)
	}

	// Refresh, every way it is triggered: the file was exported already.
	for _, name := range []string{"manual-dry-run", "manual", "manual-allow-large-removal", "schedule", "scheduler"} {
		var res []run.Result
		refresh.call(t, mustJSON(t, readJSON(t, "events/"+name+".json")), &res)
		if len(res) != 1 || res[0].Export != exportName || res[0].RunID != runID || res[0].Status != run.StatusUpToDate {
			t.Errorf("refresh with events/%s.json answered %+v; want %s up-to-date", name, res, runID)
		}
	}
	if execs, _ := sfn.snapshot(); len(execs) != 1 {
		t.Errorf("refresh started executions: %+v", execs)
	}

	// A new file: the dry run plans it without starting anything.
	var next bytes.Buffer
	if _, err := sample.Write(&next, sample.Options{Rows: 300, Seed: 11, Invalid: 20, Dupes: 50, Changed: 100, Removed: 20}); err != nil {
		t.Fatal(err)
	}
	putObject(t, bkt, "segments/vip-customers/vip customers 2026-11-29.csv", next.Bytes())
	var dry []run.Result
	refresh.call(t, mustJSON(t, readJSON(t, "events/manual-dry-run.json")), &dry)
	if len(dry) != 1 || dry[0].Status != run.StatusDryRun || dry[0].Started || dry[0].RunID == runID ||
		dry[0].Counts.Changed == 0 || dry[0].Counts.Removed == 0 {
		t.Errorf("dry run on a new file answered %+v; want a planned dry run with changes and removals", dry)
	}
	if execs, _ := sfn.snapshot(); len(execs) != 1 {
		t.Errorf("a dry run started executions: %+v", execs)
	}

	// The new file runs; an admin stops its execution, so its finalize never
	// frees the export's lock. The next file does not wait a day for it.
	var second []run.Result
	refresh.call(t, mustJSON(t, readJSON(t, "events/manual.json")), &second)
	if len(second) != 1 || second[0].Status != run.StatusRunning || !second[0].Started {
		t.Fatalf("refresh on the new file answered %+v; want it started", second)
	}
	execs, _ = sfn.snapshot()
	sfn.stop(execs[len(execs)-1].Name, time.Now().Add(-20*time.Minute)) // its last invocations long done
	var third bytes.Buffer
	if _, err := sample.Write(&third, sample.Options{Rows: 300, Seed: 11, Changed: 50}); err != nil {
		t.Fatal(err)
	}
	putObject(t, bkt, "segments/vip-customers/vip customers 2026-11-30.csv", third.Bytes())
	var after []run.Result
	refresh.call(t, mustJSON(t, readJSON(t, "events/manual.json")), &after)
	if len(after) != 1 || after[0].Status != run.StatusRunning || !after[0].Started {
		t.Fatalf("refresh after the run was stopped answered %+v; want the newest file started", after)
	}
	var abandoned run.Report
	getObject(t, bkt, "runs/"+exportName+"/"+second[0].RunID+"/report.json", &abandoned)
	if abandoned.Status != run.StatusFailed || !strings.Contains(abandoned.Message, "stopped by hand") {
		t.Fatalf("the stopped run's report: %s %q; want failed, saying why", abandoned.Status, abandoned.Message)
	}

	// An undo is a manual invoke (events/undo.json, naming the first run):
	// a run of its own, queued behind the one in progress.
	undoEvent := readJSON(t, "events/undo.json")
	undoEvent["undo"] = runID
	var undo []run.Result
	refresh.call(t, mustJSON(t, undoEvent), &undo)
	if len(undo) != 1 || undo[0].Export != exportName || !strings.HasPrefix(undo[0].RunID, exportName+"-undo-") || undo[0].Status != run.StatusQueued {
		t.Errorf("refresh with events/undo.json answered %+v; want the undo of %s queued behind the run in progress", undo, runID)
	}

	for _, e := range emulators {
		out := e.out.String()
		if out == "" {
			t.Errorf("%s wrote no output at all; the key-leak check would prove nothing", e.name)
		}
		for _, key := range []string{apiKey, wrongKey} {
			if strings.Contains(out, key) {
				t.Errorf("%s's output contains an API key", e.name)
			}
		}
	}
}

// TestBootstrapSizes builds each function as the Makefile's LAMBDA_BUILD
// does and keeps the deployment packages small: under 20 MB, and none
// more than 30 % above syncbatch's. A function linking code that calls
// methods by name, as executing an html/template does, keeps every
// exported method of every type it links (the AWS SDK's too): the run
// page's template took ingest, finalize and refresh from 11 MB to 19.
func TestBootstrapSizes(t *testing.T) {
	t.Parallel()
	const limit, overSyncBatch = 20 << 20, 1.3
	bootstraps := goBuild(t, t.TempDir(), []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64"},
		"-tags", "lambda.norpc", "-trimpath", "-ldflags=-s -w")
	sizes := map[string]int64{}
	for _, fn := range functions {
		info, err := os.Stat(bootstraps[fn])
		if err != nil {
			t.Fatal(err)
		}
		sizes[fn] = info.Size()
	}
	mb := func(n int64) float64 { return float64(n) / (1 << 20) }
	for _, fn := range functions {
		if sizes[fn] >= limit {
			t.Errorf("%s bootstrap is %.1f MB; want < 20 MB", fn, mb(sizes[fn]))
		}
		if float64(sizes[fn]) > overSyncBatch*float64(sizes["syncbatch"]) {
			t.Errorf("%s bootstrap is %.1f MB, syncbatch's %.1f MB; want at most %.0f %% more (does it call methods by name, as text/template does?)",
				fn, mb(sizes[fn]), mb(sizes["syncbatch"]), 100*(overSyncBatch-1))
		}
	}
}

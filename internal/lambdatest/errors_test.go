//go:build unix

package lambdatest

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/autopilot/sim"
	"github.com/segpilot/segpilot/shared/run"
)

// faultyS3 forwards to an S3 fake, but answers 503 SlowDown, as S3 does
// when overloaded, to requests whose path contains the current fault.
type faultyS3 struct {
	next  http.Handler
	fault atomic.Value // string; "" = none
}

func (f *faultyS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if fault, _ := f.fault.Load().(string); fault != "" && strings.Contains(r.URL.Path, fault) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
		return
	}
	f.next.ServeHTTP(w, r)
}

// hangingAPI forwards to the Autopilot simulator until hang is set; then
// it answers nothing until the caller gives up.
type hangingAPI struct {
	next    http.Handler
	hang    atomic.Bool
	release chan struct{} // closed when the test ends
}

func (h *hangingAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.hang.Load() {
		select {
		case <-r.Context().Done():
		case <-h.release:
		}
		return
	}
	h.next.ServeHTTP(w, r)
}

// TestStepErrorNames runs syncbatch and finalize under the emulator and
// checks the errorType Step Functions would see, which its Retry rules
// match: an S3 error worth retrying (503 SlowDown) is Transient, from
// either step; a batch that cannot finish before its function's timeout
// answers Transient before the timeout instead of being killed.
func TestStepErrorNames(t *testing.T) {
	t.Parallel()
	rie := rieBinary(t)
	bootstraps := hostBuild(t)

	fakeURL, bkt := newS3(t, bucket)
	target, err := url.Parse(fakeURL)
	if err != nil {
		t.Fatal(err)
	}
	s3 := &faultyS3{next: httputil.NewSingleHostReverseProxy(target)}
	s3Srv := httptest.NewServer(s3)
	t.Cleanup(s3Srv.Close)
	secretsSrv := httptest.NewServer(fakeSecrets{values: map[string]string{secretID: apiKey}})
	t.Cleanup(secretsSrv.Close)
	sfn := &fakeSFN{arn: machineARN}
	sfnSrv := httptest.NewServer(sfn)
	t.Cleanup(sfnSrv.Close)
	api := &hangingAPI{next: sim.New(sim.Options{APIKey: apiKey}), release: make(chan struct{})}
	apSrv := httptest.NewServer(api)
	t.Cleanup(apSrv.Close)
	t.Cleanup(func() { close(api.release) })

	example := testutil.ExampleConfig(t, "autopilot")
	cfgYAML := strings.Replace(string(example), "https://api2.autopilothq.com", apSrv.URL, 1)
	cfgYAML = strings.Replace(cfgYAML, "requestsPerSecond: 5 ", "requestsPerSecond: 100 ", 1)
	putObject(t, bkt, run.ConfigKey, []byte(cfgYAML))
	var csv bytes.Buffer
	if _, err := sample.Write(&csv, sample.Options{Rows: 250, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	const segmentKey = "segments/vip-customers/errors.csv"
	seg := putObject(t, bkt, segmentKey, csv.Bytes())

	// The SDK retries twice at most here, so a test waits seconds, not a minute.
	env := append(functionEnv(t, s3Srv.URL, secretsSrv.URL, sfnSrv.URL), "AWS_MAX_ATTEMPTS=2")
	const timeout = 4 // seconds
	ingest := startEmulator(t, rie, "ingest", bootstraps["ingest"], env)
	syncbatch := startEmulator(t, rie, "syncbatch", bootstraps["syncbatch"],
		append(slices.Clone(env), "AWS_LAMBDA_FUNCTION_TIMEOUT="+itoa(timeout)))
	finalize := startEmulator(t, rie, "finalize", bootstraps["finalize"], env)

	s3Event := readJSON(t, "events/s3-put.json")
	object := s3Event["Records"].([]any)[0].(map[string]any)["s3"].(map[string]any)["object"].(map[string]any)
	object["key"], object["eTag"], object["size"], object["versionId"] = url.QueryEscape(segmentKey), seg.ETag, seg.Size, seg.VersionID
	var started []run.Result
	ingest.call(t, mustJSON(t, s3Event), &started)
	if len(started) != 1 || !started[0].Started {
		t.Fatalf("ingest answered %+v", started)
	}
	execs, _ := sfn.snapshot()
	var exec run.Execution
	if err := json.Unmarshal([]byte(execs[0].Input), &exec); err != nil {
		t.Fatal(err)
	}
	var items []run.Item
	getObject(t, bkt, exec.ItemsKey, &items)
	item := func(i int) []byte { return groupEvent(t, exec, exec.WorkerRPS, items[i]) }
	expect := func(e *emulator, event []byte, want string) {
		t.Helper()
		_, lerr := e.invoke(t, event)
		if lerr == nil || lerr.ErrorType != want {
			t.Fatalf("%s answered %+v; want errorType %s\n%s", e.name, lerr, want, e.out)
		}
	}

	// S3 throttles the result write: the batch is retried, not failed.
	s3.fault.Store("/results/")
	expect(syncbatch, item(0), "Transient")
	// ... and finalize's reads of the results.
	expect(finalize, []byte(execs[0].Input), "Transient")
	s3.fault.Store("")

	// Autopilot stops answering: the batch answers before its timeout.
	// (Past its timeout the emulator kills the function and answers no
	// errorType at all; the cloud reports Sandbox.Timedout, which the
	// definition retries and the local runner reproduces.)
	api.hang.Store(true)
	began := time.Now()
	expect(syncbatch, item(1), "Transient")
	if took := time.Since(began); took >= timeout*time.Second {
		t.Fatalf("syncbatch answered after %v, at or past its %ds timeout", took, timeout)
	}
	api.hang.Store(false)

	// Once S3 and Autopilot answer again, the same batches go through.
	for i := range 2 {
		var res run.GroupSummary
		syncbatch.call(t, item(i), &res)
		if res.Sent == 0 {
			t.Fatalf("batch %d after the faults: %+v", items[i].Batch, res)
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// mutableSecrets is fakeSecrets whose values the test changes.
type mutableSecrets struct {
	mu     sync.Mutex
	values map[string]string
}

func (m *mutableSecrets) set(id, value string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.values[id] = value
}

func (m *mutableSecrets) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	values := maps.Clone(m.values)
	m.mu.Unlock()
	fakeSecrets{values: values}.ServeHTTP(w, r)
}

// TestEmptySecretIsReported: the stack creates the API-key secret as
// {"apiKey":""}. A file dropped before the key is put in must not fail
// ingest (S3's event would be retried twice and dropped, leaving no
// report): ingest answers, the run's report says to set the secret,
// nothing is started; once the key is there, the schedule runs it.
func TestEmptySecretIsReported(t *testing.T) {
	t.Parallel()
	rie := rieBinary(t)
	bootstraps := hostBuild(t)
	s3URL, bkt := newS3(t, bucket)
	secrets := &mutableSecrets{values: map[string]string{secretID: `{"apiKey":""}`}}
	secretsSrv := httptest.NewServer(secrets)
	t.Cleanup(secretsSrv.Close)
	sfn := &fakeSFN{arn: machineARN}
	sfnSrv := httptest.NewServer(sfn)
	t.Cleanup(sfnSrv.Close)
	autopilot := sim.New(sim.Options{APIKey: apiKey})
	apSrv := httptest.NewServer(autopilot)
	t.Cleanup(apSrv.Close)
	example := testutil.ExampleConfig(t, "autopilot")
	putObject(t, bkt, run.ConfigKey, []byte(strings.Replace(string(example), "https://api2.autopilothq.com", apSrv.URL, 1)))
	var csv bytes.Buffer
	if _, err := sample.Write(&csv, sample.Options{Rows: 120, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	const segmentKey = "segments/vip-customers/first.csv"
	seg := putObject(t, bkt, segmentKey, csv.Bytes())

	env := functionEnv(t, s3URL, secretsSrv.URL, sfnSrv.URL)
	ingest := startEmulator(t, rie, "ingest", bootstraps["ingest"], env)
	refresh := startEmulator(t, rie, "refresh", bootstraps["refresh"], env)

	s3Event := readJSON(t, "events/s3-put.json")
	object := s3Event["Records"].([]any)[0].(map[string]any)["s3"].(map[string]any)["object"].(map[string]any)
	object["key"], object["eTag"], object["size"], object["versionId"] = url.QueryEscape(segmentKey), seg.ETag, seg.Size, seg.VersionID
	var res []run.Result
	ingest.call(t, mustJSON(t, s3Event), &res) // fails the test on an errorType
	if len(res) != 1 || res[0].Status != run.StatusFailed || res[0].Started {
		t.Fatalf("ingest with an empty secret answered %+v; want one failed run, not started", res)
	}
	var rep run.Report
	getObject(t, bkt, "runs/"+exportName+"/"+res[0].RunID+"/report.json", &rep)
	if rep.Status != run.StatusFailed || !strings.Contains(rep.Message, "put-secret-value") {
		t.Fatalf("report %s %q; want failed, saying how to set the secret", rep.Status, rep.Message)
	}
	if execs, _ := sfn.snapshot(); len(execs) != 0 || autopilot.Counters().Total != 0 {
		t.Fatalf("with no key: %d executions, %d Autopilot requests; want none", len(execs), autopilot.Counters().Total)
	}

	secrets.set(secretID, `{"apiKey":"`+apiKey+`"}`)
	var again []run.Result
	refresh.call(t, mustJSON(t, readJSON(t, "events/scheduler.json")), &again)
	if len(again) != 1 || again[0].RunID != res[0].RunID || again[0].Status != run.StatusRunning || !again[0].Started {
		t.Fatalf("the scheduled refresh once the key is set answered %+v; want run %s started", again, res[0].RunID)
	}
}

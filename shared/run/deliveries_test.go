package run_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/run"
)

// partsOf writes n CSV parts of per rows each (p<part>-<row>@example.com)
// and returns their keys under folder, in the order written.
func (f *fixture) partsOf(folder string, n, per int) []string {
	f.t.Helper()
	var keys []string
	for p := range n {
		var b strings.Builder
		b.WriteString("Email\n")
		for r := range per {
			fmt.Fprintf(&b, "p%d-%d@example.com\n", p, r)
		}
		key := fmt.Sprintf("%spart-%05d.csv", folder, p)
		f.put(key, b.String())
		keys = append(keys, key)
	}
	return keys
}

// event delivers the S3 event of the object at key (it must exist).
func (f *fixture) event(key string, m int) []run.Result {
	f.t.Helper()
	info, err := f.st.Head(context.Background(), key)
	if err != nil {
		f.t.Fatal(err)
	}
	res, err := f.svc.Start(context.Background(), run.StartRequest{Trigger: run.TriggerS3,
		Source: run.Source{Key: key, ETag: info.ETag, Size: info.Size}, Arrived: time.Date(2026, 11, 29, 7, m, 0, 0, time.UTC)})
	if err != nil {
		f.t.Fatal(err)
	}
	return res
}

// A Spark-style folder: parts, then _SUCCESS, each with its own event,
// some twice and out of order. Nothing runs before the marker; then one
// run covers every part, its rows numbered across them.
func TestAFolderRunsOnceWhenItsMarkerLands(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const folder = "segments/vip/2026-11-29/"
	parts := f.partsOf(folder, 4, 30)
	events := append(append([]string{}, parts...), parts[2], parts[0])
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	for i, key := range events {
		for _, res := range f.event(key, i) {
			if res.Status != run.StatusWaiting || !strings.Contains(res.Message, "a manifest or a _SUCCESS marker") {
				t.Fatalf("event for %s before the marker: %+v; want waiting, saying for what", key, res)
			}
		}
	}
	if runs := f.cloud.runs(); len(runs) != 0 {
		t.Fatalf("executions %v before the marker", runs)
	}
	f.put(folder+"_SUCCESS", "")
	f.put(folder+"part-00000.csv.crc", "crc") // never a part
	for i, key := range []string{folder + "_SUCCESS", folder + "part-00000.csv.crc", parts[3], folder + "_SUCCESS"} {
		f.event(key, 10+i)
	}
	runs := f.cloud.runs()
	if len(runs) != 1 {
		t.Fatalf("executions %v after the marker and more events; want one", runs)
	}
	ex := f.cloud.last(t)
	f.sendAll(f.svc, ex)
	rep := f.finish(f.svc, ex)
	if rep.Status != run.StatusSucceeded || rep.Plan.Rows != 120 || rep.Outcome.Sent != 120 || rep.Source.Key != folder || rep.Source.Parts != 4 {
		t.Fatalf("report %s, plan %+v, sent %d, source %+v; want all 120 rows of the 4 parts", rep.Status, rep.Plan, rep.Outcome.Sent, rep.Source)
	}
}

// Every object of a Spark folder already written, their events come in
// any order, the marker's first: one run, of every part.
func TestTheMarkersEventFirstStillRunsEveryPart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const folder = "segments/vip/2026-11-30/"
	parts := f.partsOf(folder, 3, 20)
	f.put(folder+"_SUCCESS", "")
	for i, key := range append([]string{folder + "_SUCCESS"}, parts...) {
		f.event(key, i)
	}
	if runs := f.cloud.runs(); len(runs) != 1 {
		t.Fatalf("executions %v; want one", runs)
	}
	ex := f.cloud.last(t)
	f.sendAll(f.svc, ex)
	if rep := f.finish(f.svc, ex); rep.Plan.Rows != 60 {
		t.Fatalf("plan %+v; want the 3 parts' 60 rows", rep.Plan)
	}
}

// A Redshift-style folder whose manifest lands before its last part (in
// event order, or in fact): it waits for every part the manifest names,
// at the size it gives, then runs once.
func TestAManifestWaitsForEveryPartItNames(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const folder = "segments/vip/unload-1/"
	parts := f.partsOf(folder, 3, 10)
	var entries []string
	for _, k := range parts {
		info, _ := f.st.Head(context.Background(), k)
		entries = append(entries, fmt.Sprintf(`{"url":"s3://warehouse/unload-1/%s","meta":{"content_length":%d}}`, k[len(folder):], info.Size))
	}
	last := parts[2]
	if err := f.st.Delete(context.Background(), last); err != nil { // not written yet
		t.Fatal(err)
	}
	f.put(folder+"manifest", `{"entries":[`+strings.Join(entries, ",")+`]}`)
	for i, key := range []string{folder + "manifest", parts[0], parts[1], folder + "manifest"} {
		for _, res := range f.event(key, i) {
			if res.Status != run.StatusWaiting || !strings.Contains(res.Message, "part-00002.csv") {
				t.Fatalf("event for %s, the last part missing: %+v; want waiting for it", key, res)
			}
		}
	}
	f.partsOf(folder, 3, 10) // the last part lands (the others again, the same bytes)
	f.event(last, 5)
	f.event(last, 6)
	if runs := f.cloud.runs(); len(runs) != 1 {
		t.Fatalf("executions %v; want one, after the last part", runs)
	}
}

// Rows rejected in a part name the part and the row there; the run's row
// numbers go on across the parts.
func TestRejectionsNameTheirPart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const folder = "segments/vip/run/"
	f.put(folder+"part-0.csv", "Email\na@example.com\nnot-an-email\n")
	f.put(folder+"part-1.csv", "Email\nb@example.com\nalso bad\n")
	f.put(folder+"_SUCCESS", "")
	f.event(folder+"_SUCCESS", 1)
	ex := f.cloud.last(t)
	f.sendAll(f.svc, ex)
	rep := f.finish(f.svc, ex)
	rc, _, err := f.st.Get(context.Background(), rep.Rejected)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rows, err := csv.NewReader(rc).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(rows[1:])
	if len(rows) != 3 || !strings.Contains(got, "[2 not-an-email part part-0.csv, row 2:") || !strings.Contains(got, "[4 also bad part part-1.csv, row 2:") {
		t.Fatalf("rejected.csv %v; want rows 2 and 4, each naming its part and row", rows)
	}
}

// Snowflake writes no marker: an upsert export with a quiet period takes
// the folder as whole once no part has arrived for that long, found by
// the sweep, with no event.
func TestAQuietFolderRunsFromTheSweep(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.put(run.ConfigKey, strings.Replace(queueConfig, "    mode: upsert\n", "    mode: upsert\n    quietPeriod: 15m\n", 1))
	const folder = "segments/vip/snow/"
	parts := f.partsOf(folder, 2, 10)
	f.now = time.Now() // the parts' times are the disk's
	for i, k := range parts {
		if res := f.event(k, i); res[0].Status != run.StatusWaiting || !strings.Contains(res[0].Message, "15m0s without a new part") {
			t.Fatalf("%s: %+v", k, res)
		}
	}
	if _, err := f.svc.Sweep(context.Background()); err != nil || len(f.cloud.runs()) != 0 {
		t.Fatalf("a sweep within the quiet period: %v, executions %v", err, f.cloud.runs())
	}
	f.now = f.now.Add(16 * time.Minute)
	if _, err := f.svc.Sweep(context.Background()); err != nil || len(f.cloud.runs()) != 1 {
		t.Fatalf("a sweep after the quiet period: %v, executions %v; want one", err, f.cloud.runs())
	}
	if _, err := f.svc.Sweep(context.Background()); err != nil || len(f.cloud.runs()) != 1 {
		t.Fatalf("another sweep: %v, executions %v; want still one", err, f.cloud.runs())
	}
}

// A folder that never becomes whole runs nothing, and its report says so
// once, after incompleteAfter: what it holds and lacks; no alarm (it is
// not an invalid file).
func TestAFolderThatNeverCompletesIsReportedOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const folder = "segments/vip/broken-job/"
	parts := f.partsOf(folder, 2, 5)
	f.event(parts[0], 1)
	f.now = f.now.Add(time.Hour)
	if _, err := f.svc.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	reps, err := run.ListReports(context.Background(), f.st, "vip")
	if err != nil || len(reps) != 0 {
		t.Fatalf("reports after an hour: %v, %v; want none yet", reps, err)
	}
	f.now = f.now.Add(6 * time.Hour)
	for range 2 {
		if _, err := f.svc.Sweep(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	reps, err = run.ListReports(context.Background(), f.st, "vip")
	if err != nil || len(reps) != 1 {
		t.Fatalf("reports: %v, %v; want one", reps, err)
	}
	rep := reps[0]
	if rep.Status != run.StatusIncomplete || !strings.Contains(rep.Message, "2 parts, waiting for a manifest or a _SUCCESS marker") || len(f.cloud.runs()) != 0 {
		t.Fatalf("report %s %q, executions %v; want incomplete, naming what it lacks, nothing run", rep.Status, rep.Message, f.cloud.runs())
	}
	first := rep.FinishedAt
	f.now = f.now.Add(time.Hour)
	if _, err := f.svc.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if again, _ := run.ReadReport(context.Background(), f.st, "vip", rep.RunID); !again.FinishedAt.Equal(first) {
		t.Fatalf("the incomplete folder was reported again at %v", again.FinishedAt)
	}
}

// What is never a segment is never a run, nor an invalid one: a job's
// scratch, checksums, lock files; a marker outside a folder.
func TestWhatIsNotASegmentIsLeftAlone(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, key := range []string{"segments/vip/_SUCCESS", "segments/vip/~$customers.csv", "segments/vip/.DS_Store",
		"segments/vip/run/_temporary/0/part-0.csv", "segments/vip/run/part-0.csv.crc"} {
		f.put(key, "x")
		if res := f.event(key, 1); len(res) != 0 {
			t.Errorf("%s: %+v; want nothing", key, res)
		}
	}
	if reps, _ := run.ListReports(context.Background(), f.st, "vip"); len(reps) != 0 || len(f.cloud.runs()) != 0 {
		t.Fatalf("reports %v, executions %v", reps, f.cloud.runs())
	}
}

// The schedule re-runs the newest whole delivery: a folder newer than the
// newest file, not a newer folder still being written.
func TestRefreshRunsTheNewestWholeDelivery(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.put("segments/vip/old.csv", "Email\nold@example.com\n")
	time.Sleep(20 * time.Millisecond) // the folder store's times are the disk's
	f.partsOf("segments/vip/b-whole/", 2, 3)
	f.put("segments/vip/b-whole/_SUCCESS", "")
	time.Sleep(20 * time.Millisecond)
	f.partsOf("segments/vip/c-writing/", 1, 3)
	res, err := f.svc.Refresh(context.Background(), run.RefreshRequest{Trigger: run.TriggerSchedule})
	if err != nil || len(res) != 1 || res[0].Status != run.StatusRunning || res[0].Counts.Rows != 6 {
		t.Fatalf("refresh: %+v, %v; want the whole folder's 6 rows running", res, err)
	}
}

package run_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

// recorder is Autopilot accepting every contact; it records each upsert
// call's emails. Emails in failing are answered "failed" (not delivered,
// worth retrying); with untilDone, an upsert answers only once its
// context ends (the answer arriving just as the time runs out).
type recorder struct {
	listOnly
	mu        sync.Mutex
	calls     [][]string
	failing   map[string]bool
	untilDone bool
}

func (r *recorder) Upsert(ctx context.Context, _ string, cs []dest.Contact) ([]dest.Outcome, error) {
	if r.untilDone {
		<-ctx.Done()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]dest.Outcome, len(cs))
	var emails []string
	for i, c := range cs {
		out[i] = dest.Outcome{Email: c.Email, Status: dest.Sent}
		if r.failing[c.Email] {
			out[i] = dest.Outcome{Email: c.Email, Status: dest.Failed, Reason: "503 Service Unavailable"}
			continue
		}
		emails = append(emails, c.Email)
	}
	r.calls = append(r.calls, emails)
	return out, nil
}

func (r *recorder) sent() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Concat(r.calls...)
}

// readCounter counts reads of the plan's batches.
type readCounter struct {
	store.ObjectStore
	mu           sync.Mutex
	gets, ranges int // of batches.jsonl
}

func (c *readCounter) Get(ctx context.Context, key string) (io.ReadCloser, store.ObjectInfo, error) {
	if strings.HasSuffix(key, "/"+plan.BatchesFile) {
		c.mu.Lock()
		c.gets++
		c.mu.Unlock()
	}
	return c.ObjectStore.Get(ctx, key)
}

func (c *readCounter) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if strings.HasSuffix(key, "/"+plan.BatchesFile) {
		c.mu.Lock()
		c.ranges++
		c.mu.Unlock()
	}
	return c.ObjectStore.GetRange(ctx, key, offset, length)
}

func customers(n int) []string {
	emails := make([]string, n)
	for i := range emails {
		emails[i] = fmt.Sprintf("c%04d@example.com", i)
	}
	return emails
}

// plannedGroup plans n contacts and returns the run's execution and one
// group of all its batches.
func (f *queueFixture) plannedGroup(n int) (run.Execution, run.Group) {
	f.t.Helper()
	ex, _ := f.planned(customers(n)...)
	return ex, run.Group{Items: f.items(ex), BatchInput: batchInput(ex)}
}

func (f *queueFixture) settled(ex run.Execution, batch int) bool {
	f.t.Helper()
	_, err := f.st.Head(context.Background(), fmt.Sprintf("runs/%s/%s/results/%06d.json", ex.Export, ex.RunID, batch))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		f.t.Fatal(err)
	}
	return err == nil
}

// A group's batches are read with one ranged GET and sent in order with one
// destination; each batch gets its result file; a repeat sends nothing.
func TestSyncBatchSendsAGroupFromOneRangedRead(t *testing.T) {
	t.Parallel()
	f := newQueueFixture(t)
	ex, g := f.plannedGroup(450)
	if len(g.Items) != 5 {
		t.Fatalf("%d batches, want 5", len(g.Items))
	}
	svc := f.service()
	reads := &readCounter{ObjectStore: f.st}
	svc.Store = reads
	dest := &recorder{}
	connects := 0
	svc.Connect = func(context.Context, config.Connection, float64) (run.Destination, error) {
		connects++
		return dest, nil
	}
	sum, err := svc.SyncBatch(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	if *sum != (run.GroupSummary{First: 1, Last: 5, Sent: 450}) {
		t.Errorf("summary %+v; want batches 1-5, 450 sent", *sum)
	}
	if len(dest.calls) != 5 || !slices.Equal(dest.sent(), customers(450)) {
		t.Errorf("%d upserts of %d contacts; want 5, every contact once, in the plan's order", len(dest.calls), len(dest.sent()))
	}
	if reads.ranges != 1 || reads.gets != 0 || connects != 1 {
		t.Errorf("%d ranged and %d whole reads of %s, %d connections; want one ranged read and one connection",
			reads.ranges, reads.gets, plan.BatchesFile, connects)
	}
	for _, it := range g.Items {
		if !f.settled(ex, it.Batch) {
			t.Errorf("batch %d has no result file", it.Batch)
		}
	}

	again, err := svc.SyncBatch(context.Background(), g)
	if err != nil || again.Skipped != 5 || again.Sent != 0 || len(dest.calls) != 5 || reads.ranges != 1 || connects != 1 {
		t.Fatalf("the group repeated: %+v, %v, %d upserts, %d reads, %d connections; want all 5 skipped, nothing read or sent",
			again, err, len(dest.calls), reads.ranges, connects)
	}
	rep, err := f.service().Finalize(context.Background(), run.FinalizeInput{Export: ex.Export, RunID: ex.RunID, StartedAt: ex.StartedAt})
	if err != nil || rep.Status != run.StatusSucceeded || rep.Outcome.Sent != 450 || rep.Batches.Settled != 5 {
		t.Fatalf("finalize: %+v, %v; want succeeded, 450 sent in 5 batches", rep, err)
	}
}

// Out of time between two batches of a group, syncbatch answers Transient
// (unwrapped: Lambda names the error by its outermost type) with the
// batches before settled; the retry starts at the first one not settled.
func TestSyncBatchGroupStopsBetweenBatchesBeforeItsDeadline(t *testing.T) {
	t.Parallel()
	f := newQueueFixture(t)
	ex, g := f.plannedGroup(300)
	svc := f.service()
	slow := &recorder{untilDone: true}
	svc.Connect = func(context.Context, config.Connection, float64) (run.Destination, error) { return slow, nil }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := svc.SyncBatch(ctx, g)
	if _, ok := err.(*run.Transient); !ok || ctx.Err() != nil {
		t.Fatalf("a group out of time returned %v (%T), its context %v; want *run.Transient before the deadline", err, err, ctx.Err())
	}
	if !f.settled(ex, 1) || f.settled(ex, 2) || f.settled(ex, 3) {
		t.Fatalf("settled after the first attempt: %v %v %v; want batch 1 only", f.settled(ex, 1), f.settled(ex, 2), f.settled(ex, 3))
	}

	dest := &recorder{}
	svc.Connect = func(context.Context, config.Connection, float64) (run.Destination, error) { return dest, nil }
	sum, err := svc.SyncBatch(context.Background(), g)
	if err != nil || sum.Skipped != 1 || sum.Sent != 200 || !slices.Equal(dest.sent(), customers(300)[100:]) {
		t.Fatalf("the retry: %+v, %v, sent %d contacts; want batch 1 skipped, batches 2-3 sent", sum, err, len(dest.sent()))
	}
}

// A batch that leaves contacts undelivered does not hold up the batches
// after it: they are sent, the batch's failure is recorded, and the group
// answers Transient so that its retry sends that batch again, only it.
func TestSyncBatchGroupGoesPastAnIncompleteBatch(t *testing.T) {
	t.Parallel()
	f := newQueueFixture(t)
	ex, g := f.plannedGroup(300)
	emails := customers(300)
	svc := f.service()
	flaky := &recorder{failing: map[string]bool{emails[150]: true}} // in batch 2
	svc.Connect = func(context.Context, config.Connection, float64) (run.Destination, error) { return flaky, nil }
	_, err := svc.SyncBatch(context.Background(), g)
	var transient *run.Transient
	if !errors.As(err, &transient) || !strings.Contains(err.Error(), "batch 2: 1 contacts not delivered") {
		t.Fatalf("a group with an incomplete batch returned %v; want Transient naming batch 2", err)
	}
	if !f.settled(ex, 1) || f.settled(ex, 2) || !f.settled(ex, 3) {
		t.Fatalf("settled: %v %v %v; want batches 1 and 3", f.settled(ex, 1), f.settled(ex, 2), f.settled(ex, 3))
	}
	if _, err := f.st.Head(context.Background(), fmt.Sprintf("runs/vip/%s/failures/000002.json", ex.RunID)); err != nil {
		t.Fatalf("batch 2's failure record: %v", err)
	}

	dest := &recorder{}
	svc.Connect = func(context.Context, config.Connection, float64) (run.Destination, error) { return dest, nil }
	sum, err := svc.SyncBatch(context.Background(), g)
	if err != nil || sum.Skipped != 2 || len(dest.calls) != 1 || !slices.Equal(dest.sent(), emails[100:200]) {
		t.Fatalf("the retry: %+v, %v, %d upserts; want batch 2 alone sent again", sum, err, len(dest.calls))
	}
}

// A batches.jsonl changed after planning is refused (Corrupt) before any
// batch of the group is sent: a byte changed inside one batch, or the
// object cut short.
func TestSyncBatchRefusesAChangedPlan(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		change func(data []byte, items []run.Item) []byte
	}{
		{"a byte of batch 3", func(data []byte, items []run.Item) []byte {
			at := items[2].Offset + items[2].Length/2
			data[at] ^= 1
			return data
		}},
		{"cut short in batch 4", func(data []byte, items []run.Item) []byte {
			return data[:items[3].Offset+10]
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newQueueFixture(t)
			ex, g := f.plannedGroup(400)
			key := fmt.Sprintf("runs/vip/%s/%s", ex.RunID, plan.BatchesFile)
			rc, _, err := f.st.Get(context.Background(), key)
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			f.put(key, string(tt.change(data, g.Items)))
			svc := f.service()
			dest := &recorder{}
			svc.Connect = func(context.Context, config.Connection, float64) (run.Destination, error) { return dest, nil }
			_, err = svc.SyncBatch(context.Background(), g)
			if _, ok := err.(*run.Corrupt); !ok {
				t.Fatalf("a changed %s: %v (%T); want *run.Corrupt", plan.BatchesFile, err, err)
			}
			if len(dest.calls) != 0 || f.settled(ex, 1) {
				t.Fatalf("%d upserts went out from a changed plan; want none", len(dest.calls))
			}
		})
	}
}

// asLegacy rewrites a planned run as an earlier segpilot stored it: a file
// per batch (batches/NNNNNN.json), a manifest and items.json without byte
// ranges, and no batches.jsonl.
func (f *queueFixture) asLegacy(ex run.Execution) {
	f.t.Helper()
	ctx := context.Background()
	prefix := "runs/vip/" + ex.RunID + "/"
	rc, _, err := f.st.Get(ctx, prefix+plan.BatchesFile)
	if err != nil {
		f.t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		f.t.Fatal(err)
	}
	type oldRef struct {
		Seq      int    `json:"seq"`
		File     string `json:"file"`
		Upserts  int    `json:"upserts"`
		Removals int    `json:"removals"`
		CRC32C   string `json:"crc32c"`
	}
	type oldItem struct {
		Batch  int    `json:"batch"`
		CRC32C string `json:"crc32c"`
	}
	var m map[string]any
	rc, _, err = f.st.Get(ctx, prefix+"manifest.json")
	if err != nil {
		f.t.Fatal(err)
	}
	err = json.NewDecoder(rc).Decode(&m)
	rc.Close()
	if err != nil {
		f.t.Fatal(err)
	}
	var refs []plan.BatchRef
	raw, _ := json.Marshal(m["batches"])
	if err := json.Unmarshal(raw, &refs); err != nil {
		f.t.Fatal(err)
	}
	var olds []oldRef
	var items []oldItem
	for _, r := range refs {
		file := fmt.Sprintf("batches/%06d.json", r.Seq)
		f.put(prefix+file, string(data[r.Offset:r.Offset+r.Length]))
		olds = append(olds, oldRef{Seq: r.Seq, File: file, Upserts: r.Upserts, Removals: r.Removals, CRC32C: r.CRC32C})
		items = append(items, oldItem{Batch: r.Seq, CRC32C: r.CRC32C})
	}
	m["batches"] = olds
	for key, v := range map[string]any{"manifest.json": m, "items.json": items} {
		b, err := json.Marshal(v)
		if err != nil {
			f.t.Fatal(err)
		}
		f.put(prefix+key, string(b))
	}
	if err := f.st.Delete(ctx, prefix+plan.BatchesFile); err != nil {
		f.t.Fatal(err)
	}
}

// A run planned by an earlier segpilot (a file per batch) and still in
// flight at the upgrade completes: syncbatch reads its batch files, from
// the one-batch events of the execution started on the old definition and
// from groups of its items; finalize lists an unsent batch's contacts from
// its file; the next attempt resumes it on the new definition.
func TestRunPlannedWithBatchFilesCompletes(t *testing.T) {
	t.Parallel()
	f := newQueueFixture(t)
	ex, _ := f.planned(customers(250)...)
	f.asLegacy(ex)
	items := f.items(ex)
	if len(items) != 3 || items[0].Length != 0 {
		t.Fatalf("legacy items %+v", items)
	}
	svc := f.service()
	dest := &recorder{}
	svc.Connect = func(context.Context, config.Connection, float64) (run.Destination, error) { return dest, nil }

	// The old definition's event: one batch.
	var old run.Group
	ev := fmt.Sprintf(`{"export":%q,"runId":%q,"listId":%q,"workerRps":%v,"batch":1,"crc32c":%q}`,
		ex.Export, ex.RunID, ex.ListID, ex.WorkerRPS, items[0].CRC32C)
	if err := json.Unmarshal([]byte(ev), &old); err != nil {
		t.Fatal(err)
	}
	if sum, err := svc.SyncBatch(context.Background(), old); err != nil || sum.Sent != 100 {
		t.Fatalf("the one-batch event: %+v, %v; want batch 1's 100 contacts sent", sum, err)
	}
	// A group of old items; the last batch's file was changed.
	tampered := run.Group{Items: []run.Item{items[1], items[2]}, BatchInput: batchInput(ex)}
	tampered.Items[1].CRC32C = "AAAAAA=="
	if _, err := svc.SyncBatch(context.Background(), tampered); !errors.As(err, new(*run.Corrupt)) {
		t.Fatalf("a batch file that does not match the plan: %v; want Corrupt", err)
	}
	if !f.settled(ex, 2) || f.settled(ex, 3) {
		t.Fatal("want batch 2 sent before batch 3 was refused")
	}
	rep, err := f.service().Finalize(context.Background(), run.FinalizeInput{Export: ex.Export, RunID: ex.RunID, StartedAt: ex.StartedAt})
	if err != nil || rep.Status != run.StatusFailed || rep.Outcome.Sent != 200 || rep.Outcome.Failed != 50 || !rep.Outcome.Reconciles() {
		t.Fatalf("finalize: %+v, %v; want failed, 200 sent, batch 3's 50 contacts failed", rep, err)
	}
	rc, _, err := f.st.Get(context.Background(), "runs/vip/"+ex.RunID+"/rejected.csv")
	if err != nil {
		t.Fatal(err)
	}
	csv, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Contains(csv, []byte(customers(250)[249])) {
		t.Fatalf("rejected.csv lacks batch 3's contacts:\n%s", csv)
	}

	// The next attempt runs on the new definition: groups of the old items.
	f.now = f.now.Add(time.Hour)
	f.svc.Connect = svc.Connect
	res, err := f.svc.Refresh(context.Background(), run.RefreshRequest{Trigger: run.TriggerSchedule})
	if err != nil || len(res) != 1 || !res[0].Started {
		t.Fatalf("the next attempt: %+v, %v", res, err)
	}
	f.starter.mu.Lock()
	next := f.starter.started[len(f.starter.started)-1]
	f.starter.mu.Unlock()
	sum, err := f.svc.SyncBatch(context.Background(), run.Group{Items: f.items(next), BatchInput: batchInput(next)})
	if err != nil || sum.Skipped != 2 || sum.Sent != 50 || !slices.Equal(dest.sent(), customers(250)) {
		t.Fatalf("the resumed group: %+v, %v; want batches 1-2 skipped, batch 3 sent", sum, err)
	}
	rep, err = f.svc.Finalize(context.Background(), run.FinalizeInput{Export: next.Export, RunID: next.RunID, StartedAt: next.StartedAt, Resumed: next.Resumed})
	if err != nil || rep.Status != run.StatusSucceeded || rep.Outcome.Sent != 250 || !rep.SnapshotPromoted {
		t.Fatalf("the resumed run's finalize: %+v, %v; want succeeded, 250 sent, promoted", rep, err)
	}
}

func TestGroupSize(t *testing.T) {
	t.Parallel()
	upserts := func(n int) []plan.BatchRef {
		refs := make([]plan.BatchRef, n)
		for i := range refs {
			refs[i] = plan.BatchRef{Seq: i + 1, Upserts: 100}
		}
		return refs
	}
	withRemovals := func(n, removals int) []plan.BatchRef {
		return append(upserts(n), plan.BatchRef{Seq: n + 1, Removals: removals})
	}
	for _, tt := range []struct {
		name        string
		batches     []plan.BatchRef
		concurrency int
		workerRPS   float64
		want        int
	}{
		{"a minute at 0.5 requests/s", upserts(10_000), 10, 0.5, 30},
		{"a minute at 2.5 requests/s", upserts(10_000), 40, 2.5, 150},
		{"enough groups for every worker", upserts(1_000), 40, 0.5, 25},
		{"a small run", upserts(30), 10, 0.5, 3},
		{"no batches", nil, 10, 0.5, 1},
		{"a slow worker", upserts(1_000), 2, 0.01, 1},
		{"removals cost a request each", withRemovals(1_000, 10), 10, 0.5, 3},
		{"a full removal batch is a group of its own", withRemovals(1_000, 100), 10, 0.5, 1},
	} {
		if got := run.GroupSize(tt.batches, tt.concurrency, tt.workerRPS); got != tt.want {
			t.Errorf("%s: GroupSize = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// putCounter counts the objects written.
type putCounter struct {
	store.ObjectStore
	mu   sync.Mutex
	puts int
}

func (c *putCounter) Put(ctx context.Context, key string, body io.Reader, opts store.PutOptions) (store.ObjectInfo, error) {
	c.mu.Lock()
	c.puts++
	c.mu.Unlock()
	return c.ObjectStore.Put(ctx, key, body, opts)
}

// A plan is a handful of objects whatever its size: ingest writes as many
// for 30,000 profiles as for 300.
func TestPlanIsAHandfulOfObjects(t *testing.T) {
	t.Parallel()
	var puts []int
	for _, n := range []int{300, 30_000} {
		f := newQueueFixture(t)
		counter := &putCounter{ObjectStore: f.st}
		f.svc.Store = counter
		ex, _ := f.planned(customers(n)...)
		objs, err := f.st.List(context.Background(), "runs/vip/"+ex.RunID+"/")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range objs {
			names = append(names, strings.TrimPrefix(o.Key, "runs/vip/"+ex.RunID+"/"))
		}
		want := []string{plan.BatchesFile, "input-rejected.csv", "items.json", "manifest.json", "snapshot"}
		if !slices.Equal(names, want) {
			t.Errorf("%d profiles: the run holds %v; want %v", n, names, want)
		}
		puts = append(puts, counter.puts)
	}
	if puts[0] != puts[1] {
		t.Fatalf("ingest wrote %d objects for 300 profiles and %d for 30,000; want as many", puts[0], puts[1])
	}
}

package run_test

import (
	"context"
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

func (r *recorder) Upsert(ctx context.Context, _ string, cs []dest.Contact, _ dest.Write) ([]dest.Outcome, error) {
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
func (f *fixture) plannedGroup(n int) (run.Execution, run.Group) {
	f.t.Helper()
	ex, _ := f.planned(customers(n)...)
	return ex, run.Group{Items: f.items(ex), BatchInput: batchInput(ex)}
}

func (f *fixture) settled(ex run.Execution, batch int) bool {
	f.t.Helper()
	_, err := f.st.Head(context.Background(), fmt.Sprintf("runs/%s/%s/attempts/%d/results/%06d.json", ex.Export, ex.RunID, ex.Attempt, batch))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		f.t.Fatal(err)
	}
	return err == nil
}

// A group's batches are read with one ranged GET and sent in order with one
// destination; each batch gets its result file; a repeat sends nothing.
func TestSyncBatchSendsAGroupFromOneRangedRead(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ex, g := f.plannedGroup(450)
	if len(g.Items) != 5 {
		t.Fatalf("%d batches, want 5", len(g.Items))
	}
	svc := f.service()
	reads := &readCounter{ObjectStore: f.st}
	svc.Store = reads
	dest := &recorder{}
	connects := 0
	svc.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) {
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
	rep, err := f.service().Finalize(context.Background(), finalizeInput(ex))
	if err != nil || rep.Status != run.StatusSucceeded || rep.Outcome.Sent != 450 || rep.Batches.Settled != 5 {
		t.Fatalf("finalize: %+v, %v; want succeeded, 450 sent in 5 batches", rep, err)
	}
}

// A relay group (one the Map starts as another ends) connects as a relay
// share, a group of the first wave as not one: the relay's first request
// waits an interval (see run.Share). Either names the run's groups and
// workers its group's item holds (the last shares take the finished
// ones' budget).
func TestSyncBatchConnectsARelayAsOne(t *testing.T) {
	t.Parallel()
	for _, relay := range []bool{false, true} {
		f := newFixture(t)
		_, g := f.plannedGroup(150)
		last := g.Items[len(g.Items)-1]
		group := run.Item{Batch: g.Items[0].Batch, Offset: g.Items[0].Offset, Length: last.Offset + last.Length - g.Items[0].Offset,
			Batches: g.Items, Relay: relay, Groups: 7, Workers: 3}
		svc := f.service()
		var shares []run.Share
		svc.Connect = func(_ context.Context, _ config.Connection, share run.Share) (run.Destination, error) {
			shares = append(shares, share)
			return &recorder{}, nil
		}
		if _, err := svc.SyncBatch(context.Background(), run.Group{Items: []run.Item{group}, BatchInput: g.BatchInput}); err != nil {
			t.Fatal(err)
		}
		if len(shares) != 1 || shares[0].Relay != relay || shares[0].Began.IsZero() || shares[0].Groups != 7 || shares[0].Workers != 3 {
			t.Fatalf("a group with relay %v connected as %+v; want one share, relay %v, with the time the group began, of 7 groups and 3 workers", relay, shares, relay)
		}
	}
}

// Out of time between two batches of a group, syncbatch answers Transient
// (unwrapped: Lambda names the error by its outermost type) with the
// batches before settled; the retry starts at the first one not settled.
func TestSyncBatchGroupStopsBetweenBatchesBeforeItsDeadline(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ex, g := f.plannedGroup(300)
	svc := f.service()
	slow := &recorder{untilDone: true}
	svc.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) { return slow, nil }
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
	svc.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) { return dest, nil }
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
	f := newFixture(t)
	ex, g := f.plannedGroup(300)
	emails := customers(300)
	svc := f.service()
	flaky := &recorder{failing: map[string]bool{emails[150]: true}} // in batch 2
	svc.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) { return flaky, nil }
	_, err := svc.SyncBatch(context.Background(), g)
	var transient *run.Transient
	if !errors.As(err, &transient) || !strings.Contains(err.Error(), "batch 2: 1 contacts not delivered") {
		t.Fatalf("a group with an incomplete batch returned %v; want Transient naming batch 2", err)
	}
	if !f.settled(ex, 1) || f.settled(ex, 2) || !f.settled(ex, 3) {
		t.Fatalf("settled: %v %v %v; want batches 1 and 3", f.settled(ex, 1), f.settled(ex, 2), f.settled(ex, 3))
	}
	if _, err := f.st.Head(context.Background(), fmt.Sprintf("runs/vip/%s/attempts/%d/failures/000002.json", ex.RunID, ex.Attempt)); err != nil {
		t.Fatalf("batch 2's failure record: %v", err)
	}

	dest := &recorder{}
	svc.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) { return dest, nil }
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
			f := newFixture(t)
			ex, g := f.plannedGroup(400)
			key := fmt.Sprintf("runs/vip/%s/plans/%s/%s", ex.RunID, ex.Plan, plan.BatchesFile)
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
			svc.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) { return dest, nil }
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
		f := newFixture(t)
		counter := &putCounter{ObjectStore: f.st}
		f.svc.Store = counter
		ex, _ := f.planned(customers(n)...)
		prefix := "runs/vip/" + ex.RunID + "/plans/" + ex.Plan + "/"
		objs, err := f.st.List(context.Background(), prefix)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range objs {
			names = append(names, strings.TrimPrefix(o.Key, prefix))
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

// TestMapItems: the Map's items are groups of consecutive batches, largest
// first, shrinking to a batch at the end, none above a minute of requests
// at the worker's pace; together they are every batch, in order, each
// group's range the span of its batches; those after the first wave are
// relays; each names the groups and the workers.
func TestMapItems(t *testing.T) {
	t.Parallel()
	refs := make([]plan.BatchRef, 1000)
	for i := range refs {
		refs[i] = plan.BatchRef{Seq: i + 1, Offset: int64(i) * 100, Length: 100, Upserts: 100, CRC32C: "c"}
	}
	concurrency, workerRPS := run.Pacing(100) // 40 workers at 2.475 requests/s
	items := run.MapItems(refs, concurrency, workerRPS)
	sizes := make([]int, len(items))
	for i, it := range items {
		sizes[i] = len(it.Batches)
		last := it.Batches[len(it.Batches)-1]
		if it.Batch != it.Batches[0].Batch || it.Offset != it.Batches[0].Offset || it.Length != last.Offset+last.Length-it.Offset {
			t.Fatalf("group %d %+v: its batch, offset and length must span its batches", i, it)
		}
	}
	if got := run.BatchItems(items); len(got) != len(refs) || got[0].Batch != 1 || got[len(got)-1].Batch != 1000 ||
		!slices.IsSortedFunc(got, func(a, b run.Item) int { return a.Batch - b.Batch }) {
		t.Fatalf("the groups hold %d batches; want all 1,000 in order", len(got))
	}
	if !slices.IsSortedFunc(sizes, func(a, b int) int { return b - a }) || sizes[0] != 25 || sizes[len(sizes)-1] != 1 {
		t.Fatalf("group sizes %v: want them shrinking from 25 (1,000 over 40 workers) to 1", sizes)
	}
	if len(items) < 2*concurrency {
		t.Fatalf("%d groups for %d workers: a slow worker could still make the run wait for its share", len(items), concurrency)
	}
	for i, it := range items {
		if it.Relay != (i >= concurrency) {
			t.Fatalf("group %d relay %v: want the groups after the first %d (the Map starts them as others end) relays, and only those", i, it.Relay, concurrency)
		}
		if it.Groups != len(items) || it.Workers != concurrency {
			t.Fatalf("group %d names %d groups and %d workers; want %d and %d", i, it.Groups, it.Workers, len(items), concurrency)
		}
	}
	if big := run.MapItems(refs, 2, 0.1); len(big[0].Batches) != 6 {
		t.Fatalf("first group of %d batches at 0.1 requests/s; want 6 (a minute of requests)", len(big[0].Batches))
	}
}

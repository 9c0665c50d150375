package e2e

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/local"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

// TestResumeRepeatsFewRemovals kills a mirror run in the middle of its
// removals and resumes it: removals are checkpointed as they go, so the
// resume repeats at most a few requests per batch in flight, not every
// removal of the unfinished batches. Autopilot removes one contact a
// request, checkpointed every five; Ortto 100 a request, checkpointed
// after each. (Seen failing with the checkpoints removed: 119 done, 119
// repeated.)
func TestResumeRepeatsFewRemovals(t *testing.T) {
	t.Parallel()
	const inFlight = 3 // batches of removals sent side by side
	kill := map[string]struct{ after, maxRepeated int }{
		"autopilot": {119, inFlight * 5}, // a checkpoint every 5 removals
		"ortto":     {1, inFlight},       // one request per batch, checkpointed after it
	}
	forEachDestination(t, func(t *testing.T, d destination) {
		testResumeRepeatsFewRemovals(t, d, kill[d.kind].after, kill[d.kind].maxRepeated)
	})
}

func testResumeRepeatsFewRemovals(t *testing.T, d destination, killAfter, maxRepeated int) {
	h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 50))
	h.drop("a.csv", csvRange(1, 2000, "gold"))
	h.sim.ResetCounters()
	removals := func() int { // every answer: repeating an Autopilot removal gets a 404
		n := 0
		for _, c := range h.sim.Counters().ByRoute[d.removeRoute] {
			n += c
		}
		return n
	}

	// 300 leavers: three removal batches of 100, sent side by side.
	key := "segments/vip-customers/b.csv"
	info := h.put(key, csvRange(301, 2000, "gold"))
	src := run.Source{Key: key, ETag: info.ETag, Size: info.Size}
	crashing, kill := h.crashingPipeline("crashing")
	go func() {
		for removals() < killAfter {
			time.Sleep(time.Millisecond)
		}
		kill()
	}()
	if _, err := crashing.Service.Start(context.Background(), run.StartRequest{Trigger: run.TriggerS3, Source: src}); err != nil {
		t.Fatalf("the run to kill: %v", err)
	}
	crashing.Runner.Wait() // killed: nothing of it goes on
	h.waitIdle()
	done := removals()

	// The next run finds the attempt's process dead, closes it (what it
	// removed is off the snapshot, row by row) and sends the rest.
	res := h.drop("b.csv", csvRange(301, 2000, "gold"))
	if rep := h.report(res[0]); rep.Status != run.StatusSucceeded || rep.Prior != 1 {
		t.Fatalf("resumed run: %s (after %d attempts), %s", rep.Status, rep.Prior, rep.Message)
	}
	if m := h.sim.members(); len(m) != 1700 {
		t.Fatalf("%d members after the run, want 1700", len(m))
	}
	requests := 300 // one per removal
	if d.kind == "ortto" {
		requests = 3 // 100 a request
	}
	if repeated := removals() - requests; repeated > maxRepeated {
		t.Fatalf("the resume repeated %d removal requests after %d were done; want at most %d", repeated, done, maxRepeated)
	}
}

// crashingPipeline is a second process on the harness's bucket, and the
// function that kills it: its store refuses every call from then on (a
// killed process writes nothing more, not even on its way out), its
// executions are cancelled, and the process table reports it dead.
func (h *harness) crashingPipeline(name string, options ...func(*local.Options)) (*local.Pipeline, func()) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.t.Cleanup(cancel)
	dying := &dyingStore{ObjectStore: h.p.Store}
	opts := local.Options{Store: dying, Secrets: fixedKey(apiKey), BaseURLs: baseURLs(h), RetrySleep: noWait,
		Processes: h.procs.process(name), Context: ctx}
	for _, o := range options {
		o(&opts)
	}
	p, err := local.New(opts)
	if err != nil {
		h.t.Fatal(err)
	}
	return p, func() {
		dying.dead.Store(true)
		h.procs.kill(name)
		cancel()
	}
}

// dyingStore is a store a process uses until it is killed.
type dyingStore struct {
	store.ObjectStore
	dead atomic.Bool
}

var errKilled = errors.New("the process was killed")

func (d *dyingStore) Get(ctx context.Context, key string) (io.ReadCloser, store.ObjectInfo, error) {
	if d.dead.Load() {
		return nil, store.ObjectInfo{}, errKilled
	}
	return d.ObjectStore.Get(ctx, key)
}

func (d *dyingStore) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if d.dead.Load() {
		return nil, errKilled
	}
	return d.ObjectStore.GetRange(ctx, key, offset, length)
}

func (d *dyingStore) Put(ctx context.Context, key string, body io.Reader, opts store.PutOptions) (store.ObjectInfo, error) {
	if d.dead.Load() {
		return store.ObjectInfo{}, errKilled
	}
	return d.ObjectStore.Put(ctx, key, body, opts)
}

func (d *dyingStore) Delete(ctx context.Context, key string) error {
	if d.dead.Load() {
		return errKilled
	}
	return d.ObjectStore.Delete(ctx, key)
}

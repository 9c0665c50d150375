package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/hostproc"
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
	ctx, kill := context.WithCancel(context.Background())
	dying := &dyingStore{ObjectStore: h.p.Store}
	go func() {
		for removals() < killAfter {
			time.Sleep(time.Millisecond)
		}
		dying.dead.Store(true) // a killed process writes nothing more, not even on its way out
		kill()
	}()
	crashing, err := local.New(local.Options{Store: dying, Secrets: fixedKey(apiKey), BaseURLs: baseURLs(h), RetrySleep: noWait})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crashing.Service.Start(ctx, run.StartRequest{Trigger: run.TriggerS3, Source: src}); !errors.Is(err, context.Canceled) {
		t.Fatalf("killed run: %v", err)
	}
	// What a killed process leaves: the lock names a process that is gone
	// (here: this one with another start time), and its execution's name
	// is used. The next run finds the holder dead, records its end and
	// resumes the plan under a new execution name, as in the cloud.
	buryLockHolder(t, h.p.Store, "state/vip-newsletter/lock.json")
	h.waitIdle()
	done := removals()

	res, err := h.p.Service.Start(context.Background(), run.StartRequest{Trigger: run.TriggerS3, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	if rep := h.report(res[0]); rep.Status != run.StatusSucceeded || rep.Outcome.Removed != 300 {
		t.Fatalf("resumed run: %s, removed %d; want succeeded, 300 removed", rep.Status, rep.Outcome.Removed)
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

// buryLockHolder rewrites a lock's owner as a process that has ended.
func buryLockHolder(t *testing.T, st store.ObjectStore, key string) {
	t.Helper()
	ctx := context.Background()
	rc, _, err := st.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	var lock map[string]any
	if err := json.Unmarshal(raw, &lock); err != nil {
		t.Fatal(err)
	}
	self, err := hostproc.Self()
	if err != nil {
		t.Fatal(err)
	}
	self.Start = "0" // the same pid, started at another time: a process that is gone
	lock["owner"] = self.String()
	raw, err = json.Marshal(lock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, key, bytes.NewReader(raw), store.PutOptions{}); err != nil {
		t.Fatal(err)
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

package run_test

import (
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/autopilot"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/run"
)

// planned drops a file and returns its started run's execution and the
// Map items ingest wrote for it.
func (f *queueFixture) planned(emails ...string) (run.Execution, []run.Item) {
	f.t.Helper()
	res := f.arrive(f.svc, "a.csv", 1, emails...)
	if res.Status != run.StatusRunning {
		f.t.Fatalf("run: %+v", res)
	}
	f.starter.mu.Lock()
	ex := f.starter.started[len(f.starter.started)-1]
	f.starter.mu.Unlock()
	rc, _, err := f.st.Get(context.Background(), ex.ItemsKey)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rc.Close()
	raw, err := io.ReadAll(rc)
	if err != nil {
		f.t.Fatal(err)
	}
	var refs []struct {
		Batch  int    `json:"batch"`
		CRC32C string `json:"crc32c"`
	}
	if err := json.Unmarshal(raw, &refs); err != nil {
		f.t.Fatal(err)
	}
	var items []run.Item
	for _, r := range refs {
		items = append(items, run.Item{Export: ex.Export, RunID: ex.RunID, Batch: r.Batch, CRC32C: r.CRC32C,
			ListID: ex.ListID, WorkerRPS: ex.WorkerRPS})
	}
	return ex, items
}

// stuckDestination never answers an upsert until its context ends.
type stuckDestination struct{ listOnly }

func (stuckDestination) UpsertContacts(ctx context.Context, _ string, cs []autopilot.Contact) ([]autopilot.Outcome, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// A batch that cannot finish in time stops before its Lambda's deadline
// and says Transient, which the state machine retries with backoff (and
// the retry resumes from its checkpoint), instead of being killed by the
// timeout mid-write.
func TestSyncBatchStopsBeforeItsDeadline(t *testing.T) {
	t.Parallel()
	f := newQueueFixture(t)
	_, items := f.planned("a@example.com", "b@example.com")
	svc := f.service()
	svc.Connect = func(context.Context, config.Connection, float64) (run.Destination, error) {
		return stuckDestination{}, nil
	}
	const budget = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	deadline, _ := ctx.Deadline()
	_, err := svc.SyncBatch(ctx, items[0])
	left := time.Until(deadline)
	// Lambda names the error by its outermost type: a wrapped Transient
	// would not match the state machine's retrier.
	if _, ok := err.(*run.Transient); !ok {
		t.Fatalf("a batch out of time returned %v (%T); want *run.Transient", err, err)
	}
	if left < budget/10 {
		t.Fatalf("returned %v before the deadline; want a margin for the checkpoint and the answer", left)
	}
	if ctx.Err() != nil {
		t.Fatal("returned only once the invocation's own deadline had passed")
	}
}

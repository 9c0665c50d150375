package run_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/secrets"
	"github.com/segpilot/segpilot/shared/store"
)

// stuckDestination never answers an upsert until its context ends.
type stuckDestination struct{ listOnly }

func (stuckDestination) Upsert(ctx context.Context, _ string, cs []dest.Contact, _ dest.Write) ([]dest.Outcome, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// A batch that cannot finish in time stops before its Lambda's deadline
// and says Transient, which the state machine retries with backoff (and
// the retry resumes from its checkpoint), instead of being killed by the
// timeout mid-write.
func TestSyncBatchStopsBeforeItsDeadline(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, items := f.planned("a@example.com", "b@example.com")
	svc := f.service()
	svc.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) {
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

// errUnavailable stands for an S3 answer worth retrying (a 503, say).
var errUnavailable = errors.New("service unavailable")

// flakyStore fails every read and write under prefix with errUnavailable.
type flakyStore struct {
	store.ObjectStore
	prefix string
}

func (f flakyStore) Get(ctx context.Context, key string) (io.ReadCloser, store.ObjectInfo, error) {
	if strings.HasPrefix(key, f.prefix) {
		return nil, store.ObjectInfo{}, fmt.Errorf("getting %s: %w", key, errUnavailable)
	}
	return f.ObjectStore.Get(ctx, key)
}

func (f flakyStore) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if strings.HasPrefix(key, f.prefix) {
		return nil, fmt.Errorf("getting %s: %w", key, errUnavailable)
	}
	return f.ObjectStore.GetRange(ctx, key, offset, length)
}

func (f flakyStore) Put(ctx context.Context, key string, body io.Reader, opts store.PutOptions) (store.ObjectInfo, error) {
	if strings.HasPrefix(key, f.prefix) {
		return store.ObjectInfo{}, fmt.Errorf("writing %s: %w", key, errUnavailable)
	}
	return f.ObjectStore.Put(ctx, key, body, opts)
}

// An S3 (or any infrastructure) error that the deployment's classifier
// calls transient reaches the state machine as *Transient from syncbatch
// and finalize, which it retries; other errors are left as they are.
func TestStoreErrorsAreClassified(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ex, items := f.planned("a@example.com", "b@example.com")
	prefix := "runs/vip/" + ex.RunID + "/"
	steps := map[string]func(*run.Service) error{
		"syncbatch": func(svc *run.Service) error { _, err := svc.SyncBatch(context.Background(), items[0]); return err },
		"finalize": func(svc *run.Service) error {
			_, err := svc.Finalize(context.Background(), finalizeInput(ex))
			return err
		},
	}
	for name, step := range steps {
		for _, where := range []string{prefix + "attempts/1/results/", prefix + "plans/none/manifest.json"} {
			svc := f.service()
			svc.Store = flakyStore{ObjectStore: f.st, prefix: where}
			svc.Transient = func(err error) bool { return errors.Is(err, errUnavailable) }
			err := step(svc)
			if _, ok := err.(*run.Transient); !ok {
				t.Errorf("%s with %s unavailable returned %v (%T); want *run.Transient", name, where, err, err)
			}
			svc.Transient = nil
			if err := step(svc); err == nil {
				t.Errorf("%s with %s unavailable succeeded", name, where)
			} else if _, ok := err.(*run.Transient); ok {
				t.Errorf("%s called %v transient with no classifier", name, err)
			}
		}
	}
}

// refusingDestination answers every upsert with 401: the key was refused.
type refusingDestination struct{ listOnly }

func (refusingDestination) Upsert(context.Context, string, []dest.Contact, dest.Write) ([]dest.Outcome, error) {
	return nil, &dest.UnauthorizedError{API: "autopilot", Status: 401}
}

// On AWS a refused key fails the Map with States.ExceedToleratedFailureThreshold
// and a Cause that need not name the child's error: finalize must learn of
// the refusal from the run itself, not from that text.
func TestFinalizeKnowsARefusedKeyWithoutTheCause(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ex, items := f.planned("a@example.com", "b@example.com")
	svc := f.service()
	svc.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) {
		return refusingDestination{}, nil
	}
	if _, err := svc.SyncBatch(context.Background(), items[0]); err == nil {
		t.Fatal("a refused key did not fail the batch")
	} else if _, ok := err.(*run.Unauthorized); !ok {
		t.Fatalf("a refused key: %v (%T); want *run.Unauthorized", err, err)
	}
	in := finalizeInput(ex)
	in.MapError = &run.MapError{Error: "States.ExceedToleratedFailureThreshold", Cause: "The specified tolerated failure threshold was exceeded"}
	rep, err := f.service().Finalize(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Status != run.StatusFailed || !strings.Contains(rep.Message, "refused the API key") {
		t.Fatalf("report %s: %q; want failed, saying Autopilot refused the API key", rep.Status, rep.Message)
	}
}

// The stack creates the API-key secret empty; until the user puts the key
// in, a run must not fail ingest (its S3 event would be retried and then
// dropped, with no report): it is refused like a refused key, with a report
// saying to set the secret, nothing sent, and the next drop or scheduled
// refresh runs normally once the key is there.
func TestMissingAPIKeyIsARefusalNotAnError(t *testing.T) {
	t.Parallel()
	for name, keyErr := range map[string]error{
		"empty":   fmt.Errorf("secret arn:aws:secretsmanager:eu-west-1:1:secret:k: SecretString field %q is empty: %w", "apiKey", secrets.ErrEmpty),
		"missing": fmt.Errorf("reading secret k: %w", secrets.ErrNotFound),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			var sent int
			noKey := true
			connect := func(context.Context, config.Connection, run.Share) (run.Destination, error) {
				if noKey {
					return nil, fmt.Errorf("reading the API key secret: %w", keyErr)
				}
				sent++
				return listOnly{}, nil
			}
			f.svc.Connect = connect
			res, err := f.svc.Start(context.Background(), run.StartRequest{Trigger: run.TriggerS3,
				Source: run.Source{Key: "segments/vip/a.csv", ETag: f.put("segments/vip/a.csv", "Email\na@example.com\n").ETag}})
			if err != nil {
				t.Fatalf("ingest failed (its event would be retried, then dropped): %v", err)
			}
			if len(res) != 1 || res[0].Status != run.StatusFailed || res[0].Started {
				t.Fatalf("results %+v; want one failed run, not started", res)
			}
			rep, err := run.ReadReport(context.Background(), f.st, "vip", res[0].RunID)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Status != run.StatusFailed || !strings.Contains(rep.Message, "put-secret-value") {
				t.Fatalf("report %s %q; want failed, saying how to set the secret", rep.Status, rep.Message)
			}
			if len(f.cloud.runs()) != 0 || sent != 0 {
				t.Fatalf("a run without a key started %v executions, connected %d times", f.cloud.runs(), sent)
			}
			// The key is put in; the schedule runs the export normally.
			noKey = false
			f.now = f.now.Add(time.Hour)
			again, err := f.svc.Refresh(context.Background(), run.RefreshRequest{Trigger: run.TriggerSchedule})
			if err != nil {
				t.Fatal(err)
			}
			if len(again) != 1 || again[0].Status != run.StatusRunning || !again[0].Started {
				t.Fatalf("the scheduled refresh after the key was set: %+v; want the run started", again)
			}
		})
	}
}

// TestBatchesEndingAfterAMapErrorAreCounted: a Map fails (the key
// refused in one group) while another group is still sending, as on AWS,
// where a failed Map does not stop its children. Finalize only says so
// (a closing report); the export stays held until the execution is over,
// and the drain that then closes the attempt counts every batch, the late
// one included: the next attempt sends exactly what was not delivered.
func TestBatchesEndingAfterAMapErrorAreCounted(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	emails := emailsN(150) // two batches
	ex, items := f.planned(emails...)
	if len(items) != 2 {
		t.Fatalf("%d batches, want 2", len(items))
	}
	svc := f.service()
	// Batch 1's key is refused; the Map fails and finalize runs while
	// batch 2 is still sending.
	svc.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) {
		return refusingDestination{}, nil
	}
	if _, err := svc.SyncBatch(context.Background(), items[0]); err == nil {
		t.Fatal("batch 1 was not refused")
	}
	in := finalizeInput(ex)
	in.MapError = &run.MapError{Error: "States.ExceedToleratedFailureThreshold", Cause: "The specified tolerated failure threshold was exceeded"}
	rep, err := f.service().Finalize(context.Background(), in)
	if err != nil || rep.Status != run.StatusFailed || rep.Outcome.Sent != 0 || !rep.Closing {
		t.Fatalf("finalize: %+v, %v; want a closing report: failed, nothing sent yet", rep, err)
	}
	// Batch 2 ends late, with the key working again: the export is still
	// held by the attempt, so it is sent.
	var upserts int
	counting := func(context.Context, config.Connection, run.Share) (run.Destination, error) {
		return countingDestination{n: &upserts}, nil
	}
	late := f.service()
	late.Connect = counting
	if _, err := late.SyncBatch(context.Background(), items[1]); err != nil || upserts != 1 {
		t.Fatalf("the late batch: %v, %d upserts", err, upserts)
	}
	f.cloud.end(execName(ex), f.now)
	// The next drain closes the attempt, then plans against what it
	// delivered: batch 2, late or not.
	f.now = f.now.Add(time.Hour)
	f.svc.Connect = counting
	res, err := f.svc.Refresh(context.Background(), run.RefreshRequest{Trigger: run.TriggerSchedule})
	if err != nil || len(res) != 1 || !res[0].Started || res[0].Counts.Added+res[0].Counts.Changed != 100 {
		t.Fatalf("the next attempt: %+v, %v; want batch 1's 100 planned again, and only those", res, err)
	}
	first, err := run.ReadAttemptReport(context.Background(), f.st, ex.Export, ex.RunID, ex.Attempt)
	if err != nil || first.Closing || first.Status != run.StatusFailed || first.Outcome.Sent != 50 || first.Outcome.Failed != 100 ||
		!strings.Contains(first.Message, "refused the API key") || !strings.Contains(first.Error, "ExceedToleratedFailureThreshold") {
		t.Fatalf("attempt 1's report: %+v, %v; want failed, the late batch's 50 sent, the Map's error kept", first, err)
	}
	next := f.cloud.last(t)
	f.sendAll(f.svc, next)
	rep = f.finish(f.svc, next)
	if rep.Status != run.StatusSucceeded || rep.Outcome.Sent != 100 || upserts != 2 || rep.Prior != 1 {
		t.Fatalf("the next attempt: %+v, %d upserts; want succeeded, batch 1 sent", rep, upserts)
	}
}

// countingDestination accepts everything and counts upsert calls.
type countingDestination struct {
	listOnly
	n *int
}

func (c countingDestination) Upsert(_ context.Context, _ string, cs []dest.Contact, _ dest.Write) ([]dest.Outcome, error) {
	*c.n++
	out := make([]dest.Outcome, len(cs))
	for i := range out {
		out[i] = dest.Outcome{Status: dest.Sent}
	}
	return out, nil
}

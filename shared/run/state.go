package run

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/segpilot/segpilot/shared/store"
)

// exportState is state/<export>/state.json: the one object through which
// the runs of an export are ordered. It changes only by compare-and-swap
// (create-only, then If-Match on the ETag read), so every decision it
// records (a claim, a closing, where the snapshot is) is made once.
type exportState struct {
	// Epoch counts the claims: attempt n of any run of the export is the
	// claim that made the epoch n, so attempts are numbered uniquely.
	Epoch int64 `json:"epoch"`
	// Holder is the one attempt that may run, nil when the export is free.
	Holder *Holder `json:"holder,omitempty"`
	// Snapshot is what the destination holds for the export: the snapshot
	// the last closed attempt left (nil before any).
	Snapshot *SnapshotRef `json:"snapshot,omitempty"`
	// Latest is the newest delivery an attempt was started for: an older
	// one is superseded.
	Latest *queueEntry `json:"latest,omitempty"`
}

// Holder is an attempt holding its export: the fencing token (Attempt) and
// what any drainer needs to finish its start or close it.
type Holder struct {
	Export    string `json:"export"`
	Run       string `json:"run"`
	Attempt   int64  `json:"attempt"`
	Execution string `json:"execution"`
	Plan      string `json:"plan"`  // the plan's base
	Owner     string `json:"owner"` // who claimed it (Service.Owner: a process, locally)
	// Input is the execution's input: a drainer that finds the execution
	// never started starts it with exactly this, under the same name.
	Input json.RawMessage `json:"input"`
	// Delivery is the queue entry it was claimed for.
	Delivery queueEntry `json:"delivery"`
}

// is reports whether h is attempt n of run.
func (h *Holder) is(runID string, n int64) bool { return h != nil && h.Run == runID && h.Attempt == n }

// SnapshotRef names a snapshot: the one an attempt left, or the one kept
// at state/<export>/snapshot before state.json existed.
type SnapshotRef struct {
	Key     string `json:"key"`
	Run     string `json:"run,omitempty"`
	Attempt int64  `json:"attempt,omitempty"`
}

// Base names a plan's base snapshot in its key (plans/<base>/): "none"
// for a first run, "a<n>" for attempt n's (unique within the export), or
// "legacy".
func (r *SnapshotRef) Base() string {
	switch {
	case r == nil:
		return "none"
	case r.Attempt == 0:
		return "legacy"
	}
	return "a" + strconv.FormatInt(r.Attempt, 10)
}

// readState returns the export's state and the ETag to swap it with; a
// missing state is an export that never ran under this layout ("" ETag:
// the swap creates it), whose snapshot may still be the legacy one.
func (s *Service) readState(ctx context.Context, export string) (exportState, string, error) {
	rc, info, err := s.Store.Get(ctx, stateKey(export))
	if errors.Is(err, store.ErrNotFound) {
		var st exportState
		switch _, err := s.Store.Head(ctx, legacySnapshotKey(export)); {
		case err == nil:
			st.Snapshot = &SnapshotRef{Key: legacySnapshotKey(export)}
		case !errors.Is(err, store.ErrNotFound):
			return st, "", fmt.Errorf("reading %s: %w", legacySnapshotKey(export), err)
		}
		return st, "", nil
	}
	if err != nil {
		return exportState{}, "", fmt.Errorf("reading %s: %w", stateKey(export), err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return exportState{}, "", fmt.Errorf("reading %s: %w", stateKey(export), err)
	}
	var st exportState
	if err := json.Unmarshal(b, &st); err != nil {
		return exportState{}, "", &BrokenState{Key: stateKey(export), Err: err}
	}
	return st, info.ETag, nil
}

// swapState writes next over the state read with etag ("" when there was
// none). It reports false, with no error, when another writer got there
// first: the caller reads the state again and decides anew.
func (s *Service) swapState(ctx context.Context, export string, next exportState, etag string) (bool, error) {
	b, err := json.Marshal(next)
	if err != nil {
		return false, fmt.Errorf("encoding %s: %w", stateKey(export), err)
	}
	opts := store.PutOptions{ContentType: "application/json", IfNoneMatch: etag == "", IfMatch: etag}
	_, err = s.Store.Put(ctx, stateKey(export), bytes.NewReader(b), opts)
	switch {
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrChanged):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("writing %s: %w", stateKey(export), err)
	}
	return true, nil
}

// BrokenState is a state.json that cannot be decoded: the export stops
// (others go on) until a person repairs or deletes it.
type BrokenState struct {
	Key string
	Err error
}

func (e *BrokenState) Error() string {
	return fmt.Sprintf("%s cannot be decoded (%v): no run of this export can start until it is repaired; "+
		"if no run of it is in progress, delete it (the next run then diffs against an empty snapshot and resends every contact)",
		e.Key, e.Err)
}

func (e *BrokenState) Unwrap() error { return e.Err }

// attemptRecord is runs/<export>/<run>/attempts/<n>/attempt.json, written
// create-only once the attempt holds its export: the attempt as a record.
type attemptRecord struct {
	Holder
	// Prior counts the run's attempts before this one.
	Prior        int      `json:"prior"`
	ListRequests Requests `json:"listRequests"` // made finding the list before the claim, lookups included
	// LookupRequests of ListRequests listed the account's contacts, for
	// an update or create export on a destination that cannot limit an
	// upsert itself.
	LookupRequests int       `json:"lookupRequests,omitempty"`
	Notes          []string  `json:"notes,omitempty"` // what the destination said then, for the report
	ClaimedAt      time.Time `json:"claimedAt"`       // for people; no decision reads it
}

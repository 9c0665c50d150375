package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/segpilot/segpilot/shared/clock"
	"github.com/segpilot/segpilot/shared/pace"
	"github.com/segpilot/segpilot/shared/store"
)

// throttleSignal is a run's pace.Signal: one small object under the run
// holding the rate its syncbatch workers pace at (pace.ShareState), which
// a worker rewrites when the destination answers it 429 and every worker
// of the run reads a few times a second, so that they pace as one
// limiter would (see pace.NewShare).
type throttleSignal struct {
	store store.ObjectStore
	key   string
	log   *slog.Logger
}

var _ pace.Signal = (*throttleSignal)(nil)

func (s *Service) throttleSignal(export, runID string, attempt int64) *throttleSignal {
	return &throttleSignal{store: s.Store, key: throttledKey(export, runID, attempt), log: s.Logger()}
}

// Update writes change(the state now) in place of the state now, by
// compare-and-swap, but for the groups finished: the most of the two,
// since the groups' ends count them beside the shares' changes
// (groupDone).
func (t *throttleSignal) Update(ctx context.Context, change func(pace.ShareState) (pace.ShareState, bool)) (pace.ShareState, error) {
	var left pace.ShareState
	err := t.swap(ctx, func(cur pace.ShareState) (pace.ShareState, bool) {
		next, write := change(cur)
		if !write {
			left = cur
			return cur, false
		}
		next.Done = max(next.Done, cur.Done)
		left = next
		return next, true
	})
	if err != nil {
		t.log.Warn("writing the throttle signal", "key", t.key, "err", err)
		return pace.ShareState{}, fmt.Errorf("writing the throttle signal: %w", err)
	}
	return left, nil
}

// groupDone counts one more of the run's groups finished (see
// pace.Limiter.Spread). A count lost (the bucket unreachable) only
// leaves the last shares pacing slower.
func (t *throttleSignal) groupDone(ctx context.Context) {
	if err := t.swap(ctx, func(cur pace.ShareState) (pace.ShareState, bool) {
		cur.Done++
		return cur, true
	}); err != nil {
		t.log.Warn("counting a finished group in the throttle signal", "key", t.key, "err", err)
	}
}

// A swap's compare-and-swap tries again, at most swapTries times, after
// a random wait of up to swapBackoff times the tries so far: near a run's
// end some 40 groups end within a second, each swap a GET and a PUT, and
// 40 that end at once and try again at once lose to each other (under
// -race, 20 tries without the wait counted 29-39 of 40). With the shares'
// 429s counted by swap too, 40 groups ending beside 40 429s (80 swaps at
// once, under -race on gofakes3) lost 2 groups at 20 tries.
const (
	swapTries   = 40
	swapBackoff = 10 * time.Millisecond
)

// swap writes next(the state now) in place of the state now, unless next
// says to leave it or another write came between its read and its write:
// then it reads again.
func (t *throttleSignal) swap(ctx context.Context, next func(pace.ShareState) (pace.ShareState, bool)) error {
	for try := range swapTries {
		if try > 0 {
			if err := clock.Sleep(ctx, time.Duration(rand.Int64N(int64(try)*int64(swapBackoff)))); err != nil {
				return err
			}
		}
		var cur pace.ShareState
		info, err := getJSONInfo(ctx, t.store, t.key, &cur)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		st, write := next(cur)
		if !write {
			return nil
		}
		err = putJSON(ctx, t.store, t.key, st, store.PutOptions{IfNoneMatch: info.ETag == "", IfMatch: info.ETag})
		if !errors.Is(err, store.ErrChanged) && !errors.Is(err, store.ErrExists) {
			return err
		}
	}
	return fmt.Errorf("%d other writes came between a read and a write", swapTries)
}

func (t *throttleSignal) Read(ctx context.Context) (pace.ShareState, error) {
	var st pace.ShareState
	err := getJSON(ctx, t.store, t.key, &st)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return pace.ShareState{}, nil
	case err != nil:
		t.log.Warn("reading the throttle signal", "key", t.key, "err", err)
		return pace.ShareState{}, fmt.Errorf("reading the throttle signal: %w", err)
	}
	return st, nil
}

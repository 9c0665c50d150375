package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

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

func (t *throttleSignal) Write(ctx context.Context, st pace.ShareState) error {
	if err := putJSON(ctx, t.store, t.key, st, store.PutOptions{}); err != nil {
		t.log.Warn("writing the throttle signal", "key", t.key, "err", err)
		return fmt.Errorf("writing the throttle signal: %w", err)
	}
	return nil
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

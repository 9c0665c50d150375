package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/pace"
	"github.com/segpilot/segpilot/shared/store"
)

// throttleSignal is a run's pace.Signal: one small object under the run
// that a syncbatch worker rewrites when the destination answers it 429,
// and that every worker of the run looks at about once a second (a HEAD),
// so that all of them slow down together (see pace.NewShare).
type throttleSignal struct {
	store store.ObjectStore
	key   string
	log   *slog.Logger
	now   func() time.Time
}

var _ pace.Signal = (*throttleSignal)(nil)

func (s *Service) throttleSignal(export, runID string, attempt int64) *throttleSignal {
	return &throttleSignal{store: s.Store, key: throttledKey(export, runID, attempt), log: s.Logger(), now: s.now}
}

// Raise writes the object anew; its content (the time, to the nanosecond)
// differs from every earlier raise's, so its ETag does.
func (t *throttleSignal) Raise(ctx context.Context) (string, error) {
	at := t.now().UTC().Format(time.RFC3339Nano)
	info, err := t.store.Put(ctx, t.key, strings.NewReader(at+"\n"), store.PutOptions{ContentType: "text/plain"})
	if err != nil {
		t.log.Warn("raising the throttle signal", "key", t.key, "err", err)
		return "", fmt.Errorf("raising the throttle signal: %w", err)
	}
	return info.ETag, nil
}

func (t *throttleSignal) Version(ctx context.Context) (string, error) {
	info, err := t.store.Head(ctx, t.key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", nil
	case err != nil:
		t.log.Warn("reading the throttle signal", "key", t.key, "err", err)
		return "", fmt.Errorf("reading the throttle signal: %w", err)
	}
	return info.ETag, nil
}

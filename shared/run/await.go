package run

import (
	"context"
	"errors"
	"time"

	"github.com/segpilot/segpilot/shared/clock"
	"github.com/segpilot/segpilot/shared/store"
)

// Await waits for a delivery that Start left queued or running and returns
// how it ended: the CLI's loop, where AWS has finalize's kick. Each poll
// drains the export's queue, so the delivery starts here once the export
// is free, and an attempt whose process died is closed here.
func (s *Service) Await(ctx context.Context, res Result, poll time.Duration) (Result, error) {
	for {
		switch {
		case res.Status == StatusRunning && res.Attempt > 0:
			rep, err := ReadReport(ctx, s.Store, res.Export, res.RunID)
			switch {
			case err == nil && rep.Seq >= attemptSeq(res.Attempt) && !rep.Requeued && !rep.Closing:
				// (A requeued attempt's run goes on: the drains below
				// start its next attempt, whose report comes later; a
				// closing one's is replaced once a drain closes it.)
				return Result{Export: res.Export, RunID: res.RunID, Status: rep.Status, Message: rep.Message, Counts: rep.Plan,
					Attempt: rep.Attempt, Started: res.Started}, nil
			case err != nil && !errors.Is(err, store.ErrNotFound):
				return res, err
			}
		case res.Status != StatusQueued:
			return res, nil
		}
		if err := clock.Sleep(ctx, poll); err != nil {
			return res, err
		}
		cfg, err := LoadConfig(ctx, s.Store)
		if err != nil {
			return res, err
		}
		var want *wanted
		if res.Status == StatusQueued {
			want = &wanted{key: res.Queued, runID: res.RunID}
		}
		next, err := s.drain(ctx, cfg, res.Export, want)
		if err != nil {
			return next, err
		}
		if want != nil {
			res = next
		}
	}
}

// Package clock holds segpilot's one way to wait: a sleep that a
// cancelled context cuts short.
package clock

import (
	"context"
	"time"
)

// Sleep waits for d, or returns ctx's error as soon as it is done (at
// once when it already is, whatever d).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

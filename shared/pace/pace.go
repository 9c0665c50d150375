// Package pace holds a connection's request budget: a token bucket that
// every worker sending for that connection (in one process) waits on.
package pace

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/segpilot/segpilot/shared/clock"
)

// Limiter paces requests to rps a second, bursts of at most burst.
//
// Waiters take their turn one at a time: a waiter reserves its slot only
// when the one before it has had its own. Reserving ahead (each of N
// workers taking a future slot, then sleeping) keeps the average rate but
// not the instantaneous one: workers woken late (a loaded machine, a
// paused container) would all send at once, a burst the API answers with
// 429s. One at a time, a late waiter costs at most one extra request in a
// bunch, and a waiter on time keeps the schedule exact.
type Limiter struct {
	mu    sync.Mutex // held while a waiter waits for its slot
	lim   *rate.Limiter
	sleep func(ctx context.Context, d time.Duration) error // clock.Sleep; tests stall it
}

// New returns a limiter of rps requests a second (0 or less: unlimited).
func New(rps float64, burst int) *Limiter {
	limit := rate.Limit(rps)
	if rps <= 0 {
		limit = rate.Inf
	}
	return &Limiter{lim: rate.NewLimiter(limit, max(burst, 1)), sleep: clock.Sleep}
}

// Wait blocks until the caller may send one request, or ctx is done.
func (l *Limiter) Wait(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	res := l.lim.Reserve()
	if err := l.sleep(ctx, res.Delay()); err != nil {
		res.Cancel()
		return err
	}
	return nil
}

// Rate is the limiter's requests per second (+Inf when unlimited).
func (l *Limiter) Rate() float64 { return float64(l.lim.Limit()) }

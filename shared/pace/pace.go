// Package pace holds a connection's request budget: a token bucket that
// every worker sending for that connection (in one process) waits on, and
// that slows down when the API says it is sent too fast.
package pace

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/segpilot/segpilot/shared/clock"
)

// How the rate adapts to 429s (additive increase, multiplicative
// decrease): a 429 cuts it to 80 %, at most once per half
// second (the workers in flight all meet the same overload), and it grows
// back by 10 % of the budget a second, never above the budget. A budget
// set a little too high then settles just under the API's real limit
// instead of drowning in 429s; a stray 429 costs about a fifth of a
// second; an API that keeps answering 429 holds it at a fifth of the
// budget (growth and cuts balance), where Retry-After and the retries
// take over.
const (
	decrease    = 0.8
	increase    = 0.1 // of the budget, per second
	decreaseGap = 500 * time.Millisecond
)

// Limiter paces requests to at most a budget of rps a second, bursts of
// at most burst.
//
// Waiters take their turn one at a time: a waiter reserves its slot only
// when the one before it has had its own. Reserving ahead (each of N
// workers taking a future slot, then sleeping) keeps the average rate but
// not the instantaneous one: workers woken late (a loaded machine, a
// paused container) would all send at once, a burst the API answers with
// 429s. One at a time, a late waiter costs at most one extra request in a
// bunch, and a waiter on time keeps the schedule exact.
type Limiter struct {
	mu        sync.Mutex // held while a waiter waits for its slot
	lim       *rate.Limiter
	budget    float64   // the configured rate: never exceeded
	current   float64   // the rate now (<= budget)
	notBefore time.Time // no request before (StartAfter)
	adjusted  time.Time // when current last changed
	decreased time.Time // when a 429 last cut it

	sleep func(ctx context.Context, d time.Duration) error // clock.Sleep; tests stall it
	now   func() time.Time
}

// New returns a limiter of rps requests a second (0 or less: unlimited).
func New(rps float64, burst int) *Limiter {
	l := &Limiter{budget: rps, current: rps, sleep: clock.Sleep, now: time.Now}
	limit := rate.Limit(rps)
	if rps <= 0 {
		limit = rate.Inf
	}
	l.lim = rate.NewLimiter(limit, max(burst, 1))
	return l
}

// Wait blocks until the caller may send one request, or ctx is done.
func (l *Limiter) Wait(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.grow()
	if wait := l.notBefore.Sub(l.now()); wait > 0 {
		if err := l.sleep(ctx, wait); err != nil {
			return err
		}
		l.notBefore = time.Time{}
	}
	res := l.lim.Reserve()
	if err := l.sleep(ctx, res.Delay()); err != nil {
		res.Cancel()
		return err
	}
	return nil
}

// StartAfter holds the first request back by d. Workers that pace their
// own shares of one budget (Lambda containers) and start together would
// otherwise send their first requests together: a burst of one request
// per worker. Each starting at a random phase of its interval spreads them.
func (l *Limiter) StartAfter(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.notBefore = l.now().Add(d) // then its bucket's one token: the next request an interval later
}

// Throttled tells the limiter the API answered 429: it slows down.
func (l *Limiter) Throttled() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.budget <= 0 || now.Sub(l.decreased) < decreaseGap {
		return
	}
	l.grow()
	l.set(l.current*decrease, now)
	l.decreased = now
}

// grow raises the rate back towards the budget, by the time since it
// last changed. Callers hold mu.
func (l *Limiter) grow() {
	if l.current >= l.budget || l.budget <= 0 {
		return
	}
	now := l.now()
	l.set(min(l.budget, l.current+l.budget*increase*now.Sub(l.adjusted).Seconds()), now)
}

func (l *Limiter) set(rps float64, now time.Time) {
	l.current, l.adjusted = rps, now
	l.lim.SetLimit(rate.Limit(rps))
}

// Rate is the rate now, in requests a second (+Inf when unlimited).
func (l *Limiter) Rate() float64 { return float64(l.lim.Limit()) }

// Budget is the configured rate the limiter never exceeds.
func (l *Limiter) Budget() float64 { return l.budget }

// Package pace holds a connection's request budget: a token bucket that
// every worker sending for that connection in one process waits on (or
// one worker's share of it, in a Lambda container), and that slows down
// when the API says it is sent too fast.
package pace

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/segpilot/segpilot/shared/clock"
)

// How the rate adapts to 429s (additive increase, multiplicative
// decrease): a 429 cuts it, at most once per half second (the workers in
// flight all meet the same overload), and it grows back by a share of the
// budget a second, never above the budget. A budget set a little too high
// then settles just under the API's real limit instead of drowning in
// 429s; an API that keeps answering 429 holds the rate at a fraction of the
// budget (growth and cuts balance), where Retry-After and the retries take
// over.
//
// One limiter for every worker (New) cuts to 80 % and grows back by 10 %
// of the budget a second: a stray 429 costs about a fifth of a second.
// Shares (NewShare) all cut together when the API is overloaded, so each
// cut counts N times: they cut to 90 % and grow back by 5 % a second, which
// held a budget 20 % too high to 3-4 % of requests answered 429 at about
// 1.26 of the floor (make bench), where 80 % and 10 % overshot both ways.
const (
	decrease      = 0.8
	increase      = 0.1 // of the budget, per second
	shareDecrease = 0.9
	shareIncrease = 0.05
	decreaseGap   = 500 * time.Millisecond
	pollEvery     = time.Second // how often a share looks at its Signal
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

	decrease, increase float64 // see the constants

	// A share's view of its Signal (NewShare): the one it follows, the
	// version it last saw (its own raise included), when it last looked
	// and whether another share had raised it then.
	share        bool
	signal       Signal
	seen         string
	lastPoll     time.Time
	raisedBefore bool

	sleep func(ctx context.Context, d time.Duration) error // clock.Sleep; tests stall it
	now   func() time.Time
}

// New returns a limiter of rps requests a second (0 or less: unlimited)
// that paces every worker sending on one budget: it hears every 429.
func New(rps float64, burst int) *Limiter { return newLimiter(rps, burst, false) }

// NewShare returns a limiter of rps requests a second that paces one
// worker's share of a budget that other workers, in other processes, pace
// too (Lambda containers). Alone it would hear only its own few 429s: when
// the API is overloaded, each share is cut rarely and grows back long
// before its next 429, so the shares together stay above the API's limit
// (seen: 6 % of requests answered 429 with a budget 20 % too high), and
// the shares cut hardest finish last. So a share also follows the Signal
// in its Wait's context: it raises it on its own 429 and, at most once a
// pollEvery, looks whether another share raised it since, and slows down
// as if it had met that 429 itself. All shares then slow together, as one
// limiter would. Without a Signal in ctx a share paces alone.
func NewShare(rps float64, burst int) *Limiter { return newLimiter(rps, burst, true) }

func newLimiter(rps float64, burst int, share bool) *Limiter {
	l := &Limiter{budget: rps, current: rps, decrease: decrease, increase: increase, share: share,
		sleep: clock.Sleep, now: time.Now}
	if share {
		l.decrease, l.increase = shareDecrease, shareIncrease
	}
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
	l.follow(ctx)
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

// Throttled tells the limiter the API answered 429: it slows down, and a
// share raises the Signal in ctx for the other shares.
func (l *Limiter) Throttled(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut()
	if sig := signalFrom(ctx); l.share && sig != nil {
		if v, err := sig.Raise(ctx); err == nil {
			l.signal, l.seen = sig, v
		}
	}
}

// follow cuts a share's rate when another share raised the Signal in ctx
// since it last looked. A Signal it has not followed before only sets
// what it has seen: a 429 from before this share started is not news.
// Callers hold mu.
func (l *Limiter) follow(ctx context.Context) {
	sig := signalFrom(ctx)
	now := l.now()
	if !l.share || sig == nil || (sig == l.signal && now.Sub(l.lastPoll) < pollEvery) {
		return
	}
	l.lastPoll = now
	v, err := sig.Version(ctx)
	if err != nil {
		return // the Signal logs its failures; this share hears of 429s later
	}
	// Raised at two looks in a row: the API is overloaded. Once is a
	// stray 429 (shares at random phases bunch now and then), which only
	// the share that met it slows down for.
	raised := sig == l.signal && v != l.seen
	if raised && l.raisedBefore {
		l.cut()
	}
	l.signal, l.seen, l.raisedBefore = sig, v, raised
}

// cut slows the rate for a 429, once per decreaseGap. Callers hold mu.
func (l *Limiter) cut() {
	now := l.now()
	if l.budget <= 0 || now.Sub(l.decreased) < decreaseGap {
		return
	}
	l.grow()
	l.set(l.current*l.decrease, now)
	l.decreased = now
}

// grow raises the rate back towards the budget, by the time since it
// last changed. Callers hold mu.
func (l *Limiter) grow() {
	if l.current >= l.budget || l.budget <= 0 {
		return
	}
	now := l.now()
	l.set(min(l.budget, l.current+l.budget*l.increase*now.Sub(l.adjusted).Seconds()), now)
}

func (l *Limiter) set(rps float64, now time.Time) {
	l.current, l.adjusted = rps, now
	l.lim.SetLimit(rate.Limit(rps))
}

// Rate is the rate now, in requests a second (+Inf when unlimited).
func (l *Limiter) Rate() float64 { return float64(l.lim.Limit()) }

// Budget is the configured rate the limiter never exceeds.
func (l *Limiter) Budget() float64 { return l.budget }

// Signal is how the shares of one budget tell each other of a 429: a small
// shared object (a run's, in the bucket) whose version changes with every
// raise. It is advice: an implementation logs its own failures, and a
// share that cannot reach it only hears of 429s later.
type Signal interface {
	// Raise records a 429 and returns the signal's new version.
	Raise(ctx context.Context) (version string, err error)
	// Version is the signal's version now ("" when never raised).
	Version(ctx context.Context) (string, error)
}

type signalKey struct{}

// WithSignal returns ctx carrying the Signal that the share limiters
// (NewShare) waiting in it follow and raise.
func WithSignal(ctx context.Context, sig Signal) context.Context {
	return context.WithValue(ctx, signalKey{}, sig)
}

func signalFrom(ctx context.Context) Signal {
	sig, _ := ctx.Value(signalKey{}).(Signal)
	return sig
}

// Package pace holds a connection's request budget: a token bucket that
// every worker sending for that connection in one process waits on (or
// one worker's share of it, in a Lambda container), and that slows down
// when the API says it is sent too fast.
package pace

import (
	"context"
	"slices"
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
// Its mutex is held for arithmetic only: a waiter takes its slot under
// it and sleeps outside; the shares' Signal is read and raised outside it
// too (a slow S3 request holds no other worker up). A waiter woken late
// (a loaded machine, a paused container) does not send at the slot it
// missed: the other waiters of a pause wake together, a burst the API
// answers with 429s. It takes a new slot instead, so a late waiter costs
// a slot, never a bunch.
//
// From the 429s it finds the rate the API really takes: a 429 cuts the
// rate to the rate at which the API accepted the latest requests (when
// there are enough to tell), and above that rate it grows back slowly,
// probing, instead of at the budget's pace. A budget set three times too
// high then costs a few 429s in a hundred, not one in six. A share
// (NewShare) sees too few answers for that and adapts as before.
type Limiter struct {
	mu        sync.Mutex
	lim       *rate.Limiter
	budget    float64   // the configured rate: never exceeded
	current   float64   // the rate now (<= budget)
	found     float64   // what the API accepted when it last said 429; 0: not known
	notBefore time.Time // no request before (StartAfter)
	adjusted  time.Time // when current last changed
	decreased time.Time // when a 429 last cut it

	decrease, increase float64 // see the constants

	// The times of the latest answers other than 429 (a ring), to tell
	// what the API accepts.
	accepted [acceptedRing]time.Time
	nAcc     int

	// A share's view of its Signal (NewShare): the one it follows, the
	// version it last saw (its own raise included), when it last looked
	// and whether another share had raised it then; polling and raising
	// say a read or a raise of it is under way (outside mu).
	share        bool
	signal       Signal
	seen         string
	lastPoll     time.Time
	raisedBefore bool
	polling      bool
	raising      int

	sleep func(ctx context.Context, d time.Duration) error // clock.Sleep; tests stall it
	now   func() time.Time
}

const (
	// A 429 is weighed against the gaps between the latest answers
	// (acceptedRate), none older than acceptedWindow; acceptedRing holds
	// them.
	acceptedWindow = 5 * time.Second
	acceptedRing   = 64
	acceptedSample = 8    // gaps between answers weighed
	minCut         = 0.25 // a 429 never cuts below a quarter of the rate at once
	probe          = 0.01 // above the rate found, growth a second, of that rate
	foundBelow     = 0.95 // the rate found is at most this share of a rate refused
	lateBy         = 5 * time.Millisecond
	minRate        = 0.01 // of the budget: the rate never falls below it
)

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
	l.poll(ctx)
	for {
		l.mu.Lock()
		l.grow()
		now := l.now()
		at := now
		if l.notBefore.After(at) {
			at = l.notBefore
		}
		res := l.lim.ReserveN(at, 1)
		slot := at.Add(res.DelayFrom(at))
		late := lateBy
		if l.current > 0 {
			late = max(late, time.Duration(float64(time.Second)/l.current)) // an interval at the rate now
		}
		l.mu.Unlock()
		if err := l.sleep(ctx, slot.Sub(now)); err != nil {
			res.CancelAt(l.now())
			return err
		}
		if l.now().Sub(slot) <= late {
			return nil
		}
		// Woken late: the waiters of the same pause are waking too.
	}
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

// Accepted tells the limiter the API answered a request with anything but
// a 429: what it accepts is what a 429 is weighed against.
func (l *Limiter) Accepted() {
	if l.share {
		return // a share does not measure the API's rate (see cut)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.accepted[l.nAcc%acceptedRing] = now
	l.nAcc++
}

// Throttled tells the limiter the API answered 429: it slows down, and a
// share raises the Signal in ctx for the other shares.
func (l *Limiter) Throttled(ctx context.Context) {
	l.mu.Lock()
	l.cut()
	sig := signalFrom(ctx)
	raise := l.share && sig != nil
	if raise {
		l.raising++
	}
	l.mu.Unlock()
	if !raise {
		return
	}
	v, err := sig.Raise(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.raising--
	if err == nil {
		l.signal, l.seen = sig, v
	}
}

// poll cuts a share's rate when another share raised the Signal in ctx
// since it last looked, reading the Signal outside mu, one waiter at a
// time. A Signal it has not followed before only sets what it has seen:
// a 429 from before this share started is not news.
func (l *Limiter) poll(ctx context.Context) {
	sig := signalFrom(ctx)
	if !l.share || sig == nil {
		return
	}
	l.mu.Lock()
	now := l.now()
	if l.polling || l.raising > 0 || (sig == l.signal && now.Sub(l.lastPoll) < pollEvery) {
		l.mu.Unlock()
		return
	}
	l.polling, l.lastPoll = true, now
	l.mu.Unlock()

	v, err := sig.Version(ctx)

	l.mu.Lock()
	defer l.mu.Unlock()
	l.polling = false
	if err != nil || l.raising > 0 {
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

// cut slows the rate for a 429, once per decreaseGap: to a share of it,
// or to what the API accepted lately when that is less. Callers hold mu.
func (l *Limiter) cut() {
	now := l.now()
	if l.budget <= 0 {
		return
	}
	// A share sees too few answers to tell the API's rate from them (a
	// request a second, its part of the budget): it follows the others
	// through the Signal instead, and cuts as ever.
	took, measured := l.acceptedRate(now) // a share records no answers: never measured
	if now.Sub(l.decreased) < decreaseGap && (!measured || took >= l.current*l.decrease) {
		return // a 429 of the same overload; only a measure well below the rate now cuts again
	}
	l.grow()
	next := l.current * l.decrease
	if measured {
		// Refused at the rate now, the API's limit is below it, however
		// fast it took the latest requests (out of a burst it allows):
		// the rate found sits under both, so the API's bucket refills
		// between probes instead of staying empty at its very limit.
		l.found = min(took, l.current*foundBelow)
		next = max(min(next, took), l.current*minCut)
	}
	l.set(next, now)
	l.decreased = now
}

// acceptedRate is the rate at which the API accepted the latest requests,
// in requests a second: one over the median gap between the last
// acceptedSample answers. Right after a 429 the API takes requests only
// as its budget refills, so the gaps are its rate (or this limiter's part
// of it); the median ignores the few answers of a burst the API let
// through before. False when there are too few answers, or they are older
// than acceptedWindow. Callers hold mu.
func (l *Limiter) acceptedRate(now time.Time) (float64, bool) {
	if l.nAcc < acceptedSample+1 {
		return 0, false
	}
	var gaps [acceptedSample]time.Duration
	for i := range acceptedSample {
		newer := l.accepted[(l.nAcc-1-i)%acceptedRing]
		older := l.accepted[(l.nAcc-2-i)%acceptedRing]
		if i == acceptedSample-1 && now.Sub(older) > acceptedWindow {
			return 0, false // answers from before a pause tell nothing of now
		}
		gaps[i] = newer.Sub(older)
	}
	slices.Sort(gaps[:])
	median := (gaps[acceptedSample/2-1] + gaps[acceptedSample/2]) / 2
	if median <= 0 {
		return 0, false
	}
	return float64(time.Second) / float64(median), true
}

// grow raises the rate back towards the budget, by the time since it
// last changed: by a share of the budget a second up to the rate found,
// then by a share of that rate a second. Callers hold mu.
func (l *Limiter) grow() {
	if l.current >= l.budget || l.budget <= 0 {
		return
	}
	now := l.now()
	dt := now.Sub(l.adjusted).Seconds()
	r := l.current
	if fast := l.budget * l.increase; l.found == 0 || r+fast*dt <= l.found {
		r += fast * dt
	} else {
		if r < l.found {
			dt -= (l.found - r) / fast
			r = l.found
		}
		r += l.found * probe * dt
	}
	l.set(min(l.budget, r), now)
}

func (l *Limiter) set(rps float64, now time.Time) {
	rps = max(rps, l.budget*minRate)
	l.current, l.adjusted = rps, now
	l.lim.SetLimitAt(now, rate.Limit(rps))
}

// Rate is the rate now, in requests a second (+Inf when unlimited).
func (l *Limiter) Rate() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return float64(l.lim.Limit())
}

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

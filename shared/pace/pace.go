// Package pace holds a connection's request budget: a token bucket that
// every worker sending for that connection in one process waits on (or
// one worker's share of it, in a Lambda container), and that slows down
// when the API says it is sent too fast.
package pace

import (
	"context"
	"math/rand/v2"
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
// over. A stray 429 costs about a fifth of a second. Shares of a budget
// (NewShare) adapt the same way, all together, as one limiter.
const (
	decrease    = 0.8
	increase    = 0.1 // of the budget, per second
	decreaseGap = 500 * time.Millisecond
)

// Limiter paces requests to at most a budget of rps a second, bursts of
// at most burst.
//
// Its mutex is held for arithmetic only: a waiter takes its slot under
// it and sleeps outside; the shares' Signal is read and written outside it
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
// high then costs a few 429s in a hundred, not one in six.
type Limiter struct {
	mu      sync.Mutex
	lim     *rate.Limiter
	budget  float64 // the configured rate: never exceeded
	current float64 // the rate now (<= budget)
	found   float64 // what the API accepted when it last said 429; 0: not known
	// No request before started + startPhase of an interval at the rate
	// then (StartAfter), until the first is let go; first is the latest
	// time that named (see Wait).
	started    time.Time
	startPhase float64
	first      time.Time
	adjusted   time.Time // when current last changed
	decreased  time.Time // when a 429 last cut it

	// The times of the latest answers other than 429 (a ring), to tell
	// what the API accepts.
	accepted [acceptedRing]time.Time
	nAcc     int

	// A share (NewShare) paces at the rate its Signal's state names (see
	// ShareState): whole is the budget all the shares split, state the
	// signal's state it knows, pending its 429s not yet written to it;
	// polling and raising say a read or a write of it is under way
	// (outside mu), lastPoll when the latest read began, followed when
	// it began to follow the signal.
	share    bool
	whole    float64
	workers  int // the shares of whole at most sending at once (Spread); 0: not known
	groups   int // the run's groups, one a share's work
	signal   Signal
	state    ShareState
	pending  int
	followed time.Time
	lastPoll time.Time
	polling  bool
	raising  bool
	rephase  bool // the next request at a random phase of its interval (see Throttled)
	// The time it paused after a 429 (from pausedAt to its next Wait:
	// the retry's wait for Retry-After), reported with its next 429s.
	pausedAt time.Time
	paused   time.Duration
	// A share's latest round trip: from letting its request go (sentAt)
	// to the answer (Done); see TakeOver.
	sentAt    time.Time
	roundTrip time.Duration
	lastSent  time.Time // when a waiter last let a request go (see sendAt)

	// At most refusedMax requests answered as malformed (Refused) in any
	// refusedPer: the times of the latest (refused), and the requests
	// let go and not answered yet (inFlight), which may be refused too.
	refusedMax  int
	refusedPer  time.Duration
	refused     []time.Time
	lastRefused time.Time
	inFlight    int

	// The cuts so far: a waiter that slept to a slot given before one
	// takes a new slot at the rate cut to (a budget three times too high
	// went on sending at the old rate for a quarter of a second after
	// the first 429s).
	cuts int

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
	catchUpSlots   = 3                // one limiter's waiter woken up to this many intervals late may still send (see sendAt)
	loneAfter      = 10 * time.Second // a 429 this long after the last cut, at the rate the API took, finds no rate (see cut)
	minRate        = 0.01             // of the budget: the rate never falls below it
)

// New returns a limiter of rps requests a second (0 or less: unlimited)
// that paces every worker sending on one budget: it hears every 429.
func New(rps float64, burst int) *Limiter { return newLimiter(rps, burst, false) }

// NewShare returns a limiter of rps requests a second that paces one
// worker's share of a budget of whole requests a second that other
// workers, in other processes, pace too (Lambda containers). Alone it
// would hear only its own few 429s: when the API is overloaded, each share
// is cut rarely and grows back long before its next 429, so the shares
// together stay above the API's limit (seen: 6 % of requests answered
// 429 with a budget 20 % too high, 32 % with one three times too high),
// and the shares cut hardest finish last. So the shares pace as one
// limiter would: at the rate their Signal's state names (Follow), which a
// share's 429 cuts for all of them, and which each reads every
// sharePoll. Without a Signal a share paces alone.
func NewShare(rps, whole float64, burst int) *Limiter {
	l := newLimiter(rps, burst, true)
	l.whole = whole
	return l
}

func newLimiter(rps float64, burst int, share bool) *Limiter {
	l := &Limiter{budget: rps, current: rps, share: share, sleep: clock.Sleep, now: time.Now}
	limit := rate.Limit(rps)
	if rps <= 0 {
		limit = rate.Inf
	}
	l.lim = rate.NewLimiter(limit, max(burst, 1))
	return l
}

// Wait blocks until the caller may send one request, or ctx is done.
func (l *Limiter) Wait(ctx context.Context) error {
	l.resume()
	l.poll(ctx)
	if err := l.holdForRefused(ctx); err != nil {
		return err
	}
	for {
		l.mu.Lock()
		now := l.now()
		if l.share && l.signal != nil && l.budget > 0 {
			l.set(l.shareRate(l.state, now), now)
		} else {
			l.grow()
		}
		at := now
		if !l.started.IsZero() && l.current > 0 {
			// A rate cut since puts the first request later; a rate risen
			// since (the finished groups' budget, Spread) does not bring it
			// forward: near a run's end most shares are the last groups'
			// first requests, each an interval after its predecessor's
			// last (TakeOver), and a cut that came with more groups
			// finished (a wider rate) put a dozen of them in the past at
			// once (traced at a budget three times too high: 10-15 429s in
			// the run's last 0.3 s, 1 run in 6).
			if first := l.started.Add(time.Duration(l.startPhase * float64(time.Second) / l.current)); first.After(l.first) {
				l.first = first
			}
			if l.first.After(at) {
				at = l.first
			}
		}
		if l.rephase && l.current > 0 {
			l.rephase = false
			at = at.Add(time.Duration(rand.Int64N(int64(float64(time.Second)/l.current) + 1)))
		}
		res := l.lim.ReserveN(at, 1)
		slot := at.Add(res.DelayFrom(at))
		late, catchUp, interval := lateBy, time.Duration(0), time.Duration(0)
		if l.current > 0 {
			interval = time.Duration(float64(time.Second) / l.current)
			late = max(late, interval)
			if l.share {
				// Shares wake late together when their process stalls (a
				// cold start beside them, a GC) and each would send at
				// once: a bunch the API refuses. An eighth of an interval
				// late, a share keeps its phase and takes its next slot.
				late = max(lateBy, late/8)
			} else {
				catchUp = catchUpSlots * interval
			}
		}
		cuts, look := l.cuts, time.Duration(0)
		if l.share && l.signal != nil {
			look = min(l.lookEvery(now), sharePoll) // calm: poll keeps the reads a calmPoll apart
		}
		l.mu.Unlock()
		slept, err := l.sleepUntil(ctx, now, slot, look, cuts)
		if err != nil || !slept {
			res.CancelAt(l.now())
		}
		if err != nil {
			l.Done()
			return err
		}
		if slept && l.sendAt(slot, late, catchUp, interval) {
			return nil
		}
		// Woken late (the waiters of the same pause are waking too), or
		// by a cut: a slot at the rate now.
	}
}

// sendAt says whether a waiter woken for slot sends now: up to late past
// it, or up to catchUp past it when no request went out in the last
// quarter interval. One limiter's waiters on a busy machine each wake a
// scheduler's delay late, and one that took a new slot lost its own (a
// slot given is not given back): two CPU-bound loops beside the
// benchmark cost 5-8 % of the floor with no 429 (Ortto, 1.057-1.085 in
// 6 runs; with the catch-up 1.02-1.04 in 12). The quarter interval keeps
// the waiters of one pause (a stalled process) from sending together.
func (l *Limiter) sendAt(slot time.Time, late, catchUp, interval time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if by := now.Sub(slot); by > late && (by > catchUp || now.Sub(l.lastSent) < interval/4) {
		return false
	}
	l.started, l.sentAt, l.lastSent = time.Time{}, now, now
	return true
}

// sleepUntil sleeps from now until slot, and says false when the rate was
// cut meanwhile (cuts counted): the slot was given at the rate before. A
// share following a Signal looks at it every look (0: not following)
// meanwhile, for the other shares' cuts: a share whose interval is long
// (its first request, at its phase of the interval; one of 40 shares,
// 0.4 s) would otherwise send at the rate before them.
func (l *Limiter) sleepUntil(ctx context.Context, now, slot time.Time, look time.Duration, cuts int) (bool, error) {
	looks := 0 // bounded: a test's clock may stand still
	if look > 0 {
		looks = int(slot.Sub(now) / look)
	}
	for range looks {
		if err := l.sleep(ctx, look); err != nil {
			return false, err
		}
		l.poll(ctx)
		if l.cutSince(cuts) {
			return false, nil
		}
		if slot.Sub(l.now()) <= look {
			break
		}
	}
	if err := l.sleep(ctx, slot.Sub(l.now())); err != nil {
		return false, err
	}
	return !l.cutSince(cuts), nil
}

// cutSince says the rate was cut since cuts were counted.
func (l *Limiter) cutSince(cuts int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cuts != cuts
}

// markCut counts a cut: the waiters holding slots given before it take new
// ones, from a bucket of their own (one limiter's waiters): given
// back to the old one (CancelAt), the slots of many waiters leave it in
// debt (it restores the tokens of the latest reservation only), a few
// tenths of a second lost at each cut, and a rate measured from what the
// API accepted then fell at every cut. The new bucket starts with one
// token, not its burst: a burst would send at once what the API just
// refused. A share (one waiter, a burst of 1) that has sent takes its next
// request at a random phase of an interval at the rate cut to, from a
// full bucket: the shares' phases spread over an interval at the rate
// before, and after a cut to a quarter they sent four times as dense as
// the rate cut to, a bunch an interval on that the API refused (40
// containers started together: 4 429s in 100 ms, 0.8 s after the first
// cut). The bucket's part of a token would hold half of them to one
// point; a share that has not sent yet keeps its phase (StartAfter's, of
// an interval at the rate then). Callers hold mu.
func (l *Limiter) markCut(now time.Time) {
	if !l.share {
		l.lim = rate.NewLimiter(l.lim.Limit(), l.lim.Burst())
		l.lim.ReserveN(now, l.lim.Burst()-1)
	} else if l.started.IsZero() {
		l.lim = rate.NewLimiter(l.lim.Limit(), l.lim.Burst())
		l.rephase = true
	}
	l.cuts++
}

// takeState makes st the shares' state this share knows, a cut if it is
// a later one. Callers hold mu.
func (l *Limiter) takeState(st ShareState) {
	if st.At.After(l.state.At) {
		l.markCut(l.now())
	}
	st.Done = max(st.Done, l.state.Done)
	l.state = st
}

// LimitRefused makes the limiter hold requests back so that at most max
// of them are answered as malformed (Refused) in any per: an API that
// locks a caller out after a number of bad requests (Ortto: 15 in 15
// seconds) is never given that many. Once one is refused, the requests
// in flight count as refused until answered, so none goes out that could
// make one too many, for as long as the last refusal is under two
// windows old (before, the requests in flight when the first comes are
// not held).
func (l *Limiter) LimitRefused(max int, per time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refusedMax, l.refusedPer = max, per
}

// holdForRefused waits while the requests refused in the window and those
// in flight reach the LimitRefused, then counts the caller's request in
// flight (Done ends it).
func (l *Limiter) holdForRefused(ctx context.Context) error {
	for {
		l.mu.Lock()
		now := l.now()
		for len(l.refused) > 0 && now.Sub(l.refused[0]) >= l.refusedPer {
			l.refused = l.refused[1:]
		}
		careful := l.refusedMax > 0 && now.Sub(l.lastRefused) < 2*l.refusedPer
		if !careful || len(l.refused)+l.inFlight < l.refusedMax {
			l.inFlight++
			l.mu.Unlock()
			return nil
		}
		wake := refusedRecheck // an answer in flight may free a place first
		if len(l.refused) > 0 && l.inFlight == 0 {
			wake = l.refused[0].Add(l.refusedPer).Sub(now)
		}
		l.mu.Unlock()
		if err := l.sleep(ctx, wake); err != nil {
			return err
		}
	}
}

// refusedRecheck is how often a request held back for refused ones looks
// again while others are in flight.
const refusedRecheck = 50 * time.Millisecond

// Done tells the limiter a request it let go was answered, or given up.
func (l *Limiter) Done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight = max(l.inFlight-1, 0)
	if l.share && !l.sentAt.IsZero() {
		l.roundTrip, l.sentAt = l.now().Sub(l.sentAt), time.Time{}
	}
}

// Refused tells the limiter the API answered a request as malformed (see
// LimitRefused).
func (l *Limiter) Refused() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refusedMax > 0 {
		l.lastRefused = l.now()
		l.refused = append(l.refused, l.lastRefused)
	}
}

// StartAfter holds the first request back by d. Workers that pace their
// own shares of one budget (Lambda containers) and start together would
// otherwise send their first requests together: a burst of one request
// per worker. Each starting at a random phase of its interval spreads them.
func (l *Limiter) StartAfter(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.started, l.first = l.now(), time.Time{} // then its bucket's one token: the next request an interval later
	if l.budget > 0 {
		l.startPhase = d.Seconds() * l.budget
	}
}

// TakeOver holds a share's next request back as the first of a worker
// that takes over from one that just ended (a Map child started as
// another ended): that one sent its last request at least a round trip
// before began (the answer ended its work), so the first goes an
// interval at the rate then after that. The round trip is taken as this
// share's latest (none in a new one): holding it back an interval from
// began cost each takeover its predecessor's last answer, 2 % of the
// floor at 0-80 ms of network delay.
func (l *Limiter) TakeOver(began time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.budget > 0 {
		l.started, l.startPhase, l.first = began.Add(-l.roundTrip), 1, time.Time{}
	}
}

// Accepted tells the limiter the API answered a request with anything but
// a 429: what it accepts is what a 429 is weighed against.
func (l *Limiter) Accepted() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.accepted[l.nAcc%acceptedRing] = now
	l.nAcc++
}

// Throttled tells the limiter the API answered 429: it slows down; a
// share following a Signal slows every share down through it, and sends
// its next request at a random phase of its interval. The requests an
// overload refused together are retried together (at the API's
// Retry-After), and shares pacing at one rate keep the phases they
// have: without that, a bunch once made goes on as a bunch, an interval
// apart, met by 429s at a rate well under the API's limit.
func (l *Limiter) Throttled(ctx context.Context) {
	l.mu.Lock()
	if !l.share || l.signal == nil {
		l.cut()
		l.mu.Unlock()
		return
	}
	l.pending++
	l.rephase = true
	l.pausedAt = l.now()
	if l.raising {
		l.mu.Unlock()
		return // the write under way, or the next, carries it
	}
	l.raising = true
	sig := l.signal
	l.mu.Unlock()
	l.raise(ctx, sig)
}

// raise counts this share's 429s into sig's state (a cut, or a count
// towards the next), until none is pending.
func (l *Limiter) raise(ctx context.Context, sig Signal) {
	for {
		l.mu.Lock()
		n, paused := l.pending, l.paused.Seconds()
		l.pending, l.paused = 0, 0
		l.mu.Unlock()

		ok := l.update(ctx, sig, n, paused)

		l.mu.Lock()
		if !ok || l.pending == 0 || sig != l.signal {
			l.raising = false
			l.mu.Unlock()
			return // the Signal not reached (it logs why): the others hear of these 429s later
		}
		l.mu.Unlock()
	}
}

// update counts n more 429s and paused seconds paused after them into
// sig's state, with the cut they or the counts before call for, and
// takes the state it leaves. The shares meet their first 429s together,
// and a count written plainly over the state read before it lost the
// counts of the shares writing meanwhile: the first cut, measured from
// five 429s counted where seven came, went above the API's rate (0.38-0.48
// of a budget three times too high, for 0.33) in 14 of 40 runs, and those
// runs met 12-16 429s in their first second where the others met 5. So
// the state is changed by compare-and-swap (Signal.Update), from what it
// holds when written (2 of 20 runs; 6 of 18 in a later batch: five exact
// counts still measure roughly). False when sig cannot be reached: the
// share takes the change from the state it knows.
func (l *Limiter) update(ctx context.Context, sig Signal, n int, paused float64) bool {
	next, err := sig.Update(ctx, func(cur ShareState) (ShareState, bool) {
		l.mu.Lock()
		defer l.mu.Unlock()
		next := l.counted(cur, n, paused)
		return next, n > 0 || paused > 0 || next.At.After(cur.At)
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	if sig != l.signal {
		return false // another run's signal since: its state is not this one's
	}
	if err != nil {
		next = l.counted(l.state, n, paused)
	}
	if !l.state.newer(next) { // not a state left behind what this share knows
		l.takeState(next)
	}
	if l.budget > 0 {
		now := l.now()
		l.set(l.shareRate(l.state, now), now)
	}
	return err == nil
}

// counted is cur after n more 429s and paused seconds paused after them,
// with the cut they call for (shareCut): from the state this share knows
// when cur does not show it yet. Callers hold mu.
func (l *Limiter) counted(cur ShareState, n int, paused float64) ShareState {
	if l.state.newer(cur) {
		done := max(cur.Done, l.state.Done)
		cur = l.state
		cur.Done = done
	}
	cur.Paused += paused
	return l.shareCut(cur, l.now(), n)
}

// resume ends a share's pause after a 429 (see Limiter.paused).
func (l *Limiter) resume() {
	if !l.share {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.pausedAt.IsZero() {
		l.paused += l.now().Sub(l.pausedAt)
		l.pausedAt = time.Time{}
	}
}

// Follow makes a share pace at the state sig holds, and cut it on a 429
// (the run's throttle object: a container follows the run it works for).
func (l *Limiter) Follow(sig Signal) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sig == l.signal {
		return
	}
	l.signal, l.state, l.pending, l.lastPoll, l.followed = sig, ShareState{}, 0, time.Time{}, l.now()
	l.paused, l.pausedAt = 0, time.Time{}
}

// poll reads a share's Signal, outside mu, one waiter at a time, every
// sharePoll while the shares adapt (calmPoll once they have been calm for
// calmAfter, since the latest cut or since it began to follow), and takes
// its state when newer than the one it knows.
func (l *Limiter) poll(ctx context.Context) {
	l.mu.Lock()
	sig := l.signal
	if !l.share || sig == nil || l.polling || l.raising {
		l.mu.Unlock()
		return
	}
	now := l.now()
	if now.Sub(l.lastPoll) < l.lookEvery(now) {
		l.mu.Unlock()
		return
	}
	l.polling, l.lastPoll = true, now
	l.mu.Unlock()

	st, err := sig.Read(ctx)

	l.mu.Lock()
	l.polling = false
	if err != nil || sig != l.signal || l.raising {
		l.mu.Unlock()
		return // the Signal logs its failures; this share hears of 429s later
	}
	l.state.Done = max(l.state.Done, st.Done) // see Spread: no new slot
	if st.newer(l.state) {
		l.takeState(st)
	}
	// A cut the 429s counted call for is made by the first share to see
	// it due, not left to the next 429: under an overload the shares
	// pause together after their 429s (Retry-After), and the next 429
	// comes a pause later.
	if l.state.Throttled < minThrottled || !l.shareCut(l.state, l.now(), 0).At.After(l.state.At) {
		l.mu.Unlock()
		return
	}
	l.raising = true
	l.mu.Unlock()
	l.update(ctx, sig, 0, 0) // the Signal not reached (it logs why): the others cut at their next look or 429
	l.mu.Lock()
	l.raising = false
	l.mu.Unlock()
}

// lookEvery is how often a share reads its Signal at now: every
// firstPoll until it hears of a first cut (for firstWave after it began
// to follow), every sharePoll while the shares adapt or the run nears its
// end (fewer than twice workers groups left: the finished ones' budget
// comes to the last, see Spread), every calmPoll once calm. Callers hold
// mu.
func (l *Limiter) lookEvery(now time.Time) time.Duration {
	switch {
	case l.state.At.IsZero() && now.Sub(l.followed) < firstWave:
		return firstPoll
	case now.Sub(l.followed) > calmAfter && now.Sub(l.state.At) > calmAfter &&
		(l.groups == 0 || l.groups-l.state.Done >= 2*l.workers):
		return calmPoll
	}
	return sharePoll
}

// Spread tells a share how its run's work is split: groups groups (one
// worker's each; a Map child), at most workers of them sent at once, each
// share pacing its budget, a workers-th of the whole. Once fewer than
// workers groups are left unfinished (ShareState.Done), the shares still
// sending take the budget of the finished ones (shareRate). Without it, a
// share that a Retry-After pause left behind sent its group's last
// batches alone at a fortieth of the budget, for seconds (the run's tail:
// 1.17-1.22 of the floor, 1 run in 5 at a budget 20 % too high). A share
// keeps the slot it was given when it hears of it: most of the last
// groups have a request or two left, and slots taken anew at the wider
// rate were at once for each that had waited that long (the run's 429s
// 3.1-3.9 % at a budget 20 % too high, from 2.1-2.8 %).
func (l *Limiter) Spread(workers, groups int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.workers, l.groups = workers, groups
}

// shareRate is the rate a share paces at under st at now: its budget at
// the share of it st names, widened by the groups finished (see Spread).
// Callers hold mu.
func (l *Limiter) shareRate(st ShareState, now time.Time) float64 {
	return l.budget * l.shareFraction(st, now) * l.widen(st)
}

// widen is how many shares' budget one share takes under st: workers over
// the groups left, once fewer than workers are (1 before, or not known).
func (l *Limiter) widen(st ShareState) float64 {
	left := l.groups - st.Done
	if l.groups <= 0 || l.workers <= 0 || left >= l.workers {
		return 1
	}
	return float64(l.workers) / float64(max(left, 1))
}

// ShareState is what the shares of a budget agree on through their Signal:
// the rate they all pace at, as a share of their budget. A 429 sets it to
// Rate at At (a cut); after that it grows back as a limiter's rate does
// (grown), so every share computes the same rate from it at any time.
// Throttled counts the 429s the shares met since At towards a cut (the
// first of them at Since; fewer than minThrottled while the shares sent
// minThrottled/strays requests are forgotten: at a third of a budget, that
// is seconds); Refused counts every one since At, forgotten or not, and
// Paused the seconds the shares paused after them (waiting to retry): at
// the next cut they tell the rate the API accepted since At (see
// shareCut). Weighed against the 429s since the last forgetting only, the
// requests sent since At read the API's rate 2-3 % high (5 counted where
// it refused 16), and the shares then probed above the API's limit.
type ShareState struct {
	Rate      float64   `json:"rate,omitempty"` // 0: never cut (the whole budget)
	At        time.Time `json:"at,omitzero"`
	Found     float64   `json:"found,omitempty"` // share of the budget the shares grow back to after a cut (foundUnder of what the API took), when known
	Throttled int       `json:"throttled,omitempty"`
	Since     time.Time `json:"since,omitzero"` // the first of them
	Refused   int       `json:"refused,omitempty"`
	Paused    float64   `json:"paused,omitempty"`
	// Done counts the run's groups finished (see Spread): only ever
	// more (a Signal keeps the most written).
	Done int `json:"done,omitempty"`
}

// newer says whether s is later news than o: a later cut, or more 429s
// counted since the same one (Refused: Throttled falls when strays are
// forgotten).
func (s ShareState) newer(o ShareState) bool {
	return s.At.After(o.At) || (s.At.Equal(o.At) && s.Refused > o.Refused)
}

// How shares pace together. They read their Signal every sharePoll while
// adapting, so that a cut reaches the others within a few requests, and
// every calmPoll once calm (calmAfter since the last cut): an S3 GET a
// fifth of a second is cheap beside a run's requests for a few seconds,
// not for hours. A cut weighs the 429s counted since the last one when
// there are minThrottled of them among minAnswers requests (30 left the
// second cut at a budget three times too high unmeasured, by a fifth, in
// half the runs: the shares sent 20-30 requests between the first two).
const (
	sharePoll     = 200 * time.Millisecond
	calmPoll      = time.Second
	calmAfter     = 10 * time.Second
	firstPoll     = 50 * time.Millisecond // until a share hears of a first cut (see Wait)
	firstWave     = 2 * time.Second
	minThrottled  = 5
	foundStep     = 0.85 // a measure moves a rate found down by at most 15 %
	foundUnder    = 0.97 // the shares' rate found is this share of what the API took (see shareCut)
	minAnswers    = 20
	firstCutBelow = 0.85                             // the first cut's measure, five 429s over a few tens of ms, read 0.15-0.49 of the budget for the API's 0.33
	strays        = 0.02                             // fewer 429s than this share of the requests sent are no overload (0.03: the shares sat at about 3 %)
	settle        = sharePoll + 100*time.Millisecond // a cut reaches every share: a look and an answer
)

// shareFraction is the share of the budget st names at now. It grows
// back by a share of the rate found a second (until one is found, of the
// rate cut to), not of the budget: at a budget three times too high, 10 %
// of the budget a second took the shares from the first cut's 0.4 to
// 0.55 before the next cut, well over the API's 0.33 (some 10 429s); and
// after a cut with a rate found, from a fifth under it back to it in a
// third of a second, before the API's burst had refilled: the shares met
// a 429 every second or two at the rate found until the next cut.
func (l *Limiter) shareFraction(st ShareState, now time.Time) float64 {
	if st.Rate == 0 {
		return 1
	}
	fast := increase * st.Rate
	if st.Found > 0 {
		fast = increase * st.Found
	}
	return min(1, grown(st.Rate, st.Found, fast, now.Sub(st.At).Seconds()))
}

// shareCut is st after a share met n more 429s at now. A cut weighs the
// 429s the shares met since the last one against the requests they sent
// meanwhile: the whole budget at the rate st names, less what the shares
// did not send while they paused after a 429 (under a heavy overload,
// most of their time). When the API refused more than a few in a hundred,
// the rate goes to what it accepted, and above that it grows slowly, as
// New's limiter does with the answers it sees itself; the rate found, the
// one the shares grow back to after a later cut before they probe above
// it, is foundUnder of that (at what the API took, its limit, the probe
// went over it within a second of getting back: a 429 a second after each
// cut at a budget three times too high). The first cut comes
// with minThrottled 429s, by a fifth or to firstCutBelow of what they say
// the API took since the first of them when that is less (a budget three
// times too high: some 40 requests refused while a cut by a fifth at a
// time found the rate), never below minCut. Before a rate is found, too
// few 429s to weigh cut the rate to a share of it; after, they only
// count: shares at independent phases bunch now and then, and the
// API's burst answers a bunch with a stray 429 that is no overload
// (cutting for each drove a budget 20 % too high down to 40 % of it).
// The 429s of a cut under decreaseGap old, or too few to weigh, count
// towards the next one, but not those that come before every share has
// heard of the cut (settle): they answer requests sent at the rate before
// it, and counted against what the shares sent at the rate cut to they
// read the API's rate far too low (after a deep first cut, 20 of them
// took the rate found to 0.6 of the real one, and the run to 1.4–1.6 of
// the floor in 3 of 5 runs). Callers hold mu.
func (l *Limiter) shareCut(st ShareState, now time.Time, n int) ShareState {
	if st.Throttled < minThrottled && !st.Since.IsZero() && l.sentFrom(st, st.Since, now)*strays >= minThrottled {
		st.Throttled, st.Since = 0, time.Time{} // strays, long ago: no overload (Refused keeps them)
	}
	if !st.At.IsZero() && now.Sub(st.At) < settle {
		n = 0 // answers to requests sent before every share heard of the cut: the rate before it
	}
	st.Refused += n
	if st.Throttled += n; n > 0 && st.Since.IsZero() {
		st.Since = now
	}
	dt := now.Sub(st.At).Seconds()
	if !st.At.IsZero() && dt < decreaseGap.Seconds() {
		return st
	}
	f := l.shareFraction(st, now)
	next, found := f*decrease, st.Found
	from, refused := st.At, float64(st.Refused)
	if st.Rate == 0 {
		from, refused = st.Since, float64(st.Throttled-1) // the first opens the span
	}
	span := now.Sub(from).Seconds()
	sent := l.sentFrom(st, from, now)
	if st.Rate == 0 && st.Throttled >= minThrottled {
		// The first cut, as soon as minThrottled 429s come close
		// together: by decrease, deeper (to firstCutBelow of their
		// measure) when they already tell the API refuses more than that
		// (a budget several times too high), not below minCut; the next
		// cut, measured, finds the rate.
		// 429s as many as the requests sent say the API took none of
		// them: the deepest cut, not a fifth (traced at 3x with the
		// opening 429 counted too: five in 50 ms cut by a fifth, and 7 %
		// of the run's requests were refused; as counted, five in 40 ms).
		if span > 0 {
			next = max(min(next, firstCutBelow*max(sent-refused, 0)/(l.whole*span)), minCut)
		}
	} else if st.Rate > 0 && st.Throttled >= minThrottled && sent >= minAnswers {
		if l.tooFewToWeigh(st, now, sent, refused) {
			return st // the API took about all the shares sent: stray 429s
		}
		took := (sent - refused) / (l.whole * span)
		if found > 0 {
			took = max(took, found*foundStep) // few counts, blurred by the pauses: one measure moves it a step
		}
		found = min(took*foundUnder, f*foundBelow)
		next = max(min(next, took), f*minCut)
	} else if found > 0 || st.Throttled < minThrottled {
		return st // once a rate is found, only enough 429s to weigh move it; before, a few strays
	}
	return ShareState{Rate: max(next, minRate), At: now, Found: found, Done: st.Done}
}

// tooFewToWeigh says the 429s counted are strays: under strays of the
// requests sent since the first of them (sent and refused since the
// last cut, before any). After a cut the shares grow back (or probe
// above the rate found) for seconds before they meet the API's limit
// again, and those seconds would hide the overload that followed (after
// a first cut, a dozen 429s before the second); the rate the API took is
// still measured since the cut (a span of bunched 429s alone says too
// little).
func (l *Limiter) tooFewToWeigh(st ShareState, now time.Time, sent, refused float64) bool {
	if st.Rate > 0 {
		sent, refused = l.sentFrom(st, st.Since, now), float64(st.Throttled-1)
	}
	return refused < sent*strays
}

// sentFrom is about the requests the shares sent from since to now: the
// whole budget at the rate st names (it grew about linearly), less what
// they did not send while they paused after their 429s.
func (l *Limiter) sentFrom(st ShareState, since, now time.Time) float64 {
	avg := (l.shareFraction(st, since) + l.shareFraction(st, now)) / 2
	return avg * max(l.whole*now.Sub(since).Seconds()-l.budget*st.Paused, 0)
}

// cut slows the rate for a 429, once per decreaseGap: to a share of it,
// or to what the API accepted lately when that is less. Callers hold mu.
func (l *Limiter) cut() {
	now := l.now()
	if l.budget <= 0 {
		return
	}
	took, measured := l.acceptedRate(now)
	if now.Sub(l.decreased) < decreaseGap && (!measured || took >= l.current*decrease) {
		return // a 429 of the same overload; only a measure well below the rate now cuts again
	}
	l.grow()
	next := l.current * decrease
	if measured {
		// Refused at the rate now, the API's limit is below it, however
		// fast it took the latest requests (out of a burst it allows):
		// the rate found sits under both, so the API's bucket refills
		// between probes instead of staying empty at its very limit.
		// Not so a lone 429 (none cut for loneAfter) while the API took
		// 80 % of the rate now or more (decrease): requests bunched on
		// their way past the API's burst (a busy machine, the network)
		// at its very limit are no limit, and a rate found from them
		// held the rest of the run at 95 % of the budget, probing up by
		// 1 % a second. A limit under the rate now answers again within
		// seconds, and that cut finds it.
		if took < l.current*decrease || now.Sub(l.decreased) < loneAfter {
			l.found = min(took, l.current*foundBelow)
		}
		next = max(min(next, took), l.current*minCut)
	}
	l.set(next, now)
	l.decreased = now
	l.markCut(now)
}

// acceptedRate is the rate at which the API accepted the latest requests,
// in requests a second: one over the median gap between the last
// acceptedSample answers. Right after a 429 the API takes requests only
// as its budget refills, so the gaps are its rate; the median ignores the
// few answers of a burst the API let through before. False when there are
// too few answers, or they are older than acceptedWindow. Callers hold mu.
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

// grow raises the rate back towards the budget by the time since it last
// changed (grown). Callers hold mu.
func (l *Limiter) grow() {
	if l.current >= l.budget || l.budget <= 0 {
		return
	}
	now := l.now()
	r := grown(l.current/l.budget, l.found/l.budget, increase, now.Sub(l.adjusted).Seconds())
	l.set(min(l.budget, r*l.budget), now)
}

// grown is a rate r (a share of the budget) dt seconds later: up by fast
// a second up to found (0: not known), then by a probe's share of found a
// second.
func grown(r, found, fast, dt float64) float64 {
	if found == 0 || r+fast*dt <= found {
		return r + fast*dt
	}
	if r < found {
		dt -= (found - r) / fast
		r = found
	}
	return r + found*probe*dt
}

func (l *Limiter) set(rps float64, now time.Time) {
	rps = max(rps, l.budget*minRate)
	if rps == l.current && !l.adjusted.IsZero() {
		l.adjusted = now
		return
	}
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

// Signal is how the shares of one budget pace as one: a small shared
// object (a run's, in the bucket) holding their ShareState. It is advice:
// an implementation logs its own failures, and a share that cannot reach
// it paces from what it knows and hears of 429s later.
type Signal interface {
	Read(ctx context.Context) (ShareState, error) // the zero state when never written
	// Update replaces the state with change(the state now), unless change
	// says to leave it, reading it anew while other writes come between
	// its read and its write (compare-and-swap), and returns the state
	// it left. It keeps the most Done written, whatever change says: the
	// groups' ends count it beside the shares' changes (see Spread).
	Update(ctx context.Context, change func(ShareState) (ShareState, bool)) (ShareState, error)
}

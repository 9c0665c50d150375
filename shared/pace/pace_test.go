package pace_test

import (
	"context"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/clock"
	"github.com/segpilot/segpilot/shared/pace"
)

// TestLateWakersDoNotBunch stalls every sleeping waiter until 100 ms in
// (a paused process): when they wake, they must not send together, or the
// API sees a burst it answers with 429s. (Seen failing with each waiter
// reserving its slot ahead and sleeping outside the lock: 10 at once.)
func TestLateWakersDoNotBunch(t *testing.T) {
	t.Parallel()
	const waiters, rps = 10, 100
	l := pace.New(rps, 1)
	start := time.Now()
	stallEnd := start.Add(100 * time.Millisecond)
	if err := l.Wait(context.Background()); err != nil { // the bucket's one token, now
		t.Fatal(err)
	}
	l.SetSleep(func(ctx context.Context, d time.Duration) error {
		wake := time.Now().Add(d)
		if wake.Before(stallEnd) {
			wake = stallEnd
		}
		return clock.Sleep(ctx, time.Until(wake))
	})
	sent := waitTogether(t, l, waiters, start)
	together := 0
	for _, at := range sent {
		if at < sent[0]+5*time.Millisecond {
			together++
		}
	}
	// One waiter was due at the stall's end, and the bucket refilled one
	// token meanwhile: two may go together, not more.
	if together > 2 {
		t.Fatalf("%d of %d waiters sent within 5 ms of each other after the stall: %v", together, waiters, sent)
	}
	if total := sent[len(sent)-1]; total > 100*time.Millisecond+waiters*10*time.Millisecond+50*time.Millisecond {
		t.Fatalf("the waiters took %v: pacing lost time", total)
	}
}

// TestLateWakerCatchesUp: one of several waiters on one limiter wakes
// late (a busy machine's scheduler), more than an interval past its slot
// but within three, with no request gone out in the last quarter
// interval: it sends then, and the waiters after it keep their slots.
// (Seen failing with a late waiter taking a new slot: it sent after the
// others, at 500 ms, and the run lost an interval.)
func TestLateWakerCatchesUp(t *testing.T) {
	t.Parallel()
	const waiters, rps = 4, 10 // slots at 100, 200, 300 and 400 ms
	l := pace.New(rps, 1)
	start := time.Now()
	if err := l.Wait(context.Background()); err != nil { // the bucket's one token, now
		t.Fatal(err)
	}
	var once sync.Once
	l.SetSleep(func(ctx context.Context, d time.Duration) error {
		if d < 150*time.Millisecond { // the first slot's waiter wakes at 260 ms
			once.Do(func() { d += 160 * time.Millisecond })
		}
		return clock.Sleep(ctx, d)
	})
	sent := waitTogether(t, l, waiters, start)
	late := slices.IndexFunc(sent, func(at time.Duration) bool { return at > 230*time.Millisecond && at < 290*time.Millisecond })
	if late < 0 || sent[len(sent)-1] > 450*time.Millisecond {
		t.Fatalf("requests at %v; want the late waiter's at about 260ms and the last at its slot, 400ms", sent)
	}
}

// waitTogether has n waiters Wait on l at once and returns when each
// was let go, since start, earliest first.
func waitTogether(t *testing.T, l *pace.Limiter, n int, start time.Time) []time.Duration {
	t.Helper()
	var mu sync.Mutex
	var sent []time.Duration
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := l.Wait(context.Background()); err != nil {
				t.Error(err)
			}
			mu.Lock()
			sent = append(sent, time.Since(start))
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(sent)
	return sent
}

// onStandingClock puts l on the test's clock *now, which moves only when
// the test moves it: a wait returns at once.
func onStandingClock(l *pace.Limiter, now *time.Time) {
	l.SetNow(func() time.Time { return *now })
	l.SetSleep(func(ctx context.Context, _ time.Duration) error { return ctx.Err() })
}

func TestWaitHonoursContext(t *testing.T) {
	t.Parallel()
	l := pace.New(1, 1)
	if err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx); err == nil {
		t.Fatal("waited a second despite a 20 ms deadline")
	}
}

// TestAdaptsToThrottling: a 429 cuts the rate to 80 %, once for the
// workers that meet one overload together; the rate grows back by 10 % of
// the budget a second, never above it.
func TestAdaptsToThrottling(t *testing.T) {
	t.Parallel()
	l := pace.New(100, 1)
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	l.SetNow(func() time.Time { return now })
	steps := []struct {
		name      string
		advance   time.Duration
		throttled int
		want      float64
	}{
		{"a 429", 0, 1, 80},
		{"more 429s of the same overload", 100 * time.Millisecond, 5, 80},
		{"the next overload", 400 * time.Millisecond, 1, (80 + 5) * 0.8}, // grown by 0.5 s × 10/s first
		{"a second of calm", time.Second, 0, 68 + 10},
		{"long calm: back to the budget, not above", time.Minute, 0, 100},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		for range st.throttled {
			l.Throttled(context.Background())
		}
		if st.throttled == 0 {
			if err := l.Wait(context.Background()); err != nil { // the rate grows as waiters come
				t.Fatal(err)
			}
		}
		if got := l.Rate(); math.Abs(got-st.want) > 1e-9 {
			t.Fatalf("%s: rate %.3f, want %.3f", st.name, got, st.want)
		}
	}
	for range 200 {
		now = now.Add(500 * time.Millisecond)
		l.Throttled(context.Background())
	}
	if got := l.Rate(); math.Abs(got-20) > 1e-6 { // r = (r + 5) × 0.8
		t.Fatalf("throttled without pause: rate %.3f, want it to settle at 20", got)
	}
	if l.Budget() != 100 {
		t.Fatalf("budget %v, want 100", l.Budget())
	}
}

func TestStartAfterHoldsTheFirstRequest(t *testing.T) {
	t.Parallel()
	l := pace.New(10, 1)
	waits, _ := sleepOnTestClock(l)
	l.StartAfter(60 * time.Millisecond)
	for range 2 {
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// The first request at its phase (60 ms), the next one interval (100 ms) later.
	near := func(d, want time.Duration) bool { return d > want-20*time.Millisecond && d <= want }
	if len(*waits) != 2 || !near((*waits)[0], 60*time.Millisecond) || !near((*waits)[1], 100*time.Millisecond) {
		t.Fatalf("waits %v, want [60ms 100ms]", *waits)
	}
}

// sleepOnTestClock makes l sleep on a clock of the test's, starting at a
// fixed time: a sleep moves it on and is recorded in waits; advance moves
// it on without one and says the time then.
func sleepOnTestClock(l *pace.Limiter) (waits *[]time.Duration, advance func(time.Duration) time.Time) {
	waits = &[]time.Duration{}
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	l.SetNow(func() time.Time { return now })
	l.SetSleep(func(_ context.Context, d time.Duration) error {
		if d > 0 {
			*waits = append(*waits, d)
			now = now.Add(d)
		}
		return nil
	})
	return waits, func(d time.Duration) time.Time {
		now = now.Add(d)
		return now
	}
}

// TestTakeOverCountsTheRoundTrip: a share taking over from a worker that
// just ended sends its first request an interval after that worker's
// last request went out: a round trip (its latest, 30 ms) before the
// takeover began, not an interval after it began, and not at once though
// its bucket refilled while it was idle. (Seen failing with the round
// trip not counted: 100 ms; with no takeover: at once.)
func TestTakeOverCountsTheRoundTrip(t *testing.T) {
	t.Parallel()
	l := pace.NewShare(10, 100, 1)
	waits, advance := sleepOnTestClock(l)
	ctx := context.Background()
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	advance(30 * time.Millisecond) // the answer
	l.Done()
	began := advance(time.Second) // idle between groups
	*waits = nil

	l.TakeOver(began)
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if len(*waits) != 1 || (*waits)[0] != 70*time.Millisecond {
		t.Fatalf("the takeover's first request waited %v; want 70ms (an interval, 100 ms, less the latest round trip)", *waits)
	}
}

// signal is an in-memory pace.Signal; with now, it keeps the times of its
// reads.
type signal struct {
	mu     sync.Mutex
	state  pace.ShareState
	writes int
	now    func() time.Time
	reads  []time.Time
}

func (s *signal) Read(context.Context) (pace.ShareState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.now != nil {
		s.reads = append(s.reads, s.now())
	}
	return s.state, nil
}

func (s *signal) readTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reads)
}

func (s *signal) Update(_ context.Context, change func(pace.ShareState) (pace.ShareState, bool)) (pace.ShareState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, write := change(s.state)
	if write {
		st.Done = max(st.Done, s.state.Done)
		s.state = st
		s.writes++
	}
	return s.state, nil
}

// TestSharesPaceAsOne: shares of a budget (Lambda containers) following
// one Signal pace at the rate it names: five 429s close together cut every
// share's rate (fewer are strays); the 429s met before every share heard
// of a cut (settle) are not counted, those met after it within half a
// second count towards the next cut instead of cutting again, and the
// next cut goes to the rate the API accepted meanwhile (the requests sent
// at the whole budget's rate, less the 429s), where the rate then grows
// slowly. Until then the rate grows back by a tenth of the rate cut to a
// second, not of the budget. Once a rate is found, a few 429s only count,
// a share's look makes the cut the counts call for, and a measure moves
// the rate found by a step at most. A share without a Signal paces alone;
// a whole-budget limiter follows none. (Seen failing with the Signal's
// state not read: the other share stayed at 50; with the count not
// weighed: the second cut went to 74 %, not 42 %; with every 429 cutting:
// 4 strays cut the found rate to 80 %; with the 429s before settle
// counted: 3 of them; growing by a tenth of the budget: 41.25.)
func TestSharesPaceAsOne(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	clockNow := func() time.Time { return now }
	noSleep := func(ctx context.Context, _ time.Duration) error { return ctx.Err() }
	sig := &signal{}
	share := func() *pace.Limiter {
		l := pace.NewShare(50, 100, 1)
		l.SetNow(clockNow)
		l.SetSleep(noSleep)
		l.Follow(sig)
		return l
	}
	a, b := share(), share()
	ctx := context.Background()
	steps := []struct {
		name          string
		advance       time.Duration
		aThrottled    int
		bThrottled    int
		wantA, wantB  float64 // rates, requests a second
		wantWrites    int
		wantThrottled int // counted towards the next cut
	}{
		{"no 429 yet: the share's budget", 0, 0, 0, 50, 50, 0, 0},
		{"a's 4 429s: strays, counted", 300 * time.Millisecond, 4, 0, 50, 50, 4, 4},
		{"a's fifth a second later cuts both, by a fifth", time.Second, 1, 0, 40, 40, 5, 0},
		{"b's 429s before every share heard of the cut: the rate before it, not counted", 250 * time.Millisecond, 0, 3, 41, 41, 8, 0},
		{"b's 429s of the same overload after: counted, cut nothing", 100 * time.Millisecond, 0, 60, 41.4, 41.4, 68, 60},
		{"a's next 429 a second later: the rate the API took", time.Second, 1, 0, 50 * 0.40213, 50 * 0.40213, 69, 0},
		{"a calm second: growth by 1 % of that rate", time.Second, 0, 0, 50 * 0.40213 * 1.01, 50 * 0.40213 * 1.01, 69, 0},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		for range st.bThrottled {
			b.Throttled(ctx)
		}
		for range st.aThrottled {
			a.Throttled(ctx)
		}
		for _, l := range []*pace.Limiter{a, b} {
			if err := l.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if ga, gb := a.Rate(), b.Rate(); math.Abs(ga-st.wantA) > 0.05 || math.Abs(gb-st.wantB) > 0.05 {
			t.Fatalf("%s: rates %.3f and %.3f, want %.3f and %.3f", st.name, ga, gb, st.wantA, st.wantB)
		}
		if sig.writes != st.wantWrites || sig.state.Throttled != st.wantThrottled {
			t.Fatalf("%s: %d writes, %d 429s counted; want %d and %d", st.name, sig.writes, sig.state.Throttled, st.wantWrites, st.wantThrottled)
		}
	}
	// The measured cut: 60 429s counted since the cut to 80 %, 1 more now,
	// 1.35 s at 80 % growing (by 8 % of the budget a second: a tenth of
	// the rate cut to, no rate found yet) to 90.8 % of 100 a second: 115.3
	// sent, 54.3 accepted, 40.2 a second: 0.4021 of the budget taken,
	// the rate found 97 % of that: 0.3901.
	if f := sig.state.Found; math.Abs(f-0.40213*0.97) > 0.001 {
		t.Fatalf("found %.4f of the budget, want 0.3901", f)
	}

	// Once a rate is found, a few 429s only count (shares at independent
	// phases bunch now and then); the first share to look when the counts
	// call for a cut makes it, and one measure moves the rate found down
	// by at most 15 %.
	now = now.Add(time.Minute)
	found := &signal{state: pace.ShareState{Rate: 0.5, At: now.Add(-2 * time.Second), Found: 0.5}}
	c := pace.NewShare(50, 100, 1)
	c.SetNow(clockNow)
	c.SetSleep(noSleep)
	c.Follow(found)
	if err := c.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		c.Throttled(ctx)
	}
	if got := c.Rate(); math.Abs(got-50*0.51) > 0.05 || found.state.Throttled != 4 || !found.state.At.Equal(now.Add(-2*time.Second)) {
		t.Fatalf("4 429s at the rate found: rate %.3f, state %+v; want 25.5 and the 429s counted, no cut", got, found.state)
	}
	found.state.Throttled, found.state.Refused, found.state.Since = 40, 40, found.state.At // the other shares' 429s, since the cut
	now = now.Add(250 * time.Millisecond)
	if err := c.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// 2.25 s from 50 % growing to 51.1 %: 113.8 sent, 40 refused: 32.8 %
	// of the budget taken, held to 42.5 % (85 % of 50 %), found 97 % of
	// that (41.2 %); the cut to 80 %.
	if got, st := c.Rate(), found.state; math.Abs(got-50*0.409) > 0.05 || !st.At.Equal(now) || math.Abs(st.Found-0.425*0.97) > 0.001 {
		t.Fatalf("a look with 40 429s counted: rate %.3f, state %+v; want 20.45, a cut now, found 0.412", got, st)
	}

	alone := pace.NewShare(50, 100, 1)
	alone.SetNow(clockNow)
	alone.Throttled(ctx)
	if alone.Rate() != 40 {
		t.Fatalf("a share without a Signal: rate %.3f after its 429, want 40", alone.Rate())
	}
	whole := pace.New(100, 1)
	whole.SetNow(clockNow)
	whole.SetSleep(noSleep)
	if err := whole.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if whole.Rate() != 100 {
		t.Fatalf("whole budget: rate %.3f, want 100 (it follows no Signal)", whole.Rate())
	}
}

// TestSharesWeighTheOverloadNow: the shares' 429s are weighed against
// what they sent over the overload itself. The first cut goes deeper than
// a fifth when its 429s came thick (a budget three times too high), to
// 85 % of what they say the API took, down to a quarter at most; after a
// cut (a rate found or not), the 429s are weighed from the first of them,
// not from the last cut (seconds of growing back or probing below the
// API's limit hid the overload after them); 2 in a hundred are an
// overload; 429s too few for the requests sent since the first of them
// are forgotten by that count, not after 2 s (at a third of a budget, 2 s
// hold under 70 requests); and a second cut that comes with 20 requests
// sent since the first is measured. (Seen failing with the first cut by a
// fifth: 40 requests/s, and so with 429s as many as the requests sent;
// with the 429s weighed since the cut: no cut, and
// before a rate is found no cut either; with 3 in a hundred strays: no
// cut at 2.8 %; with strays forgotten after 2 s: no cut; with 30 requests
// wanted: no rate found.)
func TestSharesWeighTheOverloadNow(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	ctx := context.Background()
	share := func(st pace.ShareState) (*pace.Limiter, *signal) {
		sig := &signal{state: st}
		l := pace.NewShare(50, 100, 1)
		onStandingClock(l, &now)
		l.Follow(sig)
		return l, sig
	}
	throttle := func(l *pace.Limiter, n int, every time.Duration) {
		for range n {
			now = now.Add(every)
			l.Throttled(ctx)
		}
	}

	// Five 429s in 80 ms at the whole budget: 8 sent, 4 refused after
	// the first: half the budget taken, the cut to 85 % of that.
	thick, _ := share(pace.ShareState{})
	throttle(thick, 5, 20*time.Millisecond)
	if got := thick.Rate(); math.Abs(got-50*0.5*0.85) > 0.05 {
		t.Fatalf("five 429s in 80 ms: rate %.3f, want 21.25 (85 %% of half)", got)
	}

	// Five 429s in 40 ms: 4 sent after the first, 4 refused: the API took
	// none that the count can tell, the deepest first cut (a quarter).
	thicker, _ := share(pace.ShareState{})
	throttle(thicker, 5, 10*time.Millisecond)
	if got := thicker.Rate(); got != 50*0.25 {
		t.Fatalf("five 429s in 40 ms: rate %.3f, want 12.5 (a quarter)", got)
	}

	// Found 30 % a minute ago, probing since (48 % now), then six 429s in
	// 3 s: about 147 sent, 5 refused after the first: a cut (and the API
	// took about 47 %: that is the rate found now).
	cut := now.Add(-time.Minute)
	probing, sig := share(pace.ShareState{Rate: 0.3, At: cut, Found: 0.3})
	throttle(probing, 6, 600*time.Millisecond)
	if st := sig.state; !st.At.After(cut) || st.Rate > 0.4 {
		t.Fatalf("six 429s in 3 s after a minute of probing: state %+v; want a cut by a fifth", st)
	}

	// At a third of the budget, a 429 every 0.7 s: 6 of about 140 sent
	// in 4.2 s after the first, not strays.
	start := now
	slow, sig := share(pace.ShareState{Rate: 0.33, At: start, Found: 0.33})
	throttle(slow, 7, 700*time.Millisecond)
	if st := sig.state; !st.At.After(start) {
		t.Fatalf("seven 429s in 4.2 s at a third of the budget: state %+v; want a cut", st)
	}

	// At half the budget, found, six 429s 0.7 s apart: 5 of about 179
	// sent after the first (2.8 %), an overload: three in a hundred let
	// the shares sit over the API's limit for seconds.
	start = now
	half, sig := share(pace.ShareState{Rate: 0.5, At: start, Found: 0.5})
	throttle(half, 6, 700*time.Millisecond)
	if st := sig.state; !st.At.After(start) {
		t.Fatalf("six 429s in 3.5 s at half the budget: state %+v; want a cut", st)
	}

	// Before a rate is found, too: 3 s after a first cut to 75 % (grown
	// to 97.5 % since), five 429s in 0.4 s: 4 of some 39 sent after the
	// first, a cut measured since the first cut (about 301 of 306
	// accepted in 3.4 s: 86 %; found 97 % of that). Weighed against the 306 sent since the
	// cut, most of them under the API's limit, they read as strays, and
	// the shares went on over it until a dozen were refused.
	growing, sig := share(pace.ShareState{Rate: 0.75, At: now.Add(-3 * time.Second)})
	throttle(growing, 5, 100*time.Millisecond)
	if st := sig.state; !st.At.Equal(now) || math.Abs(st.Found-0.86*0.97) > 0.01 {
		t.Fatalf("five 429s in 0.4 s, 3 s after a first cut: state %+v; want a cut now, the rate found 0.834", st)
	}

	// The second cut, 0.7 s after a first to 40 % (growing by 4 % of the
	// budget a second): 29 requests sent, 5 refused, measured (the API
	// took 34 %; the rate found, 97 % of that), not a fifth off at a guess.
	second, sig := share(pace.ShareState{Rate: 0.4, At: now.Add(-600 * time.Millisecond)})
	throttle(second, 5, 20*time.Millisecond)
	if st := sig.state; math.Abs(st.Found-0.3426*0.97) > 0.001 {
		t.Fatalf("five 429s among 29 requests after the first cut: state %+v; want the rate found, 0.3323", st)
	}
}

// TestSharesRegrowUnderWhatTheAPITook: after a cut, the shares grow back
// to the rate found by a tenth of it a second (by a tenth of the budget,
// at a budget three times too high they were back in a third of a second,
// before the API's burst refilled) and probe slowly above it. A rate found
// at what the API took (its limit) put them back at the limit, and the
// probe went over it within the second: at a budget three times too high,
// a 429 every second after each cut until the five of the next, some 10 a
// run. Found at 97 % of what the API took, the probe takes seconds to
// reach it. (Seen failing with growth by the budget: 0.3200 half a second
// after the cut; with the rate found at what the API took: 0.3311 2 s
// after, over the 0.330 the API took.)
func TestSharesRegrowUnderWhatTheAPITook(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	ctx := context.Background()
	// Found a third of the budget 5 s ago, probing since (to 0.3465),
	// five 429s in the last 0.4 s: about 170 sent, 5 refused: the API
	// took 0.330 of the budget; a cut by a fifth, to 0.278.
	sig := &signal{state: pace.ShareState{Rate: 0.33, At: now.Add(-5 * time.Second), Found: 0.33}}
	l := pace.NewShare(50, 100, 1)
	onStandingClock(l, &now)
	l.Follow(sig)
	for range 5 {
		l.Throttled(ctx)
		now = now.Add(100 * time.Millisecond)
	}
	cut := sig.state
	if !cut.At.After(now.Add(-time.Second)) || math.Abs(cut.Rate-0.278) > 0.002 {
		t.Fatalf("five 429s after 5 s of probing: state %+v; want a cut by a fifth, to 0.278", cut)
	}
	// Half a second later, growing back by 10 % of the rate found a
	// second (not of the budget: that was back at the rate found by now,
	// the API's burst still empty): 0.294.
	now = cut.At.Add(500 * time.Millisecond)
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := l.Rate() / 50; math.Abs(got-0.294) > 0.002 {
		t.Fatalf("half a second after the cut: rate %.4f of the budget, want 0.294 (growing by 10 %% of the rate found a second)", got)
	}
	// 2 s after the cut: back to the rate found (97 % of 0.330, 0.320)
	// in 1.3 s, and 0.7 s of probing above it, under 0.330.
	now = cut.At.Add(2 * time.Second)
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := l.Rate() / 50; got >= 0.3297 || got < 0.3198 {
		t.Fatalf("2 s after the cut: rate %.4f of the budget, want between the rate found (0.320) and what the API took (0.330); state %+v", got, sig.state)
	}
}

// TestSleepingShareHearsACut: a share (one of 40 Lambda containers, an
// interval of 400 ms) waiting for its first request at its phase (360 ms)
// hears of a cut the other shares make meanwhile, even 50 ms before its
// slot, and sends at that phase of an interval at the rate cut to, not at
// the whole budget's: 40 containers starting together otherwise send 40
// requests in the first 400 ms whatever the first 429s said. (Seen
// failing with the wait slept through: sent at 360 ms; with the phase of
// the budget's interval: 360 ms too; with the share looking every 200 ms
// until its first cut, as it does once the shares adapt: the cut 50 ms
// before its slot unheard, sent at 360 ms: at a budget three times too
// high, 5-15 requests refused in the first half second where 5 are.)
func TestSleepingShareHearsACut(t *testing.T) {
	t.Parallel()
	for _, cutAt := range []time.Duration{100 * time.Millisecond, 310 * time.Millisecond} {
		t.Run(cutAt.String(), func(t *testing.T) {
			t.Parallel()
			start := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
			now := start
			sig := &signal{}
			l := pace.NewShare(2.5, 100, 1)
			l.SetNow(func() time.Time { return now })
			l.SetSleep(func(ctx context.Context, d time.Duration) error {
				now = now.Add(max(d, 0))
				if now.Sub(start) >= cutAt && sig.state.At.IsZero() {
					sig.state = pace.ShareState{Rate: 0.5, At: now} // the others' first 429s
				}
				return ctx.Err()
			})
			l.Follow(sig)
			l.StartAfter(360 * time.Millisecond)
			if err := l.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			// 0.9 of an interval at about half the budget's rate: some 650-720 ms.
			if at := now.Sub(start); at < 550*time.Millisecond || at > 800*time.Millisecond {
				t.Fatalf("the first request went at %v; want about 700ms", at)
			}
		})
	}
}

// fakeClock is a clock whose sleepers wake when the test moves it on
// (advance), or when their context ends.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	sleeper map[chan struct{}]time.Time // woken at
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	wake := make(chan struct{})
	c.mu.Lock()
	c.sleeper[wake] = c.now.Add(d)
	c.mu.Unlock()
	select {
	case <-wake:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.sleeper, wake)
		c.mu.Unlock()
		return ctx.Err()
	}
}

func (c *fakeClock) asleep() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sleeper)
}

// advance moves the clock on by d, waking the sleepers due.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for wake, at := range c.sleeper {
		if !at.After(c.now) {
			close(wake)
			delete(c.sleeper, wake)
		}
	}
}

// TestCutReslotsTheWaiters: the waiters of one limiter asleep until slots
// given at the rate before a cut do not send at them: they take slots at
// the rate cut to (a budget three times too high otherwise went on
// sending at the old rate for a quarter of a second after the first
// 429s). Their new slots come from a bucket of their own, so the cut
// costs no slots (given back to the old bucket, the slots of many waiters
// left it in debt). (Seen failing with the waiters sending at their old
// slots: the tenth request at 90ms; with the slots given back to the old
// bucket: at 720ms, twice what 25 a second take.)
func TestCutReslotsTheWaiters(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC), sleeper: map[chan struct{}]time.Time{}}
	l := pace.New(100, 1)
	l.SetNow(clk.Now)
	l.SetSleep(clk.Sleep)
	for range 10 { // the API took 20 a second lately
		l.Accepted()
		clk.advance(50 * time.Millisecond)
	}
	start := clk.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sent := make(chan time.Duration, 10)
	for range 10 {
		go func() {
			if err := l.Wait(ctx); err == nil {
				sent <- clk.Now().Sub(start)
			}
		}()
	}
	settle := func(waiting int) { // until each waiter not heard from yet is asleep or has sent
		for clk.asleep()+len(sent) != waiting && ctx.Err() == nil {
			time.Sleep(100 * time.Microsecond)
		}
	}
	settle(10)       // one sent at once, nine asleep 10 ms apart
	l.Throttled(ctx) // cut to what the API took, 20 a second (a quarter of the rate: 25)
	var last time.Duration
	for got := 0; got < 10 && ctx.Err() == nil; {
		select {
		case at := <-sent:
			got++
			last = max(last, at)
			continue
		default:
		}
		settle(10 - got)
		if len(sent) == 0 {
			clk.advance(time.Millisecond)
		}
	}
	if ctx.Err() != nil {
		t.Fatal("the waiters did not all send")
	}
	// Nine more at 25 a second after the cut: 360 ms.
	if last < 300*time.Millisecond || last > 400*time.Millisecond {
		t.Fatalf("the tenth request went at %v; want about 360ms (25 a second after the cut)", last)
	}
}

// TestLoneStrayFindsNoRate: a first 429 while the API took every request
// at the rate now (a bunch its burst could not take: a busy machine's late
// waiters) cuts by a fifth and the rate grows back to the budget, not to a
// rate found under it; a second within seconds finds one. (Seen failing
// with every measured cut finding a rate: 95.5 two seconds after a lone
// 429.)
func TestLoneStrayFindsNoRate(t *testing.T) {
	t.Parallel()
	l := pace.New(100, 1)
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	onStandingClock(l, &now)
	accept := func(d time.Duration) { // the API takes 100 a second, the rate now
		for end := now.Add(d); now.Before(end); now = now.Add(10 * time.Millisecond) {
			l.Accepted()
		}
	}
	steps := []struct {
		name string
		then func()
		want float64
	}{
		{"a lone 429", func() { accept(time.Second); l.Throttled(context.Background()) }, 80},
		{"two seconds on: back at the budget", func() { accept(2 * time.Second) }, 100},
		{"another 429 within seconds", func() { l.Throttled(context.Background()) }, 80},
		{"two seconds on: the rate found, 95 % of the rate refused", func() { accept(2 * time.Second) }, 95 + 0.5*0.95}, // 1.5 s up to it, then probing
	}
	for _, st := range steps {
		st.then()
		if err := l.Wait(context.Background()); err != nil { // the rate grows as waiters come
			t.Fatal(err)
		}
		if got := l.Rate(); math.Abs(got-st.want) > 0.5 {
			t.Fatalf("%s: rate %.2f, want %.2f", st.name, got, st.want)
		}
	}
}

// TestFindsTheRateTheAPITakes: with a budget three times what the API
// takes, a 429 cuts the rate to the rate at which the API accepted the
// latest requests, not to 80 % of the budget, and above that rate it grows back
// by 2 % of it a second, not by 10 % of the budget: the next 429 comes
// seconds later, not half a second. (Seen failing with the measured cut
// removed: the rate went to 80, then 64.)
func TestFindsTheRateTheAPITakes(t *testing.T) {
	t.Parallel()
	l := pace.New(100, 1)
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	onStandingClock(l, &now)
	for range 100 { // 3 s of the API accepting 33⅓ a second
		l.Accepted()
		now = now.Add(30 * time.Millisecond)
	}
	l.Throttled(context.Background())
	if got := l.Rate(); math.Abs(got-100.0/3) > 1 {
		t.Fatalf("after a 429: rate %.2f, want what the API took, 33.3", got)
	}
	now = now.Add(time.Second)
	if err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := l.Rate(), 100.0/3*1.02; math.Abs(got-want) > 1 {
		t.Fatalf("a second later: rate %.2f, want %.2f (probing by 2 %% a second)", got, want)
	}
	// Too few answers to tell: the plain cut.
	few := pace.New(100, 1)
	few.SetNow(func() time.Time { return now })
	few.Accepted()
	few.Throttled(context.Background())
	if got := few.Rate(); got != 80 {
		t.Fatalf("a 429 with one answer seen: rate %.2f, want 80", got)
	}
}

// blockingSignal is a Signal whose Read waits until released: a slow
// read of the shared object.
type blockingSignal struct {
	entered chan struct{}
	release chan struct{}
}

func (s *blockingSignal) Update(context.Context, func(pace.ShareState) (pace.ShareState, bool)) (pace.ShareState, error) {
	return pace.ShareState{}, nil
}

func (s *blockingSignal) Read(context.Context) (pace.ShareState, error) {
	s.entered <- struct{}{}
	<-s.release
	return pace.ShareState{}, nil
}

// TestSlowSignalHoldsNoWaiter: while one waiter reads the shares' Signal
// (an S3 request), the others keep taking their slots: the limiter holds
// its mutex for arithmetic only. (Seen failing with the read under the
// mutex: every other waiter blocked until the read returned.)
func TestSlowSignalHoldsNoWaiter(t *testing.T) {
	t.Parallel()
	sig := &blockingSignal{entered: make(chan struct{}), release: make(chan struct{})}
	ctx := context.Background()
	l := pace.NewShare(1000, 10000, 10)
	l.Follow(sig)
	reading := make(chan error, 1)
	go func() { reading <- l.Wait(ctx) }()
	<-sig.entered // the first waiter is reading the Signal
	others := make(chan error, 1)
	go func() {
		for range 20 {
			if err := l.Wait(ctx); err != nil {
				others <- err
				return
			}
		}
		others <- nil
	}()
	select {
	case err := <-others:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second): // 20 slots at 1,000 a second take 10 ms
		close(sig.release)
		t.Fatal("the other waiters were held up while one read the Signal")
	}
	close(sig.release)
	if err := <-reading; err != nil {
		t.Fatal(err)
	}
}

// TestRefusedRequestsStayUnderTheLimit: with LimitRefused(3, 15 s), once a
// request is refused as malformed, the requests in flight count as refused
// too, and no request goes out that could make a fourth in 15 s; the limit
// holds nothing back before a refusal. (Seen failing with the hold
// removed: the fourth request went out at once.)
func TestRefusedRequestsStayUnderTheLimit(t *testing.T) {
	t.Parallel()
	l := pace.New(1000, 10)
	start := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	now := start
	l.SetNow(func() time.Time { return now })
	l.SetSleep(func(ctx context.Context, d time.Duration) error {
		now = now.Add(max(d, 0))
		return ctx.Err()
	})
	l.LimitRefused(3, 15*time.Second)
	ctx := context.Background()
	send := func() time.Duration {
		t.Helper()
		if err := l.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		return now.Sub(start)
	}
	for range 5 { // answered fine: nothing held back
		send()
		l.Done()
		l.Accepted()
	}
	send() // two in flight
	send()
	l.Done()
	l.Refused() // one refused, one in flight
	if at := send(); at > time.Second {
		t.Fatalf("third request at %v: one refused and one in flight leave room for it", at)
	}
	// One refused and two in flight: a fourth could be the third refused
	// and more; it waits for the refusal to age out.
	if at := send(); at < 15*time.Second {
		t.Fatalf("fourth request at %v, want after the refusal's 15 s", at)
	}
}

// TestLateShareKeepsItsPhase: a share (a Lambda container) woken more than
// an eighth of an interval late, as every share of a stalled process is,
// takes its next slot, an interval on, instead of sending at once with the
// others. (Seen failing with the share given a whole interval of
// lateness, as one limiter is: it sent 30 ms late, at 130 ms.)
func TestLateShareKeepsItsPhase(t *testing.T) {
	t.Parallel()
	l := pace.NewShare(10, 100, 1) // an interval of 100 ms
	start := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	now := start
	stalled := false
	l.SetNow(func() time.Time { return now })
	l.SetSleep(func(ctx context.Context, d time.Duration) error {
		now = now.Add(max(d, 0))
		if d > 0 && !stalled { // the process stalls once, 30 ms past the slot
			stalled = true
			now = now.Add(30 * time.Millisecond)
		}
		return ctx.Err()
	})
	for range 2 {
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if at := now.Sub(start); at != 200*time.Millisecond {
		t.Fatalf("the second request went at %v; want its next slot, 200ms", at)
	}
}

// TestCutSpreadsTheShares: shares whose requests went close together
// (40 containers started together, their phases spread over an interval
// at the whole budget, 400 ms) spread their next requests over an
// interval at the rate a cut goes to, not over the 400 ms they kept: a
// cut to a quarter otherwise keeps sending 40 requests in 400 ms, four
// times the rate cut to, and the API refuses the bunch. Each hears of the
// cut 200 ms after its request (a look) and sends next at a random phase
// of the 1.6 s interval from then, from a full bucket: its old bucket's
// half token held every phase under half an interval to 0.8 s on. (Seen
// failing with the phases kept: 40 requests within 400 ms; with the old
// bucket kept: none within 800 ms of its last.)
func TestCutSpreadsTheShares(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	cut := pace.ShareState{Rate: 0.25, At: start}
	var next []time.Duration
	early := 0 // next requests within 800 ms of a share's first
	for i := range 40 {
		now := start.Add(time.Duration(i) * 10 * time.Millisecond)
		sig := &signal{}
		l := pace.NewShare(2.5, 100, 1) // an interval of 400 ms; 1.6 s at a quarter
		l.SetNow(func() time.Time { return now })
		l.SetSleep(func(ctx context.Context, d time.Duration) error {
			now = now.Add(max(d, 0))
			return ctx.Err()
		})
		l.Follow(sig)
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		first := now
		sig.state = cut // written by another share meanwhile
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		next = append(next, now.Sub(start))
		if now.Sub(first) < 800*time.Millisecond {
			early++
		}
	}
	slices.Sort(next)
	for i := range next {
		j := i
		for j < len(next) && next[j]-next[i] < 400*time.Millisecond {
			j++
		}
		if j-i > 25 { // spread over 1.6 s: about 10 in any 400 ms
			t.Fatalf("%d of the 40 next requests went within 400 ms of %v; want them spread over the 1.6 s interval: %v", j-i, next[i], next)
		}
	}
	if early < 4 { // about 15 of 40: 200 ms and a random phase under 600 ms of 1.6 s
		t.Fatalf("%d of the 40 shares sent next within 800 ms of their first request; want about 15 (a random phase of the new interval from a full bucket)", early)
	}
}

// TestRateFoundCountsForgottenStrays: a measured cut weighs every 429 the
// shares met since the last cut against what they sent since, those
// forgotten as strays (too few to call an overload) included: weighed
// without them, the requests sent since the cut read the API's rate a few
// per cent high, and the shares probed above its limit for the rest of the
// run. (Seen failing with the forgotten ones left out: found 0.5201.)
func TestRateFoundCountsForgottenStrays(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	ctx := context.Background()
	// Cut to the rate found, half the budget, 10 s ago; 25 strays since,
	// forgotten.
	sig := &signal{state: pace.ShareState{Rate: 0.5, At: now.Add(-10 * time.Second), Found: 0.5, Refused: 25}}
	l := pace.NewShare(50, 100, 1)
	onStandingClock(l, &now)
	l.Follow(sig)
	for range 5 { // an overload: five 429s in 80 ms
		l.Throttled(ctx)
		now = now.Add(20 * time.Millisecond)
	}
	// 10.08 s from 50 % growing by 0.5 % a second: 529.2 sent, 30
	// refused: 49.5 % of the budget taken, the rate found 97 % of that.
	if st := sig.state; !st.At.After(now.Add(-time.Second)) || math.Abs(st.Found-0.4954*0.97) > 0.001 {
		t.Fatalf("five 429s after 25 forgotten: state %+v; want a cut, found 0.4805", st)
	}
}

// TestShareKeepsTheOthersCounts: a share writing its 429 goes on from the
// state it reads when that counts more 429s since the same cut, even if
// fewer towards the next (strays forgotten since): going on from its own
// older state it wrote back a count the others had passed, and the
// measure lost their 429s. (Seen failing with Throttled compared: 4
// refused, not 5.)
func TestShareKeepsTheOthersCounts(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	ctx := context.Background()
	cut := now.Add(-10 * time.Second)
	sig := &signal{state: pace.ShareState{Rate: 0.5, At: cut, Found: 0.5, Throttled: 3, Refused: 3, Since: now}}
	l := pace.NewShare(50, 100, 1)
	onStandingClock(l, &now)
	l.Follow(sig)
	if err := l.Wait(ctx); err != nil { // reads the state: 3 429s
		t.Fatal(err)
	}
	now = now.Add(100 * time.Millisecond)
	// Another share's write: the three forgotten as strays, one more since.
	sig.state = pace.ShareState{Rate: 0.5, At: cut, Found: 0.5, Throttled: 1, Refused: 4, Since: now}
	l.Throttled(ctx)
	if st := sig.state; st.Refused != 5 || st.Throttled != 2 {
		t.Fatalf("a 429 after the others' fourth: state %+v; want 5 refused since the cut, 2 towards the next", st)
	}
}

// TestLastSharesTakeTheFinishedBudget: once fewer groups of a run are
// left than workers send at once, a share paces at the whole budget
// (at the rate the Signal names) over the groups left, never above it.
// It hears of the groups finished at a look a sharePoll apart once calm
// near the run's end (not calmPoll: the last groups end within a second),
// keeps the slot it was given at its own budget, and paces at the whole
// from there: a slot taken anew at the wider rate is at once for every
// share that has waited that long, and the last groups' shares, each with
// a request or two left, sent them together (a run's 429s 3.1-3.9 % at a
// budget 20 % too high, from 2.1-2.8 %). (Seen failing with the rate not
// widened: 2.5 for 3.33; with calm looks near the end: heard 800ms after;
// with a new slot: the next request 245ms after the first.)
func TestLastSharesTakeTheFinishedBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("rates", func(t *testing.T) {
		t.Parallel()
		start := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
		now := start
		sig := &signal{}
		l := pace.NewShare(2.5, 100, 1)
		l.SetNow(func() time.Time { return now })
		l.SetSleep(func(ctx context.Context, d time.Duration) error { now = now.Add(max(d, 0)); return ctx.Err() })
		l.Spread(40, 100)
		l.Follow(sig)
		for _, st := range []struct {
			state pace.ShareState
			want  float64
		}{
			{pace.ShareState{}, 2.5},
			{pace.ShareState{Done: 60}, 2.5}, // 40 left: as many as send at once
			{pace.ShareState{Done: 70}, 2.5 * 40 / 30},
			{pace.ShareState{Done: 99}, 100},
			{pace.ShareState{Done: 120}, 100},                                          // counted twice (a group run again): never above the whole
			{pace.ShareState{Rate: 0.5, At: start.Add(6 * time.Second), Done: 99}, 50}, // cut to half now
		} {
			now = now.Add(time.Second)
			sig.state = st.state
			if err := l.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			if got := l.Rate(); math.Abs(got-st.want) > 0.01 {
				t.Fatalf("state %+v: rate %.3f, want %.3f", st.state, got, st.want)
			}
		}
	})
	start := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	now := start
	sig := &signal{state: pace.ShareState{Done: 30}, now: func() time.Time { return now }} // 70 left: fewer than twice the workers
	l := pace.NewShare(0.5, 20, 1)
	var sent, done time.Time
	l.SetNow(func() time.Time { return now })
	l.SetSleep(func(ctx context.Context, d time.Duration) error {
		now = now.Add(max(d, 0))
		if !sent.IsZero() && done.IsZero() && now.Sub(sent) >= 100*time.Millisecond {
			sig.mu.Lock()
			sig.state.Done, done = 99, now
			sig.mu.Unlock()
		}
		return ctx.Err()
	})
	l.Spread(40, 100)
	l.Follow(sig)
	now = now.Add(11 * time.Second) // calmAfter since it began to follow, never cut
	var at []time.Duration
	for range 3 {
		if err := l.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if sent.IsZero() {
			sent = now
		}
		at = append(at, now.Sub(sent))
	}
	heard := time.Duration(-1)
	for _, r := range sig.readTimes() {
		if !r.Before(done) {
			heard = r.Sub(done)
			break
		}
	}
	if heard < 0 || heard > 250*time.Millisecond {
		t.Errorf("the groups finished %v after the first request were heard %v later; want within a sharePoll", done.Sub(sent), heard)
	}
	// Its own interval (2 s) for the slot it was given, then the whole's
	// over one group left: 20 a second.
	if at[1] < 1900*time.Millisecond || at[1] > 2100*time.Millisecond || at[2]-at[1] > 60*time.Millisecond {
		t.Errorf("requests at %v after the first; want the next at its slot (2s) and the one after 50ms later", at[1:])
	}
}

// TestFirstRequestIsNotBroughtForward: a share holding its first request
// an interval after its predecessor's last (TakeOver) sends it later when
// a cut slows the rate, but not sooner when the rate rises: near a run's
// end most requests are the last groups' first ones, and a cut that came
// with more groups finished (the wider rate of Spread) made a dozen of
// them due at once, a bunch the API refused (traced at a budget three
// times too high: 10-15 429s in the run's last 0.3 s, 1 run in 6). (Seen
// failing with the first request's time taken at the rate now: sent at
// 625ms, not 1s.)
func TestFirstRequestIsNotBroughtForward(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		after pace.ShareState // written 500 ms after the takeover
		want  time.Duration
	}{
		// An interval at 2.5 × 0.4: 1 s. Cut by a fifth with 20 groups
		// left of 40 workers: 2.5 × 0.32 × 2 a second, an interval of
		// 625 ms, already past when heard.
		{"cut and widened", pace.ShareState{Rate: 0.32, Found: 0.32, Done: 80}, time.Second},
		// Cut to half, as many groups left: an interval of 2 s.
		{"cut", pace.ShareState{Rate: 0.2, Found: 0.2, Done: 50}, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
			now := start
			sig := &signal{state: pace.ShareState{Rate: 0.4, At: start, Found: 0.4, Done: 50}}
			l := pace.NewShare(2.5, 100, 1)
			l.SetNow(func() time.Time { return now })
			written := false
			l.SetSleep(func(ctx context.Context, d time.Duration) error {
				now = now.Add(max(d, 0))
				if !written && now.Sub(start) >= 500*time.Millisecond {
					sig.mu.Lock()
					sig.state, sig.state.At, written = tc.after, now, true
					sig.mu.Unlock()
				}
				return ctx.Err()
			})
			l.Spread(40, 100)
			l.Follow(sig)
			l.TakeOver(start)
			if err := l.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := now.Sub(start); got < tc.want-10*time.Millisecond || got > tc.want+10*time.Millisecond {
				t.Fatalf("the first request went %v after the takeover; want %v", got, tc.want)
			}
		})
	}
}

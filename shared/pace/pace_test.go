package pace_test

import (
	"context"
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
	var mu sync.Mutex
	var sent []time.Duration
	var wg sync.WaitGroup
	for range waiters {
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

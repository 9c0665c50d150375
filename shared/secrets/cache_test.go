package secrets

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testSecret = "ap-key-0123456789abcdef"

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeSource returns whatever value/err it holds and counts fetches. When
// gate is set, each fetch waits for it (or for its context).
type fakeSource struct {
	mu    sync.Mutex
	value string
	err   error
	gate  chan struct{}
	calls atomic.Int32
}

func (s *fakeSource) set(value string, err error) {
	s.mu.Lock()
	s.value, s.err = value, err
	s.mu.Unlock()
}

func (s *fakeSource) Secret(ctx context.Context, id string) (string, error) {
	s.calls.Add(1)
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.value, s.err
}

func mustSecret(t *testing.T, c *Cache, id, want string) {
	t.Helper()
	got, err := c.Secret(context.Background(), id)
	if err != nil {
		t.Fatalf("Secret(%q): %v", id, err)
	}
	if got != want {
		t.Fatalf("Secret(%q) = %q, want %q", id, got, want)
	}
}

func TestCacheExpiryAndRotation(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	src := &fakeSource{value: "v1"}
	c := NewCache(src, time.Minute, WithClock(clock.Now))

	mustSecret(t, c, "k", "v1")
	src.set("v2", nil) // rotated in the source
	clock.Advance(time.Minute - time.Nanosecond)
	mustSecret(t, c, "k", "v1") // still fresh: served from cache
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("fetches before expiry = %d, want 1", n)
	}
	clock.Advance(time.Nanosecond)
	mustSecret(t, c, "k", "v2") // expired: refetched, rotation visible
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("fetches after expiry = %d, want 2", n)
	}
	mustSecret(t, c, "other", "v2") // ids are cached separately
	if n := src.calls.Load(); n != 3 {
		t.Fatalf("fetches after second id = %d, want 3", n)
	}
}

func TestCacheFailedRefetchReturnsErrorNotStaleValue(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	src := &fakeSource{value: "v1"}
	c := NewCache(src, time.Minute, WithClock(clock.Now))
	mustSecret(t, c, "k", "v1")

	boom := errors.New("service unavailable")
	src.set("", boom)
	clock.Advance(time.Minute)
	got, err := c.Secret(context.Background(), "k")
	if !errors.Is(err, boom) || got != "" {
		t.Fatalf("Secret after failed refetch = %q, %v; want \"\", %v", got, err, boom)
	}
	// Errors are not cached: the next call tries again and succeeds.
	src.set("v2", nil)
	mustSecret(t, c, "k", "v2")
	if n := src.calls.Load(); n != 3 {
		t.Fatalf("fetches = %d, want 3", n)
	}
}

func TestCacheNotFoundAndEmpty(t *testing.T) {
	t.Parallel()
	c := NewCache(Static{"empty": ""}, time.Minute)
	if _, err := c.Secret(context.Background(), "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing secret: err = %v, want ErrNotFound", err)
	}
	if _, err := c.Secret(context.Background(), "empty"); !errors.Is(err, ErrEmpty) || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty secret: err = %v, want an 'empty' error", err)
	}
}

func TestCacheInvalidate(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	src := &fakeSource{value: "v1"}
	c := NewCache(src, time.Hour, WithClock(clock.Now))
	mustSecret(t, c, "k", "v1")
	src.set("v2", nil)
	c.Invalidate("k")
	mustSecret(t, c, "k", "v2")
}

func TestCacheZeroTTLAlwaysFetches(t *testing.T) {
	t.Parallel()
	src := &fakeSource{value: "v1"}
	c := NewCache(src, 0)
	mustSecret(t, c, "k", "v1")
	mustSecret(t, c, "k", "v1")
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("fetches = %d, want 2", n)
	}
}

// waitCtx counts calls to Done: Cache.Secret calls it only once the caller
// has joined the fetch in flight, so the test knows when every caller waits.
type waitCtx struct {
	context.Context
	waiting *atomic.Int32
}

func (c waitCtx) Done() <-chan struct{} {
	c.waiting.Add(1)
	return c.Context.Done()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCacheConcurrentCallersShareOneFetch(t *testing.T) {
	t.Parallel()
	const callers = 50
	src := &fakeSource{value: "v1", gate: make(chan struct{})}
	c := NewCache(src, time.Minute)

	var waiting atomic.Int32
	ctx := waitCtx{Context: context.Background(), waiting: &waiting}
	results := make(chan error, callers)
	for range callers {
		go func() {
			v, err := c.Secret(ctx, "k")
			if err == nil && v != "v1" {
				err = fmt.Errorf("got %q", v)
			}
			results <- err
		}()
	}
	waitFor(t, "all callers to wait on the fetch", func() bool { return waiting.Load() == callers })
	close(src.gate)
	for range callers {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("fetches = %d, want 1 shared by %d callers", n, callers)
	}
}

func TestCacheCancelledCallerDoesNotFailOthers(t *testing.T) {
	t.Parallel()
	src := &fakeSource{value: "v1", gate: make(chan struct{})}
	c := NewCache(src, time.Minute)

	var waiting atomic.Int32
	leaderCtx, cancel := context.WithCancel(context.Background())
	leaderDone := make(chan error, 1)
	go func() {
		_, err := c.Secret(waitCtx{Context: leaderCtx, waiting: &waiting}, "k")
		leaderDone <- err
	}()
	followerDone := make(chan error, 1)
	go func() {
		v, err := c.Secret(waitCtx{Context: context.Background(), waiting: &waiting}, "k")
		if err == nil && v != "v1" {
			err = fmt.Errorf("got %q", v)
		}
		followerDone <- err
	}()
	waitFor(t, "both callers to wait", func() bool { return waiting.Load() == 2 })
	cancel()
	if err := <-leaderDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v, want context.Canceled", err)
	}
	close(src.gate)
	if err := <-followerDone; err != nil {
		t.Fatalf("other caller: %v", err)
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("fetches = %d, want 1", n)
	}
}

func TestCacheFetchTimeout(t *testing.T) {
	t.Parallel()
	src := &fakeSource{gate: make(chan struct{})} // never opened
	c := NewCache(src, time.Minute, WithFetchTimeout(10*time.Millisecond))
	_, err := c.Secret(context.Background(), "k")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
}

func TestErrorsNeverContainSecretValue(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	blocked := &fakeSource{value: testSecret, gate: make(chan struct{})}
	tests := []struct {
		name string
		call func() error
	}{
		{"static missing id", func() error {
			_, err := Static{"k": testSecret}.Secret(context.Background(), "other")
			return err
		}},
		{"cache missing id", func() error {
			_, err := NewCache(Static{"k": testSecret}, time.Minute).Secret(context.Background(), "other")
			return err
		}},
		{"cache cancelled", func() error {
			_, err := NewCache(Static{"k": testSecret}, time.Minute).Secret(cancelled, "k")
			return err
		}},
		{"cache fetch timeout", func() error {
			_, err := NewCache(blocked, time.Minute, WithFetchTimeout(time.Millisecond)).Secret(context.Background(), "k")
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.call()
			if err == nil {
				t.Fatal("want an error")
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Fatalf("error leaks the secret: %v", err)
			}
		})
	}
}

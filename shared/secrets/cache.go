package secrets

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultFetchTimeout bounds one fetch from the source. The fetch runs apart
// from any single caller's context so that one caller giving up does not fail
// the others waiting on the same fetch.
const DefaultFetchTimeout = 30 * time.Second

// Cache keeps secrets fetched from a Source for a fixed time-to-live so a
// warm Lambda container does not call Secrets Manager for every batch, while a
// rotated secret still takes effect within ttl.
//
// A value older than ttl is never returned: when a refetch fails, Secret
// returns the error rather than the stale value. Serving a stale API key after
// rotation would have every request refused (a 401 stops the whole run), and
// a failed fetch is retried by the caller's own retry policy, so strictness
// costs little. Errors are not cached.
//
// Concurrent callers asking for the same id share one fetch.
type Cache struct {
	src          Source
	ttl          time.Duration
	now          func() time.Time
	fetchTimeout time.Duration

	mu       sync.Mutex
	entries  map[string]entry
	inflight map[string]*call
}

type entry struct {
	value     string
	fetchedAt time.Time
}

// call is one fetch in progress; done is closed once value and err are set.
type call struct {
	done  chan struct{}
	value string
	err   error
}

// CacheOption tunes a Cache.
type CacheOption func(*Cache)

// WithClock replaces time.Now, so tests can move time forward.
func WithClock(now func() time.Time) CacheOption {
	return func(c *Cache) { c.now = now }
}

// WithFetchTimeout bounds each fetch from the source (default DefaultFetchTimeout).
func WithFetchTimeout(d time.Duration) CacheOption {
	return func(c *Cache) { c.fetchTimeout = d }
}

// NewCache returns a cache over src keeping each value for ttl. A ttl of zero
// or less caches nothing (every call fetches), which still shares concurrent
// fetches.
func NewCache(src Source, ttl time.Duration, opts ...CacheOption) *Cache {
	c := &Cache{
		src:          src,
		ttl:          ttl,
		now:          time.Now,
		fetchTimeout: DefaultFetchTimeout,
		entries:      make(map[string]entry),
		inflight:     make(map[string]*call),
	}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

var _ Source = (*Cache)(nil)

// Secret returns the cached value of id while it is younger than ttl, and
// fetches it from the source otherwise.
func (c *Cache) Secret(ctx context.Context, id string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	c.mu.Lock()
	if e, ok := c.entries[id]; ok && c.now().Sub(e.fetchedAt) < c.ttl {
		c.mu.Unlock()
		return e.value, nil
	}
	cl, ok := c.inflight[id]
	if !ok {
		cl = &call{done: make(chan struct{})}
		c.inflight[id] = cl
		go c.fetch(context.WithoutCancel(ctx), id, cl)
	}
	c.mu.Unlock()

	select {
	case <-cl.done:
		return cl.value, cl.err
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for secret %s: %w", id, ctx.Err())
	}
}

// Invalidate drops the cached value of id, so the next Secret fetches it
// again: callers use it when the destination refuses the key, which is how a
// rotation shows up before ttl has passed.
func (c *Cache) Invalidate(id string) {
	c.mu.Lock()
	delete(c.entries, id)
	c.mu.Unlock()
}

func (c *Cache) fetch(ctx context.Context, id string, cl *call) {
	ctx, cancel := context.WithTimeout(ctx, c.fetchTimeout)
	defer cancel()
	// The clock is read before the fetch so the value's age is never understated.
	started := c.now()
	value, err := c.src.Secret(ctx, id)
	if err == nil && value == "" {
		err = fmt.Errorf("secret %s is empty: %w", id, ErrEmpty)
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		err = fmt.Errorf("fetching secret %s: gave up after %s: %w", id, c.fetchTimeout, err)
	}

	c.mu.Lock()
	if err == nil {
		c.entries[id] = entry{value: value, fetchedAt: started}
		cl.value = value
	} else {
		cl.err = err
	}
	delete(c.inflight, id)
	c.mu.Unlock()
	close(cl.done)
}

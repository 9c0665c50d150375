package local

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/segpilot/segpilot/shared/connect"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/runner"
)

// LambdaModel runs the Map's children as Lambda does, instead of as one
// process sharing one limiter: each child runs in a container of its own
// — its own Service and connector, pacing its worker's share of the budget
// with a limiter that starts fresh (at a random phase) in a cold container
// — reused warm by a later child, or recycled after an invocation with
// probability Churn, as Lambda adds and recycles containers. Seeded, so a
// benchmark or test replays the same churn and phases.
type LambdaModel struct {
	Seed  uint64
	Churn float64 // 0..1: chance a container is recycled after an invocation
}

// ContainerStats says how the Map's children were placed.
type ContainerStats struct {
	Invocations, ColdStarts int
}

// containers is the pool of warm syncbatch containers.
type containers struct {
	model  LambdaModel
	newSvc func(phase func(time.Duration) time.Duration) *run.Service

	mu    sync.Mutex // guards what follows
	rng   *rand.Rand
	idle  []*run.Service
	stats ContainerStats
}

func newContainers(m LambdaModel, newSvc func(phase func(time.Duration) time.Duration) *run.Service) *containers {
	return &containers{model: m, newSvc: newSvc, rng: rand.New(rand.NewPCG(m.Seed, m.Seed^0x5851f42d4c957f2d))}
}

// handler invokes SyncBatch in a warm container, or a cold one when none
// is idle.
func (c *containers) handler() runner.Handler {
	return func(ctx context.Context, payload json.RawMessage) (json.RawMessage, error) {
		svc := c.take()
		out, err := handler(svc.SyncBatch)(ctx, payload)
		c.release(svc)
		return out, err
	}
}

func (c *containers) take() *run.Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Invocations++
	if n := len(c.idle); n > 0 {
		svc := c.idle[n-1]
		c.idle = c.idle[:n-1]
		return svc
	}
	c.stats.ColdStarts++
	return c.newSvc(c.phase)
}

func (c *containers) release(svc *run.Service) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rng.Float64() < c.model.Churn {
		return // recycled: the next child needing one starts cold
	}
	c.idle = append(c.idle, svc)
}

// phase is a cold limiter's random start within its interval (seeded).
func (c *containers) phase(interval time.Duration) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Duration(c.rng.Int64N(int64(interval) + 1))
}

func (c *containers) Stats() ContainerStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// containerService is one container's Service: like the pipeline's, but
// with its own caches and a connector pacing this worker's share.
func containerService(base *run.Service, opts Options, phase func(time.Duration) time.Duration) *run.Service {
	conn := &connect.Connector{Secrets: opts.Secrets, BaseURLs: opts.BaseURLs, HTTPClient: opts.HTTPClient,
		Log: opts.Log, Timeout: opts.ClientTimeout, StartPhase: phase}
	return &run.Service{Store: base.Store, Connect: conn.Connect, Log: base.Log, Now: base.Now,
		Owner: base.Owner, Liveness: base.Liveness, Words: base.Words}
}

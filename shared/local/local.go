// Package local wires segpilot's pipeline for a laptop: a folder as the
// bucket, the in-process state-machine runner, and Autopilot (real, or the
// simulator) paced by one shared budget per connection.
package local

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/segpilot/segpilot/shared/autopilot"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/hostproc"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/runner"
	"github.com/segpilot/segpilot/shared/runpage"
	"github.com/segpilot/segpilot/shared/secrets"
	"github.com/segpilot/segpilot/shared/store"
	"github.com/segpilot/segpilot/statemachine"
)

// Options configure a local pipeline.
type Options struct {
	BucketDir string            // the folder standing in for the bucket
	Store     store.ObjectStore // instead of BucketDir: any store (tests use S3 on gofakes3)
	Secrets   secrets.Source    // where API keys come from (AUTOPILOT_API_KEY)
	// BaseURL, when set, replaces every connection's baseURL (the simulator,
	// or AUTOPILOT_BASE_URL).
	BaseURL    string
	HTTPClient *http.Client
	Log        *slog.Logger
	Progress   func(runner.Progress)
	// RetrySleep replaces the state machine's retry waits (tests).
	RetrySleep func(ctx context.Context, d time.Duration) error
	// ClientTimeout is the per-request timeout of the Autopilot client (default 30s).
	ClientTimeout time.Duration
}

// Pipeline is a ready-to-run local segpilot.
type Pipeline struct {
	Service *run.Service
	Store   store.ObjectStore
	Runner  *runner.Runner
	Connect *Connector
}

// New builds a pipeline over a bucket folder.
func New(opts Options) (*Pipeline, error) {
	st := opts.Store
	if st == nil {
		folder, err := store.NewFolder(opts.BucketDir)
		if err != nil {
			return nil, err
		}
		st = folder
	}
	conn := &Connector{Secrets: opts.Secrets, BaseURL: opts.BaseURL, HTTPClient: opts.HTTPClient,
		Log: opts.Log, Timeout: opts.ClientTimeout}
	self, err := hostproc.Self()
	if err != nil {
		return nil, err
	}
	svc := &run.Service{Store: st, Connect: conn.Connect, Log: opts.Log, Processes: processes(self.String()),
		ReleaseBrake: func(string) string { return "run it again with --allow-large-removal" }, Page: runpage.Render}
	r, err := runner.New(runner.Options{
		Definition: statemachine.Export,
		Functions: map[string]runner.Handler{
			"SyncBatchFunctionArn": handler(svc.SyncBatch),
			"FinalizeFunctionArn":  handler(svc.Finalize),
		},
		Items:    func(ctx context.Context, key string) ([]any, error) { return readItems(ctx, st, key) },
		Progress: opts.Progress,
		Sleep:    opts.RetrySleep,
	})
	if err != nil {
		return nil, err
	}
	svc.Starter = r
	return &Pipeline{Service: svc, Store: st, Runner: r, Connect: conn}, nil
}

// processes tells which segpilot processes on this host still run.
type processes string

func (p processes) Self() string { return string(p) }

func (processes) Alive(owner string) (bool, error) {
	id, err := hostproc.Parse(owner)
	if err != nil {
		return false, nil // written by a segpilot that ran alone (before locks named processes): not running now
	}
	return hostproc.Alive(id)
}

// handler adapts a typed step to the runner, as lambda.Start does in the cloud.
func handler[In, Out any](fn func(context.Context, In) (Out, error)) runner.Handler {
	return func(ctx context.Context, payload json.RawMessage) (json.RawMessage, error) {
		var in In
		if err := json.Unmarshal(payload, &in); err != nil {
			return nil, fmt.Errorf("decoding event: %w", err)
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	}
}

func readItems(ctx context.Context, st store.ObjectStore, key string) ([]any, error) {
	rc, _, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var items []any
	if err := json.NewDecoder(rc).Decode(&items); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", key, err)
	}
	return items, nil
}

// Connector hands each batch its own Autopilot client (so its request
// counts are its own) while every client of one connection shares a single
// rate limiter: the whole budget, as one key sees it.
type Connector struct {
	Secrets    secrets.Source
	BaseURL    string
	HTTPClient *http.Client
	Log        *slog.Logger
	Timeout    time.Duration

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

// Connect implements run.Connector; workerRPS is ignored: locally all
// workers share the connection's whole budget.
func (c *Connector) Connect(ctx context.Context, conn config.Connection, _ float64) (run.Destination, error) {
	base := conn.BaseURL
	if c.BaseURL != "" {
		base = c.BaseURL
	}
	// Before the key goes anywhere: an override skipped the config's check.
	if err := config.CheckBaseURL(base); err != nil {
		return nil, err
	}
	key, err := c.Secrets.Secret(ctx, conn.APIKeySecret)
	if err != nil {
		return nil, fmt.Errorf("reading the API key for connection %s: %w", conn.Name, err)
	}
	return autopilot.New(autopilot.Options{BaseURL: base, APIKey: key, HTTPClient: c.HTTPClient,
		Limiter: c.limiter(conn), Logger: c.Log, Timeout: c.Timeout})
}

func (c *Connector) limiter(conn config.Connection) *rate.Limiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.limiters == nil {
		c.limiters = map[string]*rate.Limiter{}
	}
	l, ok := c.limiters[conn.Name]
	if !ok {
		l = rate.NewLimiter(rate.Limit(conn.RequestsPerSecond), 1)
		c.limiters[conn.Name] = l
	}
	return l
}

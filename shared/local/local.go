// Package local wires segpilot's pipeline for a laptop: a folder as the
// bucket, the in-process state-machine runner, and the destinations (real,
// or their simulators) paced by one shared budget per connection.
package local

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/segpilot/segpilot"
	"github.com/segpilot/segpilot/shared/connect"
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
	Secrets   secrets.Source    // where API keys come from (AUTOPILOT_API_KEY, ORTTO_API_KEY)
	// BaseURLs, when set, replace the baseURL of every connection of a
	// kind (kind -> URL: the simulators, or AUTOPILOT_BASE_URL and
	// ORTTO_BASE_URL).
	BaseURLs   map[string]string
	HTTPClient *http.Client
	Log        *slog.Logger
	Progress   func(runner.Progress)
	// RetrySleep replaces the state machine's retry waits (tests).
	RetrySleep func(ctx context.Context, d time.Duration) error
	// ClientTimeout is the per-request timeout of the Autopilot client (default 30s).
	ClientTimeout time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// Lambda, when set, runs the Map's children in simulated Lambda
	// containers, each pacing its own share of the budget, instead of
	// sharing one limiter in this process.
	Lambda *LambdaModel
}

// Pipeline is a ready-to-run local segpilot.
type Pipeline struct {
	Service *run.Service
	Store   store.ObjectStore
	Runner  *runner.Runner
	Connect *connect.Connector
	// Containers reports how the Map's children were placed (LambdaModel only).
	Containers func() ContainerStats
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
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	// Locally every worker shares the connection's whole budget, as one key sees it.
	conn := &connect.Connector{Secrets: opts.Secrets, BaseURLs: opts.BaseURLs, HTTPClient: opts.HTTPClient,
		Log: opts.Log, Timeout: opts.ClientTimeout, Shared: true}
	self, err := hostproc.Self()
	if err != nil {
		return nil, err
	}
	svc := &run.Service{Store: st, Connect: conn.Connect, Log: opts.Log, Now: opts.Now, Processes: processes(self.String()),
		ReleaseBrake: func(string) string { return "run it again with --allow-large-removal" },
		SetKey:       "set the connection kind's key variable, AUTOPILOT_API_KEY or ORTTO_API_KEY (or run with --sim)", Page: runpage.Render}
	syncBatch := handler(svc.SyncBatch)
	var stats func() ContainerStats
	if opts.Lambda != nil {
		pool := newContainers(*opts.Lambda, func(phase func(time.Duration) time.Duration) *run.Service {
			return containerService(svc, opts, phase)
		})
		syncBatch, stats = pool.handler(), pool.Stats
	}
	r, err := runner.New(runner.Options{
		Definition: statemachine.Export,
		Template:   segpilot.Template,
		Functions: map[string]runner.Handler{
			"SyncBatchFunctionArn": syncBatch,
			"FinalizeFunctionArn":  handler(svc.Finalize),
		},
		Items: func(ctx context.Context, key string) ([]any, error) { return readItems(ctx, st, key) },
		Names: storeNames{st: st, now: now},
		Results: func(ctx context.Context, key string, body []byte) error {
			_, err := st.Put(ctx, key, bytes.NewReader(body), store.PutOptions{ContentType: "application/json"})
			return err
		},
		Progress: opts.Progress,
		Sleep:    opts.RetrySleep,
	})
	if err != nil {
		return nil, err
	}
	svc.Starter = r
	return &Pipeline{Service: svc, Store: st, Runner: r, Connect: conn, Containers: stats}, nil
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

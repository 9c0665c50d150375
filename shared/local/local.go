// Package local wires segpilot's pipeline for a laptop: a folder as the
// bucket, the in-process state-machine runner, and the destinations (real,
// or their simulators) paced by one shared budget per connection.
package local

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
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
	// Processes tells which segpilot processes still run; default: this
	// host's (tests stand in processes of their own, and kill them).
	Processes Processes
	// Words say what to do in the CLI's words; default: Words{}.
	Words run.Words
	// Context is what the pipeline's executions run under: cancelling it
	// stops them (the CLI passes its own, which Ctrl-C cancels); default
	// context.Background().
	Context context.Context
}

// Processes names this process and tells whether another still runs.
type Processes interface {
	Self() string
	// Alive says whether the process owner names still runs; an error
	// means it cannot be told (it runs on another host, say).
	Alive(owner string) (bool, error)
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
	procs := opts.Processes
	if procs == nil {
		self, err := hostproc.Self()
		if err != nil {
			return nil, err
		}
		procs = hostProcesses(self.String())
	}
	words := opts.Words
	if words == nil {
		words = Words{}
	}
	names := storeNames{st: st, now: now, self: procs.Self()}
	svc := &run.Service{Store: st, Connect: conn.Connect, Log: opts.Log, Now: opts.Now, Owner: procs.Self(),
		Liveness: liveness{names: names, procs: procs, now: now}, Words: words, Page: runpage.Render}
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
		Names: names,
		Ended: func(name string, err error) {
			svc.Logger().Error("execution ended without its finalize", "execution", name, "error", err)
		},
		Results: func(ctx context.Context, key string, body []byte) error {
			_, err := st.Put(ctx, key, bytes.NewReader(body), store.PutOptions{ContentType: "application/json"})
			return err
		},
		Progress: opts.Progress,
		Sleep:    opts.RetrySleep,
		Context:  opts.Context,
	})
	if err != nil {
		return nil, err
	}
	svc.Starter = r
	return &Pipeline{Service: svc, Store: st, Runner: r, Connect: conn, Containers: stats}, nil
}

// hostProcesses tells which segpilot processes on this host still run.
type hostProcesses string

func (p hostProcesses) Self() string { return string(p) }

func (hostProcesses) Alive(owner string) (bool, error) {
	id, err := hostproc.Parse(owner)
	if err != nil {
		return false, nil // not a process's name: nothing of it runs now
	}
	return hostproc.Alive(id)
}

// liveness is run.Liveness locally, from the runner's record of the
// execution (executions/<name>.json, shared by every process on the bucket
// folder): closed, it has ended; open, it runs while the process running
// it lives; absent, it has not started, and any drainer may start it
// (the record makes that once).
type liveness struct {
	names storeNames
	procs Processes
	now   func() time.Time
}

var _ run.Liveness = liveness{}

func (l liveness) Attempt(ctx context.Context, h run.Holder) (run.Live, error) {
	rec, _, err := l.names.read(ctx, h.Execution)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return run.Live{State: run.LiveNotStarted}, nil
	case err != nil:
		return run.Live{}, err
	case !rec.ClosedAt.IsZero():
		return run.Live{State: run.LiveEnded, EndedAt: rec.ClosedAt}, nil
	}
	alive, err := l.procs.Alive(rec.Process)
	switch {
	case err != nil:
		return run.Live{}, err
	case alive:
		return run.Live{State: run.LiveRunning}, nil
	}
	return run.Live{State: run.LiveEnded, EndedAt: l.now().UTC()}, nil
}

// Words are the local CLI's: its flags and environment variables.
type Words struct {
	// Command is the exact command that lifts the brake for one run of a
	// file; default: the flag to add.
	Command func(export string, src run.Source) string
}

var _ run.Words = Words{}

func (Words) LiftBrake(string) string { return "run it again with --allow-large-removal" }

func (w Words) LiftBrakeCommand(export string, src run.Source) string {
	if w.Command != nil {
		return w.Command(export, src)
	}
	return "segpilot run --export " + export + " --allow-large-removal …"
}

func (Words) SetKey(kind string) string {
	if kind == "" {
		return "set the connection kind's key variable, AUTOPILOT_API_KEY or ORTTO_API_KEY (or run with --sim)"
	}
	return "set " + strings.ToUpper(kind) + "_API_KEY (or run with --sim)"
}

func (Words) CheckKey(kind string) string {
	return "check that " + strings.ToUpper(cmp.Or(kind, "autopilot")) + "_API_KEY holds the account's current key"
}

func (Words) EndedEarly(h run.Holder) string {
	return "the segpilot process running it (" + h.Owner + ") ended before the run finished (killed or crashed)"
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

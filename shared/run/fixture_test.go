package run_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

const queueConfig = `connections:
  main:
    kind: autopilot
    apiKeySecret: segpilot/autopilot
    baseURL: https://api2.autopilothq.com/v1
    consent: true
exports:
  vip:
    connection: main
    segment: vip
    list: VIP
    match:
      email: Email
    mode: upsert
`

// fakeCloud is Step Functions as the drains see it: StartRun records an
// execution, and the test decides when it ends (finalize, or a stop by
// hand), or whether a start is lost or answered ambiguously.
type fakeCloud struct {
	mu      sync.Mutex
	started []run.Execution // in start order
	execs   map[string]*fakeExec
	// onStart, when set, decides a StartRun: whether the execution starts
	// and what the caller hears (an error after it started is the
	// ambiguous answer a timeout gives).
	onStart func(name string) (starts bool, err error)
	liveErr error // Attempt fails with it
}

type fakeExec struct {
	input   run.Execution
	ended   bool
	endedAt time.Time
}

var (
	_ run.Starter  = (*fakeCloud)(nil)
	_ run.Liveness = (*fakeCloud)(nil)
)

func (c *fakeCloud) StartRun(_ context.Context, name string, input []byte) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	starts, answer := true, error(nil)
	if c.onStart != nil {
		starts, answer = c.onStart(name)
	}
	if !starts {
		return false, answer
	}
	if _, ok := c.execs[name]; ok {
		return false, answer // ExecutionAlreadyExists
	}
	var ex run.Execution
	if err := json.Unmarshal(input, &ex); err != nil {
		return false, err
	}
	if c.execs == nil {
		c.execs = map[string]*fakeExec{}
	}
	c.execs[name] = &fakeExec{input: ex}
	c.started = append(c.started, ex)
	return answer == nil, answer
}

func (c *fakeCloud) Attempt(_ context.Context, h run.Holder) (run.Live, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.liveErr != nil {
		return run.Live{}, c.liveErr
	}
	e, ok := c.execs[h.Execution]
	switch {
	case !ok:
		return run.Live{State: run.LiveNotStarted}, nil
	case e.ended:
		return run.Live{State: run.LiveEnded, EndedAt: e.endedAt}, nil
	}
	return run.Live{State: run.LiveRunning}, nil
}

// end marks an execution ended at a time (stopped by hand, or after its finalize).
func (c *fakeCloud) end(name string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.execs[name]; e != nil {
		e.ended, e.endedAt = true, at
	}
}

// runs lists the run of every execution started, in order.
func (c *fakeCloud) runs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for _, ex := range c.started {
		ids = append(ids, ex.RunID)
	}
	return ids
}

// last is the latest execution started.
func (c *fakeCloud) last(t *testing.T) run.Execution {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.started) == 0 {
		t.Fatal("no execution started")
	}
	return c.started[len(c.started)-1]
}

// listOnly is a destination that has the list and takes every removal.
type listOnly struct{}

func (listOnly) PrepareList(context.Context, dest.ListSpec) (string, error) { return "list-1", nil }
func (listOnly) Upsert(_ context.Context, _ string, cs []dest.Contact, _ dest.Write) ([]dest.Outcome, error) {
	out := make([]dest.Outcome, len(cs))
	for i, c := range cs {
		out[i] = dest.Outcome{Email: c.Email, Status: dest.Sent}
	}
	return out, nil
}
func (listOnly) Remove(_ context.Context, _ string, emails []string) ([]dest.Outcome, error) {
	out := make([]dest.Outcome, len(emails))
	for i, e := range emails {
		out[i] = dest.Outcome{Email: e, Status: dest.Sent}
	}
	return out, nil
}
func (listOnly) Stats() dest.Stats { return dest.Stats{} }

// fixture is a bucket (a folder), the fake cloud and a clock, shared by
// any number of Services: Lambda containers of ingest, syncbatch, finalize.
type fixture struct {
	t     *testing.T
	st    *store.Folder
	cloud *fakeCloud
	now   time.Time
	svc   *run.Service

	mu     sync.Mutex
	kicked []string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := store.NewFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, st: st, cloud: &fakeCloud{}, now: time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)}
	f.svc = f.service()
	f.put(run.ConfigKey, queueConfig)
	return f
}

// Kick records a finalize's kick (the fixture is the Services' Kicker).
func (f *fixture) Kick(_ context.Context, export string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kicked = append(f.kicked, export)
	return nil
}

// service is one more container on the same bucket.
func (f *fixture) service() *run.Service {
	return &run.Service{Store: f.st, Starter: f.cloud, Liveness: f.cloud, Kicker: f, TempDir: f.t.TempDir(),
		Connect:    func(context.Context, config.Connection, run.Share) (run.Destination, error) { return listOnly{}, nil },
		Now:        func() time.Time { return f.now },
		EndedGrace: 16 * time.Minute, Owner: "test"}
}

func (f *fixture) put(key, body string) store.ObjectInfo {
	f.t.Helper()
	info, err := f.st.Put(context.Background(), key, strings.NewReader(body), store.PutOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return info
}

// arrive drops a segment file and delivers its event, arrived at minute m.
func (f *fixture) arrive(svc *run.Service, name string, m int, emails ...string) run.Result {
	f.t.Helper()
	key := "segments/vip/" + name
	info := f.put(key, "Email\n"+strings.Join(emails, "\n")+"\n")
	return f.deliver(svc, run.Source{Key: key, ETag: info.ETag, Size: info.Size}, m)
}

func (f *fixture) deliver(svc *run.Service, src run.Source, m int) run.Result {
	f.t.Helper()
	res, err := svc.Start(context.Background(), run.StartRequest{Trigger: run.TriggerS3, Source: src,
		Arrived: time.Date(2026, 11, 29, 7, m, 0, 0, time.UTC)})
	if err != nil {
		f.t.Fatal(err)
	}
	if len(res) != 1 {
		f.t.Fatalf("results %+v", res)
	}
	return res[0]
}

// finish plays an execution's end: its finalize, then the execution ends.
func (f *fixture) finish(svc *run.Service, ex run.Execution) *run.Report {
	f.t.Helper()
	rep, err := svc.Finalize(context.Background(), finalizeInput(ex))
	if err != nil {
		f.t.Fatal(err)
	}
	f.cloud.end(execName(ex), f.now)
	return rep
}

func finalizeInput(ex run.Execution) run.FinalizeInput {
	return run.FinalizeInput{Export: ex.Export, RunID: ex.RunID, Attempt: ex.Attempt, Plan: ex.Plan, StartedAt: ex.StartedAt}
}

// planned drops a file and returns its started attempt's execution and,
// for each batch in the Map items ingest wrote, the syncbatch event of a
// group of that one batch.
func (f *fixture) planned(emails ...string) (run.Execution, []run.Group) {
	f.t.Helper()
	res := f.arrive(f.svc, "a.csv", 1, emails...)
	if res.Status != run.StatusRunning {
		f.t.Fatalf("run: %+v", res)
	}
	ex := f.cloud.last(f.t)
	var groups []run.Group
	for _, it := range f.items(ex) {
		groups = append(groups, run.Group{Items: []run.Item{it}, BatchInput: batchInput(ex)})
	}
	return ex, groups
}

// items reads the Map's items (items.json) of an execution, a batch each
// (its groups' batches).
func (f *fixture) items(ex run.Execution) []run.Item {
	f.t.Helper()
	rc, _, err := f.st.Get(context.Background(), ex.ItemsKey)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rc.Close()
	var items []run.Item
	if err := json.NewDecoder(rc).Decode(&items); err != nil {
		f.t.Fatal(err)
	}
	return run.BatchItems(items)
}

// sendAll runs every group of ex through syncbatch on svc.
func (f *fixture) sendAll(svc *run.Service, ex run.Execution) {
	f.t.Helper()
	for _, it := range f.items(ex) {
		if _, err := svc.SyncBatch(context.Background(), run.Group{Items: []run.Item{it}, BatchInput: batchInput(ex)}); err != nil {
			f.t.Fatal(err)
		}
	}
}

// batchInput is what the Map's ItemBatcher gives every group of ex.
func batchInput(ex run.Execution) run.GroupInput {
	return run.GroupInput{Export: ex.Export, RunID: ex.RunID, Attempt: ex.Attempt, Plan: ex.Plan, ListID: ex.ListID, WorkerRPS: ex.WorkerRPS}
}

// emailsN is n addresses, c000@example.com on, in order.
func emailsN(n int) []string {
	emails := make([]string, n)
	for i := range emails {
		emails[i] = fmt.Sprintf("c%03d@example.com", i)
	}
	return emails
}

func md5Of(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// execName is the execution name of ex's attempt.
func execName(ex run.Execution) string { return fmt.Sprintf("%s-%d", ex.RunID, ex.Attempt) }

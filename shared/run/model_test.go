package run_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

// TestLockModel is a model check in miniature of the export lock and queue
// (queue.go) as Start, Finalize and afterRun use them (issue 14).
//
// Each seed plays one export: a few segment files, delivered in random
// order (arrival order is not delivery order), some again, to up to four
// drainers at once, each its own run.Service (a Lambda container, or a
// local-mode process), over one store: the Folder, or s3store with the
// real SDK on gofakes3 or on moto_server. Every store call (bar a run's
// plan files, written in parallel) and every call to Step Functions is a
// step: a scheduler driven by the seed picks which waiting call goes next,
// so a seed replays the same interleaving; a random delay is the scheduler
// letting others go first, and time is a fake clock it moves, by seconds
// or past the stale thresholds (each step also takes 10 ms: real clocks
// never stand still). Before any step the drainer may crash: every later
// call of its Service fails, it never finalizes, and locally its process
// is then reported dead; in the cloud a Lambda also dies 15 minutes into
// an invocation. Executions (a fake Step Functions) finish when the
// scheduler runs their finalize, on any container, which may crash too
// (Step Functions then retries it or fails the execution), or are stopped
// by hand; in local mode the run executes inside StartRun, as the local
// runner does, where its process may die.
//
// Checked at every step, from what physically happened rather than from
// the code's thresholds:
//
//   - ONE RUN AT A TIME: an execution starts only when every other
//     execution of the export is over, and at most one is not over. An
//     execution is over once its finalize wrote its report; in the cloud,
//     once it ended (stopped, or finalize failed for good) more than
//     Lambda's 15-minute limit ago, so nothing it had in flight still
//     runs; locally, once its process died.
//   - ARRIVAL ORDER: no execution starts for a file that arrived before the
//     file of an execution already started; the lock's newest started file
//     never moves back; a file is superseded only once a newer file's run
//     was handed the lock.
//   - LIVE HOLDER OVERWRITTEN (never): a write of lock.json replaces a free
//     lock, one its own invocation wrote, its own run's (the run's finalize
//     releasing), or a dead holder's: a drainer whose invocation crashed,
//     ended or outlived Lambda's limit (locally: whose process died), a run
//     whose execution is over, or a run never started whose drainer is
//     dead.
//
// Then the crashes stop and rounds follow: time moves on 30 minutes (past
// every stale threshold), each execution still going is finalized, every
// file whose deliveries all died before queueing it is delivered again (as
// Lambda retries an event), and the newest file's event comes again (as
// the schedule would). LIVENESS: within files+4 rounds the export is idle:
// no execution going, queue empty, lock free. NO FILE LOST: every file
// then has a final report: succeeded (one of its executions finalized),
// superseded, or failed (one of its executions was stopped or failed, or
// its process died; locally also when the process that handed its run the
// lock died before starting it, as local mode cannot tell that from a run
// killed midway), and the newest file succeeded.
//
// It found that a run taken over as abandoned lost its report for good when
// the drainer taking over died before writing it (fixed in queue.go: the
// lock carries the report owed). Seen failing, each by hand and reverted:
// swapLock without IfNoneMatch and IfMatch, without IfMatch alone, or
// without IfNoneMatch alone, and the Folder store without its
// compare-and-swap (the folder only), each within the first seeds, with
// e.g. "seed 1001 (gofakes3, cloud flavour): LIVE HOLDER OVERWRITTEN:
// drainer 1 (deliver f0.csv) wrote held by drainer:… over held by
// drainer:…, written by drainer 2 (deliver f1.csv), which is alive".
//
// SEGPILOT_MODEL_SEEDS=N plays N seeds per store (a soak; 300 pass);
// SEGPILOT_MODEL_SEED=S replays seed S, as a failure prints, and
// SEGPILOT_MODEL_TRACE=1 logs every step of every seed.
func TestLockModel(t *testing.T) {
	t.Parallel()
	// Each store gets its own seeds, so the three explore different
	// schedules. Local mode keeps its bucket in a folder; Lambda uses S3.
	backends := []struct {
		name     string
		first, n uint64
		flavours []flavour
		open     func(t *testing.T) func(t *testing.T, seed uint64) store.ObjectStore
	}{
		{"folder", 1, 16, []flavour{cloudMode, localMode}, openFolder},
		{"gofakes3", 1001, 16, []flavour{cloudMode}, func(t *testing.T) func(*testing.T, uint64) store.ObjectStore {
			srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
			t.Cleanup(srv.Close)
			return openS3(srv.URL)
		}},
		{"moto", 2001, 3, []flavour{cloudMode}, func(t *testing.T) func(*testing.T, uint64) store.ObjectStore {
			return openS3(testutil.Moto(t))
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fresh := b.open(t)
			seeds := modelSeeds(t, b.first, b.n)
			seen := map[string]int{}
			for _, seed := range seeds {
				for _, fl := range b.flavours {
					w := newWorld(t, fl, seed, fresh(t, seed))
					w.play()
					if os.Getenv("SEGPILOT_MODEL_TRACE") != "" {
						t.Logf("%s", w.lastSteps(100000))
					}
					for k, n := range w.seen {
						seen[string(fl)+" "+k] += n
					}
					if len(w.violations) > 0 {
						t.Fatalf("seed %d (%s, %s flavour): %s\nreplay: SEGPILOT_MODEL_SEED=%d go test -race -run 'TestLockModel/%s' ./shared/run/\nsteps (latest last):\n%s",
							seed, b.name, fl, strings.Join(w.violations, "\n"), seed, b.name, w.lastSteps(120))
					}
				}
			}
			t.Logf("%d seeds from %d: %v", len(seeds), seeds[0], seen)
			if len(seeds) < 16 {
				return // too few to expect every event
			}
			// A model check that never saw these would pass without testing much.
			for _, fl := range b.flavours {
				events := []string{"crash", "execution", "superseded", "takeover of a dead drainer", "takeover of a dead run",
					"takeover of a run never started", "killed-run report"}
				if fl == cloudMode {
					events = append(events, "Lambda time limit", "stop by hand")
				}
				for _, ev := range events {
					if seen[string(fl)+" "+ev] == 0 {
						t.Errorf("%s flavour: no %q in %d seeds; the schedule no longer reaches it", fl, ev, len(seeds))
					}
				}
			}
		})
	}
}

// modelSeeds returns first, first+1, … : n of them, or as the environment says.
func modelSeeds(t *testing.T, first, n uint64) []uint64 {
	if s := os.Getenv("SEGPILOT_MODEL_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SEGPILOT_MODEL_SEED=%q: %v", s, err)
		}
		return []uint64{seed}
	}
	if s := os.Getenv("SEGPILOT_MODEL_SEEDS"); s != "" {
		var err error
		if n, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("SEGPILOT_MODEL_SEEDS=%q: %v", s, err)
		}
	} else if testing.Short() {
		n = max(n/4, 1)
	}
	seeds := make([]uint64, n)
	for i := range seeds {
		seeds[i] = first + uint64(i)
	}
	return seeds
}

func openFolder(*testing.T) func(*testing.T, uint64) store.ObjectStore {
	return func(t *testing.T, _ uint64) store.ObjectStore {
		st, err := store.NewFolder(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
}

// openS3 gives each seed its own bucket on the emulator at endpoint.
func openS3(endpoint string) func(*testing.T, uint64) store.ObjectStore {
	client := awsx.NewS3Client(aws.Config{Region: "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "not-a-secret", "")}, endpoint)
	var mu sync.Mutex
	n := 0
	return func(t *testing.T, seed uint64) store.ObjectStore {
		mu.Lock()
		n++
		bucket := fmt.Sprintf("model-%d-%d", seed, n) // a replayed seed also gets a fresh bucket
		mu.Unlock()
		if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
			t.Fatalf("creating bucket %s: %v", bucket, err)
		}
		return s3store.New(client, bucket)
	}
}

type flavour string

const (
	cloudMode flavour = "cloud" // Lambda: stale holders judged by age and Step Functions
	localMode flavour = "local" // processes on one host: judged by whether the owner lives
)

// lambdaLimit is how long any Lambda invocation may run: after it, the
// container's drain, batch or finalize is dead, whatever it was doing.
const lambdaLimit = 15 * time.Minute

// callTime is how long each step takes.
const callTime = 10 * time.Millisecond

const modelExport = "vip"

var errCrashed = errors.New("model: this Lambda container or process crashed here")

// world is one seed's bucket, drainers, executions and clock. The
// scheduler (the test goroutine) and the one task it lets run share it
// under mu.
type world struct {
	t        *testing.T
	seed     uint64
	fl       flavour
	rng      *rand.Rand
	raw      store.ObjectStore
	tempDir  string
	crashP   float64
	drainers int  // how many Services may be busy at once
	stuck    bool // a task stopped answering: leave it be

	mu         sync.Mutex
	now        time.Time
	actors     []*actor
	tasks      []*task // started and not ended, in start order
	execs      []*execution
	files      []*file
	writers    map[string]*task   // lock.json content -> the task that wrote it
	handed     map[string][]*task // file key -> the tasks that handed its run the lock
	violations []string
	steps      []string
	seen       map[string]int // events, to show the schedule reaches them
}

// file is one segment file of the export.
type file struct {
	name     string
	key      string
	etag     string
	arrived  time.Time
	runID    string
	enqueued bool // some queue entry for it was written
}

// execution is one Step Functions execution (or local run).
type execution struct {
	name       string
	file       *file
	actor      *actor // the Service that started it (local: the process running it)
	reported   bool   // its finalize wrote its report
	ended      bool   // cloud: stopped, failed, or finished
	endedAt    time.Time
	finalizing *task // cloud: its finalize invocation in flight
}

// actor is one Service: a Lambda container, or a local-mode process.
type actor struct {
	id      int
	pid     string
	svc     *run.Service
	crashed bool
	task    *task
	ran     map[string]bool // local: the runner's own record of executions started
}

// task is one invocation on an actor: a delivered event, or a finalize.
type task struct {
	what   string
	actor  *actor
	start  time.Time
	exec   *execution // the execution it finalizes (cloud) or is running (local)
	err    error
	calls  chan string // the call it waits to make; "" when it has returned
	grants chan bool   // go ahead (true) or crash (false)
	parked string
}

func newWorld(t *testing.T, fl flavour, seed uint64, raw store.ObjectStore) *world {
	t.Helper()
	w := &world{t: t, seed: seed, fl: fl, raw: raw, tempDir: t.TempDir(),
		rng:     rand.New(rand.NewPCG(seed, 0)),
		now:     time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC),
		writers: map[string]*task{}, handed: map[string][]*task{}, seen: map[string]int{}}
	w.crashP = []float64{0, 0.005, 0.015, 0.03}[w.rng.IntN(4)]
	w.drainers = 2 + w.rng.IntN(3)
	ctx := context.Background()
	if _, err := raw.Put(ctx, run.ConfigKey, strings.NewReader(queueConfig), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(run.ConfigKey, []byte(queueConfig))
	if err != nil {
		t.Fatal(err)
	}
	n := 2 + w.rng.IntN(4)
	for i := range n {
		// Only an invalid row: the plan has no batch, so a finalize succeeds
		// without syncbatch, and Autopilot is never called.
		f := &file{name: fmt.Sprintf("f%d.csv", i), arrived: w.now.Add(time.Duration(i-n) * time.Minute)}
		f.key = "segments/vip/" + f.name
		info, err := raw.Put(ctx, f.key, strings.NewReader(fmt.Sprintf("Email\nnot-an-email-%d\n", i)), store.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f.etag = info.ETag
		f.runID = run.RunID(modelExport, run.Source{Key: f.key, ETag: f.etag}, cfg.Version)
		w.files = append(w.files, f)
	}
	return w
}

// play runs the seed: random steps, then the settling rounds.
func (w *world) play() {
	defer w.shutdown()
	var deliveries []*file
	deliveries = append(deliveries, w.files...)
	for range 1 + w.rng.IntN(len(w.files)) {
		// S3 delivers an event at least once; the schedule redelivers the newest.
		deliveries = append(deliveries, w.files[w.rng.IntN(len(w.files))])
	}
	w.rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
	w.logf("seed %d: %d files, %d deliveries, up to %d drainers, crash chance %.2f per step",
		w.seed, len(w.files), len(deliveries), w.drainers, w.crashP)

	for step := 0; step < 400 && w.ok(); step++ {
		type action struct {
			weight float64
			do     func()
		}
		var actions []action
		for _, tk := range w.tasks {
			p := w.crashP
			if p > 0 && strings.HasPrefix(tk.parked, "Start") {
				p = 0.25 // the riskiest moment: the lock is the run's, and its execution not yet started
			}
			actions = append(actions, action{6, func() { w.grant(tk, w.rng.Float64() < p) }})
		}
		room := w.room()
		if room && len(deliveries) > 0 {
			actions = append(actions, action{3, func() {
				f := deliveries[0]
				deliveries = deliveries[1:]
				w.deliver(w.pickActor(), f)
			}})
		}
		if room && step < 120 {
			actions = append(actions, action{0.5, func() {
				w.deliver(w.pickActor(), w.files[w.rng.IntN(len(w.files))]) // an event again, or the schedule
			}})
		}
		if w.fl == cloudMode {
			for _, e := range w.execs {
				if e.ended {
					continue
				}
				if room && e.finalizing == nil {
					actions = append(actions, action{2, func() { w.finalize(w.pickActor(), e) }})
				}
				actions = append(actions, action{0.3, func() { w.stop(e) }}) // its finalize may be under way
			}
		}
		if len(actions) == 0 && len(deliveries) == 0 {
			break // all delivered, nothing in flight, no execution going
		}
		actions = append(actions,
			action{1, func() { w.advance(time.Duration(1+w.rng.IntN(180)) * time.Second) }},
			action{0.15, func() { w.advance(time.Duration(10+w.rng.IntN(16)) * time.Minute) }})
		total := 0.0
		for _, a := range actions {
			total += a.weight
		}
		pick := w.rng.Float64() * total
		for _, a := range actions {
			if pick -= a.weight; pick < 0 {
				a.do()
				break
			}
		}
		w.checkOneRunning()
	}
	if w.ok() {
		w.settle()
	}
}

// settle stops the crashes and lets time pass until the export is idle.
func (w *world) settle() {
	w.crashP = 0
	w.logf("settling: no more crashes; 30 minutes at a time")
	w.finishTasks()
	for round := 0; w.ok(); round++ {
		if round > len(w.files)+3 {
			w.fail("LIVENESS: the export is still not idle after %d rounds of 30 minutes, finalizing every execution and delivering the newest file again: %s",
				round, w.describeBucket())
			return
		}
		w.advance(30 * time.Minute)
		w.finalizeAll()
		for _, f := range w.files {
			if !f.enqueued { // Lambda retries an event whose invocations all died
				w.deliver(w.newActor(), f)
				w.finishTasks()
			}
		}
		w.deliver(w.newActor(), w.files[len(w.files)-1]) // as the schedule would
		w.finishTasks()
		w.finalizeAll()
		if w.idle() {
			break
		}
	}
	if w.ok() {
		w.checkNoFileLost()
	}
}

// finishTasks lets every task in flight run to its end.
func (w *world) finishTasks() {
	for len(w.tasks) > 0 && w.ok() {
		w.grant(w.tasks[0], false)
		w.checkOneRunning()
	}
}

// finalizeAll runs the finalize of every cloud execution still going,
// each of which may start the next run.
func (w *world) finalizeAll() {
	for w.fl == cloudMode && w.ok() {
		var next *execution
		for _, e := range w.execs {
			if !e.ended && e.finalizing == nil {
				next = e
				break
			}
		}
		if next == nil {
			return
		}
		w.finalize(w.newActor(), next)
		w.finishTasks()
	}
}

// idle: no execution going, the queue empty, the lock free.
func (w *world) idle() bool {
	w.mu.Lock()
	for _, e := range w.execs {
		if !w.over(e) {
			w.mu.Unlock()
			return false
		}
	}
	w.mu.Unlock()
	queued, err := w.raw.List(context.Background(), "state/vip/queue/")
	if err != nil {
		w.t.Fatal(err)
	}
	l, found, err := w.readLock()
	if err != nil {
		w.t.Fatal(err)
	}
	return len(queued) == 0 && (!found || l.Holder == "")
}

func (w *world) checkNoFileLost() {
	ctx := context.Background()
	for i, f := range w.files {
		rep, err := run.ReadReport(ctx, w.raw, modelExport, f.runID)
		if err != nil {
			w.fail("NO FILE LOST: %s has no report at the end (%v): %s", f.name, err, w.describeBucket())
			continue
		}
		var reported, abandoned bool
		w.mu.Lock()
		for _, e := range w.execs {
			if e.file == f {
				reported = reported || e.reported
				abandoned = abandoned || !e.reported && (e.ended || w.fl == localMode && e.actor.crashed)
			}
		}
		for _, tk := range w.handed[f.key] {
			// Local mode cannot tell a run whose process died before it
			// started from one killed mid-run: both are reported killed.
			abandoned = abandoned || w.fl == localMode && tk.actor.crashed
		}
		w.mu.Unlock()
		switch {
		case i == len(w.files)-1 && rep.Status != run.StatusSucceeded:
			w.fail("NO FILE LOST: the newest file %s ends %s (%s), want succeeded", f.name, rep.Status, rep.Message)
		case rep.Status == run.StatusSucceeded && !reported:
			w.fail("NO FILE LOST: %s reports succeeded, but none of its executions was finalized", f.name)
		case rep.Status == run.StatusFailed && !abandoned:
			w.fail("NO FILE LOST: %s reports failed (%s), but none of its executions was stopped or lost its process, nor (locally) did the process that handed it the lock die", f.name, rep.Message)
		case rep.Status != run.StatusSucceeded && rep.Status != run.StatusSuperseded && rep.Status != run.StatusFailed:
			w.fail("NO FILE LOST: %s ends %s (%s), want succeeded, superseded or failed", f.name, rep.Status, rep.Message)
		}
	}
}

// deliver starts the S3 event of f on a.
func (w *world) deliver(a *actor, f *file) {
	w.spawn(a, "deliver "+f.name, nil, func(ctx context.Context) error {
		_, err := a.svc.Start(ctx, run.StartRequest{Trigger: run.TriggerS3,
			Source: run.Source{Key: f.key, ETag: f.etag}, Arrived: f.arrived})
		return err
	})
}

// finalize starts e's finalize Lambda on a (cloud).
func (w *world) finalize(a *actor, e *execution) {
	tk := w.spawn(a, "finalize "+e.name, e, func(ctx context.Context) error {
		_, err := a.svc.Finalize(ctx, run.FinalizeInput{Export: modelExport, RunID: e.file.runID})
		return err
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	if tk.parked != "" {
		e.finalizing = tk
	}
}

// stop is StopExecution: e's finalize in flight goes on, no other starts.
func (w *world) stop(e *execution) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e.ended, e.endedAt = true, w.now
	w.seen["stop by hand"]++
	w.logf("execution %s stopped by hand", e.name)
}

func (w *world) advance(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.now = w.now.Add(d)
	w.logf("clock +%s", d)
}

func (w *world) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

// room says whether a Service is free for a new invocation.
func (w *world) room() bool {
	idle, alive := w.idleActors()
	return len(idle) > 0 || alive < w.drainers
}

// pickActor returns a Service for a new invocation: an idle one, or a new
// one while fewer than w.drainers are alive. Call it only when room().
func (w *world) pickActor() *actor {
	idle, alive := w.idleActors()
	if len(idle) > 0 && (alive >= w.drainers || w.rng.IntN(2) == 0) {
		return idle[w.rng.IntN(len(idle))]
	}
	return w.newActor()
}

func (w *world) idleActors() (idle []*actor, alive int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.actors {
		if !a.crashed {
			alive++
			if a.task == nil {
				idle = append(idle, a)
			}
		}
	}
	return idle, alive
}

func (w *world) newActor() *actor {
	w.mu.Lock()
	defer w.mu.Unlock()
	a := &actor{id: len(w.actors) + 1, ran: map[string]bool{}}
	a.pid = fmt.Sprintf("pid=%d", 1000+a.id)
	ms := modelStore{w: w, a: a}
	a.svc = &run.Service{Store: ms, TempDir: w.tempDir, Now: w.clock,
		Connect: func(context.Context, config.Connection, float64) (run.Destination, error) { return listOnly{}, nil }}
	if w.fl == cloudMode {
		a.svc.Starter = cloudStarter{w: w, a: a}
	} else {
		a.svc.Starter = localStarter{w: w, a: a}
		a.svc.Processes = processes{w: w, a: a}
	}
	w.actors = append(w.actors, a)
	return a
}

// spawn starts fn as a's task and waits until it waits on its first call
// (or has returned).
func (w *world) spawn(a *actor, what string, e *execution, fn func(context.Context) error) *task {
	w.mu.Lock()
	tk := &task{what: what, actor: a, start: w.now, exec: e,
		calls: make(chan string), grants: make(chan bool)}
	a.task = tk
	w.tasks = append(w.tasks, tk)
	w.logf("drainer %d starts: %s", a.id, what)
	w.mu.Unlock()
	go func() {
		tk.err = fn(context.Background())
		tk.calls <- ""
	}()
	w.park(tk)
	return tk
}

// grant lets tk make the call it waits on, or crashes it there, and waits
// until it waits on its next call (or has returned).
func (w *world) grant(tk *task, crash bool) {
	w.mu.Lock()
	w.now = w.now.Add(callTime) // real clocks move on: no two steps happen at the same instant
	if w.fl == cloudMode && w.now.Sub(tk.start) > lambdaLimit {
		crash = true // Lambda ended the invocation at its time limit
		w.seen["Lambda time limit"]++
	}
	if crash {
		w.seen["crash"]++

		tk.actor.crashed = true
		w.logf("drainer %d CRASHES before: %s", tk.actor.id, tk.parked)
	} else {
		w.logf("drainer %d: %s", tk.actor.id, tk.parked)
	}
	w.mu.Unlock()
	w.seen["step"]++
	tk.grants <- !crash
	w.park(tk)
}

func (w *world) park(tk *task) {
	var call string
	select {
	case call = <-tk.calls:
	case <-time.After(time.Minute):
		w.stuck = true
		w.t.Fatalf("seed %d: drainer %d (%s) neither made a call nor returned within a minute: it waits on something the model does not schedule\n%s",
			w.seed, tk.actor.id, tk.what, w.lastSteps(40))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if call != "" {
		tk.parked = call
		return
	}
	tk.actor.task = nil
	for i, other := range w.tasks {
		if other == tk {
			w.tasks = append(w.tasks[:i], w.tasks[i+1:]...)
			break
		}
	}
	w.logf("drainer %d ends %s: %v", tk.actor.id, tk.what, strings.ReplaceAll(fmt.Sprint(tk.err), "\n", " | "))
	if tk.err != nil && !tk.actor.crashed {
		w.violate("drainer %d: %s failed without a crash: %v", tk.actor.id, tk.what, tk.err)
	}
	e := tk.exec
	if w.fl != cloudMode || e == nil || e.finalizing != tk {
		return
	}
	e.finalizing = nil
	switch {
	case e.ended:
	case tk.err == nil && !tk.actor.crashed: // (afterRun logs its errors: Finalize returns none for them)
		e.ended, e.endedAt = true, w.now // the execution succeeded
	case w.rng.IntN(2) == 0:
		// Step Functions gave up retrying finalize: the execution failed.
		e.ended, e.endedAt = true, w.now
		w.logf("execution %s failed: its finalize died", e.name)
	}
}

// shutdown crashes whatever still waits (after a violation), so no
// goroutine outlives the seed.
func (w *world) shutdown() {
	for len(w.tasks) > 0 && !w.stuck {
		w.grant(w.tasks[0], true)
	}
}

// yield is a step: the task waits until the scheduler lets it make the
// call, or crashes it there.
func (w *world) yield(a *actor, call string) error {
	w.mu.Lock()
	tk, crashed := a.task, a.crashed
	w.mu.Unlock()
	if crashed {
		return errCrashed
	}
	tk.calls <- call
	if !<-tk.grants {
		return errCrashed
	}
	return nil
}

// over says whether e can no longer act: see the invariants.
func (w *world) over(e *execution) bool {
	switch {
	case e.reported:
		return true
	case w.fl == cloudMode:
		return e.ended && w.now.Sub(e.endedAt) > lambdaLimit
	}
	return e.actor.crashed
}

// alive says whether tk may still act.
func (w *world) alive(tk *task) bool {
	if tk.actor.crashed || tk.actor.task != tk {
		return false
	}
	return w.fl == localMode || w.now.Sub(tk.start) <= lambdaLimit
}

// checkOneRunning: at most one execution of the export is not over.
func (w *world) checkOneRunning() {
	w.mu.Lock()
	defer w.mu.Unlock()
	var going []string
	for _, e := range w.execs {
		if !w.over(e) {
			going = append(going, e.name+" ("+e.file.name+")")
		}
	}
	if len(going) > 1 {
		w.violate("ONE RUN AT A TIME: executions %s are all going at once", strings.Join(going, ", "))
	}
}

// started records an execution that Step Functions (or the local runner)
// starts, and checks the invariants of starting one. It reports false for
// a name already started.
func (w *world) started(a *actor, name string, input []byte) (*execution, bool, error) {
	var ex run.Execution
	if err := json.Unmarshal(input, &ex); err != nil {
		return nil, false, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	dup := a.ran[name]
	for _, e := range w.execs {
		dup = dup || w.fl == cloudMode && e.name == name
	}
	if dup {
		return nil, false, nil
	}
	a.ran[name] = true
	var f *file
	for _, c := range w.files {
		if c.runID == ex.RunID {
			f = c
		}
	}
	if f == nil {
		return nil, false, fmt.Errorf("model: execution %s of unknown run %s", name, ex.RunID)
	}
	e := &execution{name: name, file: f, actor: a}
	for _, o := range w.execs {
		if !w.over(o) {
			w.violate("ONE RUN AT A TIME: execution %s (%s, drainer %d) starts while execution %s (%s, drainer %d) is not over",
				name, f.name, a.id, o.name, o.file.name, o.actor.id)
		}
		if o.file.arrived.After(f.arrived) {
			w.violate("ARRIVAL ORDER: %s (arrived %s) starts after %s (arrived %s) started", f.name, f.arrived.Format("15:04"), o.file.name, o.file.arrived.Format("15:04"))
		}
	}
	w.execs = append(w.execs, e)
	w.seen["execution"]++
	w.logf("execution %s of %s starts", name, f.name)
	return e, true, nil
}

// modelLock is lock.json as the model reads it.
type modelLock struct {
	Holder    string    `json:"holder"`
	Execution string    `json:"execution"`
	Owner     string    `json:"owner"`
	Since     time.Time `json:"since"`
	Latest    *struct {
		Source  run.Source `json:"source"`
		Arrived time.Time  `json:"arrived"`
	} `json:"latest"`
}

func (w *world) readLock() (modelLock, bool, error) {
	var l modelLock
	b, found, err := w.readLockRaw()
	if err != nil || !found {
		return l, found, err
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return l, true, fmt.Errorf("decoding lock.json: %w", err)
	}
	return l, true, nil
}

func (w *world) readLockRaw() ([]byte, bool, error) {
	rc, _, err := w.raw.Get(context.Background(), "state/vip/lock.json")
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return b, true, err
}

// lockWritten checks a successful write of lock.json by tk over prevRaw.
func (w *world) lockWritten(tk *task, prevRaw []byte, found bool, next []byte) {
	var prev, l modelLock
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := errors.Join(json.Unmarshal(next, &l), func() error {
		if found {
			return json.Unmarshal(prevRaw, &prev)
		}
		return nil
	}()); err != nil {
		w.violate("lock.json undecodable: %v", err)
		return
	}
	w.logf("  lock: %s", describeLock(l))
	writer := w.writers[string(prevRaw)]
	w.writers[string(next)] = tk
	if l.Latest != nil && l.Holder != "" && !strings.HasPrefix(l.Holder, "drainer:") && (!found || prev.Holder != l.Holder) {
		w.handed[l.Latest.Source.Key] = append(w.handed[l.Latest.Source.Key], tk)
	}
	if found && prev.Latest != nil && (l.Latest == nil || l.Latest.Arrived.Before(prev.Latest.Arrived)) {
		w.violate("ARRIVAL ORDER: the lock's newest started file went back from %s to %s", prev.Latest.Source.Key, describeLock(l))
	}
	if !found || prev.Holder == "" || writer == tk {
		return
	}
	if tk.exec != nil && prev.Holder == tk.exec.file.runID && prev.Execution == tk.exec.name {
		return // the run's own finalize releases
	}
	var e *execution
	for _, c := range w.execs {
		if c.name == prev.Execution {
			e = c
		}
	}
	switch {
	case e != nil && !w.over(e):
		w.violate("LIVE HOLDER OVERWRITTEN: drainer %d (%s) wrote %s over the lock of execution %s, which is not over",
			tk.actor.id, tk.what, describeLock(l), e.name)
	case e == nil && writer != nil && w.alive(writer):
		w.violate("LIVE HOLDER OVERWRITTEN: drainer %d (%s) wrote %s over %s, written by drainer %d (%s), which is alive",
			tk.actor.id, tk.what, describeLock(l), describeLock(prev), writer.actor.id, writer.what)
	case strings.HasPrefix(prev.Holder, "drainer:"):
		w.seen["takeover of a dead drainer"]++
	case e == nil:
		w.seen["takeover of a run never started"]++
	default:
		w.seen["takeover of a dead run"]++
	}
}

// reportWritten checks a successful write of a run's report by tk.
func (w *world) reportWritten(tk *task, body []byte) {
	var rep run.Report
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := json.Unmarshal(body, &rep); err != nil {
		w.violate("report undecodable: %v", err)
		return
	}
	w.logf("  report of %s: %s", rep.Source.Key, rep.Status)
	switch {
	case strings.Contains(rep.Message, "ended before the run finished"):
		w.seen["killed-run report"]++
	case rep.Status == run.StatusSuperseded:
		w.seen["superseded"]++
		for _, f := range w.files {
			if f.arrived.After(fileOf(w.files, rep.Source.Key).arrived) && len(w.handed[f.key]) > 0 {
				return
			}
		}
		w.violate("ARRIVAL ORDER: %s is superseded, but no newer file was handed the lock", rep.Source.Key)
	case tk.exec != nil && tk.exec.file.runID == rep.RunID && !strings.Contains(rep.Message, "ended before the run finished"):
		tk.exec.reported = true // its finalize's report, not one written for it when it was taken over
	}
}

func fileOf(files []*file, key string) *file {
	for _, f := range files {
		if f.key == key {
			return f
		}
	}
	return &file{}
}

func describeLock(l modelLock) string {
	s := "free"
	if l.Holder != "" {
		s = "held by " + l.Holder
		if l.Execution != "" && l.Execution != l.Holder {
			s += " (execution " + l.Execution + ")"
		}
	}
	if l.Latest != nil {
		s += ", newest started " + l.Latest.Source.Key
	}
	return s
}

func (w *world) describeBucket() string {
	l, found, err := w.readLock()
	if err != nil {
		return err.Error()
	}
	lock := "no lock"
	if found {
		lock = "lock " + describeLock(l) + " since " + l.Since.Format("15:04:05")
	}
	queued, err := w.raw.List(context.Background(), "state/vip/queue/")
	if err != nil {
		return err.Error()
	}
	var keys []string
	for _, o := range queued {
		keys = append(keys, strings.TrimPrefix(o.Key, "state/vip/queue/"))
	}
	return fmt.Sprintf("%s; queued %v", lock, keys)
}

// fail records a broken invariant.
func (w *world) fail(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.violate(format, args...)
}

// violate records a broken invariant; w.mu is held.
func (w *world) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	w.violations = append(w.violations, msg)
	w.steps = append(w.steps, "!! "+msg)
}

func (w *world) ok() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.violations) == 0
}

// logf records a step; w.mu is held.
func (w *world) logf(format string, args ...any) {
	w.steps = append(w.steps, fmt.Sprintf("%4d %s  ", len(w.steps), w.now.Format("15:04:05"))+fmt.Sprintf(format, args...))
}

func (w *world) lastSteps(n int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.steps[max(0, len(w.steps)-n):], "\n")
}

// modelStore is the store as one actor sees it: each call is a step.
type modelStore struct {
	w *world
	a *actor
}

// before waits for the call's turn. A run's plan files are written in
// parallel (and rejected.csv's input read beside its write): those are no
// step of their own, so the schedule stays deterministic.
func (m modelStore) before(op, key string) error {
	if strings.HasPrefix(key, "runs/") && (strings.HasSuffix(key, "/batches.jsonl") ||
		strings.HasSuffix(key, "/snapshot") || strings.HasSuffix(key, "/input-rejected.csv")) {
		m.w.mu.Lock()
		defer m.w.mu.Unlock()
		if m.a.crashed {
			return errCrashed
		}
		return nil
	}
	return m.w.yield(m.a, op+" "+key)
}

func (m modelStore) Get(ctx context.Context, key string) (io.ReadCloser, store.ObjectInfo, error) {
	if err := m.before("Get", key); err != nil {
		return nil, store.ObjectInfo{}, err
	}
	return m.w.raw.Get(ctx, key)
}

func (m modelStore) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := m.before("GetRange", key); err != nil {
		return nil, err
	}
	return m.w.raw.GetRange(ctx, key, offset, length)
}

func (m modelStore) Head(ctx context.Context, key string) (store.ObjectInfo, error) {
	if err := m.before("Head", key); err != nil {
		return store.ObjectInfo{}, err
	}
	return m.w.raw.Head(ctx, key)
}

func (m modelStore) List(ctx context.Context, prefix string) ([]store.ObjectInfo, error) {
	if err := m.before("List", prefix); err != nil {
		return nil, err
	}
	return m.w.raw.List(ctx, prefix)
}

func (m modelStore) Delete(ctx context.Context, key string) error {
	if err := m.before("Delete", key); err != nil {
		return err
	}
	return m.w.raw.Delete(ctx, key)
}

func (m modelStore) Put(ctx context.Context, key string, body io.Reader, opts store.PutOptions) (store.ObjectInfo, error) {
	op := "Put"
	switch {
	case opts.IfNoneMatch:
		op += " (if none)"
	case opts.IfMatch != "":
		op += " (if match)"
	}
	if err := m.before(op, key); err != nil {
		return store.ObjectInfo{}, err
	}
	lock := key == "state/vip/lock.json"
	report := strings.HasPrefix(key, "runs/") && strings.HasSuffix(key, "/report.json")
	queued := strings.HasPrefix(key, "state/vip/queue/")
	if !lock && !report && !queued {
		return m.w.raw.Put(ctx, key, body, opts)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return store.ObjectInfo{}, err
	}
	var prev []byte
	found := false
	if lock {
		// No other call runs now: what is there is what this write replaces.
		if prev, found, err = m.w.readLockRaw(); err != nil {
			return store.ObjectInfo{}, err
		}
	}
	info, err := m.w.raw.Put(ctx, key, bytes.NewReader(b), opts)
	if err != nil {
		return info, err
	}
	m.w.mu.Lock()
	tk := m.a.task
	m.w.mu.Unlock()
	switch {
	case lock:
		m.w.lockWritten(tk, prev, found, b)
	case report:
		m.w.reportWritten(tk, b)
	case queued:
		var q struct {
			Source run.Source `json:"source"`
		}
		if err := json.Unmarshal(b, &q); err != nil {
			return info, err
		}
		m.w.mu.Lock()
		fileOf(m.w.files, q.Source.Key).enqueued = true
		m.w.mu.Unlock()
	}
	return info, nil
}

// cloudStarter is Step Functions: an execution runs until the scheduler
// finalizes or stops it.
type cloudStarter struct {
	w *world
	a *actor
}

func (s cloudStarter) StartRun(_ context.Context, name string, input []byte) (bool, error) {
	if err := s.w.yield(s.a, "StartExecution "+name); err != nil {
		return false, err
	}
	_, started, err := s.w.started(s.a, name, input)
	return started, err
}

func (s cloudStarter) RunStatus(_ context.Context, name string) (run.RunStatus, error) {
	if err := s.w.yield(s.a, "DescribeExecution "+name); err != nil {
		return run.RunStatus{}, err
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	for _, e := range s.w.execs {
		if e.name == name {
			if e.ended {
				return run.RunStatus{State: run.RunEnded, EndedAt: e.endedAt}, nil
			}
			return run.RunStatus{State: run.RunActive}, nil
		}
	}
	return run.RunStatus{State: run.RunNotStarted}, nil
}

// localStarter is the local runner: the run executes inside StartRun, its
// finalize in the same process.
type localStarter struct {
	w *world
	a *actor
}

func (s localStarter) StartRun(ctx context.Context, name string, input []byte) (bool, error) {
	if err := s.w.yield(s.a, "StartRun "+name); err != nil {
		return false, err
	}
	e, started, err := s.w.started(s.a, name, input)
	if !started || err != nil {
		return started, err
	}
	// Its batches: others go on meanwhile, and this process may die here.
	if err := s.w.yield(s.a, "run "+name+" sends its batches"); err != nil {
		return true, err
	}
	s.w.mu.Lock()
	tk := s.a.task
	outer := tk.exec
	tk.exec = e
	s.w.mu.Unlock()
	_, err = s.a.svc.Finalize(ctx, run.FinalizeInput{Export: modelExport, RunID: e.file.runID})
	s.w.mu.Lock()
	tk.exec = outer
	s.w.mu.Unlock()
	return true, err
}

// processes is run.Processes in local mode: a crashed process is dead.
type processes struct {
	w *world
	a *actor
}

func (p processes) Self() string { return p.a.pid }

func (p processes) Alive(owner string) (bool, error) {
	p.w.mu.Lock()
	defer p.w.mu.Unlock()
	for _, a := range p.w.actors {
		if a.pid == owner {
			return !a.crashed, nil
		}
	}
	return false, nil
}

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
	"slices"
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
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

// TestLifecycleModel is a model check of the life of a run (drain.go,
// finalize.go, sync.go; docs/design.md "The life of a run"): every way a
// delivery, an attempt, its groups and its finalize can interleave, crash
// or lose an answer, over one bucket: the Folder, or s3store with the real
// SDK on gofakes3 or on moto_server.
//
// Each seed plays two exports reading one segment (one in mirror mode, one
// in upsert mode) and a few files of up to 260 contacts, delivered in
// random order, some twice (S3 delivers at least once, and out of order).
// Every store call, every call to Step Functions (StartExecution,
// DescribeExecution) and every call to the destination is a step: a
// scheduler driven by the seed picks which waiting call goes next, so a
// seed replays the same interleaving. At a step the caller may crash (its
// Lambda invocation, or locally its whole process, dies there; a crashed
// attempt is often crashed again on its next try, so kills come in a row)
// or, for a write, a start or a send, the call may be applied and its
// answer lost (the caller sees a timeout). Time is a fake clock the
// scheduler moves. In the cloud flavour an execution's groups and its
// finalize are Lambda invocations Step Functions retries (three tries),
// an execution may be stopped by hand, and an invocation dies 15 minutes
// in; locally they run in the process that started the execution, which
// may die, and the CLI's waiting loop drains.
//
// Checked at every step, from what happened rather than from the code:
//
//   - ONE AT A TIME: an execution starts only when every other execution of
//     its export is over (finalized, or its finalize's swap freed the export
//     though its answer was lost: a finalize of it again then writes no
//     state; in the cloud, or ended more than Lambda's limit ago; locally,
//     or its process dead), and a destination call of an older attempt
//     never follows one of a newer attempt of the same export.
//   - ONE REPORT: an attempt's report is written create-only, once.
//   - SETTLED STAYS SETTLED: a contact whose batch result was written while
//     its attempt was open is never sent again with the same content (only
//     what was in flight when an attempt ended may be: the resume window).
//   - ARRIVAL ORDER: no execution starts for a file that arrived before the
//     file of an execution of the same export already started.
//
// Then the crashes stop and rounds follow (time moves past every grace,
// pending invocations run, events that died are delivered again, the
// schedule refreshes every export) until every export is idle. Then:
// NOTHING WEDGES (idle within a few rounds: no attempt holds an export, the
// queues are empty), EVERY ATTEMPT ONE REPORT (every attempt record has
// its report), EVERY FILE ENDS (each delivered file's run has a final
// outcome: succeeded, superseded, held or failed with a reason; the newest
// file succeeded) and THE DESTINATION IS EXACT (the mirror export's list
// is the newest file's contacts, the upsert export's holds them, each with
// the newest file's content).
//
// SEGPILOT_MODEL_SEEDS=N plays N seeds per store (a soak);
// SEGPILOT_MODEL_SEED=S replays seed S, as a failure prints, and
// SEGPILOT_MODEL_TRACE=1 logs every step of every seed.
func TestLifecycleModel(t *testing.T) {
	t.Parallel()
	backends := []struct {
		name     string
		first, n uint64
		kept     []uint64 // seeds a soak found a violation in, played every time
		flavours []flavour
		open     func(t *testing.T) func(t *testing.T, seed uint64) store.ObjectStore
	}{
		// 416: a finalize's swap freeing the export lost its answer, and a
		// drain started the next file's execution before the finalize ran
		// again (and changed nothing): the model took that for two
		// executions at a time until it knew a freed export's execution as over.
		{"folder", 1, 24, []uint64{416}, []flavour{cloudMode, localMode}, openFolder},
		{"gofakes3", 1001, 16, nil, []flavour{cloudMode}, func(t *testing.T) func(*testing.T, uint64) store.ObjectStore {
			srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
			t.Cleanup(srv.Close)
			return openS3(srv.URL)
		}},
		{"moto", 2001, 4, nil, []flavour{cloudMode}, func(t *testing.T) func(*testing.T, uint64) store.ObjectStore {
			return openS3(testutil.Moto(t))
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fresh := b.open(t)
			seeds := modelSeeds(t, b.first, b.n, b.kept)
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
						t.Fatalf("seed %d (%s, %s flavour): %s\nreplay: SEGPILOT_MODEL_SEED=%d go test -race -run 'TestLifecycleModel/%s' ./shared/run/\nsteps (latest last):\n%s",
							seed, b.name, fl, strings.Join(w.violations, "\n"), seed, b.name, w.lastSteps(150))
					}
				}
			}
			t.Logf("%d seeds from %d: %v", len(seeds), seeds[0], seen)
			if len(seeds) < 16 {
				return // too few to expect every event
			}
			// A model check that never saw these would pass without testing much.
			for _, fl := range b.flavours {
				events := []string{"crash", "crash in a row", "lost answer", "execution", "superseded", "closed by a drainer",
					"settled contact", "resend in the window", "Map failed"}
				if fl == cloudMode {
					events = append(events, "stop by hand", "ambiguous start", "start finished by a drainer")
				} else {
					events = append(events, "freed, answer lost") // seed 416's
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

// modelSeeds returns first, first+1, … : n of them, then the kept ones;
// or as the environment says.
func modelSeeds(t *testing.T, first, n uint64, kept []uint64) []uint64 {
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
	return append(seeds, kept...)
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
	cloudMode flavour = "cloud" // Lambda and Step Functions
	localMode flavour = "local" // processes on one host sharing a bucket folder
)

// lambdaLimit is how long any Lambda invocation may run.
const lambdaLimit = 15 * time.Minute

// callTime is how long each step takes.
const callTime = 10 * time.Millisecond

// tries is how often Step Functions (or the local runner) tries a group
// or a finalize before giving up on it.
const tries = 3

var (
	errCrashed = errors.New("model: this invocation or process crashed here")
	errLost    = errors.New("model: the answer was lost (a timeout)")
)

const modelConfig = `connections:
  main:
    kind: autopilot
    apiKeySecret: segpilot/autopilot
    baseURL: https://api2.autopilothq.com/v1
    consent: true
    requestsPerSecond: 1 # two workers: groups of two batches, retried as one
exports:
  mirrored:
    connection: main
    segment: vip
    list: Mirrored
    match:
      email: Email
      firstName: First
    mode: mirror
    allowLargeRemoval: true
  upserted:
    connection: main
    segment: vip
    list: Upserted
    match:
      email: Email
      firstName: First
    mode: upsert
`

var modelExports = []string{"mirrored", "upserted"}

// world is one seed's bucket, invocations, executions, destination and
// clock. The scheduler (the test goroutine) and the one task it lets run
// share it under mu.
type world struct {
	t       *testing.T
	seed    uint64
	fl      flavour
	rng     *rand.Rand
	raw     store.ObjectStore
	tempDir string
	cfg     *config.Config
	crashP  float64
	lostP   float64
	refuseP float64 // how often the key starts (or stops) being refused
	stuck   bool    // a task stopped answering: leave it be

	mu         sync.Mutex
	now        time.Time
	procs      []*process // local: the processes; cloud: one per invocation
	tasks      []*task    // started and not ended, in start order
	execs      []*execution
	files      []*file
	kicks      []string                     // cloud: kicks/<export> written, their events not yet delivered
	retry      []*file                      // deliveries whose invocation died: Lambda delivers them again
	lastKilled map[string]bool              // attempts whose last try crashed (kills come in a row)
	claimedBy  map[string]*task             // execution name -> the task whose claim named it
	reports    map[string]string            // attempt report key -> what was written first
	dest       map[string]map[string]string // export -> email -> content the destination holds
	members    map[string]map[string]bool   // export -> emails on its list
	settled    map[string]string            // export+email -> content settled (a result written while its attempt was open)
	sentBy     map[string]int64             // export -> the newest attempt that called the destination
	refused    bool                         // the destination refuses the key now
	violations []string
	steps      []string
	seen       map[string]int // events, to show the schedule reaches them
}

// file is one segment file; both exports read it.
type file struct {
	name     string
	key      string
	etag     string
	arrived  time.Time
	contacts map[string]string // email -> first name
	runs     map[string]string // export -> run id
}

// execution is one Step Functions execution (or local run): an attempt.
type execution struct {
	name      string
	export    string
	input     run.Execution
	file      *file
	proc      *process // local: the process running it
	groups    []*group
	finTries  int
	mapFailed bool // a child failed the Map (the key refused): its finalize runs now
	finalized bool // its finalize returned
	// released: its finalize's swap freed the export (its answer maybe
	// lost). All that is left of it is its finalize again, which finds
	// the claim gone and changes nothing: it is over, as for a drainer.
	released bool
	ended    bool // cloud: stopped, failed or finished; local: its runner closed it
	endedAt  time.Time
	running  *task // its finalize in flight
}

// group is one Map child: consecutive items of the plan.
type group struct {
	items []run.Item
	tries int
	done  bool
	task  *task
}

// process is a local process, or in the cloud one Lambda invocation's
// container (a crash kills only it).
type process struct {
	id      int
	pid     string
	crashed bool
}

// task is one invocation: a delivered event, a kick, a group, a finalize.
type task struct {
	what   string
	proc   *process
	start  time.Time
	exec   *execution // the execution it works for (group, finalize)
	grp    *group
	err    error
	lost   bool        // a call's answer was lost: its error is expected
	calls  chan string // the call it waits to make; "" when it has returned
	grants chan grant
	parked string
}

type grant int

const (
	proceed grant = iota
	crash
	loseAnswer
)

func newWorld(t *testing.T, fl flavour, seed uint64, raw store.ObjectStore) *world {
	t.Helper()
	w := &world{t: t, seed: seed, fl: fl, raw: raw, tempDir: t.TempDir(),
		rng:        rand.New(rand.NewPCG(seed, 0)),
		now:        time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC),
		lastKilled: map[string]bool{}, claimedBy: map[string]*task{}, reports: map[string]string{}, settled: map[string]string{}, sentBy: map[string]int64{},
		dest: map[string]map[string]string{}, members: map[string]map[string]bool{}, seen: map[string]int{}}
	w.crashP = []float64{0, 0.01, 0.02, 0.04}[w.rng.IntN(4)]
	w.lostP = []float64{0, 0.01, 0.03}[w.rng.IntN(3)]
	w.refuseP = []float64{0, 0, 0.3}[w.rng.IntN(3)]
	ctx := context.Background()
	if _, err := raw.Put(ctx, run.ConfigKey, strings.NewReader(modelConfig), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(run.ConfigKey, []byte(modelConfig))
	if err != nil {
		t.Fatal(err)
	}
	w.cfg = cfg
	for _, e := range modelExports {
		w.dest[e], w.members[e] = map[string]string{}, map[string]bool{}
	}
	n := 2 + w.rng.IntN(3)
	for i := range n {
		f := &file{name: fmt.Sprintf("f%d.csv", i), arrived: w.now.Add(time.Duration(i-n) * time.Minute),
			contacts: map[string]string{}, runs: map[string]string{}}
		f.key = "segments/vip/" + f.name
		// Overlapping people: some stay, some change their name, some leave, some join.
		first := w.rng.IntN(40)
		count := 1 + w.rng.IntN(260)
		var b strings.Builder
		b.WriteString("Email,First\n")
		for p := first; p < first+count; p++ {
			email := fmt.Sprintf("p%03d@example.com", p)
			name := fmt.Sprintf("N%d", p%7)
			if w.rng.IntN(5) == 0 {
				name = fmt.Sprintf("M%d-%d", i, p%3)
			}
			f.contacts[email] = name
			fmt.Fprintf(&b, "%s,%s\n", email, name)
		}
		info, err := raw.Put(ctx, f.key, strings.NewReader(b.String()), store.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f.etag = info.ETag
		for _, e := range modelExports {
			f.runs[e] = run.RunID(e, run.Source{Key: f.key, ETag: f.etag}, cfg.Version)
		}
		w.files = append(w.files, f)
	}
	return w
}

// play runs the seed: random steps, then the settling rounds.
func (w *world) play() {
	defer w.shutdown()
	deliveries := slices.Clone(w.files)
	for range 1 + w.rng.IntN(len(w.files)) {
		deliveries = append(deliveries, w.files[w.rng.IntN(len(w.files))]) // at least once
	}
	w.rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
	w.logf("seed %d: %d files, %d deliveries, crash chance %.2f, lost answers %.2f per step",
		w.seed, len(w.files), len(deliveries), w.crashP, w.lostP)

	for step := 0; step < 600 && w.ok(); step++ {
		type action struct {
			weight float64
			do     func()
		}
		var actions []action
		for _, tk := range w.tasks {
			actions = append(actions, action{6, func() { w.grant(tk, w.pickGrant(tk)) }})
		}
		if len(deliveries) > 0 {
			actions = append(actions, action{2, func() {
				f := deliveries[0]
				deliveries = deliveries[1:]
				w.deliver(w.process(), f)
			}})
		}
		if len(w.retry) > 0 {
			actions = append(actions, action{0.5, func() {
				f := w.retry[0]
				w.retry = w.retry[1:]
				w.deliver(w.process(), f)
			}})
		}
		if step < 200 {
			actions = append(actions, action{0.3, func() { w.deliver(w.process(), w.files[w.rng.IntN(len(w.files))]) }})
		}
		if w.fl == cloudMode && len(w.kicks) > 0 {
			actions = append(actions, action{2, func() {
				e := w.kicks[0]
				w.kicks = w.kicks[1:]
				w.kick(w.process(), e)
			}})
		}
		if w.fl == localMode {
			// The CLI's waiting loop (Await) drains an export now and then.
			actions = append(actions, action{1, func() { w.kick(w.process(), modelExports[w.rng.IntN(2)]) }})
		}
		for _, e := range w.execs {
			w.pending(e, func(do func()) { actions = append(actions, action{3, do}) })
			if w.fl == cloudMode && !e.ended {
				actions = append(actions, action{0.2, func() { w.stop(e) }}) // its invocations in flight go on
			}
		}
		if len(actions) == 0 && len(deliveries) == 0 {
			break
		}
		if w.refuseP > 0 {
			actions = append(actions, action{w.refuseP, func() {
				w.mu.Lock()
				defer w.mu.Unlock()
				w.refused = !w.refused
				w.logf("the destination refuses the key: %v", w.refused)
			}})
		}
		actions = append(actions,
			action{1, func() { w.advance(time.Duration(1+w.rng.IntN(120)) * time.Second) }},
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
	}
	if w.ok() {
		w.settle()
	}
}

// pickGrant decides what becomes of tk's call: mostly it goes ahead; an
// attempt whose last try was killed is likely killed again.
func (w *world) pickGrant(tk *task) grant {
	p := w.crashP
	if tk.exec != nil && w.lastKilled[tk.exec.name] && p > 0 {
		p = 0.2
	}
	lost := w.lostP
	if lost > 0 && strings.HasPrefix(tk.parked, "StartExecution") {
		lost = 0.2 // the answer that decides whether a run starts twice
	}
	switch r := w.rng.Float64(); {
	case r < p:
		return crash
	case r < p+lost && lossy(tk.parked) && (w.fl == cloudMode || !strings.HasPrefix(tk.parked, "StartExecution")):
		return loseAnswer
	}
	return proceed
}

// lossy: a call whose answer may be lost after it was applied.
func lossy(call string) bool {
	return strings.HasPrefix(call, "Put") || strings.HasPrefix(call, "StartExecution") || strings.HasPrefix(call, "Upsert") ||
		strings.HasPrefix(call, "Remove")
}

// pending offers the invocations execution e is owed: its groups while
// any is not done, then its finalize.
func (w *world) pending(e *execution, offer func(func())) {
	if e.finalized || e.ended && w.fl == cloudMode || w.fl == localMode && (e.proc.crashed || e.ended) {
		return
	}
	open := false
	for _, g := range e.groups {
		if g.done || e.mapFailed {
			continue
		}
		open = true
		if g.task == nil {
			offer(func() { w.runGroup(e, g) })
		}
	}
	if !open && e.running == nil {
		offer(func() { w.finalize(e) })
	}
}

// settle stops the faults and lets time pass until every export is idle.
func (w *world) settle() {
	w.crashP, w.lostP = 0, 0
	w.mu.Lock()
	w.refused = false
	w.mu.Unlock()
	w.logf("settling: no more faults; 30 minutes at a time")
	w.finishTasks()
	for round := 0; w.ok(); round++ {
		if round > len(w.files)+4 {
			w.fail("NOTHING WEDGES: not idle after %d rounds of 30 minutes, running every invocation owed and refreshing every export: %s",
				round, w.describeBucket())
			return
		}
		w.advance(30 * time.Minute)
		w.runOwed()
		for len(w.retry) > 0 {
			f := w.retry[0]
			w.retry = w.retry[1:]
			w.deliver(w.process(), f)
			w.finishTasks()
		}
		w.deliver(w.process(), w.files[len(w.files)-1]) // the schedule: the newest file, for every export
		w.finishTasks()
		for _, e := range modelExports {
			w.kick(w.process(), e)
			w.finishTasks()
		}
		w.runOwed()
		if w.idle() {
			break
		}
	}
	if w.ok() {
		w.checkEnd()
	}
}

// runOwed runs every invocation executions are owed, and the kicks.
func (w *world) runOwed() {
	for w.ok() {
		var next func()
		for _, e := range w.execs {
			w.pending(e, func(do func()) {
				if next == nil {
					next = do
				}
			})
		}
		if next == nil && len(w.kicks) > 0 {
			e := w.kicks[0]
			w.kicks = w.kicks[1:]
			next = func() { w.kick(w.process(), e) }
		}
		if next == nil {
			return
		}
		next()
		w.finishTasks()
	}
}

// finishTasks lets every task in flight run to its end.
func (w *world) finishTasks() {
	for len(w.tasks) > 0 && w.ok() {
		w.grant(w.tasks[0], proceed)
	}
}

// idle: no attempt holds an export, and the queues are empty.
func (w *world) idle() bool {
	for _, e := range modelExports {
		st := w.state(e)
		if st.Holder != nil {
			return false
		}
		queued, err := w.raw.List(context.Background(), "state/"+e+"/queue/")
		if err != nil {
			w.t.Fatal(err)
		}
		if len(queued) > 0 {
			return false
		}
	}
	return true
}

// checkEnd checks the invariants of an idle world.
func (w *world) checkEnd() {
	ctx := context.Background()
	newest := w.files[len(w.files)-1]
	for _, export := range modelExports {
		// EVERY ATTEMPT ONE REPORT
		objs, err := w.raw.List(ctx, "runs/"+export+"/")
		if err != nil {
			w.t.Fatal(err)
		}
		var keys []string
		for _, o := range objs {
			keys = append(keys, o.Key)
		}
		for _, k := range keys {
			if strings.HasSuffix(k, "/attempt.json") && !slices.Contains(keys, strings.TrimSuffix(k, "attempt.json")+"report.json") {
				w.fail("EVERY ATTEMPT ONE REPORT: %s has no report", strings.TrimSuffix(k, "/attempt.json"))
			}
		}
		// EVERY FILE ENDS
		for _, f := range w.files {
			rep, err := run.ReadReport(ctx, w.raw, export, f.runs[export])
			if err != nil {
				w.fail("EVERY FILE ENDS: %s's run of %s has no report (%v): %s", export, f.name, err, w.describeBucket())
				continue
			}
			switch {
			case f == newest && rep.Status != run.StatusSucceeded:
				w.fail("EVERY FILE ENDS: the newest file %s ends %s for %s (%s), want succeeded", f.name, rep.Status, export, rep.Message)
			case !slices.Contains([]string{run.StatusSucceeded, run.StatusSuperseded, run.StatusHeld, run.StatusFailed}, rep.Status):
				w.fail("EVERY FILE ENDS: %s ends %s for %s (%s)", f.name, rep.Status, export, rep.Message)
			case rep.Status != run.StatusSucceeded && rep.Message == "":
				w.fail("EVERY FILE ENDS: %s ends %s for %s with no reason", f.name, rep.Status, export)
			}
			if rep.Status == run.StatusSuperseded {
				w.seen["superseded"]++
			}
		}
		// THE DESTINATION IS EXACT
		w.mu.Lock()
		for email, name := range newest.contacts {
			if got := w.dest[export][email]; got != name || !w.members[export][email] {
				w.violate("THE DESTINATION IS EXACT: %s holds %s as %q (on the list: %v), want %q from %s",
					export, email, got, w.members[export][email], name, newest.name)
			}
		}
		if export == "mirrored" {
			for email := range w.members[export] {
				if _, ok := newest.contacts[email]; !ok {
					w.violate("THE DESTINATION IS EXACT: %s is still on mirrored's list, but not in %s", email, newest.name)
				}
			}
		}
		w.mu.Unlock()
	}
}

// process is a process for a new invocation: a fresh container in the
// cloud; locally one of up to three live processes.
func (w *world) process() *process {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fl == localMode {
		var live []*process
		for _, p := range w.procs {
			if !p.crashed {
				live = append(live, p)
			}
		}
		if len(live) >= 3 || len(live) > 0 && w.rng.IntN(2) == 0 {
			return live[w.rng.IntN(len(live))]
		}
	}
	p := &process{id: len(w.procs) + 1}
	p.pid = fmt.Sprintf("pid=%d", 1000+p.id)
	w.procs = append(w.procs, p)
	return p
}

// service is the run.Service a task uses: every call through it is a step.
func (w *world) service(tk *task) *run.Service {
	svc := &run.Service{Store: modelStore{w: w, tk: tk}, TempDir: w.tempDir, Now: w.clock, Owner: tk.proc.pid,
		Starter: modelStarter{w: w, tk: tk}, Liveness: modelLiveness{w: w, tk: tk}, Kicker: modelKicker{w: w},
		Transient: func(err error) bool { return errors.Is(err, errLost) },
		Connect: func(context.Context, config.Connection, run.Share) (run.Destination, error) {
			return modelDest{w: w, tk: tk}, nil
		}}
	if w.fl == cloudMode {
		svc.EndedGrace = lambdaLimit + time.Minute
	}
	return svc
}

// deliver starts the S3 event of f on p (both exports read it).
func (w *world) deliver(p *process, f *file) {
	w.spawn(p, "deliver "+f.name, nil, nil, func(ctx context.Context, svc *run.Service) error {
		_, err := svc.Start(ctx, run.StartRequest{Trigger: run.TriggerS3, Source: run.Source{Key: f.key, ETag: f.etag}, Arrived: f.arrived})
		return err
	})
}

// kick drains export on p: kicks/<export>'s event (cloud), or the CLI's loop.
func (w *world) kick(p *process, export string) {
	w.spawn(p, "drain "+export, nil, nil, func(ctx context.Context, svc *run.Service) error {
		return svc.Kick(ctx, export)
	})
}

// runGroup starts one try of g, a child of e's Map.
func (w *world) runGroup(e *execution, g *group) {
	p := e.proc
	if w.fl == cloudMode {
		p = w.process()
	}
	g.tries++
	w.spawn(p, fmt.Sprintf("group %d-%d of %s (try %d)", g.items[0].Batch, g.items[len(g.items)-1].Batch, e.name, g.tries), e, g,
		func(ctx context.Context, svc *run.Service) error {
			_, err := svc.SyncBatch(ctx, run.Group{Items: g.items, BatchInput: run.GroupInput{Export: e.export, RunID: e.input.RunID,
				Attempt: e.input.Attempt, Plan: e.input.Plan, ListID: e.input.ListID, WorkerRPS: e.input.WorkerRPS}})
			return err
		})
}

// finalize starts one try of e's finalize.
func (w *world) finalize(e *execution) {
	p := e.proc
	if w.fl == cloudMode {
		p = w.process()
	}
	e.finTries++
	tk := w.spawn(p, fmt.Sprintf("finalize %s (try %d)", e.name, e.finTries), e, nil, func(ctx context.Context, svc *run.Service) error {
		in := run.FinalizeInput{Export: e.export, RunID: e.input.RunID, Attempt: e.input.Attempt,
			Plan: e.input.Plan, StartedAt: e.input.StartedAt}
		if e.mapFailed {
			in.MapError = &run.MapError{Error: "States.ExceedToleratedFailureThreshold", Cause: "a child failed"}
		}
		_, err := svc.Finalize(ctx, in)
		return err
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	if tk.parked != "" {
		e.running = tk
	}
}

// stop is StopExecution: its invocations in flight go on, no other starts.
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

// spawn starts fn as a task on p and waits until it waits on its first
// call (or has returned).
func (w *world) spawn(p *process, what string, e *execution, g *group, fn func(context.Context, *run.Service) error) *task {
	w.mu.Lock()
	tk := &task{what: what, proc: p, start: w.now, exec: e, grp: g, calls: make(chan string), grants: make(chan grant)}
	if g != nil {
		g.task = tk
	}
	w.tasks = append(w.tasks, tk)
	w.logf("process %d starts: %s", p.id, what)
	w.mu.Unlock()
	svc := w.service(tk)
	go func() {
		tk.err = fn(context.Background(), svc)
		tk.calls <- ""
	}()
	w.park(tk)
	return tk
}

// grant lets tk make the call it waits on (or crashes it there, or loses
// the call's answer) and waits until it waits on its next call or returns.
func (w *world) grant(tk *task, g grant) {
	w.mu.Lock()
	w.now = w.now.Add(callTime) // real clocks move on
	if w.fl == cloudMode && w.now.Sub(tk.start) > lambdaLimit {
		g = crash // Lambda ended the invocation at its time limit
		w.seen["Lambda time limit"]++
	}
	if tk.proc.crashed {
		g = crash
	}
	switch g {
	case crash:
		w.seen["crash"]++
		if tk.exec != nil && w.lastKilled[tk.exec.name] {
			w.seen["crash in a row"]++
		}
		if tk.exec != nil {
			w.lastKilled[tk.exec.name] = true
		}
		tk.proc.crashed = true
		w.logf("process %d CRASHES before: %s", tk.proc.id, tk.parked)
	case loseAnswer:
		w.seen["lost answer"]++
		tk.lost = true
		w.logf("process %d: %s (ANSWER LOST)", tk.proc.id, tk.parked)
	default:
		w.logf("process %d: %s", tk.proc.id, tk.parked)
	}
	w.mu.Unlock()
	tk.grants <- g
	w.park(tk)
}

func (w *world) park(tk *task) {
	var call string
	select {
	case call = <-tk.calls:
	case <-time.After(time.Minute):
		w.stuck = true
		w.t.Fatalf("seed %d: process %d (%s) neither made a call nor returned within a minute: it waits on something the model does not schedule\n%s",
			w.seed, tk.proc.id, tk.what, w.lastSteps(40))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if call != "" {
		tk.parked = call
		return
	}
	w.ended(tk)
}

// ended records what tk's end means for its execution; w.mu is held.
func (w *world) ended(tk *task) {
	w.tasks = slices.DeleteFunc(w.tasks, func(o *task) bool { return o == tk })
	w.logf("process %d ends %s: %v", tk.proc.id, tk.what, strings.ReplaceAll(fmt.Sprint(tk.err), "\n", " | "))
	failed := tk.err != nil || tk.proc.crashed
	fenced := errors.As(tk.err, new(*run.Fenced))
	refused := errors.As(tk.err, new(*run.Unauthorized))
	if tk.err != nil && !tk.proc.crashed && !tk.lost && !fenced && !refused {
		w.violate("process %d: %s failed with no fault injected: %v", tk.proc.id, tk.what, tk.err)
	}
	if fenced {
		w.seen["fenced group"]++
	}
	if tk.exec == nil && failed && strings.HasPrefix(tk.what, "deliver ") {
		w.retry = append(w.retry, fileOf(w.files, "segments/vip/"+strings.TrimPrefix(tk.what, "deliver "))) // Lambda retries the event
	}
	if tk.exec == nil && failed && strings.HasPrefix(tk.what, "drain ") && w.fl == cloudMode {
		w.kicks = append(w.kicks, strings.TrimPrefix(tk.what, "drain ")) // Lambda retries the kick's event
	}
	e := tk.exec
	if e == nil {
		return
	}
	if !failed {
		delete(w.lastKilled, e.name)
	}
	if g := tk.grp; g != nil {
		g.task = nil
		if refused && !tk.proc.crashed {
			e.mapFailed = true // StopRun: the Map fails at once
			w.seen["Map failed"]++
		}
		if !failed || fenced || refused || g.tries >= tries {
			g.done = true // settled, or recorded failed (RecordFailedBatch)
		}
		return
	}
	e.running = nil
	switch {
	case !failed:
		e.finalized = true
		if !e.ended {
			e.ended, e.endedAt = true, w.now
		}
	case e.finTries >= tries && !e.ended:
		// Step Functions gave up retrying finalize: the execution failed.
		e.ended, e.endedAt = true, w.now
		w.logf("execution %s failed: its finalize died %d times", e.name, tries)
	}
}

// shutdown crashes whatever still waits (after a violation), so no
// goroutine outlives the seed.
func (w *world) shutdown() {
	for len(w.tasks) > 0 && !w.stuck {
		w.grant(w.tasks[0], crash)
	}
}

// yield is a step: the task waits until the scheduler lets it make the
// call; it reports whether the call's answer is to be lost.
func (w *world) yield(tk *task, call string) (bool, error) {
	w.mu.Lock()
	crashed := tk.proc.crashed
	w.mu.Unlock()
	if crashed {
		return false, errCrashed
	}
	tk.calls <- call
	switch <-tk.grants {
	case crash:
		return false, errCrashed
	case loseAnswer:
		return true, nil
	}
	return false, nil
}

// over says whether e can no longer act: finalized or ended, with none of
// its invocations in flight (locally: or its process dead); w.mu is held.
func (w *world) over(e *execution) bool {
	if w.fl == localMode && e.proc.crashed {
		return true
	}
	if e.released {
		return true
	}
	if !e.finalized && !e.ended {
		return false
	}
	for _, tk := range w.tasks {
		if tk.exec == e && !tk.proc.crashed {
			return false
		}
	}
	return true
}

// started records an execution Step Functions (or the local runner)
// starts, and checks the invariants of starting one; w.mu is held.
func (w *world) started(tk *task, name string, input []byte) error {
	var in run.Execution
	if err := json.Unmarshal(input, &in); err != nil {
		return err
	}
	var f *file
	for _, c := range w.files {
		if c.runs[in.Export] == in.RunID {
			f = c
		}
	}
	if f == nil {
		return fmt.Errorf("model: execution %s of unknown run %s", name, in.RunID)
	}
	e := &execution{name: name, export: in.Export, input: in, file: f, proc: tk.proc}
	for _, o := range w.execs {
		if o.export != e.export {
			continue
		}
		if !w.over(o) {
			w.violate("ONE AT A TIME: execution %s (%s) starts while execution %s (%s) of the same export is not over",
				name, f.name, o.name, o.file.name)
		}
		if o.file.arrived.After(f.arrived) {
			w.violate("ARRIVAL ORDER: %s (arrived %s) starts for %s after %s (arrived %s) started",
				f.name, f.arrived.Format("15:04"), e.export, o.file.name, o.file.arrived.Format("15:04"))
		}
	}
	items, err := w.items(in.ItemsKey)
	if err != nil {
		return err
	}
	for i := 0; i < len(items); i += max(in.GroupSize, 1) {
		e.groups = append(e.groups, &group{items: items[i:min(i+max(in.GroupSize, 1), len(items))]})
	}
	w.execs = append(w.execs, e)
	w.seen["execution"]++
	w.logf("execution %s of %s for %s starts, %d groups", name, f.name, e.export, len(e.groups))
	return nil
}

func (w *world) items(key string) ([]run.Item, error) {
	rc, _, err := w.raw.Get(context.Background(), key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var items []run.Item
	return items, json.NewDecoder(rc).Decode(&items)
}

// modelState is state.json as the model reads it.
type modelState struct {
	Epoch  int64       `json:"epoch"`
	Holder *run.Holder `json:"holder"`
}

func (w *world) state(export string) modelState {
	var st modelState
	rc, _, err := w.raw.Get(context.Background(), "state/"+export+"/state.json")
	if errors.Is(err, store.ErrNotFound) {
		return st
	}
	if err != nil {
		w.t.Fatal(err)
	}
	defer rc.Close()
	if err := json.NewDecoder(rc).Decode(&st); err != nil {
		w.t.Fatal(err)
	}
	return st
}

func fileOf(files []*file, key string) *file {
	for _, f := range files {
		if f.key == key {
			return f
		}
	}
	return files[0]
}

func (w *world) describeBucket() string {
	var b strings.Builder
	for _, e := range modelExports {
		st := w.state(e)
		holder := "free"
		if h := st.Holder; h != nil {
			holder = fmt.Sprintf("held by %s (%s)", h.Execution, h.Owner)
		}
		queued, err := w.raw.List(context.Background(), "state/"+e+"/queue/")
		if err != nil {
			return err.Error()
		}
		fmt.Fprintf(&b, "%s: epoch %d, %s, %d queued; ", e, st.Epoch, holder, len(queued))
	}
	return b.String()
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

// modelStore is the store as one task sees it: each call is a step.
type modelStore struct {
	w  *world
	tk *task
}

// bulk objects are written and read beside other calls of the same task
// (in parallel, or through a pipe): no step of their own, so the schedule
// stays deterministic.
func bulk(key string) bool {
	base := key[strings.LastIndexByte(key, '/')+1:]
	return strings.HasPrefix(key, "runs/") && (base == plan.BatchesFile || strings.HasPrefix(base, "snapshot") ||
		base == "input-rejected.csv" || base == "rejected.csv" || base == "report.html")
}

func (m modelStore) before(op, key string) (bool, error) {
	if bulk(key) {
		m.w.mu.Lock()
		defer m.w.mu.Unlock()
		if m.tk.proc.crashed {
			return false, errCrashed
		}
		return false, nil
	}
	return m.w.yield(m.tk, op+" "+key)
}

func (m modelStore) Get(ctx context.Context, key string) (io.ReadCloser, store.ObjectInfo, error) {
	if _, err := m.before("Get", key); err != nil {
		return nil, store.ObjectInfo{}, err
	}
	return m.w.raw.Get(ctx, key)
}

func (m modelStore) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if _, err := m.before("GetRange", key); err != nil {
		return nil, err
	}
	return m.w.raw.GetRange(ctx, key, offset, length)
}

func (m modelStore) Head(ctx context.Context, key string) (store.ObjectInfo, error) {
	if _, err := m.before("Head", key); err != nil {
		return store.ObjectInfo{}, err
	}
	return m.w.raw.Head(ctx, key)
}

func (m modelStore) List(ctx context.Context, prefix string) ([]store.ObjectInfo, error) {
	if _, err := m.before("List", prefix); err != nil {
		return nil, err
	}
	return m.w.raw.List(ctx, prefix)
}

func (m modelStore) Delete(ctx context.Context, key string) error {
	lose, err := m.before("Delete", key)
	if err != nil {
		return err
	}
	if err := m.w.raw.Delete(ctx, key); err != nil || !lose {
		return err
	}
	return errLost
}

func (m modelStore) Put(ctx context.Context, key string, body io.Reader, opts store.PutOptions) (store.ObjectInfo, error) {
	op := "Put"
	switch {
	case opts.IfNoneMatch:
		op += " (if none)"
	case opts.IfMatch != "":
		op += " (if match)"
	}
	lose, err := m.before(op, key)
	if err != nil {
		return store.ObjectInfo{}, err
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return store.ObjectInfo{}, err
	}
	report := strings.Contains(key, "/attempts/") && strings.HasSuffix(key, "/report.json")
	result := strings.Contains(key, "/attempts/") && strings.Contains(key, "/results/")
	var open bool // the attempt has no report yet
	if result {
		_, herr := m.w.raw.Head(ctx, key[:strings.Index(key, "/results/")]+"/report.json")
		open = errors.Is(herr, store.ErrNotFound)
	}
	info, err := m.w.raw.Put(ctx, key, bytes.NewReader(b), opts)
	if err != nil {
		return info, err
	}
	if report {
		m.w.mu.Lock()
		first, again := m.w.reports[key]
		if !again {
			m.w.reports[key] = string(b)
		}
		m.w.mu.Unlock()
		if again && first != string(b) {
			m.w.fail("ONE REPORT: %s written again by %s, with another outcome", key, m.tk.what)
		}
	}
	switch {
	case report:
		m.w.reportWritten(m.tk, key, b)
	case result && open:
		m.w.markSettled(key, b)
	case strings.HasSuffix(key, "/state.json"):
		var st modelState
		if err := json.Unmarshal(b, &st); err != nil {
			break
		}
		if m.tk != nil && m.tk.exec != nil && m.tk.grp == nil {
			e := m.tk.exec
			m.w.mu.Lock()
			if e.released {
				m.w.violate("ONE AT A TIME: %s wrote %s after its finalize had freed the export", m.tk.what, key)
			}
			e.released = st.Holder == nil || st.Holder.Execution != e.name
			if e.released && lose {
				m.w.seen["freed, answer lost"]++
			}
			m.w.mu.Unlock()
		}
		if st.Holder != nil {
			m.w.mu.Lock()
			claim := m.w.claimedBy[st.Holder.Execution] == nil
			if claim {
				m.w.claimedBy[st.Holder.Execution] = m.tk
			}
			m.w.mu.Unlock()
			if claim {
				m.w.contest(st.Holder.Input)
			}
		}
	}
	if lose {
		return store.ObjectInfo{}, errLost
	}
	return info, nil
}

// contest notes an attempt's claim: what its plan is to change may be
// sent, or not, before it ends, so until a result settles them again such
// contacts are contested, and a later attempt sending them again (their
// state unknown) is right.
func (w *world) contest(input json.RawMessage) {
	var in run.Execution
	if err := json.Unmarshal(input, &in); err != nil {
		w.fail("a claim's input undecodable: %v", err)
		return
	}
	items, err := w.items(in.ItemsKey)
	if err != nil {
		w.fail("reading %s: %v", in.ItemsKey, err)
		return
	}
	for _, it := range run.BatchItems(items) {
		b, err := w.readBatch(in, it)
		if err != nil {
			w.fail("reading batch %d of %s: %v", it.Batch, in.ItemsKey, err)
			return
		}
		w.mu.Lock()
		for _, u := range b.Upserts {
			if w.settled[in.Export+" "+u.Profile.Email] != u.Profile.FirstName {
				delete(w.settled, in.Export+" "+u.Profile.Email)
			}
		}
		for _, e := range b.Removals {
			delete(w.settled, in.Export+" "+e)
		}
		w.mu.Unlock()
	}
}

// reportWritten notes an attempt's report.
func (w *world) reportWritten(tk *task, key string, b []byte) {
	var rep run.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		w.fail("report %s undecodable: %v", key, err)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.logf("  report of %s attempt %d: %s %s", rep.Export, rep.Attempt, rep.Status, rep.Message)
	if tk.exec == nil || tk.exec.input.Attempt != rep.Attempt {
		w.seen["closed by a drainer"]++
	}
}

// settled marks the contacts of a batch whose result was written while its
// attempt was open: they are delivered, and must not be sent again as they are.
func (w *world) markSettled(key string, b []byte) {
	var res run.BatchResult
	if err := json.Unmarshal(b, &res); err != nil {
		w.fail("result %s undecodable: %v", key, err)
		return
	}
	// runs/<export>/<run>/attempts/<n>/results/NNNNNN.json
	parts := strings.Split(key, "/")
	export, runID, n := parts[1], parts[2], parts[4]
	attempt, _ := strconv.ParseInt(n, 10, 64)
	batch, err := w.batch(export, runID, attempt, res.Batch)
	if err != nil {
		w.fail("reading batch %d of %s: %v", res.Batch, key, err)
		return
	}
	rejected := map[string]bool{}
	for _, r := range res.Rejected {
		rejected[r.Email] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, u := range batch.Upserts {
		if !rejected[u.Profile.Email] {
			w.settled[export+" "+u.Profile.Email] = u.Profile.FirstName
			w.seen["settled contact"]++
		}
	}
	w.logf("  %s attempt %d batch %d settled: %d contacts", export, attempt, res.Batch, len(batch.Upserts))
}

// batch reads one planned batch of an attempt, through its execution's input.
func (w *world) batch(export, runID string, attempt int64, seq int) (*plan.Batch, error) {
	w.mu.Lock()
	var in run.Execution
	for _, e := range w.execs {
		if e.export == export && e.input.RunID == runID && e.input.Attempt == attempt {
			in = e.input
		}
	}
	w.mu.Unlock()
	items, err := w.items(in.ItemsKey)
	if err != nil {
		return nil, err
	}
	for _, it := range run.BatchItems(items) {
		if it.Batch == seq {
			return w.readBatch(in, it)
		}
	}
	return nil, fmt.Errorf("no batch %d in %s", seq, in.ItemsKey)
}

// readBatch reads one item's batch of in's plan.
func (w *world) readBatch(in run.Execution, it run.Item) (*plan.Batch, error) {
	rc, err := w.raw.GetRange(context.Background(), strings.TrimSuffix(in.ItemsKey, "items.json")+plan.BatchesFile, it.Offset, it.Length)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	line, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	return plan.ReadBatch(line)
}

// modelStarter is Step Functions (cloud) or the local runner.
type modelStarter struct {
	w  *world
	tk *task
}

func (s modelStarter) StartRun(_ context.Context, name string, input []byte) (bool, error) {
	lose, err := s.w.yield(s.tk, "StartExecution "+name)
	if err != nil {
		return false, err
	}
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fl == cloudMode && lose && w.rng.IntN(2) == 0 {
		w.logf("  the request was lost: %s did not start", name)
		w.seen["ambiguous start"]++
		return false, errLost
	}
	for _, e := range w.execs {
		if e.name == name {
			return false, nil // ExecutionAlreadyExists
		}
	}
	if claimant := w.claimedBy[name]; claimant != nil && claimant != s.tk {
		w.seen["start finished by a drainer"]++
	}
	if err := w.started(s.tk, name, input); err != nil {
		return false, err
	}
	if !strings.HasSuffix(name, fmt.Sprintf("-%d", w.execs[len(w.execs)-1].input.Attempt)) {
		w.violate("execution %s is not named for its attempt", name)
	}
	if lose {
		w.seen["ambiguous start"]++
		return false, errLost // started, but the answer was lost
	}
	return true, nil
}

// modelLiveness is DescribeExecution (cloud), or the runner's record and
// the process (local).
type modelLiveness struct {
	w  *world
	tk *task
}

func (l modelLiveness) Attempt(_ context.Context, h run.Holder) (run.Live, error) {
	if _, err := l.w.yield(l.tk, "DescribeExecution "+h.Execution); err != nil {
		return run.Live{}, err
	}
	w := l.w
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.execs {
		if e.name != h.Execution {
			continue
		}
		switch {
		case w.fl == cloudMode && e.ended:
			return run.Live{State: run.LiveEnded, EndedAt: e.endedAt}, nil
		case w.fl == cloudMode:
			return run.Live{State: run.LiveRunning}, nil
		case e.ended || e.proc.crashed:
			return run.Live{State: run.LiveEnded, EndedAt: w.now}, nil
		}
		return run.Live{State: run.LiveRunning}, nil
	}
	return run.Live{State: run.LiveNotStarted}, nil // locally too: no record of it
}

// modelKicker is kicks/<export>: in the cloud its S3 event invokes ingest
// later; locally nobody is woken (the CLI's loop drains).
type modelKicker struct{ w *world }

func (k modelKicker) Kick(_ context.Context, export string) error {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	if k.w.fl == cloudMode {
		k.w.kicks = append(k.w.kicks, export)
	}
	return nil
}

// modelDest is the destination: it applies upserts and removals to the
// world's lists and checks who sends.
type modelDest struct {
	w  *world
	tk *task
}

func (d modelDest) PrepareList(_ context.Context, spec dest.ListSpec) (string, error) {
	if _, err := d.w.yield(d.tk, "PrepareList "+spec.Title); err != nil {
		return "", err
	}
	if d.refuses() {
		return "", &dest.UnauthorizedError{API: "autopilot", Status: 401}
	}
	return "list-" + spec.Title, nil
}

// refuses says whether the destination refuses the key now.
func (d modelDest) refuses() bool {
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	return d.w.refused
}

func (d modelDest) Upsert(_ context.Context, list string, cs []dest.Contact, _ dest.Write) ([]dest.Outcome, error) {
	lose, err := d.w.yield(d.tk, fmt.Sprintf("Upsert %d to %s", len(cs), list))
	if err != nil {
		return nil, err
	}
	if d.refuses() {
		return nil, &dest.UnauthorizedError{API: "autopilot", Status: 401}
	}
	w := d.w
	w.mu.Lock()
	defer w.mu.Unlock()
	export := d.sender()
	out := make([]dest.Outcome, len(cs))
	for i, c := range cs {
		key := export + " " + c.Email
		if name, ok := w.settled[key]; ok && name == c.FirstName {
			w.violate("SETTLED STAYS SETTLED: %s sends %s (%q) again, settled by an earlier result (%s)", d.tk.what, c.Email, c.FirstName, export)
		}
		if w.members[export][c.Email] && w.dest[export][c.Email] == c.FirstName {
			w.seen["resend in the window"]++
		}
		w.dest[export][c.Email], w.members[export][c.Email] = c.FirstName, true
		delete(w.settled, key)
		out[i] = dest.Outcome{Email: c.Email, Status: dest.Sent}
	}
	if lose {
		return nil, errLost
	}
	return out, nil
}

func (d modelDest) Remove(_ context.Context, list string, emails []string) ([]dest.Outcome, error) {
	lose, err := d.w.yield(d.tk, fmt.Sprintf("Remove %d from %s", len(emails), list))
	if err != nil {
		return nil, err
	}
	if d.refuses() {
		return nil, &dest.UnauthorizedError{API: "autopilot", Status: 401}
	}
	w := d.w
	w.mu.Lock()
	defer w.mu.Unlock()
	export := d.sender()
	out := make([]dest.Outcome, len(emails))
	for i, e := range emails {
		delete(w.members[export], e)
		delete(w.settled, export+" "+e)
		out[i] = dest.Outcome{Email: e, Status: dest.Sent}
	}
	if lose {
		return nil, errLost
	}
	return out, nil
}

func (modelDest) Stats() dest.Stats { return dest.Stats{} }

// sender is the export of the attempt calling the destination, checked
// against the newest attempt that did; w.mu is held.
func (d modelDest) sender() string {
	w := d.w
	e := d.tk.exec
	if e == nil {
		w.violate("%s calls the destination outside an execution", d.tk.what)
		return ""
	}
	if newest := w.sentBy[e.export]; e.input.Attempt < newest {
		w.violate("ONE AT A TIME: %s (attempt %d) calls the destination after attempt %d of %s did", d.tk.what, e.input.Attempt, newest, e.export)
	}
	w.sentBy[e.export] = max(w.sentBy[e.export], e.input.Attempt)
	return e.export
}

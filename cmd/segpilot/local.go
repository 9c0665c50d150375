package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/delivery"
	"github.com/segpilot/segpilot/shared/filelock"
	"github.com/segpilot/segpilot/shared/kinds"
	"github.com/segpilot/segpilot/shared/local"
	orttosim "github.com/segpilot/segpilot/shared/ortto/sim"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/runpage"
	"github.com/segpilot/segpilot/shared/secrets"
	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/simkit"
	"github.com/segpilot/segpilot/shared/store"
)

// target is where a local run sends contacts.
type target struct {
	useSim   bool
	faults   string
	seed     int64
	simRPS   float64
	baseURLs map[string]string // by kind, from AUTOPILOT_BASE_URL, ORTTO_BASE_URL: override the config's baseURL
	noWait   bool              // fail at once, rather than wait, when another process holds what this one needs
	lambda   bool              // run the Map's children as Lambda does: containers pacing their own shares
	churn    float64
	// only names the connections this session sends to; nil: every one.
	only []string
}

// envName is a kind's environment variable: AUTOPILOT_API_KEY, ORTTO_BASE_URL.
func envName(kind, what string) string { return strings.ToUpper(kind) + "_" + what }

// baseURLsFromEnv reads each kind's <KIND>_BASE_URL.
func baseURLsFromEnv(getenv func(string) string) map[string]string {
	urls := map[string]string{}
	for _, kind := range kinds.Names() {
		if u := getenv(envName(kind, "BASE_URL")); u != "" {
			urls[kind] = u
		}
	}
	return urls
}

// connections are the ones of cfg the session sends to, by name.
func (t target) connections(cfg *config.Config) []*config.Connection {
	var out []*config.Connection
	for _, name := range slices.Sorted(maps.Keys(cfg.Connections)) {
		if t.only == nil || slices.Contains(t.only, name) {
			out = append(out, cfg.Connections[name])
		}
	}
	return out
}

// kinds are the kinds the session sends to, sorted; every kind without a
// config.
func (t target) kinds(cfg *config.Config) []string {
	if cfg == nil {
		return kinds.Names()
	}
	set := map[string]bool{}
	for _, c := range t.connections(cfg) {
		set[c.Kind] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// pollEvery is how often a waiting process looks whether its turn came.
const pollEvery = 250 * time.Millisecond

// session is a local pipeline plus, with --sim, the simulators it talks to.
type session struct {
	p        *local.Pipeline
	progress *progress
	close    func()
}

// fixedKey serves one key for any secret id: the simulators'.
type fixedKey string

func (k fixedKey) Secret(context.Context, string) (string, error) { return string(k), nil }

// kindKeys serves each connection's key from its kind's environment
// variable (AUTOPILOT_API_KEY, ORTTO_API_KEY): locally there is no
// Secrets Manager, and the secret id names the connection's kind.
type kindKeys struct {
	cfg    *config.Config
	getenv func(string) string
}

func (k kindKeys) Secret(ctx context.Context, id string) (string, error) {
	for _, c := range k.cfg.Connections {
		if c.APIKeySecret == id {
			return secrets.Env{Var: envName(c.Kind, "API_KEY"), Getenv: k.getenv}.Secret(ctx, id)
		}
	}
	return "", fmt.Errorf("no connection names secret %q: %w", id, secrets.ErrNotFound)
}

func (e *env) open(ctx context.Context, bucketDir string, t target, cfg *config.Config) (*session, error) {
	s := &session{close: func() {}}
	opts := local.Options{BucketDir: bucketDir, Log: e.log, BaseURLs: map[string]string{}, Context: ctx}
	if t.lambda {
		opts.Lambda = &local.LambdaModel{Seed: uint64(t.seed), Churn: t.churn}
	}
	if !e.json {
		s.progress = newProgress(e.stdout)
		opts.Progress = s.progress.update
	}
	if t.useSim {
		key := make([]byte, 12)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		faults, err := simkit.ParseFaults(t.faults)
		if err != nil {
			return nil, usageError{"--faults: " + err.Error()}
		}
		opts.Secrets = fixedKey("sim-" + hex.EncodeToString(key))
		var closers []func()
		s.close = func() {
			for _, c := range slices.Backward(closers) {
				c()
			}
		}
		for _, kind := range t.kinds(cfg) {
			rps := t.simRPS
			if rps == 0 && cfg != nil {
				for _, c := range t.connections(cfg) {
					if c.Kind == kind {
						rps = max(rps, c.RequestsPerSecond)
					}
				}
			}
			url, stop, err := e.startSim(kind, bucketDir, t, simkit.Config{APIKey: string(opts.Secrets.(fixedKey)),
				RequestsPerSecond: rps, Burst: int(max(1, rps)), Faults: faults, Seed: t.seed})
			if err != nil {
				s.close()
				return nil, err
			}
			closers = append(closers, stop)
			opts.BaseURLs[kind] = url
		}
	} else {
		for kind, u := range t.baseURLs {
			if err := config.CheckBaseURL(u); err != nil {
				return nil, fmt.Errorf("%s: %w", envName(kind, "BASE_URL"), err)
			}
			opts.BaseURLs[kind] = u
		}
		if cfg == nil {
			return nil, usageError{"a run against the real API needs the config"}
		}
		opts.Secrets = kindKeys{cfg: cfg, getenv: e.getenv}
		for _, c := range t.connections(cfg) {
			if _, err := opts.Secrets.Secret(ctx, c.APIKeySecret); err != nil {
				return nil, fmt.Errorf("no API key for connection %s: set %s, or pass --sim to use the built-in simulators", c.Name, envName(c.Kind, "API_KEY"))
			}
			endpoint := cmp.Or(opts.BaseURLs[c.Kind], c.BaseURL)
			if !e.json {
				fmt.Fprintf(e.stdout, "%s: sending to %s with the key in %s\n", c.Title(), endpoint, envName(c.Kind, "API_KEY"))
			}
		}
	}
	if cfg != nil {
		opts.Words = local.Words{Command: liftCommand(bucketDir, cfg, t)}
	}
	p, err := local.New(opts)
	if err != nil {
		s.close()
		return nil, err
	}
	// Executions run on their own goroutines: let them end (Ctrl-C ends
	// them sooner) before the simulators close.
	closeSims := s.close
	s.close = func() { p.Runner.Wait(); closeSims() }
	s.p = p
	return s, nil
}

// startSim serves kind's simulator on loopback, with the state an earlier
// process left next to the bucket folder (BUCKET.<kind>-sim.json), so the
// next run meets what this one left, as with the real API. One process at
// a time: another would save over what this one sent. stop saves it.
func (e *env) startSim(kind, bucketDir string, t target, c simkit.Config) (url string, stop func(), err error) {
	sim, err := kinds.Simulator(kind, c)
	if err != nil {
		return "", nil, err
	}
	statePath := filepath.Clean(bucketDir) + "." + kind + "-sim.json"
	held, err := e.lockSimState(statePath, t.noWait)
	if err != nil {
		return "", nil, err
	}
	if err := loadSimState(sim, statePath); err != nil {
		return "", nil, errors.Join(err, held.Unlock())
	}
	url, halt, err := serve(sim, "127.0.0.1:0")
	if err != nil {
		return "", nil, errors.Join(err, held.Unlock())
	}
	if !e.json {
		title := kind
		if k, ok := kinds.Lookup(kind); ok {
			title = k.Title
		}
		fmt.Fprintf(e.stdout, "%s: built-in simulator at %s (%.0f requests/s budget; its state is kept in %s)\n", title, url, c.RequestsPerSecond, statePath)
	}
	return url, func() {
		halt()
		if err := saveSimState(sim, statePath); err != nil {
			e.log.Error("saving the simulator's state", "error", err)
		}
		if err := held.Unlock(); err != nil {
			e.log.Error("releasing the simulator's state", "error", err)
		}
	}, nil
}

// lockSimState takes the simulator state's lock, waiting for another
// process that holds it unless noWait.
func (e *env) lockSimState(statePath string, noWait bool) (*filelock.Held, error) {
	held, err := filelock.Lock(statePath+".lock", false)
	if !errors.Is(err, filelock.ErrLocked) {
		return held, err
	}
	if noWait {
		return nil, busyError{"another segpilot process is using the simulator's state in " + statePath +
			"; wait for it to finish, or run without --no-wait to wait for it"}
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "waiting for another segpilot process using the simulator's state in %s …\n", statePath)
	}
	return filelock.Lock(statePath+".lock", true)
}

func loadSimState(s simkit.Simulator, path string) error {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the simulator's state: %w", err)
	}
	if err := s.LoadJSON(raw); err != nil {
		return fmt.Errorf("%s: %w (delete it to start the simulator empty)", path, err)
	}
	return nil
}

func saveSimState(s simkit.Simulator, path string) error {
	raw, err := s.DumpJSON()
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// serve runs h on a loopback listener and returns its /v1 base URL.
func serve(h http.Handler, addr string) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // returns ErrServerClosed on Close
	return "http://" + ln.Addr().String() + "/v1", func() { srv.Close() }, nil
}

// stage copies the config and the segment file (or folder of parts) into
// the bucket folder, as an upload to S3 would, and returns its key: a
// folder's ends in "/". A folder given to run is whole: one with neither
// manifest nor marker gets a _SUCCESS marker in its copy.
func stage(bucketDir, configPath string, cfg *config.Config, ex *config.Export, file string) (string, error) {
	if err := copyFile(configPath, filepath.Join(bucketDir, filepath.FromSlash(run.ConfigKey))); err != nil {
		return "", fmt.Errorf("copying config into the bucket folder: %w", err)
	}
	if file == "" {
		return "", nil
	}
	key := "segments/" + ex.Segment + "/" + filepath.Base(filepath.Clean(file))
	info, err := os.Stat(file)
	if err != nil {
		return "", err
	}
	if !info.IsDir() {
		if err := copyFile(file, filepath.Join(bucketDir, filepath.FromSlash(key))); err != nil {
			return "", fmt.Errorf("copying segment file into the bucket folder: %w", err)
		}
		return key, nil
	}
	whole := false
	err = filepath.WalkDir(file, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(file, p)
		if err != nil {
			return err
		}
		k := key + "/" + filepath.ToSlash(rel)
		switch delivery.Classify(k) {
		case delivery.Ignored:
			return nil
		case delivery.Marker, delivery.Manifest:
			whole = true
		}
		return copyFile(p, filepath.Join(bucketDir, filepath.FromSlash(k)))
	})
	if err != nil {
		return "", fmt.Errorf("copying the folder of parts into the bucket folder: %w", err)
	}
	if !whole {
		marker := filepath.Join(bucketDir, filepath.FromSlash(key), "_SUCCESS")
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return "", err
		}
	}
	return key + "/", nil
}

// copyFile copies src to dst, streaming, unless dst already holds the same
// bytes, so an unchanged file keeps its identity (and its run id).
func copyFile(src, dst string) error {
	if same, err := sameBytes(src, dst); err != nil || same {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".copy-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // once renamed, there is nothing to remove
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// sameBytes tells whether the files a and b hold the same bytes (b may be
// missing), comparing digests rather than loading either.
func sameBytes(a, b string) (bool, error) {
	ia, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	ib, err := os.Stat(b)
	if err != nil || ia.Size() != ib.Size() {
		return false, nil
	}
	da, err := digest(a)
	if err != nil {
		return false, err
	}
	db, err := digest(b)
	return err == nil && da == db, nil
}

func digest(name string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(name)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

type runFlags struct {
	configPath, export, file, bucketDir string
	dryRun, allowLargeRemoval, full     bool
	explain                             string // with --dry-run: emails whose preview lines to print
	t                                   target
}

// runFlagSet defines run's flags (and demo's), with def's values as defaults.
func (e *env) runFlagSet(name string, f *runFlags, def runFlags) *flag.FlagSet {
	fs := e.flags(name)
	fs.StringVar(&f.configPath, "config", def.configPath, "exports.yaml")
	fs.StringVar(&f.export, "export", def.export, "export name in the config")
	fs.StringVar(&f.file, "file", def.file, "segment file (CSV, JSON Lines or JSON array; gzip ok), or a folder of parts (one delivery)")
	fs.StringVar(&f.bucketDir, "bucket-dir", def.bucketDir, "folder standing in for the S3 bucket; runs diff against its snapshot")
	fs.BoolVar(&f.dryRun, "dry-run", false, "plan and report only, with preview.csv (every contact's fate); send nothing")
	fs.StringVar(&f.explain, "explain", "", "with --dry-run: print what the run would do to these contacts (emails, comma-separated) and why")
	fs.BoolVar(&f.allowLargeRemoval, "allow-large-removal", false, "lift the mirror safety brake for this run")
	fs.BoolVar(&f.full, "full", false, "full resync: send every contact of the file, unchanged ones too (leavers and the brake as ever)")
	fs.BoolVar(&f.t.useSim, "sim", false, "send to the built-in simulators (one per kind of connection) instead of the config's baseURL")
	fs.StringVar(&f.t.faults, "faults", "", "with --sim: inject faults, e.g. 5xx=0.05,429burst=0.01:5")
	fs.Int64Var(&f.t.seed, "seed", 1, "with --sim: fault seed; with --as-lambda: churn and phase seed")
	fs.BoolVar(&f.t.lambda, "as-lambda", false, "run the batches as the Lambda deployment does: each in a container of its own pacing its share of the budget, some recycled (--churn), instead of one shared limiter")
	fs.Float64Var(&f.t.churn, "churn", 0.1, "with --as-lambda: the chance a container is recycled after an invocation (seeded by --seed)")
	fs.BoolVar(&f.t.noWait, "no-wait", false, "if another process is running this export, exit at once (exit code 3) instead of waiting for it; the file is left queued and that process runs it next")
	return fs
}

func cmdRun(ctx context.Context, e *env, args []string) error {
	var f runFlags
	fs := e.runFlagSet("run", &f, runFlags{bucketDir: filepath.Join(".segpilot", "bucket")})
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if err := required("config", f.configPath, "export", f.export, "file", f.file); err != nil {
		return err
	}
	if f.explain != "" && !f.dryRun {
		return usageError{"--explain goes with --dry-run (it reads the dry run's preview.csv)"}
	}
	f.t.baseURLs = baseURLsFromEnv(e.getenv)
	return e.runExport(ctx, f)
}

func (e *env) runExport(ctx context.Context, f runFlags) error {
	cfg, err := config.LoadFile(f.configPath)
	if err != nil {
		return err
	}
	named, err := cfg.Named(f.export) // a split export runs each of its groups
	if err != nil {
		return err
	}
	ex := named[0]
	key, err := stage(f.bucketDir, f.configPath, cfg, ex, f.file)
	if err != nil {
		return err
	}
	f.t.only = []string{ex.Connection}
	s, err := e.open(ctx, f.bucketDir, f.t, cfg)
	if err != nil {
		return err
	}
	defer s.close()
	results, err := s.p.Service.Start(ctx, run.StartRequest{Trigger: run.TriggerManual, Export: f.export,
		DryRun: f.dryRun, AllowLargeRemoval: f.allowLargeRemoval, FullResync: f.full, Source: run.Source{Key: key}})
	if err := e.followUp(ctx, s, f, results, err); err != nil || f.explain == "" {
		return err
	}
	return e.explainPreviews(f, results)
}

// followUp waits for the deliveries a command started or queued and
// prints how they ended.
func (e *env) followUp(ctx context.Context, s *session, f runFlags, results []run.Result, err error) error {
	if s.progress != nil {
		s.progress.finish()
	}
	if err != nil && len(results) == 0 {
		return err
	}
	if err == nil {
		if results, err = e.await(ctx, s, results, f.t.noWait); err != nil {
			return err
		}
	}
	// A failed attempt's report says what happened; say the error only if
	// no report could.
	if serr := e.summarise(ctx, s, f.bucketDir, results); serr != nil || err == nil {
		return serr
	}
	return err
}

// await waits for each delivery to end: its attempt running here, or
// queued behind another run (in this process or another).
func (e *env) await(ctx context.Context, s *session, results []run.Result, noWait bool) ([]run.Result, error) {
	for i, r := range results {
		if r.Status != run.StatusQueued && r.Status != run.StatusRunning {
			continue
		}
		if !r.Started {
			if noWait {
				return results, busyError{fmt.Sprintf("%s: %s", r.Export, r.Message)}
			}
			if !e.json {
				then := "Ctrl-C stops waiting"
				if r.Status == run.StatusQueued {
					then += "; the file stays queued"
				}
				fmt.Fprintf(e.stdout, "waiting: %s (%s)\n", r.Message, then)
			}
		}
		done, err := s.p.Service.Await(ctx, r, pollEvery)
		if s.progress != nil {
			s.progress.finish()
		}
		if err != nil {
			return results, err
		}
		results[i] = done
	}
	return results, nil
}

// summarise prints each run's outcome and fails when a run did not succeed.
func (e *env) summarise(ctx context.Context, s *session, bucketDir string, results []run.Result) error {
	var out []any
	var failed []string
	for _, r := range results {
		if r.Status == run.StatusWaiting { // a folder not whole: no run, no report
			if e.json {
				out = append(out, map[string]any{"result": r})
			} else {
				fmt.Fprintf(e.stdout, "\n%s: WAITING\n  %s\n", r.Export, r.Message)
			}
			failed = append(failed, fmt.Sprintf("%s: %s: %s", r.Export, r.Status, r.Message))
			continue
		}
		rep, err := run.ReadReport(ctx, s.p.Store, r.Export, r.RunID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if e.json {
			out = append(out, map[string]any{"result": r, "report": rep})
		} else {
			printSummary(e.stdout, bucketDir, r, rep)
		}
		switch r.Status {
		case run.StatusFailed, run.StatusInvalid, run.StatusRefused, run.StatusHeld:
			failed = append(failed, fmt.Sprintf("%s: %s: %s", r.Export, r.Status, r.Message))
		}
	}
	if e.json {
		if err := e.print(out, ""); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

func printSummary(w io.Writer, bucketDir string, r run.Result, rep *run.Report) {
	fmt.Fprintf(w, "\n%s — run %s: %s\n", r.Export, r.RunID, strings.ToUpper(r.Status))
	if r.Message != "" {
		fmt.Fprintf(w, "  %s\n", r.Message)
	}
	c := r.Counts
	if r.Status == run.StatusUpToDate {
		fmt.Fprintf(w, "  0 contact requests sent\n")
		return
	}
	if rep != nil && c == (plan.Counts{}) {
		c = rep.Plan
	}
	if u := undoOf(rep); u != nil {
		fmt.Fprintf(w, "  undo of %s: take off %d · put back %d · restore fields %d", u.Of, u.Counts.TakeOff, u.Counts.PutBack, u.Counts.Restore)
		if u.Counts.Partial > 0 {
			fmt.Fprintf(w, " (%d of them but a field an upsert cannot empty)", u.Counts.Partial)
		}
		fmt.Fprintf(w, " · not restorable %d\n  contact by contact: %s\n", u.Counts.NotRestorable, filepath.Join(bucketDir, filepath.FromSlash(u.CSV)))
	} else {
		fmt.Fprintf(w, "  rows %d · added %d · changed %d · unchanged %d · removed %d · duplicates %d · rejected %d\n",
			c.Rows, c.Added, c.Changed, c.Unchanged, c.Removed, c.Duplicates, c.Rejected)
	}
	if sp := rep; sp != nil && sp.Split != nil {
		fmt.Fprintf(w, "  split: group %s of %s, %s · other groups' or held out %d · moved out %d\n", sp.Split.Group, sp.Split.Parent, sp.Split.Percent, c.OtherGroups, c.MovedOut)
		if sp.Split.LastChange != "" {
			fmt.Fprintf(w, "  %s\n", sp.Split.LastChange)
		}
	}
	if c.Resent > 0 {
		fmt.Fprintf(w, "  full resync: the %d unchanged sent all the same\n", c.Resent)
	}
	if r.Preview != "" {
		fmt.Fprintf(w, "  preview, contact by contact: %s\n", filepath.Join(bucketDir, filepath.FromSlash(r.Preview)))
	}
	if rep == nil || rep.Rejected == "" { // no finalize: nothing was counted as sent
		printPage(w, bucketDir, rep)
		return
	}
	if rep.Prior > 0 {
		earlier := "the earlier attempt"
		if rep.Prior > 1 {
			earlier = fmt.Sprintf("the %d earlier attempts", rep.Prior)
		}
		fmt.Fprintf(w, "  resumed: attempt %d sent what %s of this file had not delivered\n", rep.Prior+1, earlier)
	}
	o := rep.Outcome
	fmt.Fprintf(w, "  sent %d · rejected by %s %d · failed %d · removed %d", o.Sent, cmp.Or(rep.Destination, "Autopilot"), o.RejectedByAPI, o.Failed, o.Removed)
	if o.Skipped > 0 {
		why := "mode: " + rep.Mode
		if rep.Undo != nil {
			why = "no longer in " + cmp.Or(rep.Destination, "Autopilot") + ": an undo creates nobody"
		}
		fmt.Fprintf(w, " · skipped %d (%s)", o.Skipped, why)
	}
	fmt.Fprintln(w)
	if rep.Requests.Lookup > 0 {
		whom := "whom mode " + rep.Mode + " leaves alone"
		if rep.Undo != nil {
			whom = "who is still there (an undo creates nobody)"
		}
		fmt.Fprintf(w, "  %d of the requests listed %s's contacts, to know %s\n", rep.Requests.Lookup, cmp.Or(rep.Destination, "Autopilot"), whom)
	}
	took := runpage.Seconds(rep.DurationSeconds)
	if rep.FloorSeconds > 0 { // none when no request waited for the budget
		took += " vs rate-limit floor " + runpage.Seconds(rep.FloorSeconds)
	}
	fmt.Fprintf(w, "  requests %d (429s %d, retries %d) · took %s\n", rep.Requests.Total, rep.Requests.Throttled, rep.Requests.Retries, took)
	if rep.RateFound > 0 {
		fmt.Fprintf(w, "  %s accepted up to %.1f requests/s (its best 10 s) while it answered 429s: set the connection's requestsPerSecond to about %d\n",
			cmp.Or(rep.Destination, "Autopilot"), rep.RateFound, int(rep.RateFound))
	}
	fmt.Fprintf(w, "  report:   %s\n  rejected: %s\n", filepath.Join(bucketDir, "runs", r.Export, r.RunID, "report.json"),
		filepath.Join(bucketDir, filepath.FromSlash(rep.Rejected)))
	printPage(w, bucketDir, rep)
}

// undoOf is the undo a report is of, once it was planned.
func undoOf(rep *run.Report) *run.UndoSummary {
	if rep == nil || rep.Undo == nil || rep.Undo.CSV == "" {
		return nil
	}
	return rep.Undo
}

// printPage prints where the run's page is, when it has one.
func printPage(w io.Writer, bucketDir string, rep *run.Report) {
	if rep != nil && rep.Page != "" {
		fmt.Fprintf(w, "  page:     %s\n", filepath.Join(bucketDir, filepath.FromSlash(rep.Page)))
	}
}

func cmdRuns(ctx context.Context, e *env, args []string) error {
	fs := e.flags("runs")
	export := fs.String("export", "", "export name")
	bucketDir := fs.String("bucket-dir", filepath.Join(".segpilot", "bucket"), "bucket folder")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if err := required("export", *export); err != nil {
		return err
	}
	st, err := store.OpenFolder(*bucketDir)
	if errors.Is(err, os.ErrNotExist) {
		return e.print([]*run.Report{}, fmt.Sprintf("no runs of %s: there is no folder %s (--bucket-dir names the bucket folder)\n", *export, *bucketDir))
	}
	if err != nil {
		return err
	}
	reps, err := run.ListReports(ctx, st, *export)
	if err != nil {
		return err
	}
	var b strings.Builder
	if len(reps) == 0 {
		fmt.Fprintf(&b, "no runs of %s in %s\n", *export, *bucketDir)
	}
	printRuns(&b, *bucketDir, reps)
	return e.print(reps, b.String())
}

// printRuns prints a line per run, and where its page is.
func printRuns(w io.Writer, bucketDir string, reps []*run.Report) {
	width := 0 // run ids are as long as their export's name: the column fits the longest
	for _, r := range reps {
		width = max(width, len(r.RunID))
	}
	for _, r := range reps {
		when := r.FinishedAt
		if when.IsZero() {
			when = r.PlannedAt
		}
		fmt.Fprintf(w, "%s  %-*s %-10s %-8s sent %-6d rejected %-5d failed %-5d removed %-5d %s\n",
			when.Format(time.RFC3339), width, r.RunID, r.Status, r.Trigger, r.Outcome.Sent,
			r.Outcome.Rejected+r.Outcome.RejectedByAPI, r.Outcome.Failed, r.Outcome.Removed, r.Source.Key)
		printPage(w, bucketDir, r)
	}
}

func cmdSim(ctx context.Context, e *env, args []string) error {
	fs := e.flags("sim")
	kind := fs.String("kind", "autopilot", "the destination to simulate: "+strings.Join(kinds.Names(), ", "))
	region := fs.String("region", "global", "with --kind ortto: the region this host serves (global, au, eu)")
	otherRegion := fs.String("other-region-key", "", "with --kind ortto: a key of an account in another region, REGION:KEY, refused here as Ortto refuses it")
	addr := fs.String("addr", "127.0.0.1:8089", "listen address (loopback)")
	key := fs.String("api-key", "", "the API key the simulator accepts")
	rps := fs.Float64("rps", 5, "requests per second per key (0 = unlimited)")
	burst := fs.Int("burst", 0, "token bucket size (default: rps)")
	faults := fs.String("faults", "", "fault spec, e.g. 5xx=0.05,429burst=0.01:5,latency=20ms,drop=0.01,hang=0.01:3s,reject=@bad\\.example$")
	seed := fs.Int64("seed", 1, "seed for deterministic faults")
	retryAfter := fs.Bool("retry-after", true, "with --kind autopilot: send Retry-After with 429 answers")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if _, ok := kinds.Lookup(*kind); !ok {
		return usageError{fmt.Sprintf("--kind %q: want one of %s%s", *kind, strings.Join(kinds.Names(), ", "), didYouMean(*kind, kinds.Names()))}
	}
	if err := required("api-key", *key); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return usageError{"--addr: " + err.Error()}
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return usageError{"--addr must be a loopback address such as 127.0.0.1:8089"}
	}
	f, err := simkit.ParseFaults(*faults)
	if err != nil {
		return usageError{"--faults: " + err.Error()}
	}
	c := simkit.Config{APIKey: *key, RequestsPerSecond: *rps, Burst: *burst, NoRetryHint: !*retryAfter, Faults: f, Seed: *seed, Logger: e.log}
	var s http.Handler
	switch *kind {
	case "ortto":
		others := map[string]string{}
		if *otherRegion != "" {
			r, k, ok := strings.Cut(*otherRegion, ":")
			if !ok || orttosim.Hosts[r] == "" || k == "" {
				return usageError{"--other-region-key: want REGION:KEY, REGION one of au, eu, global"}
			}
			others[k] = r
		}
		if orttosim.Hosts[*region] == "" {
			return usageError{"--region: want global, au or eu"}
		}
		s = orttosim.New(orttosim.Options{APIKey: *key, Region: *region, OtherRegions: others, RequestsPerSecond: *rps, Burst: *burst,
			Faults: f, Seed: *seed, Logger: e.log})
	default:
		if s, err = kinds.Simulator(*kind, c); err != nil {
			return usageError{"--kind: " + err.Error()}
		}
	}
	url, stop, err := serve(s, *addr)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(e.stdout, "%s simulator listening: base URL %s/\n(Ctrl-C to stop)\n", *kind, url)
	<-ctx.Done()
	return nil
}

// explainPreviews prints the preview lines of the contacts --explain
// names, from each dry run's preview.csv.
func (e *env) explainPreviews(f runFlags, results []run.Result) error {
	want := map[string]bool{}
	for _, email := range strings.Split(f.explain, ",") {
		if n, err := segment.NormalizeEmail(strings.TrimSpace(email)); err == nil {
			want[n] = true
		} else {
			return usageError{fmt.Sprintf("--explain: %q is not an email address: %v", email, err)}
		}
	}
	var b strings.Builder
	for _, r := range results {
		if r.Preview == "" {
			continue
		}
		file, err := os.Open(filepath.Join(f.bucketDir, filepath.FromSlash(r.Preview)))
		if err != nil {
			return err
		}
		rows, err := csv.NewReader(file).ReadAll()
		file.Close()
		if err != nil {
			return fmt.Errorf("reading %s: %w", r.Preview, err)
		}
		seen := map[string]bool{}
		for _, row := range rows[1:] {
			if !want[row[1]] {
				continue
			}
			seen[row[1]] = true
			fmt.Fprintf(&b, "%s  %s: %s", r.Export, row[1], strings.ToUpper(row[2]))
			if row[0] != "" {
				fmt.Fprintf(&b, " (row %s)", row[0])
			}
			if row[3] != "" {
				fmt.Fprintf(&b, "; %s", row[3])
			}
			fmt.Fprintf(&b, "; %s\n", row[4])
		}
		for _, email := range slices.Sorted(maps.Keys(want)) {
			if !seen[email] {
				fmt.Fprintf(&b, "%s  %s: neither in the file nor on the list segpilot keeps\n", r.Export, email)
			}
		}
	}
	if e.json {
		return nil // the dry run's document is printed already
	}
	_, err := fmt.Fprint(e.stdout, "\n"+b.String())
	return err
}

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/autopilot/sim"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/local"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/secrets"
	"github.com/segpilot/segpilot/shared/store"
)

// target is where a local run sends contacts.
type target struct {
	useSim  bool
	faults  string
	seed    int64
	simRPS  float64
	baseURL string // AUTOPILOT_BASE_URL: overrides the config's baseURL
}

// session is a local pipeline plus, with --sim, the simulator it talks to.
type session struct {
	p        *local.Pipeline
	sim      *sim.Server
	progress *progress
	close    func()
}

// fixedKey serves one key for any secret id: the simulator's.
type fixedKey string

func (k fixedKey) Secret(context.Context, string) (string, error) { return string(k), nil }

func (e *env) open(ctx context.Context, bucketDir string, t target, cfg *config.Config) (*session, error) {
	s := &session{close: func() {}}
	opts := local.Options{BucketDir: bucketDir, Log: e.log}
	if !e.json {
		s.progress = newProgress(e.stdout)
		opts.Progress = s.progress.update
	}
	if t.useSim {
		key := make([]byte, 12)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		faults, err := sim.ParseFaults(t.faults)
		if err != nil {
			return nil, usageError{"--faults: " + err.Error()}
		}
		rps := t.simRPS
		if rps == 0 && cfg != nil {
			for _, c := range cfg.Connections {
				rps = max(rps, c.RequestsPerSecond)
			}
		}
		s.sim = sim.New(sim.Options{APIKey: "sim-" + hex.EncodeToString(key), RequestsPerSecond: rps,
			Burst: int(max(1, rps)), RetryAfter: true, Faults: faults, Seed: t.seed})
		// The simulated Autopilot keeps its contacts next to the bucket folder,
		// so the next run meets what this one left, as with the real one.
		statePath := filepath.Clean(bucketDir) + ".autopilot-sim.json"
		if err := loadSimState(s.sim, statePath); err != nil {
			return nil, err
		}
		url, stop, err := serve(s.sim, "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		s.close = func() {
			stop()
			if err := saveSimState(s.sim, statePath); err != nil {
				e.log.Error("saving the simulator's state", "error", err)
			}
		}
		opts.BaseURL = url
		opts.Secrets = fixedKey("sim-" + hex.EncodeToString(key))
		if !e.json {
			fmt.Fprintf(e.stdout, "Autopilot: built-in simulator at %s (%.0f requests/s budget; its contacts are kept in %s)\n", url, rps, statePath)
		}
	} else {
		opts.Secrets = secrets.Env{}
		opts.BaseURL = t.baseURL
		if _, err := opts.Secrets.Secret(ctx, ""); err != nil {
			return nil, fmt.Errorf("no API key: set AUTOPILOT_API_KEY, or pass --sim to use the built-in simulator")
		}
		endpoint := t.baseURL
		if endpoint == "" && cfg != nil {
			var urls []string
			for _, c := range cfg.Connections {
				urls = append(urls, c.BaseURL)
			}
			endpoint = strings.Join(urls, ", ")
		}
		if !e.json {
			fmt.Fprintf(e.stdout, "Autopilot: sending to %s with the key in AUTOPILOT_API_KEY\n", endpoint)
		}
	}
	p, err := local.New(opts)
	if err != nil {
		s.close()
		return nil, err
	}
	s.p = p
	return s, nil
}

func loadSimState(s *sim.Server, path string) error {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the simulator's state: %w", err)
	}
	var st sim.State
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("%s: %w (delete it to start the simulator empty)", path, err)
	}
	if err := s.Load(st); err != nil {
		return fmt.Errorf("%s: %w (delete it to start the simulator empty)", path, err)
	}
	return nil
}

func saveSimState(s *sim.Server, path string) error {
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

// stage copies the config and the segment file into the bucket folder, as
// an upload to S3 would, and returns the segment file's key.
func stage(bucketDir, configPath string, cfg *config.Config, ex *config.Export, file string) (string, error) {
	if err := copyFile(configPath, filepath.Join(bucketDir, filepath.FromSlash(run.ConfigKey))); err != nil {
		return "", fmt.Errorf("copying config into the bucket folder: %w", err)
	}
	if file == "" {
		return "", nil
	}
	key := "segments/" + ex.Segment + "/" + filepath.Base(file)
	if err := copyFile(file, filepath.Join(bucketDir, filepath.FromSlash(key))); err != nil {
		return "", fmt.Errorf("copying segment file into the bucket folder: %w", err)
	}
	return key, nil
}

// copyFile copies src to dst unless dst already holds the same bytes, so an
// unchanged file keeps its identity (and its run id).
func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(dst); err == nil && string(old) == string(data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}

type runFlags struct {
	configPath, export, file, bucketDir string
	dryRun, allowLargeRemoval           bool
	t                                   target
}

func (e *env) runFlagSet(name string, f *runFlags) *flag.FlagSet {
	fs := e.flags(name)
	fs.StringVar(&f.configPath, "config", "", "exports.yaml")
	fs.StringVar(&f.export, "export", "", "export name in the config")
	fs.StringVar(&f.file, "file", "", "segment file (CSV, JSON Lines or JSON array; gzip ok)")
	fs.StringVar(&f.bucketDir, "bucket-dir", filepath.Join(".segpilot", "bucket"), "folder standing in for the S3 bucket; runs diff against its snapshot")
	fs.BoolVar(&f.dryRun, "dry-run", false, "plan and report only; send nothing")
	fs.BoolVar(&f.allowLargeRemoval, "allow-large-removal", false, "lift the mirror safety brake for this run")
	fs.BoolVar(&f.t.useSim, "sim", false, "send to the built-in Autopilot simulator instead of the config's baseURL")
	fs.StringVar(&f.t.faults, "faults", "", "with --sim: inject faults, e.g. 5xx=0.05,429burst=0.01:5")
	fs.Int64Var(&f.t.seed, "seed", 1, "with --sim: fault seed")
	return fs
}

func cmdRun(ctx context.Context, e *env, args []string) error {
	var f runFlags
	fs := e.runFlagSet("run", &f)
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if err := required("config", f.configPath, "export", f.export, "file", f.file); err != nil {
		return err
	}
	f.t.baseURL = e.getenv("AUTOPILOT_BASE_URL")
	return e.runExport(ctx, f)
}

func (e *env) runExport(ctx context.Context, f runFlags) error {
	cfg, ex, err := loadExport(f.configPath, f.export)
	if err != nil {
		return err
	}
	key, err := stage(f.bucketDir, f.configPath, cfg, ex, f.file)
	if err != nil {
		return err
	}
	s, err := e.open(ctx, f.bucketDir, f.t, cfg)
	if err != nil {
		return err
	}
	defer s.close()
	started := time.Now()
	results, err := s.p.Service.Start(ctx, run.StartRequest{Trigger: run.TriggerManual, Export: ex.Name,
		DryRun: f.dryRun, AllowLargeRemoval: f.allowLargeRemoval, Source: run.Source{Key: key}})
	if s.progress != nil {
		s.progress.finish()
	}
	if err != nil {
		return err
	}
	return e.summarise(ctx, s, f.bucketDir, results, time.Since(started))
}

// summarise prints each run's outcome and fails when a run did not succeed.
func (e *env) summarise(ctx context.Context, s *session, bucketDir string, results []run.Result, elapsed time.Duration) error {
	var out []any
	var failed []string
	for _, r := range results {
		rep, err := run.ReadReport(ctx, s.p.Store, r.Export, r.RunID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if e.json {
			out = append(out, map[string]any{"result": r, "report": rep})
		} else {
			printSummary(e.stdout, bucketDir, r, rep, elapsed)
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

func printSummary(w io.Writer, bucketDir string, r run.Result, rep *run.Report, elapsed time.Duration) {
	fmt.Fprintf(w, "\n%s — run %s: %s\n", r.Export, r.RunID, strings.ToUpper(r.Status))
	if r.Message != "" {
		fmt.Fprintf(w, "  %s\n", r.Message)
	}
	c := r.Counts
	if r.Status == run.StatusUpToDate {
		fmt.Fprintf(w, "  0 contact requests sent\n")
		return
	}
	fmt.Fprintf(w, "  rows %d · added %d · changed %d · unchanged %d · removed %d · duplicates %d · rejected %d\n",
		c.Rows, c.Added, c.Changed, c.Unchanged, c.Removed, c.Duplicates, c.Rejected)
	if rep == nil || rep.FinishedAt.IsZero() || rep.Status == run.StatusRefused || rep.Status == run.StatusInvalid {
		return
	}
	o := rep.Outcome
	fmt.Fprintf(w, "  sent %d · rejected by Autopilot %d · failed %d · removed %d\n", o.Sent, o.RejectedByAPI, o.Failed, o.Removed)
	fmt.Fprintf(w, "  requests %d (429s %d, retries %d) · elapsed %s vs rate-limit floor %s\n",
		rep.Requests.Total, rep.Requests.Throttled, rep.Requests.Retries,
		elapsed.Round(100*time.Millisecond), (time.Duration(rep.FloorSeconds * float64(time.Second))).Round(100*time.Millisecond))
	base := filepath.Join(bucketDir, "runs", r.Export, r.RunID)
	fmt.Fprintf(w, "  report:   %s\n  rejected: %s\n", filepath.Join(base, "report.json"), filepath.Join(base, "rejected.csv"))
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
	st, err := store.NewFolder(*bucketDir)
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
	for _, r := range reps {
		when := r.FinishedAt
		if when.IsZero() {
			when = r.PlannedAt
		}
		fmt.Fprintf(&b, "%s  %-28s %-10s %-8s sent %-6d rejected %-5d failed %-5d removed %-5d %s\n",
			when.Format(time.RFC3339), r.RunID, r.Status, r.Trigger, r.Outcome.Sent,
			r.Outcome.Rejected+r.Outcome.RejectedByAPI, r.Outcome.Failed, r.Outcome.Removed, r.Source.Key)
	}
	return e.print(reps, b.String())
}

func cmdSim(ctx context.Context, e *env, args []string) error {
	fs := e.flags("sim")
	addr := fs.String("addr", "127.0.0.1:8089", "listen address (loopback)")
	key := fs.String("api-key", "", "the API key the simulator accepts")
	rps := fs.Float64("rps", 5, "requests per second per key (0 = unlimited)")
	burst := fs.Int("burst", 0, "token bucket size (default: rps)")
	faults := fs.String("faults", "", "fault spec, e.g. 5xx=0.05,429burst=0.01:5,latency=20ms,drop=0.01,hang=0.01:3s,reject=@bad\\.example$")
	seed := fs.Int64("seed", 1, "seed for deterministic faults")
	retryAfter := fs.Bool("retry-after", true, "send Retry-After with 429 answers")
	if err := e.parse(fs, args); err != nil {
		return err
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
	f, err := sim.ParseFaults(*faults)
	if err != nil {
		return usageError{"--faults: " + err.Error()}
	}
	s := sim.New(sim.Options{APIKey: *key, RequestsPerSecond: *rps, Burst: *burst, RetryAfter: *retryAfter,
		Faults: f, Seed: *seed, Logger: e.log})
	url, stop, err := serve(s, *addr)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(e.stdout, "Autopilot simulator listening: base URL %s/\n(header autopilotapikey; Ctrl-C to stop)\n", url)
	<-ctx.Done()
	return nil
}

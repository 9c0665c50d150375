package run

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/store"
)

// Service runs segpilot's pipeline steps against its ports.
type Service struct {
	Store   store.ObjectStore
	Starter Starter
	Connect Connector
	Log     *slog.Logger
	TempDir string           // plan work space (Lambda: /tmp); default os.TempDir()
	Now     func() time.Time // default time.Now

	// ReleaseBrake tells how to lift the mirror safety brake for one run
	// of an export, in this deployment's words. Default: Lambda's manual
	// invocation.
	ReleaseBrake func(export string) string

	// Page renders a report as report.html, written next to report.json
	// (runpage.Render: run cannot import it, since it renders run's
	// types); nil writes no page.
	Page func(*Report) ([]byte, error)
	// BrakeCommand is the exact command that lifts the mirror safety brake
	// for one run of export's file src, shown on a held run's page.
	// Default: the refresh function's manual invocation.
	BrakeCommand func(export string, src Source) string

	// Processes, in local mode, tells whether the process holding an
	// export's lock still runs; nil in Lambda.
	Processes Processes

	// Metrics, when set, receives each run's outcome and figures as
	// CloudWatch Embedded Metric Format, one line per report written
	// (Lambda: stdout, which CloudWatch Logs reads); nil: none.
	Metrics io.Writer

	// SetKey tells how to put the API key in place, in this deployment's
	// words, for a run that found none. Default: the secret, as in Lambda.
	SetKey string

	// Transient tells an infrastructure error worth retrying later (an
	// SDK's throttling, 5xx, a dropped connection; awsx.IsTransient in
	// Lambda) from one that is not; nil: none is.
	Transient func(error) bool

	manifestMu   sync.Mutex
	manifests    map[string]*Manifest // manifest key -> its head, see readManifestHead
	lists        sync.Map             // connection+title -> list id, resolved once per process
	listMu       sync.Mutex           // one resolution at a time
	instanceOnce sync.Once
	instanceID   string
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Logger is the service's logger, never nil.
func (s *Service) Logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// StartRequest asks for runs of the exports that read one segment file.
type StartRequest struct {
	Trigger           string
	Source            Source
	Export            string // only this export; empty: every export of the segment
	DryRun            bool   // plan and report only
	AllowLargeRemoval bool   // lift the mirror safety brake for this run
	// Arrived orders files of one export: the S3 event's time, or the
	// object's modification time; zero means now.
	Arrived time.Time
}

// Result is what one export's start came to.
type Result struct {
	Export  string      `json:"export"`
	RunID   string      `json:"runId,omitempty"`
	Status  string      `json:"status"`
	Message string      `json:"message,omitempty"`
	Counts  plan.Counts `json:"counts"`
	Started bool        `json:"started"`

	// Queued is the request's queue entry while it waits; Await follows it.
	Queued   string    `json:"-"`
	queuedAt time.Time // when it was submitted: an older report is not its run's
}

// SegmentOf returns the segment a key belongs to ("segments/<segment>/<file>").
func SegmentOf(key string) (string, error) {
	rest, ok := strings.CutPrefix(key, "segments/")
	seg, file, found := strings.Cut(rest, "/")
	if !ok || !found || seg == "" || file == "" || strings.HasSuffix(file, "/") {
		return "", fmt.Errorf("%q is not a segment file: expected segments/<segment>/<file>", key)
	}
	return seg, nil
}

// RunID is derived from the export, the object's identity and the config
// version, so every delivery of the same event names the same run.
//
// The ETag names the content; the version id is used only without one.
// Listing a versioned bucket reports no version id, so including it would
// give refresh a different id than the S3 event for the same file, and the
// same bytes put again are the same export.
func RunID(export string, src Source, configVersion string) string {
	identity := src.ETag
	if identity == "" {
		identity = "version:" + src.VersionID
	}
	h := sha256.Sum256([]byte(strings.Join([]string{export, src.Key, identity, configVersion}, "\x00")))
	return export + "-" + hex.EncodeToString(h[:8])
}

// LoadConfig reads config/exports.yaml from the bucket.
func LoadConfig(ctx context.Context, st store.ObjectStore) (*config.Config, error) {
	rc, _, err := st.Get(ctx, ConfigKey)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w (upload your exports.yaml there)", ConfigKey, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ConfigKey, err)
	}
	return config.Load(ConfigKey, data)
}

// Start plans and starts the runs for a segment file (the ingest step).
func (s *Service) Start(ctx context.Context, req StartRequest) ([]Result, error) {
	seg, err := SegmentOf(req.Source.Key)
	if err != nil {
		return nil, err
	}
	cfg, err := LoadConfig(ctx, s.Store)
	if err != nil {
		return nil, err
	}
	var exports []*config.Export
	if req.Export != "" {
		e, err := cfg.Export(req.Export)
		if err != nil {
			return nil, err
		}
		if e.Segment != seg {
			return nil, fmt.Errorf("export %s reads segment %q, not %q", e.Name, e.Segment, seg)
		}
		exports = []*config.Export{e}
	} else {
		exports = cfg.ExportsForSegment(seg)
	}
	if len(exports) == 0 {
		s.Logger().Info("no export reads this segment", "segment", seg, "status", "ignored")
		return nil, nil
	}
	if req.Source.ETag == "" && req.Source.VersionID == "" {
		info, err := s.Store.Head(ctx, req.Source.Key)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", req.Source.Key, err)
		}
		req.Source.ETag, req.Source.VersionID, req.Source.Size = info.ETag, info.VersionID, info.Size
	}
	var results []Result
	for _, e := range exports {
		var res Result
		if req.DryRun {
			res, err = s.startExport(ctx, cfg, e, req, nil)
		} else {
			res, err = s.submit(ctx, cfg, e, req)
		}
		if err != nil {
			if res.RunID != "" {
				results = append(results, res) // its report says how the attempt ended
			}
			return results, fmt.Errorf("export %s: %w", e.Name, err)
		}
		s.Logger().Info("run "+res.Status, "export", res.Export, "run", res.RunID, "status", res.Status, "message", res.Message)
		results = append(results, res)
	}
	return results, nil
}

// startExport plans and starts one run. claim, when set, is called just
// before the execution starts (the queue hands its lock to the run).
func (s *Service) startExport(ctx context.Context, cfg *config.Config, e *config.Export, req StartRequest, claim func(runID, execution string) error) (Result, error) {
	attemptStart := s.now()
	runID := RunID(e.Name, req.Source, cfg.Version)
	res := Result{Export: e.Name, RunID: runID}
	conn := cfg.ConnectionOf(e)
	base := Report{Export: e.Name, RunID: runID, Trigger: req.Trigger, Source: req.Source,
		ConfigVersion: cfg.Version, Mode: e.Mode, List: e.List}

	if err := cfg.Runnable(e); err != nil {
		res.Status, res.Message = StatusRefused, err.Error()
		if req.DryRun {
			return res, nil
		}
		rep := base
		rep.Status, rep.Message, rep.FinishedAt = StatusRefused, err.Error(), s.now()
		return res, s.putReport(ctx, &rep)
	}

	prev, err := ReadReport(ctx, s.Store, e.Name, runID)
	switch {
	case err == nil && prev.Status == StatusSucceeded:
		res.Status, res.Counts = StatusUpToDate, prev.Plan
		res.Message = "this file was already exported with this configuration; nothing to send"
		return res, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return res, err
	}

	m, err := s.readManifest(ctx, e.Name, runID)
	if errors.Is(err, store.ErrNotFound) || req.DryRun {
		m, err = s.plan(ctx, cfg, e, conn, req, runID)
		var limit *plan.LimitError
		var ferr *segment.FileError
		if errors.As(err, &limit) || errors.As(err, &ferr) {
			res.Status, res.Message = StatusInvalid, err.Error()
			if req.DryRun {
				return res, nil
			}
			rep := base
			rep.Status, rep.Message, rep.FinishedAt = StatusInvalid, err.Error(), s.now()
			return res, s.putReport(ctx, &rep)
		}
	}
	if err != nil {
		if req.DryRun {
			return res, err
		}
		return s.failedAttempt(ctx, res, base, nil, prev, "planning failed", err)
	}
	res.Counts = m.Counts
	if req.DryRun {
		res.Status = StatusDryRun
		if m.Held && !req.AllowLargeRemoval && !e.AllowLargeRemoval {
			res.Message = "would be held: " + s.held(e, m)
		}
		return res, nil
	}
	if m.Held && !req.AllowLargeRemoval && !e.AllowLargeRemoval {
		res.Status, res.Message = StatusHeld, s.held(e, m)
		rep := base
		rep.Status, rep.Message, rep.Plan, rep.PlannedAt = StatusHeld, res.Message, m.Counts, m.PlannedAt
		rep.Brake = s.brake(e, m)
		return res, s.putReport(ctx, &rep)
	}

	// Resolve the list once, before the fan-out: it also proves the key works
	// (and that the destination has the export's custom fields) before any
	// run starts, and no two workers can race to create the list.
	listID, err := s.resolveList(ctx, m)
	if err != nil {
		var unauth *Unauthorized
		var mismatch *dest.ConfigError
		status := StatusFailed
		switch {
		case errors.As(err, &mismatch):
			status, res.Message = StatusInvalid, m.Connection.Title()+" does not match the export: "+err.Error()+"; nothing was sent"
		case errors.As(err, &unauth):
			res.Message = s.refusedMessage(unauth)
		default:
			return s.failedAttempt(ctx, res, base, m, prev, "finding the list failed", err)
		}
		res.Status = status
		rep := base
		rep.Status, rep.Message, rep.Plan, rep.PlannedAt, rep.FinishedAt = status, res.Message, m.Counts, m.PlannedAt, s.now()
		return res, s.putReport(ctx, &rep)
	}

	// A run whose earlier attempt failed or was held starts a new execution
	// on the same plan: settled batches are not sent again.
	// The name derives from that attempt's report, so two triggers racing
	// to retry it name one execution, and Step Functions starts it once.
	name := runID
	resumed := 0
	if prev != nil {
		attempt := cmp.Or(prev.FinishedAt, prev.PlannedAt)
		name = fmt.Sprintf("%s-%d", runID, attempt.Unix())
		settled, err := s.Store.List(ctx, resultsPrefix(e.Name, runID))
		if err != nil {
			return res, err
		}
		resumed = len(settled)
		s.Logger().Info("resuming run", "export", e.Name, "run", runID, "settled", resumed, "batches", len(m.Batches))
	}
	input, err := json.Marshal(Execution{Export: e.Name, RunID: runID, ItemsKey: itemsKey(e.Name, runID),
		MapResultsPrefix: mapResultsPrefix(e.Name, runID), ListID: listID,
		Concurrency: m.Concurrency, WorkerRPS: m.WorkerRPS, GroupSize: GroupSize(m.Batches, m.Concurrency, m.WorkerRPS),
		StartedAt: attemptStart, Resumed: resumed})
	if err != nil {
		return res, err
	}
	if claim != nil {
		if err := claim(runID, name); err != nil {
			return res, err
		}
	}
	started, err := s.Starter.StartRun(ctx, name, input)
	if err != nil {
		return s.failedAttempt(ctx, res, base, m, prev, "execution "+name+" failed", fmt.Errorf("starting run %s: %w", runID, err))
	}
	res.Started = started
	res.Status = StatusRunning
	if !started {
		res.Message = "already started by an earlier delivery of the same event"
	}
	if rep, err := ReadReport(ctx, s.Store, e.Name, runID); err == nil && started &&
		(prev == nil || !rep.FinishedAt.Equal(prev.FinishedAt) || rep.Status != prev.Status || rep.Message != prev.Message) {
		// The local runner executes synchronously: report the finished run.
		res.Status, res.Message = rep.Status, rep.Message
	}
	return res, nil
}

// refusedMessage is what a run's report says when its key was refused or
// there is none: what happened, and what to do.
func (s *Service) refusedMessage(u *Unauthorized) string {
	if !u.noKey {
		return config.Connection{Kind: u.api}.Title() + " refused the API key (401/403): check or rotate the secret (for a destination with regions, " +
			"check too that the connection's region is the account's), then run again; nothing more was sent"
	}
	how := cmp.Or(s.SetKey, `create the connection's apiKeySecret, or put the key into it (aws secretsmanager create-secret `+
		`--name segpilot/... --secret-string '{"apiKey":"..."}', or put-secret-value --secret-id segpilot/...)`)
	return "there is no API key to send with (" + u.Msg + "): " + how +
		"; the next file dropped or the scheduled refresh then runs this export normally; nothing was sent"
}

// held says why the brake holds m, and how to lift it.
func (s *Service) held(e *config.Export, m *Manifest) string {
	how := `invoke the refresh function with {"export": "` + e.Name + `", "allowLargeRemoval": true}`
	if s.ReleaseBrake != nil {
		how = s.ReleaseBrake(e.Name)
	}
	return m.HeldReason + "; if that is intended, " + how +
		" (or set allowLargeRemoval: true under exports." + e.Name + " to lift it for good)"
}

// failedAttempt records an attempt that ended in err before its finalize
// could write a report (a finalize that did is left alone), so every
// attempt leaves one, and returns err: ingest's event is retried, and the
// retry resumes the plan. Written even when ctx was cancelled (Ctrl-C).
func (s *Service) failedAttempt(ctx context.Context, res Result, base Report, m *Manifest, prev *Report, what string, err error) (Result, error) {
	ctx = context.WithoutCancel(ctx)
	cur, rerr := ReadReport(ctx, s.Store, base.Export, base.RunID)
	switch {
	case rerr == nil && (prev == nil || !cur.FinishedAt.Equal(prev.FinishedAt)):
		res.Status, res.Message = cur.Status, cur.Message // finalize ran after all
		return res, err
	case rerr != nil && !errors.Is(rerr, store.ErrNotFound):
		return res, errors.Join(err, rerr)
	}
	rep := base
	if m != nil {
		rep.Plan, rep.PlannedAt = m.Counts, m.PlannedAt
	}
	rep.Status, rep.FinishedAt = StatusFailed, s.now()
	rep.Message = what + ": " + err.Error() + "; batches already settled are not sent again when the file runs again"
	res.Status, res.Message = rep.Status, rep.Message
	if perr := s.putReport(ctx, &rep); perr != nil {
		return res, errors.Join(err, perr)
	}
	return res, err
}

// resolveList finds (or creates) the export's list, unless the run has
// nothing to send. The requests it made are recorded for the run's report.
func (s *Service) resolveList(ctx context.Context, m *Manifest) (string, error) {
	if len(m.Batches) == 0 {
		return "", nil
	}
	dest, err := s.Connect(ctx, m.Connection, m.WorkerRPS)
	if err != nil {
		return "", s.classify(fmt.Errorf("connecting to %s: %w", m.Connection.Name, err))
	}
	id, err := s.listID(ctx, dest, m)
	if st := dest.Stats(); st.Requests > 0 {
		if perr := putJSON(ctx, s.Store, listRequestsKey(m.Export, m.RunID), requestsOf(st), store.PutOptions{}); perr != nil {
			return "", errors.Join(s.classify(err), perr)
		}
	}
	if err != nil {
		return "", s.classify(err)
	}
	return id, nil
}

func (s *Service) readManifest(ctx context.Context, export, runID string) (*Manifest, error) {
	var m Manifest
	if err := getJSON(ctx, s.Store, manifestKey(export, runID), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// readManifestHead returns the manifest without its list of batches
// (Batches is nil), for a batch: that list has an entry per batch, so
// every batch of a 3,000-batch run reading it made the run quadratic. A
// manifest never changes once written (it is created only if absent), so
// it is read once per process (a warm Lambda container serves many
// batches of a run).
func (s *Service) readManifestHead(ctx context.Context, export, runID string) (*Manifest, error) {
	key := manifestKey(export, runID)
	s.manifestMu.Lock()
	m, ok := s.manifests[key]
	s.manifestMu.Unlock()
	if ok {
		return m, nil
	}
	var head struct {
		Manifest
		Batches skipped `json:"batches"` // shadows Manifest.Batches
	}
	if err := getJSON(ctx, s.Store, key, &head); err != nil {
		return nil, err
	}
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	if len(s.manifests) >= maxCachedManifests {
		clear(s.manifests) // runs come one at a time per export: a few are enough
	}
	if s.manifests == nil {
		s.manifests = map[string]*Manifest{}
	}
	s.manifests[key] = &head.Manifest
	return &head.Manifest, nil
}

const maxCachedManifests = 32

// skipped is a JSON value left undecoded.
type skipped struct{}

func (*skipped) UnmarshalJSON([]byte) error { return nil }

// Pacing splits a connection's budget over parallel workers. More workers
// than requests per second keeps the budget busy while each worker also
// reads and writes S3; the workers together never exceed the budget.
func Pacing(rps float64) (concurrency int, workerRPS float64) {
	concurrency = int(math.Ceil(2 * rps))
	concurrency = min(max(concurrency, 2), 40)
	return concurrency, shareHeadroom * rps / float64(concurrency)
}

// shareHeadroom keeps workers that pace their shares apart (Lambda
// containers) 1 % under the budget together. Exactly at an API's limit,
// independent schedules drain its token bucket a token at a time (a late
// request leaves a token the full bucket cannot keep; the next one, on
// time, spends its own) until a stray 429, whose Retry-After pause makes
// that worker the run's last by a second: 10 % of a 100,000-profile run
// at 100 requests/s, in one benchmark run of three. 1 % refills the bucket
// a token a second at 100 requests/s (no 429 in 24 runs).
const shareHeadroom = 0.99

// groupTime is about how long one syncbatch invocation sends for: long
// enough that a run of a million profiles is a few hundred invocations,
// not ten thousand, and well inside syncbatch's 300 s timeout.
const groupTime = 60 * time.Second

// GroupSize is how many consecutive batches one syncbatch invocation sends
// (the execution input's groupSize, which the Map's ItemBatcher reads):
// about groupTime of requests at the worker's pace, counting the costliest
// batch (an upsert batch is one request, a removal batch one per email),
// but never so many that the run has fewer groups than workers, which
// would leave part of the budget unused. At least 1.
func GroupSize(batches []plan.BatchRef, concurrency int, workerRPS float64) int {
	cost := 1
	for _, b := range batches {
		if b.Upserts == 0 {
			cost = max(cost, b.Removals)
		}
	}
	size := int(groupTime.Seconds() * workerRPS / float64(cost))
	if concurrency > 0 {
		size = min(size, (len(batches)+concurrency-1)/concurrency)
	}
	return max(size, 1)
}

// plan reads the segment file, plans the run and (unless dry) uploads it.
func (s *Service) plan(ctx context.Context, cfg *config.Config, e *config.Export, conn *config.Connection, req StartRequest, runID string) (*Manifest, error) {
	dir, err := os.MkdirTemp(s.TempDir, "segpilot-plan-*")
	if err != nil {
		return nil, fmt.Errorf("creating plan folder: %w", err)
	}
	defer os.RemoveAll(dir)

	snap, _, err := s.Store.Get(ctx, snapshotKey(e.Name))
	switch {
	case errors.Is(err, store.ErrNotFound):
		snap = nil
	case err != nil:
		return nil, err
	default:
		defer snap.Close()
	}
	src := func(ctx context.Context, emit func(segment.Record) error, reject func(segment.Rejection) error) (segment.Stats, error) {
		rc, _, err := s.Store.Get(ctx, req.Source.Key)
		if err != nil {
			return segment.Stats{}, fmt.Errorf("reading %s: %w", req.Source.Key, err)
		}
		defer rc.Close()
		return segment.Read(ctx, rc, segment.Options{Name: req.Source.Key, Mapping: e.Mapping()}, emit, reject)
	}
	var snapReader io.Reader
	if snap != nil {
		snapReader = snap
	}
	p, err := plan.Build(ctx, src, snapReader, dir, plan.Options{
		Mode: e.Mode, MaxProfiles: e.MaxProfiles, MaxRemovalShare: e.MaxRemovalShare,
		AllowLargeRemoval: e.AllowLargeRemoval || req.AllowLargeRemoval, TempDir: s.TempDir,
		BatchSize: conn.Capabilities().MaxBatch, // contacts per request the destination takes
	})
	if err != nil {
		return nil, err
	}
	concurrency, workerRPS := Pacing(conn.RequestsPerSecond)
	m := &Manifest{Export: e.Name, RunID: runID, Trigger: req.Trigger, Source: req.Source,
		ConfigVersion: cfg.Version, Connection: *conn, List: e.List, Fields: e.Fields(), CreateFields: e.CreateFields, Mode: e.Mode, Counts: p.Counts,
		Batches: p.Batches, Held: p.Held, HeldReason: p.HeldReason, ShowEmails: e.ShowEmails,
		Concurrency: concurrency, WorkerRPS: workerRPS, PlannedAt: s.now()}
	if req.DryRun {
		return m, nil
	}
	if err := s.upload(ctx, dir, p, m); err != nil {
		return nil, err
	}
	return m, nil
}

// upload writes the plan under runs/<export>/<run>/ in five objects,
// whatever its size: the snapshot, input-rejected.csv, batches.jsonl,
// items.json (its index, which the Map reads) and the manifest, last, so a
// manifest's presence means the whole plan is there.
func (s *Service) upload(ctx context.Context, dir string, p *plan.Plan, m *Manifest) error {
	type file struct{ local, key string }
	files := []file{
		{p.Files.Snapshot, plannedSnapshotKey(m.Export, m.RunID)},
		{p.Files.Rejected, inputRejectedKey(m.Export, m.RunID)},
		{p.Files.Batches, batchesKey(m.Export, m.RunID)},
	}
	items := make([]Item, len(p.Batches))
	for i, b := range p.Batches {
		items[i] = Item{Batch: b.Seq, Offset: b.Offset, Length: b.Length, CRC32C: b.CRC32C}
	}
	if err := parallel(ctx, len(files), len(files), func(ctx context.Context, i int) error {
		f, err := os.Open(filepath.Join(dir, files[i].local))
		if err != nil {
			return fmt.Errorf("uploading plan: %w", err)
		}
		defer f.Close()
		if _, err := s.Store.Put(ctx, files[i].key, f, store.PutOptions{}); err != nil {
			return fmt.Errorf("uploading %s: %w", files[i].key, err)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := putJSON(ctx, s.Store, itemsKey(m.Export, m.RunID), items, store.PutOptions{}); err != nil {
		return err
	}
	err := putJSON(ctx, s.Store, manifestKey(m.Export, m.RunID), m, store.PutOptions{IfNoneMatch: true})
	if errors.Is(err, store.ErrExists) {
		return nil // a concurrent delivery of the same event planned the same run
	}
	return err
}

// parallel runs fn(0..n-1) on up to workers goroutines, stopping at the first error.
func parallel(ctx context.Context, n, workers int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	next := make(chan int)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// RefreshRequest re-runs exports from the newest file of their segment.
type RefreshRequest struct {
	Trigger           string
	Export            string // empty: every enabled export
	DryRun            bool
	AllowLargeRemoval bool
}

// Refresh is the scheduled (and manual) trigger.
func (s *Service) Refresh(ctx context.Context, req RefreshRequest) ([]Result, error) {
	cfg, err := LoadConfig(ctx, s.Store)
	if err != nil {
		return nil, err
	}
	var exports []*config.Export
	if req.Export != "" {
		e, err := cfg.Export(req.Export)
		if err != nil {
			return nil, err
		}
		exports = []*config.Export{e}
	} else {
		for _, name := range slices.Sorted(maps.Keys(cfg.Exports)) {
			exports = append(exports, cfg.Exports[name])
		}
	}
	var results []Result
	for _, e := range exports {
		newest, err := s.newest(ctx, e.Segment)
		if err != nil {
			return results, err
		}
		if newest == nil {
			res := Result{Export: e.Name, Status: StatusNoInput, Message: "no file under segments/" + e.Segment + "/"}
			s.Logger().Info("nothing to refresh", "export", e.Name, "status", res.Status)
			results = append(results, res)
			continue
		}
		rs, err := s.Start(ctx, StartRequest{Trigger: req.Trigger, Export: e.Name, DryRun: req.DryRun,
			AllowLargeRemoval: req.AllowLargeRemoval, Arrived: newest.LastModified,
			Source: Source{Key: newest.Key, ETag: newest.ETag, VersionID: newest.VersionID, Size: newest.Size}})
		results = append(results, rs...)
		if err != nil {
			return results, err
		}
	}
	return results, nil
}

// newest returns the latest segment file (by modification time, then key).
func (s *Service) newest(ctx context.Context, segmentName string) (*store.ObjectInfo, error) {
	objs, err := s.Store.List(ctx, "segments/"+segmentName+"/")
	if err != nil {
		return nil, err
	}
	var best *store.ObjectInfo
	for i := range objs {
		o := &objs[i]
		if strings.HasSuffix(o.Key, "/") { // a console-created folder marker
			continue
		}
		if best == nil || o.LastModified.After(best.LastModified) ||
			o.LastModified.Equal(best.LastModified) && o.Key > best.Key {
			best = o
		}
	}
	if best == nil || best.ETag != "" {
		return best, nil
	}
	info, err := s.Store.Head(ctx, best.Key)
	if err != nil {
		return nil, err
	}
	return &info, nil
}

func sortReports(rs []*Report) {
	sort.SliceStable(rs, func(i, j int) bool {
		a, b := rs[i].PlannedAt, rs[j].PlannedAt
		if a.IsZero() {
			a = rs[i].FinishedAt
		}
		if b.IsZero() {
			b = rs[j].FinishedAt
		}
		return a.Before(b)
	})
}
